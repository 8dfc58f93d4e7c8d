"""Scan ingestion: the manifest, real DICOM and NIfTI samples, broken series and images."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctac_helpers.imaging import ingest
from ctac_helpers.cohort.validate import ValidationError

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "ct-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real CT samples not found at {SAMPLES}")
DICOM = SAMPLES / "dicom-series" / "dicom"


def _ct(tmp_path, arr=None, spacing=(1.0, 1.0, 3.0), name="ct.nii.gz"):
    if arr is None:
        rng = np.random.default_rng(0)
        arr = rng.normal(0, 20, (12, 32, 32)).astype(np.int16)
        arr[:, :4, :] = -1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return path


@needs_samples
def test_dicom_series_is_read_in_hu_lps_and_without_identifiers(tmp_path):
    rec = ingest.ingest_scan({"scan_id": "s1", "patient_id": "p1", "image": str(DICOM),
                              "label_map": str(SAMPLES / "dicom-series" / "seg-total.nii.gz")}, tmp_path)
    assert rec["format"] == "dicom" and rec["n_files"] == 20 and rec["n_slices"] == 20
    assert rec["kvp"] == 120.0 and rec["slice_thickness_mm"] == 3.0
    assert rec["spacing_z_mm"] == pytest.approx(2.0)  # slice spacing from positions, not the 3 mm thickness
    assert rec["hu_p001"] <= -1000  # air in HU: RescaleIntercept was applied
    ct = sitk.ReadImage(rec["ct_path"])
    assert np.allclose(ct.GetDirection(), np.eye(3).ravel())  # LPS
    for key in ct.GetMetaDataKeys():  # the NIfTI writer's own fields only; no DICOM tag survives
        assert "|" not in key
    raw = Path(rec["ct_path"]).read_bytes()
    assert b"Basel" not in raw and b"Petersgraben" not in raw
    # the label map (RAS NIfTI written by TotalSegmentator) lands on the CT's voxels: the liver is soft tissue
    labels = sitk.GetArrayFromImage(sitk.ReadImage(rec["label_path"]))
    hu = sitk.GetArrayFromImage(ct)
    assert 40 < hu[labels == 5].mean() < 150
    assert set(rec) >= {"scan_id", "patient_id", "ct_path", "label_path", "pericardium_path"}
    assert not any("name" in k.lower() or "birth" in k.lower() for k in rec)


@needs_samples
def test_slices_given_out_of_order_are_sorted_by_position(tmp_path):
    files = sorted(DICOM.iterdir())
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, f in enumerate(reversed(files)):
        (shuffled / f"slice{i:03d}.dcm").write_bytes(f.read_bytes())
    a, _ = ingest.read_ct(DICOM)
    b, _ = ingest.read_ct(shuffled)
    assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))


@needs_samples
def test_missing_slice_is_reported_as_a_gap(tmp_path):
    files = sorted(DICOM.iterdir())
    gap = tmp_path / "gap"
    gap.mkdir()
    z = []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.ReadImageInformation()
        z.append(float(r.GetMetaData("0020|0032").split("\\")[2]))
    middle = files[int(np.argsort(z)[10])]
    for f in files:
        if f != middle:
            (gap / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ingest.IngestError, match="slice gap"):
        ingest.read_ct(gap)


@needs_samples
def test_two_series_in_one_folder_are_refused(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in sorted(DICOM.iterdir()):
        (mixed / f.name).write_bytes(f.read_bytes())
    # a second series: copies of slices under another SeriesInstanceUID
    pydicom = pytest.importorskip("pydicom")
    for i, f in enumerate(sorted(DICOM.iterdir())[:3]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.1.{i + 1}"
        ds.save_as(mixed / f"other{i}.dcm")
    with pytest.raises(ingest.IngestError, match="series"):
        ingest.read_ct(mixed)


def test_nifti_offset_by_1024_is_named(tmp_path):
    rng = np.random.default_rng(1)
    arr = (rng.normal(40, 20, (12, 32, 32)) + 1024).astype(np.int16)
    arr[:, :4, :] = 24  # air stored without the intercept
    img, _ = ingest.read_ct(_ct(tmp_path, arr))
    with pytest.raises(ingest.IngestError, match=r"\+1024"):
        ingest.check_ct(img, "site/ct.nii.gz")


def test_bad_spacing_and_too_few_slices(tmp_path):
    img, _ = ingest.read_ct(_ct(tmp_path, spacing=(1.0, 1.0, 30.0)))
    with pytest.raises(ingest.IngestError, match="spacing 30 along z"):
        ingest.check_ct(img, "x")
    arr = np.full((3, 16, 16), -1000, np.int16)
    img, _ = ingest.read_ct(_ct(tmp_path, arr, name="thin.nii.gz"))
    with pytest.raises(ingest.IngestError, match="3 slice"):
        ingest.check_ct(img, "x")


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    with pytest.raises(ingest.IngestError, match="broken.nii.gz: unreadable"):
        ingest.read_ct(bad)
    with pytest.raises(ingest.IngestError, match="not found"):
        ingest.read_ct(tmp_path / "nope.nii.gz")


def test_nan_voxels_are_named_at_ingestion_not_read_as_0_hu(tmp_path):
    rng = np.random.default_rng(2)
    arr = rng.normal(40, 20, (12, 32, 32)).astype(np.float32)
    arr[:, :4, :] = -1000
    arr[5:7] = np.nan  # ITK itself would read these voxels as 0 HU
    with pytest.raises(ingest.IngestError, match=r"ct.nii.gz: 2048 NaN voxel\(s\) in 2 of 12 slices \(slice 6-7"):
        ingest.read_ct(_ct(tmp_path, arr))
    with pytest.raises(ingest.IngestError, match="every voxel is NaN") as exc:
        ingest.read_ct(_ct(tmp_path, np.full((12, 32, 32), np.nan, np.float32), name="blank.nii.gz"))
    assert "1024" not in str(exc.value)
    img, _ = ingest.read_ct(_ct(tmp_path, np.full((12, 32, 32), -1000, np.int16), name="air.nii.gz"))
    with pytest.raises(ingest.IngestError, match=r"every voxel is -1000 \(a constant volume"):
        ingest.check_ct(img, "air.nii.gz")


@pytest.mark.parametrize("value, kind, message", [(-1, "labels", r"negative label values \(-1\)"),
                                                  (200, "labels", r"outside the class map \(200\)"),
                                                  (-1, "mask", r"negative label values \(-1\)")])
def test_label_values_are_checked_before_the_cast_at_ingestion(tmp_path, value, kind, message):
    ct_path = _ct(tmp_path)
    arr = np.zeros((12, 32, 32), np.int16)
    arr[4:8, 10:20, 10:20] = 51
    arr[0, 0, 0] = value
    labels = sitk.GetImageFromArray(arr)
    labels.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    column = "label_map" if kind == "labels" else "pericardium"
    with pytest.raises(ingest.IngestError, match=message):
        ingest.ingest_scan({"scan_id": "a", "patient_id": "p", "image": str(ct_path),
                            column: str(tmp_path / "labels.nii.gz")}, tmp_path / "cache")


def test_label_map_on_another_grid_is_refused(tmp_path):
    ct_path = _ct(tmp_path)
    labels = sitk.GetImageFromArray(np.zeros((12, 32, 32), np.uint8))
    labels.SetSpacing((1.0, 1.0, 3.0))
    labels.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(labels, str(tmp_path / "labels.nii.gz"))
    with pytest.raises(ingest.IngestError, match=r"labels.nii.gz: the label map's grid does not match.*origin"):
        ingest.ingest_scan({"scan_id": "a", "patient_id": "p", "image": str(ct_path),
                            "label_map": str(tmp_path / "labels.nii.gz")}, tmp_path / "cache")


def test_mask_folder_is_combined_into_class_ids(tmp_path):
    ct_path = _ct(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, sl in (("heart", slice(2, 5)), ("aorta", slice(6, 8))):
        arr = np.zeros((12, 32, 32), np.uint8)
        arr[sl, 10:20, 10:20] = 1
        m = sitk.GetImageFromArray(arr)
        m.SetSpacing((1.0, 1.0, 3.0))
        sitk.WriteImage(m, str(masks / f"{name}.nii.gz"))
    ct, _ = ingest.read_ct(ct_path)
    labels = sitk.GetArrayFromImage(ingest.read_label_map(masks, ct))
    assert set(np.unique(labels)) == {0, 51, 52}
    assert (labels == 51).sum() == 300


def test_manifest_validation_reports_file_row_column(tmp_path):
    ct_path = _ct(tmp_path)
    df = pd.DataFrame({
        "scan_id": ["a", "a", "c"],
        "patient_id": ["p1", "p2", None],
        "image": [str(ct_path), str(tmp_path / "missing.nii.gz"), str(ct_path)],
        "cac_score": [10, -5, "lots"],
        "colour": ["x", "y", "z"],
    })
    problems = ingest.validate_scan_manifest(df, "scans.csv", cohort_ids=["p1", "p2", "p9"])
    text = [str(p) for p in problems]
    assert any("scans.csv, row 3, column 'image'" in t and "missing.nii.gz" in t for t in text)
    assert any("row 2, column 'scan_id'" in t and "unique" in t for t in text)
    assert any("row 4, column 'patient_id'" in t for t in text)
    assert any("row 3, column 'cac_score'" in t and "[0, 20000]" in t for t in text)
    assert any("row 4, column 'cac_score'" in t and "a number" in t for t in text)
    assert any("warning" in t and "colour" in t for t in text)
    assert any("p9" in t and "without a scan" in t for t in text)
    with pytest.raises(ValidationError, match="problem"):
        ingest.require_valid_scan_manifest(df, "scans.csv")


def test_manifest_paths_resolve_against_its_folder(tmp_path):
    _ct(tmp_path)
    (tmp_path / "scans.csv").write_text("scan_id,patient_id,image\n001,007,ct.nii.gz\n")
    df = ingest.read_scan_manifest(tmp_path / "scans.csv")
    assert df.loc[0, "scan_id"] == "001" and df.loc[0, "patient_id"] == "007"
    assert df.loc[0, "image"] == str(tmp_path / "ct.nii.gz")
    assert ingest.validate_scan_manifest(df) == []
