"""Mortality models: feature sets, the paper's cross-validation, feature importance and SHAP.

The paper (Methods, "Model development") trains XGBoost classifiers for all-cause mortality under
10-fold cross-validation: in each fold 90% of the patients are set aside for training and
validation, split again 80/20 into a training and a validation part on which the hyper-parameters
are chosen by grid search; the remaining 10% are tested, so that every patient is tested exactly
once and the concatenated out-of-fold scores are compared by DeLong's test.

Feature sets (:data:`FEATURE_SETS`, as data)
--------------------------------------------
``eat`` (EAT volume and density), ``ai_ctac`` (radiomics of the selected structures + DL-CAC +
DL-EAT), ``ai_spect`` (the 22 SPECT variables), ``ai_hybrid`` (``ai_ctac`` + ``ai_spect``) and
``all`` (``ai_hybrid`` + clinical and stress-test variables) are XGBoost models. ``cac`` (DL-CAC
score) and ``perfusion`` (stress TPD) are the paper's *univariate comparisons*: they are scored by
the raw variable itself, no model, because the paper compares the AUC of the raw score.

The book's procedure (:func:`cross_validate`)
---------------------------------------------
The authors' public code runs ``GridSearchCV(cv=5)`` over 16 combinations (colsample_bytree x
n_estimators x max_depth x min_child_weight) in every outer fold: 81 fits of 1,000-2,000 trees per
fold. The book follows the paper's text instead: one stratified 80/20 split of the fold's 90% and
early stopping on the validation part, so that ``n_estimators`` becomes the cap of the boosting
rounds (the largest value of the grid) and each remaining combination needs one fit: 8 fits per
fold. Early stopping watches the validation AUC (the authors' ``eval_metric``) and the
combination with the best validation AUC (their ``scoring='roc_auc'``) at its early-stopped
iteration is kept, trained on the 80% part (``refit='full'`` refits on the 90% instead).
``benchmarks/bench_models.py`` measures both procedures (the authors' lives beside it, in
``benchmarks/authors_grid.py``), and the book's against the procedure before
issue 18 (``procedure='reference'``, identical results). Trees are grown with ``hist`` and 16
bins (:data:`BOOK_MAX_BIN`), which on the CPU is about 4x faster than xgboost's 256 for the same AUC.
Nearly all the time is spent growing trees; every grid point runs to its own early stop, because
successive halving or racing over the grid changes the chosen points (the benchmark replays them on
the recorded rounds: the points that lead early are often those that stop after a few trees).

Settings (:class:`CVConfig`, as data)
-------------------------------------
:func:`cross_validate` takes its settings as one frozen :class:`CVConfig` (what to fit and how to choose
it) holding an :class:`Execution` (where the fits run: processes, device, threads, Dask scheduler). Both
check themselves when made, with the same checks as the other procedures (:func:`check_cv_arguments`,
:func:`check_workers`, :func:`check_max_bin`, :func:`check_device`), so a wrong value fails before any
fit; variants are derived with ``config.replace(...)``. The choices of an earlier run (``chosen``,
``chosen_trees``) are data of one call, not settings, and stay arguments.

Determinism: the outer folds, the inner split and xgboost's ``seed`` derive from one seed and the
fold number; every fit runs with a fixed number of threads (``threads_per_fit``, default 1) and
xgboost's CPU ``hist`` histograms are reduced in a fixed order, so the same seed gives identical
predictions whatever ``n_jobs`` is. On a GPU (``device='cuda'``, chosen automatically when xgboost
sees one) the histograms are deterministic too (xgboost pre-rounds the gradient sums), so runs
repeat exactly, but GPU and CPU results differ slightly from each other.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.models.dispatch import in_other_processes, run_tasks, worker_count
from ctac_helpers.stats.delong import auc as _auc

logger = logging.getLogger(__name__)

__all__ = [
    "AUTHORS_FIXED_PARAMS",
    "AUTHORS_GRID",
    "BOOK_MAX_BIN",
    "CVConfig",
    "CVResult",
    "Execution",
    "FEATURE_SETS",
    "IMPORTANCE_TYPES",
    "PSEUDO_STRUCTURES",
    "attach_scores",
    "check_cv_arguments",
    "check_device",
    "check_workers",
    "cross_validate",
    "default_structures",
    "feature_arrays",
    "feature_matrix",
    "feature_structure",
    "fold_seed",
    "feature_set_table",
    "gpu_available",
    "high_risk_examples",
    "importance_by_group",
    "inner_split",
    "model_names",
    "outer_folds",
    "shap_by_structure",
    "shap_values",
    "structure_importance",
    "top_structures",
]

OUTCOME = "death"
ID = "patient_id"
DEFAULT_SEED = 20240101

# -- configuration (data) -------------------------------------------------------------------------
# Every model's features as a rule. Keys: ``kind`` ('xgboost' or 'univariate'), ``columns``
# (cohort columns), ``groups`` (cohort-schema groups), ``exclude`` (columns dropped from the
# groups), ``radiomics`` (the selected structures' CT features), ``include`` (other feature sets).
FEATURE_SETS: dict[str, dict] = {
    "eat": {"kind": "xgboost", "columns": ["eat_volume", "eat_density"],
            "label": "EAT", "description": "DL-EAT volume and density"},
    "cac": {"kind": "univariate", "columns": ["cac_score"],
            "label": "Coronary calcium", "description": "DL-CAC score, scored by the raw value"},
    "perfusion": {"kind": "univariate", "columns": ["stress_tpd"],
                  "label": "Perfusion", "description": "stress TPD, scored by the raw value"},
    "ai_ctac": {"kind": "xgboost", "radiomics": True, "columns": ["cac_score", "eat_volume", "eat_density"],
                "label": "AI CTAC", "description": "radiomics of the selected structures + DL-CAC + DL-EAT"},
    "ai_spect": {"kind": "xgboost", "groups": ["spect"],
                 "label": "AI SPECT", "description": "the 22 SPECT stress variables"},
    "ai_hybrid": {"kind": "xgboost", "include": ["ai_ctac", "ai_spect"],
                  "label": "AI hybrid", "description": "AI CTAC + AI SPECT"},
    # The paper lists "demographics such as age, sex, BMI", history and the stress test; race is
    # left out: it is recorded for part of the cohort only, and where it is recorded depends on the
    # site, so it would act as a site marker.
    "all": {"kind": "xgboost", "include": ["ai_hybrid"], "groups": ["demographics", "history", "stress"],
            "exclude": ["race"], "label": "All", "description": "AI hybrid + clinical + stress test"},
}
# Schema groups that never enter a model: identifiers, acquisition (site, protocol, image quality:
# they would let a model learn site effects instead of patients) and the outcome and follow-up.
FORBIDDEN_GROUPS = ("identity", "acquisition", "outcome")
# The structures of the AI CTAC model: the synthetic CT model's structures present in more than 80%
# of scans (33 of 59); a ``structures`` argument overrides it (e.g. the imaging chapter's rule).
STRUCTURE_RULE = {"min_p_present": 0.8}
# CAC and EAT are one structure each in the importance and SHAP summaries.
PSEUDO_STRUCTURES = {"cac_score": "coronary_calcium", "eat_volume": "epicardial_fat",
                     "eat_density": "epicardial_fat"}

# The authors' grid (public code) and fixed parameters. ``tree_method='hist'`` replaces xgboost
# 1.7's default (exact on a cohort this size); it is the method whose results do not depend on
# the number of threads and that runs on a GPU.
AUTHORS_GRID: dict[str, tuple] = {
    "colsample_bytree": (0.6, 0.8),
    "n_estimators": (1000, 2000),
    "max_depth": (8, 10),
    "min_child_weight": (4, 6),
}
AUTHORS_FIXED_PARAMS: dict[str, object] = {
    "objective": "binary:logistic",
    "eta": 0.01,
    "subsample": 0.8,
    "gamma": 1.0,
    "scale_pos_weight": 1.0,
    "tree_method": "hist",
}
VALIDATION_SIZE = 0.2
STOPPING_METRICS = ("auc", "logloss")
# Histogram bins of the book's fits. A CPU tree's cost is dominated by its per-node histograms
# (features x bins): with ~500 features a tree takes 41 ms at 64 bins, 26 ms at 32 and 18.5 ms at 16
# (one thread, paper-scale AI CTAC). The 10-fold out-of-fold AUC of AI CTAC on the synthetic cohort
# was 0.759 at 64 bins, 0.764 at 32 and 0.768 at 16: no loss beyond noise. 16 bins still leave
# ~470 training patients per bin, and keep the paper-scale chapter within 10 minutes on 2 cores.
BOOK_MAX_BIN = 16
REFIT_POLICIES = ("train", "full")
PROCEDURES = ("book", "reference")
DEVICES = ("auto", "cpu", "cuda")
RADIOMICS_SUBSETS = ("subset15", "all")
# Types whose per-feature values add up to a structure's value, and the per-split averages that
# are computed as a ratio of two such sums (see structure_importance).
IMPORTANCE_TYPES = ("total_gain", "gain", "weight", "total_cover", "cover")


def model_names(kind: str | None = None) -> list[str]:
    """Names of the feature sets, optionally only ``kind`` ('xgboost' or 'univariate')."""
    if kind not in (None, "xgboost", "univariate"):
        raise ValueError(f"unknown kind {kind!r}; allowed: None, 'xgboost', 'univariate'")
    return [k for k, v in FEATURE_SETS.items() if kind is None or v["kind"] == kind]


def _check_model(model: str) -> dict:
    if model not in FEATURE_SETS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[model]


# -- feature sets -----------------------------------------------------------------------------------
def default_structures() -> list[str]:
    """The AI CTAC model's structures: synthetic structures with ``p_present`` above 0.8 (33)."""
    s = manifest.synthetic_structures()
    return list(s.index[s["p_present"] > STRUCTURE_RULE["min_p_present"]])


def _rule_parts(model: str, seen: tuple = ()) -> tuple[bool, list[str]]:
    """(uses radiomics, cohort columns in order) of a feature set, resolving ``include``."""
    if model in seen:
        raise ValueError(f"feature set {model!r} includes itself (via {' -> '.join(seen)})")
    rule = _check_model(model)
    radiomics = bool(rule.get("radiomics", False))
    columns: list[str] = []
    for inc in rule.get("include", []):
        r, c = _rule_parts(inc, seen + (model,))
        radiomics |= r
        columns += c
    columns += list(rule.get("columns", []))
    if rule.get("groups"):
        schema = manifest.cohort_schema()
        exclude = set(rule.get("exclude", []))
        columns += [c for c in schema.index[schema["group"].isin(rule["groups"])] if c not in exclude]
    return radiomics, list(dict.fromkeys(columns))


def _categorical_levels() -> dict[str, list[str]]:
    schema = manifest.cohort_schema()
    cats = schema[schema["type"] == "category"]
    return {name: list(c) if isinstance(c, list) else [] for name, c in cats["categories"].items()}


def feature_matrix(cohort: pd.DataFrame, ct_features: pd.DataFrame | None, model: str,
                   radiomics_subset: str = "subset15",
                   structures: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and outcome of one model.

    Parameters
    ----------
    cohort : DataFrame
        One row per patient (``patient_id``, ``death`` and the schema's columns).
    ct_features : DataFrame or None
        ``patient_id`` + ``ct__<structure>__<feature>`` columns; needed for models with radiomics
        (``ai_ctac``, ``ai_hybrid``, ``all``), ignored otherwise.
    model : str
        A key of :data:`FEATURE_SETS`.
    radiomics_subset : {'subset15', 'all'}
        The paper's 15 interpretable PyRadiomics features or all 32.
    structures : sequence of str, optional
        Structures whose radiomics enter the model; default :func:`default_structures` (33).

    Returns
    -------
    X : DataFrame
        Index ``patient_id`` (cohort order). Radiomics columns first (structure by structure), then
        cohort columns. Numeric columns are float32 (NaN where a structure is absent or truncated:
        xgboost learns a default direction for missing values). Categorical columns (sex, stress
        type, ECG response) are pandas categoricals with the schema's levels, passed to xgboost as
        native categoricals as the authors' code does (``enable_categorical=True``): one column
        per variable, so that importance and SHAP stay per variable.
    y : Series
        ``death`` as int, same index.

    Raises
    ------
    ValueError
        Unknown model or subset, missing columns or structures, patients without CT features, or a
        rule resolving to an identifier, acquisition or outcome column.

    Notes
    -----
    For the univariate comparators (``cac``, ``perfusion``) ``X`` holds the one variable that
    scores the patient.
    """
    radiomics, columns = _rule_parts(model)
    schema = manifest.cohort_schema()
    # Guard against leakage whatever the rules say: outcome, follow-up, ids, site never enter X.
    forbidden = set(schema.index[schema["group"].isin(FORBIDDEN_GROUPS)])
    leaked = [c for c in columns if c in forbidden]
    if leaked:
        raise ValueError(f"feature set {model!r} resolves to forbidden columns {leaked} "
                         f"(groups {', '.join(FORBIDDEN_GROUPS)} never enter a model)")
    for col in (ID, OUTCOME):
        if col not in cohort:
            raise ValueError(f"cohort lacks the {col!r} column")
    missing = [c for c in columns if c not in cohort]
    if missing:
        raise ValueError(f"cohort lacks columns {missing} needed by model {model!r}")
    if cohort[ID].duplicated().any():
        raise ValueError("cohort has duplicated patient_id values")

    parts = []
    if radiomics:
        features = manifest.radiomics_features(radiomics_subset)
        parts.append(_radiomics_block(cohort[ID], ct_features, features, structures))
    else:
        _check_radiomics_subset(radiomics_subset)
    levels = _categorical_levels()
    block = {}
    for c in columns:
        if c in levels:
            values = cohort[c].astype("object")
            cat = pd.Categorical(values, categories=levels[c])
            unknown = values.notna() & pd.isna(cat)
            if unknown.any():
                logger.warning("%s: %d values outside the schema's levels %s set to missing",
                               c, int(unknown.sum()), levels[c])
            block[c] = cat
        else:
            block[c] = pd.to_numeric(cohort[c], errors="raise").to_numpy(np.float32)
    parts.append(pd.DataFrame(block, index=pd.Index(cohort[ID].to_numpy(), name=ID)))
    X = pd.concat(parts, axis=1) if len(parts) > 1 else parts[0]
    y = pd.Series(cohort[OUTCOME].to_numpy().astype(int), index=X.index, name=OUTCOME)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("death must be 0/1")
    return X, y


def _check_radiomics_subset(radiomics_subset) -> None:
    if radiomics_subset not in RADIOMICS_SUBSETS:
        raise ValueError(f"unknown radiomics subset {radiomics_subset!r}; allowed: 'subset15', 'all'")


def _radiomics_block(ids: pd.Series, ct_features: pd.DataFrame | None, features: list[str],
                     structures: Sequence[str] | None) -> pd.DataFrame:
    if ct_features is None:
        raise ValueError("this model uses CT radiomics: pass ct_features")
    if ID not in ct_features:
        raise ValueError("ct_features lacks the 'patient_id' column")
    structures = list(default_structures() if structures is None else structures)
    if not structures:
        raise ValueError("structures is empty")
    cols = manifest.ct_feature_columns(structures, features)
    absent = sorted({manifest.parse_feature_column(c)[0] for c in cols if c not in ct_features})
    if absent:
        raise ValueError(f"ct_features lacks columns of structures {absent}")
    ct = ct_features.set_index(ID)
    if not ct.index.is_unique:
        raise ValueError("ct_features has duplicated patient_id values")
    lacking = ~ids.isin(ct.index)
    if lacking.any():
        raise ValueError(f"{int(lacking.sum())} patients have no CT features "
                         f"(first: {ids[lacking].iloc[0]!r})")
    block = ct.loc[ids.to_numpy(), cols].astype(np.float32)
    block.index.name = ID
    return block


def feature_arrays(X: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """float32 matrix (category codes for categoricals, NaN for missing), names and xgboost types.

    A plain array instead of the DataFrame so that joblib hands it to the worker processes as a
    shared memory map rather than pickling it once per task.
    """
    out = np.empty(X.shape, dtype=np.float32)
    types = []
    for j, c in enumerate(X.columns):
        col = X[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy().astype(np.float32)
            codes[codes < 0] = np.nan
            out[:, j] = codes
            types.append("c")
        else:
            out[:, j] = col.to_numpy(np.float32)
            types.append("q")
    return out, list(map(str, X.columns)), types


def feature_set_table(cohort: pd.DataFrame, ct_features: pd.DataFrame | None,
                      models: Sequence[str] | None = None, radiomics_subset: str = "subset15",
                      structures: Sequence[str] | None = None) -> pd.DataFrame:
    """The models and their features: ``model, label, kind, n_features, description``."""
    rows = []
    for m in (model_names() if models is None else models):
        rule = _check_model(m)
        X, _ = feature_matrix(cohort, ct_features, m, radiomics_subset, structures)
        rows.append({"model": m, "label": rule["label"], "kind": rule["kind"], "n_features": X.shape[1],
                     "description": rule["description"]})
    return pd.DataFrame(rows)


def high_risk_examples(scores: pd.Series, cohort: pd.DataFrame, k: int = 3,
                       columns: Sequence[str] = ("age", "sex", "stress_tpd", "death", "followup_years")
                       ) -> pd.DataFrame:
    """The ``k`` patients with the highest scores among those who died (the paper's Fig. 4 examples).

    Parameters
    ----------
    scores : Series
        Out-of-fold risk of one model, indexed by ``patient_id``.
    cohort : DataFrame
        The cohort table (for the descriptive ``columns``).
    k : int
        Number of patients.

    Returns
    -------
    DataFrame
        ``patient_id, score, risk_percentile`` and ``columns``, highest score first (ties by id).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    missing = [c for c in (ID, OUTCOME, *columns) if c not in cohort]
    if missing:
        raise ValueError(f"cohort lacks the columns {missing}")
    meta = cohort.set_index(ID)
    if not scores.index.isin(meta.index).all():
        raise ValueError("scores hold patients that are not in the cohort")
    table = pd.DataFrame({"score": scores.astype(float)})
    table["risk_percentile"] = table["score"].rank(pct=True) * 100
    table = table.join(meta[[c for c in dict.fromkeys((*columns, OUTCOME))]])
    died = table[table[OUTCOME] == 1].reset_index().rename(columns={"index": ID})
    died = died.sort_values(["score", ID], ascending=[False, True], kind="stable").head(k)
    return died[[ID, "score", "risk_percentile", *columns]].reset_index(drop=True)


def attach_scores(cohort: pd.DataFrame, predictions: pd.DataFrame, model: str = "all",
                  column: str = "score") -> pd.DataFrame:
    """The cohort with one model's out-of-fold score as a column (the input of chapters 6 and 7).

    Parameters
    ----------
    cohort : DataFrame
        The cohort table, one row per ``patient_id``.
    predictions : DataFrame
        ``artifacts/predictions.parquet``: ``patient_id, fold, model, score``.
    model : str
        The model whose scores are attached (one of the models in ``predictions``).
    column : str
        Name of the new column.

    Returns
    -------
    DataFrame
        A copy of ``cohort`` (same rows, same order) with ``column`` and ``fold``.

    Raises
    ------
    ValueError
        If ``predictions`` lacks a column, ``model`` is not among its models, a patient of the cohort
        has no score, or a patient has two.
    """
    missing = [c for c in (ID, "fold", "model", "score") if c not in predictions]
    if missing:
        raise ValueError(f"predictions lack the columns {missing}; expected patient_id, fold, model, score")
    available = sorted(predictions["model"].unique())
    if model not in available:
        raise ValueError(f"model {model!r} not in the predictions; available: {available}")
    if column in cohort:
        raise ValueError(f"the cohort already has a column {column!r}")
    p = predictions.loc[predictions["model"] == model, [ID, "fold", "score"]]
    dup = p[ID][p[ID].duplicated()]
    if len(dup):
        raise ValueError(f"predictions of {model!r} hold {len(dup)} patient(s) twice, e.g. {dup.iloc[0]!r}")
    out = cohort.merge(p.rename(columns={"score": column}), on=ID, how="left", validate="one_to_one")
    unscored = out.loc[out[column].isna(), ID]
    if len(unscored):
        raise ValueError(f"{len(unscored)} patient(s) of the cohort have no {model!r} score, "
                         f"e.g. {unscored.iloc[0]!r}: were the predictions made on another cohort?")
    out.index = cohort.index
    return out


# -- folds ----------------------------------------------------------------------------------------
def outer_folds(y, n_folds: int = 10, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Test fold (0..n_folds-1) of each patient: stratified, shuffled with ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if np.bincount(y, minlength=2).min() < n_folds:
        raise ValueError(f"fewer events or non-events than folds ({n_folds})")
    fold = np.empty(y.size, dtype=int)
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(y.size), y)):
        fold[test] = k
    return fold


def fold_seed(seed: int, fold: int) -> int:
    """The seed of one fold's inner split and xgboost fits, derived from the global seed."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0] % (2**31 - 1))


def _check_validation_size(validation_size) -> None:
    if not isinstance(validation_size, (int, float, np.integer, np.floating)) or not 0 < validation_size < 1:
        raise ValueError(f"validation_size must lie in (0, 1), got {validation_size!r}")


def inner_split(train_index: np.ndarray, y, seed: int,
                validation_size: float = VALIDATION_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of a fold's training patients into training and validation parts.

    Parameters
    ----------
    train_index : array of int
        Positions of the fold's training patients (its 90%).
    y : array-like
        Outcome of all patients (indexed by position).
    seed : int
        Seed of the split (see :func:`fold_seed`).
    validation_size : float
        Share of the validation part (the paper's 20%).

    Returns
    -------
    (train, validation) : arrays of positions, each sorted.
    """
    from sklearn.model_selection import train_test_split

    _check_validation_size(validation_size)
    train_index = np.asarray(train_index)
    y = np.asarray(y).astype(int)
    tr, va = train_test_split(train_index, test_size=validation_size, stratify=y[train_index],
                              random_state=seed)
    return np.sort(tr), np.sort(va)


# -- device ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def gpu_available() -> bool:
    """Whether xgboost can train on a CUDA GPU here (a CUDA build and a visible device)."""
    import xgboost as xgb

    if not xgb.build_info().get("USE_CUDA", False):
        return False
    try:
        with warnings.catch_warnings():
            # Without a device xgboost warns and falls back to the CPU; the config tells which.
            warnings.simplefilter("ignore")
            d = xgb.DMatrix(np.arange(8, dtype=np.float32).reshape(4, 2), label=[0, 1, 0, 1])
            b = xgb.train({"device": "cuda", "tree_method": "hist", "verbosity": 0}, d, 1)
        device = json.loads(b.save_config())["learner"]["generic_param"]["device"]
    except Exception as exc:  # any failure means: no usable GPU
        logger.debug("no usable GPU for xgboost: %s", exc)
        return False
    return device.startswith("cuda")


def check_device(device) -> str:
    """``device`` itself; ValueError unless one of :data:`DEVICES` (whether a GPU is there is not checked)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    return device


def resolve_device(device: str) -> str:
    """The xgboost device for ``device``: ``auto`` gives ``cuda`` when a GPU is usable, else ``cpu``."""
    check_device(device)
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cuda" and not gpu_available():
        raise ValueError("device='cuda' but xgboost finds no usable GPU; use 'auto' or 'cpu'")
    return device


# -- grid ------------------------------------------------------------------------------------------
def grid_points(grid: Mapping[str, Sequence]) -> tuple[list[dict], int]:
    """The combinations other than ``n_estimators`` (in grid order) and the boosting cap."""
    if "n_estimators" not in grid:
        raise ValueError("grid must hold 'n_estimators' (its largest value caps the boosting rounds)")
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty list of values")
    cap = int(max(grid["n_estimators"]))
    if cap < 1:
        raise ValueError("n_estimators must be positive")
    keys = [k for k in grid if k != "n_estimators"]
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    return points, cap


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# -- cross-validation -------------------------------------------------------------------------------
@dataclass
class CVResult:
    """Out-of-fold predictions and everything kept from one cross-validation.

    Attributes
    ----------
    predictions : DataFrame
        Long: ``patient_id, fold, model, score, death``; one row per patient and model.
    folds : DataFrame
        ``patient_id, fold, death``: each patient's test fold.
    best_params : DataFrame
        Per model and fold: the chosen grid point, ``n_estimators`` (trees kept) and its validation
        AUC and log-loss (NaN for the authors' procedure, which has no validation part).
    grid_results : DataFrame
        Per model, fold and grid point: early-stopped trees, validation AUC and log-loss, trees fit.
    boosters : dict
        Model -> list of ``xgboost.Booster`` (one per fold, fold order) for the kept models.
    feature_names : dict
        Model -> feature names (the columns of :func:`feature_matrix`).
    timings : DataFrame
        Per model and fold: ``wall_s``, ``cpu_s`` (the task's process time), ``n_fits``, ``trees``
        and ``data_cpu_s`` (the part of ``cpu_s`` spent building and quantising the fold's matrices).
    wall_s, cpu_s : float
        Whole run (``cpu_s``: this process plus the worker tasks).
    config : dict
        The arguments (seed, folds, grid, structures, ...), for re-running and for SHAP.
    traces : DataFrame or None
        With ``record_traces``: per model, fold and grid point, the validation AUC after every
        boosting round (``validation_auc_by_round``, an array) and the test scores of the early-stopped
        model (``test_score``, in the fold's test order).
    """

    predictions: pd.DataFrame
    folds: pd.DataFrame
    best_params: pd.DataFrame
    grid_results: pd.DataFrame
    boosters: dict
    feature_names: dict
    timings: pd.DataFrame
    wall_s: float
    cpu_s: float
    config: dict = field(default_factory=dict)
    traces: pd.DataFrame | None = None

    def scores(self) -> pd.DataFrame:
        """Wide scores: index ``patient_id`` (cohort order), one column per model, plus ``death``."""
        wide = self.predictions.pivot(index=ID, columns="model", values="score")
        order = self.folds[ID]
        wide = wide.reindex(order[order.isin(wide.index)])
        models = list(dict.fromkeys(self.predictions["model"]))
        wide = wide[models]
        wide[OUTCOME] = self.folds.set_index(ID)[OUTCOME].reindex(wide.index).to_numpy()
        wide.columns.name = None
        return wide

    def aucs(self) -> pd.DataFrame:
        """Out-of-fold AUC of each model (``model, auc, n, deaths``)."""
        rows = []
        for model, g in self.predictions.groupby("model", sort=False):
            rows.append({"model": model, "auc": _auc(g[OUTCOME].to_numpy(), g["score"].to_numpy()),
                         "n": len(g), "deaths": int(g[OUTCOME].sum())})
        return pd.DataFrame(rows)


def _task_cpu_clock():
    wall, cpu = time.perf_counter(), time.process_time()
    return lambda: (time.perf_counter() - wall, time.process_time() - cpu)


def _fit_fold(model: str, fold: int, X: np.ndarray, y: np.ndarray, names: list[str], types: list[str],
              train: np.ndarray, valid: np.ndarray, test: np.ndarray, points: list[dict], cap: int,
              fixed: dict, early_stopping_rounds: int | None, stopping_metric: str, seed: int, device: str,
              nthread: int, refit: str, keep: bool, procedure: str = "book", traces: bool = False) -> dict:
    """One (model, fold) task: grid of early-stopped fits, selection, optional refit, test scores.

    ``procedure='reference'`` evaluates the validation part after every boosting round even when
    nothing stops early (the procedure before issue 18, kept for the benchmark); ``'book'``
    evaluates it per round only for early stopping: a fit of a reused number of trees is then
    evaluated once, at its end, for the same trees and the same recorded AUC. ``traces`` keeps
    every grid point's per-round validation AUC and its test scores (for the benchmark's replay of
    other grid-search policies).
    """
    import xgboost as xgb

    clock = _task_cpu_clock()
    cpu_data = time.process_time()
    cat = "c" in types
    # QuantileDMatrix bins the data itself: its max_bin must be the booster's.
    dm = functools.partial(xgb.QuantileDMatrix, feature_names=names, feature_types=types,
                           enable_categorical=cat, max_bin=int(fixed["max_bin"]))
    # One quantised matrix per fold, shared by the grid's fits (the bins depend on the data only).
    dtrain = dm(X[train], label=y[train])
    # A plain DMatrix for validation: xgboost evaluates a QuantileDMatrix that is not the training
    # matrix ~10 ms per round slower (measured at 500 features), and the raw values give the same
    # predictions, the split thresholds being the training bins' cuts.
    dvalid = xgb.DMatrix(X[valid], label=y[valid], feature_names=names, feature_types=types,
                         enable_categorical=cat)
    dtest = xgb.DMatrix(X[test], feature_names=names, feature_types=types, enable_categorical=cat)
    cpu_data = time.process_time() - cpu_data
    per_round = early_stopping_rounds is not None or procedure == "reference" or traces
    # The last metric drives early stopping; the other one is only recorded.
    metrics = ["auc", "logloss"] if stopping_metric == "logloss" else ["logloss", "auc"]
    base = {**fixed, "eval_metric": metrics, "seed": seed, "nthread": nthread, "device": device,
            "verbosity": 0}
    rows, best, best_key, kept_traces = [], None, None, []
    for i, point in enumerate(points):
        t0 = time.perf_counter()
        history: dict = {}
        booster = xgb.train({**base, **point}, dtrain, num_boost_round=cap,
                            evals=[(dvalid, "validation")] if per_round else [],
                            early_stopping_rounds=early_stopping_rounds, verbose_eval=False,
                            evals_result=history if traces else None)
        # Without early stopping (a reused number of trees) every tree is kept.
        n_trees = booster.num_boosted_rounds() if early_stopping_rounds is None else booster.best_iteration + 1
        p = booster.predict(dvalid, iteration_range=(0, n_trees))
        row = {"model": model, "fold": fold, "grid_point": i, **point, "n_estimators": n_trees,
               "validation_auc": _auc(y[valid], p), "validation_logloss": _logloss(y[valid], p),
               "trees_fit": booster.num_boosted_rounds(), "wall_s": time.perf_counter() - t0}
        if traces:
            kept_traces.append({"model": model, "fold": fold, "grid_point": i,
                                "validation_auc_by_round": np.asarray(history["validation"]["auc"], float),
                                "test_score": booster.predict(dtest, iteration_range=(0, n_trees))})
        rows.append(row)
        # Best validation AUC (the authors' scoring); the first grid point wins a tie.
        key = row["validation_auc"]
        if best_key is None or key > best_key:
            best, best_key = (i, booster[:n_trees]), key
    i_best, booster = best
    chosen = dict(rows[i_best])
    n_fits = len(points)
    if refit == "full":
        # Refit on the whole 90% with the chosen parameters and number of trees, as GridSearchCV's
        # refit does in the authors' code.
        both = np.sort(np.concatenate([train, valid]))
        booster = xgb.train({**base, **points[i_best], "eval_metric": metrics}, dm(X[both], label=y[both]),
                            num_boost_round=chosen["n_estimators"])
        n_fits += 1
    # Predict on the CPU whatever the training device: kept boosters then work anywhere.
    booster.set_param({"device": "cpu"})
    score = booster.predict(dtest)
    wall, cpu = clock()
    trees = sum(r["trees_fit"] for r in rows) + (chosen["n_estimators"] if refit == "full" else 0)
    return {"model": model, "fold": fold, "score": score, "grid": rows,
            "best": {k: chosen[k] for k in ("model", "fold", *points[i_best], "n_estimators",
                                             "validation_auc", "validation_logloss")},
            "booster": booster if keep else None,
            "timing": {"model": model, "fold": fold, "wall_s": wall, "cpu_s": cpu, "n_fits": n_fits,
                       "trees": trees, "data_cpu_s": cpu_data},
            "traces": kept_traces}


def check_cv_arguments(models, n_folds, early_stopping_rounds, n_jobs, threads_per_fit) -> list[str]:
    """Check the arguments that every cross-validation procedure shares.

    Parameters
    ----------
    models : sequence of str
        Model names (keys of :data:`FEATURE_SETS`); not empty, no duplicates.
    n_folds : int
        Outer folds, at least 2.
    early_stopping_rounds : int or None
        A positive integer, or None where the procedure has no early stopping.
    n_jobs : int
        A positive integer or -1.
    threads_per_fit : int
        A positive integer.

    Returns
    -------
    list of str
        ``models`` as a list.

    Raises
    ------
    ValueError
        If any argument is out of range or names an unknown model.
    """
    models = list(models)
    if not models:
        raise ValueError("models is empty")
    for m in models:
        _check_model(m)
    if len(set(models)) != len(models):
        raise ValueError(f"duplicated model names in {models}")
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if early_stopping_rounds is not None and (not isinstance(early_stopping_rounds, (int, np.integer))
                                              or early_stopping_rounds < 1):
        raise ValueError(f"early_stopping_rounds must be a positive integer, got {early_stopping_rounds!r}")
    check_workers(n_jobs, threads_per_fit)
    return models


def check_workers(n_jobs, threads_per_fit) -> None:
    """ValueError unless ``n_jobs`` is a positive integer or -1 and ``threads_per_fit`` a positive integer."""
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1, got {n_jobs!r}")
    if not isinstance(threads_per_fit, (int, np.integer)) or threads_per_fit < 1:
        raise ValueError(f"threads_per_fit must be a positive integer, got {threads_per_fit!r}")


def check_max_bin(max_bin) -> int:
    """``max_bin`` as an int; ValueError unless an integer of at least 2."""
    if not isinstance(max_bin, (int, np.integer)) or max_bin < 2:
        raise ValueError(f"max_bin must be an integer >= 2, got {max_bin!r}")
    return int(max_bin)


def _keep_set(keep_boosters, models) -> set:
    if keep_boosters is True:
        return set(models)
    if keep_boosters in (False, None):
        return set()
    if isinstance(keep_boosters, str):
        keep_boosters = [keep_boosters]
    keep = set(keep_boosters)
    unknown = keep - set(FEATURE_SETS)
    if unknown:
        raise ValueError(f"unknown models in keep_boosters {sorted(unknown)}; allowed: {', '.join(FEATURE_SETS)}")
    return keep


def _names(value, what: str) -> tuple[str, ...]:
    """A sequence of names as a tuple (a single string is refused: it would read as its letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a sequence of names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Execution:
    """Where and how the fits of :func:`cross_validate` run.

    None of these changes the results on one device: every (model, fold) task is seeded and runs a
    fixed number of threads, wherever it runs. CPU and GPU results differ slightly.

    Attributes
    ----------
    n_jobs : int
        Worker processes (joblib, loky) running (model, fold) tasks in parallel; 1 runs them in this
        process, -1 uses every core. Ignored (tasks run in turn) on a GPU.
    device : {'auto', 'cpu', 'cuda'}
        ``'auto'``: CUDA when xgboost sees a GPU (resolved when :func:`cross_validate` runs).
    threads_per_fit : int
        xgboost threads per fit (fixed, so that results do not depend on ``n_jobs``).
    scheduler : str or None
        Address of an existing Dask scheduler (``tcp://host:8786``): the tasks run on its workers
        instead of local processes (``n_jobs`` is then ignored), each model's feature matrix sent
        once. None: local.

    Raises
    ------
    ValueError
        On construction, for a value out of range (the message names the allowed values).
    """

    n_jobs: int = 1
    device: str = "auto"
    threads_per_fit: int = 1
    scheduler: str | None = None

    def __post_init__(self):
        check_workers(self.n_jobs, self.threads_per_fit)
        check_device(self.device)
        if self.scheduler is not None and (not isinstance(self.scheduler, str) or not self.scheduler):
            raise ValueError("scheduler must be None (local processes) or a Dask scheduler's address such as "
                             f"'tcp://host:8786', got {self.scheduler!r}")

    def replace(self, **changes) -> Execution:
        """A copy with some fields changed (checked again), as :func:`dataclasses.replace`."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CVConfig:
    """What :func:`cross_validate` fits and how it chooses the models, as data.

    Frozen and checked on construction, so that a wrong value fails before anything is fitted; derive
    variants with :meth:`replace` (``config.replace(models=("ai_ctac",), radiomics_subset="all")``).
    Sequences are stored as tuples and the grid as a dict of tuples.

    Attributes
    ----------
    models : sequence of str
        Keys of :data:`FEATURE_SETS`; univariate ones are scored by their variable.
    comparators : sequence of str
        Univariate comparators appended to ``models`` (scored by their variable, no fitting).
    n_folds : int
        Outer stratified folds (10): every patient is tested exactly once.
    seed : int
        Seeds the outer folds, each fold's inner split and xgboost's ``seed`` (via :func:`fold_seed`).
    radiomics_subset : {'subset15', 'all'}
        Radiomics features of the CT models.
    structures : sequence of str, optional
        Structures of the radiomics block (default :func:`default_structures`).
    grid : mapping
        Hyper-parameter grid; ``n_estimators``' largest value caps the boosting rounds, every
        combination of the other keys is one early-stopped fit (the authors' grid: 8 fits per fold).
    early_stopping_rounds : int
        Rounds without improvement of ``stopping_metric`` on the validation part before stopping.
    stopping_metric : {'auc', 'logloss'}
        Validation metric of early stopping. ``'auc'`` (default) is the authors' ``eval_metric``
        and the metric that chooses the grid point (their ``scoring='roc_auc'``). ``'logloss'`` is
        smoother and keeps better calibrated models, but at eta 0.01 it keeps 2-3x more trees
        (~200-350 vs ~60-140 on the synthetic cohort) for the same out-of-fold AUC (4 folds of AI
        CTAC: 0.790 vs 0.788 pooled, per-fold differences within +/-0.01). The grid point is
        chosen by validation AUC either way.
    refit : {'train', 'full'}
        ``'train'`` (default) keeps the early-stopped model trained on the 80% part, as the paper's
        text describes (80% training, 20% validation, 10% testing); ``'full'`` refits on the fold's
        90% with the chosen parameters and number of trees, as ``GridSearchCV`` does in the authors'
        code (one more fit per fold).
    validation_size : float
        Share of the fold's training patients used for validation (0.2).
    params : mapping, optional
        Fixed xgboost parameters (default :data:`AUTHORS_FIXED_PARAMS`: eta 0.01, subsample 0.8,
        gamma 1, hist).
    max_bin : int
        Histogram bins (default 16, see :data:`BOOK_MAX_BIN`; xgboost's default is 256). A
        ``max_bin`` in ``params`` wins.
    procedure : {'book', 'reference'}
        ``'reference'`` runs the procedure as it was before issue 18 (every fit evaluated on the
        validation part after each boosting round, also when nothing stops early); ``'book'``
        evaluates per round only where early stopping needs it. Both give identical predictions,
        choices and trees; ``benchmarks/bench_models.py`` times them side by side.
    keep_boosters : sequence of str, True or None
        Models whose fold boosters are kept (for importance and SHAP); ``True`` keeps all, None
        (stored as ``()``) none.
    record_traces : bool
        Keep each grid point's per-round validation AUC and test scores in ``CVResult.traces``
        (for the benchmark's replay of other grid-search policies, such as successive halving).
    execution : Execution
        Where and how the fits run (workers, device, threads, Dask scheduler).

    Raises
    ------
    ValueError
        On construction: unknown models, comparators, metrics, refit policies, procedures, subsets or
        devices, or invalid numbers (the message names the allowed values).
    """

    models: Sequence[str] = ("eat", "ai_ctac", "ai_spect", "ai_hybrid", "all")
    comparators: Sequence[str] = ("cac", "perfusion")
    n_folds: int = 10
    seed: int = DEFAULT_SEED
    radiomics_subset: str = "subset15"
    structures: Sequence[str] | None = None
    grid: Mapping[str, Sequence] = field(default_factory=lambda: dict(AUTHORS_GRID))
    early_stopping_rounds: int = 50
    stopping_metric: str = "auc"
    refit: str = "train"
    validation_size: float = VALIDATION_SIZE
    params: Mapping | None = None
    max_bin: int = BOOK_MAX_BIN
    procedure: str = "book"
    keep_boosters: Sequence[str] | bool | None = ("ai_ctac",)
    record_traces: bool = False
    execution: Execution = field(default_factory=Execution)

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)  # frozen: normalise in place once
        if not isinstance(self.execution, Execution):
            raise TypeError(f"execution must be an Execution, got {type(self.execution).__name__}")
        set_("models", _names(self.models, "models"))
        check_cv_arguments(self.models, self.n_folds, self.early_stopping_rounds, self.execution.n_jobs,
                           self.execution.threads_per_fit)
        if self.early_stopping_rounds is None:
            raise ValueError("early_stopping_rounds is required by the book's procedure")
        set_("comparators", _names(self.comparators, "comparators"))
        for c in self.comparators:
            if _check_model(c)["kind"] != "univariate":
                raise ValueError(f"comparator {c!r} is not univariate; allowed: {', '.join(model_names('univariate'))}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        _check_radiomics_subset(self.radiomics_subset)
        if self.structures is not None:
            set_("structures", _names(self.structures, "structures"))
            if not self.structures:
                raise ValueError("structures is empty; None takes the default structures")
        grid_points(self.grid)  # checks the grid
        set_("grid", {k: tuple(v) for k, v in self.grid.items()})
        if self.stopping_metric not in STOPPING_METRICS:
            raise ValueError(f"unknown stopping_metric {self.stopping_metric!r}; allowed: {', '.join(STOPPING_METRICS)}")
        if self.refit not in REFIT_POLICIES:
            raise ValueError(f"unknown refit policy {self.refit!r}; allowed: {', '.join(REFIT_POLICIES)}")
        if self.procedure not in PROCEDURES:
            raise ValueError(f"unknown procedure {self.procedure!r}; allowed: {', '.join(PROCEDURES)}")
        _check_validation_size(self.validation_size)
        if self.params is not None:
            if not isinstance(self.params, Mapping):
                raise ValueError(f"params must be a mapping of xgboost parameters or None, got {self.params!r}")
            set_("params", dict(self.params))
        set_("max_bin", check_max_bin(self.max_bin))
        _keep_set(self.keep_boosters, self.models)  # checks the names
        if self.keep_boosters is not True:
            set_("keep_boosters", () if self.keep_boosters in (False, None)
                 else (self.keep_boosters,) if isinstance(self.keep_boosters, str) else tuple(self.keep_boosters))
        if not isinstance(self.record_traces, bool):
            raise ValueError(f"record_traces must be True or False, got {self.record_traces!r}")

    def replace(self, **changes) -> CVConfig:
        """A copy with some fields changed (checked again), as :func:`dataclasses.replace`.

        For the execution: ``config.replace(execution=config.execution.replace(n_jobs=4))``.
        """
        return dataclasses.replace(self, **changes)


def cross_validate(cohort: pd.DataFrame, ct_features: pd.DataFrame | None, config: CVConfig = CVConfig(), *,
                   chosen: pd.DataFrame | None = None, chosen_trees: bool = False) -> CVResult:
    """Out-of-fold mortality scores of each model, by the paper's cross-validation.

    Parameters
    ----------
    cohort, ct_features : DataFrame
        The cohort table and its CT features (see :func:`feature_matrix`).
    config : CVConfig
        The models, folds, seed, grid and procedure, and where the fits run (``config.execution``);
        default the book's procedure on the five XGBoost models and the two comparators.
    chosen : DataFrame, optional
        The ``best_params`` of an earlier run (same seed and folds): each model and fold then fits
        only the grid point chosen there, still early-stopped on the validation part. Sensitivity
        analyses that change the features but not the procedure (15 vs 32 radiomics features) use
        it to skip the grid search: one fit per fold instead of one per grid point.
    chosen_trees : bool
        With ``chosen``: also reuse the number of trees chosen there (``n_estimators``), fitting
        exactly that many without early stopping, so that the two runs differ only in their
        features. Sensitivity analyses then cost a fraction of a fit with early stopping.

    Returns
    -------
    CVResult
        Its ``config`` records the settings as a plain dict (the device resolved, the structures
        listed, the comparators appended to the models).

    Raises
    ------
    ValueError
        ``chosen_trees`` without ``chosen``, a ``chosen`` table without a row per model and fold or
        off the grid, ``device='cuda'`` without a usable GPU, or a cohort that the folds or the
        feature sets cannot use. (A wrong setting fails earlier, when the :class:`CVConfig` is made.)

    Examples
    --------
    >>> config = CVConfig(models=("eat", "ai_ctac"), n_folds=4, execution=Execution(n_jobs=2))  # doctest: +SKIP
    >>> cv = cross_validate(cohort, ct_features, config)  # doctest: +SKIP
    >>> cv32 = cross_validate(cohort, ct_features, config.replace(radiomics_subset="all"),
    ...                       chosen=cv.best_params, chosen_trees=True)  # doctest: +SKIP
    """
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    if not isinstance(config, CVConfig):
        raise TypeError(f"config must be a CVConfig, got {type(config).__name__}")
    if chosen_trees and chosen is None:
        raise ValueError("chosen_trees reuses the number of trees of 'chosen'; pass chosen as well")
    c, ex = config, config.execution
    models = list(c.models) + [m for m in c.comparators if m not in c.models]
    keep = _keep_set(c.keep_boosters, models)
    points, cap = grid_points(c.grid)
    fixed = {"max_bin": c.max_bin, **(AUTHORS_FIXED_PARAMS if c.params is None else c.params)}
    device = resolve_device(ex.device)
    structures = list(default_structures() if c.structures is None else c.structures)
    n_folds, seed = c.n_folds, c.seed

    y_all = cohort[OUTCOME].to_numpy().astype(int)
    fold = outer_folds(y_all, n_folds, seed)
    ids = cohort[ID].to_numpy()
    splits = []
    for k in range(n_folds):
        test = np.flatnonzero(fold == k)
        tr, va = inner_split(np.flatnonzero(fold != k), y_all, fold_seed(seed, k), c.validation_size)
        splits.append((tr, va, test))

    tasks, feature_names, uni = [], {}, {}
    for m in models:
        X, y = feature_matrix(cohort, ct_features, m, c.radiomics_subset, structures)
        feature_names[m] = list(X.columns)
        if FEATURE_SETS[m]["kind"] == "univariate":
            uni[m] = X.iloc[:, 0].to_numpy(np.float64)
            continue
        arr, names, types = feature_arrays(X)
        for k, (tr, va, te) in enumerate(splits):
            fold_points = points if chosen is None else [_chosen_point(chosen, m, k, points)]
            fold_cap, stopping = cap, c.early_stopping_rounds
            if chosen_trees:
                fold_cap, stopping = _chosen_trees(chosen, m, k), None
            tasks.append((arr.shape[1], m, k, dict(
                model=m, fold=k, X=arr, y=y_all, names=names, types=types, train=tr, valid=va, test=te,
                points=fold_points, cap=fold_cap, fixed=fixed, early_stopping_rounds=stopping,
                stopping_metric=c.stopping_metric, seed=fold_seed(seed, k), device=device,
                nthread=ex.threads_per_fit, refit=c.refit, keep=m in keep, procedure=c.procedure,
                traces=c.record_traces)))
    # Widest models first, so that the last tasks to start are the short ones.
    tasks.sort(key=lambda t: -t[0])
    n_workers = worker_count(ex.n_jobs, device)
    logger.info("cross_validate: %d models x %d folds, %d fits per fold, cap %d trees, %s, %s",
                len(models), n_folds, 1 if chosen is not None else len(points), cap, device,
                f"Dask scheduler {ex.scheduler}" if ex.scheduler else f"{n_workers} worker(s)")
    # In completion order, to log each task as it finishes; results are put back in order below.
    done = run_tasks(_fit_fold, [t[3] for t in tasks], n_workers, ex.scheduler)
    out = []
    for r in done:
        out.append(r)
        logger.info("%s fold %d: %d trees kept, validation AUC %.3f, %.1f s (%d/%d)", r["model"], r["fold"],
                    r["best"]["n_estimators"], r["best"]["validation_auc"], r["timing"]["wall_s"],
                    len(out), len(tasks))
    out.sort(key=lambda r: (models.index(r["model"]), r["fold"]))

    records = []
    for m in models:
        if m in uni:
            records.append(pd.DataFrame({ID: ids, "fold": fold, "model": m, "score": uni[m], OUTCOME: y_all}))
    for r in out:
        te = splits[r["fold"]][2]
        records.append(pd.DataFrame({ID: ids[te], "fold": r["fold"], "model": r["model"],
                                     "score": r["score"].astype(np.float64), OUTCOME: y_all[te]}))
    predictions = pd.concat(records, ignore_index=True)
    predictions["_m"] = predictions["model"].map(models.index)
    predictions = (predictions.sort_values(["_m", "fold", ID], kind="stable")
                   .drop(columns="_m").reset_index(drop=True))
    boosters = {m: [r["booster"] for r in out if r["model"] == m] for m in models if m in keep and m not in uni}
    timings = pd.DataFrame([r["timing"] for r in out],
                           columns=["model", "fold", "wall_s", "cpu_s", "n_fits", "trees", "data_cpu_s"])
    traces = pd.DataFrame([t for r in out for t in r["traces"]],
                          columns=["model", "fold", "grid_point", "validation_auc_by_round", "test_score"]) \
        if c.record_traces else None
    # Tasks in other processes report their own CPU time; this process's covers in-process tasks.
    elsewhere = in_other_processes(n_workers, len(tasks), ex.scheduler)
    cpu = time.process_time() - t_cpu + (timings["cpu_s"].sum() if elsewhere else 0.0)
    result = CVResult(
        predictions=predictions,
        folds=pd.DataFrame({ID: ids, "fold": fold, OUTCOME: y_all}),
        best_params=pd.DataFrame([r["best"] for r in out]),
        grid_results=pd.DataFrame([row for r in out for row in r["grid"]]),
        boosters=boosters, feature_names=feature_names, timings=timings,
        wall_s=time.perf_counter() - t_wall, cpu_s=cpu, traces=traces,
        config={"method": "early_stopping", "procedure": c.procedure, "models": models, "n_folds": n_folds,
                "seed": seed, "radiomics_subset": c.radiomics_subset, "structures": structures,
                "grid": {k: list(v) for k, v in c.grid.items()}, "params": fixed,
                "early_stopping_rounds": c.early_stopping_rounds, "stopping_metric": c.stopping_metric,
                "refit": c.refit, "device": device, "n_jobs": ex.n_jobs, "scheduler": ex.scheduler,
                "threads_per_fit": ex.threads_per_fit, "validation_size": c.validation_size,
                "reused_choice": chosen is not None, "reused_trees": chosen_trees})
    logger.info("cross_validate: %.1f s wall, %.1f s CPU", result.wall_s, result.cpu_s)
    return result


def _chosen_trees(chosen: pd.DataFrame, model: str, fold: int) -> int:
    """The number of trees an earlier run kept for ``model`` in ``fold``."""
    row = chosen[(chosen["model"] == model) & (chosen["fold"] == fold)]
    if len(row) != 1 or "n_estimators" not in row:
        raise ValueError(f"chosen needs one row with 'n_estimators' for model {model!r} fold {fold}")
    return int(row.iloc[0]["n_estimators"])


def _chosen_point(chosen: pd.DataFrame, model: str, fold: int, points: list[dict]) -> dict:
    """The grid point an earlier run chose for ``model`` in ``fold`` (a ValueError if it has none)."""
    keys = list(points[0])
    missing = [c for c in ("model", "fold", *keys) if c not in chosen]
    if missing:
        raise ValueError(f"chosen lacks the columns {missing}; pass a CVResult's best_params")
    row = chosen[(chosen["model"] == model) & (chosen["fold"] == fold)]
    if len(row) != 1:
        raise ValueError(f"chosen has {len(row)} rows for model {model!r} fold {fold}; expected 1")
    point = {k: row.iloc[0][k] for k in keys}
    # Back to the grid's own values (and types): the table may hold numpy scalars or floats.
    for p in points:
        if all(np.isclose(float(p[k]), float(point[k])) for k in keys):
            return dict(p)
    raise ValueError(f"the point chosen for model {model!r} fold {fold} ({point}) is not on the grid")


# -- feature importance ------------------------------------------------------------------------------
def feature_structure(name: str) -> str:
    """The structure a feature belongs to: ``ct__<s>__<f>`` -> ``s``; CAC and EAT -> their
    pseudo-structures (:data:`PSEUDO_STRUCTURES`); any other variable is its own group."""
    if name.startswith(manifest.CT_PREFIX):
        return manifest.parse_feature_column(name)[0]
    return PSEUDO_STRUCTURES.get(name, name)


def _boosters_of(source, model: str) -> list:
    import xgboost as xgb

    if isinstance(source, CVResult):
        if model not in source.boosters:
            raise ValueError(f"no boosters kept for model {model!r} (kept: {', '.join(source.boosters) or 'none'}); "
                             "run cross_validate with keep_boosters including it")
        return list(source.boosters[model])
    if isinstance(source, xgb.Booster):
        return [source]
    boosters = list(source)
    if not boosters or not all(isinstance(b, xgb.Booster) for b in boosters):
        raise ValueError("expected a CVResult, an xgboost.Booster or a non-empty list of Boosters")
    return boosters


def structure_importance(source, importance_type: str = "total_gain", model: str = "ai_ctac") -> pd.DataFrame:
    """XGBoost feature importance of a model aggregated per structure, averaged over folds.

    Parameters
    ----------
    source : CVResult, xgboost.Booster or list of Boosters
        The fold models (from a CVResult: those of ``model``).
    importance_type : {'total_gain', 'gain', 'weight', 'total_cover', 'cover'}
        Default ``'total_gain'``: the total reduction of the training loss achieved by the splits on
        the structure's features, which is what the paper's "increase in accuracy resulting from the
        addition of each feature" describes (it does not name the type). Totals add up: a
        structure's value is the sum over its features. ``'gain'`` and ``'cover'`` (xgboost's per
        split averages) cannot be summed; for them a structure's value is its total over its
        number of splits (``total_gain / weight``), the average gain of a split on the structure.
    model : str
        Which boosters of a CVResult.

    Returns
    -------
    DataFrame
        ``structure, importance, share, rank``, sorted by importance (descending). ``importance``
        is the mean over folds (a structure without splits in a fold counts 0 for the totals and
        ``weight``, and is left out of that fold's mean for ``gain`` and ``cover``); ``share`` its
        fraction of the summed importance. Every structure among the model's features appears; CAC
        and EAT as ``coronary_calcium`` and ``epicardial_fat``.

    Raises
    ------
    ValueError
        Unknown importance type or no boosters.
    """
    if importance_type not in IMPORTANCE_TYPES:
        raise ValueError(f"unknown importance_type {importance_type!r}; allowed: {', '.join(IMPORTANCE_TYPES)}")
    boosters = _boosters_of(source, model)
    per_fold = []
    for b in boosters:
        structures = pd.Index(list(dict.fromkeys(feature_structure(f) for f in b.feature_names or [])))
        if importance_type in ("gain", "cover"):
            total = _sum_by_structure(b.get_score(importance_type=f"total_{importance_type}"), structures)
            splits = _sum_by_structure(b.get_score(importance_type="weight"), structures)
            # NaN where a fold never splits on the structure: it does not enter that fold's mean.
            values = total / splits.where(splits > 0)
        else:
            values = _sum_by_structure(b.get_score(importance_type=importance_type), structures)
        per_fold.append(values)
    table = pd.concat(per_fold, axis=1)
    if importance_type in ("gain", "cover"):
        mean = table.mean(axis=1, skipna=True).fillna(0.0)
    else:
        mean = table.fillna(0.0).mean(axis=1)
    out = pd.DataFrame({"structure": mean.index, "importance": mean.to_numpy()})
    total = out["importance"].sum()
    out["share"] = out["importance"] / total if total > 0 else 0.0
    out = out.sort_values(["importance", "structure"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def _sum_by_structure(scores: Mapping[str, float], structures: pd.Index) -> pd.Series:
    s = pd.Series(0.0, index=structures)
    for f, v in scores.items():
        st = feature_structure(f)
        s[st] = s.get(st, 0.0) + float(v)
    return s


# -- SHAP -------------------------------------------------------------------------------------------
def shap_values(cv_result: CVResult, cohort: pd.DataFrame, ct_features: pd.DataFrame | None,
                model: str = "ai_ctac") -> pd.DataFrame:
    """Out-of-fold SHAP values: every patient explained by the model of the fold that tested it.

    Computed by xgboost's ``pred_contribs=True``, the exact path-dependent TreeSHAP algorithm
    (Lundberg et al. 2020) that ``shap.TreeExplainer`` implements for tree models, in C++ without
    converting the trees; values are on the margin (log-odds) scale.

    Parameters
    ----------
    cv_result : CVResult
        With boosters kept for ``model``.
    cohort, ct_features : DataFrame
        The tables the CVResult was computed from (the features are rebuilt with its settings).
    model : str
        The model to explain.

    Returns
    -------
    DataFrame
        Index ``patient_id`` (cohort order), one column per feature plus ``bias`` (the fold
        model's expected margin); each row sums to the patient's out-of-fold margin.
    """
    import xgboost as xgb

    boosters = _boosters_of(cv_result, model)
    X, _ = feature_matrix(cohort, ct_features, model, cv_result.config.get("radiomics_subset", "subset15"),
                          cv_result.config.get("structures"))
    arr, names, types = feature_arrays(X)
    folds = cv_result.folds.set_index(ID)["fold"]
    if not X.index.isin(folds.index).all():
        raise ValueError("cohort holds patients that the cross-validation did not see")
    fold = folds.reindex(X.index).to_numpy()
    folds_run = cv_result.config.get("folds_run", list(range(len(boosters))))
    out = np.full((len(X), len(names) + 1), np.nan)
    for b, k in zip(boosters, folds_run):
        if list(b.feature_names) != names:
            raise ValueError(f"fold {k}'s booster features differ from the {model!r} feature matrix")
        rows = np.flatnonzero(fold == k)
        if rows.size:
            d = xgb.DMatrix(arr[rows], feature_names=names, feature_types=types, enable_categorical="c" in types)
            out[rows] = b.predict(d, pred_contribs=True)
    df = pd.DataFrame(out, index=X.index, columns=[*names, "bias"])
    return df.dropna(how="all")


def shap_by_structure(shap: pd.DataFrame) -> pd.DataFrame:
    """Per-structure SHAP values: the sum of each structure's features' values (``bias`` kept).

    SHAP values are additive, so a structure's sum is the contribution of all its features together.
    Columns follow the first appearance of each structure, ``bias`` last.
    """
    if "bias" not in shap:
        raise ValueError("expected a shap_values() table (with a 'bias' column)")
    feats = [c for c in shap.columns if c != "bias"]
    groups = pd.Series([feature_structure(c) for c in feats], index=feats)
    agg = shap[feats].T.groupby(groups.to_numpy(), sort=False).sum().T
    agg["bias"] = shap["bias"]
    return agg


def top_structures(shap_row: pd.Series, k: int = 10, rest: bool = False) -> pd.Series:
    """The ``k`` structures with the largest |SHAP| of one patient (a waterfall plot's bars).

    Parameters
    ----------
    shap_row : Series
        One row of :func:`shap_by_structure` (``bias`` is ignored).
    k : int
        Number of structures.
    rest : bool
        Append ``'<n> other structures'`` with the sum of the remaining ones.

    Returns
    -------
    Series
        SHAP values sorted by absolute value, largest first.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    s = shap_row.drop(labels=["bias"], errors="ignore").astype(float)
    order = s.abs().sort_values(ascending=False, kind="stable").index
    top = s[order[:k]]
    if rest and len(order) > k:
        top[f"{len(order) - k} other structures"] = s[order[k:]].sum()
    return top


def importance_by_group(cv_result: CVResult, cohort: pd.DataFrame, ct_features: pd.DataFrame | None,
                        by: Sequence[str] = ("site", "image_quality"), model: str = "ai_ctac",
                        shap: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-structure importance within subgroups (the paper's Supplementary Fig. 2).

    A structure's importance in a group is the mean absolute per-structure SHAP value
    (:func:`shap_by_structure`) over the group's patients, each explained by its own fold's model.
    Unlike XGBoost's gain (a property of the trees, the same for every patient) this measures what
    the structures contribute to the predictions of the group's patients, without refitting models
    on small groups.

    Parameters
    ----------
    cv_result, cohort, ct_features, model
        As in :func:`shap_values`.
    by : sequence of str
        Cohort columns defining the groups (missing values form a group ``'missing'``).
    shap : DataFrame, optional
        Precomputed :func:`shap_values` of ``model`` (computed otherwise).

    Returns
    -------
    DataFrame
        ``by, group, structure, importance, share, rank, n_patients``; ``by='all'`` rows give the
        whole cohort.
    """
    if isinstance(by, str):
        by = [by]
    for col in by:
        if col not in cohort:
            raise ValueError(f"unknown grouping column {col!r}; allowed: {', '.join(map(str, cohort.columns))}")
    if shap is None:
        shap = shap_values(cv_result, cohort, ct_features, model)
    per = shap_by_structure(shap).drop(columns="bias").abs()
    meta = cohort.set_index(ID).reindex(per.index)
    frames = []
    for col, labels in [("all", pd.Series("all", index=per.index)),
                        *[(c, meta[c].astype("object").fillna("missing").astype(str)) for c in by]]:
        for level, idx in labels.groupby(labels, sort=True).groups.items():
            mean = per.loc[idx].mean(axis=0)
            g = pd.DataFrame({"by": col, "group": level, "structure": mean.index, "importance": mean.to_numpy()})
            g["share"] = g["importance"] / g["importance"].sum()
            g = g.sort_values("importance", ascending=False, kind="stable")
            g["rank"] = np.arange(1, len(g) + 1)
            g["n_patients"] = len(idx)
            frames.append(g)
    return pd.concat(frames, ignore_index=True)
