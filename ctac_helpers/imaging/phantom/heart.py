"""The heart in its pericardial sac: coronary arteries, epicardial fat, the sac wall and the paracardial fat.

The heart is an ellipsoid (:class:`~ctac_helpers.imaging.phantom.anatomy.Anatomy`); the coronary
arteries (RCA, LCx, LAD, PDA) run in its grooves (:class:`CoronaryTree`); the epicardial fat is a
shell of direction-dependent thickness, thicker in the grooves, whose thickness is fitted so that the
fat's volume meets the patient's (:class:`HeartShells`); the sac wall and the paracardial fat pads lie
outside it. The epicardial fat is homogeneous adipose tissue with a mild texture, kept 20-25 HU inside
the fat window noise-free, so that every voxel of the compartment is fat by the measurement's
definition. :func:`paint_heart` takes, as the painters of :mod:`~ctac_helpers.imaging.phantom.anatomy`
do, the canvas and the anatomy, then the coronary tree, the fitted shells and its random stream.
"""

from __future__ import annotations

import numpy as np

from ctac_helpers.imaging.fat import FAT_HU_RANGE
from ctac_helpers.imaging.phantom.anatomy import Anatomy
from ctac_helpers.imaging.phantom.canvas import T_CORONARY, T_EAT, T_PARA, T_SAC, Canvas, empty_box, smooth_field


def _angdiff(a, b):
    """Signed difference of angles, wrapped to [-pi, pi)."""
    return np.mod(a - b + np.pi, 2 * np.pi) - np.pi


class CoronaryTree:
    """Coronary paths (RCA, LCx, LAD, PDA) on the heart surface and the EAT bed along them.

    Parameters
    ----------
    an : Anatomy
        The phantom's geometry (the heart's ellipsoid and pose).
    rng : numpy.random.Generator
        The random stream of the atrioventricular groove's height.

    Attributes
    ----------
    paths : dict
        Artery name -> ``(points, radii)``: centreline points (mm) every 0.7 mm and the lumen radius.
    """

    S_WIDTH = 0.08     # half-width of the atrioventricular groove in units of the long semi-axis
    PHI_WIDTH = 0.10   # half-width of the interventricular grooves (radians on the unit sphere)
    BED_MM = 5.5       # epicardial fat thickness under the arteries

    def __init__(self, an: Anatomy, rng: np.random.Generator):
        self.an = an
        self.s_av = -0.25 + 0.03 * rng.standard_normal()
        self.phi_lad = an.phi_of([0.45, -1.0, 0.0])
        self.phi_pda = an.phi_of([-0.2, 0.35, -1.0])
        start_rca = an.phi_of([-0.5, -1.0, 0.3])
        via_rca = an.phi_of([-1.0, -0.3, 0.0])
        start_lcx = self.phi_lad + 0.35 * np.sign(_angdiff(an.phi_of([1.0, 0.4, 0.2]), self.phi_lad))
        via_lcx = an.phi_of([1.0, 0.4, 0.2])
        end_lcx = an.phi_of([0.3, 1.0, -0.4])
        self.paths: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.paths["RCA"] = self._ring(start_rca, via_rca, self.phi_pda, 1.8, 1.5)
        self.paths["LCx"] = self._ring(start_lcx, via_lcx, end_lcx, 1.7, 1.2)
        self.paths["LAD"] = self._meridian(self.phi_lad, self.s_av + 0.03, 0.92, 1.8, 1.0)
        self.paths["PDA"] = self._meridian(self.phi_pda, self.s_av + 0.05, 0.60, 1.3, 1.0)

    def _arc(self, start, via, end, n=400) -> np.ndarray:
        """Angles from start to end going through via."""
        for sign in (1.0, -1.0):
            span = (sign * (end - start)) % (2 * np.pi)
            if (sign * (via - start)) % (2 * np.pi) < span:
                return start + sign * np.linspace(0, span, n)
        return np.linspace(start, end, n)

    def _centre(self, s, phi, r):
        p, nrm = self.an.surface_point(s, phi)
        return p + nrm * (r + 0.6)

    def _resample(self, pts, radii, step=0.7):
        seg = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        t = np.arange(0.0, seg[-1], step)
        out = np.column_stack([np.interp(t, seg, pts[:, a]) for a in range(3)])
        return out, np.interp(t, seg, radii)

    def _ring(self, start, via, end, r0, r1):
        phis = self._arc(start, via, end)
        radii = np.linspace(r0, r1, len(phis))
        pts = np.array([self._centre(self.s_av, ph, r) for ph, r in zip(phis, radii)])
        return self._resample(pts, radii)

    def _meridian(self, phi, s0, s1, r0, r1):
        ss = np.linspace(s0, s1, 300)
        radii = np.linspace(r0, r1, len(ss))
        pts = np.array([self._centre(s, phi, r) for s, r in zip(ss, radii)])
        return self._resample(pts, radii)

    def groove(self, n1, phi):
        """Closeness (0..1) of unit-sphere directions to the grooves that carry the arteries."""
        ring = np.sqrt(np.clip(1 - n1 * n1, 0.05, 1.0))
        av = np.exp(-(((n1 - self.s_av) / self.S_WIDTH) ** 2))
        below = 1.0 / (1.0 + np.exp(-(n1 - self.s_av) / 0.02))
        lad = np.exp(-((_angdiff(phi, self.phi_lad) * ring / self.PHI_WIDTH) ** 2)) * below * (n1 < 0.95)
        pda = np.exp(-((_angdiff(phi, self.phi_pda) * ring / self.PHI_WIDTH) ** 2)) * below * (n1 < 0.65)
        return np.maximum(av, np.maximum(lad, pda))

    def volume_mm3(self) -> float:
        """The arteries' lumen volume in mm^3 (which the epicardial fat layer makes room for)."""
        return float(sum(np.pi * np.sum(r ** 2) * 0.7 for _, r in self.paths.values()))


class HeartShells:
    """Epicardial fat thickness t(n), sac wall and paracardial fat as functions of direction.

    Parameters
    ----------
    an : Anatomy
        The phantom's geometry.
    tree : CoronaryTree
        The coronary arteries, whose grooves carry thicker fat.
    rng : numpy.random.Generator
        The random stream of the fat layer's shape.

    Notes
    -----
    :meth:`fit` sets the fat's base thickness and the paracardial fat's so that their volumes meet
    the patient's before the heart is painted.
    """

    WALL_MM = 1.2
    VESSEL_LOSS = 1.05

    def __init__(self, an: Anatomy, tree: CoronaryTree, rng: np.random.Generator):
        self.an, self.tree = an, tree
        k = rng.standard_normal((3, 3))
        self.k = k / np.linalg.norm(k, axis=1, keepdims=True) * rng.uniform(1.5, 3.0, size=(3, 1))
        self.psi = rng.uniform(0, 2 * np.pi, 3)
        self.amp = rng.uniform(0.12, 0.25, 3)
        self.t0 = 3.0
        self.p0 = 5.0

    def _world_dir(self, n1, n2, n3):
        R = self.an.R
        return [R[i, 0] * n1 + R[i, 1] * n2 + R[i, 2] * n3 for i in range(3)]

    def shape_terms(self, n1, n2, n3):
        """(g, groove, |D n|, paracardial weight) for unit directions n."""
        dx, dy, dz = self._world_dir(n1, n2, n3)
        g = 1.0 + 0.35 * np.maximum(-dy, 0) + 0.3 * np.maximum(n1, 0) ** 3
        for kk, ps, am in zip(self.k, self.psi, self.amp):
            g = g + am * np.cos(kk[0] * n1 + kk[1] * n2 + kk[2] * n3 + ps)
        g = np.clip(g, 0.25, 3.0)
        phi = np.arctan2(n3, n2)
        grv = self.tree.groove(n1, phi)
        a, b, c = self.an.abc
        dn = np.sqrt((a * n1) ** 2 + (b * n2) ** 2 + (c * n3) ** 2)
        para = np.clip(0.1 + 1.3 * np.maximum(-dy, 0) + 0.9 * np.maximum(-dz, 0) - 0.6 * np.maximum(dy, 0), 0, 2.0)
        return g, grv, dn, para

    def deltas(self, g, grv, dn, para):
        """Normalised radii of the fat boundary, the sac's outer surface and the paracardial fat."""
        t = np.sqrt((self.t0 * g) ** 2 + (self.tree.BED_MM * grv) ** 2)
        d_fat = 1.0 + t / dn
        d_sac = d_fat + self.WALL_MM / dn
        d_para = d_sac + self.p0 * para / dn
        return d_fat, d_sac, d_para

    def fit(self, eat_ml: float, para_ml: float, n_dirs: int = 3000):
        """Choose t0 and p0 so that the analytic EAT and paracardial volumes meet their targets."""
        i = np.arange(n_dirs) + 0.5
        polar = np.arccos(1 - 2 * i / n_dirs)
        azim = np.pi * (1 + 5 ** 0.5) * i
        n1, n2, n3 = np.cos(polar), np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim)
        terms = self.shape_terms(n1, n2, n3)
        vol = float(np.prod(self.an.abc)) / 3.0 * 4 * np.pi / n_dirs
        # Vessels crossing the sac (aortic root, pulmonary trunk, venae cavae) later take about 5% of
        # the fat layer; the coronary arteries run inside it.
        target = max(eat_ml * 1000.0 * self.VESSEL_LOSS + self.tree.volume_mm3(), 1.0)

        def eat(t0):
            self.t0 = t0
            d_fat, _, _ = self.deltas(*terms)
            return vol * float(np.sum(d_fat ** 3 - 1.0))

        lo, hi = 0.0, 80.0
        if eat(lo) >= target:
            hi = 0.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if eat(mid) < target else (lo, mid)
        self.t0 = hi

        def para(p0):
            self.p0 = p0
            _, d_sac, d_para = self.deltas(*terms)
            return vol * float(np.sum(d_para ** 3 - d_sac ** 3))

        lo, hi = 0.0, 120.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if para(mid) < para_ml * 1000.0 else (lo, mid)
        self.p0 = hi
        _, _, d_para = self.deltas(*terms)
        self.max_delta = float(d_para.max()) * 1.03 + 0.01


def paint_heart(b: Canvas, an: Anatomy, tree: CoronaryTree, shells: HeartShells, rng):
    """Paracardial fat, sac wall, epicardial fat (textured), heart and coronary arteries; returns the heart's box.

    Epicardial and paracardial fat lie only inside the returned box (a tuple of array slices), where the
    truth looks for them.
    """
    p, g = b.p, b.g
    ext = float(an.abc.max()) * shells.max_delta + 2.0
    sl, Z, Y, X = g.box(an.hc - ext, an.hc + ext)
    if empty_box(sl):
        return sl
    R, (a, bb, c) = an.R, an.abc
    dx, dy, dz = X - an.hc[0], Y - an.hc[1], Z - an.hc[2]
    q1 = (R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz) / a
    q2 = (R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz) / bb
    q3 = (R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz) / c
    r = np.sqrt(q1 * q1 + q2 * q2 + q3 * q3)
    # The direction-dependent shell radii are needed only between the heart and the outermost
    # shell: evaluate them there (a third of the box) and fill the rest with bounds that classify
    # the heart (r <= 1) and the outside (r > max_delta) correctly.
    shell = (r > 1.0) & (r <= shells.max_delta)
    idx = np.flatnonzero(shell)
    rs = r.ravel()[idx]
    terms = shells.shape_terms(q1.ravel()[idx] / rs, q2.ravel()[idx] / rs, q3.ravel()[idx] / rs)
    del q1, q2, q3
    d_fat, d_sac, d_para = (np.ones(r.shape, np.float32) for _ in range(3))
    for full, part in zip((d_fat, d_sac, d_para), shells.deltas(*terms)):
        full.ravel()[idx] = part
    cav = b.rho_cav[sl[1], sl[2]][None] <= 1.0
    para = (r > d_sac) & (r <= d_para) & cav
    b.paint(sl, para, p["fat_hu"] - 3.0, 0, T_PARA, clear_peri=True)
    sac = r <= d_sac
    b.peri[sl] |= sac
    wall = sac & (r > d_fat)
    b.paint(sl, wall, p["soft_hu"], 0, T_SAC)
    eat = (r <= d_fat) & (r > 1.0)
    tex = smooth_field(rng, eat.shape, 1.2)
    # Noise-free fat stays 20-25 HU inside the fat window (site offset included).
    lo_hu = FAT_HU_RANGE[0] + 25.0 - float(p["hu_offset"])
    hi_hu = FAT_HU_RANGE[1] - 20.0 - float(p["hu_offset"])
    # Texture centred on the fat itself, so that its mean density is the parameter's.
    t_eat = tex[eat]
    eat_hu = np.clip(p["eat_density_hu"] + 8.0 * (tex - (float(t_eat.mean()) if t_eat.size else 0.0)), lo_hu, hi_hu)
    b.paint(sl, eat, eat_hu, 0, T_EAT)
    heart = r <= 1.0
    b.paint(sl, heart, (p["heart_hu"] + 3.0 * tex).astype(np.float32), b.ids["heart"])
    # Coronary arteries (non-contrast blood, ~40 HU) in the fat; the region for calcium truth.
    for name, (pts, radii) in tree.paths.items():
        tsl, tm = b.tube_mask(pts, radii)
        b.paint(tsl, tm, p["blood_hu"], 0, T_CORONARY)
        rsl, rm = b.tube_mask(pts, radii + 4.0)
        if not empty_box(rsl):
            b.creg[rsl] |= rm
    return sl
