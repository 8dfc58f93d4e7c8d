"""Coronary calcium: lesions on the coronary arteries whose Agatston score noise cannot change.

Lesion design. Noise must not change what the truth says, or no scorer could recover it. Each 2D
lesion is a compact blob of a *plateau* density at least 3.5 noise SDs above 130 HU (so no lesion
pixel drops out) around one *core* pixel that sets the peak, placed at least
:data:`LESION_MARGIN_SD` noise SDs inside its weight band; plateau pixels stay 4 SDs below the
band's upper edge. At the protocols' noise (15-28 HU) weights 1-3 do not fit in their 70-100 HU
wide bands, so noisier phantoms carry only dense (weight 4) calcium: faint calcium cannot be scored
reproducibly on such images, which is the physics of low-dose CT rather than a property of the
scorer. Every phantom with a positive CAC target gets at least one lesion (>= 4 pixels), so small
targets are rounded up; targets above :data:`MAX_PHANTOM_CAC` are capped.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy import ndimage

from ctac_helpers.imaging.calcium import REFERENCE_THICKNESS_MM, agatston_weight
from ctac_helpers.imaging.phantom.anatomy import LUNG_LOBES, Anatomy
from ctac_helpers.imaging.phantom.canvas import T_LESION, Canvas, unit_vector
from ctac_helpers.imaging.phantom.heart import CoronaryTree

logger = logging.getLogger(__name__)

# Margin of a lesion's core pixel inside its weight band, in noise SDs.
LESION_MARGIN_SD = 3.3
# Noise-free limits of the phantom's fat and calcium (HU, before the site offset).
_PLATEAU_LOW_SD, _PLATEAU_HIGH_SD = 3.5, 4.0
# Largest area of a 2D lesion (1.6 times this for heavy burdens) and its fewest pixels.
MAX_LESION_AREA_MM2 = 40.0
MIN_LESION_PIXELS = 4
# Above this the coronary tree has no room for more separate lesions; the target is capped.
MAX_PHANTOM_CAC = 8000.0
# Structures kept in the coronary region by calcium.coronary_region (lesions may lie next to them).
_CORONARY_NEIGHBOURS = ("heart", "atrial_appendage_left", "pulmonary_vein") + LUNG_LOBES
# Agatston weight -> the band of peak HU that gives it.
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


def place_lesions(b: Canvas, an: Anatomy, tree: CoronaryTree, rng) -> pd.DataFrame:
    """Calcified coronary lesions adding up to the CAC target; returns the 2D-lesion table.

    Parameters
    ----------
    b : Canvas
        The phantom being drawn (its heart and vessels already painted).
    an : Anatomy
        Its geometry.
    tree : CoronaryTree
        The coronary arteries the lesions lie on.
    rng : numpy.random.Generator
        The step's random stream (lesion placement and densities).

    Returns
    -------
    pandas.DataFrame
        One row per 2D lesion: ``lesion, artery, slice, n_pixels, area_mm2, peak_hu, weight, score``.
    """
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
        c = pts[i] + unit_vector(rng.standard_normal(3)) * 0.6 * radii[i]
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
