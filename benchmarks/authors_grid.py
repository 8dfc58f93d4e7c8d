"""The authors' published grid search, the procedure that ``bench_models.py`` measures the book's against.

The authors' public code chooses XGBoost's hyper-parameters with ``GridSearchCV(cv=5,
scoring='roc_auc')`` over 16 combinations in every outer fold (81 fits of 1,000-2,000 trees per
fold). The book does not run it (chapter 5 follows the paper's text: one 80/20 split and early
stopping, :func:`ctac_helpers.models.cv.cross_validate`); it lives here, beside the benchmark that
times it, with the helpers that count the CPU time of a process and its workers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ctac_helpers.models import cv as models

logger = logging.getLogger(__name__)

__all__ = ["XGBOOST_MAX_BIN", "authors_gridsearch", "cpu_delta", "process_tree_cpu"]

# xgboost's default number of histogram bins: what the authors' fits used (the book's is
# ctac_helpers.models.cv.BOOK_MAX_BIN).
XGBOOST_MAX_BIN = 256


def process_tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of this process and of its live child processes, by pid.

    Returns
    -------
    dict of int to float
        Process id -> CPU seconds so far. Without psutil only this process is counted.
    """
    try:
        import psutil
    except ImportError:  # without psutil only this process is counted
        t = os.times()
        return {os.getpid(): t.user + t.system}
    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:  # a worker that exited meanwhile
            pass
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings of :func:`process_tree_cpu`.

    Parameters
    ----------
    before, after : dict of int to float
        Two readings, ``before`` first.

    Returns
    -------
    float
        The sum over the processes of ``after`` of their CPU time since ``before``; a process that
        started in between counts fully.
    """
    # Workers started during the run count fully; loky keeps its workers alive between calls, so
    # their time is still readable at the end.
    return float(sum(v - before.get(pid, 0.0) for pid, v in after.items()))


def authors_gridsearch(cohort: pd.DataFrame, ct_features: pd.DataFrame | None, model: str = "ai_ctac",
                       n_folds: int = 10, seed: int = models.DEFAULT_SEED, radiomics_subset: str = "subset15",
                       grid: Mapping[str, Sequence] = models.AUTHORS_GRID, max_folds: int | None = None,
                       n_jobs: int = 1, *, structures: Sequence[str] | None = None,
                       params: Mapping | None = None, max_bin: int = XGBOOST_MAX_BIN, device: str = "auto",
                       threads_per_fit: int = 1, cv: int = 5) -> models.CVResult:
    """The authors' procedure: ``GridSearchCV(cv=5, scoring='roc_auc')`` in each outer fold.

    Same outer folds as :func:`ctac_helpers.models.cv.cross_validate` (same ``seed``). In each fold
    every grid combination (16 for the authors' grid, ``n_estimators`` included, no early stopping)
    is fitted on the five
    inner folds of the 90% (sklearn's unshuffled ``StratifiedKFold``, as ``cv=5`` gives), and the
    best one by mean AUC is refitted on the whole 90%: ``16 x 5 + 1 = 81`` fits per fold. The
    classifier is ``XGBClassifier`` with the fixed parameters, ``seed`` as ``random_state`` and
    ``enable_categorical=True`` as in the authors' code, with ``tree_method='hist'`` (their
    xgboost 1.7 defaulted to the exact method on a cohort this size) and ``max_bin`` bins (default
    xgboost's 256; the benchmark gives both procedures the same value).

    Parameters
    ----------
    cohort, ct_features
        As in :func:`ctac_helpers.models.cv.cross_validate`.
    model, n_folds, seed, radiomics_subset, grid, structures, params, max_bin
        As the fields of :class:`ctac_helpers.models.cv.CVConfig` (one model here; ``max_bin`` defaults
        to :data:`XGBOOST_MAX_BIN`, 256).
    device, threads_per_fit
        As the fields of :class:`ctac_helpers.models.cv.Execution`.
    max_folds : int, optional
        Run only the first ``max_folds`` outer folds (the benchmark extrapolates from them).
    n_jobs : int
        ``GridSearchCV``'s parallel fits (joblib processes).
    cv : int
        Inner folds of the grid search (the authors' 5).

    Returns
    -------
    CVResult
        Predictions of the folds run only; ``grid_results`` holds each combination's mean and SD of
        the inner AUC; ``cpu_s`` counts this process and its worker processes (psutil).
    """
    from sklearn.model_selection import GridSearchCV
    import xgboost as xgb

    t_wall, cpu0 = time.perf_counter(), process_tree_cpu()
    models.check_cv_arguments([model], n_folds, None, n_jobs, threads_per_fit)
    if models.FEATURE_SETS[model]["kind"] != "xgboost":
        raise ValueError(f"model {model!r} is univariate; allowed: {', '.join(models.model_names('xgboost'))}")
    if max_folds is not None and (not isinstance(max_folds, (int, np.integer)) or not 1 <= max_folds <= n_folds):
        raise ValueError(f"max_folds must be an integer in 1..{n_folds} or None, got {max_folds!r}")
    models.grid_points(grid)  # validates the grid
    fixed = {"max_bin": models.check_max_bin(max_bin),
             **(models.AUTHORS_FIXED_PARAMS if params is None else params)}
    device = models.resolve_device(device)
    structures = list(models.default_structures() if structures is None else structures)
    X, y = models.feature_matrix(cohort, ct_features, model, radiomics_subset, structures)
    y_all = y.to_numpy()
    fold = models.outer_folds(y_all, n_folds, seed)
    ids = cohort[models.ID].to_numpy()
    sk = {("learning_rate" if k == "eta" else k): v for k, v in fixed.items()}
    run = range(n_folds if max_folds is None else max_folds)
    records, best, grid_rows, timings, boosters = [], [], [], [], []
    for k in run:
        t0, c0 = time.perf_counter(), process_tree_cpu()
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        clf = xgb.XGBClassifier(**sk, random_state=seed, n_jobs=threads_per_fit, device=device,
                                enable_categorical=True, verbosity=0)
        search = GridSearchCV(clf, param_grid={g: list(v) for g, v in grid.items()}, scoring="roc_auc",
                              cv=cv, n_jobs=n_jobs, refit=True)
        search.fit(X.iloc[tr], y.iloc[tr])
        booster = search.best_estimator_.get_booster()
        booster.set_param({"device": "cpu"})
        score = search.best_estimator_.predict_proba(X.iloc[te])[:, 1]
        records.append(pd.DataFrame({models.ID: ids[te], "fold": k, "model": model, "score": score,
                                     models.OUTCOME: y_all[te]}))
        bp = search.best_params_
        best.append({"model": model, "fold": k, **{g: bp[g] for g in grid if g != "n_estimators"},
                     "n_estimators": bp["n_estimators"], "validation_auc": float(search.best_score_),
                     "validation_logloss": np.nan})
        res = search.cv_results_
        for i, p in enumerate(res["params"]):
            grid_rows.append({"model": model, "fold": k, "grid_point": i, **p,
                              "mean_inner_auc": res["mean_test_score"][i], "sd_inner_auc": res["std_test_score"][i],
                              "mean_fit_s": res["mean_fit_time"][i]})
        n_fits = len(res["params"]) * cv + 1
        trees = int(sum(p["n_estimators"] for p in res["params"]) * cv + bp["n_estimators"])
        timings.append({"model": model, "fold": k, "wall_s": time.perf_counter() - t0,
                        "cpu_s": cpu_delta(c0, process_tree_cpu()), "n_fits": n_fits, "trees": trees})
        boosters.append(booster)
        logger.info("authors_gridsearch fold %d: %.1f s, best %s", k, timings[-1]["wall_s"], bp)
    predictions = pd.concat(records, ignore_index=True)
    return models.CVResult(
        predictions=predictions,
        folds=pd.DataFrame({models.ID: ids, "fold": fold, models.OUTCOME: y_all}),
        best_params=pd.DataFrame(best), grid_results=pd.DataFrame(grid_rows),
        boosters={model: boosters}, feature_names={model: list(X.columns)},
        timings=pd.DataFrame(timings), wall_s=time.perf_counter() - t_wall,
        cpu_s=cpu_delta(cpu0, process_tree_cpu()),
        config={"method": "gridsearchcv", "models": [model], "n_folds": n_folds, "seed": seed,
                "radiomics_subset": radiomics_subset, "structures": structures,
                "grid": {g: list(v) for g, v in grid.items()}, "params": fixed, "device": device,
                "n_jobs": n_jobs, "threads_per_fit": threads_per_fit, "cv": cv,
                "folds_run": list(run)})
