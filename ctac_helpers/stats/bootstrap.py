"""Percentile bootstrap confidence intervals of ROC AUCs and of paired AUC differences.

Every model is evaluated on the same resampled patients, so the replicates of two models are paired
and their differences bootstrap the AUC difference. By default the resampling is stratified by
outcome (positives and negatives are resampled separately, keeping both counts fixed), as pROC does
by default; it also guarantees that every resample has both classes.

Speed. A resample is a multiset of the original patients, so its AUC is the Mann-Whitney statistic
with each patient weighted by how many times it was drawn. The scores are sorted once per model;
for each resample the AUC is then the positives' weighted count of negatives below them (ties 1/2),
read from a cumulative sum of the negatives' draw counts in score order. This is exactly the AUC of
the resampled data (not an approximation) in O(n) per resample and model, without re-ranking.

Random numbers. The seed is required. Resample ``b`` is drawn from one
:func:`numpy.random.default_rng` stream in a fixed order (the positives' draws, then the
negatives'; or all patients' draws when unstratified), so the same seed gives the same resamples,
and the same replicates, whatever the models and however the computation is chunked.

References
----------
.. [1] Efron B, Tibshirani RJ. *An Introduction to the Bootstrap*. Chapman & Hall, 1993
   (percentile intervals, chapter 13).
.. [2] Carpenter J, Bithell J. Bootstrap confidence intervals: when, which, what? A practical
   guide for medical statisticians. *Statistics in Medicine* 2000;19:1141-1164.
.. [3] Robin X, Turck N, Hainard A, et al. pROC: an open-source package for R and S+ to analyze and
   compare ROC curves. *BMC Bioinformatics* 2011;12:77 (stratified bootstrap; bootstrap test
   ``z = D / sd(D*)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctac_helpers.stats.checks import as_labels, as_score_1d, as_scores, check_level, check_n_resamples, check_seed
from ctac_helpers.stats.delong import auc_from_labels, z_and_p_se

logger = logging.getLogger(__name__)

__all__ = ["BootstrapDifferenceResult", "bootstrap_auc", "bootstrap_auc_difference",
           "bootstrap_auc_replicates"]

# Resamples processed together: bounds memory at about _CHUNK * n_samples * 8 bytes per array.
_CHUNK = 100


@dataclass(frozen=True)
class BootstrapDifferenceResult:
    """Paired bootstrap of the difference of two AUCs measured on the same patients.

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two scores on the original data.
    difference : float
        ``auc_a - auc_b`` on the original data.
    ci_low, ci_high : float
        Percentile bootstrap interval of the difference.
    se : float
        Standard deviation of the bootstrap differences (denominator ``B - 1``).
    z : float
        ``difference / se`` (0 when both are 0, +/-inf when only ``se`` is 0).
    p_value : float
        Two-sided p-value ``2 * (1 - Phi(|z|))``; 1 when the difference is 0.
    level : float
        Confidence level of the interval.
    n_resamples : int
        Number of resamples used (those with both classes).
    """

    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    se: float
    z: float
    p_value: float
    level: float
    n_resamples: int


def _score_matrix(scores, n: int) -> tuple[list[str], np.ndarray]:
    """Model names and a (n_models, n_samples) matrix from a mapping, a DataFrame or a 2-D array."""
    if isinstance(scores, pd.DataFrame):
        # A DataFrame holds one column per model (n_samples rows).
        names = [str(c) for c in scores.columns]
        rows = [scores[c].to_numpy(dtype=float) for c in scores.columns]
    elif isinstance(scores, Mapping):
        names = [str(k) for k in scores]
        rows = [as_score_1d(v, n, f"scores[{k!r}]") for k, v in scores.items()]
    else:
        arr = np.asarray(scores, dtype=float)
        if arr.ndim != 2:
            raise ValueError("scores must be a mapping {name: 1-D array}, a DataFrame with one column per "
                             f"model, or a 2-D array of shape (n_models, n_samples); got shape {arr.shape}")
        names = [f"model_{i}" for i in range(arr.shape[0])]
        rows = list(arr)
    if not rows:
        raise ValueError("scores holds no model; expected at least one score array")
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique; got {names}")
    return names, as_scores(np.vstack(rows), n, "scores")


def resample_indices(labels: np.ndarray, n_resamples: int, seed: int,
                      stratified: bool) -> Iterator[np.ndarray]:
    """Yield, per resample, the indices (into the original samples) of the patients drawn.

    Stratified: the positives' draws (``m`` with replacement from the positives) followed by the
    negatives'; otherwise ``N`` draws from all patients.
    """
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(labels)
    neg = np.flatnonzero(~labels)
    n_all = labels.size
    for _ in range(n_resamples):
        if stratified:
            yield np.concatenate([pos[rng.integers(0, pos.size, pos.size)],
                                  neg[rng.integers(0, neg.size, neg.size)]])
        else:
            yield rng.integers(0, n_all, n_all)


def _weighted_aucs(s: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUCs (chunk, n_models) of resamples given as draw counts (chunk, n_samples) of each patient."""
    pos, neg = labels, ~labels
    w_pos = counts[:, pos]
    w_neg = counts[:, neg]
    m_b = w_pos.sum(axis=1)
    n_b = w_neg.sum(axis=1)
    out = np.empty((counts.shape[0], s.shape[0]))
    for k in range(s.shape[0]):
        x, y = s[k, pos], s[k, neg]
        order = np.argsort(y, kind="stable")
        y_sorted = y[order]
        # Negatives strictly below (lo) and at most equal to (hi) each positive: ties count 1/2.
        lo = np.searchsorted(y_sorted, x, side="left")
        hi = np.searchsorted(y_sorted, x, side="right")
        cum = np.zeros((counts.shape[0], y.size + 1))
        np.cumsum(w_neg[:, order], axis=1, out=cum[:, 1:])
        # Draw counts are integers, so these sums are exact (integers or halves).
        below = 0.5 * (cum[:, lo] + cum[:, hi])
        out[:, k] = np.einsum("bi,bi->b", w_pos, below)
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / (m_b * n_b)[:, None]


def weighted_auc(y, score, weight) -> float:
    """Mann-Whitney AUC of one score with each patient weighted (ties count one half).

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    score : array-like of shape (n_samples,)
        Finite scores; higher means more likely positive.
    weight : array-like of shape (n_samples,)
        Non-negative weights: a patient of weight ``w`` counts as ``w`` patients (integer weights give
        the AUC of the data with each patient repeated that many times, as a bootstrap resample is).

    Returns
    -------
    float
        ``sum_{i pos, j neg} w_i w_j [s_i > s_j] + 1/2 [s_i = s_j]`` over ``sum w_pos * sum w_neg``.
    """
    labels = as_labels(y)
    s = as_score_1d(score, len(labels))
    w = np.asarray(weight, float)
    if w.shape != labels.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weight must be {labels.size} finite non-negative values")
    if w[labels].sum() <= 0 or w[~labels].sum() <= 0:
        raise ValueError("both classes need a positive total weight")
    return float(_weighted_aucs(s[None, :], labels, w[None, :])[0, 0])


def bootstrap_auc_replicates(y, scores, n_resamples: int = 1000, *, seed: int,
                             stratified: bool = True) -> pd.DataFrame:
    """Bootstrap replicates of the AUC of each model, all models on the same resamples.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    scores : mapping, DataFrame or array-like
        ``{name: scores}``, a DataFrame with one column per model, or a 2-D array of shape
        ``(n_models, n_samples)`` (models named ``model_0``, ``model_1``, ...). Scores must be finite.
    n_resamples : int, default 1000
        Number of bootstrap resamples (at least 2).
    seed : int
        Seed of :func:`numpy.random.default_rng`; required, so that results are reproducible.
    stratified : bool, default True
        Resample positives and negatives separately, keeping their counts fixed.

    Returns
    -------
    DataFrame
        One row per resample (index ``resample``), one column per model. Without stratification a
        resample holding a single class has no AUC: its row is NaN.

    Raises
    ------
    ValueError
        On invalid labels, scores, seed or ``n_resamples``.

    References
    ----------
    .. [1] Efron B, Tibshirani RJ. *An Introduction to the Bootstrap*. Chapman & Hall, 1993.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    seed = check_seed(seed)
    n_resamples = check_n_resamples(n_resamples)
    labels = as_labels(y, "y")
    names, s = _score_matrix(scores, labels.size)
    n = labels.size
    t0 = time.perf_counter()
    reps = np.empty((n_resamples, s.shape[0]))
    draws = resample_indices(labels, n_resamples, seed, bool(stratified))
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        idx = np.stack([next(draws) for _ in range(size)])
        # One bincount over the whole chunk: row b's indices are offset by b * n.
        flat = (idx + (np.arange(size) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        reps[start:start + size] = _weighted_aucs(s, labels, counts)
    logger.debug("bootstrap_auc_replicates: %d resamples x %d patients x %d models in %.2f s",
                 n_resamples, n, s.shape[0], time.perf_counter() - t0)
    return pd.DataFrame(reps, columns=names, index=pd.RangeIndex(n_resamples, name="resample"))


def _valid_rows(reps: pd.DataFrame) -> pd.DataFrame:
    valid = reps.notna().all(axis=1)
    if not valid.all():
        logger.warning("%d of %d bootstrap resamples held a single class and were dropped",
                       int((~valid).sum()), len(reps))
    if valid.sum() < 2:
        raise ValueError("fewer than 2 bootstrap resamples held both classes; use stratified=True")
    return reps[valid]


def bootstrap_auc(y, scores, n_resamples: int = 1000, *, seed: int, level: float = 0.95,
                  stratified: bool = True) -> pd.DataFrame:
    """AUC of each model with a percentile bootstrap confidence interval.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    scores : mapping, DataFrame or array-like
        ``{name: scores}``, a DataFrame with one column per model, or a 2-D array of shape
        ``(n_models, n_samples)``. Scores must be finite; higher means more likely positive.
    n_resamples : int, default 1000
        Number of bootstrap resamples (at least 2).
    seed : int
        Seed of :func:`numpy.random.default_rng`; required.
    level : float, default 0.95
        Confidence level.
    stratified : bool, default True
        Resample positives and negatives separately (fixed class counts), as pROC does by default.

    Returns
    -------
    DataFrame
        Columns ``model``, ``auc`` (on the original data), ``ci_low``, ``ci_high`` (the
        ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates, linear
        interpolation) and ``n_resamples`` (resamples used), one row per model in input order.

    Raises
    ------
    ValueError
        On invalid labels, scores, seed, level or ``n_resamples``.

    See Also
    --------
    bootstrap_auc_replicates : the replicates themselves.
    ctac_helpers.stats.delong.auc_ci_delong : the DeLong (normal) interval.

    References
    ----------
    .. [1] Efron B, Tibshirani RJ. *An Introduction to the Bootstrap*. Chapman & Hall, 1993.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    level = check_level(level)
    labels = as_labels(y, "y")
    names, s = _score_matrix(scores, labels.size)
    reps = _valid_rows(bootstrap_auc_replicates(labels, dict(zip(names, s)), n_resamples, seed=seed,
                                                stratified=stratified))
    q = np.quantile(reps.to_numpy(), [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"model": names, "auc": auc_from_labels(labels, s), "ci_low": q[0],
                         "ci_high": q[1], "n_resamples": len(reps)})


def bootstrap_auc_difference(y, score_a, score_b, n_resamples: int = 1000, *, seed: int,
                             level: float = 0.95, stratified: bool = True) -> BootstrapDifferenceResult:
    """Paired bootstrap of ``AUC_a - AUC_b``: percentile interval and pROC's bootstrap test.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    score_a, score_b : array-like of shape (n_samples,)
        Finite scores of the two models for the same patients.
    n_resamples : int, default 1000
        Number of bootstrap resamples (at least 2).
    seed : int
        Seed of :func:`numpy.random.default_rng`; required.
    level : float, default 0.95
        Confidence level of the interval.
    stratified : bool, default True
        Resample positives and negatives separately.

    Returns
    -------
    BootstrapDifferenceResult
        The difference on the original data, its percentile interval, the SD of the bootstrap
        differences, ``z = difference / SD`` and the two-sided normal p-value.

    Raises
    ------
    ValueError
        On invalid labels, scores, seed, level or ``n_resamples``.

    Notes
    -----
    Both models are evaluated on each resample, so the replicates are paired. The test statistic
    is pROC's ``roc.test(method="bootstrap")``: ``D = (AUC_a - AUC_b) / sd(AUC*_a - AUC*_b)``,
    referred to the standard normal.

    References
    ----------
    .. [1] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    .. [2] Efron B, Tibshirani RJ. *An Introduction to the Bootstrap*. Chapman & Hall, 1993.
    """
    level = check_level(level)
    labels = as_labels(y, "y")
    a = as_score_1d(score_a, labels.size, "score_a")
    b = as_score_1d(score_b, labels.size, "score_b")
    reps = _valid_rows(bootstrap_auc_replicates(labels, {"a": a, "b": b}, n_resamples, seed=seed,
                                                stratified=stratified))
    diffs = (reps["a"] - reps["b"]).to_numpy()
    auc_a, auc_b = auc_from_labels(labels, np.vstack([a, b]))
    difference = float(auc_a - auc_b)
    sd = float(np.std(diffs, ddof=1))
    z, p = z_and_p_se(difference, sd)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return BootstrapDifferenceResult(auc_a=float(auc_a), auc_b=float(auc_b), difference=difference,
                                     ci_low=float(lo), ci_high=float(hi), se=sd, z=z, p_value=p,
                                     level=level, n_resamples=len(diffs))
