"""Digital CTAC phantoms: chest CT volumes whose true answers are known.

A phantom is a low-dose, non-contrast chest CT like the attenuation-correction scan of a SPECT/CT
myocardial perfusion study: a body ellipse with subcutaneous fat and chest-wall muscle, five lung
lobes, the heart in its pericardial sac with epicardial fat and coronary arteries, paracardial and
mediastinal fat outside the sac, aorta (root, ascending, arch, descending), pulmonary trunk,
venae cavae, oesophagus, trachea and main bronchi, thoracic and upper lumbar vertebrae with
cortical and cancellous bone, spinal cord, 12 ribs a side with costal cartilage, sternum,
autochthonous back muscles, and liver, stomach and spleen under the diaphragm (usually cut by the
field of view). Coronary calcifications lie on the coronary arteries; aortic wall calcifications
(inside the aorta label) test that calcium scoring leaves them out.

Everything is built from geometric primitives in millimetres, so any grid can be rendered: the
CTAC-sized default (80 x 512 x 512 voxels of 0.98 x 0.98 x 3 mm) or small test phantoms. Gaussian
noise with the protocol's SD (:data:`ctac_helpers.cohort.synth.PROTOCOL_NOISE_HU`, the reference-size
value: the synthetic feature model additionally scales noise with body size) and the site's HU
calibration offset are added last. Arrays follow SimpleITK's ``(z, y, x)`` order; the frame is LPS
(x to the patient's left, y posterior, z superior), direction identity, the heart's centre at
z = 0.

Truth (``Phantom.truth``)
-------------------------
All of it is computed from the phantom's own voxels before noise ("noise-free image" below means
the image with the site offset but without noise).

* ``agatston``: the Agatston score of the noise-free coronary lesions by the standard definition
  (2D lesions >= 130 HU, peak-density weights, area >= 1 mm^2 and >= 3 pixels) scaled to 3 mm
  slices as :func:`ctac_helpers.imaging.calcium.agatston` does; ``agatston_unscaled`` without the scaling;
  ``calcium_volume_mm3`` (lesion voxels x voxel volume); ``cac_category``; ``lesions`` (one row
  per 2D lesion: slice, pixels, area, peak HU, weight, score, artery).
* ``eat_volume_ml`` / ``eat_density_hu``: the voxels of the epicardial fat compartment (inside
  the pericardial sac, outside the heart, coronary arteries and calcium): their volume, and their
  mean noise-free HU. Every such voxel lies in the fat window (-190..-30 HU) noise-free.
  ``eat_tissue_density_hu`` is the same without the site offset.
* ``paracardial_fat_ml``: fat just outside the sac (anterior and inferior fat pads).
* ``structures``: per TotalSegmentator structure its visible volume (mL), its mean noise-free HU
  (``mean_hu``) and its status: ``present``
  (labelled voxels, none on the first/last axial slice or the in-plane edge), ``truncated``
  (labelled voxels touching one of these) or ``absent``.

Lesion design. Noise must not change what the truth says, or no scorer could recover it. Each 2D
lesion is a compact blob of a *plateau* density at least 3.5 noise SDs above 130 HU (so no lesion
pixel drops out) around one *core* pixel that sets the peak, placed at least
:data:`LESION_MARGIN_SD` noise SDs inside its weight band; plateau pixels stay 4 SDs below the
band's upper edge. At the protocols' noise (15-28 HU) weights 1-3 do not fit in their 70-100 HU
wide bands, so noisier phantoms carry only dense (weight 4) calcium: faint calcium cannot be scored
reproducibly on such images, which is the physics of low-dose CT rather than a property of the
scorer. Every phantom with a positive CAC target gets at least one lesion (>= 4 pixels), so small
targets are rounded up.

EAT density. The phantom's epicardial fat is homogeneous adipose tissue with a mild texture. Its
density is the cohort's EAT density shifted by :data:`EAT_DENSITY_SHIFT_HU` (-65 -> -100 HU): real
measurements are higher than pure fat because partial-volume voxels at the myocardium and vessel
borders enter the window, which the phantom does not model; the shift keeps the fat far enough
inside the window that noise moves the measured volume and density only slightly, and it keeps the
differences between patients. Only slightly: at ultra-low-dose noise (28 HU) heart voxels pushed
below -30 HU enter the measure, and the measured EAT exceeds the truth by a few percent (+4% and
+3 HU median on the synthetic cohort, more for small EAT volumes), exactly as a Gaussian noise
model predicts from the noise-free image.

Use
---
``ctac_phantom(params, seed)`` builds one phantom (``Phantom``: arrays, truth, SimpleITK images);
``params, make = phantom_cohort(n, seed)`` gives the parameters of ``n`` synthetic patients
(:func:`phantom_parameters`) and ``make(i)`` builds patient ``i``'s phantom, one volume at a time;
``write_phantom(ph, folder, stem)`` writes NIfTI images and the truth, ``read_truth`` reads it back.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage, special

from ctac_helpers.cohort import synth
from ctac_helpers.core import manifest
from ctac_helpers.imaging import presence
from ctac_helpers.definitions import cac_category
from ctac_helpers.imaging.calcium import MIN_PIXELS, REFERENCE_THICKNESS_MM, agatston_weight
from ctac_helpers.imaging.fat import FAT_HU_RANGE
from ctac_helpers.core.rundir import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

CTAC_SHAPE = (80, 512, 512)
CTAC_SPACING = (0.98, 0.98, 3.0)
EAT_DENSITY_SHIFT_HU = -35.0
LESION_MARGIN_SD = 3.3
# Noise-free limits of the phantom's fat and calcium (HU, before the site offset).
_PLATEAU_LOW_SD, _PLATEAU_HIGH_SD = 3.5, 4.0
MAX_LESION_AREA_MM2 = 40.0
MIN_LESION_PIXELS = 4
# Above this the coronary tree has no room for more separate lesions; the target is capped.
MAX_PHANTOM_CAC = 8000.0

# Tissue codes of the phantom's bookkeeping map (not part of the output labels).
T_OTHER, T_EAT, T_PARA, T_SAC, T_CORONARY, T_LESION, T_MEDIASTINUM = range(7)

# The reference patient (male, BMI 29, 65 years, every driver 0). Missing keys of ``params``
# take these values.
DEFAULT_PARAMETERS: dict = {
    "sex": "male", "age": 65.0, "bmi": 29.0, "site": "Yale", "ct_protocol": "low_dose_120kvp",
    "noise_hu": 15.0, "hu_offset": 0.0,
    "body_width_mm": 330.0, "body_depth_mm": 250.0, "subcut_fat_mm": 16.0, "muscle_mm": 12.0,
    "height_scale": 1.0,
    "heart_volume_ml": 620.0, "lung_volume_ml": 5550.0, "aorta_scale": 1.0, "liver_volume_ml": 1650.0,
    "spleen_volume_ml": 210.0, "stomach_volume_ml": 350.0, "autochthon_scale": 1.0,
    "heart_hu": 38.0, "blood_hu": 40.0, "aorta_hu": 42.0, "lung_hu": -845.0, "muscle_hu": 44.0,
    "liver_hu": 56.0, "spleen_hu": 48.0, "soft_hu": 35.0, "cord_hu": 32.0, "bone_hu": 320.0,
    "vertebra_hu": 270.0, "cartilage_hu": 150.0, "fat_hu": -100.0,
    "eat_volume_ml": 130.0, "eat_density_hu": -100.0, "paracardial_fat_ml": 60.0,
    "cac_score": 0.0, "aortic_calcium": 2.0, "fov_z_shift_mm": 15.0,
}

_LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
               "lung_middle_lobe_right", "lung_lower_lobe_right")
# Structures kept in the coronary region by calcium.coronary_region (lesions may lie next to them).
_CORONARY_NEIGHBOURS = ("heart", "atrial_appendage_left", "pulmonary_vein") + _LUNG_LOBES


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 7919, int(stream)]))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# -- the phantom ----------------------------------------------------------------------------------
@dataclass
class Phantom:
    """One digital CTAC phantom and its truth.

    Attributes
    ----------
    ct : numpy.ndarray of int16
        HU volume ``(z, y, x)`` with noise and site offset.
    labels : numpy.ndarray of uint8
        TotalSegmentator v2 ``total`` class ids (0: unlabelled).
    pericardium : numpy.ndarray of bool
        The pericardial sac and its contents (heart, epicardial fat, proximal great vessels).
    coronary_region : numpy.ndarray of bool
        The coronary arteries grown by 4 mm, plus every calcified lesion.
    eat_mask : numpy.ndarray of bool
        The true epicardial fat compartment.
    spacing, origin : tuple of 3 float
        SimpleITK ``(x, y, z)`` voxel size and position of voxel ``(0, 0, 0)`` in mm.
    truth : dict
        See the module notes.
    lesions : pandas.DataFrame
        The true 2D coronary lesions (also in ``truth['lesions']``).
    params : dict
        The parameters the phantom was built from (defaults filled in).
    seed : int
    clean : numpy.ndarray of int16 or None
        The noise-free image (with the site offset) when built with ``keep_clean=True``.
    """

    ct: np.ndarray
    labels: np.ndarray
    pericardium: np.ndarray
    coronary_region: np.ndarray
    eat_mask: np.ndarray
    spacing: tuple
    origin: tuple
    truth: dict
    lesions: pd.DataFrame
    params: dict
    seed: int
    clean: np.ndarray | None = None
    direction: tuple = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def _image(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(self.direction)
        return img

    def ct_image(self) -> sitk.Image:
        """The CT as a SimpleITK image (int16 HU, spacing/origin/direction set)."""
        return self._image(self.ct)

    def label_image(self) -> sitk.Image:
        """The TotalSegmentator-id label map as a SimpleITK image (uint8)."""
        return self._image(self.labels)

    def pericardium_image(self) -> sitk.Image:
        """The pericardium mask as a SimpleITK image (uint8 0/1)."""
        return self._image(self.pericardium.astype(np.uint8))

    def coronary_region_image(self) -> sitk.Image:
        """The coronary-region mask as a SimpleITK image (uint8 0/1)."""
        return self._image(self.coronary_region.astype(np.uint8))


class _Grid:
    """World <-> index bookkeeping of a ``(z, y, x)`` grid with identity direction."""

    def __init__(self, shape, spacing, origin):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        nz, ny, nx = self.shape
        sx, sy, sz = self.spacing
        self.x = (self.origin[0] + sx * np.arange(nx)).astype(np.float32)
        self.y = (self.origin[1] + sy * np.arange(ny)).astype(np.float32)
        self.z = (self.origin[2] + sz * np.arange(nz)).astype(np.float32)

    def _range(self, lo: float, hi: float, axis: int) -> slice:
        """Indices along world axis (0 x, 1 y, 2 z) whose centres lie in [lo, hi]."""
        n = self.shape[2 - axis]
        o, s = self.origin[axis], self.spacing[axis]
        a = max(0, int(math.ceil((lo - o) / s)))
        b = min(n, int(math.floor((hi - o) / s)) + 1)
        return slice(a, max(a, b))

    def box(self, lo, hi):
        """Array slices and broadcastable coordinates (Z, Y, X) of the world box [lo, hi]."""
        sx_, sy_, sz_ = (self._range(lo[a], hi[a], a) for a in range(3))
        sl = (sz_, sy_, sx_)
        Z = self.z[sz_][:, None, None]
        Y = self.y[sy_][None, :, None]
        X = self.x[sx_][None, None, :]
        return sl, Z, Y, X

    def index(self, p) -> tuple[int, int, int]:
        """Nearest voxel ``(k, j, i)`` of world point ``p`` (may lie outside the grid)."""
        return tuple(int(round((p[a] - self.origin[a]) / self.spacing[a])) for a in (2, 1, 0))


def _empty(sl) -> bool:
    return any(s.stop <= s.start for s in sl)


class _Builder:
    """Paints structures into the HU, label and bookkeeping arrays of one phantom."""

    def __init__(self, grid: _Grid, p: dict):
        self.g = grid
        self.p = p
        shape = grid.shape
        self.hu = np.empty(shape, np.float32)
        self.lab = np.zeros(shape, np.uint8)
        self.tis = np.zeros(shape, np.uint8)
        self.peri = np.zeros(shape, bool)
        self.creg = np.zeros(shape, bool)
        self.ids = {v: k for k, v in manifest.class_map().items()}

    def paint(self, sl, mask, hu, label: int = 0, tissue: int = T_OTHER, clear_peri: bool = False):
        """Write ``hu`` (scalar or block array), ``label`` and ``tissue`` where ``mask`` holds."""
        if _empty(sl):
            return
        mask = np.broadcast_to(mask, self.hu[sl].shape)
        if not mask.any():
            return
        h = self.hu[sl]
        if np.ndim(hu) == 0:
            h[mask] = hu
        else:
            h[mask] = np.broadcast_to(hu, h.shape)[mask]
        self.lab[sl][mask] = label
        self.tis[sl][mask] = tissue
        if clear_peri:
            self.peri[sl][mask] = False

    def tube_mask(self, points: np.ndarray, radii: np.ndarray):
        """Union of balls along a centreline: ``(slices, mask)`` on the tube's bounding box."""
        r_max = float(np.max(radii))
        lo = points.min(axis=0) - r_max
        hi = points.max(axis=0) + r_max
        sl, Z, Y, X = self.g.box(lo, hi)
        mask = np.zeros(tuple(s.stop - s.start for s in sl), bool)
        if mask.size == 0:
            return sl, mask
        z, y, x = Z.ravel(), Y.ravel(), X.ravel()
        for pt, r in zip(points, radii):
            k0, k1 = np.searchsorted(z, pt[2] - r), np.searchsorted(z, pt[2] + r, side="right")
            j0, j1 = np.searchsorted(y, pt[1] - r), np.searchsorted(y, pt[1] + r, side="right")
            i0, i1 = np.searchsorted(x, pt[0] - r), np.searchsorted(x, pt[0] + r, side="right")
            if k1 <= k0 or j1 <= j0 or i1 <= i0:
                continue
            d2 = ((z[k0:k1, None, None] - pt[2]) ** 2 + (y[None, j0:j1, None] - pt[1]) ** 2
                  + (x[None, None, i0:i1] - pt[0]) ** 2)
            mask[k0:k1, j0:j1, i0:i1] |= d2 <= r * r
        return sl, mask


def _polyline(nodes, step: float = 1.0) -> np.ndarray:
    """Points every ``step`` mm along a smooth curve through ``nodes`` (Catmull-Rom)."""
    nodes = np.asarray(nodes, float)
    ext = np.vstack([2 * nodes[0] - nodes[1], nodes, 2 * nodes[-1] - nodes[-2]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        n = max(2, int(np.linalg.norm(p2 - p1) / step) + 1)
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(nodes[-1:])
    return np.vstack(out)


def _smooth_field(rng, shape, sigma_vox: float, coarse: int = 4) -> np.ndarray:
    """A smooth random field of unit SD on ``shape``: coarse white noise, blurred, upsampled."""
    cshape = tuple(max(3, int(math.ceil(s / coarse)) + 2) for s in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(cshape).astype(np.float32), sigma_vox)
    f /= max(float(f.std()), 1e-6)
    out = ndimage.zoom(f, [s / c for s, c in zip(shape, cshape)], order=1, grid_mode=True, mode="nearest")
    # zoom rounds the output shape: pad (edge) or crop to exactly ``shape``.
    out = np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape)], mode="edge")
    return out[: shape[0], : shape[1], : shape[2]]


# -- geometry -------------------------------------------------------------------------------------
class _Anatomy:
    """The phantom's geometry in mm, derived from the parameters and a random pose."""

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
        e2 = _unit([e1[1], -e1[0], 0.0])
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
        nrm = _unit(self.R @ (u / self.abc))
        return p, nrm

    def phi_of(self, v) -> float:
        """Azimuth (around the long axis) of the world direction ``v``."""
        v = _unit(v)
        return float(np.arctan2(v @ self.R[:, 2], v @ self.R[:, 1]))

    def z_diaphragm(self, X, Y):
        """The diaphragm's upper surface z(x, y): two domes falling to the costophrenic recesses."""
        right = self.dome_r - 0.008 * (X + 0.36 * self.cx) ** 2 - 0.005 * (Y - 5.0) ** 2
        left = self.dome_l - 0.008 * (X - 0.36 * self.cx) ** 2 - 0.005 * (Y - 5.0) ** 2
        return np.maximum(right, left)


def _angdiff(a, b):
    """Signed difference of angles, wrapped to [-pi, pi)."""
    return np.mod(a - b + np.pi, 2 * np.pi) - np.pi


class _CoronaryTree:
    """Coronary paths (RCA, LCx, LAD, PDA) on the heart surface and the EAT bed along them."""

    S_WIDTH = 0.08     # half-width of the atrioventricular groove in units of the long semi-axis
    PHI_WIDTH = 0.10   # half-width of the interventricular grooves (radians on the unit sphere)
    BED_MM = 5.5       # epicardial fat thickness under the arteries

    def __init__(self, an: _Anatomy, rng: np.random.Generator):
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
        return float(sum(np.pi * np.sum(r ** 2) * 0.7 for _, r in self.paths.values()))


class _HeartShells:
    """Epicardial fat thickness t(n), sac wall and paracardial fat as functions of direction."""

    WALL_MM = 1.2
    VESSEL_LOSS = 1.05

    def __init__(self, an: _Anatomy, tree: _CoronaryTree, rng: np.random.Generator):
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


# -- building -------------------------------------------------------------------------------------
def _filled_params(params: Mapping) -> dict:
    p = dict(DEFAULT_PARAMETERS)
    for k, v in dict(params).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        p[k] = v.item() if isinstance(v, np.generic) else v
    for k, v in DEFAULT_PARAMETERS.items():
        if isinstance(v, float):
            p[k] = float(p[k])
    return p


def ctac_phantom(params: Mapping | None = None, seed: int = 0, shape=CTAC_SHAPE, spacing=CTAC_SPACING,
                 keep_clean: bool = False) -> Phantom:
    """Build one digital CTAC phantom.

    Parameters
    ----------
    params : mapping, optional
        Phantom parameters (a row of :func:`phantom_parameters`, or any subset of
        :data:`DEFAULT_PARAMETERS`; missing keys take the reference patient's values). Grid keys in
        ``params`` are ignored: ``shape`` and ``spacing`` set the grid.
    seed : int
        Seed of every random choice (pose, textures, lesion placement, noise): the same parameters,
        seed and grid give identical arrays.
    shape : (int, int, int)
        ``(nz, ny, nx)``; the default is a CTAC volume of 80 x 512 x 512.
    spacing : (float, float, float)
        ``(x, y, z)`` voxel size in mm; the z spacing is the slice thickness.
    keep_clean : bool
        Also keep the noise-free image (``Phantom.clean``).

    Returns
    -------
    Phantom
    """
    p = _filled_params({} if params is None else params)
    nz, ny, nx = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    origin = (-(nx - 1) / 2.0 * sx, -(ny - 1) / 2.0 * sy, p["fov_z_shift_mm"] - (nz - 1) / 2.0 * sz)
    grid = _Grid((nz, ny, nx), (sx, sy, sz), origin)
    b = _Builder(grid, p)
    an = _Anatomy(p, _rng(seed, 1))
    tree = _CoronaryTree(an, _rng(seed, 2))
    shells = _HeartShells(an, tree, _rng(seed, 3))
    shells.fit(p["eat_volume_ml"], p["paracardial_fat_ml"])

    _paint_body(b, an)
    _paint_lungs(b, an, _rng(seed, 4))
    _paint_abdomen(b, an)
    _paint_mediastinum(b, an)
    heart_box = _paint_heart(b, an, tree, shells, _rng(seed, 5))
    _paint_vessels(b, an, _rng(seed, 6))
    _paint_spine(b, an)
    _paint_ribs(b, an)
    lesions = _place_lesions(b, an, tree, _rng(seed, 7))

    offset = float(p["hu_offset"])
    voxel_ml = sx * sy * sz / 1000.0
    # Truth that needs the noise-free image, taken before the noise goes in. Epicardial and
    # paracardial fat are painted only inside the heart's box: look for them there alone.
    eat_mask = np.zeros(grid.shape, bool)
    eat_mask[heart_box] = b.tis[heart_box] == T_EAT
    eat_vals = b.hu[heart_box][eat_mask[heart_box]].astype(np.float64)
    n_para = int(np.count_nonzero(b.tis[heart_box] == T_PARA))
    sigma = float(p["noise_hu"])
    ct, clean, counts, hu_sums = _finish(b.hu, b.lab, offset, sigma, _rng(seed, 99), keep_clean)
    b.hu = None

    truth = _truth(b, p, grid, lesions, eat_vals, counts, hu_sums, n_para, voxel_ml, offset)
    logger.info("phantom seed %d: %s, Agatston %.1f, EAT %.1f mL / %.1f HU, noise %.0f HU", seed, shape,
                truth["agatston"], truth["eat_volume_ml"], truth["eat_density_hu"], sigma)
    return Phantom(ct=ct, labels=b.lab, pericardium=b.peri, coronary_region=b.creg, eat_mask=eat_mask,
                   spacing=(sx, sy, sz), origin=origin, truth=truth, lesions=lesions, params=p, seed=int(seed),
                   clean=clean)


# z-slabs of about this many voxels: the finishing pass then works in the CPU's cache instead of
# streaming the whole volume through memory once per operation.
_SLAB_VOXELS = 1 << 20


def _finish(hu: np.ndarray, lab: np.ndarray, offset: float, sigma: float, rng: np.random.Generator,
            keep_clean: bool):
    """Per-label voxel counts and noise-free HU sums, then the noisy int16 image, slab by slab.

    ``hu`` (float32, noise-free, without the site offset) is overwritten. The noise is drawn slab
    after slab from ``rng``: a Generator's normal draws do not depend on how they are split into
    calls, so the image is the one a single draw for the whole volume gives.
    """
    nz = hu.shape[0]
    step = max(1, _SLAB_VOXELS // max(1, hu[0].size))
    ct = np.empty(hu.shape, np.int16)
    clean = np.empty(hu.shape, np.int16) if keep_clean else None
    counts = np.zeros(256, np.int64)
    hu_sums = np.zeros(256, np.float64)
    for z0 in range(0, nz, step):
        h, lb = hu[z0:z0 + step], lab[z0:z0 + step]
        counts += np.bincount(lb.ravel(), minlength=256)
        labelled = lb != 0  # most voxels are unlabelled: summing only the others is faster
        hu_sums += np.bincount(lb[labelled], weights=h[labelled], minlength=256)
        if keep_clean:
            clean[z0:z0 + step] = np.clip(np.rint(h + offset), -1024, 3071)
        if sigma > 0:
            noise = rng.standard_normal(h.shape, dtype=np.float32)
            noise *= sigma
            h += noise
        h += offset
        np.rint(h, out=h)
        np.clip(h, -1024, 3071, out=h)
        ct[z0:z0 + step] = h
    return ct, clean, counts, hu_sums


def _paint_body(b: _Builder, an: _Anatomy):
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


def _paint_lungs(b: _Builder, an: _Anatomy, rng):
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


def _ellipsoid(b: _Builder, centre, semi, cond=None):
    """Slices and mask of an axis-aligned ellipsoid (optionally AND a condition on the block)."""
    c, s = np.asarray(centre, float), np.asarray(semi, float)
    sl, Z, Y, X = b.g.box(c - s, c + s)
    if _empty(sl):
        return sl, None
    m = ((X - c[0]) / s[0]) ** 2 + ((Y - c[1]) / s[1]) ** 2 + ((Z - c[2]) / s[2]) ** 2 <= 1
    if cond is not None:
        m = m & cond(sl, Z, Y, X)
    return sl, m


def _paint_abdomen(b: _Builder, an: _Anatomy):
    """Liver (right), stomach with its air cap (left), spleen (left, posterior) under the diaphragm."""
    p = b.p

    def below(offset):
        def cond(sl, Z, Y, X):
            return (Z < b.zd[sl[1], sl[2]][None] - offset) & b.cavity2d[sl[1], sl[2]][None]
        return cond

    f = (p["liver_volume_ml"] / 1650.0) ** (1 / 3)
    top = an.dome_r
    sl, m = _ellipsoid(b, (-0.30 * an.cx, 5.0, top - 75.0 * f), (0.95 * an.cx * f, 0.85 * an.cy * f, 95.0 * f),
                       below(5.0))
    if m is not None:
        b.paint(sl, m, p["liver_hu"], b.ids["liver"])
    f = (p["stomach_volume_ml"] / 350.0) ** (1 / 3)
    c = np.array([0.45 * an.cx, -0.15 * an.cy, an.dome_l - 45.0 * f])
    sl, m = _ellipsoid(b, c, (42.0 * f, 45.0 * f, 50.0 * f), below(6.0))
    if m is not None:
        Y = b.g.y[sl[1]][None, :, None]
        b.paint(sl, m, np.where(Y < c[1] - 36.0 * f, -950.0, 12.0).astype(np.float32), b.ids["stomach"])
    f = (p["spleen_volume_ml"] / 210.0) ** (1 / 3)
    sl, m = _ellipsoid(b, (0.72 * an.cx, 0.55 * an.cy, an.dome_l - 60.0 * f), (24.0 * f, 50.0 * f, 50.0 * f),
                       below(5.0))
    if m is not None:
        b.paint(sl, m, p["spleen_hu"], b.ids["spleen"])


def _paint_slab_ellipse(b: _Builder, cx, cy, rx, ry, z0, z1, hu, label=0, tissue=T_OTHER):
    sl, Z, Y, X = b.g.box((cx - rx, cy - ry, z0), (cx + rx, cy + ry, z1))
    if _empty(sl):
        return
    m = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1
    b.paint(sl, m, hu, label, tissue)


def _paint_mediastinum(b: _Builder, an: _Anatomy):
    """Mediastinal fat between the lungs: superior, anterior (thymic) and posterior compartments."""
    fat = b.p["fat_hu"]
    hs = an.hs
    _paint_slab_ellipse(b, 5.0, 0.0, 40.0, 0.82 * an.cy, 35.0 * hs, 1e4, fat, tissue=T_MEDIASTINUM)
    _paint_slab_ellipse(b, 0.0, -0.78 * an.cy, 38.0, 22.0, 20.0 * hs, 120.0 * hs, fat, tissue=T_MEDIASTINUM)
    _paint_slab_ellipse(b, 15.0, an.y_vb - 12.0, 36.0, 22.0, -110.0 * hs, 40.0 * hs, fat, tissue=T_MEDIASTINUM)


def _paint_heart(b: _Builder, an: _Anatomy, tree: _CoronaryTree, shells: _HeartShells, rng):
    """Paracardial fat, sac wall, epicardial fat (textured), heart and coronary arteries."""
    p, g = b.p, b.g
    ext = float(an.abc.max()) * shells.max_delta + 2.0
    sl, Z, Y, X = g.box(an.hc - ext, an.hc + ext)
    if _empty(sl):
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
    tex = _smooth_field(rng, eat.shape, 1.2)
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
        if not _empty(rsl):
            b.creg[rsl] |= rm
    return sl


def _paint_tube(b: _Builder, nodes, radius, hu, label=0, step=1.5, clear_peri=True, tissue=T_OTHER):
    pts = _polyline(nodes, step)
    radii = np.broadcast_to(np.asarray(radius, float), (len(pts),)) if np.ndim(radius) == 0 else \
        np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(radius)), radius)
    sl, m = b.tube_mask(pts, radii)
    b.paint(sl, m, hu, label, tissue, clear_peri=clear_peri)
    return pts, radii


def _paint_vessels(b: _Builder, an: _Anatomy, rng):
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
    pts, radii = _paint_tube(b, aorta_nodes[:3], radius[:3], p["aorta_hu"], ids["aorta"], clear_peri=False)
    pts2, radii2 = _paint_tube(b, aorta_nodes[2:], radius[2:], p["aorta_hu"], ids["aorta"], clear_peri=True)
    pts, radii = np.vstack([pts, pts2]), np.r_[radii, radii2]
    # Aortic wall calcification (more with atherosclerosis): inside the aorta label.
    n_plaques = int(rng.poisson(max(0.0, p["aortic_calcium"])))
    for _ in range(n_plaques):
        i = int(rng.integers(0, len(pts)))
        v = _unit(rng.standard_normal(3))
        c = pts[i] + v * (radii[i] - 2.2)
        sl, Z, Y, X = b.g.box(c - 2.0, c + 2.0)
        if _empty(sl):
            continue
        m = ((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2 <= 1.8 ** 2) & (b.lab[sl] == ids["aorta"])
        b.paint(sl, m, float(rng.uniform(350.0, 800.0)), ids["aorta"], clear_peri=False)
    # Pulmonary trunk (unlabelled in TotalSegmentator's total task) and its branches.
    rvot, nrm = an.surface_point(-0.75, an.phi_of([0.6, -1.0, 0.5]))
    trunk_top = [rvot[0] - 2.0, rvot[1] + 25.0, 62.0 * hs]
    _paint_tube(b, [rvot - nrm * 4.0, rvot + nrm * 12.0 + [0, 0, 12.0], trunk_top], 13.0, p["blood_hu"],
                0, clear_peri=False)
    _paint_tube(b, [trunk_top, [0.45 * an.cx, 10.0, 58.0 * hs]], 9.0, p["blood_hu"], 0, clear_peri=True)
    _paint_tube(b, [trunk_top, [-10.0, 15.0, 60.0 * hs], [-0.45 * an.cx, 12.0, 57.0 * hs]], 9.0, p["blood_hu"],
                0, clear_peri=True)
    # Venae cavae.
    ra_pt, _ = an.surface_point(-0.55, an.phi_of([-1.0, 0.2, 0.4]))
    _paint_tube(b, [[ra_pt[0] - 6.0, ra_pt[1], top], [ra_pt[0] - 6.0, ra_pt[1], ra_pt[2] + 25.0], ra_pt],
                9.0, p["blood_hu"], ids["superior_vena_cava"])
    ivc_top, _ = an.surface_point(-0.2, an.phi_of([-0.6, 0.4, -1.0]))
    _paint_tube(b, [ivc_top, [ivc_top[0] - 4.0, ivc_top[1] + 10.0, ivc_top[2] - 35.0],
                    [ivc_top[0] - 4.0, ivc_top[1] + 12.0, bottom]], 11.0, p["blood_hu"], ids["inferior_vena_cava"])
    # Trachea (air lumen in a soft-tissue wall) down to the carina, then the main bronchi.
    tr = [[0.0, an.y_vb - 40.0, top], [0.0, an.y_vb - 40.0, an.carina_z]]
    _paint_tube(b, tr, 10.5, p["soft_hu"], 0)
    _paint_tube(b, tr, 9.0, p["soft_hu"], ids["trachea"])
    _paint_tube(b, tr, 8.3, -1000.0, ids["trachea"])
    for side in (1.0, -1.0):
        nodes = [[0.0, an.y_vb - 40.0, an.carina_z + 4.0], [side * 25.0, an.y_vb - 38.0, an.carina_z - 12.0],
                 [side * 50.0, an.y_vb - 36.0, an.carina_z - 30.0]]
        _paint_tube(b, nodes, 7.0, p["soft_hu"], 0)
        _paint_tube(b, nodes, 5.5, -1000.0, 0)
    # Oesophagus behind the trachea and the left atrium, to the stomach.
    es = [[2.0, an.y_vb - 24.0, top], [3.0, an.y_vb - 24.0, an.carina_z], [6.0, an.y_vb - 22.0, -40.0 * hs],
          [25.0, an.y_vb - 30.0, an.dome_l - 25.0], [0.4 * an.cx, -0.05 * an.cy, an.dome_l - 40.0]]
    _paint_tube(b, es, 6.5, p["soft_hu"], ids["esophagus"])


def _paint_spine(b: _Builder, an: _Anatomy):
    """Vertebrae T1-L2 (cortical shell, cancellous core, arch and processes), discs, canal, cord."""
    p, g, ids, hs = b.p, b.g, b.ids, an.hs
    # Cortical shell and cancellous core, set so that a whole vertebra's mean is ~vertebra_hu.
    cortical = p["vertebra_hu"] + 250.0
    cancellous = p["vertebra_hu"] - 110.0
    posterior = p["vertebra_hu"] + 40.0
    levels = [f"vertebrae_T{i}" for i in range(1, 13)] + ["vertebrae_L1", "vertebrae_L2"]
    h = 24.0 * hs
    z_t1 = 165.0 * hs
    yb, yc = an.y_vb, an.y_canal
    # Autochthonous back muscles, either side of the spinous processes, all slices.
    scale = float(p["autochthon_scale"]) ** 0.5
    for name, side in (("autochthon_left", 1.0), ("autochthon_right", -1.0)):
        cx, cy, rx, ry = side * 30.0 * scale, yc + 15.0, 21.0 * scale, 17.0 * scale
        _paint_slab_ellipse(b, cx, cy, rx, ry, -1e4, 1e4, p["muscle_hu"], ids[name])
    # The canal (CSF) and the cord first: every slice.
    _paint_slab_ellipse(b, 0.0, yc, 9.0, 8.0, -1e4, 1e4, 8.0)
    _paint_slab_ellipse(b, 0.0, yc, 5.0, 4.5, -1e4, 1e4, p["cord_hu"], ids["spinal_cord"])
    for i, name in enumerate(levels):
        zc = z_t1 - i * h
        if zc + h / 2 < g.z[0] - 5 or zc - h / 2 > g.z[-1] + 5:
            continue
        grow = 1.0 + 0.03 * i
        rx, ry = 17.0 * grow, 14.0 * grow
        z0, z1 = zc - h / 2 + 3.0, zc + h / 2 - 3.0
        # Disc below the body.
        _paint_slab_ellipse(b, 0.0, yb, rx, ry, zc - h / 2 - 3.0, z0, 80.0)
        sl, Z, Y, X = g.box((-45.0, yb - ry - 1, z0), (45.0, yc + 40.0, z1))
        if _empty(sl):
            continue
        e = ((X / rx) ** 2 + ((Y - yb) / ry) ** 2)
        body_out = e <= 1.0
        body_in = ((X / (rx - 2.0)) ** 2 + ((Y - yb) / (ry - 2.0)) ** 2) <= 1.0
        rc = np.sqrt(X ** 2 + (Y - yc) ** 2)
        arch = (rc >= 9.0) & (rc <= 15.0) & (Y >= yb + ry - 3.0)
        spinous = (np.abs(X) <= 3.5) & (Y >= yc + 12.0) & (Y <= yc + 36.0) & (Z <= z1 - 0.2 * (Y - yc))
        transverse = (np.abs(Y - yc) <= 4.0) & (np.abs(X) >= 9.0) & (np.abs(X) <= 33.0)
        shape = np.broadcast_to(body_out | arch | spinous | transverse, (Z.shape[0],) + e.shape[1:])
        vals = np.where(body_out, np.where(body_in, cancellous, cortical), posterior).astype(np.float32)
        b.paint(sl, shape, np.broadcast_to(vals, shape.shape), ids[name], clear_peri=True)


def _rib_z(theta_abs, z_head, drop, theta_end):
    return z_head - drop * np.clip(theta_abs / theta_end, 0, 1) ** 1.4


def _paint_ribs(b: _Builder, an: _Anatomy):
    """Twelve ribs a side and the costal cartilages in the chest wall, and the sternum."""
    p, g, ids, hs = b.p, b.g, b.ids, an.hs
    X, Y = np.meshgrid(g.x, g.y)
    # Distance outward from the cavity boundary, approximately, and the angle from the spine.
    rho = np.sqrt(b.rho_cav)
    theta = np.arctan2(X, Y)  # 0 posterior, +pi/2 left, +-pi anterior
    r_eff = np.sqrt((an.cx * np.sin(theta)) ** 2 + (an.cy * np.cos(theta)) ** 2)
    d = (rho - 1.0) * r_eff
    ring = (d >= 1.0) & (d <= 8.0)
    jj, ii = np.nonzero(ring)
    th = theta[jj, ii]
    th_abs = np.abs(th)
    side_left = th > 0
    h = 24.0 * hs
    z_t1 = 165.0 * hs
    bone = p["bone_hu"]
    cart = p["cartilage_hu"]
    sternum_top, sternum_bottom = 118.0 * hs, -45.0 * hs
    theta_st = np.pi - np.arctan2(16.0, an.cy)
    for k in range(1, 13):
        z_head = z_t1 - (k - 1) * h + 4.0
        drop = (40.0 + 3.5 * k) * hs
        theta_end = np.deg2rad(min(150.0, 105.0 + 7.0 * k)) if k <= 10 else np.deg2rad(95.0 + 5 * (12 - k))
        theta_start = 0.32
        zr = _rib_z(th_abs, z_head, drop, theta_end)
        on = (th_abs >= theta_start) & (th_abs <= theta_end)
        hh = 4.5 * hs
        if k <= 10:
            # Costal cartilage from the rib's end towards the sternum (ribs 8-10 join the one above).
            z_end = z_head - drop
            if k <= 7:
                z_st = sternum_top - 12.0 - (k - 1) * (sternum_top - 12.0 - sternum_bottom - 20.0) / 6.0
                th_st = theta_st
            else:
                z_st = z_end + 20.0
                th_st = np.pi - 0.55 + 0.07 * (k - 8)
            on_c = (th_abs > theta_end) & (th_abs <= th_st)
            zc = z_end + (z_st - z_end) * np.clip((th_abs - theta_end) / max(th_st - theta_end, 1e-3), 0, 1)
        else:
            on_c = np.zeros_like(on)
            zc = zr
        for kk, z in enumerate(g.z):
            m = on & (np.abs(z - zr) <= hh)
            mc = on_c & (np.abs(z - zc) <= hh * 0.9)
            if m.any():
                for left in (True, False):
                    sel = m & (side_left == left)
                    if sel.any():
                        name = f"rib_{'left' if left else 'right'}_{k}"
                        b.hu[kk, jj[sel], ii[sel]] = bone
                        b.lab[kk, jj[sel], ii[sel]] = ids[name]
                        b.tis[kk, jj[sel], ii[sel]] = T_OTHER
                        b.peri[kk, jj[sel], ii[sel]] = False
            if mc.any():
                b.hu[kk, jj[mc], ii[mc]] = cart
                b.lab[kk, jj[mc], ii[mc]] = ids["costal_cartilages"]
                b.tis[kk, jj[mc], ii[mc]] = T_OTHER
    # Sternum: a plate in the anterior chest wall at the midline.
    st = ring & (np.abs(X) <= 17.0) & (Y < 0)
    jj, ii = np.nonzero(st)
    for kk, z in enumerate(g.z):
        if sternum_bottom <= z <= sternum_top:
            half = 17.0 if z > sternum_top - 45.0 * hs else 13.0
            sel = np.abs(g.x[ii]) <= half
            b.hu[kk, jj[sel], ii[sel]] = bone - 60.0
            b.lab[kk, jj[sel], ii[sel]] = ids["sternum"]
            b.tis[kk, jj[sel], ii[sel]] = T_OTHER


# -- coronary calcium -----------------------------------------------------------------------------
_BANDS = {1: (130.0, 200.0), 2: (200.0, 300.0), 3: (300.0, 400.0), 4: (400.0, 1000.0)}


def lesion_design(weight: int, noise_hu: float, margin_sd: float = LESION_MARGIN_SD):
    """Noise-robust (core, plateau) HU intervals of a lesion of Agatston ``weight``, or None.

    The core pixel (the lesion's peak) lies ``margin_sd`` noise SDs inside the band (at least
    10 HU), so noise moves the peak out of the band with probability ~1e-3; plateau pixels lie
    3.5 SDs (at least 15 HU) above 130 HU, so none drops below the threshold, and, below weight 4,
    4 SDs under the band's upper edge, so none lifts the peak into the next band. Values are image
    HU (site offset included); the plateau is never above the core.

    Parameters
    ----------
    weight : {1, 2, 3, 4}
        Agatston weight of the lesion.
    noise_hu : float
        Noise SD of the image.
    margin_sd : float
        Margin of the core inside its band, in noise SDs.

    Returns
    -------
    tuple or None
        ``((core_lo, core_hi), (plateau_lo, plateau_hi))``, or None when the band cannot hold such
        a lesion at this noise (weights 1-3 above ~15 HU of noise).
    """
    lo, hi = _BANDS[weight]
    m = max(10.0, margin_sd * noise_hu)
    plat_lo = 130.0 + max(15.0, _PLATEAU_LOW_SD * noise_hu)
    core = (max(lo + m, plat_lo), hi - m) if weight < 4 else (lo + m, lo + m + 450.0)
    plat_hi = min((hi - max(15.0, _PLATEAU_HIGH_SD * noise_hu)) if weight < 4 else 10000.0, core[1])
    if core[0] > core[1] or plat_lo > plat_hi:
        return None
    return core, (plat_lo, plat_hi)


def _place_lesions(b: _Builder, an: _Anatomy, tree: _CoronaryTree, rng) -> pd.DataFrame:
    """Calcified coronary lesions adding up to the CAC target; returns the 2D-lesion table."""
    p, g = b.p, b.g
    sx, sy, sz = g.spacing
    factor = sz / REFERENCE_THICKNESS_MM
    target = float(min(max(p["cac_score"], 0.0), MAX_PHANTOM_CAC))
    cols = ["lesion", "artery", "slice", "n_pixels", "area_mm2", "peak_hu", "weight", "score"]
    if target <= 0:
        return pd.DataFrame(columns=cols)
    offset = float(p["hu_offset"])
    sigma = float(p["noise_hu"])
    designs = {w: lesion_design(w, sigma) for w in (1, 2, 3, 4)}
    feasible = [w for w, d in designs.items() if d is not None]
    pref = {1: 0.15, 2: 0.25, 3: 0.25, 4: 0.35} if target < 400 else {1: 0.08, 2: 0.17, 3: 0.2, 4: 0.55}
    probs = np.array([pref[w] for w in feasible])
    probs /= probs.sum()
    # Heavy burdens get larger plaques (up to 1.6x the usual maximum area) and longer ones.
    big = target > 2000.0
    max_pix = max(MIN_LESION_PIXELS, int(MAX_LESION_AREA_MM2 * (1.6 if big else 1.0) / (sx * sy)))
    # In-plane offsets of a disc, nearest first (the core pixel is the first).
    rr = int(math.ceil(math.sqrt(max_pix / np.pi) * 1.6)) + 2
    oj, oi = (o.ravel() for o in np.mgrid[-rr:rr + 1, -rr:rr + 1])
    order = np.argsort((oj * sy) ** 2 + (oi * sx) ** 2, kind="stable")
    oj, oi = oj[order], oi[order]
    keep_ids = {b.ids[n] for n in _CORONARY_NEIGHBOURS} | {0}
    excl_j = int(math.ceil(2.0 / sy)) + 2
    excl_i = int(math.ceil(2.0 / sx)) + 2
    heart_id = b.ids["heart"]
    keep_list = sorted(keep_ids)
    hj, hi_ = int(math.ceil(6.0 / sy)), int(math.ceil(6.0 / sx))
    arteries = list(tree.paths)
    art_p = np.array([0.35, 0.2, 0.35, 0.1])  # RCA, LCx, LAD, PDA
    nz, ny, nx = g.shape
    remaining = target
    rows: list[dict] = []
    lesion_no = 0
    attempts = 0
    unit = sx * sy * factor
    min_contrib = MIN_LESION_PIXELS * unit * min(feasible)
    while attempts < 1500 and (remaining >= 0.5 * min_contrib or lesion_no == 0):
        attempts += 1
        w = int(rng.choice(feasible, p=probs))
        n_sl = 1 if sz >= 4.0 else int(rng.choice([1, 2], p=[0.4, 0.6]))
        if big and rng.random() < 0.5:
            n_sl += 1
        if remaining < 2.0 * MIN_LESION_PIXELS * unit * w:
            # Small remainders: the smallest lesion that fits (one slice, the lowest weight).
            w, n_sl = min(feasible), 1
        per = n_sl * unit * w
        want = min(remaining, rng.uniform(0.3, 1.0) * max_pix * per)
        n_pix = int(np.clip(round(want / per), MIN_LESION_PIXELS, max_pix))
        if n_pix * per > 1.5 * remaining and lesion_no > 0:
            if n_sl > 1 or w > min(feasible):
                continue
        art = arteries[int(rng.choice(len(arteries), p=art_p))]
        pts, radii = tree.paths[art]
        i = int(rng.integers(0, len(pts)))
        c = pts[i] + _unit(rng.standard_normal(3)) * 0.6 * radii[i]
        k, j, ii = g.index(c)
        ks = [k + d for d in range(n_sl)] if rng.random() < 0.5 else [k - d for d in range(n_sl)][::-1]
        if min(ks) < 1 or max(ks) > nz - 2 or not (rr + 3 <= j < ny - rr - 3 and rr + 3 <= ii < nx - rr - 3):
            continue
        pj, pi = j + oj[:n_pix], ii + oi[:n_pix]
        W = rr + 3
        local = np.zeros((2 * W + 1, 2 * W + 1), bool)
        local[oj[:n_pix] + W, oi[:n_pix] + W] = True
        near = ndimage.binary_dilation(local, iterations=2)
        win = (slice(j - W, j + W + 1), slice(ii - W, ii + W + 1))
        ok = True
        for kk in ks:
            # Separate from other lesions (2-pixel gap) so that noise cannot merge them.
            if (b.tis[kk][win][near] == T_LESION).any():
                ok = False
                break
            # Away from structures that calcium scoring removes (aorta, bone, liver, ...).
            lab_win = b.lab[max(0, kk - 1):kk + 2, max(0, j - rr - excl_j):j + rr + excl_j + 1,
                            max(0, ii - rr - excl_i):ii + rr + excl_i + 1]
            if not np.isin(lab_win, keep_list).all():
                ok = False
                break
            # Close to the heart (well inside the heart-dilated scoring region).
            hwin = b.lab[kk, max(0, j - hj):j + hj + 1, max(0, ii - hi_):ii + hi_ + 1]
            if not (hwin == heart_id).any():
                ok = False
                break
        if not ok:
            continue
        core_rng, plat_rng = designs[w]
        lesion_no += 1
        for kk in ks:
            # Design values are image HU (site offset included); the builder holds tissue HU.
            peak = float(np.round(rng.uniform(*core_rng)))
            plat_top = min(plat_rng[1], peak) if w < 4 else max(plat_rng[0], 0.7 * peak)
            plat = float(np.round(rng.uniform(plat_rng[0], plat_top)))
            core, plat = peak - offset, min(plat, peak) - offset
            b.hu[kk, pj, pi] = plat
            b.hu[kk, pj[0], pi[0]] = core
            b.tis[kk, pj, pi] = T_LESION
            b.creg[kk, pj, pi] = True
            # Lesion pixels outside the heart are unlabelled (TotalSegmentator has no coronary class).
            lab = b.lab[kk, pj, pi]
            b.lab[kk, pj, pi] = np.where(lab == heart_id, heart_id, 0)
            area = n_pix * sx * sy
            if int(agatston_weight(peak)) != w:  # the design guarantees it; never silently wrong truth
                raise RuntimeError(f"lesion peak {peak} HU is not in the band of weight {w}")
            rows.append({"lesion": lesion_no, "artery": art, "slice": kk, "n_pixels": n_pix, "area_mm2": area,
                         "peak_hu": peak, "weight": w, "score": area * w * factor})
        remaining -= n_sl * n_pix * unit * w
    if remaining > 0.25 * target and target > 0:
        logger.warning("phantom calcium: placed %.0f of the %.0f target (no room for more lesions)",
                       target - remaining, target)
    return pd.DataFrame(rows, columns=cols)


# -- truth ----------------------------------------------------------------------------------------
def _truth(b: _Builder, p, grid, lesions, eat_vals, counts, hu_sums, n_para, voxel_ml, offset) -> dict:
    cmap = manifest.class_map()
    names = set(manifest.synthetic_structures().index) | {cmap[i] for i in np.flatnonzero(counts[1:]) + 1 if i in cmap}
    ids = {n: manifest.structure_id(n) for n in names}
    # the same definition of present / truncated / absent as the pipeline's
    status = presence.structure_status(b.lab, sorted(ids))
    structures = {n: {"volume_ml": float(counts[i] * voxel_ml), "status": status[n],
                      "mean_hu": float(hu_sums[i] / counts[i]) + offset if counts[i] else float("nan")}
                  for n, i in sorted(ids.items())}
    sx, sy, sz = grid.spacing
    agat = float(lesions["score"].sum()) if len(lesions) else 0.0
    n_vox = int(lesions["n_pixels"].sum()) if len(lesions) else 0
    n_eat = int(eat_vals.size)
    eat_density = float(eat_vals.mean()) + offset if n_eat else float("nan")
    return {
        "agatston": agat,
        "agatston_unscaled": agat * REFERENCE_THICKNESS_MM / sz,
        "calcium_volume_mm3": n_vox * sx * sy * sz,
        "cac_category": cac_category(agat),
        "cac_target": float(min(max(p["cac_score"], 0.0), MAX_PHANTOM_CAC)),
        "n_lesions": int(len(lesions)),
        "lesions": lesions.to_dict(orient="records"),
        "eat_volume_ml": n_eat * voxel_ml,
        "eat_density_hu": eat_density,
        "eat_tissue_density_hu": eat_density - offset,
        "eat_n_voxels": n_eat,
        "eat_target_ml": float(p["eat_volume_ml"]),
        "paracardial_fat_ml": float(n_para * voxel_ml),
        "pericardium_volume_ml": float(np.count_nonzero(b.peri) * voxel_ml),
        "structures": structures,
        "fov_z_mm": [float(grid.z[0]), float(grid.z[-1])],
        "noise_hu": float(p["noise_hu"]),
        "hu_offset": offset,
        "spacing": list(grid.spacing),
        "shape": list(grid.shape),
        "origin": list(grid.origin),
        "definitions": {
            "agatston": "noise-free coronary lesions, 2D >=130 HU, weights 1-4 by peak, area >= 1 mm2 and "
                        f">= {MIN_PIXELS} pixels, scaled by slice thickness / {REFERENCE_THICKNESS_MM:g} mm",
            "eat": "voxels of the epicardial fat compartment (inside the sac, outside heart, coronaries and "
                   "calcium); density = their mean noise-free HU (site offset included)",
            "status": "truncated = labelled voxels on the first/last axial slice or the in-plane edge",
            "mean_hu": "mean noise-free HU of the structure's labelled voxels (site offset included)",
        },
    }


# -- parameters from the synthetic cohort --------------------------------------------------------
def _effect(tissue: dict, param: str, drivers: pd.DataFrame) -> np.ndarray:
    total = np.zeros(len(drivers))
    for driver, coef in tissue.get("effects", {}).get(param, {}).items():
        total += coef * drivers[driver].to_numpy(float)
    return total


def _target_volume(name: str, drivers: pd.DataFrame) -> np.ndarray:
    """The synthetic feature model's expected volume (mL) of a structure, without its random jitter."""
    st = manifest.synthetic_structures().loc[name]
    tissue = manifest.tissue_models()[st["tissue"]]
    female = drivers["female"].to_numpy(float)
    return (st["volume_ml"] * np.where(female == 1, st["female_ratio"], 1.0)
            * np.exp(_effect(tissue, "log_volume", drivers)))


def _tissue_hu(tissue: str, drivers: pd.DataFrame) -> np.ndarray:
    t = manifest.tissue_models()[tissue]
    return t["hu_mean"] + _effect(t, "hu_mean", drivers)


def phantom_parameters(cohort: pd.DataFrame, drivers: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Phantom parameters for every patient of a synthetic cohort.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Synthetic cohort rows (:func:`ctac_helpers.cohort.synth.synthetic_dataset`'s ``cohort``).
    drivers : pandas.DataFrame
        Their CT drivers (:func:`ctac_helpers.cohort.synth.ct_drivers`), row-aligned with ``cohort``.
    seed : int
        Seed of the per-patient draws (pose jitter, coverage, phantom seeds).

    Returns
    -------
    pandas.DataFrame
        One row per patient: identifiers, grid (``nz, ny, nx, spacing_x/y/z`` from the site's voxel
        size and an axial coverage of about 29 cm), ``noise_hu`` (the protocol's SD),
        ``hu_offset`` (the site's), body size (sex, BMI), organ volumes and tissue HU from the
        synthetic feature model (:func:`ctac_helpers.core.manifest.tissue_models`) at the patient's
        drivers, ``eat_volume_ml`` (the cohort's EAT volume), ``eat_density_hu`` (its density +
        :data:`EAT_DENSITY_SHIFT_HU`), ``cac_score`` (the cohort's, capped at
        :data:`MAX_PHANTOM_CAC`), ``aortic_calcium`` (expected aortic plaques, from the
        atherosclerosis driver), ``fov_z_shift_mm`` and ``phantom_seed``, and ``driver_*``
        copies of the drivers.
    """

    cohort = cohort.reset_index(drop=True)
    drivers = drivers.reset_index(drop=True)
    if len(cohort) != len(drivers):
        raise ValueError(f"cohort ({len(cohort)} rows) and drivers ({len(drivers)} rows) differ in length")
    n = len(cohort)
    # Per-patient draws keyed by the patient id: a patient's phantom does not depend on which
    # other patients are in the table.
    draws = np.array([np.random.default_rng(np.random.SeedSequence([int(seed), 1000, zlib.crc32(str(pid).encode())]))
                      .standard_normal(4) for pid in cohort["patient_id"]]).reshape(-1, 4)
    female = drivers["female"].to_numpy(float) == 1
    bmi = cohort["bmi"].to_numpy(float)
    site = cohort["site"].to_numpy()
    vox = np.array([synth.SITE_VOXEL_MM[s] for s in site], float)
    coverage = np.clip(290.0 + 20.0 * draws[:, 0], 240.0, 340.0)
    fov_shift = np.clip(15.0 + 15.0 * draws[:, 1], -coverage / 2 + 75.0, coverage / 2 - 75.0)
    muscle = np.exp(_effect(manifest.tissue_models()["muscle"], "log_volume", drivers))
    lungs = sum(_target_volume(n_, drivers) for n_ in _LUNG_LOBES)
    d = drivers
    out = pd.DataFrame({
        "patient_id": cohort["patient_id"].to_numpy(),
        "phantom_seed": (np.floor(special.ndtr(draws[:, 3]) * (2 ** 31 - 1))).astype(np.int64),
        "sex": cohort["sex"].to_numpy(), "age": cohort["age"].to_numpy(float), "bmi": bmi,
        "site": site, "ct_protocol": cohort["ct_protocol"].to_numpy(),
        "spacing_x": vox[:, 0], "spacing_y": vox[:, 1], "spacing_z": vox[:, 2],
        "nz": np.round(coverage / vox[:, 2]).astype(int), "ny": 512, "nx": 512,
        "coverage_mm": coverage,
        "noise_hu": cohort["ct_protocol"].map(synth.PROTOCOL_NOISE_HU).to_numpy(float),
        "hu_offset": pd.Series(site).map(synth.SITE_HU_OFFSET).to_numpy(float),
        "height_scale": np.where(female, 0.93, 1.0),
        "body_width_mm": 330.0 * (bmi / 29.0) ** 0.45 * np.where(female, 0.92, 1.0),
        "body_depth_mm": 250.0 * (bmi / 29.0) ** 0.55 * np.where(female, 0.95, 1.0),
        "subcut_fat_mm": 16.0 * (bmi / 29.0) ** 1.8 * np.where(female, 1.35, 1.0),
        "muscle_mm": 12.0 * muscle,
        "autochthon_scale": _target_volume("autochthon_left", drivers) / 320.0,
        "heart_volume_ml": _target_volume("heart", drivers),
        "lung_volume_ml": lungs,
        "aorta_scale": (_target_volume("aorta", drivers) / 160.0) ** 0.4,
        "liver_volume_ml": _target_volume("liver", drivers),
        "spleen_volume_ml": _target_volume("spleen", drivers),
        "stomach_volume_ml": _target_volume("stomach", drivers),
        "heart_hu": _tissue_hu("heart", d), "blood_hu": _tissue_hu("blood", d), "aorta_hu": _tissue_hu("aorta", d),
        "lung_hu": _tissue_hu("lung", d), "muscle_hu": _tissue_hu("muscle", d), "liver_hu": _tissue_hu("liver", d),
        "spleen_hu": _tissue_hu("spleen", d), "soft_hu": _tissue_hu("soft", d), "cord_hu": _tissue_hu("cord", d),
        "bone_hu": _tissue_hu("bone", d), "vertebra_hu": _tissue_hu("vertebra", d),
        "cartilage_hu": _tissue_hu("cartilage", d),
        "fat_hu": (-100.0 + 4.0 * np.clip(d["age"].to_numpy(float), -2, 2)
                   - 3.0 * np.clip(d["adiposity"].to_numpy(float), -2, 2)),
        "eat_volume_ml": cohort["eat_volume"].to_numpy(float),
        "eat_density_hu": cohort["eat_density"].to_numpy(float) + EAT_DENSITY_SHIFT_HU,
        "paracardial_fat_ml": 55.0 * np.exp(0.35 * d["adiposity"].to_numpy(float) + 0.25 * d["bmi"].to_numpy(float)
                                            + 0.15 * draws[:, 2]),
        "cac_score": np.minimum(cohort["cac_score"].to_numpy(float), MAX_PHANTOM_CAC),
        "aortic_calcium": np.clip(1.5 + 2.0 * d["athero"].to_numpy(float) + 1.0 * d["age"].to_numpy(float), 0, 12),
        "fov_z_shift_mm": fov_shift,
    })
    for col in drivers.columns:
        out[f"driver_{col}"] = drivers[col].to_numpy(float)
    return out


def phantom_cohort(n: int, seed: int, shape=None, spacing=None) -> tuple[pd.DataFrame, Callable[[int], Phantom]]:
    """Phantom parameters for ``n`` synthetic patients and a function that builds one phantom.

    The patients are the first ``n`` rows of ``synth.synthetic_dataset(max(n, 200), seed)`` (the
    generator's minimum size is 200; its rows are in random order), so phantoms inherit the
    cohort's latent drivers and with them its mortality signal.

    Parameters
    ----------
    n : int
        Number of phantoms.
    seed : int
        Seed of the synthetic cohort and of the phantom parameters.
    shape : (int, int, int), optional
        Grid of every phantom; by default 512 x 512 in-plane and as many slices as the patient's
        axial coverage needs at its slice thickness.
    spacing : (float, float, float), optional
        Voxel size of every phantom; by default the site's (:data:`ctac_helpers.cohort.synth.SITE_VOXEL_MM`).

    Returns
    -------
    params : pandas.DataFrame
        :func:`phantom_parameters`' table (grid columns set as requested).
    make : callable
        ``make(i, keep_clean=False) -> Phantom`` for row ``i``: phantoms are built one at a time,
        so only one volume needs to be in memory (see also :func:`iter_phantoms`).
    """

    ds = synth.synthetic_dataset(max(int(n), 200), seed)
    drivers = synth.ct_drivers(ds.cohort, ds.latent).iloc[: int(n)]
    params = phantom_parameters(ds.cohort.iloc[: int(n)], drivers, seed)
    if spacing is not None:
        params["spacing_x"], params["spacing_y"], params["spacing_z"] = (float(s) for s in spacing)
        params["nz"] = np.round(params["coverage_mm"] / float(spacing[2])).astype(int)
    if shape is not None:
        params["nz"], params["ny"], params["nx"] = (int(s) for s in shape)

    def make(i: int, keep_clean: bool = False) -> Phantom:
        return phantom_from_row(params.iloc[int(i)], keep_clean=keep_clean)

    return params, make


def phantom_from_row(row: Mapping, keep_clean: bool = False) -> Phantom:
    """The phantom of one :func:`phantom_parameters` row (its own grid and seed)."""
    shape = (int(row["nz"]), int(row["ny"]), int(row["nx"]))
    spacing = (float(row["spacing_x"]), float(row["spacing_y"]), float(row["spacing_z"]))
    return ctac_phantom(row, seed=int(row["phantom_seed"]), shape=shape, spacing=spacing, keep_clean=keep_clean)


def iter_phantoms(params: pd.DataFrame, keep_clean: bool = False) -> Iterator[Phantom]:
    """Build the phantoms of a parameter table one after another (one volume in memory at a time)."""
    for _, row in params.iterrows():
        yield phantom_from_row(row, keep_clean=keep_clean)


# -- writing --------------------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def filled_parameters(params: Mapping | None) -> dict:
    """The parameters a phantom is built with, as JSON values.

    Parameters
    ----------
    params : mapping or None
        Phantom parameters as :func:`ctac_phantom` takes them (any subset of :data:`DEFAULT_PARAMETERS`;
        missing or NaN values take the reference patient's values).

    Returns
    -------
    dict
        Every key of :data:`DEFAULT_PARAMETERS` (and any other key given), with numpy scalars turned into
        Python numbers: two mappings that build the same phantom give equal dicts (the phantom cache's
        key, :mod:`ctac_helpers.imaging.phantom_cache`).
    """
    return _jsonable(_filled_params({} if params is None else params))


def write_phantom(phantom: Phantom, directory, stem: str) -> dict[str, Path]:
    """Write a phantom as NIfTI images and its truth as JSON, each file atomically.

    Files: ``<stem>_ct.nii.gz`` (int16 HU), ``<stem>_labels.nii.gz`` (uint8 TotalSegmentator ids),
    ``<stem>_pericardium.nii.gz`` (uint8 0/1) and ``<stem>_truth.json`` (truth, parameters, seed).

    Returns
    -------
    dict
        ``{'ct', 'labels', 'pericardium', 'truth'}`` -> path.
    """
    directory = Path(directory)
    paths = {
        "ct": directory / f"{stem}_ct.nii.gz",
        "labels": directory / f"{stem}_labels.nii.gz",
        "pericardium": directory / f"{stem}_pericardium.nii.gz",
        "truth": directory / f"{stem}_truth.json",
    }
    for key, image in (("ct", phantom.ct_image()), ("labels", phantom.label_image()),
                       ("pericardium", phantom.pericardium_image())):
        # atomic_path keeps the target's extensions (".tmp.nii.gz"): SimpleITK picks NIfTI from them.
        with atomic_path(paths[key]) as tmp:
            sitk.WriteImage(image, str(tmp), True)
    atomic_write_json(paths["truth"], _jsonable({"truth": phantom.truth, "params": phantom.params,
                                                 "seed": phantom.seed}))
    logger.info("wrote phantom %s to %s", stem, directory)
    return paths


def read_truth(path, stem: str | None = None) -> dict:
    """The truth of a written phantom (the ``truth`` part of its ``<stem>_truth.json``).

    Parameters
    ----------
    path : path-like
        The truth file, or the folder :func:`write_phantom` wrote into.
    stem : str, optional
        The phantom's stem when the folder holds several phantoms.

    Returns
    -------
    dict
        The truth as written (see the module notes); ``params`` and ``seed`` are in the file too.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / f"{stem}_truth.json"] if stem else sorted(path.glob("*_truth.json"))
        found = [f for f in found if f.is_file()]
        if len(found) != 1:
            raise FileNotFoundError(f"expected one phantom truth file in {path} (stem {stem!r}), found "
                                    f"{len(found)}: write it with write_phantom first")
        path = found[0]
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["truth"]
