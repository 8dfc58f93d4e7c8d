"""Calibration of the models' out-of-fold risks: curves, summary measures and recalibration.

A model is *calibrated* when, among patients given a risk of ``p``, a share ``p`` die. Chapter 8 asks it
of every XGBoost model of chapter 5, on the same out-of-fold predictions whose AUCs chapter 5 reports.

Measures (:func:`calibration_table`)
------------------------------------
* **Calibration-in-the-large** (CITL): the intercept ``a`` of the logistic model
  ``logit P(death) = a + logit(p)`` (the risk's logit as an offset); 0 when the mean risk matches the
  death rate, negative when the model over-predicts.
* **Calibration slope**: ``b`` of ``logit P(death) = a + b logit(p)``; 1 when the spread of the risks is
  right, above 1 when the risks are too close together (under-fitting, or shrinkage), below 1 when they
  are too extreme (over-fitting). Both from statsmodels' GLM (maximum likelihood, Wald intervals).
* **Brier score**: the mean of ``(p - y)^2``, and the scaled Brier score ``1 - Brier / (ybar (1 - ybar))``
  (0 for a model that gives everybody the death rate).
* **Integrated calibration index** (ICI; Austin & Steyerberg 2019): the mean over patients of
  ``|p - s(p)|``, where ``s`` is the smoothed calibration curve; E50, E90 and Emax are its median, 90th
  percentile and maximum. The curve is statsmodels' lowess of death on the risk (local linear, tricube
  weights, span :data:`LOWESS_FRAC`, no robustness iterations; points closer than 1% of the risks' range
  share a local fit, as R's ``lowess`` does by default).

Curves (:func:`binned_calibration`, :func:`smoothed_calibration`): ten equal-size groups of patients by
risk with Wilson intervals of the death rate, and the lowess curve with a percentile-bootstrap band
(stratified resamples of patients, :mod:`ctac_helpers.stats.bootstrap`'s).

Recalibration (:func:`recalibrate_out_of_fold`)
-----------------------------------------------
Logistic (Platt) recalibration: ``logit p' = a + b x``, with ``x`` the logit of the risk (or, for the
raw univariate comparators, the variable on the scale of :data:`RISK_SCALES`). Each outer fold of the
cross-validation was scored by its own model, whose scores need not share a scale with the other folds'
(a fold model of a few trees gives risks close to the death rate), so each fold of an XGBoost model gets
its own maps, *cross-fitted*: the fold's patients are split into ``inner_folds`` stratified parts and each
part is recalibrated by the map fitted on the fold's other parts. No patient's own outcome enters their
recalibrated risk, and every map is fitted on patients the fold's model never saw. A fold with too few
deaths for that (``min_events``) takes the map fitted on the other folds' patients instead, which the
report says. A raw variable (the comparators) has one scale in every fold: its map for a fold is fitted on
the other folds' patients (``pooling='others'``).

References
----------
.. [1] Cox DR. Two further applications of a model for binary regression. *Biometrika* 1958;45:562-565.
.. [2] Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk models was defined:
   from utopia to empirical data. *J Clin Epidemiol* 2016;74:167-176.
.. [3] Austin PC, Steyerberg EW. The Integrated Calibration Index (ICI) and related metrics for
   quantifying the calibration of logistic regression models. *Stat Med* 2019;38:4051-4065.
.. [4] Platt J. Probabilistic outputs for support vector machines and comparisons to regularized
   likelihood methods. In: *Advances in Large Margin Classifiers*. MIT Press, 1999.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctac_helpers.stats.bootstrap import resample_indices
from ctac_helpers.stats.checks import as_labels, as_score_1d, check_level, check_n_resamples, check_seed

logger = logging.getLogger(__name__)

__all__ = [
    "CalibrationFit",
    "LOWESS_FRAC",
    "RISK_SCALES",
    "binned_calibration",
    "brier_score",
    "calibration_errors",
    "calibration_fit",
    "calibration_table",
    "POOLING",
    "logit",
    "recalibrate_out_of_fold",
    "risk_scale",
    "scaled_brier_score",
    "smooth_calibration",
    "smoothed_calibration",
]

#: Span of the lowess calibration curve (the share of patients in each local fit), R's ``lowess`` default.
LOWESS_FRAC = 2 / 3
#: Share of the risks' range within which lowess reuses a local fit (R's ``lowess`` default ``delta``).
_LOWESS_DELTA = 0.01
#: Risks are clipped to [eps, 1 - eps] before taking logits (a tree model can output 0 or 1 in float32).
_EPS = 1e-12
#: How the raw univariate comparators enter a logistic recalibration: the CAC score is skewed over four
#: orders of magnitude (its log), stress TPD is a percentage (as is). Scores of the XGBoost models are
#: risks and enter as logits. A comparator missing here is an error, not a guess.
RISK_SCALES: dict[str, str] = {"cac": "log1p", "perfusion": "identity"}
_SCALES = ("logit", "log1p", "identity")


# -- inputs ---------------------------------------------------------------------------------------
def _risks(p, n: int, name: str = "risk") -> np.ndarray:
    """``p`` as a finite 1-D array of risks in [0, 1] (ValueError otherwise)."""
    p = as_score_1d(p, n, name)
    outside = (p < 0) | (p > 1)
    if outside.any():
        raise ValueError(f"{name} must be risks between 0 and 1; {int(outside.sum())} value(s) lie outside, "
                         f"e.g. {p[outside][0]!r} (a raw score such as the CAC score is recalibrated first)")
    return p


def _labels_and_risks(y, p) -> tuple[np.ndarray, np.ndarray]:
    labels = as_labels(y, "y")
    return labels.astype(float), _risks(p, labels.size)


def logit(p) -> np.ndarray:
    """The log-odds of risks ``p``, clipped to [1e-12, 1 - 1e-12] first."""
    q = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(q) - np.log1p(-q)


def risk_scale(model: str, kind: str) -> str:
    """The scale on which a model's score enters a logistic recalibration.

    Parameters
    ----------
    model : str
        The model's name (a key of :data:`ctac_helpers.models.cv.FEATURE_SETS`).
    kind : {'xgboost', 'univariate'}
        Its kind: an XGBoost model's score is a risk (``'logit'``); a univariate comparator's scale is
        :data:`RISK_SCALES`' entry.
    """
    if kind == "xgboost":
        return "logit"
    if kind != "univariate":
        raise ValueError(f"unknown kind {kind!r}; allowed: 'xgboost', 'univariate'")
    if model not in RISK_SCALES:
        raise ValueError(f"no recalibration scale for the univariate model {model!r}; add it to RISK_SCALES "
                         f"(known: {', '.join(RISK_SCALES)}; allowed scales: {', '.join(_SCALES)})")
    return RISK_SCALES[model]


def _transform(score: np.ndarray, scale: str) -> np.ndarray:
    if scale == "logit":
        return logit(score)
    if scale == "log1p":
        if np.any(score < 0):
            raise ValueError("a 'log1p' score must be >= 0 (e.g. a CAC score)")
        return np.log1p(score)
    if scale == "identity":
        return np.asarray(score, dtype=float)
    raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(_SCALES)}")


# -- summary measures -----------------------------------------------------------------------------
def brier_score(y, p) -> float:
    """The Brier score: the mean squared difference between the risk and the outcome (0/1)."""
    y, p = _labels_and_risks(y, p)
    return float(np.mean((p - y) ** 2))


def scaled_brier_score(y, p) -> float:
    """``1 - Brier / (ybar (1 - ybar))``: 0 for the death rate given to everybody, 1 for a perfect model."""
    y, p = _labels_and_risks(y, p)
    rate = y.mean()
    return float(1.0 - np.mean((p - y) ** 2) / (rate * (1.0 - rate)))


@dataclass(frozen=True)
class CalibrationFit:
    """Calibration-in-the-large and calibration slope of risks ``p`` (logistic recalibration models).

    Attributes
    ----------
    citl, citl_ci : float, (float, float)
        Intercept of ``logit P(y=1) = a + logit(p)`` and its Wald interval.
    slope, slope_ci : float, (float, float)
        ``b`` of ``logit P(y=1) = a + b logit(p)`` and its Wald interval (NaN when the risks are all equal
        or the outcome is separated by them).
    intercept : float
        ``a`` of the slope model.
    """

    citl: float
    citl_ci: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    intercept: float


def _glm(y: np.ndarray, X: np.ndarray, offset: np.ndarray | None = None):
    """A binomial GLM fit (statsmodels), or None when it cannot be estimated (separation, no convergence)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            # PerfectSeparationWarning (statsmodels >= 0.14) means the estimate runs off to infinity
            warnings.filterwarnings("error", message=".*[Pp]erfect separation.*")
            return sm.GLM(y, X, family=sm.families.Binomial(), offset=offset).fit()
        except (PerfectSeparationError, ConvergenceWarning, np.linalg.LinAlgError, ValueError, Warning) as exc:
            logger.debug("logistic fit not estimable: %s", exc)
            return None


def calibration_fit(y, p, level: float = 0.95) -> CalibrationFit:
    """Calibration-in-the-large and calibration slope of the risks ``p`` (see the module docstring).

    Parameters
    ----------
    y : array-like of 0/1
        Outcome (both classes present).
    p : array-like
        Risks in [0, 1], one per patient.
    level : float
        Level of the Wald intervals.

    Returns
    -------
    CalibrationFit
    """
    y, p = _labels_and_risks(y, p)
    level = check_level(level)
    alpha = 1 - level
    lp = logit(p)
    nan2 = (math.nan, math.nan)
    fit = _glm(y, np.ones((y.size, 1)), offset=lp)
    citl, citl_ci = (math.nan, nan2) if fit is None else (
        float(fit.params[0]), tuple(float(v) for v in fit.conf_int(alpha)[0]))
    slope, slope_ci, intercept = math.nan, nan2, math.nan
    if np.ptp(lp) > 0:
        fit = _glm(y, np.column_stack([np.ones(y.size), lp]))
        if fit is not None:
            ci = fit.conf_int(alpha)
            intercept, slope, slope_ci = float(fit.params[0]), float(fit.params[1]), (float(ci[1][0]), float(ci[1][1]))
    return CalibrationFit(citl, citl_ci, slope, slope_ci, intercept)


def smooth_calibration(y, p, frac: float = LOWESS_FRAC) -> np.ndarray:
    """The smoothed calibration curve at each patient's risk: lowess of the outcome on the risk.

    Returns the observed death rate the curve gives at each ``p`` (clipped to [0, 1]), in the patients'
    order. See the module docstring for the smoother's settings.
    """
    y, p = _labels_and_risks(y, p)
    return _lowess(y, p, frac)


def _lowess(y: np.ndarray, p: np.ndarray, frac: float) -> np.ndarray:
    from statsmodels.nonparametric.smoothers_lowess import lowess

    if not 0 < frac <= 1:
        raise ValueError(f"frac must lie in (0, 1], got {frac!r}")
    if np.ptp(p) == 0:  # one risk for everybody: the curve is the death rate
        return np.full(p.size, y.mean())
    fitted = lowess(y, p, frac=frac, it=0, delta=_LOWESS_DELTA * float(np.ptp(p)), return_sorted=False)
    return np.clip(fitted, 0.0, 1.0)


def calibration_errors(y, p, frac: float = LOWESS_FRAC) -> dict[str, float]:
    """ICI, E50, E90 and Emax: the mean, median, 90th percentile and maximum of ``|p - s(p)|``."""
    y, p = _labels_and_risks(y, p)
    d = np.abs(p - _lowess(y, p, frac))
    return {"ici": float(d.mean()), "e50": float(np.median(d)), "e90": float(np.quantile(d, 0.9)),
            "emax": float(d.max())}


# -- curves ---------------------------------------------------------------------------------------
def binned_calibration(y, p, n_bins: int = 10, level: float = 0.95) -> pd.DataFrame:
    """Observed death rate against mean risk in ``n_bins`` equal-size groups of patients by risk.

    Patients are ordered by risk (ties in their given order) and cut into groups of equal size (sizes
    differ by at most one), so that tied risks, common in models of few trees, never empty a group.

    Returns
    -------
    DataFrame
        ``bin, n, deaths, mean_risk, observed, ci_low, ci_high`` (Wilson interval of the death rate).
    """
    from statsmodels.stats.proportion import proportion_confint

    y, p = _labels_and_risks(y, p)
    level = check_level(level)
    if not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= y.size:
        raise ValueError(f"n_bins must be an integer between 1 and the number of patients ({y.size}), got {n_bins!r}")
    rows = []
    for i, idx in enumerate(np.array_split(np.argsort(p, kind="stable"), int(n_bins))):
        deaths, n = int(y[idx].sum()), idx.size
        low, high = proportion_confint(deaths, n, alpha=1 - level, method="wilson")
        rows.append({"bin": i + 1, "n": n, "deaths": deaths, "mean_risk": float(p[idx].mean()),
                     "observed": deaths / n, "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows)


def smoothed_calibration(y, p, grid=None, *, n_resamples: int = 200, seed: int, level: float = 0.95,
                         frac: float = LOWESS_FRAC, n_grid: int = 60) -> tuple[pd.DataFrame, dict]:
    """The lowess calibration curve on a grid of risks with a percentile-bootstrap band, and the ICI's interval.

    Parameters
    ----------
    y, p : array-like
        Outcome (0/1) and risks.
    grid : array-like, optional
        Risks at which to report the curve; default ``n_grid`` points evenly spaced between the 1st and
        99th percentiles of ``p`` (the curve is not shown where few patients are).
    n_resamples : int
        Bootstrap resamples (stratified by outcome, seeded: the same ``seed`` gives the same patients
        for every model, so bands of different models are paired).
    seed : int
        Seed of the resampling.
    level : float
        Level of the band and of the ICI's interval.
    frac : float
        Lowess span.

    Returns
    -------
    curve : DataFrame
        ``risk, observed, ci_low, ci_high``: the curve of all patients at each grid risk and the band
        (percentiles of the resampled curves; a resample whose risks do not reach a grid point leaves it
        out).
    ici : dict
        ``ici, ici_low, ici_high``: the ICI of all patients and its percentile interval.
    """
    y, p = _labels_and_risks(y, p)
    level = check_level(level)
    n_resamples = check_n_resamples(n_resamples)
    seed = check_seed(seed)
    if grid is None:
        lo, hi = np.quantile(p, [0.01, 0.99])
        grid = np.linspace(lo, hi, int(n_grid)) if hi > lo else np.array([lo])
    grid = np.asarray(grid, dtype=float)
    curve = _curve_on_grid(y, p, grid, frac)
    ici = float(np.mean(np.abs(p - _lowess(y, p, frac))))
    boot_curves = np.full((n_resamples, grid.size), np.nan)
    boot_ici = np.empty(n_resamples)
    labels = y.astype(bool)
    for b, idx in enumerate(resample_indices(labels, n_resamples, seed, stratified=True)):
        yb, pb = y[idx], p[idx]
        fitted = _lowess(yb, pb, frac)
        boot_ici[b] = np.mean(np.abs(pb - fitted))
        boot_curves[b] = _interp_inside(grid, pb, fitted)
    tail = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a grid point no resample reaches: NaN
        low = np.nanquantile(boot_curves, tail, axis=0)
        high = np.nanquantile(boot_curves, 1 - tail, axis=0)
    table = pd.DataFrame({"risk": grid, "observed": curve, "ci_low": low, "ci_high": high})
    interval = {"ici": ici, "ici_low": float(np.quantile(boot_ici, tail)),
                "ici_high": float(np.quantile(boot_ici, 1 - tail))}
    return table, interval


def _curve_on_grid(y: np.ndarray, p: np.ndarray, grid: np.ndarray, frac: float) -> np.ndarray:
    return _interp_inside(grid, p, _lowess(y, p, frac))


def _interp_inside(grid: np.ndarray, x: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """The curve ``(x, fitted)`` read at ``grid`` (linear between risks), NaN outside the risks' range."""
    order = np.argsort(x, kind="stable")
    xs, fs = x[order], fitted[order]
    xs, first = np.unique(xs, return_index=True)  # equal risks share one fitted value
    out = np.interp(grid, xs, fs[first])
    out[(grid < xs[0]) | (grid > xs[-1])] = np.nan
    return out


def calibration_table(y, scores: pd.DataFrame, models: Sequence[str] | None = None, *, n_resamples: int = 200,
                      seed: int, level: float = 0.95, frac: float = LOWESS_FRAC,
                      labels: Mapping[str, str] | None = None, return_curves: bool = False):
    """Every calibration measure of each model's risks (one row per model).

    Parameters
    ----------
    y : array-like of 0/1
        Outcome, aligned with ``scores``' rows.
    scores : DataFrame
        One column of risks per model.
    models : sequence of str, optional
        Columns to tabulate (default: all).
    n_resamples, seed, level, frac
        The ICI's bootstrap interval (see :func:`smoothed_calibration`) and the intervals' level.
    labels : mapping, optional
        Display name of each model (column ``label``).
    return_curves : bool
        Also return each model's smoothed curve and band (:func:`smoothed_calibration`, computed anyway for
        the ICI's interval), so that a figure need not bootstrap them again.

    Returns
    -------
    DataFrame
        ``model, label, n, deaths, mean_risk, observed_rate, citl, citl_low, citl_high, slope, slope_low,
        slope_high, brier, scaled_brier, ici, ici_low, ici_high, e50, e90, emax``; with ``return_curves``,
        ``(table, {model: curve})``.
    """
    models = list(scores.columns if models is None else models)
    missing = [m for m in models if m not in scores]
    if missing:
        raise ValueError(f"scores lack the models {missing}; present: {', '.join(map(str, scores.columns))}")
    labels = dict(labels or {})
    y = as_labels(y, "y").astype(float)
    rows, curves = [], {}
    for m in models:
        p = _risks(scores[m].to_numpy(), y.size, f"risk of {m!r}")
        fit = calibration_fit(y, p, level)
        curves[m], ici = smoothed_calibration(y, p, n_resamples=n_resamples, seed=seed, level=level, frac=frac)
        errors = calibration_errors(y, p, frac)
        rows.append({"model": m, "label": labels.get(m, m), "n": y.size, "deaths": int(y.sum()),
                     "mean_risk": float(p.mean()), "observed_rate": float(y.mean()),
                     "citl": fit.citl, "citl_low": fit.citl_ci[0], "citl_high": fit.citl_ci[1],
                     "slope": fit.slope, "slope_low": fit.slope_ci[0], "slope_high": fit.slope_ci[1],
                     "brier": brier_score(y, p), "scaled_brier": scaled_brier_score(y, p),
                     "ici": ici["ici"], "ici_low": ici["ici_low"], "ici_high": ici["ici_high"],
                     "e50": errors["e50"], "e90": errors["e90"], "emax": errors["emax"]})
    table = pd.DataFrame(rows)
    return (table, curves) if return_curves else table


# -- recalibration --------------------------------------------------------------------------------
def _fit_map(x: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """``(a, b, kind)`` of ``logit P(y=1) = a + b x``; intercept only (b = 0) when the slope is not estimable."""
    if np.ptp(x) > 0:
        fit = _glm(y, np.column_stack([np.ones(y.size), x]))
        if fit is not None and np.all(np.isfinite(fit.params)):
            return float(fit.params[0]), float(fit.params[1]), "logistic"
    rate = float(np.clip(y.mean(), _EPS, 1 - _EPS))
    return math.log(rate / (1 - rate)), 0.0, "intercept only"


def _apply_map(a: float, b: float, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a + b * x)))


#: Where each fold's recalibration maps are fitted (:func:`recalibrate_out_of_fold`).
POOLING = ("within", "others")


def recalibrate_out_of_fold(y, score, fold, *, scale: str = "logit", pooling: str = "within", inner_folds: int = 5,
                            seed: int, min_events: int = 5) -> tuple[np.ndarray, pd.DataFrame]:
    """Logistic recalibration of out-of-fold scores, cross-fitted so that no patient's outcome enters their risk.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome.
    score : array-like
        Out-of-fold scores (one model), aligned with ``y``.
    fold : array-like of int
        The outer fold that scored each patient (its model differs from fold to fold).
    scale : {'logit', 'log1p', 'identity'}
        How the score enters the map (:func:`risk_scale`).
    pooling : {'within', 'others'}
        ``'within'`` (for fold models whose scores are on different scales): each fold's own maps,
        cross-fitted over its ``inner_folds`` parts. ``'others'`` (for a score on one scale in every fold,
        such as a raw variable): the map of each fold is fitted on the patients of the other folds.
    inner_folds : int
        Parts each fold is split into (stratified by outcome): each part is recalibrated by the map
        fitted on the fold's other parts.
    seed : int
        Seed of the split into parts (each fold's split derives from it and the fold number).
    min_events : int
        With ``'within'``: the fewest deaths, and survivors, a fold needs for its own cross-fitted maps (at
        least ``inner_folds`` of each are needed too); a fold with fewer is recalibrated by the map of the
        other folds' patients.

    Returns
    -------
    recalibrated : ndarray
        Each patient's recalibrated risk.
    maps : DataFrame
        One row per map: ``fold, part`` (the part of the fold it recalibrates; 0 for a whole fold),
        ``method`` (``within fold`` or ``other folds``), ``n_fit, deaths_fit`` (the patients it was fitted
        on), ``n_applied``, ``a, b`` (``b`` in the scale's units) and ``kind`` (``logistic``, or
        ``intercept only`` where the slope was not estimable and the map gives the death rate).
    """
    from sklearn.model_selection import StratifiedKFold

    labels = as_labels(y, "y")
    yf = labels.astype(float)
    s = as_score_1d(score, labels.size, "score")
    fold = np.asarray(fold)
    if fold.shape != s.shape:
        raise ValueError(f"fold must give one fold per patient ({s.size}); got shape {fold.shape}")
    seed = check_seed(seed)
    if not isinstance(inner_folds, (int, np.integer)) or inner_folds < 2:
        raise ValueError(f"inner_folds must be an integer >= 2, got {inner_folds!r}")
    if pooling not in POOLING:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLING)}")
    if not isinstance(min_events, (int, np.integer)) or min_events < 1:
        raise ValueError(f"min_events must be a positive integer, got {min_events!r}")
    x = _transform(s, scale)
    out = np.full(s.size, np.nan)
    rows = []

    def fit_and_apply(k, part, method, fit_idx, apply_idx):
        a, b, kind = _fit_map(x[fit_idx], yf[fit_idx])
        out[apply_idx] = _apply_map(a, b, x[apply_idx])
        rows.append({"fold": k, "part": part, "method": method, "n_fit": fit_idx.size,
                     "deaths_fit": int(labels[fit_idx].sum()), "n_applied": apply_idx.size, "a": a, "b": b,
                     "kind": kind})

    for k in np.unique(fold):
        idx = np.flatnonzero(fold == k)
        deaths = int(labels[idx].sum())
        survivors = idx.size - deaths
        if pooling == "within" and min(deaths, survivors) >= max(min_events, inner_folds):
            split_seed = int(np.random.SeedSequence([seed, int(k)]).generate_state(1)[0] % (2**31 - 1))
            parts = StratifiedKFold(n_splits=int(inner_folds), shuffle=True, random_state=split_seed)
            for part, (fit_part, apply_part) in enumerate(parts.split(np.zeros(idx.size), labels[idx])):
                fit_and_apply(k, part, "within fold", idx[fit_part], idx[apply_part])
        else:
            others = np.flatnonzero(fold != k)
            if others.size == 0 or labels[others].all() or not labels[others].any():
                raise ValueError(f"fold {k!r} has {deaths} death(s) and the other folds cannot stand in for it: "
                                 "too few deaths to recalibrate")
            fit_and_apply(k, 0, "other folds", others, idx)
    return out, pd.DataFrame(rows)

