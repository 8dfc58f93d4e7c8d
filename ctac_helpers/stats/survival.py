"""Survival analysis for the outcome section: matched thresholds, Kaplan-Meier, log-rank and Cox models.

The paper (Methods, "Thresholds" and "Statistical analysis") classifies patients as high risk by
the AI score with a threshold that flags the same share of patients as ischemia (ischemic TPD >= 10%),
draws Kaplan-Meier curves of both classifications, tests them with the log-rank test, and reports
univariate and multivariable Cox hazard ratios, including the adjusted HR of the AI high-risk class
within subgroups (Supplementary Table 7). The estimators are lifelines' (the paper used lifelines
0.28): ``KaplanMeierFitter`` with its exponential Greenwood ("log-log") intervals, ``logrank_test``
/ ``multivariate_logrank_test``, and ``CoxPHFitter`` (Efron's handling of tied times, Wald tests).

Hazard ratio intervals are ``exp(b +/- z_{1-alpha/2} se(b))`` and p-values are Wald p-values. Cox
models are fitted to a tighter convergence than lifelines' default (see :data:`COX_FIT_OPTIONS`), so
that the coefficients match R's ``coxph`` (Therneau & Grambsch, 2000) to its precision.
Covariates must be numeric or boolean: a text column such as ``sex`` is encoded by the caller
(e.g. ``male = sex == "male"``) so that the reference level is explicit.

References
----------
.. [1] Kaplan EL, Meier P. Nonparametric estimation from incomplete observations.
   *J Am Stat Assoc* 1958;53:457-481.
.. [2] Mantel N. Evaluation of survival data and two new rank order statistics arising in its
   consideration. *Cancer Chemother Rep* 1966;50:163-170.
.. [3] Cox DR. Regression models and life-tables. *J R Stat Soc B* 1972;34:187-220.
.. [4] Davidson-Pilon C. lifelines: survival analysis in Python. *J Open Source Softw*
   2019;4:1317.
.. [5] Therneau TM, Grambsch PM. *Modeling Survival Data: Extending the Cox Model*. Springer, 2000.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import logrank_test, multivariate_logrank_test
from scipy import stats

from ctac_helpers.stats.checks import check_columns, check_level

logger = logging.getLogger(__name__)

__all__ = [
    "COX_FIT_OPTIONS",
    "COX_STEP_SIZES",
    "LogRankResult",
    "ThresholdMatch",
    "adjusted_hr_by_subgroup",
    "at_risk_table",
    "cox_multivariable",
    "cox_univariate",
    "kaplan_meier",
    "logrank",
    "match_threshold",
    "query_masks",
]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _as_times(time, name: str = "time") -> np.ndarray:
    t = np.asarray(time, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of follow-up times; got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        bad = int((~np.isfinite(t)).sum())
        raise ValueError(f"{name} must be finite; found {bad} NaN or infinite value(s)")
    if np.any(t < 0):
        raise ValueError(f"{name} must be >= 0 (time to death or censoring); found {int((t < 0).sum())} "
                         "negative value(s)")
    return t


def _as_binary(values, n: int, name: str) -> np.ndarray:
    """``values`` as a boolean array of length ``n``; ValueError unless booleans or 0/1."""
    v = np.asarray(values)
    if v.ndim != 1 or v.size != n:
        raise ValueError(f"{name} must be 1-D with one value per patient ({n}); got shape {v.shape}")
    if v.dtype == bool:
        return v
    if not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"{name} must hold booleans or 0/1; got dtype {v.dtype}")
    bad = ~np.isin(v, (0, 1))
    if bad.any():
        shown = ", ".join(map(str, pd.unique(v[bad])[:5]))
        raise ValueError(f"{name} must hold booleans or 0/1; found {shown}")
    return v == 1


def _as_groups(group, n: int) -> tuple[np.ndarray, list]:
    """Group labels as an object array of length ``n`` and the sorted distinct labels."""
    if group is None:
        return np.full(n, "all", dtype=object), ["all"]
    g = np.asarray(pd.Series(group).to_numpy(), dtype=object)
    if g.ndim != 1 or g.size != n:
        raise ValueError(f"group must be 1-D with one label per patient ({n}); got shape {g.shape}")
    missing = pd.isna(g)
    if missing.any():
        raise ValueError(f"group has {int(missing.sum())} missing label(s); drop those patients or give "
                         "them an explicit label")
    levels = list(pd.unique(g))
    try:
        levels = sorted(levels)
    except TypeError:
        # Mixed label types cannot be ordered; keep the order of first appearance (still deterministic).
        pass
    return g, levels


def _check_numeric(df: pd.DataFrame, columns: Sequence[str]) -> None:
    for c in columns:
        dtype = df[c].dtype
        if not (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)):
            raise ValueError(f"covariate {c!r} must be numeric or boolean for a Cox model; got dtype "
                             f"{dtype}. Encode it first, e.g. df.assign(male=df['sex'] == 'male')")


# ---------------------------------------------------------------------------------------------
# Matched threshold
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdMatch:
    """A score threshold that flags the same share of patients as a reference classification.

    Attributes
    ----------
    threshold : float
        Patients with ``score >= threshold`` are flagged; it is one of the observed scores.
    share : float
        Share of patients flagged by the threshold.
    reference_share : float
        Share of patients flagged by the reference classification.
    n_flagged, n_reference, n : int
        Patients flagged by the threshold, by the reference, and in all.
    """

    threshold: float
    share: float
    reference_share: float
    n_flagged: int
    n_reference: int
    n: int


def match_threshold(score, reference_positive) -> ThresholdMatch:
    """The score threshold that flags the same share of patients as a reference classification.

    The paper's reference is ischemia >= 10% (:func:`ischemic_tpd`); it classifies the AI score as
    high risk at the threshold that flags the same share of patients (0.17, flagging 4.13%).

    Parameters
    ----------
    score : array-like of shape (n_samples,)
        Finite scores; higher means higher risk.
    reference_positive : array-like of shape (n_samples,)
        Reference high-risk classification of the same patients (booleans or 0/1), e.g.
        ``ischemic_tpd(cohort) >= 10``; it must flag at least one patient.

    Returns
    -------
    ThresholdMatch
        The threshold (an observed score), the share it flags and the reference share.

    Raises
    ------
    ValueError
        If the scores are not finite, the lengths differ, or the reference is not binary or flags
        nobody.

    Notes
    -----
    With ``k`` reference positives among ``n`` patients, the candidate thresholds are the distinct
    scores ``v``; each flags ``c(v) = #{score >= v}`` patients. The threshold is the ``v`` whose
    ``c(v)`` is closest to ``k``: exactly ``k`` when the ``k``-th largest score is not tied with the
    ``(k+1)``-th. Ties at the boundary make ``k`` unreachable (tied patients are flagged together);
    when two candidates are equally close, the one flagging fewer patients (the higher threshold)
    is chosen, so the result never depends on patient order.
    """
    s = np.asarray(score, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"score must be a non-empty 1-D array; got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"score must be finite; found {bad} NaN or infinite value(s)")
    ref = _as_binary(reference_positive, s.size, "reference_positive")
    n, k = s.size, int(ref.sum())
    if k == 0:
        raise ValueError("reference_positive flags no patient; expected at least one reference positive")
    values, counts = np.unique(s, return_counts=True)
    values, flagged = values[::-1], np.cumsum(counts[::-1])  # descending thresholds, c(v) increasing
    # argmin returns the first minimum, i.e. the fewest flagged among equally close candidates.
    j = int(np.argmin(np.abs(flagged - k)))
    if flagged[j] != k:
        logger.info("match_threshold: ties at the boundary; %d flagged instead of %d", flagged[j], k)
    return ThresholdMatch(threshold=float(values[j]), share=float(flagged[j] / n), reference_share=k / n,
                          n_flagged=int(flagged[j]), n_reference=k, n=n)


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier and log-rank
# ---------------------------------------------------------------------------------------------

def _default_times(t: np.ndarray) -> np.ndarray:
    # Yearly marks over the follow-up, as under the paper's Fig. 3.
    return np.arange(0.0, math.floor(t.max()) + 1.0)


def _as_eval_times(times, t: np.ndarray) -> np.ndarray:
    if times is None:
        return _default_times(t)
    out = np.atleast_1d(np.asarray(times, dtype=float))
    if out.ndim != 1 or out.size == 0 or not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(f"times must be a non-empty 1-D sequence of finite times >= 0; got {times!r}")
    return out


def _step_lookup(frame: pd.DataFrame, at: np.ndarray) -> np.ndarray:
    """Right-continuous step function read from a lifelines frame indexed by time (first row at 0)."""
    idx = np.searchsorted(frame.index.to_numpy(dtype=float), at, side="right") - 1
    return frame.to_numpy()[np.clip(idx, 0, None)]


def kaplan_meier(time, event, group=None, times=None, *, level: float = 0.95) -> pd.DataFrame:
    """Kaplan-Meier survival of each group at given times, with confidence intervals and numbers at risk.

    Parameters
    ----------
    time : array-like of shape (n_samples,)
        Time to death or censoring (finite, >= 0), e.g. ``followup_years``.
    event : array-like of shape (n_samples,)
        1 (or True) for death, 0 for censoring.
    group : array-like of shape (n_samples,), optional
        Group label of each patient (no missing labels); all patients form group ``"all"`` when
        omitted.
    times : sequence of float, optional
        Times at which to read the curves; yearly from 0 to the longest follow-up by default.
    level : float, default 0.95
        Confidence level of the pointwise intervals.

    Returns
    -------
    DataFrame
        One row per group and time (groups sorted, times in the given order): ``group, time,
        survival, ci_low, ci_high, n_at_risk, cum_events``. ``n_at_risk`` counts the patients with
        follow-up ``>= time`` (at risk just before ``time``); ``cum_events`` the deaths up to and
        including ``time``. Survival and interval are NaN past a group's longest follow-up, where
        the curve is not estimated.

    Raises
    ------
    ValueError
        On negative or non-finite times, non-binary events, missing group labels, mismatched lengths
        or a level outside (0, 1).

    Notes
    -----
    The curve is the product-limit estimate ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)``, a
    right-continuous step function (deaths at ``t`` count by ``t``). The intervals are lifelines'
    exponential Greenwood ("log-log") intervals, ``S(t) ** exp(+/- z se)`` with
    ``se**2 = sum d_j / (n_j (n_j - d_j)) / log(S(t))**2``, which stay within [0, 1].

    References
    ----------
    .. [1] Kaplan EL, Meier P. *J Am Stat Assoc* 1958;53:457-481.
    .. [2] Kalbfleisch JD, Prentice RL. *The Statistical Analysis of Failure Time Data*, 2nd ed.
       Wiley, 2002 (log-log interval, section 1.4).
    """
    level = check_level(level)
    t = _as_times(time)
    e = _as_binary(event, t.size, "event")
    g, levels = _as_groups(group, t.size)
    at = _as_eval_times(times, t)
    rows = []
    for lev in levels:
        sel = g == lev
        kmf = KaplanMeierFitter(alpha=1.0 - level).fit(t[sel], e[sel], label="km")
        surv = _step_lookup(kmf.survival_function_, at)[:, 0]
        ci = _step_lookup(kmf.confidence_interval_survival_function_, at)
        beyond = at > t[sel].max()
        if beyond.any():
            logger.info("kaplan_meier: group %r followed up to %.3g; survival past it is NaN",
                        lev, t[sel].max())
        ts, es = t[sel], e[sel]
        for j, tj in enumerate(at):
            rows.append({"group": lev, "time": float(tj),
                         "survival": np.nan if beyond[j] else float(surv[j]),
                         "ci_low": np.nan if beyond[j] else float(ci[j, 0]),
                         "ci_high": np.nan if beyond[j] else float(ci[j, 1]),
                         "n_at_risk": int((ts >= tj).sum()), "cum_events": int((es & (ts <= tj)).sum())})
    return pd.DataFrame(rows, columns=["group", "time", "survival", "ci_low", "ci_high", "n_at_risk",
                                       "cum_events"])


def at_risk_table(time, *, group=None, times=None) -> pd.DataFrame:
    """Numbers at risk per group at given times, the table printed under Kaplan-Meier curves.

    Parameters
    ----------
    time : array-like of shape (n_samples,)
        Time to death or censoring (finite, >= 0).
    group : array-like of shape (n_samples,), optional
        Group label of each patient; all patients form group ``"all"`` when omitted.
    times : sequence of float, optional
        Times of the columns; yearly from 0 to the longest follow-up by default.

    Returns
    -------
    DataFrame
        Index ``group`` (sorted), one column per time: patients with follow-up ``>= time``.

    Raises
    ------
    ValueError
        On invalid times, missing group labels or mismatched lengths.

    References
    ----------
    .. [1] Pocock SJ, Clayton TC, Altman DG. Survival plots of time-to-event outcomes in clinical
       trials: good practice and pitfalls. *Lancet* 2002;359:1686-1689.
    """
    t = _as_times(time)
    g, levels = _as_groups(group, t.size)
    at = _as_eval_times(times, t)
    counts = [[int(((g == lev) & (t >= tj)).sum()) for tj in at] for lev in levels]
    return pd.DataFrame(counts, index=pd.Index(levels, name="group"), columns=pd.Index(at, name="time"))


@dataclass(frozen=True)
class LogRankResult:
    """Log-rank test of equal survival across groups.

    Attributes
    ----------
    statistic : float
        Chi-square statistic.
    p_value : float
        Its upper-tail probability on ``df`` degrees of freedom (``scipy.stats.chi2.sf``; 0 only when it
        is below the smallest float, about 5e-324).
    df : int
        Degrees of freedom, the number of groups minus one.
    groups : tuple
        The groups compared, sorted.
    """

    statistic: float
    p_value: float
    df: int
    groups: tuple


def logrank(time, event, group) -> LogRankResult:
    """Log-rank test of equal survival in two or more groups (lifelines).

    Parameters
    ----------
    time : array-like of shape (n_samples,)
        Time to death or censoring (finite, >= 0).
    event : array-like of shape (n_samples,)
        1 (or True) for death, 0 for censoring.
    group : array-like of shape (n_samples,)
        Group label of each patient, at least two distinct labels, none missing.

    Returns
    -------
    LogRankResult
        Chi-square statistic, p-value, degrees of freedom and the groups.

    Raises
    ------
    ValueError
        On invalid times or events, missing labels, fewer than two groups, or no death at all.

    Notes
    -----
    Two groups use ``lifelines.statistics.logrank_test``, more use ``multivariate_logrank_test``
    (the same statistic for two groups): at each death time ``t_j`` the observed deaths of each
    group are compared with their expectation ``n_gj d_j / n_j`` under equal hazards, with the
    hypergeometric covariance.

    References
    ----------
    .. [1] Mantel N. *Cancer Chemother Rep* 1966;50:163-170.
    .. [2] Peto R, Peto J. Asymptotically efficient rank invariant test procedures. *J R Stat Soc A*
       1972;135:185-207.
    """
    t = _as_times(time)
    e = _as_binary(event, t.size, "event")
    g, levels = _as_groups(group, t.size)
    if len(levels) < 2:
        raise ValueError(f"logrank needs at least two groups; got only {levels}")
    if not e.any():
        raise ValueError("logrank needs at least one death (event == 1); none observed")
    if len(levels) == 2:
        a, b = g == levels[0], g == levels[1]
        res = logrank_test(t[a], t[b], e[a], e[b])
    else:
        res = multivariate_logrank_test(t, g, e)
    statistic, df = float(res.test_statistic), int(res.degrees_of_freedom)
    # the upper tail itself (not 1 - cdf), so that a small p-value keeps its digits down to the
    # smallest float; below that it is 0, which is logged rather than silent
    p = float(stats.chi2.sf(statistic, df))
    if p == 0.0:
        logger.info("logrank: chi-square %.6g on %d df; the p-value underflows to 0", statistic, df)
    return LogRankResult(statistic=statistic, p_value=p, df=df, groups=tuple(levels))


# ---------------------------------------------------------------------------------------------
# Cox models
# ---------------------------------------------------------------------------------------------

_COX_COLUMNS = ["covariate", "hr", "ci_low", "ci_high", "p", "n", "events"]

#: Newton-Raphson options of every Cox fit (``CoxPHFitter.fit(fit_options=...)``). lifelines stops at
#: the first of: a step shorter than ``precision``, a Newton decrement ``g' H^-1 g / 2`` below
#: ``precision``, or a relative change of the log partial likelihood below ``r_precision``; its
#: defaults (1e-7, 1e-9) can stop while the score is still far from 0 (1e-3 with a few thousand
#: patients). R's ``coxph`` (``coxph.control``: ``eps = 1e-9``, ``iter.max = 20``) iterates until the
#: relative change of the log partial likelihood is below 1e-9, keeping the step that achieves it; these
#: options iterate until the Newton step is below about 1e-7 standard errors (the score equations hold
#: to round-off), at least as tight as R.
COX_FIT_OPTIONS = MappingProxyType({"precision": 1e-14, "r_precision": 1e-14, "max_steps": 500})
#: Initial Newton step sizes tried in turn. lifelines starts at 0.95 of the Newton step; from the zero start
#: a binary exposure with a large effect (the AI high-risk class, HR ~ 5) and an uncentred covariate (age)
#: can overshoot into a region where exp(x'b) overflows and the fit stops with NaN. The log partial
#: likelihood is concave, so a shorter first step reaches the same maximum (as R's step-halving does).
COX_STEP_SIZES = (0.95, 0.5, 0.25)
_NO_ESTIMATE = {"hr": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
_ON_FAILURE = ("raise", "report")


def _check_on_failure(on_failure: str) -> bool:
    """True for ``"report"``; ValueError for anything but ``"raise"`` / ``"report"``."""
    if on_failure not in _ON_FAILURE:
        raise ValueError(f"on_failure must be 'raise' or 'report'; got {on_failure!r}")
    return on_failure == "report"


def _survival_frame(df: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str],
                    context: str) -> pd.DataFrame:
    """Complete cases of duration, event and covariates as floats, validated for a Cox fit."""
    if isinstance(covariates, str):
        raise ValueError(f"covariates must be a list of column names; got the string {covariates!r}")
    covariates = list(covariates)
    if not covariates:
        raise ValueError("covariates is empty; expected at least one column name")
    if len(set(covariates)) != len(covariates):
        raise ValueError(f"covariates must be distinct; got {covariates}")
    clash = {duration_col, event_col} & set(covariates)
    if clash:
        raise ValueError(f"{sorted(clash)} cannot be both a covariate and the duration/event column")
    check_columns(df, [duration_col, event_col], "duration/event column(s)")
    check_columns(df, covariates, "covariate(s)")
    _check_numeric(df, covariates)
    t = _as_times(df[duration_col], duration_col)
    e = _as_binary(df[event_col].to_numpy(), t.size, event_col)
    data = df[covariates].astype(float)
    complete = data.notna().all(axis=1).to_numpy()
    if not complete.all():
        logger.info("%s: %d of %d rows with missing %s dropped", context, int((~complete).sum()),
                    complete.size, covariates)
    data = data.loc[complete].copy()
    data.insert(0, "_event", e[complete].astype(float))
    data.insert(0, "_duration", t[complete])
    if data["_event"].sum() == 0:
        raise ValueError(f"{context}: no event ({event_col} == 1) among the {len(data)} complete rows")
    constant = [c for c in covariates if data[c].nunique() < 2]
    if constant:
        raise ValueError(f"{context}: covariate(s) {constant} constant among the {len(data)} complete rows; "
                         "a hazard ratio cannot be estimated")
    return data


def _check_maximum(cph: CoxPHFitter) -> None:
    """ConvergenceError unless the fit stopped at a maximum of the partial likelihood.

    An overshooting first step can leave lifelines "converged" where ``exp(x'b)`` overflowed: finite
    coefficients (a hazard ratio of 1e-29), a log partial likelihood far below the null model's and
    NaN standard errors. The maximum is at least as likely as ``b = 0`` and has a finite variance.
    """
    lr = float(cph.log_likelihood_ratio_test().test_statistic)
    se = np.asarray(cph.standard_errors_, float)
    if not (np.isfinite(lr) and lr >= -1e-6 and np.isfinite(se).all() and np.isfinite(cph.params_).all()):
        raise ConvergenceError(f"stopped away from the maximum (likelihood-ratio statistic {lr:.4g} against the "
                               f"null model, {int((~np.isfinite(se)).sum())} standard error(s) not finite)")


def _fit_cox(data: pd.DataFrame, level: float, context: str) -> CoxPHFitter:
    """A Cox model (Efron ties) of ``data``'s covariates, converged to :data:`COX_FIT_OPTIONS`.

    The warnings of the fit (numpy's overflow and scipy's ill-conditioned matrix on the way to a model
    that does not converge, lifelines' notes on low-variance covariates) are logged with ``context``:
    a failed fit is reported by the ValueError, a fit that converged despite them by a logged warning.
    """
    for i, step in enumerate(COX_STEP_SIZES):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cph = CoxPHFitter(alpha=1.0 - level).fit(data, duration_col="_duration", event_col="_event",
                                                         fit_options={**COX_FIT_OPTIONS, "step_size": step})
                _check_maximum(cph)
            except ConvergenceError as err:
                for w in caught:
                    logger.debug("%s: on the way to no convergence, %s: %s", context, w.category.__name__,
                                 w.message)
                reason = str(err).split(". ")[0]  # lifelines appends a paragraph of generic tips
                if i + 1 < len(COX_STEP_SIZES):
                    logger.info("%s: no convergence from step size %g (%s); trying %g", context, step, reason,
                                COX_STEP_SIZES[i + 1])
                    continue
                raise ValueError(f"{context}: the Cox model did not converge ({reason}, from initial step sizes "
                                 f"{', '.join(f'{s:g}' for s in COX_STEP_SIZES)}); check for covariates that "
                                 "separate deaths from survivors") from err
        for w in caught:
            logger.warning("%s: %s: %s", context, w.category.__name__, " ".join(str(w.message).split())[:300])
        return cph


def _hr_rows(cph: CoxPHFitter, covariates: Sequence[str], level: float, report: bool = False) -> list[dict]:
    z = stats.norm.ppf(0.5 + level / 2.0)
    summary = cph.summary
    rows = []
    for c in covariates:
        b, se = float(summary.loc[c, "coef"]), float(summary.loc[c, "se(coef)"])
        try:
            hr, lo, hi = math.exp(b), math.exp(b - z * se), math.exp(b + z * se)
        except OverflowError:
            reason = (f"{c}: the hazard ratio's interval overflows (coefficient {b:.3g}, SE {se:.3g}); "
                      "the groups are separated or too small for a Cox model")
            if not report:  # a ValueError, so that callers reporting failures can catch it
                raise ValueError(reason) from None
            rows.append({"covariate": c, **_NO_ESTIMATE, "note": reason.split(": ", 1)[-1]})
            continue
        rows.append({"covariate": c, "hr": hr, "ci_low": lo, "ci_high": hi, "p": float(summary.loc[c, "p"]),
                     "note": ""})
    return rows


def cox_univariate(df: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str], *,
                   level: float = 0.95, on_failure: str = "raise") -> pd.DataFrame:
    """Hazard ratio of each covariate alone: one Cox proportional hazards model per covariate.

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    duration_col, event_col : str
        Columns of the time to death or censoring and of the death indicator (0/1).
    covariates : sequence of str
        Numeric or boolean columns, each fitted in its own model. Rows missing the covariate are left
        out of that model only.
    level : float, default 0.95
        Confidence level of the intervals.
    on_failure : {"raise", "report"}, default "raise"
        What a covariate whose hazard ratio cannot be estimated (no death among its complete rows, a
        constant covariate, no convergence, an interval that overflows because the covariate
        separates deaths from survivors) does: raise, or give a row with NaN estimates and the reason
        in an added ``note`` column (a small site's data can hold such a covariate).

    Returns
    -------
    DataFrame
        ``covariate, hr, ci_low, ci_high, p, n, events`` (and ``note`` with ``on_failure="report"``),
        one row per covariate in input order: the hazard ratio per unit of the covariate, its Wald
        interval and p-value, and the patients and deaths in the model.

    Raises
    ------
    ValueError
        On unknown or non-numeric columns, invalid durations or events, a covariate constant among
        its complete rows, no death, or a model that does not converge.

    References
    ----------
    .. [1] Cox DR. *J R Stat Soc B* 1972;34:187-220.
    .. [2] Efron B. The efficiency of Cox's likelihood function for censored data. *J Am Stat Assoc*
       1977;72:557-565 (tied death times).
    """
    level = check_level(level)
    if isinstance(covariates, str):
        raise ValueError(f"covariates must be a list of column names; got the string {covariates!r}")
    report = _check_on_failure(on_failure)
    if report:  # bad input is an error either way; only estimation failures are reported
        check_columns(df, [duration_col, event_col, *covariates], "column(s)")
        _check_numeric(df, list(covariates))
    rows = []
    for c in covariates:
        context = f"cox_univariate[{c}]"
        try:
            data = _survival_frame(df, duration_col, event_col, [c], context)
            row = _hr_rows(_fit_cox(data, level, context), [c], level, report)[0]
        except ValueError as err:
            if not report:
                raise
            logger.warning("%s", err)
            complete = df[[duration_col, event_col, c]].dropna()
            rows.append({"covariate": c, **_NO_ESTIMATE, "n": len(complete), "events": int(complete[event_col].sum()),
                         "note": str(err).split(": ", 1)[-1]})
            continue
        rows.append({**row, "n": len(data), "events": int(data["_event"].sum())})
    if not rows:
        raise ValueError("covariates is empty; expected at least one column name")
    return pd.DataFrame(rows, columns=_COX_COLUMNS + (["note"] if report else []))


def cox_multivariable(df: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str], *,
                      level: float = 0.95, on_failure: str = "raise") -> pd.DataFrame:
    """Adjusted hazard ratios: one Cox proportional hazards model with all covariates.

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    duration_col, event_col : str
        Columns of the time to death or censoring and of the death indicator (0/1).
    covariates : sequence of str
        Numeric or boolean columns, all in the one model; rows missing any of them are left out
        (complete cases).
    level : float, default 0.95
        Confidence level of the intervals.
    on_failure : {"raise", "report"}, default "raise"
        What a model that cannot be estimated does: raise, or give NaN estimates with the reason in an
        added ``note`` column, for the covariate whose interval overflows or that is constant among the
        complete rows (it is left out of the model, which is fitted on the others) or, when the model
        cannot be fitted at all, for every covariate.

    Returns
    -------
    DataFrame
        ``covariate, hr, ci_low, ci_high, p, n, events``, one row per covariate in input order, each
        HR adjusted for the others. ``attrs["concordance"]`` holds Harrell's C of the model,
        ``attrs["n"]`` and ``attrs["events"]`` its patients and deaths.

    Raises
    ------
    ValueError
        On unknown or non-numeric columns, invalid durations or events, a covariate constant among
        the complete rows, no death, or a model that does not converge.

    References
    ----------
    .. [1] Cox DR. *J R Stat Soc B* 1972;34:187-220.
    .. [2] Harrell FE, Califf RM, Pryor DB, Lee KL, Rosati RA. Evaluating the yield of medical tests.
       *JAMA* 1982;247:2543-2546.
    """
    level = check_level(level)
    report = _check_on_failure(on_failure)
    columns = _COX_COLUMNS + (["note"] if report else [])
    constant: list[str] = []
    if report and not isinstance(covariates, str) and len(covariates):
        # a covariate constant among the complete rows (a small site) is reported, the others fitted
        check_columns(df, [duration_col, event_col, *covariates], "column(s)")
        _check_numeric(df, list(covariates))
        complete = df[[duration_col, event_col, *covariates]].dropna()
        constant = [c for c in covariates if complete[c].nunique() < 2]
        if len(constant) == len(covariates):
            n, events = len(complete), int(complete[event_col].sum())
            out = pd.DataFrame([{"covariate": c, **_NO_ESTIMATE, "n": n, "events": events,
                                 "note": f"constant among the {n} complete rows; no model to fit"}
                                for c in covariates], columns=columns)
            out.attrs.update(concordance=np.nan, n=n, events=events)
            return out
    fitted = [c for c in covariates if c not in constant] if constant else covariates
    data = _survival_frame(df, duration_col, event_col, fitted, "cox_multivariable")
    n, events = len(data), int(data["_event"].sum())
    skipped = {c: {"covariate": c, **_NO_ESTIMATE, "n": n, "events": events,
                   "note": f"constant among the {n} complete rows; left out of the model"} for c in constant}
    if constant:
        logger.warning("cox_multivariable: covariate(s) %s constant among the %d complete rows; left out", constant, n)
    try:
        cph = _fit_cox(data, level, "cox_multivariable")
    except ValueError as err:
        if not report:
            raise
        logger.warning("%s", err)
        out = pd.DataFrame([skipped.get(c) or {"covariate": c, **_NO_ESTIMATE, "n": n, "events": events,
                                               "note": str(err).split(": ", 1)[-1]} for c in covariates],
                           columns=columns)
        out.attrs.update(concordance=np.nan, n=n, events=events)
        return out
    estimated = {r["covariate"]: {**r, "n": n, "events": events} for r in _hr_rows(cph, list(fitted), level, report)}
    out = pd.DataFrame([estimated.get(c) or skipped[c] for c in covariates], columns=columns)
    out.attrs.update(concordance=float(cph.concordance_index_), n=n, events=events)
    return out


def _subgroup_mask(df: pd.DataFrame, name: str, spec) -> np.ndarray:
    """A subgroup given as a boolean mask (array or Series aligned on ``df``) or a boolean column name."""
    if isinstance(spec, str):
        if spec not in df.columns:
            raise ValueError(f"subgroup {name!r}: column {spec!r} not in the DataFrame; available columns: "
                             f"{list(df.columns)}")
        spec = df[spec]
    if isinstance(spec, pd.Series):
        spec = spec.reindex(df.index)
        if spec.isna().any():
            raise ValueError(f"subgroup {name!r}: the mask is missing for {int(spec.isna().sum())} row(s) "
                             "of the DataFrame (index mismatch or NaN)")
        spec = spec.to_numpy()
    return _as_binary(spec, len(df), f"subgroup {name!r}")


def adjusted_hr_by_subgroup(df: pd.DataFrame, exposure: str, subgroups: Mapping, adjust_for: Sequence[str],
                            *, duration_col: str = "followup_years", event_col: str = "death",
                            level: float = 0.95, on_failure: str = "raise") -> pd.DataFrame:
    """Hazard ratio of an exposure adjusted for covariates, within each subgroup (Supp. Table 7).

    Parameters
    ----------
    df : DataFrame
        One row per patient.
    exposure : str
        Numeric or boolean column whose HR is reported, e.g. the AI high-risk class
        (``score >= threshold``).
    subgroups : mapping
        ``{name: mask}``: a boolean mask per subgroup, given as an array of ``len(df)``, a boolean
        Series aligned on ``df.index``, or the name of a boolean / 0-1 column of ``df``.
    adjust_for : sequence of str
        Numeric or boolean adjusters. Those constant within a subgroup (e.g. sex within men) are
        dropped from that subgroup's model, and the drop is logged.
    duration_col, event_col : str
        Columns of the time to death or censoring and of the death indicator (0/1).
    level : float, default 0.95
        Confidence level of the intervals.
    on_failure : {"raise", "report"}, default "raise"
        What a subgroup whose hazard ratio cannot be estimated (no patient, no death, a constant
        exposure, a model that does not converge, e.g. with few deaths and a covariate that
        separates them) does: raise, or give a row with NaN estimates and the reason in ``note``.

    Returns
    -------
    DataFrame
        ``subgroup, n, events, hr, ci_low, ci_high, p, dropped, note``, one row per subgroup in input
        order: the complete-case patients and deaths of the subgroup, the exposure's adjusted HR with
        its Wald interval and p-value, the adjusters dropped (comma-separated, empty if none) and why
        the estimate is missing (empty if it is not).

    Raises
    ------
    ValueError
        On unknown or non-numeric columns, invalid masks, an unknown ``on_failure``, and (with
        ``on_failure="raise"``) an empty subgroup or a subgroup whose HR cannot be estimated.

    References
    ----------
    .. [1] Cox DR. *J R Stat Soc B* 1972;34:187-220.
    .. [2] Wang R, Lagakos SW, Ware JH, Hunter DJ, Drazen JM. Statistics in medicine - reporting of
       subgroup analyses in clinical trials. *N Engl J Med* 2007;357:2189-2194.
    """
    level = check_level(level)
    _check_on_failure(on_failure)
    if not isinstance(subgroups, Mapping) or not subgroups:
        raise ValueError("subgroups must be a non-empty mapping {name: boolean mask or column name}")
    if isinstance(adjust_for, str):
        raise ValueError(f"adjust_for must be a list of column names; got the string {adjust_for!r}")
    adjust_for = list(adjust_for)
    if exposure in adjust_for:
        raise ValueError(f"exposure {exposure!r} is also listed in adjust_for")
    check_columns(df, [exposure, *adjust_for], "exposure/adjuster column(s)")
    _check_numeric(df, [exposure, *adjust_for])
    rows = []
    for name, spec in subgroups.items():
        mask = _subgroup_mask(df, name, spec)
        if not mask.any():
            if on_failure == "raise":
                raise ValueError(f"subgroup {name!r} is empty")
            rows.append({"subgroup": name, "n": 0, "events": 0, "hr": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                         "p": np.nan, "dropped": "", "note": "no patient in this subgroup"})
            continue
        sub = df.loc[mask]
        kept = [c for c in adjust_for if sub[c].dropna().nunique() > 1]
        dropped = [c for c in adjust_for if c not in kept]
        if dropped:
            logger.info("adjusted_hr_by_subgroup: %r: adjuster(s) %s constant within the subgroup, dropped",
                        name, dropped)
        context = f"adjusted_hr_by_subgroup[{name}]"
        try:
            data = _survival_frame(sub, duration_col, event_col, [exposure, *kept], context)
            row = _hr_rows(_fit_cox(data, level, context), [exposure], level)[0]
        except ValueError as err:
            if on_failure == "raise":
                raise
            logger.warning("%s", err)
            complete = sub[[duration_col, event_col, exposure, *kept]].dropna()
            rows.append({"subgroup": name, "n": len(complete), "events": int(complete[event_col].sum()),
                         "hr": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                         "dropped": ", ".join(dropped), "note": str(err).split(": ", 1)[-1]})
            continue
        rows.append({"subgroup": name, "n": len(data), "events": int(data["_event"].sum()),
                     "hr": row["hr"], "ci_low": row["ci_low"], "ci_high": row["ci_high"], "p": row["p"],
                     "dropped": ", ".join(dropped), "note": ""})
    return pd.DataFrame(rows, columns=["subgroup", "n", "events", "hr", "ci_low", "ci_high", "p", "dropped",
                                       "note"])


def query_masks(df: pd.DataFrame, queries: Mapping[str, str], allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Boolean masks from pandas query strings, e.g. :data:`ctac_helpers.results.outcomes.HR_SUBGROUPS`.

    Parameters
    ----------
    df : DataFrame
        The rows to select from.
    queries : mapping
        ``{name: query}``, each a boolean expression of ``df``'s columns (``DataFrame.eval``), or
        None for all rows.
    allow_empty : bool
        Return a query that selects nobody as an all-False mask (a small site may have nobody in a
        subgroup) instead of raising.

    Returns
    -------
    dict
        ``{name: mask}``, boolean arrays of ``len(df)``; a row whose expression is missing is False.

    Raises
    ------
    ValueError
        Naming the subgroup and its query when the query is invalid, names an unknown column, is
        not boolean or (unless ``allow_empty``) selects nobody.
    """
    out = {}
    for name, query in queries.items():
        if query is None:
            out[name] = np.ones(len(df), dtype=bool)
            continue
        try:
            mask = df.eval(query)
        except Exception as exc:  # pandas raises several types (UndefinedVariableError, SyntaxError...)
            raise ValueError(f"subgroup {name!r}: invalid query {query!r} ({exc}); columns: "
                             f"{list(df.columns)}") from exc
        if not isinstance(mask, pd.Series) or mask.dtype != bool:
            raise ValueError(f"subgroup {name!r}: query {query!r} is not a boolean condition")
        if not mask.any() and not allow_empty:
            raise ValueError(f"subgroup {name!r}: query {query!r} selects no patient")
        out[name] = mask.to_numpy()
    return out
