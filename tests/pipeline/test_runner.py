"""The papermill runner on a tiny fake book: caching, forcing, failures and status."""

import json
import os
import shutil
import stat
import time

import nbformat
import papermill
import pytest

import fakebook
from ctac_helpers.core import paths
from ctac_helpers.pipeline import runner
from ctac_helpers.core.rundir import file_sha256
from ctac_helpers.cohort.validate import ValidationError

STAGES = fakebook.STAGES
REAL_CODE_HASH = runner.code_hash  # taken before the autouse fixture replaces it


@pytest.fixture(autouse=True)
def fixed_code_hash(monkeypatch):
    # other files of the package may change while the tests run; the cache must not see it
    monkeypatch.setattr(runner, "code_hash", lambda *a, **k: "test-code-hash")


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    return fakebook.write_notebooks(tmp_path_factory.mktemp("notebooks"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, notebooks):
    """One complete run of the fake book (copied by the tests that start from a finished run)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(runner, "code_hash", lambda *a, **k: "test-code-hash")
    try:
        run_dir = tmp_path_factory.mktemp("baseline") / "run"
        results = runner.run_stages(fakebook.config(), run_dir, stages=STAGES, notebooks_dir=notebooks)
    finally:
        mp.undo()
    return run_dir, results


@pytest.fixture
def finished(tmp_path, baseline):
    run_dir = tmp_path / "run"
    shutil.copytree(baseline[0], run_dir)
    return run_dir


def run(run_dir, notebooks, cfg=None, **kw):
    return runner.run_stages(cfg or fakebook.config(), run_dir, stages=STAGES, notebooks_dir=notebooks, **kw)


def statuses(results):
    return {r.name: r.status for r in results}


def mtimes(run_dir):
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_first_run_executes_every_stage_and_records_it(baseline):
    run_dir, results = baseline
    assert [r.name for r in results] == ["up", "down", "report"]
    assert statuses(results) == {"up": "ran", "down": "ran", "report": "ran"}
    for name in ("up.ipynb", "down.ipynb", "report.ipynb"):
        assert (run_dir / "executed" / name).is_file()
    assert not list((run_dir / "executed").glob(".*"))  # no temporary notebooks left behind
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parameters"] == fakebook.config()
    assert record["code_hash"] == "test-code-hash"
    assert {"python", "platform", "numpy", "pandas", "papermill", "jupyter-book", "ctac-book"} <= set(record["packages"])
    up, down = record["stages"]["up"], record["stages"]["down"]
    assert up["status"] == "ok" and up["parameters"] == {"seed": 7, "n": 3}
    # seed is not declared by `down`, so it is neither passed nor part of its key
    assert down["parameters"] == {}
    assert down["inputs"]["up"] == up["outputs"]["artifacts/up.parquet"] == file_sha256(run_dir / "artifacts/up.parquet")
    assert down["upstream"] == {"up": up["key"]}
    assert set(down["outputs"]) == {"artifacts/down.parquet", "tables/down.csv"}
    assert "run_dir" not in json.dumps(record["stages"])  # records hold no machine-specific paths
    for rec in record["stages"].values():
        assert {"key", "status", "notebook", "started", "finished", "duration_s"} <= set(rec)


@pytest.mark.slow
def test_no_local_path_is_published_and_a_downloaded_notebook_reruns_from_the_project_root(
        tmp_path, notebooks, monkeypatch):
    project = tmp_path / "Dr_Quillon_private_share"  # a folder name that must not be published
    run_dir = project / "runs" / "fake"
    run(run_dir, notebooks, fakebook.config(up={"n": 4}))
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("latin-1")
            assert "Dr_Quillon" not in text and str(tmp_path) not in text, path
            assert str(notebooks) not in text, path  # nor the folder of the source notebooks
    nb = nbformat.read(run_dir / "executed" / "up.ipynb", as_version=4)
    # one parameters cell, showing what the run used (no defaults followed by an injected cell)
    assert [c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])] == [
        'run_dir: str = "runs/fake"  # run directory\nseed: int = 7  # global seed\nn: int = 4  # rows']
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert nb.metadata["papermill"]["input_path"] == "notebooks/up.ipynb"

    # downloaded, then re-run with papermill from the project root: the same outputs, in the same place
    download = tmp_path / "download"
    download.mkdir()
    shutil.copy(run_dir / "executed" / "down.ipynb", download / "down.ipynb")
    recorded = json.loads((run_dir / "run.json").read_text())["stages"]["down"]["outputs"]
    for rel in recorded:
        (run_dir / rel).unlink()
    monkeypatch.delenv(paths.LOCATIONS_ENV, raising=False)
    papermill.execute_notebook(str(download / "down.ipynb"), str(download / "out.ipynb"), cwd=str(project),
                               kernel_name="python3", progress_bar=False)
    assert {rel: file_sha256(run_dir / rel) for rel in recorded} == recorded


@pytest.mark.slow
def test_second_run_skips_everything(finished, notebooks):
    before = mtimes(finished)
    t0 = time.perf_counter()
    results = run(finished, notebooks)
    assert time.perf_counter() - t0 < 10
    assert statuses(results) == {"up": "skipped", "down": "skipped", "report": "skipped"}
    after = mtimes(finished)
    after.pop(finished / "run.json")
    before.pop(finished / "run.json")
    assert after == before


@pytest.mark.slow
def test_parameter_change_reruns_the_stage_and_its_downstream(finished, notebooks):
    results = run(finished, notebooks, fakebook.config(down={"scale": 2}))
    assert statuses(results) == {"up": "skipped", "down": "ran", "report": "ran"}
    assert "parameters changed" in results[1].reason and "scale" in results[1].reason
    record = json.loads((finished / "run.json").read_text())
    assert record["stages"]["down"]["parameters"] == {"scale": 2}
    # and the new state is itself cached
    assert statuses(run(finished, notebooks, fakebook.config(down={"scale": 2}))) == {
        "up": "skipped", "down": "skipped", "report": "skipped"}


@pytest.mark.slow
def test_force_reruns_the_stage_and_downstream_only_if_its_key_changes(finished, notebooks):
    results = run(finished, notebooks, force=("down",))
    assert statuses(results) == {"up": "skipped", "down": "ran", "report": "skipped"}
    assert results[1].reason == "forced"


def test_force_unknown_stage_is_rejected(tmp_path, notebooks):
    with pytest.raises(ValueError, match=r"unknown stage 'nope'; allowed: up, down, report"):
        run(tmp_path / "run", notebooks, force=("nope",))
    with pytest.raises(ValueError, match="allowed: up, down, report"):
        run(tmp_path / "run", notebooks, only="nope")


@pytest.mark.slow
def test_failing_notebook_stops_the_run_and_keeps_upstream(finished, notebooks):
    up_artifact = finished / "artifacts" / "up.parquet"
    up_sha = file_sha256(up_artifact)
    report_before = (finished / "executed" / "report.ipynb").stat().st_mtime_ns
    before = json.loads((finished / "run.json").read_text())

    with pytest.raises(runner.StageFailed) as info:
        run(finished, notebooks, fakebook.config(down={"fail": True}))
    msg = str(info.value)
    assert "down.ipynb" in msg and "cell 3" in msg and "ValueError: boom from down" in msg
    assert info.value.stage == "down" and info.value.cell == 3 and info.value.ename == "ValueError"

    assert file_sha256(up_artifact) == up_sha
    assert (finished / "executed" / "down.failed.ipynb").is_file()
    assert (finished / "executed" / "report.ipynb").stat().st_mtime_ns == report_before
    record = json.loads((finished / "run.json").read_text())
    assert record["stages"]["up"] == before["stages"]["up"]
    assert record["stages"]["report"] == before["stages"]["report"]  # not executed
    down = record["stages"]["down"]
    assert down["status"] == "failed"
    assert down["executed"] == "executed/down.failed.ipynb"
    # the error names the run directory as published (runs/<name>), in run.json and in the failed notebook
    assert down["error"]["ename"] == "ValueError" and down["error"]["evalue"] == f"boom from down in runs/{finished.name}"
    assert str(finished.resolve()) in msg  # the terminal's message keeps the real path
    assert str(finished.resolve()) not in (finished / "executed" / "down.failed.ipynb").read_text()
    assert "injected-parameters" not in (finished / "executed" / "down.failed.ipynb").read_text()
    assert down["error"]["cell"] == 3
    assert down["last_good"]["outputs"] == before["stages"]["down"]["outputs"]

    # the failure makes the stage stale; a good run afterwards replaces the failed notebook
    states = {s.stage: (s.state, s.reason) for s in runner.stage_status(fakebook.config(), finished, STAGES, notebooks)}
    assert states["down"][0] == "stale" and "last run failed" in states["down"][1]
    results = run(finished, notebooks)
    assert statuses(results)["down"] == "ran"
    assert not (finished / "executed" / "down.failed.ipynb").exists()


@pytest.mark.slow
def test_a_failed_rerun_keeps_the_last_good_notebook_and_outputs(finished, notebooks, tmp_path):
    good = {rel: file_sha256(finished / rel) for rel in STAGES[1].output_relpaths()}
    good_nb = (finished / "executed" / "down.ipynb").read_bytes()
    # scale 5 rewrites the artifact before the notebook raises: the half-done run must not stay
    for attempt in range(2):  # a second failure still finds the last good run
        with pytest.raises(runner.StageFailed, match="last successful run are kept"):
            run(finished, notebooks, fakebook.config(down={"fail": True, "scale": 5}))
        assert {rel: file_sha256(finished / rel) for rel in good} == good, attempt
        assert (finished / "executed" / "down.ipynb").read_bytes() == good_nb
        assert (finished / "executed" / "down.failed.ipynb").is_file()
        assert not (finished / runner.LAST_GOOD_DIR).exists()
    # a re-run killed half-way (the last good run set aside, an output rewritten) is recovered the same way
    record = json.loads((finished / "run.json").read_text())
    runner._set_aside_last_good(finished, STAGES[1], record["stages"]["down"], finished / "executed" / "down.ipynb")
    assert not (finished / "executed" / "down.ipynb").exists()
    (finished / "artifacts" / "down.parquet").write_bytes(b"half-written by a killed run")
    record["stages"]["down"]["status"] = "running"
    (finished / "run.json").write_text(json.dumps(record))
    with pytest.raises(runner.StageFailed):
        run(finished, notebooks, fakebook.config(down={"fail": True, "scale": 5}))
    assert {rel: file_sha256(finished / rel) for rel in good} == good
    assert (finished / "executed" / "down.ipynb").read_bytes() == good_nb
    # the next good run replaces them and leaves nothing aside
    assert statuses(run(finished, notebooks, fakebook.config(down={"scale": 5})))["down"] == "ran"
    assert file_sha256(finished / "artifacts" / "down.parquet") != good["artifacts/down.parquet"]
    assert "last_good" not in json.loads((finished / "run.json").read_text())["stages"]["down"]
    assert not (finished / runner.LAST_GOOD_DIR).exists()
    assert not (finished / "executed" / "down.failed.ipynb").exists()


@pytest.mark.slow
def test_executed_notebooks_follow_the_umask(tmp_path, notebooks):
    old = os.umask(0o027)
    try:
        run(tmp_path / "run", notebooks, only=None)
    finally:
        os.umask(old)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


@pytest.mark.slow
def test_missing_declared_output_fails_the_stage(tmp_path, finished, notebooks):
    (finished / "tables" / "down.csv").unlink()
    with pytest.raises(runner.StageFailed, match=r"did not write its declared outputs: tables/down\.csv"):
        run(finished, notebooks, fakebook.config(down={"skip_table": True}))
    record = json.loads((finished / "run.json").read_text())
    assert record["stages"]["down"]["status"] == "failed"
    assert record["stages"]["down"]["error"]["ename"] == "MissingOutputs"


def test_unknown_parameter_is_rejected_before_anything_runs(tmp_path, notebooks):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"'nn' is not declared in the parameters cell of up\.ipynb; allowed: n, seed"):
        run(run_dir, notebooks, fakebook.config(up={"nn": 4}))
    with pytest.raises(ValueError, match=r"'typo' is not declared .* of report\.ipynb"):
        run(run_dir, notebooks, fakebook.config(report={"typo": 1}))
    assert not (run_dir / "run.json").exists()


def test_unknown_stage_in_config_is_rejected(tmp_path, notebooks):
    cfg = fakebook.config()
    cfg["stages"]["extra"] = {}
    with pytest.raises(ValueError, match="unknown stage 'stages.extra'; allowed: up, down, report"):
        run(tmp_path / "run", notebooks, cfg)


def test_stage_status_never_run_up_to_date_and_stale(tmp_path, finished, notebooks):
    cfg = fakebook.config()
    fresh = runner.stage_status(cfg, tmp_path / "nothing", STAGES, notebooks)
    assert [(s.stage, s.state) for s in fresh] == [("up", "never run"), ("down", "never run"), ("report", "never run")]
    assert not (tmp_path / "nothing").exists()  # status creates nothing

    assert [s.state for s in runner.stage_status(cfg, finished, STAGES, notebooks)] == ["up to date"] * 3

    changed = {s.stage: s for s in runner.stage_status(fakebook.config(up={"n": 5}), finished, STAGES, notebooks)}
    assert changed["up"].state == "stale" and "n 3 -> 5" in changed["up"].reason
    # a parameter the configuration starts (or stops) setting: the notebook's default, not None
    added = {s.stage: s for s in runner.stage_status(fakebook.config(down={"scale": 2}), finished, STAGES, notebooks)}
    assert added["down"].reason == "parameters changed: scale the notebook's default -> 2"
    assert changed["down"].state == "stale" and "upstream stage 'up'" in changed["down"].reason

    (finished / "tables" / "report.csv").write_text("tampered\n")
    states = {s.stage: s for s in runner.stage_status(cfg, finished, STAGES, notebooks)}
    assert states["report"].state == "stale" and "tables/report.csv modified" in states["report"].reason
    (finished / "artifacts" / "up.parquet").unlink()
    states = {s.stage: s for s in runner.stage_status(cfg, finished, STAGES, notebooks)}
    assert states["up"].reason == "output artifacts/up.parquet missing"
    assert states["down"].reason == "input artifact 'up' missing"


def test_notebook_change_and_code_change_make_stages_stale(tmp_path, finished, notebooks, monkeypatch):
    cfg = fakebook.config()
    monkeypatch.setattr(runner, "code_hash", lambda *a, **k: "other-code")
    assert {s.reason for s in runner.stage_status(cfg, finished, STAGES, notebooks)} == {
        "code in ctac_helpers/ or data_manifest/ changed"}
    monkeypatch.setattr(runner, "code_hash", lambda *a, **k: "test-code-hash")
    edited = tmp_path / "nb"
    shutil.copytree(notebooks, edited)
    path = edited / "report.ipynb"
    path.write_text(path.read_text().replace("# report.ipynb", "# report, edited"))
    states = {s.stage: s for s in runner.stage_status(cfg, finished, STAGES, edited)}
    assert states["report"].state == "stale" and states["report"].reason == "notebook report.ipynb changed"
    assert states["up"].state == "up to date"


@pytest.mark.slow
def test_only_runs_one_stage_and_needs_its_upstream(tmp_path, finished, notebooks):
    with pytest.raises(ValueError, match="has not run successfully"):
        run(tmp_path / "empty", notebooks, only="down")
    results = run(finished, notebooks, only="down", force=("down",))
    assert statuses(results) == {"down": "ran"}


def test_code_hash_is_deterministic_and_sees_changes(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "p.yaml").write_text("a: 1\n")
    (pkg / "notes.txt").write_text("ignored\n")
    manifest = tmp_path / "data_manifest"
    manifest.mkdir()
    (manifest / "schema.yaml").write_text("b: 2\n")
    first = REAL_CODE_HASH(pkg, manifest)
    assert first == REAL_CODE_HASH(pkg, manifest)
    (pkg / "notes.txt").write_text("still ignored\n")
    assert REAL_CODE_HASH(pkg, manifest) == first
    (manifest / "schema.yaml").write_text("b: 3\n")
    second = REAL_CODE_HASH(pkg, manifest)
    assert second != first
    (pkg / "sub" / "p.yaml").rename(pkg / "sub" / "q.yaml")
    assert REAL_CODE_HASH(pkg, manifest) != second
    assert len(REAL_CODE_HASH()) == 64  # the real package and data_manifest/


NOISY = (
    'run_dir: str = "runs/x"  # run directory',
    "import logging, os, warnings\n"
    "from ctac_helpers.pipeline import batch\n"
    "from ctac_helpers.core.rundir import RunDir\n\n"
    "rd = RunDir(run_dir)\n"
    "res = batch.run_batch(dict, [{'scan_id': f's{i}'} for i in range(3)], rd.root / 'work', key='k', n_workers=1,\n"
    "                      progress=True, desc='noisy scans')\n"
    "logging.getLogger('ctac_helpers.noisy').warning('a warning of the package')\n"
    "logging.getLogger('ctac_helpers.noisy').info('progress of the package')\n"
    "logging.getLogger('some.library').warning('a warning of a library')\n"
    "os.system('echo written by a child process >&2')\n"
    "print(len(res.results), 'scans')",
)


def test_progress_and_log_records_go_to_the_terminal_not_into_the_notebook(tmp_path, capfd, caplog):
    import logging

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from ctac_helpers.core.stages import Stage

    nb = new_notebook(cells=[new_code_cell(NOISY[0], metadata={"tags": ["parameters"]}), new_code_cell(NOISY[1])])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "noisy.ipynb")
    caplog.set_level(logging.INFO, logger="ctac_helpers")  # as `ctac-book run` without -q
    [result] = runner.run_stages({"name": "noisy", "seed": 1, "stages": {"noisy": {}}}, tmp_path / "run",
                                 stages=(Stage(name="noisy", notebook="noisy.ipynb"),), notebooks_dir=tmp_path / "nb")
    assert result.status == "ran"
    executed = nbformat.read(tmp_path / "run" / "executed" / "noisy.ipynb", as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [("stream", "stdout", "3 scans\n")]
    err = capfd.readouterr().err
    assert "[noisy] a warning of the package" in err and "[noisy] progress of the package" in err
    assert "[noisy] noisy scans: 3 done (0 reused from an earlier run), 0 failed" in err
    assert "a warning of a library" in err and "written by a child process" in err


def test_wrongly_typed_parameter_is_rejected_before_the_run_directory_exists(tmp_path, notebooks):
    run_dir = tmp_path / "run"
    with pytest.raises(ValidationError) as exc:
        run(run_dir, notebooks, fakebook.config(up={"n": "three"}))
    assert "key 'stages.up.n': got 'three'; expected an integer (up.ipynb declares n: int)" in str(exc.value)
    with pytest.raises(ValueError, match=r"'stages.down.scale': got 2.5; expected an integer"):
        run(run_dir, notebooks, fakebook.config(down={"scale": 2.5}))
    assert not run_dir.exists()
