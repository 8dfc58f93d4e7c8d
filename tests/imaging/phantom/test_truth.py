"""The truth of a phantom (imaging.phantom.truth): structure status, fat and calcium from its own voxels."""

import numpy as np
import pytest

from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom
from small_phantoms import small as _small


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
