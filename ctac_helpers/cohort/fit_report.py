"""The calibration report: every published cohort number beside the synthetic cohort's value.

Tolerances (the book's calibration target at full scale):

* medians and quartiles: within 5% of the published value or 2 units of the precision the paper
  prints (2 years of age, 0.2 percentage points of TPD, 0.02 of the shape index), whichever is
  larger;
* proportions: within 1.5 percentage points.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.cohort.tables import add_derived_columns

PERCENT_TOL = 1.5
REPORT_COLUMNS = ["source", "variable", "level", "group", "statistic", "paper", "synthetic", "difference",
                  "tolerance", "within", "note"]
_GROUP_FILTERS = {
    "all": lambda d: np.ones(len(d), bool),
    "male": lambda d: (d["sex"] == "male").to_numpy(),
    "female": lambda d: (d["sex"] == "female").to_numpy(),
    "death": lambda d: (d["death"] == 1).to_numpy(),
    "alive": lambda d: (d["death"] == 0).to_numpy(),
    "normal": lambda d: (d["perfusion"] == "normal").to_numpy(),
    "abnormal": lambda d: (d["perfusion"] == "abnormal").to_numpy(),
}


def quantile_tolerance(value: float, variable: str) -> float:
    """5% of ``value`` or 2 units of the paper's printed precision for ``variable``."""
    decimals = int(manifest.schema_column(variable).get("decimals", 0))
    return max(0.05 * abs(value), 2 * 10.0 ** (-decimals))


def _statistic(df: pd.DataFrame, variable: str, level: str, statistic: str) -> float:
    if variable == "n":
        raise ValueError("group sizes are compared as percentages")
    if statistic in ("median", "q1", "q3"):
        x = df[variable].dropna().to_numpy(float)
        if not len(x):  # e.g. a site's table without the CT values (measured on its scans instead)
            return float("nan")
        return float(np.percentile(x, {"q1": 25, "median": 50, "q3": 75}[statistic]))
    col = df[variable]
    col = col[col.notna()]
    hit = (col.astype(str) == level) if level else (col == 1)
    return 100.0 * float(hit.mean()) if len(col) else float("nan")


def calibration_report(cohort: pd.DataFrame, sources=("table1", "table2", "supp_table2", "cac_categories")) -> pd.DataFrame:
    """Compare the cohort with every published number of ``sources`` (ids in ``paper_values.yaml``).

    Returns one row per published number with the paper's value, the cohort's, their difference, the
    tolerance and whether it holds. Counts are compared as percentages; group sizes (``n`` rows) as
    the group's share of the whole cohort. Follow-up quartiles come from the Results text.
    """
    df = add_derived_columns(cohort)
    rows = []
    for source in sources:
        paper = manifest.paper_table(source)
        for _, r in paper.iterrows():
            if r.statistic == "n":
                continue
            mask = _GROUP_FILTERS[r.group](df)
            if r.variable == "n":
                value = 100.0 * mask.sum() / len(df)
            else:
                value = _statistic(df.loc[mask], r.variable, r.level, r.statistic)
            tol = PERCENT_TOL if r.statistic == "percent" else quantile_tolerance(r.value, r.variable)
            rows.append({"source": source, "variable": r.variable, "level": r.level, "group": r.group,
                         "statistic": r.statistic, "paper": r.value, "synthetic": value, "tolerance": tol,
                         "note": r.note})
    headline = manifest.paper_entry("cohort")["values"]
    for stat, key in (("q1", "followup_q1_years"), ("median", "followup_median_years"), ("q3", "followup_q3_years")):
        value = _statistic(df, "followup_years", "", stat)
        rows.append({"source": "cohort", "variable": "followup_years", "level": "", "group": "all",
                     "statistic": stat, "paper": headline[key], "synthetic": value,
                     "tolerance": quantile_tolerance(headline[key], "followup_years"), "note": ""})
    out = pd.DataFrame.from_records(rows)
    out["difference"] = out["synthetic"] - out["paper"]
    out["within"] = out["difference"].abs() <= out["tolerance"] + 1e-9
    return out[REPORT_COLUMNS]


def calibration_summary(report: pd.DataFrame) -> pd.DataFrame:
    """Per source: numbers compared, numbers within tolerance, and the worst |difference| / tolerance."""
    r = report.assign(ratio=report["difference"].abs() / report["tolerance"])
    return (r.groupby("source", sort=False)
             .agg(compared=("within", "size"), within=("within", "sum"), worst_ratio=("ratio", "max"))
             .reset_index())


def readable(report: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`calibration_report` as a reader's table: what the number is, and its values as text.

    ``number`` names the variable by its label, the level, the group and the statistic (``Age [years], male:
    median``); the paper's value reads as the paper prints it, the cohort's value with one decimal more than
    the paper prints for the variable (percentages: one decimal), the difference and the tolerance with one
    more again, so that a difference just past its tolerance does not read as equal to it.

    Returns
    -------
    DataFrame
        ``source, number, paper, this cohort, difference, tolerance, within`` (text; ``within`` yes/no).
    """
    def decimals(r) -> int:
        if r["statistic"] == "percent" or r["variable"] == "n":
            return 1
        return int(manifest.schema_column(r["variable"]).get("decimals", 0)) + 1

    rows = []
    for _, r in report.iterrows():
        name = "group size" if r["variable"] == "n" else manifest.variable_label(r["variable"])
        level = f": {r['level']}" if isinstance(r["level"], str) and r["level"] else ""
        statistic = "%" if r["statistic"] == "percent" else r["statistic"]
        d = decimals(r)
        rows.append({"source": r["source"], "number": f"{name}{level}, {r['group']}: {statistic}",
                     "paper": f"{r['paper']:g}", "this cohort": f"{r['synthetic']:.{d}f}",
                     "difference": f"{r['difference']:+.{d + 1}f}", "tolerance": f"±{r['tolerance']:.{d + 1}f}",
                     "within": "yes" if r["within"] else "no"})
    return pd.DataFrame(rows, columns=["source", "number", "paper", "this cohort", "difference", "tolerance", "within"])
