import functools
import json
import time

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom
from ctac_helpers.cohort import synth

SMALL = dict(shape=(40, 192, 192), spacing=(2.0, 2.0, 5.0))
EXPECTED = ("heart", "aorta", "esophagus", "trachea", "spinal_cord", "sternum", "autochthon_left",
            "autochthon_right", "vertebrae_T7", "rib_left_5", "rib_right_5", "liver", "superior_vena_cava",
            "lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
            "lung_lower_lobe_right")


@functools.lru_cache(maxsize=None)
def _small(seed=1, **params):
    return phantom.ctac_phantom(dict(params), seed=seed, keep_clean=True, **SMALL)


@functools.lru_cache(maxsize=None)
def _ctac():
    t = time.perf_counter()
    ph = phantom.ctac_phantom({"cac_score": 300.0, "noise_hu": 20.0, "hu_offset": -5.0}, seed=3)
    return ph, time.perf_counter() - t


@functools.lru_cache(maxsize=None)
def _cohort():
    params, make = phantom.phantom_cohort(12, 20240101, shape=(36, 160, 160), spacing=(2.5, 2.5, 6.0))
    truths = [make(i).truth for i in range(len(params))]
    return params, truths


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


def _touches_edge(mask):
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any())


def test_truncation_status_follows_the_labels():
    # A short field of view cuts the heart; the standard one keeps it whole.
    short = phantom.ctac_phantom({}, seed=2, shape=(12, 192, 192), spacing=(2.0, 2.0, 5.0))
    for ph in (_small(), short):
        for name, entry in ph.truth["structures"].items():
            mask = ph.labels == manifest.structure_id(name)
            if not mask.any():
                assert entry["status"] == "absent" and entry["volume_ml"] == 0
            else:
                if name in manifest.fov_crossing_structures():
                    # tubes crossing every field of view: only an in-plane cut is truncation
                    cut = bool(mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any() or mask[:, :, -1].any())
                    assert entry["status"] == ("truncated" if cut else "present"), name
                else:
                    assert entry["status"] == ("truncated" if _touches_edge(mask) else "present"), name
                assert entry["volume_ml"] == pytest.approx(mask.sum() * np.prod(ph.spacing) / 1000)
    assert short.truth["structures"]["heart"]["status"] == "truncated"
    assert _small().truth["structures"]["heart"]["status"] == "present"


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


def test_truth_of_fat_and_calcium():
    ph = _small(cac_score=250.0, eat_volume_ml=140.0, eat_density_hu=-95.0)
    t = ph.truth
    voxel_ml = np.prod(ph.spacing) / 1000
    assert t["eat_volume_ml"] == pytest.approx(ph.eat_mask.sum() * voxel_ml)
    assert t["eat_density_hu"] == pytest.approx(-95.0, abs=1.0)
    assert abs(t["eat_volume_ml"] / 140.0 - 1) < 0.12
    assert not (ph.eat_mask & (ph.labels != 0)).any() and (ph.eat_mask <= ph.pericardium).all()
    assert t["paracardial_fat_ml"] > 10 and t["pericardium_volume_ml"] > t["eat_volume_ml"]
    # Calcium: close to the target (lesions come in whole pixels), peaks inside their bands.
    assert abs(t["agatston"] - 250.0) < 40.0 and t["cac_category"] == "101-400"
    les = ph.lesions
    assert len(les) == t["n_lesions"] > 0 and (les["n_pixels"] >= phantom.MIN_LESION_PIXELS).all()
    assert t["agatston"] == pytest.approx(les["score"].sum())
    assert ph.coronary_region[ph.clean >= 130].sum() == les["n_pixels"].sum()


def test_lesion_design_keeps_noise_from_changing_the_truth():
    assert phantom.lesion_design(4, 28.0) is not None
    assert all(phantom.lesion_design(w, 28.0) is None for w in (1, 2, 3))
    assert [w for w in (1, 2, 3, 4) if phantom.lesion_design(w, 15.0)] == [2, 3, 4]
    assert all(phantom.lesion_design(w, 0.0) for w in (1, 2, 3, 4))
    (core_lo, core_hi), (plat_lo, plat_hi) = phantom.lesion_design(3, 15.0)
    assert core_lo >= 300 + 3.3 * 15 - 1e-9 and core_hi <= 400 - 3.3 * 15 + 1e-9
    assert plat_lo >= 130 + 3.5 * 15 and plat_hi <= 400 - 4 * 15
    noisy = _small(cac_score=600.0, noise_hu=28.0)
    assert set(noisy.lesions["weight"]) == {4}


def test_ctac_sized_phantom():
    ph, seconds = _ctac()
    assert ph.ct.shape == (80, 512, 512) and ph.spacing == (0.98, 0.98, 3.0)
    assert seconds < 20.0  # ~1-2 s on one core; generous for loaded CI machines
    img = ph.ct_image()
    assert img.GetSize() == (512, 512, 80) and img.GetSpacing() == pytest.approx((0.98, 0.98, 3.0))
    assert img.GetOrigin() == pytest.approx(ph.origin)
    assert ph.label_image().GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(ph.pericardium_image()).max() == 1
    assert ph.truth["structures"]["heart"]["status"] == "present"
    assert 400 < ph.truth["structures"]["heart"]["volume_ml"] < 800
    assert ph.truth["eat_density_hu"] == pytest.approx(-100.0 - 5.0, abs=1.5)
    assert abs(ph.truth["agatston"] - 300.0) < 20.0


def test_phantom_cohort_follows_the_synthetic_cohort():
    params, truths = _cohort()
    ds = synth.synthetic_dataset(200, 20240101)
    cohort = ds.cohort.iloc[:12]
    assert params["patient_id"].tolist() == cohort["patient_id"].tolist()
    assert (params["noise_hu"] == cohort["ct_protocol"].map(synth.PROTOCOL_NOISE_HU)).all()
    assert (params["hu_offset"] == cohort["site"].map(synth.SITE_HU_OFFSET)).all()
    np.testing.assert_allclose(params["eat_volume_ml"], cohort["eat_volume"])
    np.testing.assert_allclose(params["eat_density_hu"], cohort["eat_density"] + phantom.EAT_DENSITY_SHIFT_HU)
    drivers = synth.ct_drivers(ds.cohort, ds.latent).iloc[:12]
    np.testing.assert_allclose(params["driver_lung"], drivers["lung"])
    eat = np.array([t["eat_volume_ml"] for t in truths])
    dens = np.array([t["eat_tissue_density_hu"] for t in truths])
    cac = np.array([t["agatston"] for t in truths])
    lung_hu = np.array([t["structures"]["lung_lower_lobe_left"]["mean_hu"] - o
                        for t, o in zip(truths, params["hu_offset"])])
    heart = np.array([t["structures"]["heart"]["volume_ml"] for t in truths])
    assert np.corrcoef(eat, cohort["eat_volume"])[0, 1] > 0.95
    assert np.corrcoef(dens, cohort["eat_density"])[0, 1] > 0.95
    assert np.corrcoef(heart, params["heart_volume_ml"])[0, 1] > 0.95
    assert np.corrcoef(lung_hu, params["lung_hu"])[0, 1] > 0.95
    assert np.corrcoef(params["lung_hu"], drivers["lung"])[0, 1] < -0.5
    # CAC: zero stays zero, any calcium gives calcium, and the ranks follow the cohort's.
    zero = cohort["cac_score"].to_numpy() == 0
    assert (cac[zero] == 0).all() and (cac[~zero] > 0).all()
    assert pd.Series(cac[~zero]).corr(pd.Series(cohort["cac_score"].to_numpy()[~zero]), method="spearman") > 0.8


def test_phantom_cohort_default_grid_is_the_sites():
    params, make = phantom.phantom_cohort(5, 7)
    # A patient's parameters do not depend on the other patients in the table.
    pd.testing.assert_frame_equal(params.iloc[2:4].reset_index(drop=True),
                                  phantom.phantom_cohort(4, 7)[0].iloc[2:4].reset_index(drop=True))
    vox = np.array([synth.SITE_VOXEL_MM[s] for s in params["site"]])
    np.testing.assert_allclose(params[["spacing_x", "spacing_y", "spacing_z"]], vox)
    assert (params["ny"] == 512).all()
    np.testing.assert_allclose(params["nz"] * params["spacing_z"], params["coverage_mm"], atol=3.0)
    rows = list(phantom.iter_phantoms(params.iloc[:0]))
    assert rows == []


def test_write_phantom_roundtrip(tmp_path):
    ph = _small(cac_score=100.0)
    paths = phantom.write_phantom(ph, tmp_path / "out", "p001")
    assert set(paths) == {"ct", "labels", "pericardium", "truth"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())
    ct = sitk.ReadImage(str(paths["ct"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), ph.ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(paths["labels"]))), ph.labels)
    peri = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["pericardium"])))
    np.testing.assert_array_equal(peri.astype(bool), ph.pericardium)
    assert ct.GetSpacing() == pytest.approx(ph.spacing) and ct.GetOrigin() == pytest.approx(ph.origin)
    saved = json.loads(paths["truth"].read_text())
    assert saved["seed"] == ph.seed
    assert saved["truth"]["agatston"] == pytest.approx(ph.truth["agatston"])
    assert len(saved["truth"]["lesions"]) == ph.truth["n_lesions"]
    assert phantom.read_truth(tmp_path / "out")["eat_volume_ml"] == pytest.approx(ph.truth["eat_volume_ml"])
    assert phantom.read_truth(paths["truth"])["agatston"] == pytest.approx(ph.truth["agatston"])
    with pytest.raises(FileNotFoundError, match="truth"):
        phantom.read_truth(tmp_path / "out", stem="other")

