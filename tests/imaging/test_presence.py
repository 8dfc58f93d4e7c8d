"""Structure presence (ctac_helpers.imaging.presence): present, truncated or absent, and the frequency rule.

The real label map comes from ``../shared/ct-samples`` (or ``$CTAC_CT_SAMPLES``); the test that needs
it skips when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging import presence

ROOT = Path(__file__).resolve().parents[2]
REAL_LABELS = (Path(os.environ.get("CTAC_CT_SAMPLES", ROOT.parent / "shared" / "ct-samples"))
               / "abdomen-3mm-short" / "seg-total.nii.gz")
IDS = manifest.class_map()
NAME_TO_ID = {v: k for k, v in IDS.items()}


def test_structure_status_handcrafted():
    arr = np.zeros((10, 20, 20), dtype=np.uint8)  # (z, y, x)
    arr[0:3, 5:10, 5:10] = NAME_TO_ID["liver"]          # top (first) axial slice
    arr[9, 8:10, 8:10] = NAME_TO_ID["stomach"]          # last axial slice
    arr[4:6, 0:4, 8:12] = NAME_TO_ID["aorta"]           # in-plane edge (y = 0)
    arr[4:6, 8:12, 16:20] = NAME_TO_ID["spleen"]        # in-plane edge (x = last)
    arr[3:7, 12:16, 3:7] = NAME_TO_ID["heart"]          # inside
    names = ["liver", "stomach", "aorta", "spleen", "heart", "brain"]
    expected = {"liver": "truncated", "stomach": "truncated", "aorta": "truncated",
                "spleen": "truncated", "heart": "present", "brain": "absent"}
    assert presence.structure_status(arr, names) == expected

    img = sitk.GetImageFromArray(arr)
    full = presence.structure_status(img)
    assert list(full) == list(IDS.values())  # all 117, in class-id order
    assert {k: full[k] for k in names} == expected
    assert set(full.values()) <= set(manifest.STRUCTURE_STATUSES)
    assert presence.structure_status(arr.astype(np.float32), ["heart"]) == {"heart": "present"}

    # a tube crossing the whole field of view (first to last slice) is measured, not truncated,
    # unless the in-plane border cuts it too
    tube = np.zeros((10, 20, 20), dtype=np.uint8)
    tube[:, 8:11, 8:11] = NAME_TO_ID["esophagus"]
    tube[:, 15:18, 5:8] = NAME_TO_ID["pancreas"]
    tube[:, 0:3, 12:15] = NAME_TO_ID["trachea"]
    assert presence.structure_status(tube, ["esophagus", "pancreas", "trachea"]) == {
        "esophagus": "present", "pancreas": "truncated", "trachea": "truncated"}
    assert presence.structure_status(tube, ["esophagus"], crossing=()) == {"esophagus": "truncated"}

    with pytest.raises(ValueError, match="unknown structure"):
        presence.structure_status(arr, ["heart", "Heart"])
    with pytest.raises(ValueError, match="3-D"):
        presence.structure_status(arr[0])
    with pytest.raises(ValueError, match="integer"):
        presence.structure_status(arr + 0.5)


@pytest.mark.skipif(not REAL_LABELS.is_file(), reason=f"real label map {REAL_LABELS} not available "
                    "(set CTAC_CT_SAMPLES or provide ../shared/ct-samples, see its README)")
def test_structure_status_real_label_map():
    labels = sitk.ReadImage(str(REAL_LABELS))
    status = presence.structure_status(labels)
    found = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - {0}
    assert {NAME_TO_ID[n] for n, s in status.items() if s != "absent"} == found
    # a 30-slice cut through the upper abdomen: the liver is cut, the adrenals are whole,
    # the brain is not in the scan
    assert status["liver"] == "truncated"
    assert status["adrenal_gland_left"] == "present"
    assert status["brain"] == "absent"


def test_presence_frequency_and_selection():
    statuses = {
        f"s{i}": {
            "heart": "present",                                    # 5/5
            "liver": "truncated" if i < 2 else "present",          # 3/5 present, 2 truncated
            "aorta": "absent" if i == 0 else "present",            # 4/5 = 0.8 exactly
            "brain": "absent",                                     # 0/5
        }
        for i in range(5)
    }
    table = presence.presence_table(statuses)
    assert list(table.columns) == ["scan_id", "structure", "status"]
    assert len(table) == 20

    freq = presence.structure_frequency(table)
    assert list(freq.columns) == ["structure", "n_scans", "n_present", "n_truncated", "n_absent",
                                  "frequency"]
    assert list(freq["structure"]) == ["heart", "aorta", "liver", "brain"]
    row = freq.set_index("structure")
    assert row.loc["aorta", "frequency"] == 0.8
    assert row.loc["liver", ["n_present", "n_truncated", "n_absent"]].tolist() == [3, 2, 0]
    assert row.loc["brain", "n_absent"] == 5 and (freq["n_scans"] == 5).all()

    assert presence.select_structures(freq) == ["heart"]          # strictly > 0.8
    assert presence.select_structures(freq, 0.79) == ["heart", "aorta"]
    with_trunc = presence.structure_frequency(table, include_truncated=True)
    assert presence.select_structures(with_trunc, 0.9) == ["liver", "heart"]  # ties: class-id order

    for bad in (0, 1, 1.5, -0.1, 80):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            presence.select_structures(freq, bad)
    with pytest.raises(ValueError, match="unknown status"):
        presence.presence_table({"s0": {"heart": "partial"}})
    with pytest.raises(ValueError, match="duplicate"):
        presence.structure_frequency(pd.concat([table, table.head(1)]))
    # a structure missing from a scan's statuses counts as absent there
    partial = presence.structure_frequency(table[~((table.scan_id == "s4") & (table.structure == "heart"))])
    assert partial.set_index("structure").loc["heart", ["n_present", "n_absent"]].tolist() == [4, 1]
