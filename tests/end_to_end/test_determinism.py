"""Two runs of the same configuration give the same bytes, and run.json lets a reviewer check it.

The slow tests run the book's real stages twice, into two run directories at different places, with a
small configuration, and compare every table, figure and artifact byte for byte, the predictions as
DataFrames, and the output hashes recorded in the two ``run.json`` files (``ctac-book compare``).
Figures are compared too: ``RunDir.write_figure`` drops the PNG's only variable metadata (the
``Software`` text chunk; matplotlib's Agg PNG writer stores no date), so identical figures are identical
files.
"""

import json
import shutil

import pandas as pd
import pytest

from ctac_helpers.pipeline import cli
from ctac_helpers.pipeline import runner
from ctac_helpers.core.rundir import file_sha256
from ctac_helpers.core.stages import STAGES

# Every stage, on a small cohort: 3 phantoms, no real CT samples (the imaging chapters skip them),
# 3 folds and short bootstraps. About a minute per run on two cores.
SMALL_CONFIG = """\
profile: quick
name: determinism
stages:
  data: {n_patients: 400}
  segmentation: {n_phantoms: 3, n_workers: 1, samples_dir: /nonexistent}
  cac_eat: {n_workers: 1}
  radiomics: {n_workers: 1}
  models: {n_folds: 3, n_resamples: 50, early_stopping_rounds: 5, compare_32: false, n_jobs: 1}
  survival: {n_resamples: 50}
"""

DECLARED = {rel for stage in STAGES for rel in stage.output_relpaths()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same configuration run twice, into run directories of different names and depths."""
    root = tmp_path_factory.mktemp("determinism")
    config = root / "small.yaml"
    config.write_text(SMALL_CONFIG)
    run_dirs = [root / "first", root / "elsewhere" / "second-run"]
    for run_dir in run_dirs:
        assert cli.main(["run", "-q", "--config", str(config), "--run-dir", str(run_dir)]) == 0
    return run_dirs


def _files(run_dir, sub, pattern):
    # hidden files are temporaries of atomic writes; none may be left after a complete run
    return sorted(p.name for p in (run_dir / sub).glob(pattern))


def _first_difference(a: bytes, b: bytes) -> str:
    la, lb = a.decode("utf-8", "replace").splitlines(), b.decode("utf-8", "replace").splitlines()
    for i, (x, y) in enumerate(zip(la, lb), start=1):
        if x != y:
            return f"line {i}: {x!r} != {y!r}"
    return f"{len(la)} lines against {len(lb)}"


@pytest.mark.slow
def test_every_table_is_byte_identical(two_runs):
    a, b = two_runs
    names = _files(a, "tables", "*.csv")
    assert names == _files(b, "tables", "*.csv")
    assert {f"tables/{n}" for n in names} >= {rel for rel in DECLARED if rel.startswith("tables/")}
    differ = {}
    for name in names:
        ba, bb = (a / "tables" / name).read_bytes(), (b / "tables" / name).read_bytes()
        if ba != bb:
            differ[name] = _first_difference(ba, bb)
    assert not differ, f"tables that differ between two identical runs: {differ}"


@pytest.mark.slow
def test_predictions_are_identical(two_runs):
    a, b = two_runs
    pa = pd.read_parquet(a / "artifacts" / "predictions.parquet")
    pb = pd.read_parquet(b / "artifacts" / "predictions.parquet")
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    assert len(pa) and pa["score"].notna().all()
    assert file_sha256(a / "artifacts" / "predictions.parquet") == file_sha256(b / "artifacts" / "predictions.parquet")


@pytest.mark.slow
def test_every_artifact_and_figure_is_byte_identical(two_runs):
    # Artifacts hold no path into the run directory (the scan table's image paths are relative to
    # it), and PNGs no timestamp: everything a stage writes is the same file in both runs.
    a, b = two_runs
    for sub, pattern in (("artifacts", "*.parquet"), ("figures", "*.png")):
        names = _files(a, sub, pattern)
        assert names == _files(b, sub, pattern), sub
        differ = [n for n in names if (a / sub / n).read_bytes() != (b / sub / n).read_bytes()]
        assert not differ, f"{sub} that differ between two identical runs: {differ}"
    scans = pd.read_parquet(a / "artifacts" / "scans.parquet")
    for col in ("ct_path", "label_path"):
        assert not scans[col].str.startswith("/").any() and scans[col].str.startswith("work/").all(), col
        assert all((a / p).is_file() for p in scans[col]), col


@pytest.mark.slow
def test_run_json_records_the_same_hashes_and_keys(two_runs):
    records = [json.loads((d / "run.json").read_text()) for d in two_runs]
    for run_dir, record in zip(two_runs, records):
        assert [s for s in record["stages"]] and all(record["stages"][s.name]["status"] == "ok" for s in STAGES)
        for stage in STAGES:
            outputs = record["stages"][stage.name]["outputs"]
            assert set(outputs) == set(stage.output_relpaths()), stage.name
            for rel, sha in outputs.items():
                assert sha == file_sha256(run_dir / rel), rel  # the record describes the files on disk
    ra, rb = (r["stages"] for r in records)
    for stage in STAGES:
        assert ra[stage.name]["outputs"] == rb[stage.name]["outputs"], stage.name
        # nothing that enters a cache key depends on where the run directory lies
        assert ra[stage.name]["inputs"] == rb[stage.name]["inputs"], stage.name
        assert ra[stage.name]["key"] == rb[stage.name]["key"], stage.name


@pytest.mark.slow
def test_compare_reports_identical_runs(two_runs, capsys):
    a, b = two_runs
    table = runner.compare_runs(a, b)
    assert list(table.columns) == ["stage", "path", "sha_a", "sha_b", "same"]
    assert len(table) == len(DECLARED) and set(table["path"]) == DECLARED
    assert table["same"].all()
    assert list(dict.fromkeys(table["stage"])) == [s.name for s in STAGES]
    assert cli.main(["compare", str(a), str(b)]) == 0
    assert f"all {len(DECLARED)} recorded outputs are identical" in capsys.readouterr().out


# -- compare_runs and `ctac-book compare` on hand-made records (fast) --------------------------------
def _write_record(run_dir, stages):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"parameters": {"name": "x"}, "code_hash": "c", "packages": {"numpy": "1"}, "stages": stages}
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


def _ok(outputs):
    return {"status": "ok", "key": "k", "outputs": outputs}


def test_compare_runs_lists_every_output_and_what_differs(tmp_path):
    data_out = {rel: f"sha-{i}" for i, rel in enumerate(STAGES[0].output_relpaths())}
    cohort_out = {rel: f"sha-c{i}" for i, rel in enumerate(STAGES[1].output_relpaths())}
    a = _write_record(tmp_path / "a", {"data": _ok(data_out), "cohort": _ok(cohort_out)})
    changed = dict(cohort_out, **{"tables/table1.csv": "other"})
    b = _write_record(tmp_path / "b", {"data": _ok(data_out), "cohort": _ok(changed)})
    table = runner.compare_runs(a, b)
    assert len(table) == len(data_out) + len(cohort_out)
    assert list(table.loc[~table["same"], "path"]) == ["tables/table1.csv"]
    row = table[table["path"] == "tables/table1.csv"].iloc[0]
    assert (row["stage"], row["sha_a"], row["sha_b"]) == ("cohort", cohort_out["tables/table1.csv"], "other")

    # a stage that did not finish in one run: its declared outputs have no hash there
    c = _write_record(tmp_path / "c", {"data": _ok(data_out), "cohort": {"status": "running", "outputs": {}}})
    table = runner.compare_runs(a, c)
    missing = table[table["stage"] == "cohort"]
    assert len(missing) == len(cohort_out) and missing["sha_b"].isna().all() and not missing["same"].any()
    assert table.loc[table["stage"] == "data", "same"].all()


def test_compare_command_exit_codes(tmp_path, capsys):
    outputs = {rel: "s" for rel in STAGES[0].output_relpaths()}
    a = _write_record(tmp_path / "a", {"data": _ok(outputs)})
    b = _write_record(tmp_path / "b", {"data": _ok(outputs)})
    assert cli.main(["compare", str(a), str(b)]) == 0
    assert f"all {len(outputs)} recorded outputs are identical" in capsys.readouterr().out

    c = tmp_path / "c"
    shutil.copytree(b, c)
    _write_record(c, {"data": _ok(dict(outputs, **{"figures/calibration.png": "t"}))})
    record = json.loads((c / "run.json").read_text())
    record["packages"]["numpy"] = "2"
    (c / "run.json").write_text(json.dumps(record))
    assert cli.main(["compare", str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "figures/calibration.png" in out and "1 of" in out and "package versions differ" in out
    assert "tables/schema.csv" not in out  # only what differs is listed

    assert cli.main(["compare", str(a), str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no run.json" in err and "Traceback" not in err


def test_scan_table_paths_are_relative_to_the_run_directory(tmp_path):
    from ctac_helpers.imaging import scans as imaging

    root = tmp_path.resolve() / "run"
    inside = root / "work" / "images" / "s1"
    scans = pd.DataFrame({"scan_id": ["s1", "s2"],
                          "ct_path": [str(inside / "ct.nii.gz"), "/site/data/ct.nii.gz"],
                          "label_path": [str(inside / "labels.nii.gz"), None],
                          "pericardium_path": [None, None]})
    rel = imaging.relative_scan_paths(scans, root)
    assert list(rel["ct_path"]) == ["work/images/s1/ct.nii.gz", "/site/data/ct.nii.gz"]
    assert rel["label_path"].iloc[0] == "work/images/s1/labels.nii.gz" and rel["label_path"].iloc[1] is None
    # written by one run directory, read back by another (a moved or copied run)
    moved = tmp_path / "elsewhere"
    back = imaging.resolve_scan_paths(rel, moved)
    assert back["ct_path"].iloc[0] == str(moved.resolve() / "work/images/s1/ct.nii.gz")
    assert back["ct_path"].iloc[1] == "/site/data/ct.nii.gz" and back["pericardium_path"].isna().all()
    pd.testing.assert_frame_equal(imaging.resolve_scan_paths(rel, root), imaging.resolve_scan_paths(scans, root))
