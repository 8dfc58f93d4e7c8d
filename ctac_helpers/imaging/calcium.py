"""Coronary artery calcium (CAC) scoring by the Agatston method.

The Agatston score (Agatston et al., *J Am Coll Cardiol* 1990;15:827-832) is computed slice by slice
on a non-contrast CT: every 2D connected region ("lesion") of voxels at or above 130 HU inside the
coronary region, and at least ``min_area_mm2`` large, contributes its area (mm^2) times a weight set
by its peak density:

=============  ======
peak (HU)      weight
=============  ======
130-199        1
200-299        2
300-399        3
>= 400         4
=============  ======

The score is the sum over all lesions of all slices. It was defined for contiguous 3 mm slices, and
standardisation work recommends 3 mm reconstructions for scoring precisely because the plain sum
depends on the slice thickness (McCollough et al., *Radiology* 2007;243:527-538; for non-gated chest
CT see the SCCT/STR guidance, Hecht et al., *J Cardiovasc Comput Tomogr* 2017;11:74-84): with thicker
slices a lesion appears on fewer slices and the sum falls, by about 3/5 at 5 mm. The CTAC scans of
the four sites are reconstructed at 3 to 5 mm while the paper's CAC categories (0, 1-100, 101-400,
>400) are on the 3 mm scale, so the book scales every lesion's contribution by
``slice thickness / 3 mm`` (``reference_thickness_mm=3.0``), the common convention for other
thicknesses; ``reference_thickness_mm=None`` gives the plain, unscaled sum. The scaling corrects
the expected score, not the partial-volume loss of small, faint lesions on thick slices. Calcium
volume is the voxel count of the scored lesions times the voxel volume (no scaling).

Noise. Low-dose CTAC images are noisy (SD 15-30 HU in soft tissue): blood at ~40 HU crosses 130 HU
in isolated voxels (about 60 voxels of the coronary region per scan on the book's 28 HU phantoms).
The area rule removes single voxels only when a voxel is smaller than ``min_area_mm2`` (0.96 mm^2
at 0.98 mm pixels, but not 1.37 mm^2 at 1.17 mm pixels), and noise pairs pass it, so the book also
requires ``min_pixels=3`` connected pixels per lesion, a common additional noise rule. Faint specks
of one or two pixels are then not scored (the phantoms' lesions have at least four pixels, so they
do not measure that loss).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from ctac_helpers.core import manifest
from ctac_helpers.definitions import cac_category
from ctac_helpers.imaging.grid import on_grid

logger = logging.getLogger(__name__)

THRESHOLD_HU = 130.0
# Lower edges of the Agatston density bands (weights 1..4).
WEIGHT_EDGES_HU = (130.0, 200.0, 300.0, 400.0)
REFERENCE_THICKNESS_MM = 3.0
MIN_AREA_MM2 = 1.0
MIN_PIXELS = 3
# cac_from_image: the heart label dilated by this margin is the coronary region (coronary arteries
# run in the epicardial fat on the heart's surface, within a few millimetres of the myocardium).
HEART_MARGIN_MM = 10.0
# Labelled structures near the heart that never contain coronary calcium but do contain dense
# voxels (aortic wall calcium, bone, cartilage) or noisy soft tissue: removed from the region,
# dilated by EXCLUDE_MARGIN_MM for the partial-volume rim of their borders.
EXCLUDE_MARGIN_MM = 2.0
# Kept in the region: the heart itself, the cardiac blood structures that TotalSegmentator labels
# separately (the left circumflex artery runs next to the left atrial appendage) and the lungs
# (-850 HU, never above 130 HU; excluding their rim would cut calcium in thin epicardial fat).
_KEEP_NAMES = ("heart", "atrial_appendage_left", "pulmonary_vein", "lung_upper_lobe_left",
               "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
               "lung_lower_lobe_right")


@dataclass
class AgatstonResult:
    """The Agatston score of one scan.

    Attributes
    ----------
    score : float
        Agatston score (sum of lesion scores; scaled to ``reference_thickness_mm`` when set).
    volume_mm3 : float
        Calcium volume: voxels of the scored lesions times the voxel volume.
    n_lesions : int
        Number of scored 2D lesions (a calcification seen on two slices counts twice).
    lesions : pandas.DataFrame
        One row per scored lesion: ``slice`` (array index along z), ``n_pixels``, ``area_mm2``,
        ``peak_hu``, ``weight``, ``score``.
    slice_thickness_mm : float
        Slice thickness used for the scaling.
    thickness_factor : float
        ``slice_thickness_mm / reference_thickness_mm`` (1.0 without scaling).
    """

    score: float
    volume_mm3: float
    n_lesions: int
    lesions: pd.DataFrame
    slice_thickness_mm: float
    thickness_factor: float
    category: str = field(init=False)

    def __post_init__(self):
        self.category = cac_category(self.score)


def agatston_weight(peak_hu) -> np.ndarray:
    """Agatston density weight(s) of lesion peak(s): 1 (130-199), 2 (200-299), 3 (300-399), 4 (>=400).

    Peaks below 130 HU get weight 0. Bands are half-open, ``[130, 200)``, ``[200, 300)``, ...,
    so that real-valued (e.g. interpolated) peaks are classified without gaps.
    """
    return np.searchsorted(np.asarray(WEIGHT_EDGES_HU), np.asarray(peak_hu, float), side="right")


def agatston(ct: np.ndarray, spacing, region: np.ndarray | None = None, threshold_hu: float = THRESHOLD_HU,
             min_area_mm2: float = MIN_AREA_MM2, connectivity: int = 8, min_pixels: int = MIN_PIXELS,
             reference_thickness_mm: float | None = REFERENCE_THICKNESS_MM,
             slice_thickness_mm: float | None = None) -> AgatstonResult:
    """Agatston score of a CT volume.

    Parameters
    ----------
    ct : numpy.ndarray
        HU volume in SimpleITK array order ``(z, y, x)``; axial slices along the first axis.
    spacing : sequence of 3 float
        Voxel size ``(x, y, z)`` in mm (SimpleITK order).
    region : numpy.ndarray of bool, optional
        Where calcium is scored (the coronary region: heart plus a margin, other structures
        removed); the whole volume when omitted. Lesions are formed inside the region only.
    threshold_hu : float
        Voxels at or above this density are calcium candidates (130 HU).
    min_area_mm2 : float
        Lesions with a smaller area are discarded (1 mm^2).
    connectivity : {8, 4}
        In-plane pixel connectivity of a lesion; lesions never connect across slices.
    min_pixels : int
        Lesions with fewer pixels are discarded (3: noise suppression, see the module notes);
        ``1`` gives the area rule alone.
    reference_thickness_mm : float or None
        Scale lesion scores by ``slice_thickness_mm / reference_thickness_mm`` (3 mm, the book's
        choice); ``None`` for the plain sum.
    slice_thickness_mm : float, optional
        Reconstructed slice thickness; the z spacing when omitted (contiguous slices).

    Returns
    -------
    AgatstonResult

    References
    ----------
    Agatston AS, Janowitz WR, Hildner FJ, et al. Quantification of coronary artery calcium using
    ultrafast computed tomography. J Am Coll Cardiol 1990;15:827-832.
    McCollough CH, Ulzheimer S, Halliburton SS, et al. Coronary artery calcium: a multi-institutional,
    multimanufacturer international standard for quantification at cardiac CT. Radiology
    2007;243:527-538.
    """
    ct = np.asarray(ct)
    if ct.ndim != 3:
        raise ValueError(f"ct must be a 3D (z, y, x) array, got shape {ct.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8 (in-plane), got {connectivity!r}")
    thickness = float(sz if slice_thickness_mm is None else slice_thickness_mm)
    factor = 1.0 if reference_thickness_mm is None else thickness / float(reference_thickness_mm)
    cand = ct >= threshold_hu
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != ct.shape:
            raise ValueError(f"region shape {region.shape} differs from ct shape {ct.shape}")
        cand &= region
    columns = ["slice", "n_pixels", "area_mm2", "peak_hu", "weight", "score"]
    empty = AgatstonResult(0.0, 0.0, 0, pd.DataFrame(columns=columns), thickness, factor)
    if not cand.any():
        return empty
    # Work on the candidates' bounding box only: a CTAC volume is ~20 M voxels, calcium a few hundred.
    nz = np.flatnonzero(cand.any(axis=(1, 2)))
    ny = np.flatnonzero(cand.any(axis=(0, 2)))
    nx = np.flatnonzero(cand.any(axis=(0, 1)))
    box = (slice(nz[0], nz[-1] + 1), slice(ny[0], ny[-1] + 1), slice(nx[0], nx[-1] + 1))
    sub = cand[box]
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(sub, structure=structure)
    idx = np.arange(1, n + 1)
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    values = ct[box].astype(np.float64)
    peaks = np.asarray(ndimage.maximum(values, lab, idx), float)
    slices = np.asarray([s[0].start for s in ndimage.find_objects(lab)]) + box[0].start
    area = counts * sx * sy
    keep = (area >= min_area_mm2) & (counts >= max(1, int(min_pixels)))
    weight = agatston_weight(peaks)
    score = area * weight * factor
    lesions = pd.DataFrame({"slice": slices, "n_pixels": counts, "area_mm2": area, "peak_hu": peaks,
                            "weight": weight, "score": score})[keep]
    lesions = lesions.sort_values(["slice", "score"], ascending=[True, False]).reset_index(drop=True)
    total = float(lesions["score"].sum())
    volume = float(lesions["n_pixels"].sum() * sx * sy * sz)
    logger.debug("agatston: %d candidate regions, %d lesions kept, score %.1f", n, len(lesions), total)
    return AgatstonResult(total, volume, int(len(lesions)), lesions, thickness, factor)


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayViewFromImage(image)


def bounding_box(mask: np.ndarray, pad=(0, 0, 0)) -> tuple[slice, slice, slice] | None:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis (clipped), or None when empty."""
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if hit.size == 0:
            return None
        out.append(slice(max(0, int(hit[0]) - pad[ax]), min(mask.shape[ax], int(hit[-1]) + pad[ax] + 1)))
    return tuple(out)


def _pad(spacing, mm: float) -> tuple[int, int, int]:
    """Voxels per array axis (z, y, x) covering ``mm`` (plus one)."""
    sx, sy, sz = (float(s) for s in spacing)
    return tuple(int(np.ceil(mm / s)) + 1 for s in (sz, sy, sx))


def distance_mask(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (Euclidean, physical) of ``mask``: a dilation by a ball in mm.

    Computed with a distance transform on the mask's bounding box (grown by the margin), so the
    cost follows the structure's size, not the volume's.
    """
    mask = np.asarray(mask, bool)
    if margin_mm <= 0:
        return mask.copy()
    box = bounding_box(mask, _pad(spacing, margin_mm))
    out = np.zeros(mask.shape, bool)
    if box is None:
        return out
    sx, sy, sz = (float(s) for s in spacing)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=(sz, sy, sx)) <= margin_mm
    return out


def coronary_region(labels: np.ndarray, spacing, heart_label: int | None = None,
                    margin_mm: float = HEART_MARGIN_MM, exclude_labels=None,
                    exclude_margin_mm: float = EXCLUDE_MARGIN_MM) -> np.ndarray:
    """The region where coronary calcium is scored, from a TotalSegmentator label map.

    The heart label dilated by ``margin_mm`` (the coronary arteries lie on the heart's surface in
    the epicardial fat), minus every other labelled structure except the cardiac blood structures
    and the lungs (see ``_KEEP_NAMES``), each dilated by ``exclude_margin_mm``: the aorta (wall
    calcification at the root and arch), vertebrae, ribs, sternum and costal cartilage (bone), the
    oesophagus, liver, stomach and spleen (noisy soft tissue below the heart).

    Parameters
    ----------
    labels : numpy.ndarray
        Multilabel map ``(z, y, x)`` in TotalSegmentator v2 class ids.
    spacing : sequence of 3 float
        ``(x, y, z)`` in mm.
    heart_label : int, optional
        Value of the heart (TotalSegmentator's ``heart``, 51, by default).
    margin_mm, exclude_margin_mm : float
        Dilation of the heart and of the excluded structures.
    exclude_labels : iterable of int, optional
        Label values to remove; default: every label found near the heart except the kept ones.

    Returns
    -------
    numpy.ndarray of bool, the shape of ``labels``.
    """
    labels = np.asarray(labels)
    heart_label = manifest.structure_id("heart") if heart_label is None else int(heart_label)
    out = np.zeros(labels.shape, bool)
    heart_all = labels == heart_label
    # Everything happens on the heart's box grown by both margins: structures farther away
    # cannot reach the region.
    box = bounding_box(heart_all, _pad(spacing, margin_mm + exclude_margin_mm))
    if box is None:
        logger.warning("no heart label (%d) in the label map: the coronary region is empty", heart_label)
        return out
    sub = labels[box]
    region = distance_mask(sub == heart_label, spacing, margin_mm)
    if exclude_labels is None:
        keep = {manifest.structure_id(n) for n in _KEEP_NAMES} | {heart_label, 0}
        exclude_labels = [int(v) for v in np.unique(sub) if int(v) not in keep]
    exclude_labels = [int(v) for v in exclude_labels if int(v) != heart_label]
    if exclude_labels:
        region &= ~distance_mask(np.isin(sub, exclude_labels), spacing, exclude_margin_mm)
    out[box] = region
    return out


def cac_from_image(ct_image: sitk.Image, labels_image: sitk.Image, heart_label: int | None = None,
                   margin_mm: float = HEART_MARGIN_MM, exclude_labels=None,
                   exclude_margin_mm: float = EXCLUDE_MARGIN_MM, **agatston_kwargs) -> AgatstonResult:
    """Agatston score of a CT image in the coronary region derived from its segmentation.

    Parameters
    ----------
    ct_image : SimpleITK.Image
        Non-contrast CT in HU (CTAC). Calcium cannot be scored on contrast-enhanced scans.
    labels_image : SimpleITK.Image
        TotalSegmentator multilabel map (v2 class ids); resampled onto the CT grid (nearest
        neighbour, physical space) when its grid differs.
    heart_label, margin_mm, exclude_labels, exclude_margin_mm
        See :func:`coronary_region`.
    **agatston_kwargs
        Passed to :func:`agatston` (``threshold_hu``, ``min_area_mm2``, ``min_pixels``,
        ``reference_thickness_mm``, ...).

    Returns
    -------
    AgatstonResult
    """
    labels_image = on_grid(labels_image, ct_image)
    ct = _array(ct_image)
    spacing = ct_image.GetSpacing()
    region = coronary_region(_array(labels_image), spacing, heart_label, margin_mm, exclude_labels,
                             exclude_margin_mm)
    result = agatston(ct, spacing, region=region, **agatston_kwargs)
    logger.info("CAC: Agatston %.1f (%s), %d lesions, %.1f mm^3, region %.0f mL", result.score,
                result.category, result.n_lesions, result.volume_mm3,
                region.sum() * float(np.prod(spacing)) / 1000.0)
    return result
