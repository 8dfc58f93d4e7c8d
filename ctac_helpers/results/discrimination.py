"""Discrimination of the mortality models: ROC curves, AUC tables and their paper comparisons.

The paper reports each model's AUC with a 95% confidence interval in all patients
(Supplementary Table 3), in patients with normal perfusion (stress TPD < 5%, Supplementary
Table 4) and in patients without coronary calcium (CAC = 0, Supplementary Table 5), and compares
models by DeLong's test on the same patients. The functions here take out-of-fold scores (one
column per model, see :meth:`ctac_helpers.models.cv.CVResult.scores`) and return tidy tables with the
paper's values (from ``data_manifest/paper_values.yaml``) beside the book's.

Confidence intervals of AUCs are percentile bootstrap intervals (:func:`ctac_helpers.stats.bootstrap.
bootstrap_auc`, stratified, seeded); p-values of paired comparisons are DeLong's
(:func:`ctac_helpers.stats.delong.delong_test`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.stats.bootstrap import bootstrap_auc
from ctac_helpers.stats.delong import delong_test
from ctac_helpers.models.cv import FEATURE_SETS
from ctac_helpers.definitions import format_p

logger = logging.getLogger(__name__)

__all__ = ["SUBSETS", "auc_table", "delong_table", "paper_comparisons", "roc_curve", "roc_curves",
           "subset_mask", "subset_comparison_table"]

# The patient subsets of the paper's discrimination analyses, as data: a column, an operator and
# a value (``None``: every patient). ``table``: the paper's table of the subset.
SUBSETS: dict[str, dict] = {
    "all": {"column": None, "label": "All patients", "table": "supp_table3", "figure": "fig2a"},
    "normal_perfusion": {"column": "stress_tpd", "op": "<", "value": 5.0,
                         "label": "Normal perfusion (stress TPD < 5%)", "table": "supp_table4",
                         "figure": "fig2b"},
    "no_cac": {"column": "cac_score", "op": "==", "value": 0.0,
               "label": "No coronary calcium (CAC = 0)", "table": "supp_table5", "figure": "fig2c"},
}
_OPS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, ">=": operator.ge, ">": operator.gt}


def subset_mask(cohort: pd.DataFrame, subset: str) -> np.ndarray:
    """Boolean mask of the patients of one of :data:`SUBSETS` (cohort row order).

    A patient whose subset variable is missing belongs to no subset but ``'all'``.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; allowed: {', '.join(SUBSETS)}")
    rule = SUBSETS[subset]
    if rule["column"] is None:
        return np.ones(len(cohort), dtype=bool)
    if rule["column"] not in cohort:
        raise ValueError(f"subset {subset!r} needs the cohort column {rule['column']!r}")
    values = pd.to_numeric(cohort[rule["column"]], errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(_OPS[rule["op"]](values, rule["value"])) & ~np.isnan(values)


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be a 1-D array of 0/1 outcomes")
    return y.astype(int)


def roc_curve(y, score) -> pd.DataFrame:
    """Empirical ROC curve: ``threshold, fpr, tpr`` from (0, 0) to (1, 1), one point per distinct score.

    A patient is called positive when ``score >= threshold``; ties move together (the diagonal
    segments of the empirical curve), so the trapezoidal area under the points equals the
    Mann-Whitney AUC.
    """
    y = _labels(y)
    s = np.asarray(score, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"score has shape {s.shape}, expected {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("score holds NaN or infinite values")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("both outcomes must be present")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return pd.DataFrame({"threshold": np.r_[np.inf, s[last]], "fpr": np.r_[0.0, fp / n_neg],
                         "tpr": np.r_[0.0, tp / n_pos]})


def roc_curves(y, scores: pd.DataFrame, models: Sequence[str] | None = None) -> pd.DataFrame:
    """ROC curves of several models (columns of ``scores``): long ``model, threshold, fpr, tpr``."""
    models = list(scores.columns if models is None else models)
    _check_columns(scores, models)
    return pd.concat([roc_curve(y, scores[m].to_numpy()).assign(model=m) for m in models],
                     ignore_index=True)[["model", "threshold", "fpr", "tpr"]]


def _check_columns(scores: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in scores]
    if missing:
        raise ValueError(f"scores lack the models {missing}; present: {', '.join(map(str, scores.columns))}")


def _label(model: str) -> str:
    return FEATURE_SETS[model]["label"] if model in FEATURE_SETS else model


def _paper_auc(table_id: str | None) -> dict:
    if table_id is None:
        return {}
    return manifest.paper_entry(table_id).get("auc", {}) or {}


def _ci_text(ci) -> str:
    if not isinstance(ci, (list, tuple)) or len(ci) < 3 or ci[1] is None or ci[2] is None:
        return ""
    return f"{ci[1]:.2f}-{ci[2]:.2f}"


def auc_table(y, scores: pd.DataFrame, models: Sequence[str] | None = None, *, n_resamples: int = 1000,
              seed: int, level: float = 0.95, table_id: str | None = None) -> pd.DataFrame:
    """AUC of each model with its percentile-bootstrap confidence interval, beside the paper's.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome (death) of the patients, aligned with ``scores``' rows.
    scores : DataFrame
        One column of out-of-fold scores per model.
    models : sequence of str, optional
        Columns to tabulate (default: all).
    n_resamples : int
        Bootstrap resamples (stratified; the paper's tables give 95% CIs).
    seed : int
        Seed of the resampling; the same resamples serve every model.
    level : float
        Confidence level.
    table_id : str, optional
        Key of ``paper_values.yaml`` whose ``auc`` entry gives the paper's ``[auc, ci_low, ci_high]``
        per model (``null`` where the paper gives no interval).

    Returns
    -------
    DataFrame
        ``model, label, n, deaths, auc, ci_low, ci_high, paper_auc, paper_ci, difference``
        (``difference`` = book - paper, NaN where the paper has no value).
    """
    y = _labels(y)
    models = list(scores.columns if models is None else models)
    _check_columns(scores, models)
    boot = bootstrap_auc(y, scores[models], n_resamples, seed=seed, level=level)
    paper = _paper_auc(table_id)
    rows = []
    for _, b in boot.iterrows():
        p = paper.get(b["model"])
        paper_auc = float(p[0]) if isinstance(p, (list, tuple)) and p[0] is not None else np.nan
        rows.append({"model": b["model"], "label": _label(b["model"]), "n": int(y.size),
                     "deaths": int(y.sum()), "auc": b["auc"], "ci_low": b["ci_low"], "ci_high": b["ci_high"],
                     "paper_auc": paper_auc, "paper_ci": _ci_text(p), "difference": b["auc"] - paper_auc})
    return pd.DataFrame(rows)


def paper_comparisons(table_id: str) -> list[dict]:
    """The paired comparisons the paper reports in ``table_id`` (``a, b, p`` as printed)."""
    entry = manifest.paper_entry(table_id)
    return [dict(c) for c in entry.get("delong_p", [])]


def delong_table(y, scores: pd.DataFrame, pairs: Sequence, *, level: float = 0.95) -> pd.DataFrame:
    """Paired DeLong tests of model pairs, beside the paper's p-values.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome, aligned with ``scores``' rows.
    scores : DataFrame
        One column of scores per model.
    pairs : sequence
        ``(a, b)`` tuples, or mappings with ``a``, ``b`` and optionally the paper's ``p`` (as
        :func:`paper_comparisons` returns them).
    level : float
        Confidence level of the difference's interval.

    Returns
    -------
    DataFrame
        ``a, b, comparison, auc_a, auc_b, difference, ci_low, ci_high, p, p_text, paper_p``.
    """
    y = _labels(y)
    rows = []
    for pair in pairs:
        if isinstance(pair, Mapping):
            a, b, paper_p = pair["a"], pair["b"], str(pair.get("p", ""))
        else:
            (a, b), paper_p = pair, ""
        _check_columns(scores, [a, b])
        r = delong_test(y, scores[a].to_numpy(), scores[b].to_numpy(), level=level)
        rows.append({"a": a, "b": b, "comparison": f"{_label(a)} vs {_label(b)}", "auc_a": r.auc_a,
                     "auc_b": r.auc_b, "difference": r.difference, "ci_low": r.difference_ci[0],
                     "ci_high": r.difference_ci[1], "p": r.p_value, "p_text": format_p(r.p_value),
                     "paper_p": paper_p})
    return pd.DataFrame(rows)


def subset_comparison_table(y, scores_a: pd.DataFrame, scores_b: pd.DataFrame, models: Sequence[str], *,
                            n_resamples: int = 1000, seed: int, level: float = 0.95,
                            labels: tuple[str, str] = ("a", "b"), paper_p: Mapping | None = None
                            ) -> pd.DataFrame:
    """Each model under two feature choices (e.g. 15 vs 32 radiomics features), on the same patients.

    Parameters
    ----------
    y : array-like of 0/1
        Outcome, aligned with both score tables' rows.
    scores_a, scores_b : DataFrame
        Scores of the models under the two choices (same columns, same patient order).
    models : sequence of str
        Models to compare.
    n_resamples, seed, level
        Bootstrap of each AUC's interval (see :func:`auc_table`).
    labels : (str, str)
        Suffixes of the two choices in the column names (``auc_<label>``).
    paper_p : mapping, optional
        The paper's p-value of each model's comparison, as printed.

    Returns
    -------
    DataFrame
        ``model, label, auc_<a>, ci_<a>, auc_<b>, ci_<b>, difference, p, p_text, paper_p, ci_low_<a>,
        ci_high_<a>, ci_low_<b>, ci_high_<b>`` (``difference`` = a - b; ``p`` from the paired DeLong
        test; ``ci_<a>`` is the interval as the page shows it, ``ci_low_<a>`` and ``ci_high_<a>`` its
        bounds at full precision).
    """
    y = _labels(y)
    _check_columns(scores_a, models)
    _check_columns(scores_b, models)
    if len(scores_a) != len(scores_b) or len(scores_a) != y.size:
        raise ValueError("scores_a, scores_b and y must have the same patients")
    la, lb = labels
    boot_a = bootstrap_auc(y, scores_a[models], n_resamples, seed=seed, level=level).set_index("model")
    boot_b = bootstrap_auc(y, scores_b[models], n_resamples, seed=seed, level=level).set_index("model")
    def ci(boot: pd.DataFrame, m: str) -> str:
        return f"{boot.at[m, 'ci_low']:.3f}-{boot.at[m, 'ci_high']:.3f}"

    rows = []
    for m in models:
        r = delong_test(y, scores_a[m].to_numpy(), scores_b[m].to_numpy(), level=level)
        rows.append({"model": m, "label": _label(m),
                     f"auc_{la}": r.auc_a, f"ci_{la}": ci(boot_a, m),
                     f"auc_{lb}": r.auc_b, f"ci_{lb}": ci(boot_b, m),
                     "difference": r.difference, "p": r.p_value, "p_text": format_p(r.p_value),
                     "paper_p": str((paper_p or {}).get(m, "")),
                     f"ci_low_{la}": boot_a.at[m, "ci_low"], f"ci_high_{la}": boot_a.at[m, "ci_high"],
                     f"ci_low_{lb}": boot_b.at[m, "ci_low"], f"ci_high_{lb}": boot_b.at[m, "ci_high"]})
    return pd.DataFrame(rows)
