"""The imaging stages' per-scan tasks on a small phantom: segmentation, CAC/EAT, radiomics, failures."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctac_helpers.pipeline import batch
from ctac_helpers.imaging import scans as imaging
from ctac_helpers.core import manifest
from ctac_helpers.imaging import phantom

SHAPE, SPACING = (40, 128, 128), (3.5, 3.5, 7.0)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    root = tmp_path_factory.mktemp("imaging")
    ph = phantom.ctac_phantom({"cac_score": 300.0}, seed=3, shape=SHAPE, spacing=SPACING)
    paths = phantom.write_phantom(ph, root / "ph", "phantom")
    scan = {"scan_id": "p1", "patient_id": "P1", "image": str(paths["ct"]), "label_map": str(paths["labels"]),
            "pericardium": str(paths["pericardium"]), "protocol": "low_dose_120kvp"}
    task = imaging.make_segmentation_task(root / "cache", "phantom")
    return root, ph, task(scan)


def test_segmentation_record(segmented):
    _, ph, rec = segmented
    assert rec["segmentation_source"] == "phantom" and rec["manifest_protocol"] == "low_dose_120kvp"
    statuses = {k[len(imaging.STATUS_PREFIX):]: v for k, v in rec.items() if k.startswith(imaging.STATUS_PREFIX)}
    assert len(statuses) == len(manifest.class_map())
    for name, entry in ph.truth["structures"].items():
        assert statuses[name] == entry["status"], name
    labels = sitk.GetArrayFromImage(sitk.ReadImage(rec["label_path"]))
    assert np.array_equal(labels, ph.labels)


def test_cac_eat_measured_and_site_supplied(segmented):
    _, ph, rec = segmented
    out = imaging.cac_eat_task(rec)
    assert out["cac_source"] == "measured" and out["eat_source"] == "measured" and out["eat_region"] == "pericardium"
    assert imaging.cac_within([out["cac_score"]], [ph.truth["agatston"]])[0]
    assert out["eat_volume"] == pytest.approx(ph.truth["eat_volume_ml"], rel=0.05)
    site = dict(rec, manifest_cac_score=412.0, manifest_eat_volume=99.0, manifest_eat_density=-80.0)
    out = imaging.cac_eat_task(site)
    assert (out["cac_score"], out["cac_source"], out["cac_category"]) == (412.0, "site", ">400")
    assert (out["eat_volume"], out["eat_density"], out["eat_source"]) == (99.0, -80.0, "site")


def test_radiomics_task_gives_nan_and_status_for_missing_structures(segmented):
    _, _, rec = segmented
    rec = dict(rec, **{f"{imaging.STATUS_PREFIX}liver": "truncated"})
    feats = ["Mean", "MeshVolume"]
    out = imaging.radiomics_task(rec, ["heart", "liver", "thyroid_gland"], feats)
    assert out["ct__heart__status"] == "present" and np.isfinite(out["ct__heart__Mean"])
    assert out["ct__liver__status"] == "truncated" and np.isnan(out["ct__liver__Mean"])
    assert out["ct__thyroid_gland__status"] == "absent" and np.isnan(out["ct__thyroid_gland__MeshVolume"])
    table = imaging.image_feature_table(pd.DataFrame([out]), pd.DataFrame([{"patient_id": "P1", "cac_score": 1.0}]))
    assert table["ct__heart__Mean"].dtype == np.float32 and table.loc[0, "cac_score"] == 1.0


def test_a_corrupt_scan_is_isolated_and_reported(segmented, tmp_path):
    root, _, _ = segmented
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    scans = [{"scan_id": "good", "patient_id": "P1", "image": str(root / "ph" / "phantom_ct.nii.gz"),
              "label_map": str(root / "ph" / "phantom_labels.nii.gz")},
             {"scan_id": "bad", "patient_id": "P2", "image": str(bad), "label_map": None}]
    res = batch.run_batch(imaging.make_segmentation_task(tmp_path / "cache", "phantom"), scans, tmp_path / "work",
                          key="k", n_workers=1, progress=False)
    assert [r["scan_id"] for r in res.results] == ["good"]
    assert res.failures["scan_id"].tolist() == ["bad"]
    assert "corrupt.nii.gz" in res.failures.loc[0, "reason"] and "unreadable" in res.failures.loc[0, "reason"]
    assert json.loads((tmp_path / "work" / "bad.failed.json").read_text())["error"] == "IngestError"


def test_unknown_segmenter_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="totalsegmentator, precomputed, phantom"):
        imaging.make_segmentation_task(tmp_path, "nnunet")


def test_task_key_changes_with_parameters():
    assert imaging.task_key("radiomics", structures=["heart"]) != imaging.task_key("radiomics", structures=["aorta"])
    assert imaging.task_key("cac_eat") == imaging.task_key("cac_eat")


def test_bland_altman_by_hand():
    ba = imaging.bland_altman([11.0, 19.0, 30.0], [10.0, 20.0, 28.0])
    # differences 1, -1, 2: mean 2/3, sample SD sqrt(((1/3)^2 + (5/3)^2 + (4/3)^2) / 2) = sqrt(7/3)
    assert ba["bias"] == pytest.approx(2 / 3) and ba["sd"] == pytest.approx(np.sqrt(7 / 3))
    assert ba["loa_high"] == pytest.approx(2 / 3 + 1.96 * np.sqrt(7 / 3)) and ba["max_abs_error"] == 2.0


def test_sample_manifest_absent_folder_is_empty(tmp_path):
    df = imaging.sample_manifest(tmp_path / "nowhere", tmp_path)
    assert df.empty and "image" in df.columns


def test_model_inputs_switch_between_sources():
    cohort = pd.DataFrame({"patient_id": ["A", "B", "C"], "cac_score": [1.0, 2.0, 3.0],
                           "eat_volume": [50.0, 60.0, 70.0], "eat_density": [-80.0, -81.0, -82.0]})
    synthetic = pd.DataFrame({"patient_id": ["A", "B", "C"], "ct__heart__Mean": [1.0, 2.0, 3.0]})
    images = pd.DataFrame({"patient_id": ["C", "A"], "ct__heart__Mean": [30.0, 10.0], "ct__heart__status": ["present"] * 2,
                           "cac_score": [300.0, 100.0], "eat_volume": [7.0, 5.0], "eat_density": [-90.0, -91.0],
                           "cac_source": ["measured", "site"]})
    c, f = imaging.model_inputs(cohort, synthetic, None, "synthetic")
    assert c is cohort and f is synthetic
    c, f = imaging.model_inputs(cohort, synthetic, images, "imaging")
    assert c["patient_id"].tolist() == ["A", "C"] and f["patient_id"].tolist() == ["A", "C"]
    assert c["cac_score"].tolist() == [100.0, 300.0] and f["ct__heart__Mean"].tolist() == [10.0, 30.0]
    assert list(f.columns) == ["patient_id", "ct__heart__Mean", "ct__heart__status"]
    with pytest.raises(ValueError, match="allowed: synthetic, imaging"):
        imaging.model_inputs(cohort, synthetic, images, "images")
    with pytest.raises(ValueError, match="image_features"):
        imaging.model_inputs(cohort, synthetic, None, "imaging")
    with pytest.raises(ValueError, match="not in the cohort"):
        imaging.model_inputs(cohort.iloc[:1], synthetic, images, "imaging")


# -- a site's scans -------------------------------------------------------------------------------
def test_redact_paths_removes_every_form_of_the_scans_paths(tmp_path):
    image = tmp_path / "MRN1234567" / "ct_series"
    scan = {"scan_id": "S-0123456789abcdef", "image": str(image), "label_map": str(tmp_path / "lab.nii.gz"),
            "pericardium": None}
    text = f"cannot read {image}: no DICOM; label map {tmp_path / 'lab.nii.gz'} ok; see ct_series"
    out = imaging.redact_paths(text, scan)
    assert "MRN1234567" not in out and str(tmp_path) not in out and "ct_series" not in out
    assert "<image of scan S-0123456789abcdef>" in out and "<label_map of scan S-0123456789abcdef>" in out


def test_a_failing_site_scan_names_no_path(tmp_path):
    missing = tmp_path / "MRN7654321" / "series"
    item = {"scan_id": "S-00000000000000aa", "patient_id": "P-00000000000000aa", "image": str(missing),
            "redact_paths": True}
    res = batch.run_batch(imaging.make_segmentation_task(str(tmp_path / "cache"), "precomputed"), [item],
                          tmp_path / "work", key="k", n_workers=1, progress=False)
    (reason,) = res.failures["reason"]
    assert "MRN7654321" not in reason and "<image of scan S-00000000000000aa>" in reason
    stored = (tmp_path / "work" / "S-00000000000000aa.failed.json").read_text()
    assert "MRN7654321" not in stored
    # the phantoms and samples keep their paths in failure messages (they are not a site's)
    item.pop("redact_paths")
    res = batch.run_batch(imaging.make_segmentation_task(str(tmp_path / "cache"), "precomputed"), [item],
                          tmp_path / "work2", key="k", n_workers=1, progress=False)
    assert "MRN7654321" in res.failures["reason"].iloc[0]


def test_site_batches_route_scans_by_label_map(monkeypatch):
    scans = pd.DataFrame({"scan_id": ["S-1", "S-2", "S-3"], "patient_id": ["P-1", "P-2", "P-3"],
                          "image": ["a", "b", "c"], "label_map": ["l1.nii.gz", None, " "]})
    out = imaging.site_batches(scans, "precomputed")
    assert [it["scan_id"] for it in out["precomputed"]] == ["S-1", "S-2", "S-3"]
    loaded = []
    monkeypatch.setattr(imaging.segment, "cached_segmenter", lambda name, **k: loaded.append(name))
    out = imaging.site_batches(scans, "totalsegmentator")
    assert [it["scan_id"] for it in out["precomputed"]] == ["S-1"]
    assert [it["scan_id"] for it in out["totalsegmentator"]] == ["S-2", "S-3"]
    assert all(it["redact_paths"] for its in out.values() for it in its)
    assert loaded == ["totalsegmentator"]  # weights are looked for before any scan is read
    with pytest.raises(ValueError, match="allowed: totalsegmentator, precomputed"):
        imaging.site_batches(scans, "phantom")


def test_site_batches_fail_fast_without_totalsegmentator_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "no-weights"))
    imaging.segment.cached_segmenter.cache_clear()  # a segmenter loaded by an earlier test would be reused
    scans = pd.DataFrame({"scan_id": ["S-1"], "patient_id": ["P-1"], "image": ["a"], "label_map": [None]})
    with pytest.raises(imaging.segment.WeightsNotFound, match="not found"):
        imaging.site_batches(scans, "totalsegmentator")


def test_feature_structures_and_model_inputs_for_a_site():
    feats = pd.DataFrame({"patient_id": ["P-1"], "ct__heart__status": ["present"], "ct__heart__original_firstorder_Mean": [40.0],
                          "ct__lung_upper_lobe_left__status": ["absent"]})
    assert imaging.feature_structures(feats, "imaging") == ["heart", "lung_upper_lobe_left"]
    assert imaging.feature_structures(feats, "synthetic") is None
    with pytest.raises(ValueError, match="holds no structure"):
        imaging.feature_structures(feats[["patient_id"]], "imaging")
    with pytest.raises(ValueError, match="allowed: synthetic, imaging"):
        imaging.feature_structures(feats, "other")
    cohort = pd.DataFrame({"patient_id": ["P-1"], "death": [0]})
    with pytest.raises(ValueError, match="features: imaging"):
        imaging.model_inputs(cohort, cohort[["patient_id"]], feats, "synthetic")


def test_fill_measured_ct_fills_only_missing_values():
    cohort = pd.DataFrame({"patient_id": ["P-1", "P-2", "P-3"], "cac_score": [12.0, np.nan, np.nan]})
    cac_eat = pd.DataFrame({"patient_id": ["P-1", "P-2", "P-2"], "cac_score": [99.0, 450.0, 7.0],
                            "eat_volume": [80.0, 95.0, 1.0], "eat_density": [-80.0, -85.0, -90.0]})
    out = imaging.fill_measured_ct(cohort, cac_eat)
    assert out["cac_score"].tolist()[:2] == [12.0, 450.0] and np.isnan(out["cac_score"].iloc[2])
    assert out["eat_volume"].tolist()[:2] == [80.0, 95.0]  # a column the table lacks is added
    assert cohort["cac_score"].isna().sum() == 2  # the input is not modified


# -- scans that cannot be measured ----------------------------------------------------------------
def test_a_failed_scan_stays_in_the_scan_table_with_a_reason_code(segmented, tmp_path):
    root, _, _ = segmented
    bad = tmp_path / "MRN5550001" / "ct.nii.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image")
    items = [{"scan_id": "good", "patient_id": "P1", "image": str(root / "ph" / "phantom_ct.nii.gz"),
              "label_map": str(root / "ph" / "phantom_labels.nii.gz")},
             {"scan_id": "bad", "patient_id": "P2", "image": str(bad), "label_map": None}]
    task = imaging.make_segmentation_task(tmp_path / "cache", "phantom")
    plain = batch.run_batch(task, items, tmp_path / "w1", key="k", n_workers=1, progress=False)
    site = batch.run_batch(task, [dict(it, scan_id=f"s-{it['scan_id']}", redact_paths=True) for it in items],
                           tmp_path / "w2", key="k", n_workers=1, progress=False)
    manifest = pd.DataFrame(items)
    table = imaging.scan_table([plain, site], ["phantom", "site"],
                               manifests=[manifest, manifest.assign(scan_id="s-" + manifest["scan_id"])])
    assert table[["scan_id", "patient_id", "dataset", "status", "reason"]].to_dict("records") == [
        {"scan_id": "good", "patient_id": "P1", "dataset": "phantom", "status": "ok", "reason": ""},
        {"scan_id": "s-good", "patient_id": "P1", "dataset": "site", "status": "ok", "reason": ""},
        {"scan_id": "bad", "patient_id": "P2", "dataset": "phantom", "status": "excluded", "reason": "unreadable"},
        {"scan_id": "s-bad", "patient_id": "P2", "dataset": "site", "status": "excluded", "reason": "unreadable"}]
    assert table.loc[table["status"] == "ok", "status__heart"].tolist() == ["present", "present"]
    assert imaging.measured(table)["scan_id"].tolist() == ["good", "s-good"]
    summary = imaging.scan_summary(table)
    assert summary.loc[2, "voxels (x, y, z)"] == "" and pd.isna(summary.loc[2, "present"])
    assert summary.loc[0, "present"] > 0
    with pytest.raises(ValueError, match="no status column"):
        imaging.measured(table.drop(columns="status"))


def _labels_without_heart(rec, tmp_path):
    labels = sitk.ReadImage(rec["label_path"])
    arr = sitk.GetArrayFromImage(labels)
    arr[arr == manifest.structure_id("heart")] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labels)
    path = tmp_path / "no_heart.nii.gz"
    sitk.WriteImage(out, str(path))
    return str(path)


def test_cac_eat_table_keeps_every_scan_with_its_reason(segmented, tmp_path):
    _, _, rec = segmented
    empty = sitk.Image(sitk.ReadImage(rec["pericardium_path"]))
    empty = sitk.Multiply(empty, 0)
    sitk.WriteImage(empty, str(tmp_path / "empty_peri.nii.gz"))
    base = dict(rec, dataset="site", status="ok", reason="")
    rows = [dict(base, scan_id="ok1", patient_id="A"),
            dict(base, scan_id="noheart", patient_id="B", status__heart="absent",
                 label_path=_labels_without_heart(rec, tmp_path)),
            # the site gave both CAC and EAT: no heart is needed
            dict(base, scan_id="given", patient_id="C", status__heart="absent", manifest_cac_score=10.0,
                 manifest_eat_volume=90.0, manifest_eat_density=-80.0),
            dict(base, scan_id="peri", patient_id="D", pericardium_path=str(tmp_path / "empty_peri.nii.gz")),
            dict(base, scan_id="broken", patient_id="E", ct_path=str(tmp_path / "missing.nii.gz")),
            {"scan_id": "unread", "patient_id": "F", "dataset": "site", "status": "excluded", "reason": "unreadable"}]
    scans = pd.DataFrame(rows)
    items = imaging.cac_eat_items(scans)
    assert [it["scan_id"] for it in items] == ["ok1", "given", "peri", "broken"]
    run = batch.run_batch(imaging.cac_eat_task, items, tmp_path / "work", key="k", n_workers=1, progress=False)
    table = imaging.cac_eat_table(scans, run)
    assert dict(zip(table["scan_id"], zip(table["status"], table["reason"]))) == {
        "ok1": ("ok", ""), "noheart": ("excluded", "no_heart"), "given": ("ok", ""),
        "peri": ("excluded", "empty_pericardium"), "broken": ("excluded", "measurement_failed"),
        "unread": ("excluded", "unreadable")}
    excluded = table[table["status"] == "excluded"]
    assert excluded["cac_score"].isna().all() and excluded["eat_volume"].isna().all()
    assert table.set_index("scan_id").at["given", "cac_source"] == "site"
    counts = imaging.exclusion_counts(table, stage="cac_eat")
    assert counts[["reason", "n"]].to_dict("records") == [
        {"reason": "no_heart", "n": 1}, {"reason": "empty_pericardium", "n": 1}, {"reason": "measurement_failed", "n": 1}]
    assert imaging.exclusion_text(counts).startswith("1 `no_heart` (no heart in the label map")
    assert imaging.exclusion_text(counts.iloc[:0]) == "none"

    # chapter 4 measures the scans chapter 3 measured; the patients without one are left out, with the reason
    assert imaging.analysis_scans(scans, table)["scan_id"].tolist() == ["ok1", "given"]
    features = pd.DataFrame({"patient_id": ["A"], "ct__heart__Mean": [1.0]})  # C's radiomics failed
    cohort = pd.DataFrame({"patient_id": list("ABCDEFG"), "death": [0, 1, 0, 1, 0, 1, 0]})
    analysed, left_out = imaging.analysed_cohort(cohort, table, features)
    assert analysed["patient_id"].tolist() == ["A"]
    assert dict(zip(left_out["patient_id"], left_out["reason"])) == {
        "B": "no_heart", "C": "radiomics_failed", "D": "empty_pericardium", "E": "measurement_failed",
        "F": "unreadable", "G": "no_scan"}
    # phantoms are no patient's only scan: the synthetic cohort is analysed whole
    same, none = imaging.analysed_cohort(cohort, table.assign(dataset="phantom"), features)
    assert same is cohort and none is None
    # the measured values only: an excluded scan of a patient does not blank the cohort's CAC
    filled = imaging.fill_measured_ct(cohort, table)
    assert filled.set_index("patient_id").at["C", "cac_score"] == 10.0 and np.isnan(filled.at[1, "cac_score"])


def test_scan_table_of_batches_with_columns_empty_in_one(recwarn):
    # phantoms carry no site values; the samples do: no FutureWarning of pandas, the site's values keep their type
    phantoms = batch.BatchResult(results=[{"scan_id": "p1", "manifest_cac_score": None,
                                           f"{imaging.STATUS_PREFIX}heart": "present"}], failures=pd.DataFrame())
    samples = batch.BatchResult(results=[{"scan_id": "s1", "manifest_cac_score": 12.5}], failures=pd.DataFrame())
    scans = imaging.scan_table([phantoms, samples], datasets=["phantom", "sample"])
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)], [str(w.message) for w in recwarn]
    assert list(scans.columns) == ["scan_id", "manifest_cac_score", f"{imaging.STATUS_PREFIX}heart", "dataset",
                                   "status", "reason"]
    assert scans["manifest_cac_score"].dtype == float and pd.isna(scans.loc[0, "manifest_cac_score"])
    assert list(scans[f"{imaging.STATUS_PREFIX}heart"]) == ["present", "absent"]


def test_task_key_reads_every_module_of_the_phantom_package():
    # the phantom is a package: editing any of its modules must change the phantom batch's key
    from ctac_helpers.imaging import calcium

    names = {p.name for p in imaging.source_files(phantom)}
    assert {"__init__.py", "build.py", "lesions.py", "heart.py", "from_cohort.py"} <= names
    assert imaging.source_files(calcium) == [Path(calcium.__file__)]
