"""Decision curves: the net benefit of acting on a model's risks (Vickers & Elkin 2006).

A clinician who acts (treats, refers, follows up closely) on a patient whose risk of death is at least
``t`` accepts, by choosing ``t``, that missing a death is ``(1 - t) / t`` times worse than acting on a
patient who survives. The *net benefit* of a strategy at that threshold counts the deaths it acts on and
subtracts the survivors it acts on, weighted by those odds::

    NB(t) = TP / n - FP / n * t / (1 - t)

``TP`` and ``FP`` being the patients who died, and who survived, among those the strategy flags. Under a
model a patient is flagged when their risk is at or above ``t`` (as chapter 7 flags its high-risk class:
score at or above the threshold). The reference strategies are *treat none* (NB = 0) and *treat all*
(``NB = prevalence - (1 - prevalence) t / (1 - t)``); a model is useful at ``t`` only where its curve lies
above both. A fixed classification (chapter 7's AI high-risk class) has one ``TP`` and ``FP`` whatever
``t`` is, hence a curve too (:func:`classification_net_benefit`).

Outcomes are the binary death of chapter 5's models (death during follow-up); censoring is not modelled,
as in the models themselves.

References
----------
.. [1] Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
   *Med Decis Making* 2006;26:565-574.
.. [2] Vickers AJ, Van Calster B, Steyerberg EW. Net benefit approaches to the evaluation of prediction
   models, molecular markers, and diagnostic tests. *BMJ* 2016;352:i6.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ctac_helpers.stats.checks import as_labels, as_score_1d

logger = logging.getLogger(__name__)

__all__ = ["TREAT_ALL", "TREAT_NONE", "classification_net_benefit", "decision_curve", "net_benefit",
           "threshold_grid", "treat_all_net_benefit"]

TREAT_ALL = "treat all"
TREAT_NONE = "treat none"


def threshold_grid(low: float, high: float, step: float) -> np.ndarray:
    """Thresholds from ``low`` to ``high`` (included when on the grid) every ``step``; all in (0, 1).

    Raises
    ------
    ValueError
        A bound outside (0, 1), ``low >= high`` or a step that is not positive.
    """
    low, high, step = float(low), float(high), float(step)
    if not (0 < low < high < 1):
        raise ValueError(f"thresholds must satisfy 0 < low < high < 1; got low={low}, high={high}")
    if not step > 0:
        raise ValueError(f"step must be positive; got {step}")
    n = int(np.floor((high - low) / step + 1e-9)) + 1
    # rounded so that 0.05 is 0.05, not 0.05000000000000001: the thresholds are printed and looked up
    return np.round(low + step * np.arange(n), 10)


def _thresholds(thresholds) -> np.ndarray:
    t = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if t.ndim != 1 or t.size == 0:
        raise ValueError("thresholds must be a non-empty 1-D sequence of risks")
    if not np.all((t > 0) & (t < 1)):
        raise ValueError(f"thresholds must lie strictly between 0 and 1; got {t[(t <= 0) | (t >= 1)][:3]}")
    return t


def _net_benefit(tp: np.ndarray, fp: np.ndarray, n: int, t: np.ndarray) -> np.ndarray:
    return tp / n - fp / n * t / (1.0 - t)


def net_benefit(y, risk, thresholds) -> np.ndarray:
    """Net benefit of flagging the patients whose ``risk`` is at or above each threshold.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome (1 = died).
    risk : array-like
        Each patient's risk (any real numbers compared with the thresholds).
    thresholds : array-like
        Threshold risks, each in (0, 1).

    Returns
    -------
    ndarray
        The net benefit at each threshold.
    """
    labels = as_labels(y, "y")
    r = as_score_1d(risk, labels.size, "risk")
    t = _thresholds(thresholds)
    order = np.argsort(r, kind="stable")
    r_sorted, died_sorted = r[order], labels[order]
    # deaths and survivors at or above each risk: suffix sums over the sorted risks
    deaths_above = np.concatenate([np.cumsum(died_sorted[::-1])[::-1], [0]])
    first = np.searchsorted(r_sorted, t, side="left")  # first patient with risk >= t
    tp = deaths_above[first].astype(float)
    flagged = (labels.size - first).astype(float)
    return _net_benefit(tp, flagged - tp, labels.size, t)


def treat_all_net_benefit(y, thresholds) -> np.ndarray:
    """Net benefit of acting on every patient: ``prevalence - (1 - prevalence) t / (1 - t)``."""
    labels = as_labels(y, "y")
    t = _thresholds(thresholds)
    prevalence = labels.mean()
    return prevalence - (1 - prevalence) * t / (1 - t)


def classification_net_benefit(y, flagged, thresholds) -> np.ndarray:
    """Net benefit of a fixed classification (acting on the ``flagged`` patients) at each threshold."""
    labels = as_labels(y, "y")
    f = np.asarray(flagged)
    if f.shape != labels.shape:
        raise ValueError(f"flagged must give one value per patient ({labels.size}); got shape {f.shape}")
    if f.dtype != bool:
        if not np.all(np.isin(f, (0, 1))):
            raise ValueError("flagged must hold booleans or 0/1")
        f = f == 1
    t = _thresholds(thresholds)
    tp = float((f & labels).sum())
    fp = float((f & ~labels).sum())
    return _net_benefit(np.full(t.size, tp), np.full(t.size, fp), labels.size, t)


def decision_curve(y, risks: pd.DataFrame, thresholds, models: Sequence[str] | None = None, *,
                   classifications: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Net benefit of each model, of fixed classifications and of treating all or none, at each threshold.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome, aligned with ``risks``' rows.
    risks : DataFrame
        One column of risks per model.
    thresholds : array-like
        Threshold risks in (0, 1) (e.g. :func:`threshold_grid`).
    models : sequence of str, optional
        Columns of ``risks`` to include (default: all).
    classifications : mapping, optional
        ``{name: flagged}``: fixed classifications (boolean per patient) drawn as strategies too.

    Returns
    -------
    DataFrame
        Long: ``strategy, threshold, net_benefit``; strategies in the order models, classifications,
        treat all, treat none.
    """
    models = list(risks.columns if models is None else models)
    missing = [m for m in models if m not in risks]
    if missing:
        raise ValueError(f"risks lack the models {missing}; present: {', '.join(map(str, risks.columns))}")
    t = _thresholds(thresholds)
    curves = {m: net_benefit(y, risks[m].to_numpy(), t) for m in models}
    for name, flagged in (classifications or {}).items():
        if name in curves:
            raise ValueError(f"the classification {name!r} has the name of a model")
        curves[name] = classification_net_benefit(y, flagged, t)
    curves[TREAT_ALL] = treat_all_net_benefit(y, t)
    curves[TREAT_NONE] = np.zeros(t.size)
    return pd.concat([pd.DataFrame({"strategy": name, "threshold": t, "net_benefit": nb})
                      for name, nb in curves.items()], ignore_index=True)
