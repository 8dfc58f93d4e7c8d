"""Tests of ctac_helpers.models.stability: chapter 5's settings, the fixed choices, and the repeats against a plain loop."""

import statistics

import nbformat
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from nbformat.v4 import new_code_cell, new_notebook
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from ctac_helpers.models import cv as models
from ctac_helpers.models import stability

SEED = 11
FAST = {**models.AUTHORS_FIXED_PARAMS, "eta": 0.3}  # few fast-learning trees: the procedure, not the model
GRID = {"colsample_bytree": [0.8, 1.0], "n_estimators": [30], "max_depth": [2], "min_child_weight": [1]}


@pytest.fixture(scope="module")
def data(dataset_400):
    return dataset_400


def test_executed_parameters_reads_the_cell_and_the_injected_values(tmp_path):
    cells = [new_code_cell('run_dir: str = "runs/quick"  # where\nn_folds: int = 10\nfeatures: str = "synthetic"\n'
                           "fractions: list = [0.1, 0.5]\nimport os\n", metadata={"tags": ["parameters"]}),
             new_code_cell('n_folds = 5\nfeatures = "imaging"\n', metadata={"tags": ["injected-parameters"]}),
             new_code_cell("n_folds = 99\n")]
    path = tmp_path / "05_models.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    assert stability.executed_parameters(path) == {"run_dir": "runs/quick", "n_folds": 5, "features": "imaging",
                                                   "fractions": [0.1, 0.5]}
    nbformat.write(new_notebook(cells=[new_code_cell("x = some_call()", metadata={"tags": ["parameters"]})]),
                   tmp_path / "call.ipynb")
    with pytest.raises(ValueError, match="'x' is not a literal"):
        stability.executed_parameters(tmp_path / "call.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("a = 1")]), tmp_path / "none.ipynb")
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        stability.executed_parameters(tmp_path / "none.ipynb")
    with pytest.raises(FileNotFoundError, match="has its stage run"):
        stability.executed_parameters(tmp_path / "missing.ipynb")


def test_fixed_choice_takes_the_most_frequent_point_and_the_median_trees():
    grid = {"colsample_bytree": (0.6, 0.8), "n_estimators": (1000,), "max_depth": (8, 10)}
    best = pd.DataFrame({
        "model": ["a"] * 4 + ["b"] * 2,
        "fold": [0, 1, 2, 3, 0, 1],
        "colsample_bytree": [0.8, 0.8, 0.6, 0.8, 0.6, 0.8],
        "max_depth": [10.0, 10.0, 8.0, 8.0, 10.0, 8.0],
        "n_estimators": [100, 300, 41, 200, 7, 8],
    })
    choice = stability.fixed_choice(best, grid)
    a, b = choice.iloc[0], choice.iloc[1]
    assert (a["colsample_bytree"], a["max_depth"], a["folds_at_point"], a["folds"]) == (0.8, 10, 2, 4)
    assert a["n_estimators"] == 150  # the median of 41, 100, 200, 300
    assert isinstance(choice.loc[0, "max_depth"], (int, np.integer))
    # a tie (each point once) goes to the point first in the grid's order: (0.6, 10) before (0.8, 8)
    assert (b["colsample_bytree"], b["max_depth"], b["n_estimators"]) == (0.6, 10, 8)  # median 7.5 rounds up
    with pytest.raises(ValueError, match="lacks the columns"):
        stability.fixed_choice(best.drop(columns="max_depth"), grid)


def test_repeat_seeds():
    seeds = stability.repeat_seeds(20240101, 4)
    assert seeds[0] == 20240101 and len(set(seeds)) == 4 and seeds == stability.repeat_seeds(20240101, 4)
    assert stability.repeat_seeds(20240101, 2) == seeds[:2]
    assert seeds[1] != models.fold_seed(20240101, 1)
    with pytest.raises(ValueError, match="n_repeats"):
        stability.repeat_seeds(1, 0)


def _same_in_every_fold(choice, n_folds):
    return pd.concat([choice.assign(fold=k) for k in range(n_folds)], ignore_index=True)


def test_fixed_cv_reproduces_cross_validate_with_the_same_choice_in_every_fold(data):
    choice = pd.DataFrame({"model": ["eat", "ai_ctac"], "colsample_bytree": [0.8, 1.0], "max_depth": [2, 2],
                           "min_child_weight": [1, 1], "n_estimators": [7, 12]})
    config = models.CVConfig(models=("eat", "ai_ctac"), n_folds=4, seed=SEED, grid=GRID, early_stopping_rounds=5,
                             params=FAST, keep_boosters=None, execution=models.Execution(device="cpu"))
    cv = models.cross_validate(data.cohort, data.ct_features, config, chosen=_same_in_every_fold(choice, 4),
                               chosen_trees=True)
    scores = stability.fixed_cv(data.cohort, data.ct_features, choice, plan=[(SEED, 1.0)], n_folds=4, params=FAST)
    ours = scores.set_index(["model", "patient_id"])["score"]
    theirs = cv.predictions.set_index(["model", "patient_id"])["score"]
    assert set(ours.index) == set(theirs.index)
    assert np.array_equal(ours.loc[theirs.index].to_numpy(), theirs.to_numpy())


def _plain_loop(cohort, ct, choice, seeds, n_folds):
    """The repeats written out: sklearn's folds and splits, xgboost's train, sklearn's AUC."""
    y = cohort["death"].to_numpy()
    aucs = {}
    for seed in seeds:
        fold = np.empty(y.size, int)
        for k, (_, test) in enumerate(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(y, y)):
            fold[test] = k
        for _, c in choice.iterrows():
            X, _ = models.feature_matrix(cohort, ct, c["model"])
            arr, names, types = models.feature_arrays(X)
            score = np.empty(y.size)
            for k in range(n_folds):
                fold_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0] % (2**31 - 1))
                tr, _ = train_test_split(np.flatnonzero(fold != k), test_size=0.2, random_state=fold_seed,
                                         stratify=y[fold != k])
                tr = np.sort(tr)
                d = xgb.QuantileDMatrix(arr[tr], label=y[tr], feature_names=names, feature_types=types,
                                        enable_categorical=True, max_bin=16)
                params = {**FAST, "max_bin": 16, "seed": fold_seed, "nthread": 1, "verbosity": 0,
                          "colsample_bytree": c["colsample_bytree"], "max_depth": int(c["max_depth"]),
                          "min_child_weight": c["min_child_weight"]}
                booster = xgb.train(params, d, int(c["n_estimators"]))
                test = fold == k
                score[test] = booster.predict(xgb.DMatrix(arr[test], feature_names=names, feature_types=types,
                                                          enable_categorical=True))
            aucs[(seed, c["model"])] = roc_auc_score(y, score)
    return aucs


def test_repeated_cv_spread_matches_a_plain_loop(data):
    choice = pd.DataFrame({"model": ["eat", "ai_spect"], "colsample_bytree": [0.8, 0.8], "max_depth": [2, 2],
                           "min_child_weight": [1, 1], "n_estimators": [6, 9]})
    seeds = stability.repeat_seeds(SEED, 3)
    scores = stability.fixed_cv(data.cohort, data.ct_features, choice, plan=[(s, 1.0) for s in seeds], n_folds=3,
                                params=FAST, comparators=("perfusion",))
    aucs = stability.pooled_aucs(scores)
    loop = _plain_loop(data.cohort, data.ct_features, choice, seeds, 3)
    for (seed, model), value in loop.items():
        row = aucs[(aucs["seed"] == seed) & (aucs["model"] == model)]
        assert row["auc"].iloc[0] == pytest.approx(value, abs=1e-12)
    spread = stability.auc_spread(aucs).set_index("model")
    for model in ("eat", "ai_spect"):
        values = [loop[(s, model)] for s in seeds]
        assert spread.loc[model, "mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
        assert spread.loc[model, "sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert spread.loc[model, "min"] == pytest.approx(min(values), abs=1e-12)
        assert spread.loc[model, "max"] == pytest.approx(max(values), abs=1e-12)
    # the comparator is scored by its variable: the same AUC in every repeat
    assert spread.loc["perfusion", "sd"] == pytest.approx(0, abs=1e-15)
    diff = stability.difference_spread(aucs, [("ai_spect", "eat")]).iloc[0]
    d = [loop[(s, "ai_spect")] - loop[(s, "eat")] for s in seeds]
    assert diff["mean"] == pytest.approx(statistics.mean(d)) and diff["sd"] == pytest.approx(statistics.stdev(d))
    assert diff["a_higher"] == sum(v > 0 for v in d)
    agreement = stability.order_agreement(aucs, ["ai_spect", "eat"])
    assert list(agreement["same"]) == [v > 0 for v in d]


def test_fixed_cv_shares_workers_and_errors(data):
    choice = pd.DataFrame({"model": ["eat"], "colsample_bytree": [0.8], "max_depth": [2], "min_child_weight": [1],
                           "n_estimators": [5]})
    plan = [(SEED, 1.0), (SEED, 0.25)]
    one = stability.fixed_cv(data.cohort, data.ct_features, choice, plan=plan, n_folds=3, params=FAST,
                             comparators=())
    two = stability.fixed_cv(data.cohort, data.ct_features, choice, plan=plan, n_folds=3, params=FAST,
                             comparators=(), n_jobs=2)
    pd.testing.assert_frame_equal(one, two)
    sizes = stability.pooled_aucs(one).set_index("fraction")
    assert sizes.loc[0.25, "n_train"] == pytest.approx(0.25 * sizes.loc[1.0, "n_train"], rel=0.02)
    assert sizes.loc[0.25, "deaths_train"] >= 1 and sizes.loc[0.25, "n"] == len(data.cohort)
    with pytest.raises(ValueError, match="not an XGBoost model"):
        stability.fixed_cv(data.cohort, data.ct_features, choice, plan=plan, models=["cac"])
    with pytest.raises(ValueError, match="fraction in"):
        stability.fixed_cv(data.cohort, data.ct_features, choice, plan=[(SEED, 1.5)])
    with pytest.raises(ValueError, match="no row for model"):
        stability.fixed_cv(data.cohort, data.ct_features, choice, plan=plan, models=["ai_ctac"])
