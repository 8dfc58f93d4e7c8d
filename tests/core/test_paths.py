"""Published paths: labels instead of the machine's folders, resolved where a notebook runs."""

import json
import os

import nbformat
import pandas as pd
import pyarrow.parquet as pq
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from ctac_helpers.pipeline import batch
from ctac_helpers.core import paths
from ctac_helpers.core.rundir import RunDir


def test_labels_name_the_run_folder_and_the_site_files_relative_to_the_site_folder(tmp_path):
    site = tmp_path / "Dr_Someone_share" / "mysite"
    (site / "tables").mkdir(parents=True)
    keys = tmp_path / "keys"
    keys.mkdir()
    assert paths.run_label(tmp_path / "elsewhere" / "runs" / "mysite") == "runs/mysite"
    assert paths.site_folder({"cohort": str(site / "cohort.csv")}) == site.resolve()
    params = {"seed": 1, "cohort_file": str(site / "cohort.csv"), "scan_manifest": str(site / "tables" / "scans.csv"),
              "secret_file": str(keys / "secret.key"), "site_labels": ["A"]}
    published, locations = paths.publish_parameters(
        params, ("cohort_file", "scan_manifest", "secret_file"), tmp_path / "x" / "runs" / "r1", site)
    assert published == {"seed": 1, "cohort_file": "cohort.csv", "scan_manifest": "tables/scans.csv",
                         "secret_file": "secret.key", "site_labels": ["A"], "run_dir": "runs/r1"}
    assert locations == {"cohort.csv": str(site / "cohort.csv"), "tables/scans.csv": str(site / "tables" / "scans.csv"),
                         "secret.key": str(keys / "secret.key"), "runs/r1": str(tmp_path / "x" / "runs" / "r1")}
    assert str(tmp_path) not in json.dumps(published)
    # empty site paths (the synthetic cohort) stay empty and get no location
    assert paths.publish_parameters({"cohort_file": ""}, ("cohort_file",), None, None) == ({"cohort_file": ""}, {})


def test_two_files_of_the_same_name_outside_the_site_folder_are_refused(tmp_path):
    params = {"cohort_file": str(tmp_path / "a" / "cohort.csv"), "scan_manifest": str(tmp_path / "b" / "data.csv"),
              "secret_file": str(tmp_path / "c" / "data.csv")}
    with pytest.raises(ValueError, match="two files would both be named 'data.csv'"):
        paths.publish_parameters(params, ("cohort_file", "scan_manifest", "secret_file"), None, tmp_path / "a")


def test_public_config_records_site_paths_as_labels(tmp_path):
    cfg = {"name": "s", "seed": 1, "stages": {}, "site": {
        "cohort": str(tmp_path / "cohort.csv"), "scans": str(tmp_path / "scans.csv"),
        "secret": str(tmp_path.parent / "secret.key"), "labels": ["MyHospital"]}}
    out = paths.public_config(cfg)
    assert out["site"] == {"cohort": "cohort.csv", "scans": "scans.csv", "secret": "secret.key",
                           "labels": ["MyHospital"]}
    assert cfg["site"]["cohort"] == str(tmp_path / "cohort.csv")  # the configuration itself is unchanged
    assert paths.public_config({"name": "q"}) == {"name": "q"}


def test_resolve_reads_the_runners_locations_and_otherwise_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.LOCATIONS_ENV, raising=False)
    assert paths.resolve("runs/quick") == str(tmp_path / "runs" / "quick")
    assert paths.resolve("") == ""
    with paths.locations_env({"runs/quick": "/data/elsewhere/runs/quick"}):
        assert paths.resolve("runs/quick") == "/data/elsewhere/runs/quick"
        assert paths.resolve("runs/other") == str(tmp_path / "runs" / "other")
    assert paths.LOCATIONS_ENV not in os.environ  # restored
    with paths.locations_env({"runs/r": str(tmp_path / "far" / "r")}):
        rd = RunDir("runs/r")
    assert rd.root == tmp_path / "far" / "r" and (rd.root / "artifacts").is_dir()


def test_parameter_cell_shows_the_values_used_with_their_comments():
    source = ('run_dir: str = "runs/quick"  # run directory\nseed: int = 1  # seed\n'
              'shape: list = [64, 192,\n               192]  # grid\nname = "x#y"  # a hash inside a string\n'
              'note: str = "é"  # non-ASCII before a value\nother: str = "é"  # kept')
    out = paths.parameter_cell_source(source, {"run_dir": "runs/site", "seed": 7, "shape": [8, 16, 16],
                                               "name": 'say "hi"', "note": "ü"})
    assert out == ('run_dir: str = "runs/site"  # run directory\nseed: int = 7  # seed\n'
                   'shape: list = [8, 16, 16]  # grid\nname = "say \\"hi\\""  # a hash inside a string\n'
                   'note: str = "ü"  # non-ASCII before a value\nother: str = "é"  # kept')
    ns = {}
    exec(out, ns)  # still valid Python, with the values
    assert ns["name"] == 'say "hi"' and ns["shape"] == [8, 16, 16]
    with pytest.raises(ValueError, match="assigns no missing"):
        paths.parameter_cell_source(source, {"missing": 1})


def test_tidy_executed_notebook(tmp_path):
    nb = new_notebook(cells=[
        new_code_cell('run_dir: str = "runs/x"  # run directory\nn: int = 3', metadata={"tags": ["parameters"]}),
        new_code_cell('# Parameters\nrun_dir = "/home/someone/runs/x"\nn = 5\n',
                      metadata={"tags": ["injected-parameters"]}),
        new_code_cell("print(n)"),
    ])
    nb.metadata["papermill"] = {"input_path": "/home/someone/repo/notebooks/a.ipynb",
                                "output_path": "/home/someone/runs/x/executed/.a.ipynb.tmp.ipynb",
                                "parameters": {"run_dir": "/home/someone/runs/x", "n": 5}}
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, path)
    paths.tidy_executed_notebook(path, "a.ipynb", {"run_dir": "runs/x", "n": 5})
    out = nbformat.read(path, as_version=4)
    assert [c.source for c in out.cells] == ['run_dir: str = "runs/x"  # run directory\nn: int = 5', "print(n)"]
    assert out.metadata["papermill"] == {"input_path": "notebooks/a.ipynb", "output_path": "executed/a.ipynb",
                                         "parameters": {"run_dir": "runs/x", "n": 5}}
    assert "someone" not in path.read_text()


def test_artifacts_keep_no_attrs(tmp_path):
    rd = RunDir(tmp_path / "run")
    df = pd.DataFrame({"a": [1, 2]})
    df.attrs.update(file="/home/someone/hospital/cohort.csv", rows=[5, 6])
    path = rd.write_artifact("t", df)
    assert b"someone" not in path.read_bytes()
    assert "someone" not in json.dumps({k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()})
    assert df.attrs["file"]  # the caller's frame is untouched
    assert rd.read_artifact("t")["a"].tolist() == [1, 2]


def _with_paths(item):
    if item["x"] < 0:
        raise ValueError(f"cannot read {item['cache']}/{item['scan_id']}.nii.gz")
    return {"scan_id": item["scan_id"], "ct_path": f"{item['cache']}/{item['scan_id']}.nii.gz",
            "outside": "/elsewhere/file.nii.gz", "note": "text"}


def test_batch_results_store_paths_relative_to_the_run_directory(tmp_path):
    rd = RunDir(tmp_path / "Dr_Someone" / "runs" / "r")
    cache = rd.work_dir("images")
    its = [{"scan_id": "s0", "x": 1, "cache": str(cache)}, {"scan_id": "bad", "x": -1, "cache": str(cache)}]
    res = batch.run_batch(_with_paths, its, rd.work_dir("seg"), key="k", n_workers=1, progress=False)
    assert res.results[0]["ct_path"] == str(cache / "s0.nii.gz")  # absolute for the caller
    stored = json.loads((rd.root / "work" / "seg" / "s0.json").read_text())
    assert stored["result"]["ct_path"] == "work/images/s0.nii.gz" and stored["relative"] == ["ct_path"]
    assert stored["result"]["outside"] == "/elsewhere/file.nii.gz"
    failed = (rd.root / "work" / "seg" / "bad.failed.json").read_text()
    assert "Dr_Someone" not in failed and "work/images/bad.nii.gz" in failed
    assert res.failures["reason"].str.contains("Dr_Someone").sum() == 0
    # read back from the file: absolute again
    again = batch.run_batch(_with_paths, its[:1], rd.work_dir("seg"), key="k", n_workers=1, progress=False)
    assert again.n_cached == 1 and again.results == res.results
