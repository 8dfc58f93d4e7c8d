"""Resumable per-scan batches: results written per scan, failures isolated, reruns reuse work."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ctac_helpers.pipeline import batch


def square(item):
    if item["x"] < 0:
        raise ValueError(f"negative input {item['x']}")
    return {"scan_id": item["scan_id"], "y": item["x"] ** 2, "nan": float("nan")}


def items(n=5):
    return [{"scan_id": f"s{i}", "x": i} for i in range(n)]


def test_results_in_order_and_written_per_scan(tmp_path):
    res = batch.run_batch(square, items(), tmp_path, key="k", n_workers=1, progress=False)
    assert [r["y"] for r in res.results] == [0, 1, 4, 9, 16]
    assert res.results[0]["nan"] is None  # NaN is stored as JSON null
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"s{i}.json" for i in range(5)]
    assert res.n_computed == 5 and res.n_cached == 0 and res.failures.empty


def test_fresh_and_resumed_results_are_the_same_records_in_the_same_key_order(tmp_path):
    # a task whose record is not in sorted key order: the scan table's columns follow the record's order
    def unsorted(item):
        return {"scan_id": item["scan_id"], "z": 1, "a": item["x"]}

    fresh = batch.run_batch(unsorted, items(3), tmp_path, key="k", n_workers=1, progress=False)
    resumed = batch.run_batch(unsorted, items(3), tmp_path, key="k", n_workers=1, progress=False)
    assert resumed.n_cached == 3
    assert [list(r) for r in fresh.results] == [list(r) for r in resumed.results]
    assert fresh.results == resumed.results
    assert list(fresh.frame().columns) == list(resumed.frame().columns)


def test_a_failing_scan_does_not_stop_the_others(tmp_path):
    its = items(4) + [{"scan_id": "bad", "x": -1}]
    res = batch.run_batch(square, its, tmp_path, key="k", n_workers=1, progress=False)
    assert len(res.results) == 4
    assert res.failures.to_dict("records") == [{"scan_id": "bad", "error": "ValueError", "reason": "ValueError: negative input -1"}]
    assert json.loads((tmp_path / "bad.failed.json").read_text())["reason"].endswith("negative input -1")
    # fixed input: the failure is retried and its record removed
    its[-1]["x"] = 3
    res = batch.run_batch(square, its, tmp_path, key="k", n_workers=1, progress=False)
    assert res.failures.empty and res.n_cached == 4 and res.n_computed == 1
    assert not (tmp_path / "bad.failed.json").exists()


def test_rerun_reuses_results_unless_key_or_item_changes(tmp_path):
    batch.run_batch(square, items(), tmp_path, key="k", n_workers=1, progress=False)
    again = batch.run_batch(square, items(), tmp_path, key="k", n_workers=1, progress=False)
    assert again.n_cached == 5 and again.n_computed == 0
    changed = items()
    changed[2]["x"] = 7
    res = batch.run_batch(square, changed, tmp_path, key="k", n_workers=1, progress=False)
    assert res.n_cached == 4 and res.results[2]["y"] == 49
    res = batch.run_batch(square, items(), tmp_path, key="other code", n_workers=1, progress=False)
    assert res.n_cached == 0


def test_truncated_result_file_is_recomputed(tmp_path):
    batch.run_batch(square, items(2), tmp_path, key="k", n_workers=1, progress=False)
    (tmp_path / "s1.json").write_text('{"key": "')
    res = batch.run_batch(square, items(2), tmp_path, key="k", n_workers=1, progress=False)
    assert res.n_cached == 1 and res.results[1]["y"] == 1


def test_unsafe_or_duplicate_scan_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="file name"):
        batch.run_batch(square, [{"scan_id": "../x", "x": 1}], tmp_path, key="k", n_workers=1, progress=False)
    with pytest.raises(ValueError, match="duplicate"):
        batch.run_batch(square, [{"scan_id": "a", "x": 1}, {"scan_id": "a", "x": 2}], tmp_path, key="k",
                        n_workers=1, progress=False)


def test_dask_local_cluster_gives_the_same_results(tmp_path):
    def square_local(item):  # defined here so that cloudpickle ships it to the worker processes by value
        if item["x"] < 0:
            raise ValueError(f"negative input {item['x']}")
        return {"scan_id": item["scan_id"], "y": item["x"] ** 2, "nan": float("nan")}

    its = items(6) + [{"scan_id": "bad", "x": -2}]
    local = batch.run_batch(square_local, its, tmp_path / "a", key="k", n_workers=1, progress=False)
    dask = batch.run_batch(square_local, its, tmp_path / "b", key="k", n_workers=2, progress=False)
    assert dask.results == local.results
    assert dask.failures.equals(local.failures)


def test_one_local_cluster_serves_several_batches(tmp_path):
    # a chapter starts one cluster and passes its address to each of its batches
    def pid_local(item):
        import os
        return {"scan_id": item["scan_id"], "y": item["x"] ** 2, "pid": os.getpid()}

    cluster = batch.local_cluster(2)
    try:
        runs = [batch.run_batch(pid_local, items(4), tmp_path / name, key="k", scheduler=cluster.scheduler_address,
                                progress=False) for name in ("a", "b")]
        workers = {w.pid for w in cluster.workers.values() if getattr(w, "pid", None)}
    finally:
        cluster.close()
    assert [r["y"] for r in runs[0].results] == [r["y"] for r in runs[1].results] == [0, 1, 4, 9]
    # both batches ran on the cluster's two worker processes, none started for the second batch
    assert {r["pid"] for run in runs for r in run.results} <= workers and len(workers) == 2


SCRIPT = textwrap.dedent("""
    import sys, time
    from ctac_helpers.pipeline import batch

    def slow(item):
        time.sleep(0.3)
        return {"scan_id": item["scan_id"], "v": item["x"]}

    if __name__ == "__main__":
        its = [{"scan_id": f"s{i:02d}", "x": i} for i in range(40)]
        batch.run_batch(slow, its, sys.argv[1], key="k", n_workers=1, progress=False)
""")


def test_sigkill_mid_batch_leaves_only_whole_results_and_resume_finishes(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, str(script), str(work)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(work.glob("s*.json"))) < 5:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(work.glob("s*.json"))
    assert 5 <= len(finished) < 40
    for f in finished:  # every file present is complete
        assert json.loads(f.read_text())["result"]["scan_id"] == f.stem
    sys.path.insert(0, str(tmp_path))
    import job  # noqa: F401 - re-run the same batch in-process: only the rest is computed

    res = batch.run_batch(job.slow, [{"scan_id": f"s{i:02d}", "x": i} for i in range(40)], work, key="k",
                          n_workers=1, progress=False)
    assert res.n_cached == len(finished) and len(res.results) == 40
