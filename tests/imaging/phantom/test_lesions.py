"""Coronary calcium of the phantoms (imaging.phantom.lesions): lesions whose score noise cannot change."""

from ctac_helpers.imaging import phantom
from small_phantoms import small as _small


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
