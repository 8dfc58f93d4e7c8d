"""Building a phantom (imaging.phantom.build): reproducible, TotalSegmentator labels, realistic HU, CTAC size."""

import functools

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom
from small_phantoms import SMALL
from small_phantoms import small as _small

EXPECTED = ("heart", "aorta", "esophagus", "trachea", "spinal_cord", "sternum", "autochthon_left",
            "autochthon_right", "vertebrae_T7", "rib_left_5", "rib_right_5", "liver", "superior_vena_cava",
            "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
            "lung_lower_lobe_right")


@functools.lru_cache(maxsize=None)
def _ctac():
    return phantom.ctac_phantom({"cac_score": 300.0, "noise_hu": 20.0, "hu_offset": -5.0}, seed=3)


def test_same_seed_same_phantom_other_seed_other_phantom():
    a = phantom.ctac_phantom({"cac_score": 200.0}, seed=9, **SMALL)
    b = phantom.ctac_phantom({"cac_score": 200.0}, seed=9, **SMALL)
    c = phantom.ctac_phantom({"cac_score": 200.0}, seed=10, **SMALL)
    for name in ("ct", "labels", "pericardium", "coronary_region", "eat_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    pd.testing.assert_frame_equal(a.lesions, b.lesions)
    assert a.truth["agatston"] == b.truth["agatston"]
    assert not np.array_equal(a.ct, c.ct)


def test_labels_are_totalsegmentator_ids_and_structures_are_there():
    ph = _small()
    ids = set(np.unique(ph.labels).tolist()) - {0}
    assert ids <= set(manifest.class_map())
    status = {n: v["status"] for n, v in ph.truth["structures"].items()}
    for name in EXPECTED:
        assert status[name] in ("present", "truncated"), name
    assert status["heart"] == "present"
    assert status["kidney_left"] == "absent"
    assert ph.ct.dtype == np.int16 and ph.labels.dtype == np.uint8 and ph.pericardium.dtype == bool


def test_hu_ranges_are_realistic():
    ph = _small(noise_hu=15.0)
    s = ph.truth["structures"]
    ranges = {"heart": (20, 60), "aorta": (25, 70), "liver": (30, 80), "autochthon_left": (20, 70),
              "spinal_cord": (20, 45), "esophagus": (20, 50), "vertebrae_T7": (150, 400), "sternum": (150, 450),
              "rib_left_5": (200, 500), "lung_upper_lobe_left": (-950, -750), "lung_lower_lobe_right": (-950, -750),
              "trachea": (-1000, -700)}
    for name, (lo, hi) in ranges.items():
        assert lo <= s[name]["mean_hu"] <= hi, (name, s[name]["mean_hu"])
    assert -190 <= ph.clean[ph.eat_mask].min() and ph.clean[ph.eat_mask].max() <= -30
    assert ph.ct.min() >= -1024 and ph.ct.max() <= 3071
    assert np.median(ph.clean[:, :3, :3]) == -1000  # air outside the body
    # Noise: the protocol's SD, measured in the heart's interior (difference to the clean image).
    heart = ph.labels == manifest.structure_id("heart")
    diff = ph.ct[heart].astype(float) - ph.clean[heart]
    assert 13.5 < diff.std() < 16.5 and abs(diff.mean()) < 1.0
    # The site offset shifts every tissue.
    shifted = _small(noise_hu=15.0, hu_offset=4.0)
    assert shifted.truth["structures"]["heart"]["mean_hu"] == pytest.approx(s["heart"]["mean_hu"] + 4.0, abs=0.2)


def test_ctac_sized_phantom():
    # its time is benchmarks/bench_book.py's business, not a test's
    ph = _ctac()
    assert ph.ct.shape == (80, 512, 512) and ph.spacing == (0.98, 0.98, 3.0)
    img = ph.ct_image()
    assert img.GetSize() == (512, 512, 80) and img.GetSpacing() == pytest.approx((0.98, 0.98, 3.0))
    assert img.GetOrigin() == pytest.approx(ph.origin)
    assert ph.label_image().GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(ph.pericardium_image()).max() == 1
    assert ph.truth["structures"]["heart"]["status"] == "present"
    assert 400 < ph.truth["structures"]["heart"]["volume_ml"] < 800
    assert ph.truth["eat_density_hu"] == pytest.approx(-100.0 - 5.0, abs=1.5)
    assert abs(ph.truth["agatston"] - 300.0) < 20.0


def test_a_phantom_is_built_from_a_plain_record():
    # the phantom meets the cohort through data: a plain dict and a DataFrame row of the same values give
    # the same phantom, on the grid and with the seed the row names
    row = {"nz": 24, "ny": 96, "nx": 96, "spacing_x": 4.0, "spacing_y": 4.0, "spacing_z": 8.0, "phantom_seed": 5,
           "cac_score": 150.0, "eat_volume_ml": 110.0}
    a = phantom.phantom_from_row(row)
    b = phantom.phantom_from_row(pd.DataFrame([row]).iloc[0])
    c = phantom.ctac_phantom({"cac_score": 150.0, "eat_volume_ml": 110.0}, seed=5, shape=(24, 96, 96),
                             spacing=(4.0, 4.0, 8.0))
    assert a.ct.shape == (24, 96, 96) and a.spacing == (4.0, 4.0, 8.0) and a.seed == 5
    for other in (b, c):
        for name in ("ct", "labels", "pericardium", "coronary_region", "eat_mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(other, name))
        assert a.truth["agatston"] == other.truth["agatston"] > 0
    assert [p.seed for p in phantom.iter_phantoms(pd.DataFrame([row, {**row, "phantom_seed": 6}]))] == [5, 6]
