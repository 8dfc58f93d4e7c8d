"""Discrimination within subgroups: AUCs of one score compared between independent patient groups.

The paper compares the AUC of the All model between men and women, patients younger than 65 and
aged 65 or more, and Black and White patients among those whose race was recorded (Supplementary
Fig. 3), and across sites and CT protocols with Yale as reference (Supplementary Table 6). The two
sides of a comparison share no patient, so each AUC has its DeLong variance and the difference is
tested with ``D = (AUC_a - AUC_b) / sqrt(var_a + var_b)`` against Student's t with
Welch-Satterthwaite-type degrees of freedom (pROC's unpaired DeLong test,
:func:`ctac_helpers.stats.delong.delong_test_unpaired`).

A comparison is defined as data: a cohort column and two ``(label, operator, value)`` rules,
e.g. ``("<65", "<", 65)``. Patients matching neither rule (race not recorded) are left out; a
missing value matches no rule.

References
----------
.. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
   receiver operating characteristic curves: a nonparametric approach. *Biometrics*
   1988;44:837-845.
.. [2] Robin X, Turck N, Hainard A, et al. pROC: an open-source package for R and S+ to analyze and
   compare ROC curves. *BMC Bioinformatics* 2011;12:77.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from ctac_helpers.stats.checks import as_labels, as_score_1d, check_level
from ctac_helpers.stats.delong import auc_interval_from_labels, delong_test_unpaired

logger = logging.getLogger(__name__)

__all__ = ["SUBGROUPS", "beside_paper", "performance_by_group", "subgroup_auc", "subgroup_masks"]

# The paper's three comparisons (Results, "Model performance"; Supplementary Fig. 3), side a first.
SUBGROUPS: Mapping[str, Mapping] = MappingProxyType({
    "sex": MappingProxyType({"column": "sex",
                             "levels": (("male", "==", "male"), ("female", "==", "female"))}),
    "age": MappingProxyType({"column": "age",
                             "levels": (("<65", "<", 65), (">=65", ">=", 65))}),
    "race": MappingProxyType({"column": "race",
                              "levels": (("black", "==", "black"), ("white", "==", "white"))}),
})

# Keys of the paper's values (data_manifest, entry supp_fig3) for labels that are not valid keys.
#: Subgroup labels whose key in paper_values.yaml differs from the label (supp_fig3).
PAPER_KEYS = {"<65": "age_lt65", ">=65": "age_ge65"}

_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
              ">=": operator.ge}
_COLUMNS = ["comparison", "subgroup", "n", "events", "auc", "ci_low", "ci_high", "p"]


def _rule_mask(column: pd.Series, name: str, label: str, op: str, value) -> np.ndarray:
    if op not in _OPERATORS:
        raise ValueError(f"comparison {name!r}, level {label!r}: unknown operator {op!r}; "
                         f"allowed: {sorted(_OPERATORS)}")
    present = column.notna()
    if op in ("==", "!="):
        observed = set(column[present].unique())
        if value not in observed:
            shown = sorted(map(str, observed))
            raise ValueError(f"comparison {name!r}, level {label!r}: value {value!r} does not occur in "
                             f"column {column.name!r}; observed levels: {shown}")
    elif not pd.api.types.is_numeric_dtype(column.dtype):
        raise ValueError(f"comparison {name!r}, level {label!r}: operator {op!r} needs a numeric column; "
                         f"{column.name!r} has dtype {column.dtype}")
    # Missing values match no rule: those patients are left out of the comparison.
    return (present & _OPERATORS[op](column, value)).to_numpy(dtype=bool)


def subgroup_masks(cohort: pd.DataFrame,
                   definitions: Mapping = SUBGROUPS) -> dict[str, dict[str, np.ndarray]]:
    """Boolean masks of the two sides of each subgroup comparison, from cohort columns.

    Parameters
    ----------
    cohort : DataFrame
        One row per patient.
    definitions : mapping, default SUBGROUPS
        ``{name: {"column": str, "levels": ((label_a, op, value_a), (label_b, op, value_b))}}`` with
        ``op`` one of ``==, !=, <, <=, >, >=``; the default holds the paper's sex, age and race
        comparisons.

    Returns
    -------
    dict
        ``{name: {label_a: mask_a, label_b: mask_b}}`` with boolean arrays of ``len(cohort)``.

    Raises
    ------
    ValueError
        On a malformed definition, an unknown column, an unknown operator, an ``==``/``!=`` value
        that does not occur in the column (naming the observed levels), an order operator on a
        non-numeric column, or two sides that share a patient.

    References
    ----------
    .. [1] Wang R, Lagakos SW, Ware JH, Hunter DJ, Drazen JM. Statistics in medicine - reporting of
       subgroup analyses in clinical trials. *N Engl J Med* 2007;357:2189-2194.
    """
    if not isinstance(definitions, Mapping) or not definitions:
        raise ValueError("definitions must be a non-empty mapping {name: {'column': ..., 'levels': ...}}")
    out = {}
    for name, spec in definitions.items():
        if not isinstance(spec, Mapping) or set(spec) != {"column", "levels"}:
            raise ValueError(f"comparison {name!r} must be a mapping with keys 'column' and 'levels'; "
                             f"got {spec!r}")
        col, levels = spec["column"], spec["levels"]
        if col not in cohort.columns:
            raise ValueError(f"comparison {name!r}: column {col!r} not in the cohort; available columns: "
                             f"{list(cohort.columns)}")
        if len(levels) != 2 or any(len(rule) != 3 for rule in levels):
            raise ValueError(f"comparison {name!r}: levels must be two (label, operator, value) rules; "
                             f"got {levels!r}")
        (la, opa, va), (lb, opb, vb) = levels
        if la == lb:
            raise ValueError(f"comparison {name!r}: the two levels need distinct labels; got {la!r} twice")
        mask_a = _rule_mask(cohort[col], name, la, opa, va)
        mask_b = _rule_mask(cohort[col], name, lb, opb, vb)
        if np.any(mask_a & mask_b):
            shared = int((mask_a & mask_b).sum())
            raise ValueError(f"comparison {name!r}: levels {la!r} and {lb!r} share {shared} patient(s); "
                             "the sides of an unpaired comparison must be disjoint")
        out[name] = {la: mask_a, lb: mask_b}
    return out


def _as_mask(mask, n: int, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 1 or m.size != n or m.dtype != bool:
        raise ValueError(f"{what} must be a boolean array with one value per patient ({n}); "
                         f"got dtype {m.dtype}, shape {m.shape}")
    return m


def _side_row(comparison: str, label, labels: np.ndarray, s: np.ndarray, level: float) -> dict:
    ci = auc_interval_from_labels(labels, s, level)
    return {"comparison": comparison, "subgroup": label, "n": int(labels.size), "events": ci.n_positive,
            "auc": ci.auc, "ci_low": ci.ci_low, "ci_high": ci.ci_high}


def _labels_in(y: np.ndarray, mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise ValueError(f"{what} is empty")
    try:
        return as_labels(y[mask], "y")
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err


def subgroup_auc(y, score, groups, *, definitions: Mapping = SUBGROUPS, level: float = 0.95) -> pd.DataFrame:
    """AUC with DeLong interval on each side of each subgroup comparison, and the p of their difference.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome (death), 0/1 or boolean.
    score : array-like of shape (n_samples,)
        Finite scores (e.g. out-of-fold predicted probabilities), higher meaning higher risk.
    groups : mapping or DataFrame
        Either ``{name: (mask_a, mask_b)}`` (sides labelled ``"a"`` and ``"b"``) or
        ``{name: {label_a: mask_a, label_b: mask_b}}`` with boolean arrays of ``n_samples``; or the
        cohort DataFrame (aligned with ``y``), turned into masks by :func:`subgroup_masks` with
        ``definitions``.
    definitions : mapping, default SUBGROUPS
        Comparison definitions used when ``groups`` is a DataFrame.
    level : float, default 0.95
        Confidence level of the DeLong intervals.

    Returns
    -------
    DataFrame
        Two rows per comparison (side a, then side b): ``comparison, subgroup, n, events, auc,
        ci_low, ci_high, p``, where ``p`` (the same on both rows) is the two-sided unpaired DeLong
        p-value of the difference of the two AUCs.

    Raises
    ------
    ValueError
        On invalid labels, scores or masks, a comparison that does not have exactly two sides, sides
        that overlap, or a side that is empty or lacks deaths or survivors.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    level = check_level(level)
    y = as_labels(y, "y")
    s = as_score_1d(score, y.size, "score")
    if isinstance(groups, pd.DataFrame):
        if len(groups) != y.size:
            raise ValueError(f"the cohort has {len(groups)} rows but y has {y.size}; they must be aligned")
        groups = subgroup_masks(groups, definitions)
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("groups must be a non-empty mapping {name: (mask_a, mask_b)} or a cohort DataFrame")
    rows = []
    for name, sides in groups.items():
        if isinstance(sides, Mapping):
            pairs = list(sides.items())
        else:
            pairs = list(zip(("a", "b"), sides))
            if len(sides) != 2:
                pairs = []
        if len(pairs) != 2:
            raise ValueError(f"comparison {name!r} must have exactly two sides (mask_a, mask_b)")
        (la, ma), (lb, mb) = [(lab, _as_mask(m, y.size, f"comparison {name!r}, side {lab!r}"))
                              for lab, m in pairs]
        if np.any(ma & mb):
            raise ValueError(f"comparison {name!r}: sides {la!r} and {lb!r} share {int((ma & mb).sum())} "
                             "patient(s); the unpaired DeLong test needs disjoint groups")
        ya = _labels_in(y, ma, f"comparison {name!r}, side {la!r}")
        yb = _labels_in(y, mb, f"comparison {name!r}, side {lb!r}")
        p = delong_test_unpaired(ya, s[ma], yb, s[mb], level=level).p_value
        rows += [{**_side_row(name, la, ya, s[ma], level), "p": p},
                 {**_side_row(name, lb, yb, s[mb], level), "p": p}]
    return pd.DataFrame(rows, columns=_COLUMNS)


def choose_reference(group, preferred) -> object:
    """The reference level of a grouping: ``preferred`` when it occurs, else the most frequent level.

    A site's own data rarely holds the paper's reference (Yale, or the 120 kVp low-dose protocol);
    its largest level is then the natural comparison (ties go to the first label in sorted order).

    Raises
    ------
    ValueError
        ``group`` has no non-missing level.
    """
    values = pd.Series(group).dropna()
    if values.empty:
        raise ValueError("the grouping has no level (every value is missing)")
    if preferred in set(values):
        return preferred
    counts = values.value_counts()
    chosen = sorted(counts.index[counts == counts.max()], key=str)[0]
    logger.info("reference %r does not occur; using the most frequent level %r", preferred, chosen)
    return chosen


def performance_by_group(y, score, group, reference, *, level: float = 0.95) -> pd.DataFrame:
    """AUC with DeLong interval per level of a grouping (site, CT protocol) and p versus a reference.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Binary outcome (death), 0/1 or boolean.
    score : array-like of shape (n_samples,)
        Finite scores, higher meaning higher risk.
    group : array-like of shape (n_samples,)
        Level of each patient, e.g. ``cohort["site"]``; patients with a missing level are left out
        (logged).
    reference : object
        The reference level (the paper: ``"Yale"``).
    level : float, default 0.95
        Confidence level of the DeLong intervals.

    Returns
    -------
    DataFrame
        One row per level, the reference first and the others sorted: ``group, n, events, auc,
        ci_low, ci_high, difference, p``, with ``difference = auc - auc_reference`` and ``p`` the
        two-sided unpaired DeLong p-value of that difference (NaN for the reference). A grouping
        with one level (a single site's data) gives the reference row only.

    Raises
    ------
    ValueError
        On invalid labels or scores, mismatched lengths, a reference that is not a level (naming the
        levels), or a level without deaths or survivors.

    References
    ----------
    .. [1] DeLong ER, DeLong DM, Clarke-Pearson DL. *Biometrics* 1988;44:837-845.
    .. [2] Robin X, et al. pROC. *BMC Bioinformatics* 2011;12:77.
    """
    level = check_level(level)
    y = as_labels(y, "y")
    s = as_score_1d(score, y.size, "score")
    g = pd.Series(np.asarray(pd.Series(group).to_numpy(), dtype=object))
    if g.size != y.size:
        raise ValueError(f"group must have one level per patient ({y.size}); got {g.size}")
    missing = g.isna().to_numpy()
    if missing.any():
        logger.info("performance_by_group: %d patient(s) with a missing level left out", int(missing.sum()))
    levels = list(pd.unique(g[~missing]))
    if reference not in levels:
        raise ValueError(f"reference {reference!r} is not a level of group; levels: "
                         f"{sorted(map(str, levels))}")
    if len(levels) < 2:
        # a single-site registry: its AUC and interval, with nothing to compare it with
        logger.info("performance_by_group: one level (%r); no comparison", reference)
    others = [lev for lev in levels if lev != reference]
    try:
        others = sorted(others)
    except TypeError:
        pass  # mixed label types: keep the order of first appearance
    gv = g.to_numpy()
    ref_mask = (gv == reference) & ~missing
    y_ref = _labels_in(y, ref_mask, f"reference level {reference!r}")
    rows = [{**_side_row("", reference, y_ref, s[ref_mask], level), "difference": 0.0, "p": np.nan}]
    for lev in others:
        mask = (gv == lev) & ~missing
        y_lev = _labels_in(y, mask, f"level {lev!r}")
        res = delong_test_unpaired(y_lev, s[mask], y_ref, s[ref_mask], level=level)
        rows.append({**_side_row("", lev, y_lev, s[mask], level), "difference": res.difference,
                     "p": res.p_value})
    out = pd.DataFrame(rows).rename(columns={"subgroup": "group"})
    return out[["group", "n", "events", "auc", "ci_low", "ci_high", "difference", "p"]]


def beside_paper(table: pd.DataFrame, entry: Mapping) -> pd.DataFrame:
    """:func:`subgroup_auc`'s table with the paper's AUC and p-value of each row.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`subgroup_auc` (``comparison, subgroup, ...``).
    entry : mapping
        The paper's entry (``ctac_helpers.core.manifest.paper_entry("supp_fig3")``): ``auc`` keyed by
        subgroup (``male``, ``age_lt65``, ...) and ``p`` keyed by comparison (``sex``, ...).

    Returns
    -------
    DataFrame
        ``table`` with ``paper_auc`` (float, NaN where the paper gives none) and ``paper_p`` (text,
        empty where the paper gives none).
    """
    for c in ("comparison", "subgroup"):
        if c not in table:
            raise ValueError(f"table lacks the column {c!r}; expected subgroup_auc's output")
    auc, p = dict(entry.get("auc") or {}), dict(entry.get("p") or {})
    keys = table["subgroup"].map(lambda s: PAPER_KEYS.get(str(s), str(s)))
    return table.assign(paper_auc=keys.map(lambda k: float(auc[k]) if k in auc else np.nan),
                        paper_p=table["comparison"].map(lambda c: str(p.get(c, ""))))
