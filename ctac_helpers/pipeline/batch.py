"""Resumable per-scan batches on Dask: each scan is an independent task, each result its own file.

The imaging stages run one function per scan (ingest, segment, measure). :func:`run_batch` sends
them to a Dask cluster, a ``LocalCluster`` by default or an existing scheduler given by address, and
writes every scan's result atomically to ``<work_dir>/<scan_id>.json`` as soon as it arrives. So:

* an interrupted run (a crash, SIGKILL, a lost node) loses only the scans in flight; the next run
  reads the finished results back and submits only the rest;
* a result is reused only if it was made with the same batch ``key`` (the caller hashes the
  stage's code, parameters and the scan's inputs into it), so changed inputs are recomputed;
* a scan that fails (corrupt file, missing structure, wrong geometry) is written to
  ``<scan_id>.failed.json`` with its reason and the others go on; failures are retried next run;
* a result's paths inside the run directory (``<run>/work/<stage>`` is the work folder) are stored
  relative to it, and failure reasons name them so: the files name no folder of the machine.

Workers must see the same file system as the client (the usual set-up on an HPC cluster, where the
run directory sits on a shared disk).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ctac_helpers.core.rundir import atomic_write_json

logger = logging.getLogger(__name__)

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass
class BatchResult:
    """What a batch produced.

    Attributes
    ----------
    results : list of dict
        One record per successful scan, in the order of the input items.
    failures : pandas.DataFrame
        ``scan_id``, ``error`` (exception type) and ``reason`` of every failed scan.
    n_cached : int
        Scans whose result was read back from an earlier run instead of being recomputed.
    n_computed : int
        Scans computed in this run (successes and failures).
    """

    results: list[dict]
    failures: pd.DataFrame
    n_cached: int = 0
    n_computed: int = 0
    timings: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """The successful results as a DataFrame (one row per scan)."""
        return pd.DataFrame.from_records(self.results)


def _check_scan_id(scan_id: str) -> str:
    # scan ids become file names: refuse anything that could escape the work folder
    if not scan_id or not set(scan_id) <= _SAFE or scan_id.startswith("."):
        raise ValueError(f"scan id {scan_id!r} cannot be used as a file name: use letters, digits, '-', '_' or '.'")
    return scan_id


def _result_path(work_dir: Path, scan_id: str) -> Path:
    return work_dir / f"{scan_id}.json"


def _failure_path(work_dir: Path, scan_id: str) -> Path:
    return work_dir / f"{scan_id}.failed.json"


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None  # JSON has no NaN; None reads back as NaN in pandas
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _call(task: Callable[[dict], dict], item: dict) -> tuple[str, dict]:
    """Run one scan's task, turning an exception into a failure record (runs on a worker)."""
    try:
        return "ok", task(item)
    except Exception as exc:  # noqa: BLE001 - one bad scan must not stop the batch
        tb = traceback.format_exception_only(type(exc), exc)
        return "failed", {"error": type(exc).__name__, "reason": "".join(tb).strip().splitlines()[-1]}


def _run_root(work_dir: Path) -> Path | None:
    """The run directory of a ``<run>/work/<stage>`` folder (:meth:`RunDir.work_dir`), else None."""
    work_dir = work_dir.resolve()
    return work_dir.parent.parent if work_dir.parent.name == "work" else None


def _relative(result: dict, root: Path | None) -> tuple[dict, list[str]]:
    """``result`` with its absolute paths inside ``root`` made relative to it, and the keys changed."""
    if root is None:
        return result, []
    out, changed = dict(result), []
    for k, v in result.items():
        if isinstance(v, str) and os.path.isabs(v) and Path(v).resolve().is_relative_to(root):
            out[k] = Path(v).resolve().relative_to(root).as_posix()
            changed.append(k)
    return out, changed


def _strip_root(text: str, root: Path | None) -> str:
    """A failure reason naming paths inside the run directory relative to it."""
    return text.replace(f"{root}{os.sep}", "") if root is not None else text


def _read_cached(path: Path, key: str, root: Path | None = None) -> dict | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable means not finished: recompute
    if payload.get("key") != key:
        return None
    result = payload.get("result")
    relative = payload.get("relative") or []
    if relative and (root is None or not isinstance(result, dict)):
        return None
    for k in relative:
        result[k] = str(root / result[k])
    return result


def run_batch(task: Callable[[dict], dict], items: Iterable[Mapping], work_dir: str | os.PathLike, key: str,
              scheduler: str | None = None, n_workers: int | None = None, progress: bool = True,
              desc: str = "scans", root: str | os.PathLike | None = None) -> BatchResult:
    """Run ``task(item)`` for every scan, resumably, on Dask or in-process.

    Parameters
    ----------
    task : callable
        A picklable function of one item (a dict with at least ``scan_id``) returning a dict of
        JSON-serialisable values. It may raise: the scan is then recorded as failed.
    items : iterable of mapping
        The scans, e.g. ``manifest.to_dict('records')``.
    work_dir : path-like
        Folder for the per-scan result files (created when missing).
    key : str
        Identity of the computation (code, parameters); combined with each item's content to
        decide whether a stored result can be reused.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``). When None, a LocalCluster of
        ``n_workers`` single-threaded processes is started, or, with ``n_workers`` 0 or 1, the scans
        run in this process (no cluster start-up cost; the same results).
    n_workers : int, optional
        Local worker processes; default: the number of CPUs.
    progress : bool
        Show a progress bar with done / failed / remaining counts on the process's standard error
        (``sys.__stderr__``) when that is a terminal. In a stage's kernel it is the terminal of
        ``ctac-book run`` (:func:`ctac_helpers.pipeline.runner.kernel_arguments`), never the notebook.
    desc : str
        Label of the progress bar and of the log lines.
    root : path-like, optional
        The run directory: string values of a result that are paths inside it are stored relative
        to it (and read back absolute), and failure reasons name such paths relative to it. Default:
        the run directory of a ``<run>/work/<stage>`` work folder.

    Returns
    -------
    BatchResult
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(root).resolve() if root is not None else _run_root(work_dir)
    items = [dict(it) for it in items]
    ids = [_check_scan_id(str(it["scan_id"])) for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate scan ids in the batch: {', '.join(dup[:10])}")
    item_keys = {sid: _item_key(key, it) for sid, it in zip(ids, items)}
    done: dict[str, dict] = {}
    for sid in ids:
        cached = _read_cached(_result_path(work_dir, sid), item_keys[sid], root)
        if cached is not None:
            done[sid] = cached
    todo = [(sid, it) for sid, it in zip(ids, items) if sid not in done]
    n_cached = len(done)
    failures: dict[str, dict] = {}
    # sys.__stderr__, not sys.stderr: in a Jupyter kernel sys.stderr writes into the notebook, which the
    # book renders. disable=None: no bar when that stream is not a terminal (a log file, a pipe).
    bar = tqdm(total=len(ids), initial=n_cached, desc=desc, disable=None if progress else True,
               file=sys.__stderr__ or sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def record(sid: str, status: str, payload: dict) -> None:
        if status == "ok":
            stored, relative = _relative(_jsonable(payload), root)
            atomic_write_json(_result_path(work_dir, sid), {"key": item_keys[sid], "result": stored,
                                                            **({"relative": relative} if relative else {})})
            with contextlib.suppress(FileNotFoundError):
                _failure_path(work_dir, sid).unlink()
            # read back through JSON, keys sorted as in the stored file, so fresh and resumed results
            # are the same objects in the same order (the scan table's columns follow it)
            done[sid] = json.loads(json.dumps(_jsonable(payload), sort_keys=True))
        else:
            payload = {**payload, "reason": _strip_root(str(payload.get("reason", "")), root)}
            atomic_write_json(_failure_path(work_dir, sid), {"key": item_keys[sid], "scan_id": sid, **payload})
            failures[sid] = payload
            logger.warning("%s: scan %s failed: %s", desc, sid, payload["reason"])
        bar.update(1)
        bar.set_postfix(done=len(done), failed=len(failures), remaining=len(ids) - len(done) - len(failures))

    try:
        if todo:
            _execute(task, todo, record, scheduler, n_workers)
    finally:
        bar.close()
    logger.info("%s: %d done (%d reused from an earlier run), %d failed", desc, len(done), n_cached, len(failures))
    fail_df = pd.DataFrame([{"scan_id": sid, **failures[sid]} for sid in ids if sid in failures],
                           columns=["scan_id", "error", "reason"])
    return BatchResult(results=[done[sid] for sid in ids if sid in done], failures=fail_df,
                       n_cached=n_cached, n_computed=len(todo))


def _item_key(key: str, item: Mapping) -> str:
    import hashlib

    blob = json.dumps(_jsonable(item), sort_keys=True, default=str)
    return hashlib.sha256(f"{key}\n{blob}".encode()).hexdigest()


def _execute(task, todo, record, scheduler, n_workers) -> None:
    if scheduler is None and n_workers is not None and n_workers <= 1:
        for sid, it in todo:
            record(sid, *_call(task, it))
        return
    from dask.distributed import Client, as_completed

    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(local_cluster(n_workers))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        futures = {client.submit(_call, task, it, key=f"scan-{sid}-{_item_key('', it)[:12]}", pure=False): sid
                   for sid, it in todo}
        for fut in as_completed(futures):
            sid = futures[fut]
            try:
                status, payload = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died with this scan: record it, go on
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                status, payload = "failed", {"error": type(exc).__name__, "reason": reason}
            record(sid, status, payload)


def local_cluster(n_workers: int | None = None):
    """A Dask ``LocalCluster`` as :func:`run_batch` starts one: ``n_workers`` single-threaded processes.

    A chapter that runs several batches can start one and pass its ``scheduler_address`` to each
    (``run_batch(..., scheduler=cluster.scheduler_address)``): the worker processes then start, import
    the package and load their segmentation model once for the chapter instead of once per batch.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes, one thread each; None or 0: one per CPU.

    Returns
    -------
    dask.distributed.LocalCluster
        Started, without a dashboard. Close it (``cluster.close()``) when the chapter is done.
    """
    from dask.distributed import LocalCluster

    n = n_workers or os.cpu_count() or 1
    # one thread per process: the per-scan work is numpy/torch code that releases the GIL
    # only in parts, and each process loads its own segmentation model once
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
