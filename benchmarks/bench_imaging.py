"""Per-scan cost of the measurement stages on a CTAC-sized phantom: the book's way against the plain way.

The book's way: Agatston score (``calcium.cac_from_image``), epicardial fat (``fat.eat_from_image``)
and the 32 radiomics features of every structure in one pass (``radiomics.structure_features``).
The plain way: the same CAC and EAT, and one PyRadiomics extractor call per structure on the full
image (what TotalSegmentator's ``--radiomics`` does). Both run here, side by side, on the same scan;
the script prints seconds per scan, the ratio and the largest relative difference of the features.

Usage::

    .venv/bin/python benchmarks/bench_imaging.py            # 512 x 512 x 80 voxels, 0.98 x 0.98 x 3 mm
    .venv/bin/python benchmarks/bench_imaging.py --small    # a quick look on a coarse grid
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from ctac_helpers.imaging import calcium
from ctac_helpers.imaging import fat
from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom
from ctac_helpers.imaging import radiomics


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="48 x 192 x 192 voxels at 2.6 x 2.6 x 5 mm")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the book's way (best time is kept)")
    args = ap.parse_args()
    shape, spacing = ((48, 192, 192), (2.6, 2.6, 5.0)) if args.small else (phantom.CTAC_SHAPE, phantom.CTAC_SPACING)

    t0 = time.perf_counter()
    ph = phantom.ctac_phantom(None, seed=args.seed, shape=shape, spacing=spacing)
    ct, labels, peri = ph.ct_image(), ph.label_image(), ph.pericardium_image()
    t_make = time.perf_counter() - t0
    names = manifest.class_map()
    present = [names[i] for i in np.unique(sitk.GetArrayViewFromImage(labels)) if i > 0]
    features = manifest.radiomics_features("all")
    print(f"phantom: {shape[2]} x {shape[1]} x {shape[0]} voxels, {spacing[0]} x {spacing[1]} x {spacing[2]} mm, "
          f"{len(present)} structures (made in {t_make:.1f} s)")

    t_cac, cac = _timed(lambda: calcium.cac_from_image(ct, labels), args.repeat)
    t_eat, eat = _timed(lambda: fat.eat_from_image(ct, labels, peri), args.repeat)
    t_rad, fast = _timed(lambda: radiomics.structure_features(ct, labels, structures=present, features=features),
                         args.repeat)
    t_ref, ref = _timed(lambda: radiomics.pyradiomics_features(ct, labels, structures=present, features=features))

    a = fast.loc[present, features].to_numpy(float)
    b = ref.loc[present, features].to_numpy(float)
    same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
    ok = ~np.isnan(b)
    rel = float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12))) if ok.any() else 0.0

    book = t_cac + t_eat + t_rad
    plain = t_cac + t_eat + t_ref
    print(f"CAC (Agatston {cac.score:.1f}, true {ph.truth['agatston']:.1f})      {t_cac:8.2f} s")
    print(f"EAT ({eat['eat_volume_ml']:.1f} mL, true {ph.truth['eat_volume_ml']:.1f})      {t_eat:8.2f} s")
    print(f"radiomics, one pass                 {t_rad:8.2f} s")
    print(f"radiomics, PyRadiomics per structure {t_ref:8.2f} s")
    print(f"seconds per scan: book {book:.2f}, plain {plain:.2f}; ratio {plain / book:.1f}x (target >= 5x)")
    print(f"features: largest relative difference {rel:.1e}; same missing values: {same_nan}")


if __name__ == "__main__":
    main()
