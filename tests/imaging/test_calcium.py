import functools

import numpy as np
import pytest
import SimpleITK as sitk

from ctac_helpers.imaging import calcium
from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom
from ctac_helpers.cohort import synth

SP = (1.0, 1.0, 3.0)  # 1 mm^2 pixels, 3 mm slices: area = pixel count, no thickness scaling


def _volume(shape=(6, 20, 20), fill=40.0):
    return np.full(shape, fill, np.float32)


def test_single_lesion_hand_computed():
    ct = _volume()
    ct[2, 5:8, 5:8] = 210.0   # 9 pixels, plateau in band 2
    ct[2, 6, 6] = 250.0       # peak 250 -> weight 2
    r = calcium.agatston(ct, SP)
    assert r.n_lesions == 1
    assert r.score == pytest.approx(9 * 2)
    assert r.volume_mm3 == pytest.approx(9 * 3.0)
    row = r.lesions.iloc[0]
    assert (row["slice"], row["n_pixels"], row["peak_hu"], row["weight"]) == (2, 9, 250.0, 2)
    assert r.category == "1-100"


def test_two_lesions_same_and_other_slice():
    ct = _volume()
    ct[1, 2:4, 2:4] = 450.0            # 4 px x 4 = 16
    ct[1, 10:13, 10:12] = 150.0        # 6 px x 1 = 6 (same slice, separate)
    ct[4, 15:17, 3:6] = 320.0          # 6 px x 3 = 18
    r = calcium.agatston(ct, SP)
    assert r.n_lesions == 3
    assert r.score == pytest.approx(16 + 6 + 18)
    assert sorted(r.lesions["weight"]) == [1, 3, 4]


def test_minimum_area_and_minimum_pixels():
    ct = _volume()
    ct[2, 3, 3:5] = 300.0  # 2 pixels
    fine = (0.45, 0.45, 3.0)  # 2 pixels = 0.405 mm^2 < 1 mm^2
    assert calcium.agatston(ct, fine, min_pixels=1).n_lesions == 0
    assert calcium.agatston(ct, SP, min_pixels=1).score == pytest.approx(2 * 3)
    # The book's default also asks for 3 connected pixels (noise suppression).
    assert calcium.agatston(ct, SP).n_lesions == 0
    ct[2, 3, 5] = 300.0
    assert calcium.agatston(ct, SP).score == pytest.approx(3 * 3)


@pytest.mark.parametrize("peak, weight", [(130, 1), (199, 1), (199.9, 1), (200, 2), (299, 2), (300, 3),
                                          (399, 3), (400, 4), (1500, 4)])
def test_weight_bands_at_their_edges(peak, weight):
    ct = _volume()
    ct[3, 4:6, 4:6] = 130.0
    ct[3, 4, 4] = peak
    r = calcium.agatston(ct, SP)
    assert r.lesions["weight"].tolist() == [weight]
    assert r.score == pytest.approx(4 * weight)
    assert calcium.agatston_weight(peak) == weight


def test_threshold_is_inclusive_130():
    ct = _volume()
    ct[3, 4:6, 4:6] = 129.0
    assert calcium.agatston(ct, SP).n_lesions == 0
    ct[3, 4:6, 4:6] = 130.0
    assert calcium.agatston(ct, SP).n_lesions == 1
    assert calcium.agatston_weight(129.9) == 0


def test_connectivity_in_plane_only():
    ct = _volume()
    for d in range(4):  # a diagonal line of 4 pixels
        ct[2, 5 + d, 5 + d] = 250.0
    assert calcium.agatston(ct, SP).n_lesions == 1
    assert calcium.agatston(ct, SP, connectivity=4, min_pixels=1).n_lesions == 4
    # The same pixels on two adjacent slices are two lesions (Agatston is slice-wise).
    ct[3] = ct[2]
    r = calcium.agatston(ct, SP)
    assert r.n_lesions == 2 and r.score == pytest.approx(2 * 4 * 2)
    with pytest.raises(ValueError, match="connectivity"):
        calcium.agatston(ct, SP, connectivity=6)


def test_slice_thickness_normalisation():
    ct = _volume()
    ct[2, 4:8, 4:8] = 500.0  # 16 px x 4 = 64 per slice
    assert calcium.agatston(ct, (1.0, 1.0, 5.0)).score == pytest.approx(64 * 5 / 3)
    assert calcium.agatston(ct, (1.0, 1.0, 5.0), reference_thickness_mm=None).score == pytest.approx(64)
    # Overlapping reconstructions: the thickness, not the spacing, sets the factor.
    r = calcium.agatston(ct, (1.0, 1.0, 1.5), slice_thickness_mm=3.0)
    assert r.score == pytest.approx(64) and r.thickness_factor == 1.0
    assert r.volume_mm3 == pytest.approx(16 * 1.5)


def test_region_restricts_scoring():
    ct = _volume()
    ct[2, 2:5, 2:5] = 400.0
    ct[2, 12:15, 12:15] = 400.0
    region = np.zeros(ct.shape, bool)
    region[:, :10, :10] = True
    r = calcium.agatston(ct, SP, region=region)
    assert r.n_lesions == 1 and r.score == pytest.approx(9 * 4)
    with pytest.raises(ValueError, match="region shape"):
        calcium.agatston(ct, SP, region=region[:3])


# -- phantoms ----------------------------------------------------------------------------------
SMALL = dict(shape=(40, 192, 192), spacing=(2.0, 2.0, 5.0))
PROTOCOLS = sorted(synth.PROTOCOL_NOISE_HU.items())


@functools.lru_cache(maxsize=None)
def _phantom(cac, noise, seed, offset=0.0, grid="small"):
    kw = SMALL if grid == "small" else dict(shape=(56, 400, 400), spacing=(1.17, 1.17, 5.0))
    params = {"cac_score": cac, "noise_hu": noise, "hu_offset": offset, "aortic_calcium": 4.0}
    return phantom.ctac_phantom(params, seed=seed, keep_clean=True, **kw)


def _close(measured, true):
    return abs(measured - true) <= max(0.05 * true, 3.0 if true < 60 else 0.0)


@pytest.mark.parametrize("protocol, noise", PROTOCOLS)
@pytest.mark.parametrize("cac, seed", [(30, 1), (250, 2), (1200, 3)])
def test_phantom_agatston_is_recovered(protocol, noise, cac, seed):
    ph = _phantom(cac, noise, seed, offset=[4.0, 0.0, -5.0][seed % 3])
    true = ph.truth["agatston"]
    assert true > 0
    in_region = calcium.agatston(ph.ct, ph.spacing, region=ph.coronary_region).score
    from_labels = calcium.cac_from_image(ph.ct_image(), ph.label_image()).score
    assert _close(in_region, true), (protocol, in_region, true)
    assert _close(from_labels, true), (protocol, from_labels, true)


@pytest.mark.parametrize("protocol, noise", PROTOCOLS)
def test_phantom_site_grid_agatston(protocol, noise):
    ph = _phantom(400, noise, 11, offset=3.0, grid="site")
    result = calcium.cac_from_image(ph.ct_image(), ph.label_image())
    assert _close(result.score, ph.truth["agatston"])
    assert result.category == ph.truth["cac_category"] or abs(result.score - 400) < 25


@pytest.mark.parametrize("protocol, noise", PROTOCOLS)
@pytest.mark.parametrize("seed", [4, 5])
def test_cac_zero_phantoms_score_zero(protocol, noise, seed):
    ph = _phantom(0, noise, seed)
    assert ph.truth["agatston"] == 0 and ph.truth["cac_category"] == "0"
    assert calcium.cac_from_image(ph.ct_image(), ph.label_image()).score == 0


def test_truth_is_the_noise_free_score():
    ph = _phantom(250, 15.0, 2)
    r = calcium.agatston(ph.clean, ph.spacing, region=ph.coronary_region)
    assert r.score == pytest.approx(ph.truth["agatston"])
    assert r.volume_mm3 == pytest.approx(ph.truth["calcium_volume_mm3"])
    got = r.lesions.sort_values(["slice", "score"]).reset_index(drop=True)
    want = ph.lesions.sort_values(["slice", "score"]).reset_index(drop=True)
    assert got["n_pixels"].tolist() == want["n_pixels"].tolist()
    assert got["weight"].tolist() == want["weight"].tolist()
    assert ph.truth["agatston_unscaled"] == pytest.approx(ph.truth["agatston"] * 3.0 / ph.spacing[2])


def test_coronary_region_excludes_aorta_and_bone():
    ph = _phantom(0, 15.0, 4)
    region = calcium.coronary_region(ph.labels, ph.spacing)
    aorta = ph.labels == manifest.structure_id("aorta")
    heart = ph.labels == manifest.structure_id("heart")
    # The heart is in the region except next to the vessels that enter it (2 mm margin).
    assert heart.sum() and (region & heart).sum() > 0.95 * heart.sum()
    assert not (region & aorta).any()
    bone = np.isin(ph.labels, [manifest.structure_id(n) for n in ("sternum", "vertebrae_T8", "costal_cartilages")])
    assert not (region & bone).any()
    # Without the exclusion the dilated heart reaches the aortic root and its wall calcium.
    unexcluded = calcium.coronary_region(ph.labels, ph.spacing, exclude_labels=[])
    assert (unexcluded & aorta).any()
    # An empty heart gives an empty region.
    assert not calcium.coronary_region(np.zeros((3, 4, 4), np.uint8), ph.spacing).any()


def test_labels_on_another_grid_are_resampled():
    ph = _phantom(250, 15.0, 2)
    ct, lab = ph.ct_image(), ph.label_image()
    padded = sitk.ConstantPad(lab, (5, 3, 2), (4, 6, 1), 0)  # larger grid, different origin
    a = calcium.cac_from_image(ct, lab).score
    b = calcium.cac_from_image(ct, padded).score
    assert a == pytest.approx(b) and a > 0
