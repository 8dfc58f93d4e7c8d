"""Baseline-characteristics tables (the paper's Tables 1 and 2 and Supplementary Table 2).

Continuous variables are summarised as median (Q1, Q3) and compared between two groups with the
two-sided Wilcoxon-Mann-Whitney test; categorical variables as n (%) and compared with Pearson's
chi-square test without continuity correction, as the paper's Methods state. The output is tidy:
one row per (variable, level, group), so that a program can read it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ctac_helpers.core import manifest
from ctac_helpers.cohort.synth import perfusion_status
from ctac_helpers.definitions import P_FLOOR, cac_category, format_p  # noqa: F401 (format_p, P_FLOOR: public here too)

TIDY_COLUMNS = ["table", "variable", "label", "level", "group", "n_group", "n", "percent", "median", "q1",
                "q3", "p_value", "test", "display"]

# Group columns the book stratifies by: name -> (how to derive the grouping column, group order).
GROUPINGS = {
    "sex": ("sex", ("male", "female")),
    "death": ("death", ("death", "alive")),
    "perfusion": ("perfusion", ("normal", "abnormal")),
}


def add_derived_columns(cohort: pd.DataFrame) -> pd.DataFrame:
    """Add the grouping and derived columns the tables use (perfusion status, CAC category)."""
    df = cohort.copy()
    df["perfusion"] = perfusion_status(df["stress_tpd"])
    df["cac_category"] = cac_category(df["cac_score"])
    df["death_group"] = np.where(df["death"] == 1, "death", "alive")
    return df


def mann_whitney_p(a, b) -> float:
    """Two-sided Wilcoxon-Mann-Whitney p-value (NaN when a group is empty)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def chi_square_p(values, groups) -> float:
    """Pearson's chi-square p-value (no continuity correction) of a level x group table."""
    table = pd.crosstab(pd.Series(values, name="v"), pd.Series(groups, name="g"))
    table = table.loc[table.sum(axis=1) > 0, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    return float(stats.chi2_contingency(table.to_numpy(), correction=False)[1])


def row_spec(table_id: str) -> list[tuple[str, str, str]]:
    """The ``(variable, level, kind)`` rows of a published table, in the paper's order."""
    seen = []
    for row in manifest.paper_entry(table_id)["rows"]:
        key = (row["variable"], str(row.get("level", "")), row["kind"])
        if key not in seen:
            seen.append(key)
    return seen


def _grouping(df: pd.DataFrame, by: str) -> tuple[pd.Series, tuple[str, ...]]:
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; allowed: {', '.join(GROUPINGS)}")
    col, order = GROUPINGS[by]
    series = df["death_group"] if by == "death" else df[col]
    return series, order


def baseline_table(cohort: pd.DataFrame, by: str, rows: list[tuple[str, str, str]], table_id: str,
                   include_all: bool = True) -> pd.DataFrame:
    """Tidy baseline table of ``cohort`` stratified ``by`` sex, death or perfusion.

    Parameters
    ----------
    cohort : DataFrame
        Cohort table (schema columns).
    by : {'sex', 'death', 'perfusion'}
        Stratification.
    rows : list of (variable, level, kind)
        Rows to report; ``kind`` is 'continuous' or 'count'; ``variable == 'n'`` is the group size.
    table_id : str
        Written into the ``table`` column.
    include_all : bool
        Add an ``all`` group (all patients).

    Returns
    -------
    DataFrame with :data:`TIDY_COLUMNS`.
    """
    df = add_derived_columns(cohort)
    grouping, order = _grouping(df, by)
    groups = (("all",) if include_all else ()) + order
    masks = {g: np.ones(len(df), bool) if g == "all" else (grouping == g).to_numpy() for g in groups}
    records = []
    for variable, level, kind in rows:
        label = "N" if variable == "n" else manifest.variable_label(variable) if variable != "cac_category" else "CAC category"
        if variable == "n":
            p, test = float("nan"), ""
        elif kind == "continuous":
            p = mann_whitney_p(df.loc[masks[order[0]], variable], df.loc[masks[order[1]], variable])
            test = "Wilcoxon-Mann-Whitney"
        else:
            values = df[variable].astype(object).where(df[variable].notna(), None)
            keep = values.notna().to_numpy() & (masks[order[0]] | masks[order[1]])
            p = chi_square_p(values[keep].astype(str), grouping[keep])
            test = "Pearson chi-square"
        for g in groups:
            m = masks[g]
            rec = {"table": table_id, "variable": variable, "label": label, "level": level, "group": g,
                   "n_group": int(m.sum()), "n": np.nan, "percent": np.nan, "median": np.nan, "q1": np.nan,
                   "q3": np.nan, "p_value": p, "test": test}
            if variable == "n":
                rec["n"] = int(m.sum())
                rec["percent"] = 100.0 * m.sum() / len(df)
                rec["display"] = f"{int(m.sum())}" if g == "all" else f"{int(m.sum())} ({rec['percent']:.1f})"
            elif kind == "continuous":
                x = df.loc[m, variable].dropna().to_numpy(float)
                q1, med, q3 = np.percentile(x, [25, 50, 75]) if len(x) else (np.nan,) * 3
                decimals = int(manifest.schema_column(variable).get("decimals", 0))
                rec.update(n=len(x), median=med, q1=q1, q3=q3)
                rec["display"] = f"{med:.{decimals}f} ({q1:.{decimals}f}, {q3:.{decimals}f})"
            else:
                col = df.loc[m, variable]
                col = col[col.notna()]
                target = level if level else 1
                hit = (col.astype(str) == str(target)) if level else (col == 1)
                rec["n"] = int(hit.sum())
                rec["percent"] = 100.0 * hit.sum() / max(len(col), 1)
                rec["display"] = f"{rec['n']} ({rec['percent']:.1f})"
            records.append(rec)
    out = pd.DataFrame.from_records(records, columns=TIDY_COLUMNS)
    # The p-value belongs to the variable: show it once, on its first level, as the paper does.
    first = ~out.duplicated(["variable"]) & out["group"].eq(groups[0])
    out["p_display"] = np.where(first, out["p_value"].map(format_p), "")
    return out


def paper_display(table_id: str, variable: str, group: str, level: str = "") -> str:
    """The paper's printed value of one cell of a baseline table, as the book's tables show it.

    ``"65 (57, 73)"`` (median, Q1, Q3) for a continuous row, ``"5745 (54.8)"`` (n, %) for a count
    row, ``"10480"`` for the whole cohort's size; ``""`` where the paper prints no value.

    Raises
    ------
    ValueError
        If ``table_id`` has no row ``(variable, level)``.
    """
    rows = {(r["variable"], str(r.get("level", ""))): r for r in manifest.paper_entry(table_id)["rows"]}
    if (variable, str(level)) not in rows:
        raise ValueError(f"{table_id} has no row variable={variable!r}, level={level!r}; rows: "
                         f"{sorted(rows)}")
    return _paper_cell(rows[(variable, str(level))], variable, group)


def _paper_cell(row: dict, variable: str, group: str) -> str:
    vals = row.get(group)
    if vals is None:
        return ""
    if row.get("kind") == "continuous":
        return f"{vals[0]:g} ({vals[1]:g}, {vals[2]:g})"
    return f"{vals[0]:g} ({vals[1]:.1f})" if variable != "n" or group != "all" else f"{vals[0]:g}"


def side_by_side(book: pd.DataFrame, table_id: str) -> pd.DataFrame:
    """Display table: for each characteristic a row of the book's values and, below it, the paper's.

    The groups are the columns (``all``, ``male``, ``female``, then ``p``), as in the paper, so that the table
    fits the page's text column; the book's value of a group sits right above the paper's. A characteristic
    for which the paper prints nothing has the book's row only.

    Returns
    -------
    DataFrame
        ``Characteristic``, ``source`` (``book`` or ``paper``), one column per group and ``p`` (text).
    """
    paper = manifest.paper_entry(table_id)
    p_rows = {(r["variable"], str(r.get("level", ""))): r for r in paper["rows"]}
    groups = [g for g in book["group"].unique()]
    rows = []
    for (variable, level), sub in book.groupby(["variable", "level"], sort=False):
        pr = p_rows.get((variable, level), {})
        kind = pr.get("kind", "count" if sub["median"].isna().all() else "continuous")
        name = sub["label"].iloc[0] + (f": {level}" if level else "")
        mine = {"Characteristic": name, "source": "book"}
        theirs = {"Characteristic": "", "source": "paper"}
        for g in groups:
            mine[g] = sub.loc[sub.group == g, "display"].iloc[0]
            theirs[g] = _paper_cell({"kind": kind, **pr}, variable, g)
        mine["p"] = sub["p_display"].iloc[0] if (sub["p_display"] != "").any() else ""
        theirs["p"] = str(pr.get("p", ""))
        rows.append(mine)
        if any(theirs[g] for g in groups) or theirs["p"]:
            rows.append(theirs)
    return pd.DataFrame(rows, columns=["Characteristic", "source", *groups, "p"])


def ordinal(p: float) -> str:
    """A percentile as an ordinal: ``97.4`` -> ``'97th'``, ``1`` -> ``'1st'``, ``22`` -> ``'22nd'``.

    Rounded and kept within 1-100 (the lowest-ranked patient is in the 1st percentile, not the 0th);
    ``'n/a'`` when missing.
    """
    if p is None or not np.isfinite(p):
        return "n/a"
    n = min(100, max(1, int(round(p))))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
