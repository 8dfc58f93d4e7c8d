"""Net reclassification improvement (NRI) of a binary high-risk classification, with censoring.

The paper compares the AI high-risk class (score at or above the matched threshold) with abnormal
perfusion (ischemic TPD >= 10%) by the time-dependent NRI at 2 years, computed with the R package
``nricens`` 1.6 (Kaplan-Meier estimator, ``updown = "category"``), with percentile bootstrap
intervals. Moving from the old to the new classification, a patient moves *up* (old low, new high)
or *down* (old high, new low).

Time-dependent NRI, Kaplan-Meier form (Pencina, D'Agostino & Steyerberg 2011; ``nricens.km.main``).
With ``t0`` the horizon, ``S(t)`` the Kaplan-Meier survival of all patients and ``S_up(t)``,
``S_down(t)`` those of the patients who moved up and down:

.. math::

    P(\\text{up} \\mid \\text{event}) = \\frac{(1 - S_{up}(t_0))\\,P(\\text{up})}{1 - S(t_0)}, \\qquad
    P(\\text{up} \\mid \\text{non-event}) = \\frac{S_{up}(t_0)\\,P(\\text{up})}{S(t_0)},

and likewise for *down*, where ``P(up)`` and ``P(down)`` are the shares of all patients who moved.
These are Bayes' rule, ``P(up | T <= t0) = P(T <= t0 | up) P(up) / P(T <= t0)``, with each
probability of death by ``t0`` estimated by Kaplan-Meier, so that patients censored before ``t0``
contribute through the survival curves instead of being dropped. Then

.. math::

    \\text{NRI}^{+} = P(\\text{up} \\mid \\text{event}) - P(\\text{down} \\mid \\text{event}), \\quad
    \\text{NRI}^{-} = P(\\text{down} \\mid \\text{non-event}) - P(\\text{up} \\mid \\text{non-event}),

and ``NRI = NRI+ + NRI-``. An *event* is a death at or before ``t0`` (the survival curves are
right-continuous, as ``stepfun`` in nricens' ``get.surv.km``). When nobody is censored before
``t0`` every estimate equals its count: ``S(t0)`` is the share alive at ``t0`` and the formulas
reduce to the categorical NRI of Pencina et al. (2008) with events = deaths by ``t0``
(:func:`nri_binary`).

Bootstrap (as ``nricens``): patients are resampled with replacement (unstratified); the interval
is the percentile interval with R's ``quantile(type = 2)`` (numpy ``"averaged_inverted_cdf"``);
the p-value is ``2 (1 - Phi(|estimate / se|))`` with ``se`` the standard deviation of the
replicates, i.e. a normal approximation centred on zero, not a bootstrap test.

References
----------
.. [1] Pencina MJ, D'Agostino RB Sr, D'Agostino RB Jr, Vasan RS. Evaluating the added predictive
   ability of a new marker: from area under the ROC curve to reclassification and beyond.
   *Stat Med* 2008;27:157-172.
.. [2] Pencina MJ, D'Agostino RB Sr, Steyerberg EW. Extensions of net reclassification improvement
   calculations to measure usefulness of new biomarkers. *Stat Med* 2011;30:11-21.
.. [3] Inoue E. nricens: NRI for risk prediction models with time to event and binary response
   data. R package version 1.6, 2018 (``nricens.km.main``, ``nricens``).
"""

from __future__ import annotations

import logging
import math
import time as _time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ctac_helpers.stats.checks import as_labels, check_level, check_n_resamples, check_seed

logger = logging.getLogger(__name__)

__all__ = ["NRIResult", "bootstrap_nri", "nri_binary", "nri_time_dependent"]

# Resamples processed together: bounds memory at about _CHUNK * n_samples * 8 bytes per array.
_CHUNK = 100
_COMPONENTS = ("nri_events", "nri_nonevents", "nri_overall")


@dataclass(frozen=True)
class NRIResult:
    """Net reclassification improvement of a new versus an old high-risk classification.

    Attributes
    ----------
    nri_events : float
        NRI+ = P(up | event) - P(down | event): net share of events moved to high risk.
    nri_nonevents : float
        NRI- = P(down | non-event) - P(up | non-event): net share of non-events moved to low risk.
    nri_overall : float
        ``nri_events + nri_nonevents``.
    p_up_events, p_down_events, p_down_nonevents, p_up_nonevents : float
        The four conditional reclassification probabilities.
    event_probability : float
        Probability of an event: ``1 - S(t0)`` by Kaplan-Meier, or the share of events.
    n, n_up, n_down : int
        Patients, and those moved up (old low, new high) and down (old high, new low).
    """

    nri_events: float
    nri_nonevents: float
    nri_overall: float
    p_up_events: float
    p_down_events: float
    p_down_nonevents: float
    p_up_nonevents: float
    event_probability: float
    n: int
    n_up: int
    n_down: int


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _as_class(values, n: int, name: str) -> np.ndarray:
    """A binary high-risk classification as booleans; ValueError for probabilities or other codes."""
    v = np.asarray(values)
    if v.ndim != 1 or v.size != n:
        raise ValueError(f"{name} must be 1-D with one value per patient ({n}); got shape {v.shape}")
    if v.dtype == bool:
        return v
    if not np.issubdtype(v.dtype, np.number) or not np.all(np.isin(v, (0, 1))):
        raise ValueError(f"{name} must be a binary high-risk classification (booleans or 0/1), e.g. "
                         f"stress_tpd >= 10 or score >= threshold; got dtype {v.dtype} with values "
                         f"{', '.join(map(str, pd.unique(v.ravel())[:5]))}")
    return v == 1


def _inputs(time, event, risk_old, risk_new, horizon):
    t = np.asarray(time, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"time must be a non-empty 1-D array of follow-up times; got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("time must hold finite follow-up times >= 0")
    e = np.asarray(event)
    if e.ndim != 1 or e.size != t.size:
        raise ValueError(f"event must be 1-D with one value per patient ({t.size}); got shape {e.shape}")
    if e.dtype != bool and not (np.issubdtype(e.dtype, np.number) and np.all(np.isin(e, (0, 1)))):
        raise ValueError("event must hold 1 (death) or 0 (censored), or booleans")
    e = e.astype(bool)
    old = _as_class(risk_old, t.size, "risk_old")
    new = _as_class(risk_new, t.size, "risk_new")
    if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, float, np.integer, np.floating)):
        raise ValueError(f"horizon must be a number (a time > 0, e.g. 2 years); got {horizon!r}")
    h = float(horizon)
    if not math.isfinite(h) or h <= 0:
        raise ValueError(f"horizon must be a finite time > 0 (e.g. 2 years); got {horizon!r}")
    if not np.any(e & (t <= h)):
        raise ValueError(f"no death at or before the horizon {h}; NRI+ (events) is undefined")
    if not np.any(t > h):
        raise ValueError(f"nobody is followed beyond the horizon {h}; NRI- (non-events) is undefined")
    return t, e, new & ~old, old & ~new, h


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier of weighted (resampled) patients
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _SortedTimes:
    """Patients sorted by time and grouped by distinct time, for Kaplan-Meier at a horizon."""

    order: np.ndarray    # permutation sorting the patients by time
    starts: np.ndarray   # first sorted position of each distinct time
    event: np.ndarray    # sorted event indicators (float)
    within: np.ndarray   # distinct times <= horizon (their factors enter S(horizon))


def _sorted_times(t: np.ndarray, e: np.ndarray, horizon: float) -> _SortedTimes:
    order = np.argsort(t, kind="stable")
    ts = t[order]
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    return _SortedTimes(order=order, starts=starts, event=e[order].astype(float),
                        within=ts[starts] <= horizon)


def _km_at_horizon(st: _SortedTimes, weights: np.ndarray) -> np.ndarray:
    """Kaplan-Meier ``S(horizon)`` of each row of patient weights (draw counts), shape (B, n) -> (B,).

    A resample is a multiset of patients: duplicates share their time, so the product-limit estimate
    with deaths ``d_j`` and numbers at risk ``n_j`` counted with these weights is exactly the
    Kaplan-Meier estimate of the resampled data.
    """
    w = weights[:, st.order]
    total = np.add.reduceat(w, st.starts, axis=1)
    deaths = np.add.reduceat(w * st.event, st.starts, axis=1)
    # Number at risk at each distinct time: weight of patients with time >= it.
    at_risk = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1.0 - deaths / at_risk, 1.0)
    return np.prod(factor[:, st.within], axis=1)


def _nri_km(st: _SortedTimes, weights: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """The components (B, 8) of nricens' KM estimator for each row of patient weights.

    Columns: nri_events, nri_nonevents, nri_overall, p_up_events, p_down_events, p_down_nonevents,
    p_up_nonevents, event_probability. NaN where ``S(t0)`` is 0 or 1 (no non-event or no event).
    """
    n_w = weights.sum(axis=1)
    p_up = (weights * up).sum(axis=1) / n_w
    p_down = (weights * down).sum(axis=1) / n_w
    s_all = _km_at_horizon(st, weights)
    # Nobody moved (nricens returns zeros): the group curve is then irrelevant, so use S to avoid 0/0.
    s_up = np.where(p_up > 0, _km_at_horizon(st, weights * up), s_all)
    s_down = np.where(p_down > 0, _km_at_horizon(st, weights * down), s_all)
    with np.errstate(invalid="ignore", divide="ignore"):
        ev = np.where((s_all > 0) & (s_all < 1), 1.0, np.nan)  # NaN marks an undefined split
        up_ev = ev * (1.0 - s_up) * p_up / (1.0 - s_all)
        down_ev = ev * (1.0 - s_down) * p_down / (1.0 - s_all)
        down_ne = ev * s_down * p_down / s_all
        up_ne = ev * s_up * p_up / s_all
    nri_ev = up_ev - down_ev
    nri_ne = down_ne - up_ne
    return np.column_stack([nri_ev, nri_ne, nri_ev + nri_ne, up_ev, down_ev, down_ne, up_ne, 1.0 - s_all])


def nri_time_dependent(time, event, risk_old, risk_new, horizon: float) -> NRIResult:
    """Time-dependent NRI at a horizon with Kaplan-Meier estimates (nricens, ``point.method = "km"``).

    Parameters
    ----------
    time : array-like of shape (n_samples,)
        Time to death or censoring (finite, >= 0), e.g. ``followup_years``.
    event : array-like of shape (n_samples,)
        1 (or True) for death, 0 for censoring.
    risk_old, risk_new : array-like of shape (n_samples,)
        Old and new high-risk classifications (booleans or 0/1), e.g. ``stress_tpd >= 10`` and
        ``score >= threshold``.
    horizon : float
        Time ``t0`` separating events (death at or before ``t0``) from non-events (alive at ``t0``),
        in the unit of ``time`` (the paper: 2 years).

    Returns
    -------
    NRIResult
        NRI+ (events), NRI- (non-events), their sum, the four conditional reclassification
        probabilities and ``1 - S(t0)``.

    Raises
    ------
    ValueError
        On invalid inputs, a horizon <= 0, no death by the horizon, or nobody followed beyond it.

    Notes
    -----
    The estimator is transcribed from ``nricens.km.main`` (see the module docstring for the
    formulas): ``P(up | event) = (1 - S_up(t0)) P(up) / (1 - S(t0))``,
    ``P(up | non-event) = S_up(t0) P(up) / S(t0)``, likewise for *down*. When nobody moved up (or
    down) the corresponding probabilities are 0, as in nricens.

    References
    ----------
    .. [1] Pencina MJ, D'Agostino RB Sr, Steyerberg EW. *Stat Med* 2011;30:11-21.
    .. [2] Inoue E. nricens, R package version 1.6.
    """
    t, e, up, down, h = _inputs(time, event, risk_old, risk_new, horizon)
    r = _nri_km(_sorted_times(t, e, h), np.ones((1, t.size)), up, down)[0]
    return NRIResult(*map(float, r), n=int(t.size), n_up=int(up.sum()), n_down=int(down.sum()))


def nri_binary(event, risk_old, risk_new) -> NRIResult:
    """Categorical NRI of two binary classifications for a binary outcome (no censoring).

    Parameters
    ----------
    event : array-like of shape (n_samples,)
        1 (or True) for an event, 0 for a non-event; both must occur.
    risk_old, risk_new : array-like of shape (n_samples,)
        Old and new high-risk classifications (booleans or 0/1).

    Returns
    -------
    NRIResult
        ``NRI+ = (#up - #down) / #events`` among events, ``NRI- = (#down - #up) / #non-events``
        among non-events, their sum, the four conditional probabilities and the share of events.

    Raises
    ------
    ValueError
        If the event is not binary with both classes, or a classification is not binary, or the
        lengths differ.

    References
    ----------
    .. [1] Pencina MJ, D'Agostino RB Sr, D'Agostino RB Jr, Vasan RS. *Stat Med* 2008;27:157-172.
    """
    ev = as_labels(event, "event")
    old = _as_class(risk_old, ev.size, "risk_old")
    new = _as_class(risk_new, ev.size, "risk_new")
    up, down = new & ~old, old & ~new
    n_ev, n_ne = int(ev.sum()), int((~ev).sum())
    up_ev, down_ev = (up & ev).sum() / n_ev, (down & ev).sum() / n_ev
    up_ne, down_ne = (up & ~ev).sum() / n_ne, (down & ~ev).sum() / n_ne
    nri_ev, nri_ne = up_ev - down_ev, down_ne - up_ne
    return NRIResult(nri_events=float(nri_ev), nri_nonevents=float(nri_ne),
                     nri_overall=float(nri_ev + nri_ne), p_up_events=float(up_ev),
                     p_down_events=float(down_ev), p_down_nonevents=float(down_ne),
                     p_up_nonevents=float(up_ne), event_probability=n_ev / ev.size, n=int(ev.size),
                     n_up=int(up.sum()), n_down=int(down.sum()))


def bootstrap_nri(time, event, risk_old, risk_new, horizon: float, n_resamples: int = 1000, *, seed: int,
                  level: float = 0.95) -> pd.DataFrame:
    """Time-dependent NRI with percentile bootstrap intervals and normal-approximation p-values.

    Parameters
    ----------
    time, event, risk_old, risk_new, horizon
        As in :func:`nri_time_dependent`.
    n_resamples : int, default 1000
        Bootstrap resamples (at least 2; nricens' default is 1000).
    seed : int
        Seed of :func:`numpy.random.default_rng`; required, so that results are reproducible.
    level : float, default 0.95
        Confidence level of the intervals.

    Returns
    -------
    DataFrame
        One row per component (``nri_events``, ``nri_nonevents``, ``nri_overall``) with columns
        ``component, estimate, se, ci_low, ci_high, p, n_resamples``: the estimate on the original
        data, the SD of the replicates, the percentile interval, the two-sided p-value and the
        number of replicates used. ``attrs`` holds ``horizon`` and ``level``.

    Raises
    ------
    ValueError
        On invalid inputs (see :func:`nri_time_dependent`), seed, level or ``n_resamples``, or when
        fewer than 2 resamples give a defined NRI.

    Notes
    -----
    As in nricens, resample ``b`` draws ``n`` patients with replacement (not stratified), the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates by R's
    ``quantile(type = 2)`` (inverse empirical CDF, averaging at discontinuities), and
    ``p = 2 (1 - Phi(|estimate| / se))`` with ``se`` the standard deviation (denominator ``B - 1``)
    of the replicates: a Wald test of NRI = 0 with a bootstrap standard error. A resample whose
    Kaplan-Meier survival at the horizon is 0 or 1 (no death by the horizon, or nobody left at
    risk) has no NRI and is dropped (logged); one whose last patients are censored before the
    horizon is kept with the curve carried forward, as in nricens.
    Resamples are drawn from one :func:`numpy.random.default_rng` stream in a fixed order, so the
    same seed gives the same replicates; the draws differ from R's, so intervals agree with
    nricens only up to Monte Carlo error.

    References
    ----------
    .. [1] Pencina MJ, D'Agostino RB Sr, Steyerberg EW. *Stat Med* 2011;30:11-21.
    .. [2] Inoue E. nricens, R package version 1.6.
    .. [3] Efron B, Tibshirani RJ. *An Introduction to the Bootstrap*. Chapman & Hall, 1993.
    .. [4] Hyndman RJ, Fan Y. Sample quantiles in statistical packages. *Am Stat* 1996;50:361-365
       (definition 2).
    """
    seed = check_seed(seed)
    n_resamples = check_n_resamples(n_resamples)
    level = check_level(level)
    t, e, up, down, h = _inputs(time, event, risk_old, risk_new, horizon)
    n = t.size
    st = _sorted_times(t, e, h)
    estimate = _nri_km(st, np.ones((1, n)), up, down)[0, :3]
    rng = np.random.default_rng(seed)
    t_start = _time.perf_counter()
    reps = np.empty((n_resamples, 3))
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, (size, n))
        # Draw counts of each patient, one bincount for the chunk: row b's indices offset by b * n.
        counts = np.bincount((idx + (np.arange(size) * n)[:, None]).ravel(), minlength=size * n)
        reps[start:start + size] = _nri_km(st, counts.reshape(size, n).astype(float), up, down)[:, :3]
    logger.debug("bootstrap_nri: %d resamples x %d patients in %.2f s", n_resamples, n,
                 _time.perf_counter() - t_start)
    valid = np.all(np.isfinite(reps), axis=1)
    if not valid.all():
        logger.warning("bootstrap_nri: %d of %d resamples had no death by, or nobody beyond, the horizon; "
                       "dropped", int((~valid).sum()), n_resamples)
    if valid.sum() < 2:
        raise ValueError("fewer than 2 bootstrap resamples give a defined NRI; too few deaths by the horizon")
    reps = reps[valid]
    se = reps.std(axis=0, ddof=1)
    q = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=0, method="averaged_inverted_cdf")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(estimate) / se, np.where(estimate == 0, 0.0, np.inf))
    out = pd.DataFrame({"component": list(_COMPONENTS), "estimate": estimate, "se": se, "ci_low": q[0],
                        "ci_high": q[1], "p": 2.0 * stats.norm.sf(z), "n_resamples": int(valid.sum())})
    out.attrs.update(horizon=h, level=level)
    return out
