"""A run killed with SIGKILL leaves nothing half-written that a stage would read, and the next run resumes.

``ctac-book run`` is started as a subprocess with a small configuration and killed, with everything it
started, twice: in the segmentation stage once some scans are finished, and in the models stage. After
each kill the run directory is checked (valid ``run.json``, every visible file complete, the interrupted
stage not taken for finished); the next run must complete without recomputing the finished scans or the
finished stages.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from ctac_helpers.core.rundir import file_sha256
from ctac_helpers.core.stages import STAGES, execution_order

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
N_PHANTOMS = 4
N_PATIENTS = 400
CONFIG = f"""\
profile: quick
name: resume
stages:
  data: {{n_patients: {N_PATIENTS}}}
  segmentation: {{n_phantoms: {N_PHANTOMS}, n_workers: 1, samples_dir: /nonexistent}}
  cac_eat: {{n_workers: 1}}
  radiomics: {{n_workers: 1}}
  models: {{n_folds: 3, n_resamples: 50, early_stopping_rounds: 5, compare_32: false, n_jobs: 1}}
  survival: {{n_resamples: 50}}
"""
# The same, with one parameter of the models stage changed: the models and the stages after them re-run.
CONFIG_MODELS_CHANGED = CONFIG.replace("n_resamples: 50, early", "n_resamples: 40, early")

# Temporary files of the atomic writes (rundir.atomic_path, the runner's notebook): .<name>.<random>.tmp<ext>
TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)*$")
BY_NAME = {s.name: s for s in STAGES}
EARLIER = ["data", "segmentation", "cac_eat", "radiomics", "cohort"]  # in execution order


# -- helpers ---------------------------------------------------------------------------------------
def _start(config: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from ctac_helpers.pipeline.cli import main; sys.exit(main())",
           "run", "--config", str(config), "--run-dir", str(run_dir)]
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_everything(proc: subprocess.Popen) -> None:
    """SIGKILL the run and every process it started.

    ``start_new_session`` puts the CLI in a process group of its own, but Jupyter starts each kernel
    in a new session too, so killing the group alone would leave the kernel computing (until its
    parent poller notices, up to a second later). So: stop the group (nothing new can start), list its
    descendants, kill them and the group.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive := [p for p in family if _alive(p)]:
        assert time.monotonic() < deadline, f"processes survived SIGKILL: {alive}"
        time.sleep(0.05)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE  # a zombie waits for its new parent to reap it
    except psutil.NoSuchProcess:
        return False


def _wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit code {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            _kill_everything(proc)
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def _finish(config: Path, run_dir: Path, log: Path) -> str:
    proc = _start(config, run_dir, log)
    try:
        rc = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        _kill_everything(proc)
        raise
    text = log.read_text()
    assert rc == 0, text[-3000:]
    return text


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))  # valid JSON, or this raises


def _scan_results(run_dir: Path) -> dict[str, Path]:
    """The segmentation's per-scan result files (batch.py: <scan_id>.json; failures: .failed.json)."""
    folder = run_dir / "work" / "segmentation"
    return {p.name: p for p in folder.glob("*.json")
            if not p.name.startswith(".") and not p.name.endswith(".failed.json")} if folder.is_dir() else {}


def _stage_state(run_dir: Path, stage: str) -> str | None:
    try:
        return (_record(run_dir).get("stages", {}).get(stage) or {}).get("status")
    except FileNotFoundError:
        return None


def _cell_started(run_dir: Path, notebook: str, marker: str) -> bool:
    """Whether papermill has started the cell of ``notebook`` whose source contains ``marker``.

    papermill saves the notebook it executes (the runner's hidden temporary in executed/) before and
    after every cell, with the cell's ``papermill.status``.
    """
    for path in (run_dir / "executed").glob(f".{notebook}.*.tmp.ipynb"):
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError):
            continue  # being written
        for cell in cells:
            if marker in "".join(cell.get("source", "")):
                status = cell.get("metadata", {}).get("papermill", {}).get("status")
                if status in ("running", "completed"):
                    return True
    return False


def _snapshot(paths) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _complete(path: Path) -> None:
    """Raise unless ``path`` is a complete file of its kind."""
    if path.suffix == ".parquet":
        pd.read_parquet(path)
    elif path.suffix == ".csv":
        pd.read_csv(path)
    elif path.suffix == ".png":
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-4] == b"\x00\x00\x00\x00IEND", path
    elif path.suffix in (".ipynb", ".json"):
        json.loads(path.read_text(encoding="utf-8"))
    else:
        raise AssertionError(f"unexpected file {path}")


def check_integrity(run_dir: Path) -> tuple[dict, list[Path]]:
    """What a later stage could read after a kill is complete and described by run.json.

    Every visible file of artifacts/, tables/, figures/ and executed/ is complete; the outputs of every
    stage recorded "ok" are on disk with their recorded hash; the executed notebooks are those of the
    finished stages; the per-scan results are complete. Returns the record and the temporary files
    left over (hidden, named ``.<name>.<random>.tmp<ext>``: no reader opens them).
    """
    record = _record(run_dir)
    finished = {name for name, rec in record["stages"].items() if rec.get("status") == "ok"}
    leftovers = []
    for sub in ("artifacts", "tables", "figures", "executed"):
        for path in sorted((run_dir / sub).iterdir()):
            if path.name.startswith("."):
                assert TEMPORARY.match(path.name), f"unexpected hidden file {path}"
                leftovers.append(path)
                continue
            _complete(path)
    for name in finished:
        for rel, sha in record["stages"][name]["outputs"].items():
            assert file_sha256(run_dir / rel) == sha, f"{rel} differs from the hash recorded for {name}"
    executed = {p.name for p in (run_dir / "executed").glob("*.ipynb") if not p.name.startswith(".")}
    assert executed == {Path(BY_NAME[n].notebook).name for n in finished}
    for path in (run_dir / "work").rglob("*.json"):
        if not path.name.startswith("."):
            payload = json.loads(path.read_text(encoding="utf-8"))
            if path.parent.parent == run_dir / "work":  # a batch's per-scan result (batch.py)
                assert "key" in payload, path
    for path in (run_dir / "work").rglob(".*"):
        assert TEMPORARY.match(path.name), f"unexpected hidden file {path}"
        leftovers.append(path)
    return record, leftovers


def _status(config: Path, run_dir: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", "import sys; from ctac_helpers.pipeline.cli import main; sys.exit(main())",
                          "status", "--config", str(config), "--run-dir", str(run_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split(None, 1) for line in out.stdout.splitlines()[1:]]
    return {stage: rest for stage, rest in rows}


def _ran_and_skipped(log: str) -> tuple[list[str], list[str]]:
    ran = re.findall(r"\] (\w+): running ", log)
    skipped = re.findall(r"\] (\w+): up to date, skipped", log)
    return ran, skipped


# -- kill in the segmentation stage ----------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_in_segmentation(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = root / "small.yaml"
    config.write_text(CONFIG)
    run_dir = root / "run"
    log = root / "run-1.log"
    proc = _start(config, run_dir, log)
    _wait_for(lambda: _scan_results(run_dir) and not (run_dir / "artifacts" / "scans.parquet").exists(),
              proc, log, "per-scan segmentation result")
    _kill_everything(proc)
    done = _snapshot(_scan_results(run_dir).values())
    assert 1 <= len(done) < N_PHANTOMS, f"{len(done)} of {N_PHANTOMS} scans were done at the kill"
    # the phantoms' batch (an earlier cell) had finished: its results must be reused too
    phantoms = _snapshot(p for p in (run_dir / "work" / "phantoms").glob("*.json") if not p.name.startswith("."))
    assert len(phantoms) == N_PHANTOMS
    return {"root": root, "config": config, "run_dir": run_dir, "done": {**done, **phantoms}}


@pytest.fixture(scope="module")
def resumed(killed_in_segmentation):
    k = killed_in_segmentation
    return _finish(k["config"], k["run_dir"], k["root"] / "run-2.log")


def test_kill_in_segmentation_leaves_nothing_half_written(killed_in_segmentation):
    k = killed_in_segmentation
    record, leftovers = check_integrity(k["run_dir"])
    states = {name: rec["status"] for name, rec in record["stages"].items()}
    assert states == {"data": "ok", "segmentation": "running"}
    assert not record["stages"]["segmentation"]["outputs"]
    assert not (k["run_dir"] / "artifacts" / "scans.parquet").exists()
    # every leftover is a hidden temporary, e.g. the segmentation's half-run notebook
    assert all(TEMPORARY.match(p.name) for p in leftovers)
    status = _status(k["config"], k["run_dir"])
    assert status["data"].startswith("up to date")
    assert status["cohort"].startswith("never run")  # it follows the imaging chapters
    assert status["segmentation"].startswith("stale") and "did not finish" in status["segmentation"]


def test_rerun_completes_without_recomputing_finished_scans(killed_in_segmentation, resumed):
    k = killed_in_segmentation
    ran, skipped = _ran_and_skipped(resumed)
    assert skipped == ["data"]
    assert ran == [s.name for s in execution_order(STAGES) if s.name != "data"]
    assert "segmentation: running 02_segmentation.ipynb (last run did not finish" in resumed
    for path, (mtime, content) in k["done"].items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, f"{path.name} was recomputed"
    assert len(_scan_results(k["run_dir"])) == N_PHANTOMS
    assert not list((k["run_dir"] / "work" / "segmentation").glob("*.failed.json"))
    record, _ = check_integrity(k["run_dir"])
    assert all(record["stages"][s.name]["status"] == "ok" for s in STAGES)
    # the killed stage's temporary notebook is gone once the stage has run again
    assert not list((k["run_dir"] / "executed").glob(".*"))


# -- kill in the models stage ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_in_models(killed_in_segmentation, resumed):
    k = killed_in_segmentation
    run_dir = k["run_dir"]
    config = k["root"] / "models-changed.yaml"
    config.write_text(CONFIG_MODELS_CHANGED)
    earlier = _snapshot(run_dir / rel for name in EARLIER for rel in BY_NAME[name].output_relpaths())
    log = k["root"] / "run-3.log"
    proc = _start(config, run_dir, log)
    _wait_for(lambda: _stage_state(run_dir, "models") == "running", proc, log, "models stage running")
    # into the cross-validation, the stage's long cell (which writes the predictions)
    _wait_for(lambda: _cell_started(run_dir, "05_models.ipynb", "cv = models.cross_validate("), proc, log,
              "cross-validation cell of the models stage")
    time.sleep(1.0)
    assert proc.poll() is None and _stage_state(run_dir, "models") == "running", "the models stage ended too soon"
    _kill_everything(proc)
    return {**k, "config": config, "earlier": earlier}


def test_kill_in_models_leaves_nothing_half_written(killed_in_models):
    k = killed_in_models
    run_dir = k["run_dir"]
    record, _ = check_integrity(run_dir)
    assert record["stages"]["models"]["status"] == "running"
    assert all(record["stages"][name]["status"] == "ok" for name in EARLIER)
    predictions = run_dir / "artifacts" / "predictions.parquet"
    if predictions.exists():  # from the finished run, or rewritten whole by the killed one
        pred = pd.read_parquet(predictions)
        assert {"patient_id", "fold", "model", "score"} <= set(pred.columns)
        counts = pred.groupby("model")["patient_id"].nunique()
        assert (counts == N_PATIENTS).all() and len(pred) == N_PATIENTS * len(counts)
    status = _status(k["config"], run_dir)
    assert all(status[name].startswith("up to date") for name in EARLIER), status
    assert status["models"].startswith("stale") and "did not finish" in status["models"]
    # a stage after the killed one cannot be run on its own: its input may come from an unfinished run
    out = subprocess.run([sys.executable, "-c", "import sys; from ctac_helpers.pipeline.cli import main; sys.exit(main())",
                          "run", "--config", str(k["config"]), "--run-dir", str(run_dir), "--only", "subgroups"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "'models', has not run successfully" in out.stderr, out.stderr


def test_rerun_after_kill_in_models_reruns_only_models_and_after(killed_in_models):
    k = killed_in_models
    log = _finish(k["config"], k["run_dir"], k["root"] / "run-4.log")
    ran, skipped = _ran_and_skipped(log)
    assert skipped == EARLIER
    assert ran == ["models", "subgroups", "survival", "beyond"]
    for path, (mtime, content) in k["earlier"].items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, f"{path} was rewritten"
    record, _ = check_integrity(k["run_dir"])
    assert all(record["stages"][s.name]["status"] == "ok" for s in STAGES)
    assert record["stages"]["models"]["parameters"]["n_resamples"] == 40
    assert not list((k["run_dir"] / "executed").glob(".*"))
