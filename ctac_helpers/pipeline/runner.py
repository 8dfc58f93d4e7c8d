"""Execute the stage notebooks with papermill, in dependency order, with a content-addressed cache.

A stage's cache key is the SHA-256 of

- the source notebook's bytes,
- its parameters (canonical JSON, without ``run_dir``),
- the SHA-256 of every input artifact it declares,
- the code hash: every ``*.py``/``*.yaml`` file of ``ctac_helpers/`` and every file of
  ``data_manifest/``, in sorted relative-path order,
- the keys of the stages it needs.

A stage is skipped ("up to date") when its key equals the key recorded in ``run.json`` at its last
successful run and every declared output still exists with its recorded hash. Anything else re-runs
it; a re-run whose outputs change changes the input hashes, hence the keys, of the stages downstream.

A stage is recorded as ``running`` before its notebook starts, and as ``ok`` (with its outputs'
hashes) or ``failed`` when it ends: a run killed in a stage leaves that stage ``running``, which is
never taken for finished. The outputs and executed notebook of a stage's last successful run are kept
aside (``.last_good/<stage>/``) while it re-runs and put back if the re-run fails, so a failure never
leaves the run directory with a half-rewritten stage. :func:`compare_runs` compares the output hashes
of two run directories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from ctac_helpers.core import paths
from ctac_helpers.pipeline.config import SITE_KEYS, SITE_PARAMETERS, stage_parameters, validate_config
from ctac_helpers.core.rundir import WRITE_ERRNOS, RunDir, apply_umask, file_sha256
from ctac_helpers.core.stages import STAGES, Stage, execution_order, get_stage
from ctac_helpers.cohort.validate import ValidationError, parameter_specs, stage_parameter_problems

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
MANIFEST_DIR = REPO_ROOT / "data_manifest"

#: Distributions whose versions every run records (``python`` and ``platform`` are added).
RECORDED_PACKAGES = (
    "numpy", "pandas", "scipy", "xgboost", "lifelines", "papermill", "jupyter-book", "matplotlib",
    "pyarrow", "ctac-book",
)

UP_TO_DATE, STALE, NEVER_RUN = "up to date", "stale", "never run"


class StageFailed(RuntimeError):
    """A stage notebook raised, or finished without writing its declared outputs.

    Attributes
    ----------
    stage : str
        The failed stage.
    notebook : str
        Its source notebook (file name).
    executed : pathlib.Path or None
        The executed notebook showing the error (``executed/<name>.failed.ipynb``).
    cell : int or None
        1-based index of the failing cell in the source notebook.
    ename, evalue : str or None
        Exception type and message raised in the notebook.
    results : list of StageResult
        Stages completed (run or skipped) before the failure.
    """

    def __init__(self, message: str, *, stage: str, notebook: str, executed: Path | None = None,
                 cell: int | None = None, ename: str | None = None, evalue: str | None = None,
                 results: list | None = None):
        super().__init__(message)
        self.stage = stage
        self.notebook = notebook
        self.executed = executed
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.results = list(results or [])

    @property
    def write_error(self) -> str | None:
        """The reason, when the notebook failed because it could not write (full disk, permissions), else None.

        Such a failure is the run directory's, not the notebook's: the command line reports it as one.
        """
        found = re.match(r"\[Errno (\d+)\] ([^:]+)", self.evalue or "")
        if self.ename in _OS_ERRORS and found and int(found.group(1)) in WRITE_ERRNOS:
            return found.group(2).strip()
        return None


_OS_ERRORS = {"OSError", "PermissionError", "IOError", "FileExistsError", "NotADirectoryError", "IsADirectoryError"}


@dataclass
class StageResult:
    """What :func:`run_stages` did with one stage.

    Attributes
    ----------
    name : str
        Stage name.
    status : str
        ``"ran"`` or ``"skipped"`` (up to date).
    key : str
        The stage's cache key.
    reason : str
        Why it ran (``"never run"``, ``"forced"``, ``"parameters changed: ..."``) or ``""``.
    duration_s : float
        Execution time (0 when skipped).
    executed : pathlib.Path or None
        The executed notebook.
    """

    name: str
    status: str
    key: str
    reason: str = ""
    duration_s: float = 0.0
    executed: Path | None = None


class StageState(NamedTuple):
    """One row of :func:`stage_status`: stage name, state and the reason for it."""

    stage: str
    state: str
    reason: str


@dataclass
class _Plan:
    """Everything that enters a stage's cache key, and the parameters papermill receives."""

    stage: Stage
    notebook_path: Path
    notebook_sha256: str
    parameters: dict  # recorded and hashed: no run_dir
    inputs: dict
    upstream: dict
    code_hash: str
    key: str
    passed: dict = field(default_factory=dict)  # what papermill injects (with run_dir)
    locations: dict = field(default_factory=dict)  # where each path label of ``passed`` lies


# -- hashing ------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the same content always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def code_hash(package_dir: Path = PACKAGE_DIR, manifest_dir: Path = MANIFEST_DIR) -> str:
    """SHA-256 over the package's ``*.py``/``*.yaml`` files and all files of ``data_manifest/``.

    Files are taken in sorted order of their path relative to the repository root; each contributes
    its relative path and its content hash, so renames count as changes.
    """
    entries: list[tuple[str, Path]] = []
    for pattern in ("*.py", "*.yaml"):
        for path in package_dir.rglob(pattern):
            if "__pycache__" not in path.parts and path.is_file():
                entries.append((f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}", path))
    if manifest_dir.is_dir():
        for path in manifest_dir.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                entries.append((f"{manifest_dir.name}/{path.relative_to(manifest_dir).as_posix()}", path))
    h = hashlib.sha256()
    for rel, path in sorted(entries):
        h.update(rel.encode("utf-8") + b"\0" + file_sha256(path).encode("ascii") + b"\n")
    return h.hexdigest()


def package_versions() -> dict:
    """Versions of Python, the platform and the key distributions (``None`` when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in RECORDED_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _artifact_path(root: Path, name: str) -> Path:
    return root / "artifacts" / f"{name}.parquet"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- planning -----------------------------------------------------------------------------------
def _notebook_path(stage: Stage, notebooks_dir: Path) -> Path:
    path = Path(notebooks_dir) / stage.notebook
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage.name!r}: notebook not found: {path}")
    return path


def notebook_parameters(config: Mapping, stage: Stage, notebook_path: Path) -> dict:
    """The parameters to pass to ``stage``'s notebook (without ``run_dir``).

    Global parameters (``seed``) are passed only when the notebook declares them; a stage-specific
    parameter the notebook does not declare is an error.

    Raises
    ------
    ValueError
        The configuration sets a parameter missing from the notebook's ``parameters`` cell.
    ValidationError
        A parameter's value has not the type or lies outside the range the cell declares (every such
        parameter listed).
    """
    return _select_parameters(config, stage, declared_parameters(notebook_path), notebook_path.name)


def declared_parameters(notebook_path: Path) -> dict:
    """The parameters a notebook's ``parameters`` cell declares (papermill's inspection)."""
    import papermill  # deferred: importing papermill is slow and only needed here

    return papermill.inspect_notebook(str(notebook_path))


def _select_parameters(config: Mapping, stage: Stage, declared: Mapping, notebook_name: str) -> dict:
    own = dict(config.get("stages", {}).get(stage.name) or {})
    unknown = sorted(p for p in own if p not in declared)
    if unknown:
        allowed = sorted(p for p in declared if p != "run_dir")
        raise ValueError(
            f"stage {stage.name!r}: parameter {unknown[0]!r} is not declared in the parameters cell of "
            f"{notebook_name}; allowed: {', '.join(allowed) if allowed else '(none)'}"
        )
    problems = stage_parameter_problems(stage.name, own, parameter_specs(declared, notebook_name))
    if problems:
        raise ValidationError(problems, what=f"the parameters of stage {stage.name!r}")
    return {k: v for k, v in stage_parameters(config, stage).items() if k in declared and k != "run_dir"}


SITE_FILE_PARAMETERS = tuple(SITE_PARAMETERS[k] for k in SITE_KEYS)


def _plan(config: Mapping, stage: Stage, root: Path, notebooks_dir: Path, code: str,
          upstream_keys: Mapping[str, str]) -> _Plan:
    nb_path = _notebook_path(stage, notebooks_dir)
    declared = declared_parameters(nb_path)
    params = _select_parameters(config, stage, declared, nb_path.name)
    inputs = {}
    for name in stage.inputs:
        path = _artifact_path(root, name)
        inputs[name] = file_sha256(path) if path.is_file() else None
    # A site's own files are inputs too: editing the cohort table re-runs the stages that read it.
    # (The key file's hash reveals nothing of a random key, and a new key means new pseudonyms.)
    for param in SITE_FILE_PARAMETERS:
        if param in params and params[param] and Path(params[param]).is_file():
            inputs[f"{param}:{Path(params[param]).name}"] = file_sha256(Path(params[param]))
    upstream = {dep: upstream_keys.get(dep) for dep in stage.needs}
    nb_sha = file_sha256(nb_path)
    # Recorded, hashed and passed with labels instead of absolute paths (a site's files relative to
    # its folder, the run directory as runs/<name>): nothing of the machine's folders is published, and
    # a moved site folder or run directory is still up to date. The notebook resolves the labels.
    passed, locations = paths.publish_parameters(params, SITE_FILE_PARAMETERS,
                                                 root if "run_dir" in declared else None,
                                                 paths.site_folder(config.get("site") or {}))
    params = {k: v for k, v in passed.items() if k != "run_dir"}
    key = hashlib.sha256(canonical_json({
        "notebook": nb_sha, "parameters": params, "inputs": inputs, "code": code, "upstream": upstream,
    }).encode("ascii")).hexdigest()
    return _Plan(stage, nb_path, nb_sha, params, inputs, upstream, code, key, passed, locations)


def _describe_change(old: Any, new: Any) -> str:
    """What changed between two recorded parameter sets (``n 3 -> 5``).

    The record holds only the parameters the configuration sets: one it does not set runs with the
    notebook's own default, which the record does not know, so it is named as that, never as ``None``.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changed = sorted(k for k in set(old) | set(new) if k not in old or k not in new or old[k] != new[k])
        default = "the notebook's default"
        return ", ".join(f"{k} {repr(old[k]) if k in old else default} -> {repr(new[k]) if k in new else default}"
                         for k in changed)
    return f"{old!r} -> {new!r}"


def _freshness(plan: _Plan, rec: Mapping | None, root: Path) -> tuple[str, str]:
    """State of a planned stage against its run.json record: (state, reason)."""
    if not rec:
        return NEVER_RUN, "no record in run.json"
    if rec.get("status") == "running":
        return STALE, "last run did not finish (interrupted, or still running)"
    if rec.get("status") != "ok":
        err = rec.get("error") or {}
        detail = f": {err.get('ename')}: {err.get('evalue')}" if err.get("ename") else ""
        return STALE, f"last run failed{detail}"
    if rec.get("key") != plan.key:
        if rec.get("notebook_sha256") != plan.notebook_sha256:
            return STALE, f"notebook {plan.stage.notebook} changed"
        if rec.get("parameters") != plan.parameters:
            return STALE, f"parameters changed: {_describe_change(rec.get('parameters'), plan.parameters)}"
        for name, sha in plan.inputs.items():
            if (rec.get("inputs") or {}).get(name) != sha:
                return STALE, f"input artifact {name!r} {'missing' if sha is None else 'changed'}"
        if rec.get("code_hash") != plan.code_hash:
            return STALE, "code in ctac_helpers/ or data_manifest/ changed"
        for dep, key in plan.upstream.items():
            if (rec.get("upstream") or {}).get(dep) != key:
                return STALE, f"upstream stage {dep!r} changed"
        return STALE, "cache key changed"
    recorded = rec.get("outputs") or {}
    for rel in plan.stage.output_relpaths():
        path = root / rel
        if not path.is_file():
            return STALE, f"output {rel} missing"
        if rel not in recorded:
            return STALE, f"output {rel} not recorded"
        if file_sha256(path) != recorded[rel]:
            return STALE, f"output {rel} modified since the last run"
    if not (root / "executed" / Path(plan.stage.notebook).name).is_file():
        return STALE, "executed notebook missing"
    return UP_TO_DATE, ""


# -- the last good run of a stage ---------------------------------------------------------------
#: Where a stage's last successful outputs and executed notebook wait while it re-runs.
LAST_GOOD_DIR = ".last_good"
_LAST_GOOD_FIELDS = ("key", "started", "finished", "outputs")


def _good_copy(root: Path, keep: Path, rel: str, sha: str) -> Path | None:
    """Where the last good run's output ``rel`` is (set aside, or still in place), or None if changed."""
    for path in (root / rel, keep / rel):
        if path.is_file() and file_sha256(path) == sha:
            return path
    return None


def _set_aside_last_good(root: Path, stage: Stage, prev: Mapping | None, final: Path) -> dict | None:
    """Keep the outputs and executed notebook of ``stage``'s last successful run aside while it re-runs.

    They are moved (a rename: no copy) into ``.last_good/<stage>/``; what a re-run that was killed
    set aside stays there. Returns the last good run's record (key, times, output hashes), or None
    when there is none, or when one of its outputs was changed or removed since (nothing to keep).
    """
    prev = prev or {}
    good = prev if prev.get("status") == "ok" else prev.get("last_good")
    keep = root / LAST_GOOD_DIR / stage.name
    outputs = (good or {}).get("outputs") or {}
    found = {rel: _good_copy(root, keep, rel, sha) for rel, sha in outputs.items()}
    if not outputs or None in found.values():
        shutil.rmtree(keep, ignore_errors=True)
        final.unlink(missing_ok=True)
        return None
    if all(path == root / rel for rel, path in found.items()):
        shutil.rmtree(keep, ignore_errors=True)  # nothing of this run set aside yet: what is there is older
    for rel, path in found.items():
        if path != keep / rel:
            (keep / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, keep / rel)
    kept_nb = keep / "executed" / final.name
    if final.is_file():
        if kept_nb.is_file():  # the kept one is the good one; this one is of a run that did not finish
            final.unlink()
        else:
            kept_nb.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, kept_nb)
    return {k: good[k] for k in _LAST_GOOD_FIELDS if k in good}


def _restore_last_good(root: Path, stage: Stage, good: Mapping, final: Path) -> None:
    """Put the outputs and executed notebook set aside by :func:`_set_aside_last_good` back in place."""
    keep = root / LAST_GOOD_DIR / stage.name
    kept_nb = keep / "executed" / final.name
    if kept_nb.is_file():  # first: a restore cut short after it leaves outputs aside, which are found again
        os.replace(kept_nb, final)
    for rel in good["outputs"]:
        if (keep / rel).is_file():  # else already put back by a restore that was interrupted
            os.replace(keep / rel, root / rel)
    _drop_last_good(root, stage)


def _drop_last_good(root: Path, stage: Stage) -> None:
    shutil.rmtree(root / LAST_GOOD_DIR / stage.name, ignore_errors=True)
    with_parent = root / LAST_GOOD_DIR
    if with_parent.is_dir() and not any(with_parent.iterdir()):
        with_parent.rmdir()


# -- execution ----------------------------------------------------------------------------------
def kernel_logging_to_terminal(level: int, prefix: str = "") -> None:
    """Send a stage kernel's log records to the terminal that runs it, not into the notebook.

    Run in the kernel at its start (:func:`kernel_arguments`). Records of ``ctac_helpers`` at ``level`` and
    above, and other libraries' warnings, go to the kernel process's own standard error, which is the
    terminal of ``ctac-book run``; a rendered page shows none of them.

    Parameters
    ----------
    level : int
        The ``logging`` level of the package's records (that of ``ctac-book run``: INFO, WARNING with
        ``-q``, DEBUG with ``-v``).
    prefix : str
        Put before each record (the stage's name), so that the terminal says where it comes from.
    """
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("ctac_helpers").setLevel(level)


def kernel_arguments(stage: str, level: int) -> list[str]:
    """The command-line options of a stage's kernel (IPython's ``IPKernelApp``).

    * ``log_level=ERROR``: ipykernel warns on every start about its local TCP transport; real errors stay;
    * ``capture_fd_output=False``: what is written to the process's standard error below Python's
      ``sys.stderr`` (progress bars, which :func:`ctac_helpers.pipeline.batch.run_batch` writes to
      ``sys.__stderr__``, C libraries, worker processes) goes to the terminal, not into the notebook;
    * ``exec_lines``: :func:`kernel_logging_to_terminal` at ``level``, before the first cell.
    """
    setup = (f"__import__('ctac_helpers.pipeline.runner', fromlist=['runner'])"
             f".kernel_logging_to_terminal({int(level)}, {f'[{stage}] '!r})")
    return ["--IPKernelApp.log_level=ERROR", "--IPKernelApp.capture_fd_output=False",
            f"--IPKernelApp.exec_lines={setup}"]


def _failing_cell(exc: Any, source_nb: Path) -> tuple[int | None, str]:
    """1-based index of the failing cell in the *source* notebook, and its first line.

    papermill's ``cell_index`` counts the injected-parameters cell; matching the cell's source
    gives the number the author sees in their editor.
    """
    import nbformat

    src = (getattr(exc, "source", "") or "").strip()
    first = next((line.strip() for line in src.splitlines() if line.strip()), "")
    try:
        nb = nbformat.read(str(source_nb), as_version=4)
        for i, cell in enumerate(nb.cells, start=1):
            if cell.cell_type == "code" and cell.source.strip() == src:
                return i, first
    except Exception:  # the message must still come out if the notebook cannot be re-read
        logger.debug("could not re-read %s to locate the failing cell", source_nb, exc_info=True)
    index = getattr(exc, "cell_index", None)
    return (index + 1 if isinstance(index, int) else None), first


def _record_base(plan: _Plan, started: str, t0: float) -> dict:
    return {
        "key": plan.key,
        "notebook": plan.stage.notebook,
        "notebook_sha256": plan.notebook_sha256,
        "parameters": plan.parameters,
        "inputs": plan.inputs,
        "upstream": plan.upstream,
        "code_hash": plan.code_hash,
        "started": started,
        "finished": _now(),
        "duration_s": round(time.perf_counter() - t0, 3),
    }


def _execute(plan: _Plan, rd: RunDir, record: dict, kernel_name: str, results: list) -> tuple[Path, float]:
    """Run one stage notebook; on failure record it, keep the failed notebook and raise StageFailed."""
    import papermill

    stage = plan.stage
    executed_dir = rd.root / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    nb_name = Path(stage.notebook).name
    final = executed_dir / nb_name
    failed = executed_dir / f"{Path(nb_name).stem}.failed.ipynb"
    # papermill saves after every cell: write to a temporary file so a half-run notebook never
    # takes the place of a complete one. A run killed during this stage left its own behind: drop it.
    for stale in executed_dir.glob(f".{nb_name}.*.tmp.ipynb"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{nb_name}.", suffix=".tmp.ipynb", dir=executed_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    started, t0 = _now(), time.perf_counter()
    good = _set_aside_last_good(rd.root, stage, record["stages"].get(stage.name), final)
    # Recorded before the notebook starts: a run killed during this stage leaves it "running", never
    # "ok" with the hashes of outputs it may have partly rewritten, so neither the next run, `status`
    # nor `--only` of a stage downstream takes it for finished. The last good run is named so that
    # the next run finds what it set aside.
    record["stages"][stage.name] = {**_record_base(plan, started, t0), "status": "running", "finished": None,
                                    "duration_s": None, "executed": None, "outputs": {},
                                    **({"last_good": good} if good else {})}
    rd.write_run_json(record)
    error: dict | None = None
    message = ""
    cell = None
    try:
        try:
            with paths.locations_env(plan.locations):
                papermill.execute_notebook(
                    str(plan.notebook_path), str(tmp), parameters=plan.passed, kernel_name=kernel_name,
                    progress_bar=False, log_output=False, cwd=str(plan.notebook_path.parent),
                    # the kernel's progress and log records go to this terminal, not into the notebook
                    extra_arguments=kernel_arguments(stage.name,
                                                     logging.getLogger("ctac_helpers").getEffectiveLevel()),
                )
        except papermill.PapermillExecutionError as exc:
            cell, first_line = _failing_cell(exc, plan.notebook_path)
            error = {"cell": cell, "exec_count": exc.exec_count, "ename": exc.ename, "evalue": exc.evalue}
            where = f"cell {cell}" if cell is not None else "a cell"
            if exc.exec_count is not None:
                where += f" (In [{exc.exec_count}]"
                where += f": {first_line[:80]})" if first_line else ")"
            message = (f"stage {stage.name!r} failed in notebook {nb_name}, {where}: "
                       f"{exc.ename}: {exc.evalue}")
        except Exception as exc:  # dead kernel, timeout, unreadable notebook: still a failed stage
            error = {"cell": None, "exec_count": None, "ename": type(exc).__name__, "evalue": str(exc)}
            message = f"stage {stage.name!r} failed in notebook {nb_name}: {type(exc).__name__}: {exc}"
        if error is None:
            missing = [rel for rel in stage.output_relpaths() if not (rd.root / rel).is_file()]
            if missing:
                error = {"cell": None, "exec_count": None, "ename": "MissingOutputs",
                         "evalue": f"declared outputs not written: {', '.join(missing)}"}
                message = (f"stage {stage.name!r}: notebook {nb_name} finished but did not write its "
                           f"declared outputs: {', '.join(missing)}")
        rec = _record_base(plan, started, t0)
        if error is not None:
            # run.json and the failed notebook name the run directory, the project and a site's files by
            # their published names, as a successful run does (the terminal's message keeps the real paths)
            folders = {rd.root.resolve(): paths.run_label(rd.root), plan.notebook_path.parent.parent.resolve(): ".",
                       **{location: label for label, location in plan.locations.items()}}
            error = {k: paths.redact_folders(v, folders) if isinstance(v, str) else v for k, v in error.items()}
            failed.unlink(missing_ok=True)
            if tmp.is_file() and tmp.stat().st_size > 0:
                try:
                    paths.tidy_executed_notebook(tmp, nb_name, plan.passed)
                except Exception:  # noqa: BLE001 - a notebook papermill could not finish writing: keep it as it is
                    logger.debug("the failed notebook of %s could not be tidied", stage.name, exc_info=True)
                tmp.write_text(paths.redact_folders(tmp.read_text(encoding="utf-8"), folders), encoding="utf-8")
                apply_umask(tmp)
                os.replace(tmp, failed)
            if good:
                # the last good run's outputs and notebook take back the place of the failed run's
                _restore_last_good(rd.root, stage, good, final)
            rec.update(status="failed", executed=f"executed/{failed.name}", outputs={}, error=error,
                       **({"last_good": good} if good else {}))
            record["stages"][stage.name] = rec
            rd.write_run_json(record)
            if failed.is_file():
                message += f"\nexecuted notebook with the error: {failed}"
            if good:
                message += "\nthe outputs and executed notebook of its last successful run are kept"
            raise StageFailed(
                message,
                stage=stage.name, notebook=nb_name, executed=failed if failed.is_file() else None, cell=cell,
                ename=error["ename"], evalue=error["evalue"], results=results,
            )
        paths.tidy_executed_notebook(tmp, nb_name, plan.passed)
        apply_umask(tmp)
        os.replace(tmp, final)
        failed.unlink(missing_ok=True)
        rec.update(
            status="ok",
            executed=f"executed/{nb_name}",
            outputs={rel: file_sha256(rd.root / rel) for rel in stage.output_relpaths()},
        )
        record["stages"][stage.name] = rec
        rd.write_run_json(record)
        _drop_last_good(rd.root, stage)
        return final, rec["duration_s"]
    finally:
        tmp.unlink(missing_ok=True)


def _check_registry(config: Mapping, stages: tuple[Stage, ...]) -> list[Stage]:
    validate_config(config, "configuration", stages)
    return execution_order(stages)


def run_stages(
    config: Mapping,
    run_dir: str | os.PathLike,
    force: Iterable[str] = (),
    only: str | None = None,
    stages: tuple[Stage, ...] = STAGES,
    notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
    kernel_name: str = "python3",
) -> list[StageResult]:
    """Execute the stages that are not up to date, in dependency order.

    Parameters
    ----------
    config : mapping
        A configuration from :func:`ctac_helpers.pipeline.config.load_config`.
    run_dir : path-like
        The run directory (created when missing).
    force : iterable of str
        Stages to re-run even when up to date. Stages downstream re-run if their key changes.
    only : str, optional
        Consider only this stage; the stages it needs must already have run successfully.
    stages : tuple of Stage
        The stage registry.
    notebooks_dir : path-like
        Folder holding the stage notebooks.
    kernel_name : str
        Jupyter kernel to execute with.

    Returns
    -------
    list of StageResult
        One per considered stage, in execution order.

    Raises
    ------
    ValueError
        Unknown stage in ``force``/``only``, invalid configuration, a parameter that a notebook
        does not declare, or one of the wrong type or out of its declared range (checked for every
        stage before anything is written).
    FileNotFoundError
        A stage notebook is missing.
    StageFailed
        A notebook raised or did not write its declared outputs; later stages are not run.
    """
    order = _check_registry(config, stages)
    force = tuple(force)
    for name in force:
        get_stage(name, stages)
    if only is not None:
        get_stage(only, stages)
    notebooks_dir = Path(notebooks_dir)
    selected = [s for s in order if only is None or s.name == only]
    # Inspect every notebook up front so that a typo or a wrongly typed value in the configuration
    # fails before any (possibly long) stage has run, and before the run directory is created.
    for stage in selected:
        notebook_parameters(config, stage, _notebook_path(stage, notebooks_dir))
    rd = RunDir(run_dir)
    root = rd.root.resolve()

    code = code_hash()
    record = rd.read_run_json()
    record["parameters"] = json.loads(canonical_json(paths.public_config(config)))
    record["packages"] = package_versions()
    record["code_hash"] = code
    record.setdefault("stages", {})

    keys: dict[str, str] = {}
    if only is not None:
        for dep in get_stage(only, stages).needs:
            rec = record["stages"].get(dep) or {}
            if rec.get("status") != "ok":
                raise ValueError(
                    f"--only {only}: the stage it needs, {dep!r}, has not run successfully in {root}; "
                    "run without --only first"
                )
            keys[dep] = rec["key"]
    rd.write_run_json(record)

    results: list[StageResult] = []
    total = len(selected)
    for i, stage in enumerate(selected, start=1):
        plan = _plan(config, stage, root, notebooks_dir, code, keys)
        keys[stage.name] = plan.key
        state, reason = _freshness(plan, record["stages"].get(stage.name), root)
        prefix = f"[{i}/{total}] {stage.name}"
        if state == UP_TO_DATE and stage.name not in force:
            logger.info("%s: up to date, skipped", prefix)
            results.append(StageResult(stage.name, "skipped", plan.key,
                                       executed=root / "executed" / Path(stage.notebook).name))
            continue
        why = "forced" if stage.name in force else (reason if state == STALE else state)
        logger.info("%s: running %s (%s) ...", prefix, stage.notebook, why)
        executed, duration = _execute(plan, rd, record, kernel_name, results)
        logger.info("%s: done in %.1f s", prefix, duration)
        results.append(StageResult(stage.name, "ran", plan.key, why, duration, executed))
    return results


def stage_status(
    config: Mapping,
    run_dir: str | os.PathLike,
    stages: tuple[Stage, ...] = STAGES,
    notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
) -> list[StageState]:
    """Whether each stage is up to date in ``run_dir``, without running anything.

    Returns
    -------
    list of StageState
        ``(stage, state, reason)`` in execution order; ``state`` is ``"up to date"``, ``"stale"``
        or ``"never run"``. A stage is stale when anything in its cache key changed (the reason
        names the first difference found), an output is missing or modified, or its last run failed.
    """
    order = _check_registry(config, stages)
    root = Path(run_dir).resolve()
    run_json = root / "run.json"
    record = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    code = code_hash()
    keys: dict[str, str] = {}
    out: list[StageState] = []
    for stage in order:
        plan = _plan(config, stage, root, Path(notebooks_dir), code, keys)
        keys[stage.name] = plan.key
        state, reason = _freshness(plan, (record.get("stages") or {}).get(stage.name), root)
        out.append(StageState(stage.name, state, reason))
    return out


# -- comparing runs -----------------------------------------------------------------------------
COMPARE_COLUMNS = ["stage", "path", "sha_a", "sha_b", "same"]


def read_run_record(run_dir: str | os.PathLike) -> dict:
    """The ``run.json`` record of a run directory.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` has no ``run.json`` (not a run directory, or nothing has run in it).
    ValueError
        ``run.json`` is not valid JSON.
    """
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"no run.json in {run_dir}: not a run directory (run `ctac-book run` first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike,
                 stages: tuple[Stage, ...] = STAGES) -> pd.DataFrame:
    """Compare the output hashes recorded in the ``run.json`` of two run directories.

    A reviewer's tool: two runs of the same configuration (same inputs, same seed) must give the same
    bytes for every output. Only the records are read, not the files: a file modified after its run
    is reported by ``ctac-book status`` instead.

    Parameters
    ----------
    run_a, run_b : path-like
        Run directories (each with a ``run.json``).
    stages : tuple of Stage
        The stage registry: it orders the rows, and a stage recorded in one run only, or whose last
        run did not succeed, still gets a row per declared output (with a missing hash).

    Returns
    -------
    pandas.DataFrame
        One row per recorded output: ``stage``, ``path`` (relative to the run directory), ``sha_a``,
        ``sha_b`` (SHA-256 from each ``run.json``; None where that run has no successful record of it)
        and ``same`` (both present and equal). Stages in registry order, paths sorted.
    """
    import pandas as pd

    recs = [read_run_record(run_a).get("stages") or {}, read_run_record(run_b).get("stages") or {}]
    known = [s.name for s in stages]
    names = [n for n in known if any(n in r for r in recs)]
    names += sorted({n for r in recs for n in r} - set(known))
    declared = {s.name: s.output_relpaths() for s in stages}
    rows = []
    for name in names:
        outs = []
        for rec in recs:
            stage_rec = rec.get(name) or {}
            outs.append(dict(stage_rec.get("outputs") or {}) if stage_rec.get("status") == "ok" else {})
        for path in sorted(set(outs[0]) | set(outs[1]) | set(declared.get(name, ()))):
            sha_a, sha_b = outs[0].get(path), outs[1].get(path)
            rows.append({"stage": name, "path": path, "sha_a": sha_a, "sha_b": sha_b,
                         "same": sha_a is not None and sha_a == sha_b})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS).astype({"same": bool})
