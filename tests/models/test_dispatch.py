"""Tests of ctac_helpers.models.dispatch: the same results in this process, in worker processes and on Dask."""

import os

import numpy as np
import pytest

from ctac_helpers.models import dispatch


def _draw(seed: int, X: np.ndarray, scale: float) -> dict:
    """A seeded task: a random projection of the shared matrix, and the process it ran in."""
    rng = np.random.default_rng(seed)
    return {"seed": seed, "value": float(scale * (X @ rng.standard_normal(X.shape[1])).sum()),
            "pid": os.getpid()}


def _tasks(n: int = 6) -> list[dict]:
    X = np.arange(40.0).reshape(8, 5)
    return [{"seed": s, "X": X, "scale": 0.5 + s} for s in range(n)]


def _by_seed(results) -> dict[int, float]:
    return {r["seed"]: r["value"] for r in results}


def test_in_process_runs_the_tasks_here_in_order():
    results = list(dispatch.run_tasks(_draw, _tasks(), n_workers=1))
    assert [r["seed"] for r in results] == list(range(6))
    assert {r["pid"] for r in results} == {os.getpid()}
    # a single task stays here whatever the number of workers
    assert [r["pid"] for r in dispatch.run_tasks(_draw, _tasks(1), n_workers=2)] == [os.getpid()]


def test_two_workers_give_the_same_results_in_other_processes():
    here = _by_seed(dispatch.run_tasks(_draw, _tasks(), n_workers=1))
    results = list(dispatch.run_tasks(_draw, _tasks(), n_workers=2))
    assert _by_seed(results) == here  # bit for bit: each task is seeded
    assert len(results) == 6 and os.getpid() not in {r["pid"] for r in results}


def test_dask_gives_the_same_results_and_sends_the_shared_matrix_once(monkeypatch):
    from distributed import Client, LocalCluster

    sent = []
    scatter = Client.scatter
    monkeypatch.setattr(Client, "scatter", lambda self, data, **kw: sent.append(id(data)) or scatter(self, data, **kw))
    here = _by_seed(dispatch.run_tasks(_draw, _tasks(), n_workers=1))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        tasks = _tasks()
        assert _by_seed(dispatch.run_tasks(_draw, tasks, scheduler=cluster.scheduler_address)) == here
        assert sent == [id(tasks[0]["X"])]  # one copy of the shared matrix, not one per task
        assert _by_seed(dispatch.run_tasks(_draw, tasks, scheduler=cluster.scheduler_address, scatter=None)) == here
        assert len(sent) == 1


@pytest.mark.parametrize("n_workers, n_tasks, scheduler, expected", [
    (1, 5, None, False), (2, 1, None, False), (2, 5, None, True), (1, 1, "tcp://host:8786", True)])
def test_in_other_processes(n_workers, n_tasks, scheduler, expected):
    assert dispatch.in_other_processes(n_workers, n_tasks, scheduler) is expected


def test_worker_count():
    assert dispatch.worker_count(3, "cpu") == 3
    assert dispatch.worker_count(-1, "cpu") == (os.cpu_count() or 1)
    assert dispatch.worker_count(4, "cuda") == 1  # fits on a GPU run in turn
    assert isinstance(dispatch.worker_count(np.int64(2), "cpu"), int)
