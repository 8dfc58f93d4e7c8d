"""Where the models' fits run: in this process, in local worker processes, or on a Dask cluster.

The book's cross-validation (:func:`ctac_helpers.models.cv.cross_validate`) and the stability repeats
(:func:`ctac_helpers.models.stability.fixed_cv`) split their work into independent tasks, each one call
of a task function with keyword arguments. Every task is seeded and runs a fixed number of threads, so
it gives the same result wherever it runs; :func:`run_tasks` only decides where, and hands the results
back as they finish (the callers put them back in their own order).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

__all__ = ["in_other_processes", "run_tasks", "worker_count"]


def worker_count(n_jobs: int, device: str) -> int:
    """Worker processes for ``n_jobs`` (-1: one per core); 1 on a GPU, where the fits run in turn."""
    return 1 if device == "cuda" else (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def in_other_processes(n_workers: int, n_tasks: int, scheduler: str | None = None) -> bool:
    """Whether :func:`run_tasks` runs the tasks outside this process (so their CPU time is not this process's)."""
    return bool(scheduler) or (n_workers > 1 and n_tasks > 1)


def run_tasks(func: Callable[..., dict], tasks: Sequence[dict], n_workers: int = 1,
              scheduler: str | None = None, scatter: str | None = "X") -> Iterator[dict]:
    """Run ``func(**task)`` for every task; the results in the order the tasks finish.

    Parameters
    ----------
    func : callable
        The task function, importable by the worker processes (a module-level function).
    tasks : sequence of dict
        The keyword arguments of each call.
    n_workers : int
        Local worker processes (joblib, loky). With 1, or a single task, the tasks run in this process,
        one after the other, in the order given.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``): the tasks run on its workers
        instead (``n_workers`` is then ignored).
    scatter : str, optional
        On Dask, the keyword whose value (a large array that many tasks share, such as a model's
        feature matrix) is sent to the cluster once per distinct object rather than once per task.

    Returns
    -------
    iterator of dict
        ``func``'s results, each as soon as its task finishes.
    """
    if scheduler:
        return iter(_on_dask(func, tasks, scheduler, scatter))
    if in_other_processes(n_workers, len(tasks)):
        from joblib import Parallel, delayed

        # Unordered, so that the caller can log each task as it finishes.
        return Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")(
            delayed(func)(**kw) for kw in tasks)
    return (func(**kw) for kw in tasks)


def _on_dask(func: Callable[..., dict], tasks: Sequence[dict], scheduler: str, scatter: str | None) -> list[dict]:
    """Run the tasks on an existing Dask cluster; results in completion order."""
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        sent: dict[int, object] = {}
        futures = []
        for kw in tasks:
            kw = dict(kw)
            if scatter is not None and scatter in kw:
                key = id(kw[scatter])  # the tasks hold the caller's objects, alive for the whole call
                if key not in sent:
                    sent[key] = client.scatter(kw[scatter])
                kw[scatter] = sent[key]
            futures.append(client.submit(func, pure=False, **kw))
        return [f.result() for f in as_completed(futures)]
