"""The replication scorecard: every headline number of the paper beside the run's value.

:func:`scorecard` reads the tables a run directory holds (``<run_dir>/tables/<id>.csv``) and returns
one row per published number the run reproduces, with the paper's value as printed, the run's, their
difference, the tolerance and whether the run's value is within it. Tolerances are data
(``scorecard_tolerances`` in ``data_manifest/paper_values.yaml``), by kind of number:

* ``auc``: absolute, in AUC units;
* ``p_value``: a significance level; a p-value is within when the run's and the paper's lie on the
  same side of it (the difference is shown where both are plain numbers);
* ``hazard_ratio``: relative to the paper's hazard ratio (the table shows it in HR units);
* ``percent``: absolute, in percentage points;
* ``count``: absolute (the cohort's size);
* ``cohort``: the tolerance the calibration table (``tables/calibration.csv``) states for the number.

A table the run does not hold (a stage that was skipped or failed) gives no rows. The book's
"Replication scorecard" and "Run status" pages are rendered by :func:`scorecard_page` and
:func:`status_page` when ``ctac-book build`` stages the source tree (:mod:`ctac_helpers.book`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import pandas as pd
import yaml

from . import manifest
from .stages import STAGES, execution_order

logger = logging.getLogger(__name__)

COLUMNS = ["item", "quantity", "paper", "book", "difference", "tolerance", "within", "where"]
#: Kinds of number a tolerance is given for in ``scorecard_tolerances``.
TOLERANCE_KINDS = ("auc", "p_value", "hazard_ratio", "percent", "threshold", "count", "cohort")
#: Table id -> the chapter notebook (``notebooks/<stem>``) that writes it.
TABLE_CHAPTERS: dict[str, str] = {t: f"notebooks/{Path(s.notebook).stem}" for s in STAGES for t in s.tables}

_AUC_TABLES = {
    "supp_table3": "all patients",
    "supp_table4": "normal perfusion (stress TPD < 5%)",
    "supp_table5": "no coronary calcium (CAC = 0)",
}
_HR_LABELS = {"abnormal_perfusion": "abnormal perfusion (stress TPD >= 5%)", "cac_gt400": "CAC > 400"}
_NRI_LABELS = {"nri_events": "events", "nri_nonevents": "non-events", "nri_overall": "overall"}
_P_TEXT = re.compile(r"^\s*(<=|>=|<|>|≤|≥)?\s*(\d*\.?\d+(?:[eE][-+]?\d+)?)")


# -- tolerances ---------------------------------------------------------------------------------
def scorecard_tolerances() -> dict:
    """The scorecard's tolerances by kind (``scorecard_tolerances`` in ``paper_values.yaml``).

    Returns
    -------
    dict
        ``{kind: tolerance}``; numbers for every kind but ``cohort``, which is ``'calibration'``.

    Raises
    ------
    ValueError
        The entry is missing, lacks a kind, or gives a kind an invalid value.
    """
    tol = manifest.paper_values().get("scorecard_tolerances")
    if not isinstance(tol, Mapping):
        raise ValueError("data_manifest/paper_values.yaml has no 'scorecard_tolerances' mapping")
    missing = [k for k in TOLERANCE_KINDS if k not in tol]
    if missing:
        raise ValueError(f"scorecard_tolerances lacks {', '.join(missing)}")
    for kind in TOLERANCE_KINDS:
        value = tol[kind]
        if kind == "cohort":
            if value != "calibration":
                raise ValueError(f"scorecard_tolerances.cohort must be 'calibration', got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"scorecard_tolerances.{kind} must be a non-negative number, got {value!r}")
    return dict(tol)


# -- small helpers ------------------------------------------------------------------------------
def _num(value) -> float:
    """A float, or NaN for an empty or non-numeric field."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _has(value) -> bool:
    return not (value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "")


def _read(run_dir: Path, table_id: str) -> pd.DataFrame | None:
    """``tables/<id>.csv`` as text (every field a string, empty fields ''), or None when absent."""
    path = run_dir / "tables" / f"{table_id}.csv"
    if not path.is_file():
        logger.debug("scorecard: %s not in the run directory; no rows for it", path)
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _row(item: str, quantity: str, paper: str, book: str, table: str, difference: float = math.nan,
         tolerance: float = math.nan, within: bool | None = None) -> dict:
    return {"item": item, "quantity": quantity, "paper": paper, "book": book, "difference": difference,
            "tolerance": tolerance, "within": within, "where": TABLE_CHAPTERS.get(table, "")}


def _absolute(item: str, quantity: str, paper: str, book: str, table: str, paper_value: float,
              book_value: float, tolerance: float) -> dict:
    """A row compared as |book - paper| <= tolerance (not comparable when a value is missing)."""
    difference = book_value - paper_value
    comparable = math.isfinite(difference) and math.isfinite(tolerance)
    within = bool(abs(difference) <= tolerance + 1e-9) if comparable else None
    return _row(item, quantity, paper, book, table, difference, tolerance, within)


def _interval(estimate: float, low: float, high: float, fmt: str = ".2f") -> str:
    text = format(estimate, fmt)
    if math.isfinite(low) and math.isfinite(high):
        text += f" ({format(low, fmt)}-{format(high, fmt)})"
    return text


def parse_p(text) -> tuple[str, float]:
    """Split a printed p-value into its comparison and number.

    Parameters
    ----------
    text : str or float
        ``'<0.001'``, ``'0.384'``, ``'<0.05 (15 better)'``, ``0.02``, ...

    Returns
    -------
    tuple of (str, float)
        ``('<', 0.001)``, ``('=', 0.384)``, ``('<', 0.05)``, ``('=', 0.02)``; ``('', nan)`` when the
        text holds no p-value.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return ("=", float(text)) if math.isfinite(text) else ("", math.nan)
    m = _P_TEXT.match(str(text))
    if not m:
        return "", math.nan
    op = {"≤": "<=", "≥": ">="}.get(m.group(1) or "=", m.group(1) or "=")
    return op, float(m.group(2))


def significant(text, alpha: float = 0.05) -> bool | None:
    """Whether a printed p-value is below ``alpha``; None when the text does not tell.

    Examples
    --------
    >>> significant("<0.001"), significant("0.384"), significant("<0.1"), significant("")
    (True, False, None, None)
    """
    op, value = parse_p(text)
    if not math.isfinite(value):
        return None
    if op == "=":
        return value < alpha
    if op in ("<", "<="):
        return True if value <= alpha else None
    return False if value >= alpha else None


def _p_row(item: str, quantity: str, paper_text: str, book_p, book_text: str, table: str, alpha: float) -> dict:
    """A p-value row: within when both p-values lie on the same side of ``alpha``."""
    paper_op, paper_value = parse_p(paper_text)
    book_op, book_value = parse_p(book_p if _has(book_p) else book_text)
    difference = book_value - paper_value if paper_op == book_op == "=" else math.nan
    sides = significant(paper_text, alpha), significant(book_p if _has(book_p) else book_text, alpha)
    within = None if None in sides else sides[0] == sides[1]
    return _row(item, quantity, paper_text, book_text, table, difference, alpha, within)


def _same_structure(paper: str, book: str) -> bool:
    """Whether ``book`` (a TotalSegmentator class) is, or is part of, the paper's structure.

    The paper names organs (``lungs``); the run names classes (``lung_upper_lobe_right``).
    """
    paper, book = str(paper).strip().lower(), str(book).strip().lower()
    stem = paper[:-1] if paper.endswith("s") else paper
    return bool(paper) and (book == paper or book == stem or book.startswith(stem + "_"))


# -- items ----------------------------------------------------------------------------------------
def _cohort_rows(run_dir: Path, tol: dict) -> list[dict]:
    v = manifest.paper_entry("cohort")["values"]
    calib = _read(run_dir, "calibration")
    rows: list[dict] = []

    def calibration_row(source: str, variable: str, group: str, statistic: str):
        if calib is None:
            return None
        hit = calib[(calib["source"] == source) & (calib["variable"] == variable) & (calib["group"] == group)
                    & (calib["statistic"] == statistic) & (calib["level"] == "")]
        return None if hit.empty else hit.iloc[0]

    table1 = _read(run_dir, "table1")
    if table1 is not None:
        t1 = table1[table1["level"] == ""].set_index(["variable", "group"])
        if ("n", "all") in t1.index:
            n = _num(t1.loc[("n", "all"), "n"])
            rows.append(_absolute("table1", "Patients analysed", f"{v['n']:,}", f"{n:,.0f}", "table1", v["n"], n,
                                  tol["count"]))
        for variable, group, quantity, paper_n, paper_pct in (
                ("n", "male", "Men", v["male_n"], v["male_percent"]),
                ("death", "all", "Deaths during follow-up", v["deaths"], v["death_percent"])):
            if (variable, group) not in t1.index:
                continue
            r = t1.loc[(variable, group)]
            c = calibration_row("table1", variable, group, "percent")
            tolerance = _num(c["tolerance"]) if c is not None else math.nan
            rows.append(_absolute("table1", f"{quantity} (%)", f"{paper_n:,} ({paper_pct:.1f}%)",
                                  f"{_num(r['n']):,.0f} ({_num(r['percent']):.1f}%)", "table1", paper_pct,
                                  _num(r["percent"]), tolerance))
    if calib is None:
        return rows
    supp2 = _read(run_dir, "supp_table2")
    if supp2 is not None:
        supp2 = supp2[supp2["level"] == ""].set_index(["variable", "group"])
    for item, source, variable, group, statistic, quantity, paper, unit in (
            ("cohort", "cohort", "followup_years", "all", "median", "Follow-up, median (years)",
             f"{v['followup_median_years']:.1f}", ""),
            ("cohort", "cohort", "followup_years", "all", "q1", "Follow-up, first quartile (years)",
             f"{v['followup_q1_years']:.1f}", ""),
            ("cohort", "cohort", "followup_years", "all", "q3", "Follow-up, third quartile (years)",
             f"{v['followup_q3_years']:.1f}", ""),
            ("supp_table2", "supp_table2", "n", "normal", "percent", "Normal perfusion, stress TPD < 5% (%)",
             f"{v['normal_perfusion_n']:,} ({v['normal_perfusion_percent']:.1f}%)", "%"),
            ("supp_table2", "supp_table2", "death", "normal", "percent", "Deaths among normal perfusion (%)",
             f"{v['normal_perfusion_deaths']:,} ({v['normal_perfusion_death_percent']:.1f}%)", "%")):
        c = calibration_row(source, variable, group, statistic)
        if c is None:
            continue
        book = _num(c["synthetic"])
        text = f"{book:.{1 if unit else 2}f}{unit}"
        if source == "supp_table2" and supp2 is not None and (variable, group) in supp2.index:
            text = f"{_num(supp2.loc[(variable, group), 'n']):,.0f} ({text})"  # the count beside the share
        rows.append(_absolute(item, quantity, paper, text, "calibration", _num(c["paper"]), book,
                              _num(c["tolerance"])))
    within = calib["within"].str.lower() == "true"
    rows.append(_row("calibration", "Published cohort numbers within their calibration tolerance",
                     f"{len(calib)} numbers", f"{int(within.sum())} of {len(calib)} within", "calibration"))
    return rows


def _auc_rows(run_dir: Path, tol: dict) -> list[dict]:
    rows = []
    for table_id, subset in _AUC_TABLES.items():
        t = _read(run_dir, table_id)
        if t is not None:
            for _, r in t[t["paper_auc"] != ""].iterrows():
                paper = f"{_num(r['paper_auc']):.2f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
                book = _interval(_num(r["auc"]), _num(r["ci_low"]), _num(r["ci_high"]))
                rows.append(_absolute(table_id, f"AUC, {r['label']}, {subset}", paper, book, table_id,
                                      _num(r["paper_auc"]), _num(r["auc"]), tol["auc"]))
        d = _read(run_dir, f"{table_id}_delong")
        if d is not None:
            for _, r in d[d["paper_p"] != ""].iterrows():
                rows.append(_p_row(table_id, f"DeLong p, {r['comparison']}, {subset}", r["paper_p"], r["p"],
                                   r["p_text"], f"{table_id}_delong", tol["p_value"]))
    return rows


def _supp_table10_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_table10")
    if t is None:
        return []
    return [_p_row("supp_table10", f"DeLong p, 15 vs 32 radiomics features, {r['label']}", r["paper_p"], r["p"],
                   r["p_text"], "supp_table10", tol["p_value"]) for _, r in t[t["paper_p"] != ""].iterrows()]


def _fig2_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "fig2")
    if t is None:
        return []
    paper = manifest.paper_entry("fig2")["values"]
    rows = []
    for key, column, quantity in (
            ("top_structure_all", "rank", "Top structure of the CT model, all patients"),
            ("top_structure_normal_perfusion", "rank_shap_normal_perfusion", "Top structure, normal perfusion"),
            ("top_structure_no_cac", "rank_shap_no_cac", "Top structure, no coronary calcium")):
        if column not in t:
            continue
        top = t.loc[t[column].map(_num) == 1, "structure"]
        if top.empty:  # the table lists the ten most important structures overall only
            rows.append(_row("fig2", quantity, paper[key], "not among the table's structures", "fig2"))
        else:
            rows.append(_row("fig2", quantity, paper[key], top.iloc[0], "fig2",
                             within=_same_structure(paper[key], top.iloc[0])))
    return rows


def _supp_fig3_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_fig3")
    if t is None:
        return []
    rows = []
    for _, r in t[t["paper_auc"] != ""].iterrows():
        rows.append(_absolute("supp_fig3", f"AUC of the All model, {r['comparison']}: {r['subgroup']}",
                              f"{_num(r['paper_auc']):.2f}", _interval(_num(r["auc"]), _num(r["ci_low"]),
                                                                       _num(r["ci_high"])),
                              "supp_fig3", _num(r["paper_auc"]), _num(r["auc"]), tol["auc"]))
    for comparison, g in t[t["paper_p"] != ""].groupby("comparison", sort=False):
        r = g.iloc[0]
        p = _num(r["p"])
        # as ctac_helpers.tables.format_p prints it (not imported: it would load the cohort generator)
        book = "" if not math.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.3f}"
        rows.append(_p_row("supp_fig3", f"p, AUC difference by {comparison}", r["paper_p"], r["p"], book,
                           "supp_fig3", tol["p_value"]))
    return rows


def _supp_table6_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_table6")
    if t is None:
        return []
    paper = manifest.paper_entry("supp_table6")["values"]
    sites = t[t["by"] == "site"]
    reference = sites.loc[sites["p"] == "", "group"]
    p, diff = sites["p"].map(_num), sites["difference"].map(_num)
    lower = sorted(sites.loc[(p < tol["p_value"]) & (diff < 0), "group"])
    rows = []
    if not reference.empty:
        rows.append(_row("supp_table6", "Reference site", paper["reference_site"], reference.iloc[0],
                         "supp_table6", within=reference.iloc[0] == paper["reference_site"]))
    rows.append(_row("supp_table6", "Sites with a significantly lower AUC than the reference",
                     ", ".join(paper["lower_than_reference"]), ", ".join(lower) or "none", "supp_table6",
                     within=set(lower) == set(paper["lower_than_reference"])))
    return rows


def _fig3_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "fig3_logrank")
    if t is None:
        return []
    ai = t[t["split"] == "ai"]
    high = ai[ai["group"].str.contains("high", case=False)]
    if high.empty:
        return []
    n_high, total = _num(high.iloc[0]["n"]), ai["n"].map(_num).sum()
    share = 100.0 * n_high / total if total else math.nan
    values = manifest.paper_entry("fig3")["values"]
    paper = values["ai_high_risk_percent"]
    rows = [_absolute("fig3", "Patients in the AI high-risk class, matched to stress TPD >= 10% (%)",
                      f"{paper:.2f}%", f"{share:.2f}% ({n_high:,.0f} of {total:,.0f})", "fig3_logrank",
                      paper, share, tol["percent"])]
    th = _read(run_dir, "ai_threshold")
    if th is not None and len(th):
        book = _num(th.iloc[0]["threshold"])
        rows.append(_absolute("fig3", "AI threshold of the high-risk class (out-of-fold score)",
                              f"{values['ai_threshold']:.2f}", f"{book:.3f}", "ai_threshold",
                              values["ai_threshold"], book, tol["threshold"]))
    return rows


def _nri_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "nri")
    if t is None:
        return []
    rows = []
    for _, r in t[t["paper_pct"] != ""].iterrows():
        label = _NRI_LABELS.get(r["component"], r["component"])
        paper = f"{_num(r['paper_pct']):.1f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
        book = _interval(_num(r["estimate_pct"]), _num(r["ci_low_pct"]), _num(r["ci_high_pct"]), ".1f")
        rows.append(_absolute("nri", f"NRI at 2 years, {label} (%)", paper, book, "nri", _num(r["paper_pct"]),
                              _num(r["estimate_pct"]), tol["percent"]))
    return rows


def _supp_fig4_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_fig4")
    if t is None:
        return []
    rows = []
    for _, r in t[t["paper_hr"] != ""].iterrows():
        paper_hr = _num(r["paper_hr"])
        paper = f"{paper_hr:.2f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
        book = _interval(_num(r["hr"]), _num(r["ci_low"]), _num(r["ci_high"]))
        label = _HR_LABELS.get(r["covariate"], r["covariate"].replace("_", " "))
        rows.append(_absolute("supp_fig4", f"Adjusted hazard ratio, {label}", paper, book, "supp_fig4", paper_hr,
                              _num(r["hr"]), tol["hazard_ratio"] * abs(paper_hr)))
    return rows


def _supp_table7_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_table7")
    if t is None or t.empty:
        return []
    bound = manifest.paper_entry("supp_table7")["values"]["mean_adjusted_hr_all_subgroups_above"]
    hr = t["hr"].map(_num)
    if not hr.notna().any():
        return []
    low = hr.idxmin()
    return [_row("supp_table7", "Adjusted hazard ratio of AI high risk, smallest across subgroups",
                 f"above {bound:g} in all subgroups", f"{hr[low]:.2f} ({t.loc[low, 'subgroup']})", "supp_table7",
                 within=bool((hr > bound).all()))]


#: Scorecard items in the paper's order: each reads its tables and returns rows.
_ITEMS: tuple[Callable[[Path, dict], list[dict]], ...] = (
    _cohort_rows, _auc_rows, _supp_table10_rows, _fig2_rows, _supp_fig3_rows, _supp_table6_rows,
    _fig3_rows, _nri_rows, _supp_fig4_rows, _supp_table7_rows,
)


def scorecard(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every headline number of the paper that ``run_dir`` reproduces, paper beside run.

    Parameters
    ----------
    run_dir : path-like
        A run directory (``runs/<name>``); only its ``tables/`` are read. Tables it lacks give no rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``item`` (the paper's table or figure id, ``cohort``/``calibration`` for the Results
        text and the calibration summary), ``quantity``, ``paper`` (as printed), ``book`` (formatted),
        ``difference`` (book - paper, NaN unless both are numbers), ``tolerance`` (NaN where none
        applies), ``within`` (True, False or None when not comparable) and ``where`` (the chapter
        notebook that reproduces it, ``notebooks/<stem>``).

    Raises
    ------
    ValueError
        The tolerances in ``paper_values.yaml`` are missing or invalid.
    """
    run_dir = Path(run_dir)
    tol = scorecard_tolerances()
    rows: list[dict] = []
    for item in _ITEMS:
        try:
            rows.extend(item(run_dir, tol))
        except KeyError as exc:  # a table of another layout (an older run): leave the item out, say so
            logger.warning("scorecard: %s skipped, a table lacks the column %s", item.__name__.strip("_"), exc)
    table = pd.DataFrame.from_records(rows, columns=COLUMNS)
    table["difference"] = table["difference"].astype(float)
    table["tolerance"] = table["tolerance"].astype(float)
    table["within"] = table["within"].astype(object).where(table["within"].notna(), None)
    logger.info("scorecard of %s: %d rows, %d of %d comparable within tolerance", run_dir, len(table),
                sum(w is True for w in table["within"]), int(table["within"].notna().sum()))
    return table


# -- pages ----------------------------------------------------------------------------------------
def _cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def item_label(item: str) -> str:
    """Readable name of a scorecard item: ``supp_table3`` -> ``Supplementary Table 3``."""
    m = re.fullmatch(r"(supp_)?(table|fig)(\d+)", item)
    if m:
        kind = "Table" if m.group(2) == "table" else "Fig."
        return f"{'Supplementary ' if m.group(1) else ''}{kind} {m.group(3)}"
    return {"cohort": "Results text", "calibration": "Calibration", "nri": "NRI (Results text)"}.get(item, item)


def _chapter_link(where: str, docs: Collection[str] | None, page_dir: str) -> str:
    if not where:
        return ""
    stem = Path(where).name
    number = stem.split("_", 1)[0]
    label = f"chapter {int(number)}" if number.isdigit() else stem
    if docs is not None and where not in docs:
        return label
    target = os.path.relpath(where, page_dir).replace(os.sep, "/")
    return f"[{label}]({target}.ipynb)"


def _fmt(value: float, spec: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def scorecard_page(table: pd.DataFrame, docs: Collection[str] | None = None, page_dir: str = "book",
                   tolerances: Mapping | None = None) -> str:
    """The "Replication scorecard" page (MyST Markdown) of a :func:`scorecard` table.

    Parameters
    ----------
    table : pandas.DataFrame
        The output of :func:`scorecard`.
    docs : collection of str, optional
        Documents of the book (``_toc.yml`` entries); a chapter outside it is named, not linked.
        Default: link every chapter.
    page_dir : str
        Folder of the page in the book's source tree (links are relative to it).
    tolerances : mapping, optional
        The tolerances the introduction states; default :func:`scorecard_tolerances`.

    Returns
    -------
    str
        The page's text.
    """
    tol = dict(tolerances) if tolerances is not None else scorecard_tolerances()
    count = "exactly" if tol["count"] == 0 else f"within {tol['count']:g}"
    comparable = [w for w in table["within"] if w is not None and not (isinstance(w, float) and math.isnan(w))]
    n_within = sum(bool(w) for w in comparable)
    parts = [
        "# Replication scorecard",
        "",
        "Every headline number of the paper that this book's run reproduces, beside the paper's value as "
        "printed. The page is generated from the run's tables each time the book is built; nothing on it "
        "is typed by hand.",
        "",
        "```{admonition} The default data are synthetic\n:class: warning\n"
        "Unless the book was built on real data, these numbers come from the synthetic cohort, calibrated "
        "to the paper's published summaries. Agreement on the cohort numbers is agreement with that "
        "calibration target, and the model results demonstrate the method; neither is evidence about "
        "patients.\n```",
        "",
        "*Within* says whether this book's value lies within the tolerance of the paper's: AUCs within "
        f"{tol['auc']:g}; p-values on the same side of {tol['p_value']:g}; hazard ratios within "
        f"{100 * tol['hazard_ratio']:g}% of the paper's (the tolerance column gives it in hazard-ratio units); "
        f"percentages within {tol['percent']:g} points; cohort numbers within the tolerance of the calibration "
        f"table (chapter 0); the cohort's size {count}. It is empty where the two cannot be "
        "compared (the paper states no number, or the structure the paper names is not in the run's table). "
        "*Difference* is this book's value minus the paper's where both are numbers.",
        "",
    ]
    if table.empty:
        parts += ["The run directory holds none of the tables the scorecard reads.", ""]
        return "\n".join(parts)
    parts += [f"**{n_within} of {len(comparable)}** comparable numbers are within tolerance "
              f"({len(table)} rows).", ""]
    header = ["Item", "Quantity", "Paper", "This book", "Difference", "Tolerance", "Within", "Chapter"]
    rows = []
    for r in table.itertuples(index=False):
        within = "" if r.within is None else ("yes" if r.within else "**no**")
        rows.append([_cell(item_label(r.item)), _cell(r.quantity), _cell(r.paper), _cell(r.book),
                     _fmt(r.difference, "+.3g"), _fmt(r.tolerance, ".3g"), within,
                     _chapter_link(r.where, docs, page_dir)])
    parts += [_markdown_table(header, rows), ""]
    return "\n".join(parts)


def status_page(run_json: Mapping) -> str:
    """The "Run status" page (MyST Markdown) of a run directory's ``run.json``.

    Parameters
    ----------
    run_json : mapping
        The parsed ``run.json`` (``{}`` when the run directory has none).

    Returns
    -------
    str
        The page: every stage's status, start and duration, the package versions, the run's
        parameters, the code hash and the hash of every output.
    """
    parts = ["# Run status", ""]
    if not run_json:
        parts += ["The run directory this book was built from has no `run.json`.", ""]
        return "\n".join(parts)
    params = run_json.get("parameters") or {}
    name = params.get("name", "")
    parts += [
        f"The execution record (`run.json`) of the run directory{f' `runs/{name}`' if name else ''} this book "
        "was built from: which stages ran, with which packages and parameters, and the SHA-256 hash of the "
        "code and of every output, so that a rerun can be checked file by file.",
        "",
        "## Stages",
        "",
    ]
    recorded = run_json.get("stages") or {}
    order = [s.name for s in execution_order()]
    names = [n for n in order if n in recorded] + sorted(set(recorded) - set(order))
    names += [n for n in order if n not in recorded]
    rows = []
    for n in names:
        rec = recorded.get(n) or {}
        duration = rec.get("duration_s")
        code = rec.get("code_hash") or ""
        rows.append([_cell(n), _cell(rec.get("status", "not run")), _cell(rec.get("started") or ""),
                     _fmt(duration, ".1f") if isinstance(duration, (int, float)) else "",
                     f"`{_cell(code[:12])}`" if code else ""])
    parts += [_markdown_table(["Stage", "Status", "Started", "Duration (s)", "Code hash"], rows), "",
              "*Code hash*: the first 12 characters of the hash of the code a stage ran with; stages run with "
              "different code show different hashes (the hash the latest `ctac-book run` recorded is under "
              "Hashes).", ""]
    packages = run_json.get("packages") or {}
    if packages:
        versions = [[_cell(k), f"`{_cell(v)}`"] for k, v in packages.items()]
        parts += ["## Package versions", "", _markdown_table(["Package", "Version"], versions), ""]
    if params:
        parts += ["## Parameters", "", "```yaml", yaml.safe_dump(dict(params), sort_keys=False).rstrip(), "```", ""]
    parts += ["## Hashes", ""]
    if run_json.get("code_hash"):
        parts += [f"Code hash (the `ctac_helpers` package and `data_manifest/`): `{run_json['code_hash']}`",
                  ""]
    outputs = [[_cell(n), f"`{_cell(path)}`", f"`{_cell(digest)}`"]
               for n in names for path, digest in sorted(((recorded.get(n) or {}).get("outputs") or {}).items())]
    if outputs:
        parts += [_markdown_table(["Stage", "Output", "SHA-256"], outputs), ""]
    else:
        parts += ["No stage has recorded outputs.", ""]
    return "\n".join(parts)
