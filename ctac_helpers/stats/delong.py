"""ROC AUCs and their comparison by DeLong's method.

The AUC is the Mann-Whitney statistic: the probability that a randomly chosen positive (event)
scores higher than a randomly chosen negative, ties counting 1/2. A higher score always means "more
likely positive": nothing here flips the direction of a score (pROC's ``direction="auto"`` does).

DeLong, DeLong & Clarke-Pearson (1988) estimate the covariance matrix of several AUCs measured on
the same patients from their *structural components* (placement values): for model ``r``, positive
``i`` and negative ``j``,

.. math::

    V^r_{10}(x_i) = \\frac{1}{n}\\sum_j \\psi(x^r_i, y^r_j), \\qquad
    V^r_{01}(y_j) = \\frac{1}{m}\\sum_i \\psi(x^r_i, y^r_j), \\qquad
    \\psi(x, y) = [x > y] + \\tfrac12 [x = y],

with ``m`` positives and ``n`` negatives; then ``S = S10 / m + S01 / n`` where ``S10`` and ``S01``
are the sample covariance matrices (denominators ``m - 1`` and ``n - 1``) of the components.
Sun & Xu (2014) obtain the components from midranks in ``O((m + n) log(m + n))`` instead of
``O(m n)``:

.. math::

    V_{10}(x_i) = \\frac{T_Z(i) - T_X(i)}{n}, \\qquad V_{01}(y_j) = 1 - \\frac{T_Z(m + j) - T_Y(j)}{m},

where ``T_X``, ``T_Y`` and ``T_Z`` are the midranks of ``x_i`` among the positives, of ``y_j`` among
the negatives, and of either among all patients. This module follows pROC (Robin et al., 2011) in
its tests and intervals: the paired test uses ``z = (AUC_a - AUC_b) / sqrt(S_aa + S_bb - 2 S_ab)``
against the standard normal; the unpaired test ``D = (AUC_a - AUC_b) / sqrt(var_a + var_b)`` against
Student's t with Welch-Satterthwaite-type degrees of freedom (see :func:`delong_test_unpaired`); and
the confidence interval of an AUC is the plain normal interval ``AUC +/- z_{1-alpha/2} sqrt(var)``
cut to [0, 1].

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
   receiver operating characteristic curves: a nonparametric approach. *Biometrics*
   1988;44:837-845.
.. [2] Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under
   correlated receiver operating characteristic curves. *IEEE Signal Processing Letters*
   2014;21:1389-1393.
.. [3] Robin X, Turck N, Hainard A, et al. pROC: an open-source package for R and S+ to analyze and
   compare ROC curves. *BMC Bioinformatics* 2011;12:77.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ctac_helpers.stats.checks import as_labels, as_score_1d, as_scores, check_level

logger = logging.getLogger(__name__)

__all__ = [
    "AUCInterval",
    "DeLongResult",
    "DeLongUnpairedResult",
    "auc",
    "auc_ci_delong",
    "delong_covariance",
    "delong_test",
    "delong_test_unpaired",
    "welch_df",
]


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AUCInterval:
    """An AUC with its DeLong variance and normal confidence interval.

    Attributes
    ----------
    auc : float
        Area under the ROC curve.
    variance : float
        DeLong variance of the AUC, ``S10 / m + S01 / n``.
    se : float
        Standard error, ``sqrt(variance)``.
    ci_low, ci_high : float
        Normal confidence interval ``auc +/- z * se``, cut to [0, 1].
    level : float
        Confidence level of the interval.
    n_positive, n_negative : int
        Numbers of positives (events) and negatives.
    """

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated (paired) AUCs measured on the same patients.

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two scores.
    difference : float
        ``auc_a - auc_b``.
    se : float
        Standard error of the difference, ``sqrt(S_aa + S_bb - 2 S_ab)``.
    z : float
        ``difference / se``; 0 when both are 0, +/-inf when only ``se`` is 0.
    p_value : float
        Two-sided p-value, ``2 * (1 - Phi(|z|))``; 1 when the difference is 0.
    ci_a, ci_b : tuple of float
        Normal confidence intervals of ``auc_a`` and ``auc_b`` (DeLong variance, cut to [0, 1]).
    difference_ci : tuple of float
        Normal confidence interval of the difference, ``difference +/- z_{1-alpha/2} se``.
    correlation : float
        Correlation of the two AUC estimates (NaN when either variance is 0).
    level : float
        Confidence level of the intervals.
    n_positive, n_negative : int
        Numbers of positives and negatives.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    difference_ci: tuple[float, float]
    correlation: float
    level: float
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class DeLongUnpairedResult:
    """Comparison of two AUCs from independent samples (e.g. men and women).

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two samples.
    difference : float
        ``auc_a - auc_b``.
    se : float
        ``sqrt(var_a + var_b)`` with the DeLong variance of each AUC.
    statistic : float
        ``difference / se`` (pROC's ``D``); 0 when both are 0, +/-inf when only ``se`` is 0.
    df : float
        Degrees of freedom of the t distribution the statistic is compared with (pROC's ``df``):
        ``(var_a + var_b)^2 / (var_a^2 / (N_a - 1) + var_b^2 / (N_b - 1))``; ``inf`` for the normal
        distribution; NaN when both variances are 0 (the p-value is then 1 or 0, as for ``se``).
    p_value : float
        Two-sided p-value of ``statistic`` under ``distribution``; 1 when the difference is 0.
    ci_a, ci_b : tuple of float
        Normal confidence intervals of each AUC.
    level : float
        Confidence level of the intervals.
    distribution : str
        ``"t"`` (pROC's test) or ``"normal"``.
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    statistic: float
    df: float
    p_value: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    level: float
    distribution: str


# ---------------------------------------------------------------------------------------------
# Computation
# ---------------------------------------------------------------------------------------------

def auc_from_labels(labels: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of each row of ``s`` (validated) by the rank-sum form of the Mann-Whitney statistic."""
    m = int(labels.sum())
    n = labels.size - m
    ranks = stats.rankdata(s, axis=1)  # midranks: a tie counts 1/2 in the pair comparison
    # Ranks are integers or halves, so the rank sum (and with it the AUC) is exact in floating point.
    return (ranks[:, labels].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def auc(y_true, score) -> float:
    """Area under the ROC curve, the Mann-Whitney statistic with ties counted 1/2.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    score : array-like of shape (n_samples,)
        Finite scores; higher means more likely positive.

    Returns
    -------
    float
        ``P(score_pos > score_neg) + 0.5 P(score_pos = score_neg)`` over all positive-negative pairs.

    Raises
    ------
    ValueError
        If the labels are not binary with both classes, the lengths differ, or a score is not finite.

    References
    ----------
    .. [1] Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating
       characteristic (ROC) curve. *Radiology* 1982;143:29-36.
    """
    labels = as_labels(y_true)
    s = as_score_1d(score, labels.size)
    return float(auc_from_labels(labels, s[None, :])[0])


def _structural_components(labels: np.ndarray, s: np.ndarray):
    """AUCs and the placement values V10 (k, m) and V01 (k, n) by midranks (Sun & Xu 2014)."""
    x = s[:, labels]   # positives
    y = s[:, ~labels]  # negatives
    m, n = x.shape[1], y.shape[1]
    tx = stats.rankdata(x, axis=1)
    ty = stats.rankdata(y, axis=1)
    tz = stats.rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    # T_Z - T_X counts the negatives below x_i (ties 1/2); T_Z - T_Y the positives below y_j.
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def _covariance_from_components(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    # Sample covariances (denominators m - 1 and n - 1) as in DeLong et al. and pROC; a single
    # positive or negative leaves that term undefined, so it is taken as 0 (no spread observed).
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return s10 / m + s01 / n


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same patients and their DeLong covariance matrix.

    Uses the fast midrank algorithm of Sun & Xu (2014), equal to DeLong's O(m n) definition.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    scores : array-like of shape (n_models, n_samples)
        One row of finite scores per model (a 1-D array is one model).

    Returns
    -------
    aucs : ndarray of shape (n_models,)
        The AUC of each model.
    covariance : ndarray of shape (n_models, n_models)
        DeLong estimate of the covariance matrix of the AUCs, ``S10 / m + S01 / n``.

    Raises
    ------
    ValueError
        If the labels are not binary with both classes, the shapes do not match, or a score is not
        finite.

    Notes
    -----
    With a single positive (or negative) patient the ``S10`` (``S01``) term has no sample variance
    and is set to 0; such variances are not meaningful.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Sun X, Xu W. *IEEE Signal Processing Letters* 2014;21:1389-1393.
    """
    labels = as_labels(y_true)
    s = as_scores(scores, labels.size, "scores")
    aucs, v10, v01 = _structural_components(labels, s)
    return aucs, _covariance_from_components(v10, v01)


def _normal_ci(estimate: float, se: float, level: float, clip: bool = True) -> tuple[float, float]:
    half = stats.norm.ppf(0.5 + level / 2.0) * se
    lo, hi = estimate - half, estimate + half
    if clip:
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    return float(lo), float(hi)


def _two_sided_p(statistic: float, df: float = math.inf) -> float:
    """Two-sided p-value of ``statistic`` under the standard normal (``df`` infinite) or Student's t.

    ``2 * sf(|statistic|)`` rather than ``2 * (1 - cdf)`` keeps small p-values accurate down to the
    smallest float; a p-value below even that is 0, and is logged with its logarithm (from ``logsf``)
    rather than passing silently.
    """
    dist = stats.norm if math.isinf(df) else stats.t(df)
    p = float(2.0 * dist.sf(abs(statistic)))
    if p == 0.0 and math.isfinite(statistic):
        log10_p = (math.log(2.0) + float(dist.logsf(abs(statistic)))) / math.log(10.0)
        logger.info("statistic %.6g: the two-sided p-value underflows to 0 (log10 p = %.6g)", statistic, log10_p)
    return p


def _z_and_p(difference: float, variance: float) -> tuple[float, float, float]:
    """SE, z and two-sided p of a difference with the given variance (see :func:`z_and_p_se`)."""
    # Round-off can leave a tiny negative variance for (nearly) identical scores.
    se = math.sqrt(max(variance, 0.0))
    return (se,) + z_and_p_se(difference, se)


def z_and_p_se(difference: float, se: float, df: float = math.inf) -> tuple[float, float]:
    """Statistic ``difference / se`` and its two-sided p (standard normal, or Student's t with ``df``).

    A zero SE gives p = 1 when the difference is 0, else p = 0.
    """
    if se == 0.0:
        if difference == 0.0:
            return 0.0, 1.0
        logger.warning("AUC difference %.6g with zero standard error: the statistic is infinite and p = 0",
                       difference)
        return math.copysign(math.inf, difference), 0.0
    z = difference / se
    return z, _two_sided_p(z, df)


def welch_df(var_a: float, var_b: float, n_a: int, n_b: int) -> float:
    """Degrees of freedom of pROC's unpaired DeLong test (a Welch-Satterthwaite-type formula).

    Parameters
    ----------
    var_a, var_b : float
        DeLong variances of the two AUCs (>= 0).
    n_a, n_b : int
        Numbers of patients (positives and negatives together) in each sample, at least 2.

    Returns
    -------
    float
        ``(var_a + var_b)^2 / (var_a^2 / (n_a - 1) + var_b^2 / (n_b - 1))``; NaN when both variances
        are 0.

    Raises
    ------
    ValueError
        If a variance is negative or not finite, or a sample has fewer than 2 patients.

    Notes
    -----
    pROC's ``delong.unpaired.test`` (R/delong.R) computes ``df <- ((SR) + (SS))^2 / (((SR)^2 /
    (ntotR - 1)) + ((SS)^2 / (ntotS - 1)))`` with ``SR``, ``SS`` the DeLong variances and ``ntotR``,
    ``ntotS`` the numbers of cases plus controls. Unlike Welch's t test, the variances are those of the
    AUCs and the sample sizes are whole samples, not per-class counts.

    References
    ----------
    .. [1] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    .. [2] Satterthwaite FE. An approximate distribution of estimates of variance components.
       *Biometrics Bulletin* 1946;2:110-114.
    """
    for name, v in (("var_a", var_a), ("var_b", var_b)):
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{name} must be a finite variance >= 0; got {v}")
    for name, n in (("n_a", n_a), ("n_b", n_b)):
        if n < 2:
            raise ValueError(f"{name} must be at least 2 (a positive and a negative); got {n}")
    denominator = var_a ** 2 / (n_a - 1) + var_b ** 2 / (n_b - 1)
    if denominator == 0.0:
        return math.nan
    return float((var_a + var_b) ** 2 / denominator)


def auc_ci_delong(y_true, score, level: float = 0.95) -> AUCInterval:
    """AUC with its DeLong variance and normal confidence interval (pROC's ``ci.auc(method="delong")``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    score : array-like of shape (n_samples,)
        Finite scores; higher means more likely positive.
    level : float, default 0.95
        Confidence level.

    Returns
    -------
    AUCInterval
        AUC, variance, SE and the interval ``auc +/- z_{1-alpha/2} se`` cut to [0, 1].

    Raises
    ------
    ValueError
        On invalid labels or scores (see :func:`auc`) or a level outside (0, 1).

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    level = check_level(level)
    labels = as_labels(y_true)
    return auc_interval_from_labels(labels, as_score_1d(score, labels.size), level)


def auc_interval_from_labels(labels: np.ndarray, s: np.ndarray, level: float) -> AUCInterval:
    aucs, v10, v01 = _structural_components(labels, s[None, :])
    a = float(aucs[0])
    var = max(float(_covariance_from_components(v10, v01)[0, 0]), 0.0)
    se = math.sqrt(var)
    lo, hi = _normal_ci(a, se, level)
    m = int(labels.sum())
    return AUCInterval(auc=a, variance=var, se=se, ci_low=lo, ci_high=hi, level=level,
                       n_positive=m, n_negative=labels.size - m)


def delong_test(y_true, score_a, score_b, level: float = 0.95) -> DeLongResult:
    """DeLong's test for two correlated AUCs: two scores of the same patients (paired).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary outcome, 0/1 or boolean; both classes must be present.
    score_a, score_b : array-like of shape (n_samples,)
        Finite scores of the two models for the same patients, in the same order.
    level : float, default 0.95
        Confidence level of the intervals.

    Returns
    -------
    DeLongResult
        AUCs, difference ``auc_a - auc_b``, its SE, z, two-sided p-value and intervals.

    Raises
    ------
    ValueError
        On invalid labels or scores, or a level outside (0, 1).

    Notes
    -----
    ``z = (AUC_a - AUC_b) / sqrt(S_aa + S_bb - 2 S_ab)`` with ``S`` from :func:`delong_covariance`,
    compared with the standard normal (pROC's ``roc.test(method="delong", paired=TRUE)``). When the
    two scores rank the patients identically the difference and its SE are both 0 and ``p = 1``.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Sun X, Xu W. *IEEE Signal Processing Letters* 2014;21:1389-1393.
    .. [3] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    level = check_level(level)
    labels = as_labels(y_true)
    a = as_score_1d(score_a, labels.size, "score_a")
    b = as_score_1d(score_b, labels.size, "score_b")
    aucs, v10, v01 = _structural_components(labels, np.vstack([a, b]))
    cov = _covariance_from_components(v10, v01)
    difference = float(aucs[0] - aucs[1])
    se, z, p = _z_and_p(difference, float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]))
    var_a, var_b = max(float(cov[0, 0]), 0.0), max(float(cov[1, 1]), 0.0)
    corr = float(cov[0, 1] / math.sqrt(var_a * var_b)) if var_a > 0 and var_b > 0 else math.nan
    m = int(labels.sum())
    return DeLongResult(
        auc_a=float(aucs[0]), auc_b=float(aucs[1]), difference=difference, se=se, z=z, p_value=p,
        ci_a=_normal_ci(float(aucs[0]), math.sqrt(var_a), level),
        ci_b=_normal_ci(float(aucs[1]), math.sqrt(var_b), level),
        difference_ci=_normal_ci(difference, se, level, clip=False),
        correlation=corr, level=level, n_positive=m, n_negative=labels.size - m)


#: Reference distributions of :func:`delong_test_unpaired`'s statistic.
UNPAIRED_DISTRIBUTIONS = ("t", "normal")


def delong_test_unpaired(y_a, score_a, y_b, score_b, level: float = 0.95, *,
                         distribution: str = "t") -> DeLongUnpairedResult:
    """Compare the AUCs of two independent samples, e.g. one model in men and in women.

    Parameters
    ----------
    y_a, score_a : array-like of shape (n_a,)
        Binary outcome and finite scores of the first sample.
    y_b, score_b : array-like of shape (n_b,)
        Binary outcome and finite scores of the second sample.
    level : float, default 0.95
        Confidence level of the intervals of each AUC.
    distribution : {"t", "normal"}, default "t"
        Reference distribution of the statistic: ``"t"``, Student's t with the degrees of freedom of
        :func:`welch_df`, as pROC's ``roc.test(method="delong", paired=FALSE)`` does; ``"normal"``, the
        standard normal (a z test, as the paired test), which gives smaller p-values in small samples.

    Returns
    -------
    DeLongUnpairedResult
        AUCs, difference, ``se = sqrt(var_a + var_b)``, the statistic, its degrees of freedom and the
        two-sided p-value.

    Raises
    ------
    ValueError
        On invalid labels or scores in either sample, a level outside (0, 1), or an unknown
        ``distribution``.

    Notes
    -----
    The samples share no patient, so the AUCs are independent and the variance of the difference is
    the sum of the DeLong variances. pROC's ``delong.unpaired.test`` (R/delong.R, used by
    ``roc.test(method="delong", paired=FALSE)``) computes

    .. math::

        D = \\frac{AUC_a - AUC_b}{\\sqrt{V_a + V_b}}, \\qquad
        df = \\frac{(V_a + V_b)^2}{V_a^2 / (N_a - 1) + V_b^2 / (N_b - 1)},

    with ``V`` the DeLong variance of each AUC and ``N`` the number of patients (cases plus controls)
    of each sample, and reports ``p = 2 * pt(-|D|, df)``. The default here is the same; the only
    difference from pROC is that a sample with a single positive or negative gets variance terms of 0
    (see :func:`delong_covariance`) where pROC gets NaN. When both variances are 0, ``df`` is NaN and
    ``p`` is 1 for a zero difference, 0 otherwise.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    .. [3] Satterthwaite FE. *Biometrics Bulletin* 1946;2:110-114.
    """
    if distribution not in UNPAIRED_DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(map(repr, UNPAIRED_DISTRIBUTIONS))}; "
                         f"got {distribution!r}")
    level = check_level(level)
    labels_a, labels_b = as_labels(y_a, "y_a"), as_labels(y_b, "y_b")
    ci_a = auc_interval_from_labels(labels_a, as_score_1d(score_a, labels_a.size, "score_a"), level)
    ci_b = auc_interval_from_labels(labels_b, as_score_1d(score_b, labels_b.size, "score_b"), level)
    difference = ci_a.auc - ci_b.auc
    if distribution == "t":
        df = welch_df(ci_a.variance, ci_b.variance, labels_a.size, labels_b.size)
    else:
        df = math.inf
    se = math.sqrt(ci_a.variance + ci_b.variance)
    statistic, p = z_and_p_se(difference, se, df)
    return DeLongUnpairedResult(auc_a=ci_a.auc, auc_b=ci_b.auc, difference=difference, se=se,
                                statistic=statistic, df=df, p_value=p, ci_a=(ci_a.ci_low, ci_a.ci_high),
                                ci_b=(ci_b.ci_low, ci_b.ci_high), level=level, distribution=distribution)
