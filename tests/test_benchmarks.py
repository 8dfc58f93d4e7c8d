"""The benchmark scripts of issue 18: their replay of grid-search policies, a smoke run of the models
benchmark and the book benchmark's checks (timings themselves are never asserted)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctac_helpers.models import cv as models

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # registered, so that a benchmark script importing its neighbour (as it does when run from
    # benchmarks/) finds this module
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


authors_grid = _load("authors_grid")
bench_models = _load("bench_models")
bench_book = _load("bench_book")


def test_authors_gridsearch_uses_the_folds_of_cross_validate(dataset_400):
    seed = 11
    fast = {**models.AUTHORS_FIXED_PARAMS, "eta": 0.3}
    grid = {"colsample_bytree": [0.8, 1.0], "n_estimators": [30], "max_depth": [2], "min_child_weight": [1]}
    cv = models.cross_validate(dataset_400.cohort, None, models.CVConfig(
        models=("eat",), n_folds=4, seed=seed, grid=grid, early_stopping_rounds=5, params=fast, comparators=(),
        execution=models.Execution(device="cpu")))
    auth = authors_grid.authors_gridsearch(dataset_400.cohort, None, model="eat", n_folds=4, seed=seed,
                                           grid={"n_estimators": [5, 10], "max_depth": [2]}, max_folds=1,
                                           params=fast, device="cpu", cv=2)
    assert set(auth.predictions["fold"]) == {0}
    fold0 = cv.folds.loc[cv.folds["fold"] == 0, "patient_id"]
    assert set(auth.predictions["patient_id"]) == set(fold0)
    assert auth.timings.loc[0, "n_fits"] == 2 * 2 + 1
    assert auth.best_params.loc[0, "n_estimators"] in (5, 10)
    assert auth.config["params"]["max_bin"] == authors_grid.XGBOOST_MAX_BIN == 256


def test_authors_gridsearch_rejects_bad_arguments(dataset_400):
    with pytest.raises(ValueError, match="univariate"):
        authors_grid.authors_gridsearch(dataset_400.cohort, None, model="cac", n_folds=4, device="cpu")
    with pytest.raises(ValueError, match="max_folds"):
        authors_grid.authors_gridsearch(dataset_400.cohort, None, model="eat", n_folds=4, max_folds=5,
                                        device="cpu")


def test_cpu_delta_counts_new_processes_fully():
    assert authors_grid.cpu_delta({1: 2.0, 2: 1.0}, {1: 3.5, 2: 1.0, 3: 0.25}) == 1.75
    now = authors_grid.process_tree_cpu()
    assert os.getpid() in now and now[os.getpid()] >= 0.0


def test_halving_stops_the_lower_half_at_each_rung():
    # four points of 16 rounds; the running best AUC of each
    curves = [np.full(16, 0.80), np.full(16, 0.70), np.full(16, 0.75), np.full(16, 0.60)]
    rounds, alive = bench_models.halving(curves, first_rung=4, margin=0.0)
    # round 4: the two worst (0.70, 0.60) stop; round 8: of the two left, 0.75 stops
    assert alive == [True, False, False, False]
    assert rounds == [16, 4, 8, 4]
    # within the margin of the last point kept, nothing stops
    rounds, alive = bench_models.halving(curves, first_rung=4, margin=0.5)
    assert alive == [True] * 4 and rounds == [16] * 4
    # a point that stopped early on its own keeps its own length
    rounds, _ = bench_models.halving([np.full(16, 0.9), np.full(3, 0.5)], first_rung=4, margin=0.0)
    assert rounds == [16, 3]


def test_racing_stops_a_point_that_trails_the_leader():
    late = np.concatenate([np.full(10, 0.60), np.full(10, 0.90)])  # leads only after round 10
    curves = [np.full(20, 0.80), late]
    rounds, alive = bench_models.racing(curves, start=5, margin=0.05)
    assert alive == [True, False] and rounds == [20, 6]
    rounds, alive = bench_models.racing(curves, start=12, margin=0.05)  # starts once the late point leads
    assert alive == [False, True] and rounds == [13, 20]


def test_choose_takes_the_first_of_equal_points_among_those_left():
    assert bench_models._choose([0.7, 0.8, 0.8], [True, True, True]) == 1
    assert bench_models._choose([0.7, 0.8, 0.8], [True, False, True]) == 2


def test_replay_of_the_full_grid_is_the_book(dataset_400):
    grid = {"colsample_bytree": [0.6, 1.0], "n_estimators": [40], "max_depth": [2, 3], "min_child_weight": [1]}
    cv = models.cross_validate(dataset_400.cohort, dataset_400.ct_features, models.CVConfig(
        models=("eat", "ai_ctac"), n_folds=3, seed=5, grid=grid, early_stopping_rounds=5, keep_boosters=None,
        comparators=(), params={**models.AUTHORS_FIXED_PARAMS, "eta": 0.3}, record_traces=True,
        execution=models.Execution(device="cpu")))
    everything = bench_models.replay(cv, lambda curves: ([len(c) for c in curves], [True] * len(curves)))
    assert everything["trees_ratio"] == 1.0 and everything["changed"] == 0 and everything["tasks"] == 6
    assert all(d == 0.0 for d in everything["d_auc"].values())
    # keeping only the first grid point changes the choice wherever another point won
    first_only = bench_models.replay(cv, lambda curves: ([len(c) for c in curves],
                                                         [True] + [False] * (len(curves) - 1)))
    won_elsewhere = int((cv.grid_results.loc[cv.grid_results.groupby(["model", "fold"])["validation_auc"].idxmax(),
                                             "grid_point"] != 0).sum())
    assert first_only["changed"] == won_elsewhere


def test_models_benchmark_runs_and_finds_the_procedures_equal(capsys):
    rc = bench_models.main(["--n", "300", "--n-folds", "2", "--authors-folds", "0", "--n-jobs", "1",
                            "--n-estimators", "15", "--early-stopping-rounds", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "grid search, 5 models, wall" in out and "Supplementary Table 10 refit, cpu" in out
    assert out.count("identical predictions: True") == 2, out
    assert "folds with the same grid point and number of trees: 10 of 10" in out
    assert "successive halving and racing" in out


def test_book_benchmark_lists_the_slowest_cells(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    cells = [{"cell_type": "code", "source": ["x = 1\n", "y = 2"], "metadata": {"papermill": {"duration": 2.5}}},
             {"cell_type": "code", "source": ["slow()"], "metadata": {"papermill": {"duration": 9.0}}},
             {"cell_type": "markdown", "source": ["# title"], "metadata": {}}]
    (executed / "02_segmentation.ipynb").write_text(json.dumps({"cells": cells}))
    assert bench_book.slowest_cells(tmp_path, 5) == [(9.0, "02_segmentation", 1, "slow()"),
                                                     (2.5, "02_segmentation", 0, "x = 1")]
    assert bench_book.slowest_cells(tmp_path, 1) == [(9.0, "02_segmentation", 1, "slow()")]


def test_book_benchmark_runs_a_stage_with_what_it_needs_in_execution_order():
    assert bench_book.stages_until("data") == ["data"]
    assert bench_book.stages_until("segmentation") == ["data", "segmentation"]
    # the cohort chapter (01) reads the imaging chapters' features: they run before it
    assert bench_book.stages_until("cohort") == ["data", "segmentation", "cac_eat", "radiomics", "cohort"]
    assert bench_book.stages_until("models") == ["data", "segmentation", "cac_eat", "radiomics", "models"]


def test_book_benchmark_refuses_what_it_cannot_time(tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench_book.main(["--until", "no_such_stage"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        bench_book.main(["--until", "data", "--build"])
    full = tmp_path / "run"
    full.mkdir()
    (full / "run.json").write_text("{}")
    with pytest.raises(SystemExit):
        bench_book.main(["--run-dir", str(full)])


def test_book_benchmark_calls_the_command_line_of_the_package():
    # the command the benchmark runs in its child processes imports the package's command line
    done = subprocess.run(bench_book._cli("--help"), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "build" in done.stdout
