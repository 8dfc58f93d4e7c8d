"""The chest around the heart: body wall, lungs, upper abdomen, mediastinum, great vessels and airways.

:class:`Anatomy` derives the geometry in millimetres from the parameters and a random pose: the body
ellipse with subcutaneous fat and chest-wall muscle, the thoracic cavity, the heart's ellipsoid and its
orientation, the diaphragm's domes, the lung apices, carina and aortic arch. The ``paint_*`` functions
draw, in this order, the body, the five lung lobes and the diaphragm, the liver, stomach and spleen
under it (usually cut by the field of view), the mediastinal fat, and (after the heart) the aorta with
its wall calcifications (inside the aorta label, to test that calcium scoring leaves them out), the
pulmonary trunk, the venae cavae, the trachea and main bronchi and the oesophagus.

Every painter (here, in :mod:`~ctac_helpers.imaging.phantom.skeleton` and
:mod:`~ctac_helpers.imaging.phantom.heart`) takes the :class:`~ctac_helpers.imaging.phantom.canvas.Canvas`
being drawn and the phantom's :class:`Anatomy`, and, where it draws at random, the random stream of its
step (:func:`~ctac_helpers.imaging.phantom.canvas.rng_stream`); it paints in place and returns nothing
unless said.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctac_helpers.imaging.phantom.canvas import (T_MEDIASTINUM, Canvas, ellipsoid, empty_box, paint_slab_ellipse,
                                                 paint_tube, unit_vector)
from ctac_helpers.imaging.phantom.parameters import DEFAULT_PARAMETERS

# The five lobes, as TotalSegmentator names them.
LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
              "lung_middle_lobe_right", "lung_lower_lobe_right")


class Anatomy:
    """The phantom's geometry in mm, derived from the parameters and a random pose.

    Parameters
    ----------
    p : dict
        The filled-in parameters (body size, subcutaneous fat, muscle, heart and lung volumes,
        height scale).
    rng : numpy.random.Generator
        The random stream of the heart's pose.

    Attributes
    ----------
    ax, ay : float
        Semi-axes of the body ellipse (mm); ``cx, cy`` those of the thoracic cavity.
    abc, R, hc : numpy.ndarray
        The heart ellipsoid's semi-axes, orientation (columns: long axis first) and centre.
    dome_r, dome_l, apex_z, carina_z, arch_z : float
        Heights (z, mm) of the diaphragm's domes, the lung apices, the carina and the aortic arch.
    """

    def __init__(self, p: dict, rng: np.random.Generator):
        hs = float(p["height_scale"])
        self.hs = hs
        self.ax = p["body_width_mm"] / 2.0
        self.ay = p["body_depth_mm"] / 2.0
        self.ft = float(np.clip(p["subcut_fat_mm"], 3.0, 0.45 * self.ay))
        self.mw = float(np.clip(p["muscle_mm"], 5.0, 25.0))
        self.cx = self.ax - self.ft - self.mw  # thoracic cavity (inside ribs and chest-wall muscle)
        self.cy = self.ay - self.ft - self.mw
        # Spine: vertebral body centre, spinal canal.
        self.y_vb = self.cy - 38.0
        self.y_canal = self.y_vb + 28.0
        # Heart: ellipsoid, long axis to the left, anterior and inferior; a random pose.
        s = (p["heart_volume_ml"] * 1000.0 / (4.0 / 3.0 * np.pi * 62.0 * 52.0 * 45.0)) ** (1.0 / 3.0)
        self.abc = np.array([62.0, 52.0, 45.0]) * s
        el = np.deg2rad(30.0 + 4.0 * rng.standard_normal())
        az = np.deg2rad(40.0 + 6.0 * rng.standard_normal())
        roll = np.deg2rad(rng.uniform(-10.0, 10.0))
        e1 = np.array([np.cos(el) * np.cos(az), -np.cos(el) * np.sin(az), -np.sin(el)])
        e2 = unit_vector([e1[1], -e1[0], 0.0])
        e3 = np.cross(e1, e2)
        e2, e3 = np.cos(roll) * e2 + np.sin(roll) * e3, -np.sin(roll) * e2 + np.cos(roll) * e3
        self.R = np.column_stack([e1, e2, e3])
        self.hc = np.array([24.0 + 3.0 * rng.standard_normal(), -self.cy + 12.0 + 55.0 * s, 0.0])
        # Diaphragm domes (z of the dome top), lowered in large lungs.
        lung_ratio = p["lung_volume_ml"] / DEFAULT_PARAMETERS["lung_volume_ml"]
        drop = 60.0 * (lung_ratio - 1.0)
        self.dome_r = -hs * 36.0 - drop - 55.0 * s + 55.0
        self.dome_l = -hs * 42.0 - drop - 55.0 * s + 55.0
        self.apex_z = hs * 160.0 + 0.3 * drop
        self.carina_z = hs * 70.0
        self.arch_z = hs * 88.0

    # heart-local coordinates
    def surface_point(self, s: float, phi: float) -> tuple[np.ndarray, np.ndarray]:
        """World point and outward normal of the heart surface at long-axis position s, azimuth phi."""
        u = np.array([s, np.sqrt(max(0.0, 1 - s * s)) * np.cos(phi), np.sqrt(max(0.0, 1 - s * s)) * np.sin(phi)])
        p = self.hc + self.R @ (self.abc * u)
        nrm = unit_vector(self.R @ (u / self.abc))
        return p, nrm

    def phi_of(self, v) -> float:
        """Azimuth (around the long axis) of the world direction ``v``."""
        v = unit_vector(v)
        return float(np.arctan2(v @ self.R[:, 2], v @ self.R[:, 1]))

    def z_diaphragm(self, X, Y):
        """The diaphragm's upper surface z(x, y): two domes falling to the costophrenic recesses."""
        right = self.dome_r - 0.008 * (X + 0.36 * self.cx) ** 2 - 0.005 * (Y - 5.0) ** 2
        left = self.dome_l - 0.008 * (X - 0.36 * self.cx) ** 2 - 0.005 * (Y - 5.0) ** 2
        return np.maximum(right, left)


def paint_body(b: Canvas, an: Anatomy):
    """Air, subcutaneous fat, chest-wall muscle and the cavity's default content (fat), per slice."""
    p, g = b.p, b.g
    X, Y = g.x[None, :], g.y[:, None]
    rho_body = (X / an.ax) ** 2 + (Y / an.ay) ** 2
    rho_musc = (X / (an.ax - an.ft)) ** 2 + (Y / (an.ay - an.ft)) ** 2
    rho_cav = (X / an.cx) ** 2 + (Y / an.cy) ** 2
    base = np.full(rho_body.shape, -1000.0, np.float32)
    base[rho_body <= 1] = p["fat_hu"] - 5.0
    base[rho_musc <= 1] = p["muscle_hu"]
    base[rho_cav <= 1] = p["fat_hu"]
    b.hu[:] = base[None]
    b.cavity2d = rho_cav <= 1
    b.rho_cav = rho_cav


def paint_lungs(b: Canvas, an: Anatomy, rng):
    """Five lobes inside the cavity, above the diaphragm and below the apex, slice by slice."""
    p, g = b.p, b.g
    X, Y = g.x[None, :], g.y[:, None]
    zd = an.z_diaphragm(X, Y)
    zap = an.apex_z - 0.006 * ((np.abs(X) - 0.45 * an.cx) ** 2) - 0.004 * (Y - 10.0) ** 2
    cav = b.rho_cav <= 0.985
    sig = 6.0 / g.spacing[0]
    A = ndimage.gaussian_filter(rng.standard_normal(cav.shape).astype(np.float32), sig)
    B = ndimage.gaussian_filter(rng.standard_normal(cav.shape).astype(np.float32), sig)
    A /= max(float(A.std()), 1e-6)
    B /= max(float(B.std()), 1e-6)
    base = p["lung_hu"] + 0.30 * (Y - 5.0) + 0.0 * X
    omega = 2 * np.pi / 40.0
    left = np.broadcast_to(X > 0, cav.shape)
    ids = b.ids
    zf = 0.85 * (Y - 5.0) + 25.0 * an.hs  # oblique fissure: the lower lobe lies below it, posteriorly
    for k, z in enumerate(g.z):
        m = cav & (z > zd) & (z < zap)
        if not m.any():
            continue
        lower = z < zf
        lab = np.where(left, np.where(lower, ids["lung_lower_lobe_left"], ids["lung_upper_lobe_left"]),
                       np.where(lower, ids["lung_lower_lobe_right"],
                                np.where((z < 30.0 * an.hs) & (Y < 15.0), ids["lung_middle_lobe_right"],
                                         ids["lung_upper_lobe_right"])))
        vals = base + 25.0 * (A * np.cos(omega * z) + B * np.sin(omega * z))
        b.hu[k][m] = vals[m]
        b.lab[k][m] = lab[m]
    # The diaphragm muscle: 5 mm under its upper surface, inside the cavity.
    for k, z in enumerate(g.z):
        m = b.cavity2d & (z <= zd) & (z > zd - 5.0)
        if m.any():
            b.hu[k][m] = p["muscle_hu"]
            b.lab[k][m] = 0
    b.zd = zd


def paint_abdomen(b: Canvas, an: Anatomy):
    """Liver (right), stomach with its air cap (left), spleen (left, posterior) under the diaphragm."""
    p = b.p

    def below(offset):
        def cond(sl, Z, Y, X):
            return (Z < b.zd[sl[1], sl[2]][None] - offset) & b.cavity2d[sl[1], sl[2]][None]
        return cond

    f = (p["liver_volume_ml"] / 1650.0) ** (1 / 3)
    top = an.dome_r
    sl, m = ellipsoid(b, (-0.30 * an.cx, 5.0, top - 75.0 * f), (0.95 * an.cx * f, 0.85 * an.cy * f, 95.0 * f),
                      below(5.0))
    if m is not None:
        b.paint(sl, m, p["liver_hu"], b.ids["liver"])
    f = (p["stomach_volume_ml"] / 350.0) ** (1 / 3)
    c = np.array([0.45 * an.cx, -0.15 * an.cy, an.dome_l - 45.0 * f])
    sl, m = ellipsoid(b, c, (42.0 * f, 45.0 * f, 50.0 * f), below(6.0))
    if m is not None:
        Y = b.g.y[sl[1]][None, :, None]
        b.paint(sl, m, np.where(Y < c[1] - 36.0 * f, -950.0, 12.0).astype(np.float32), b.ids["stomach"])
    f = (p["spleen_volume_ml"] / 210.0) ** (1 / 3)
    sl, m = ellipsoid(b, (0.72 * an.cx, 0.55 * an.cy, an.dome_l - 60.0 * f), (24.0 * f, 50.0 * f, 50.0 * f),
                      below(5.0))
    if m is not None:
        b.paint(sl, m, p["spleen_hu"], b.ids["spleen"])


def paint_mediastinum(b: Canvas, an: Anatomy):
    """Mediastinal fat between the lungs: superior, anterior (thymic) and posterior compartments."""
    fat = b.p["fat_hu"]
    hs = an.hs
    paint_slab_ellipse(b, 5.0, 0.0, 40.0, 0.82 * an.cy, 35.0 * hs, 1e4, fat, tissue=T_MEDIASTINUM)
    paint_slab_ellipse(b, 0.0, -0.78 * an.cy, 38.0, 22.0, 20.0 * hs, 120.0 * hs, fat, tissue=T_MEDIASTINUM)
    paint_slab_ellipse(b, 15.0, an.y_vb - 12.0, 36.0, 22.0, -110.0 * hs, 40.0 * hs, fat, tissue=T_MEDIASTINUM)


def paint_vessels(b: Canvas, an: Anatomy, rng):
    """Aorta with wall calcium, pulmonary trunk, venae cavae, trachea, bronchi, oesophagus."""
    p, ids, hs = b.p, b.ids, an.hs
    ra = 14.0 * p["aorta_scale"]
    root, nrm = an.surface_point(-0.88, an.phi_of([-0.3, -0.6, 0.8]))
    root = root - nrm * 6.0
    top = b.g.z[-1] + 20.0
    bottom = b.g.z[0] - 20.0
    asc = [root[0] - 6.0, root[1] - 2.0, 0.5 * (root[2] + an.arch_z)]
    desc_x, desc_y = 31.0, an.y_vb - 12.0
    aorta_nodes = [root, asc, [-8.0, root[1] + 5.0, an.arch_z - 8.0], [5.0, 0.0, an.arch_z + 6.0],
                   [desc_x - 4.0, desc_y - 8.0, an.arch_z - 6.0], [desc_x, desc_y, an.arch_z - 40.0],
                   [desc_x, desc_y, -40.0 * hs], [8.0, desc_y, -110.0 * hs], [4.0, desc_y, bottom]]
    radius = [1.15 * ra, 1.12 * ra, 1.0 * ra, 0.95 * ra, 0.9 * ra, 0.85 * ra, 0.82 * ra, 0.8 * ra, 0.78 * ra]
    # The root and ascending aorta lie inside the pericardial sac: keep them in the mask.
    pts, radii = paint_tube(b, aorta_nodes[:3], radius[:3], p["aorta_hu"], ids["aorta"], clear_peri=False)
    pts2, radii2 = paint_tube(b, aorta_nodes[2:], radius[2:], p["aorta_hu"], ids["aorta"], clear_peri=True)
    pts, radii = np.vstack([pts, pts2]), np.r_[radii, radii2]
    # Aortic wall calcification (more with atherosclerosis): inside the aorta label.
    n_plaques = int(rng.poisson(max(0.0, p["aortic_calcium"])))
    for _ in range(n_plaques):
        i = int(rng.integers(0, len(pts)))
        v = unit_vector(rng.standard_normal(3))
        c = pts[i] + v * (radii[i] - 2.2)
        sl, Z, Y, X = b.g.box(c - 2.0, c + 2.0)
        if empty_box(sl):
            continue
        m = ((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 <= 1.8 ** 2) & (b.lab[sl] == ids["aorta"])
        b.paint(sl, m, float(rng.uniform(350.0, 800.0)), ids["aorta"], clear_peri=False)
    # Pulmonary trunk (unlabelled in TotalSegmentator's total task) and its branches.
    rvot, nrm = an.surface_point(-0.75, an.phi_of([0.6, -1.0, 0.5]))
    trunk_top = [rvot[0] - 2.0, rvot[1] + 25.0, 62.0 * hs]
    paint_tube(b, [rvot - nrm * 4.0, rvot + nrm * 12.0 + [0, 0, 12.0], trunk_top], 13.0, p["blood_hu"],
               0, clear_peri=False)
    paint_tube(b, [trunk_top, [0.45 * an.cx, 10.0, 58.0 * hs]], 9.0, p["blood_hu"], 0, clear_peri=True)
    paint_tube(b, [trunk_top, [-10.0, 15.0, 60.0 * hs], [-0.45 * an.cx, 12.0, 57.0 * hs]], 9.0, p["blood_hu"],
               0, clear_peri=True)
    # Venae cavae.
    ra_pt, _ = an.surface_point(-0.55, an.phi_of([-1.0, 0.2, 0.4]))
    paint_tube(b, [[ra_pt[0] - 6.0, ra_pt[1], top], [ra_pt[0] - 6.0, ra_pt[1], ra_pt[2] + 25.0], ra_pt],
               9.0, p["blood_hu"], ids["superior_vena_cava"])
    ivc_top, _ = an.surface_point(-0.2, an.phi_of([-0.6, 0.4, -1.0]))
    paint_tube(b, [ivc_top, [ivc_top[0] - 4.0, ivc_top[1] + 10.0, ivc_top[2] - 35.0],
                   [ivc_top[0] - 4.0, ivc_top[1] + 12.0, bottom]], 11.0, p["blood_hu"], ids["inferior_vena_cava"])
    # Trachea (air lumen in a soft-tissue wall) down to the carina, then the main bronchi.
    tr = [[0.0, an.y_vb - 40.0, top], [0.0, an.y_vb - 40.0, an.carina_z]]
    paint_tube(b, tr, 10.5, p["soft_hu"], 0)
    paint_tube(b, tr, 9.0, p["soft_hu"], ids["trachea"])
    paint_tube(b, tr, 8.3, -1000.0, ids["trachea"])
    for side in (1.0, -1.0):
        nodes = [[0.0, an.y_vb - 40.0, an.carina_z + 4.0], [side * 25.0, an.y_vb - 38.0, an.carina_z - 12.0],
                 [side * 50.0, an.y_vb - 36.0, an.carina_z - 30.0]]
        paint_tube(b, nodes, 7.0, p["soft_hu"], 0)
        paint_tube(b, nodes, 5.5, -1000.0, 0)
    # Oesophagus behind the trachea and the left atrium, to the stomach.
    es = [[2.0, an.y_vb - 24.0, top], [3.0, an.y_vb - 24.0, an.carina_z], [6.0, an.y_vb - 22.0, -40.0 * hs],
          [25.0, an.y_vb - 30.0, an.dome_l - 25.0], [0.4 * an.cx, -0.05 * an.cy, an.dome_l - 40.0]]
    paint_tube(b, es, 6.5, p["soft_hu"], ids["esophagus"])
