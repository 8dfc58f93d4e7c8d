"""The phantom's slab-wise finishing pass (imaging.phantom.noise): noise and site offset."""

import numpy as np
import pytest

from ctac_helpers.imaging.phantom import canvas, noise


def _whole_volume(hu, lab, offset, sigma, rng, keep_clean):
    """The finishing pass as one operation per whole volume (how ctac_phantom did it before)."""
    hu = hu.copy()
    labelled = lab != 0
    sums = np.bincount(lab[labelled], weights=hu[labelled], minlength=256)
    counts = np.bincount(lab.ravel(), minlength=256)
    clean = np.clip(np.rint(hu + offset), -1024, 3071).astype(np.int16) if keep_clean else None
    if sigma > 0:
        noise = rng.standard_normal(hu.shape, dtype=np.float32)
        noise *= sigma
        hu += noise
    hu += offset
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    return hu.astype(np.int16), clean, counts, sums


@pytest.mark.parametrize("slab_voxels", [1, 5000, 1 << 30])
@pytest.mark.parametrize("sigma", [0.0, 22.0])
def test_finishing_by_slabs_gives_the_whole_volume_result(monkeypatch, slab_voxels, sigma):
    draw = np.random.default_rng(5)
    hu = (draw.normal(0, 400, (13, 30, 20)) + 2000 * (draw.random((13, 30, 20)) < 0.01)).astype(np.float32)
    lab = draw.integers(0, 6, hu.shape).astype(np.uint8)
    monkeypatch.setattr(noise, "_SLAB_VOXELS", slab_voxels)
    want = _whole_volume(hu, lab, 3.0, sigma, canvas.rng_stream(7, 99), True)
    got = noise.finish_image(hu.copy(), lab, 3.0, sigma, canvas.rng_stream(7, 99), True)
    for w, g in zip(want[:3], got[:3]):
        np.testing.assert_array_equal(w, g)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12)
    assert got[0].dtype == np.int16 and got[0].min() >= -1024 and got[0].max() <= 3071
