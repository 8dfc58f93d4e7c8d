"""Stability of chapter 5's results: the cross-validation repeated on other seeds, and learning curves.

Chapter 5 scores every patient once, under one assignment of patients to folds and one set of xgboost
seeds. A reviewer asks whether its AUCs, and above all the *ranking* of its models, would survive another
draw. Rerunning chapter 5's whole procedure (a grid of early-stopped fits in every fold) several times
costs several times its minutes, so this module repeats a cheaper procedure and says exactly what it keeps
and what it draws again:

Kept from chapter 5 (:func:`fixed_choice`)
    Each model's hyper-parameters (the grid point chosen most often across chapter 5's folds; a tie goes
    to the point first in the grid's order) and its number of trees (the median over the folds of the
    early-stopped number), the fixed parameters (learning rate 0.01, subsampling, histogram bins) and
    the features.
Drawn again in every repeat (:func:`fixed_cv`)
    The assignment of patients to outer folds (stratified, from the repeat's seed), the 80/20 split of
    each fold's training patients (training on the 80% part, as chapter 5's fold models do) and
    xgboost's seed (row and column subsampling) in every fold.

The first repeat uses chapter 5's own seed, so that with chapter 5's number of folds it differs from
chapter 5 only in the kept choices: how far its AUCs lie from chapter 5's shows what fixing the choices
costs (fewer folds, which the paper profile uses to save time, also train on fewer patients). A learning curve
refits the models, on the first repeat's folds, on stratified random shares of each fold's training
part and tests them on the same test folds.

Every fit is single-threaded with a seed derived from the repeat's seed and the fold number
(:func:`ctac_helpers.models.cv.fold_seed`), so results do not depend on ``n_jobs``; with the same seed, the
same number of folds and a choice that is the same in every fold, :func:`fixed_cv` reproduces
:func:`ctac_helpers.models.cv.cross_validate` with ``chosen`` and ``chosen_trees`` exactly.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ctac_helpers.models import cv as models_mod
from ctac_helpers.models.dispatch import run_tasks, worker_count
from ctac_helpers.stats.delong import auc as _auc

logger = logging.getLogger(__name__)

__all__ = ["adjacent_pairs", "auc_spread", "difference_spread", "executed_parameters", "fixed_choice", "fixed_cv", "order_agreement",
           "pooled_aucs", "repeat_seeds"]

ID, OUTCOME = models_mod.ID, models_mod.OUTCOME
_PARAMETER_TAGS = ("parameters", "injected-parameters")


# -- chapter 5's settings -------------------------------------------------------------------------
def executed_parameters(notebook: str | os.PathLike) -> dict:
    """The parameters an executed notebook ran with: its ``parameters`` cell, then papermill's injected cell.

    Parameters
    ----------
    notebook : path-like
        An executed notebook (``executed/05_models.ipynb`` of a run directory).

    Returns
    -------
    dict
        ``{name: value}`` for every assignment of a literal in the two cells, the injected values winning.

    Raises
    ------
    FileNotFoundError
        The notebook does not exist.
    ValueError
        It has no ``parameters`` cell, or a parameter's value is not a Python literal.
    """
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"executed notebook not found: {path.name} (has its stage run?)")
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    tagged = [c for c in cells if c.get("cell_type") == "code"
              and set(c.get("metadata", {}).get("tags", [])) & set(_PARAMETER_TAGS)]
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in tagged):
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    values: dict = {}
    for cell in tagged:
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                name, value = node.target.id, node.value
            else:
                continue
            try:
                values[name] = ast.literal_eval(value)
            except ValueError as exc:
                raise ValueError(f"{path.name}: parameter {name!r} is not a literal value") from exc
    return values


def fixed_choice(best_params: pd.DataFrame, grid: Mapping[str, Sequence] = models_mod.AUTHORS_GRID) -> pd.DataFrame:
    """One choice per model from chapter 5's per-fold choices: the most frequent grid point, the median trees.

    Parameters
    ----------
    best_params : DataFrame
        Chapter 5's ``tables/model_selection.csv`` (a :class:`~ctac_helpers.models.cv.CVResult`'s
        ``best_params``): ``model, fold``, the grid's keys other than ``n_estimators``, and
        ``n_estimators`` (the trees kept in the fold).
    grid : mapping
        The grid the choices were made on (its order breaks ties).

    Returns
    -------
    DataFrame
        Per model, in order of appearance: ``model``, the grid keys (the grid's own values), ``n_estimators``
        (the median number of trees, rounded half up, at least 1), ``folds`` and ``folds_at_point`` (how many
        folds chose that point).
    """
    points, _ = models_mod.grid_points(grid)
    keys = list(points[0]) if points and points[0] else []
    missing = [c for c in ("model", "fold", "n_estimators", *keys) if c not in best_params]
    if missing:
        raise ValueError(f"best_params lacks the columns {missing}; expected chapter 5's model_selection table")
    rows = []
    for model, g in best_params.groupby("model", sort=False):
        counts = [sum(all(np.isclose(float(r[k]), float(p[k])) for k in keys) for _, r in g.iterrows())
                  for p in points]
        if max(counts) == 0:
            raise ValueError(f"no fold of model {model!r} chose a point of the grid")
        best = int(np.argmax(counts))  # the first of the most frequent points, in grid order
        trees = max(1, int(np.floor(float(np.median(g["n_estimators"].astype(float))) + 0.5)))
        rows.append({"model": model, **points[best], "n_estimators": trees, "folds": len(g),
                     "folds_at_point": counts[best]})
    return pd.DataFrame(rows, columns=["model", *keys, "n_estimators", "folds", "folds_at_point"])


def repeat_seeds(seed: int, n_repeats: int) -> list[int]:
    """Seeds of ``n_repeats`` repeats: ``seed`` itself (chapter 5's), then seeds derived from it."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    # spawn_key keeps these apart from the fold seeds models.fold_seed derives from [seed, fold]
    derived = [int(np.random.SeedSequence(int(seed), spawn_key=(r,)).generate_state(1)[0] % (2**31 - 1))
               for r in range(1, int(n_repeats))]
    return [int(seed), *derived]


# -- the repeated procedure -----------------------------------------------------------------------
def _fit_fixed(model: str, seed: int, fraction: float, fold: int, X: np.ndarray, y: np.ndarray, names: list[str],
               types: list[str], train: np.ndarray, test: np.ndarray, point: dict, n_trees: int, fixed: dict,
               fit_seed: int, nthread: int, device: str) -> dict:
    """One fit of a fixed number of trees on ``train``; its scores of ``test``."""
    import xgboost as xgb

    t0 = time.perf_counter()
    cat = "c" in types
    dtrain = xgb.QuantileDMatrix(X[train], label=y[train], feature_names=names, feature_types=types,
                                 enable_categorical=cat, max_bin=int(fixed["max_bin"]))
    params = {**fixed, "seed": fit_seed, "nthread": nthread, "device": device, "verbosity": 0, **point}
    booster = xgb.train(params, dtrain, num_boost_round=int(n_trees))
    booster.set_param({"device": "cpu"})
    score = booster.predict(xgb.DMatrix(X[test], feature_names=names, feature_types=types, enable_categorical=cat))
    return {"model": model, "seed": seed, "fraction": fraction, "fold": fold, "score": score.astype(np.float64),
            "n_train": int(train.size), "deaths_train": int(y[train].sum()), "wall_s": time.perf_counter() - t0}


def _subsample(train: np.ndarray, y: np.ndarray, fraction: float, seed: int, fold: int) -> np.ndarray:
    """A stratified random share of the training positions (at least one death and one survivor)."""
    if fraction == 1.0:
        return train
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(fold), int(round(fraction * 1_000_000))]))
    parts = []
    for cls in (1, 0):
        idx = train[y[train] == cls]
        parts.append(rng.choice(idx, size=max(1, int(round(fraction * idx.size))), replace=False))
    return np.sort(np.concatenate(parts))


def fixed_cv(cohort: pd.DataFrame, ct_features: pd.DataFrame | None, choice: pd.DataFrame, *,
             plan: Sequence[tuple[int, float]], models: Sequence[str] | None = None,
             comparators: Sequence[str] = ("cac", "perfusion"), n_folds: int = 10,
             radiomics_subset: str = "subset15", structures: Sequence[str] | None = None,
             max_bin: int = models_mod.BOOK_MAX_BIN, params: Mapping | None = None, device: str = "cpu",
             n_jobs: int = 1, threads_per_fit: int = 1,
             validation_size: float = models_mod.VALIDATION_SIZE) -> pd.DataFrame:
    """Out-of-fold scores of the models under fixed choices, for each (seed, training share) of ``plan``.

    Parameters
    ----------
    cohort, ct_features : DataFrame
        As for :func:`ctac_helpers.models.cv.cross_validate` (the same tables chapter 5 read).
    choice : DataFrame
        :func:`fixed_choice` of chapter 5's choices: one grid point and number of trees per model.
    plan : sequence of (int, float)
        ``(seed, fraction)`` pairs: the seed of the folds, inner splits and xgboost seeds, and the share of
        each fold's training part the models are trained on (1.0: all of it).
    models : sequence of str, optional
        XGBoost models to fit (default: every model of ``choice``).
    comparators : sequence of str
        Univariate comparators scored by their variable (no fit) in the full-share entries of ``plan``.
    n_folds, radiomics_subset, structures, max_bin, params, validation_size
        As the fields of :class:`ctac_helpers.models.cv.CVConfig` (``max_bin`` and ``params`` must be
        chapter 5's).
    device, threads_per_fit
        As the fields of :class:`ctac_helpers.models.cv.Execution` (``device`` defaults to ``'cpu'`` here).
    n_jobs : int
        Worker processes (joblib, loky) fitting (model, seed, share, fold) tasks in parallel; 1 runs them
        here. Ignored on a GPU.

    Returns
    -------
    DataFrame
        Long: ``seed, fraction, model, fold, patient_id, score, death, n_train, deaths_train`` (the
        training patients of the patient's fold model); ``attrs['wall_s']`` the run's wall time and
        ``attrs['fit_s']`` the fits' summed wall time.
    """
    t_wall = time.perf_counter()
    plan = [(int(s), float(f)) for s, f in plan]
    if not plan:
        raise ValueError("plan is empty: give at least one (seed, fraction)")
    for s, f in plan:
        if s < 0 or not 0 < f <= 1:
            raise ValueError(f"plan entries are (seed >= 0, fraction in (0, 1]); got ({s}, {f})")
    if len(set(plan)) != len(plan):
        raise ValueError(f"plan repeats an entry: {plan}")
    models_mod.check_workers(n_jobs, threads_per_fit)
    models = list(choice["model"] if models is None else models)
    chosen = choice.set_index("model")
    for m in models:
        if models_mod.FEATURE_SETS.get(m, {}).get("kind") != "xgboost":
            raise ValueError(f"{m!r} is not an XGBoost model; allowed: {', '.join(models_mod.model_names('xgboost'))}")
        if m not in chosen.index:
            raise ValueError(f"choice has no row for model {m!r}; it has {', '.join(chosen.index)}")
    for c in comparators:
        if models_mod.FEATURE_SETS.get(c, {}).get("kind") != "univariate":
            raise ValueError(f"{c!r} is not a univariate comparator; allowed: "
                             f"{', '.join(models_mod.model_names('univariate'))}")
    points, _ = models_mod.grid_points(models_mod.AUTHORS_GRID)
    keys = [k for k in chosen.columns if k in points[0]]
    fixed = {"max_bin": models_mod.check_max_bin(max_bin),
             **(models_mod.AUTHORS_FIXED_PARAMS if params is None else params)}
    device = models_mod.resolve_device(device)
    structures = list(models_mod.default_structures() if structures is None else structures)

    y = cohort[OUTCOME].to_numpy().astype(int)
    ids = cohort[ID].to_numpy()
    splits: dict[tuple[int, float], list[tuple[np.ndarray, np.ndarray]]] = {}
    for seed, fraction in plan:
        fold = models_mod.outer_folds(y, n_folds, seed)
        folds = []
        for k in range(n_folds):
            tr, _ = models_mod.inner_split(np.flatnonzero(fold != k), y, models_mod.fold_seed(seed, k),
                                           validation_size)
            folds.append((_subsample(tr, y, fraction, seed, k), np.flatnonzero(fold == k)))
        splits[(seed, fraction)] = folds

    tasks = []
    for m in models:
        X, _ = models_mod.feature_matrix(cohort, ct_features, m, radiomics_subset, structures)
        arr, names, types = models_mod.feature_arrays(X)
        point = {k: _native(chosen.at[m, k]) for k in keys}
        for (seed, fraction), folds in splits.items():
            for k, (train, test) in enumerate(folds):
                tasks.append((arr.shape[1] * train.size, dict(
                    model=m, seed=seed, fraction=fraction, fold=k, X=arr, y=y, names=names, types=types,
                    train=train, test=test, point=point, n_trees=int(chosen.at[m, "n_estimators"]), fixed=fixed,
                    fit_seed=models_mod.fold_seed(seed, k), nthread=threads_per_fit, device=device)))
    tasks.sort(key=lambda t: -t[0])  # the largest fits first, so that the last to start are short
    n_workers = worker_count(n_jobs, device)
    logger.info("fixed_cv: %d models x %d (seed, share) x %d folds = %d fits, %d worker(s)", len(models),
                len(plan), n_folds, len(tasks), n_workers)
    results = []
    for r in run_tasks(_fit_fixed, [t[1] for t in tasks], n_workers):
        results.append(r)
        logger.debug("%s seed %d share %.2f fold %d: %.1f s (%d/%d)", r["model"], r["seed"], r["fraction"],
                     r["fold"], r["wall_s"], len(results), len(tasks))

    records = []
    for seed, fraction in plan:
        if fraction != 1.0:
            continue
        for c in comparators:
            X, _ = models_mod.feature_matrix(cohort, ct_features, c, radiomics_subset, structures)
            for k, (train, test) in enumerate(splits[(seed, fraction)]):
                records.append(pd.DataFrame({"seed": seed, "fraction": fraction, "model": c, "fold": k, ID: ids[test],
                                             "score": X.iloc[test, 0].to_numpy(np.float64), OUTCOME: y[test],
                                             "n_train": train.size, "deaths_train": int(y[train].sum())}))
    for r in results:
        test = splits[(r["seed"], r["fraction"])][r["fold"]][1]
        records.append(pd.DataFrame({"seed": r["seed"], "fraction": r["fraction"], "model": r["model"],
                                     "fold": r["fold"], ID: ids[test], "score": r["score"], OUTCOME: y[test],
                                     "n_train": r["n_train"], "deaths_train": r["deaths_train"]}))
    order = {m: i for i, m in enumerate([*models, *comparators])}
    out = pd.concat(records, ignore_index=True)
    out = (out.assign(_p=out[["seed", "fraction"]].apply(tuple, axis=1).map({p: i for i, p in enumerate(plan)}),
                      _m=out["model"].map(order))
           .sort_values(["_p", "_m", "fold", ID], kind="stable").drop(columns=["_p", "_m"]).reset_index(drop=True))
    out.attrs["wall_s"] = time.perf_counter() - t_wall
    out.attrs["fit_s"] = float(sum(r["wall_s"] for r in results))
    logger.info("fixed_cv: %d fits in %.1f s", len(results), out.attrs["wall_s"])
    return out


def _native(value):
    """A table's numpy scalar as the Python number xgboost's parameters expect (8, not 8.0, for a depth)."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


# -- summaries ------------------------------------------------------------------------------------
def pooled_aucs(scores: pd.DataFrame) -> pd.DataFrame:
    """The out-of-fold AUC of each (seed, share, model) of :func:`fixed_cv`'s scores, all folds pooled.

    Returns
    -------
    DataFrame
        ``seed, fraction, model, auc, n, deaths, n_train, deaths_train`` (the last two: the mean over the
        folds of the fold models' training patients and deaths).
    """
    missing = [c for c in ("seed", "fraction", "model", "fold", "score", OUTCOME, "n_train", "deaths_train")
               if c not in scores]
    if missing:
        raise ValueError(f"scores lack the columns {missing}; expected fixed_cv's output")
    rows = []
    for (seed, fraction, model), g in scores.groupby(["seed", "fraction", "model"], sort=False):
        per_fold = g.groupby("fold")[["n_train", "deaths_train"]].first()
        rows.append({"seed": seed, "fraction": fraction, "model": model,
                     "auc": _auc(g[OUTCOME].to_numpy(), g["score"].to_numpy()), "n": len(g),
                     "deaths": int(g[OUTCOME].sum()), "n_train": float(per_fold["n_train"].mean()),
                     "deaths_train": float(per_fold["deaths_train"].mean())})
    return pd.DataFrame(rows)


def _by_seed(aucs: pd.DataFrame) -> pd.DataFrame:
    """Repeat x model AUCs (rows: seeds in order of appearance) of the full-share entries."""
    full = aucs[aucs["fraction"] == 1.0]
    if full.empty:
        raise ValueError("no full-share (fraction 1.0) AUCs: the repeats train on whole training parts")
    return full.pivot(index="seed", columns="model", values="auc").reindex(pd.unique(full["seed"]))


def auc_spread(aucs: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each model's AUC across the repeats: ``model, repeats, mean, sd, min, max`` (+ the reference's columns).

    Parameters
    ----------
    aucs : DataFrame
        :func:`pooled_aucs`; the full-share rows are used.
    reference : DataFrame, optional
        Chapter 5's AUC of each model with its interval (``model`` and further columns), merged on ``model``.
    """
    wide = _by_seed(aucs)
    out = pd.DataFrame({"model": wide.columns, "repeats": wide.notna().sum().to_numpy(),
                        "mean": wide.mean().to_numpy(), "sd": wide.std(ddof=1).to_numpy(),
                        "min": wide.min().to_numpy(), "max": wide.max().to_numpy()})
    out = out.set_index("model").loc[list(dict.fromkeys(aucs["model"]))].reset_index()
    if reference is not None:
        out = out.merge(reference, on="model", how="left", validate="one_to_one")
    return out


def difference_spread(aucs: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                      reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The AUC difference of each pair ``(a, b)`` across the repeats.

    Returns
    -------
    DataFrame
        ``a, b, repeats, mean, sd, min, max, a_higher`` (repeats in which ``a``'s AUC is the higher), with
        ``reference``'s columns merged on ``(a, b)`` when given (chapter 5's difference and its DeLong
        interval).
    """
    wide = _by_seed(aucs)
    rows = []
    for a, b in pairs:
        for m in (a, b):
            if m not in wide:
                raise ValueError(f"no AUCs of model {m!r}; present: {', '.join(wide.columns)}")
        d = (wide[a] - wide[b]).dropna()
        rows.append({"a": a, "b": b, "repeats": len(d), "mean": d.mean(), "sd": d.std(ddof=1) if len(d) > 1 else np.nan,
                     "min": d.min(), "max": d.max(), "a_higher": int((d > 0).sum())})
    out = pd.DataFrame(rows)
    if reference is not None:
        out = out.merge(reference, on=["a", "b"], how="left", validate="one_to_one")
    return out


def order_agreement(aucs: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """In each repeat, whether the models' AUCs rank them in ``order`` (highest first).

    Returns
    -------
    DataFrame
        ``seed, order, same`` (the repeat's order of the models, highest AUC first, and whether it is
        ``order``).
    """
    wide = _by_seed(aucs)
    order = list(order)
    missing = [m for m in order if m not in wide]
    if missing:
        raise ValueError(f"no AUCs of models {missing}")
    rows = []
    for seed, r in wide[order].iterrows():
        ranked = list(r.sort_values(ascending=False, kind="stable").index)
        rows.append({"seed": seed, "order": " > ".join(ranked), "same": ranked == order})
    return pd.DataFrame(rows)


def adjacent_pairs(order: Sequence[str]) -> list[tuple[str, str]]:
    """Adjacent pairs of an order, highest first: ``[(order[0], order[1]), ...]``."""
    return list(itertools.pairwise(order))
