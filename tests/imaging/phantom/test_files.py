"""A phantom's files (imaging.phantom.files): NIfTI images and truth JSON, written and read back."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from ctac_helpers.imaging import phantom
from small_phantoms import small as _small


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
