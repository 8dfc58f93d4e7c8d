"""Benchmark: one-pass radiomics (:func:`structure_features`) against one PyRadiomics call per structure.

Builds a CTAC-sized labelled volume (by default 512 x 512 x 80 voxels of 0.98 x 0.98 x 3 mm, about
35 TotalSegmentator structures: five lung lobes, heart, aorta, airways, liver, spleen, stomach,
thoracic vertebrae, ribs, ...) from noisy ellipsoids, cylinders and rib arcs, times
:func:`ctac_helpers.imaging.radiomics.structure_features` and the reference
:func:`ctac_helpers.imaging.radiomics.pyradiomics_features` on it, and checks that both give the same values.

Run ``python benchmarks/bench_radiomics.py`` (``--help`` for the size options). It prints wall
seconds per scan for both, their ratio and the largest relative difference over all features and
structures; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging.radiomics import pyradiomics_features, structure_features

logger = logging.getLogger("bench_radiomics")


def _ellipsoid(shape, centre, radii, rotation_deg=0.0):
    """Boolean ellipsoid (index space, z/y/x) rotated about z, computed in its bounding box only."""
    zc, yc, xc = centre
    rz, ry, rx = radii
    r_xy = max(ry, rx)
    lo = [max(int(np.floor(zc - rz)), 0), max(int(np.floor(yc - r_xy)), 0), max(int(np.floor(xc - r_xy)), 0)]
    hi = [min(int(np.ceil(zc + rz)) + 1, shape[0]), min(int(np.ceil(yc + r_xy)) + 1, shape[1]),
          min(int(np.ceil(xc + r_xy)) + 1, shape[2])]
    if any(h <= l for l, h in zip(lo, hi)):
        return None, None
    z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    t = np.deg2rad(rotation_deg)
    u = (x - xc) * np.cos(t) + (y - yc) * np.sin(t)
    v = -(x - xc) * np.sin(t) + (y - yc) * np.cos(t)
    inside = ((z - zc) / rz) ** 2 + (v / ry) ** 2 + (u / rx) ** 2 <= 1.0
    return tuple(slice(l, h) for l, h in zip(lo, hi)), inside


def build_volume(nx=512, ny=512, nz=80, spacing=(0.98, 0.98, 3.0), seed=0):
    """A CTAC-like CT (int16 HU) and a TotalSegmentator-style multilabel map on the same grid.

    Parameters
    ----------
    nx, ny, nz : int
        Grid size (x, y, z); the anatomy scales with it.
    spacing : tuple of float
        Voxel spacing (x, y, z) in mm.
    seed : int
        Seed of the noise.

    Returns
    -------
    ct, labels : SimpleITK.Image
        int16 HU image and uint8 label map (TotalSegmentator v2 ids).
    """
    rng = np.random.default_rng(seed)
    shape = (nz, ny, nx)
    labels = np.zeros(shape, np.uint8)
    hu_mean = np.full(256, 0.0)
    hu_sd = np.full(256, 0.0)
    ids = {name: k for k, name in manifest.class_map().items()}
    sy, sx = ny / 512.0, nx / 512.0
    sz = nz / 80.0
    cy, cx = ny / 2.0, nx / 2.0

    def put(name, region, mean, sd):
        slc, inside = region
        if slc is None:
            return
        sub = labels[slc]
        sub[inside] = ids[name]
        hu_mean[ids[name]], hu_sd[ids[name]] = mean, sd

    # body outline: soft tissue and fat, not labelled (as in TotalSegmentator's total task)
    body = np.zeros(shape, bool)
    yy, xx = np.ogrid[:ny, :nx]
    body[:] = (((yy - cy) / (0.36 * ny)) ** 2 + ((xx - cx) / (0.46 * nx)) ** 2 <= 1.0)[None]

    # lungs: left upper/lower, right upper/middle/lower lobes, split by oblique planes
    for side, sign in (("left", 1), ("right", -1)):
        slc, lung = _ellipsoid(shape, (0.55 * nz, cy - 10 * sy, cx + sign * 95 * sx),
                               (0.50 * nz, 120 * sy, 75 * sx))
        z = np.arange(slc[0].start, slc[0].stop)[:, None, None]
        y = np.arange(slc[1].start, slc[1].stop)[None, :, None]
        fissure = z + 0.12 * (y - cy) * sz > 0.5 * nz
        if side == "left":
            put("lung_upper_lobe_left", (slc, lung & fissure), -840, 60)
            put("lung_lower_lobe_left", (slc, lung & ~fissure), -800, 70)
        else:
            minor = (y < cy - 10 * sy) & (z < 0.75 * nz)
            put("lung_upper_lobe_right", (slc, lung & fissure & ~minor), -845, 60)
            put("lung_middle_lobe_right", (slc, lung & fissure & minor), -830, 65)
            put("lung_lower_lobe_right", (slc, lung & ~fissure), -805, 70)
    put("heart", _ellipsoid(shape, (0.35 * nz, cy - 40 * sy, cx + 25 * sx), (0.30 * nz, 55 * sy, 70 * sx), 30), 40, 25)
    put("liver", _ellipsoid(shape, (0.02 * nz, cy - 5 * sy, cx - 80 * sx), (0.18 * nz, 80 * sy, 95 * sx)), 55, 20)
    put("spleen", _ellipsoid(shape, (0.05 * nz, cy + 60 * sy, cx + 110 * sx), (0.10 * nz, 30 * sy, 20 * sx)), 50, 20)
    put("stomach", _ellipsoid(shape, (0.04 * nz, cy - 30 * sy, cx + 60 * sx), (0.12 * nz, 35 * sy, 40 * sx)), 20, 40)
    put("adrenal_gland_left", _ellipsoid(shape, (0.03 * nz, cy + 40 * sy, cx + 35 * sx), (1.6, 6 * sy, 3 * sx)), 30, 15)
    # tubes: aorta (ascending + descending), trachea, esophagus, spinal cord, sternum
    for name, (y0, x0, r, z0, z1, mean, sd) in {
        "aorta": (cy + 45 * sy, cx + 22 * sx, 13 * sx, 0.0, 0.85, 45, 20),
        "trachea": (cy - 25 * sy, cx, 9 * sx, 0.65, 1.0, -950, 30),
        "esophagus": (cy + 30 * sy, cx - 5 * sx, 6 * sx, 0.0, 0.95, 30, 25),
        "spinal_cord": (cy + 95 * sy, cx, 5 * sx, 0.0, 1.0, 35, 15),
        "sternum": (cy - 150 * sy, cx, 10 * sx, 0.15, 0.85, 350, 120),
    }.items():
        zc, rz = (z0 + z1) / 2 * nz, max((z1 - z0) / 2 * nz, 1.0)
        slc, cyl = _ellipsoid(shape, (zc, y0, x0), (rz * 1.5, r, r))
        if slc is None:
            continue
        z = np.arange(slc[0].start, slc[0].stop)[:, None, None]
        put(name, (slc, cyl & (np.abs(z - zc) <= rz)), mean, sd)
    # thoracic vertebral bodies, larger caudally (T12 at the bottom of the field of view)
    n_vert = 10
    for k in range(n_vert):
        name = f"vertebrae_T{12 - k}"
        zc = (k + 0.5) / n_vert * nz
        grow = 1.0 + 0.04 * (n_vert - k)
        put(name, _ellipsoid(shape, (zc, cy + 70 * sy, cx), (0.42 * nz / n_vert, 15 * sy * grow, 17 * sx * grow)),
            250, 110)
    # ribs: thin arcs around the lungs, six per side
    for side, sign in (("left", 1), ("right", -1)):
        for k in range(6):
            name = f"rib_{side}_{k + 3}"
            zc = (0.15 + 0.13 * k) * nz
            slc = (slice(max(int(zc - 3), 0), min(int(zc + 4), nz)), slice(0, ny), slice(0, nx))
            z = np.arange(slc[0].start, slc[0].stop)[:, None, None]
            y = np.arange(ny)[None, :, None]
            x = np.arange(nx)[None, None, :]
            r = np.sqrt(((y - cy) / (0.33 * ny)) ** 2 + ((x - cx) / (0.43 * nx)) ** 2)
            arc = (np.abs(r - 1.0) < 0.025) & (np.abs(z - zc - 0.01 * (y - cy)) < 1.2) & (sign * (x - cx) > 20 * sx)
            put(name, (slc, arc), 400, 150)

    hu = np.where(body, 10.0, -1000.0) + rng.normal(0.0, 15.0, shape)
    ids_present = np.unique(labels)
    ids_present = ids_present[ids_present > 0]
    noise = rng.standard_normal(shape)
    lut_mean, lut_sd = hu_mean[labels], hu_sd[labels]
    labelled = labels > 0
    hu[labelled] = lut_mean[labelled] + lut_sd[labelled] * noise[labelled]
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing(tuple(float(s) for s in spacing))
    ct.SetOrigin((-250.0, -250.0, -120.0))
    seg = sitk.GetImageFromArray(labels)
    seg.CopyInformation(ct)
    logger.info("built %s volume with %d structures", ct.GetSize(), ids_present.size)
    return ct, seg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nx", type=int, default=512, help="voxels along x (default 512)")
    parser.add_argument("--ny", type=int, default=512, help="voxels along y (default 512)")
    parser.add_argument("--nz", type=int, default=80, help="slices (default 80)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.98, 0.98, 3.0), metavar=("SX", "SY", "SZ"),
                        help="voxel spacing in mm (default 0.98 0.98 3.0)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of the fast path (best is reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    ct, seg = build_volume(args.nx, args.ny, args.nz, tuple(args.spacing), args.seed)
    n = len(np.unique(sitk.GetArrayViewFromImage(seg))) - 1
    logger.info("volume %s voxels, spacing %s mm, %d labelled structures", ct.GetSize(), ct.GetSpacing(), n)

    fast_times = []
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        fast = structure_features(ct, seg)
        fast_times.append(time.perf_counter() - t0)
    t_fast = min(fast_times)
    logger.info("structure_features:   %8.2f s per scan", t_fast)

    t0 = time.perf_counter()
    ref = pyradiomics_features(ct, seg)
    t_ref = time.perf_counter() - t0
    logger.info("pyradiomics_features: %8.2f s per scan", t_ref)
    logger.info("speed-up:             %8.1f x", t_ref / t_fast)

    a = fast.loc[ref.index, ref.columns].to_numpy(float)
    b = ref.to_numpy(float)
    same_nan = np.array_equal(np.isnan(a), np.isnan(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
    rel = np.where(np.isnan(a) & np.isnan(b), 0.0, rel)
    worst = np.unravel_index(np.nanargmax(rel), rel.shape)
    logger.info("max relative difference: %.3g (%s, %s); NaN pattern identical: %s",
                np.nanmax(rel), ref.index[worst[0]], ref.columns[worst[1]], same_nan)
    per_feature = dict(zip(ref.columns, np.nanmax(rel, axis=0)))
    logger.info("max relative difference per feature: %s",
                ", ".join(f"{k} {v:.1e}" for k, v in per_feature.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
