"""The replication scorecard: every headline number of the paper beside the run's value.

:func:`scorecard` reads the tables a run directory holds (``<run_dir>/tables/<id>.csv``) and returns
one row per published number or comparison the run reproduces, with the paper's value as printed, the
run's, the criterion of agreement and whether the run meets it. Tolerances are data
(``scorecard_tolerances`` in ``data_manifest/paper_values.yaml``), by kind of number:

* ``auc``: absolute, in AUC units (the models' AUCs, in all patients and the subsets of Supplementary
  Tables 4-5);
* ``subgroup_auc``: absolute, in AUC units (the All model's AUC by sex, age and race, Supplementary
  Fig. 3);
* ``p_value``: a significance level. A comparison (DeLong test) agrees when the run's and the paper's
  p-values lie on the same side of it and, where the paper's comparison is significant and its AUCs
  say which side is higher, the run's higher model is the paper's;
* ``interval``: ``paper_ci``: the run's estimate lies inside the paper's printed 95% interval, bounds
  included (adjusted hazard ratios, NRI components);
* ``percent``: absolute, in percentage points (the share of patients at high AI risk);
* ``threshold``: absolute, in score units (the matched AI threshold);
* ``count``: absolute (the cohort's size);
* ``cohort``: ``calibration``: the tolerance the calibration table (``tables/calibration.csv``)
  states for the number.

Besides the numbers, *order* rows check the ranking of the models' AUCs that the paper's AUCs imply
(derived from ``paper_values.yaml``, never listed by hand): in all patients each adjacent pair of the
paper's order and whether the paper's best model is the run's best; in the subsets and the subgroup
pairs of Supplementary Fig. 3 every pair whose printed AUCs differ (a printed tie gives no row).

*Row keys.* Every row has a stable ``key`` (the same for the same comparison in every run), ``/``-separated:

* ``<table>/auc/<model>``: a model's AUC (``supp_table3/auc/ai_hybrid``, ``supp_table5/auc/ai_ctac``);
* ``supp_fig3/auc/<subgroup>``: a subgroup's AUC, the subgroup as the paper's values name it
  (``male``, ``age_lt65``, ...);
* ``<table>/delong/<a>-<b>``: the paper's DeLong comparison of models ``a`` and ``b``
  (``supp_table3/delong/ai_hybrid-ai_ctac``); ``supp_table10/delong/<model>`` (15 vs 32 features of
  a model); ``supp_fig3/delong/<comparison>`` (``sex``, ``age``, ``race``);
* ``order/<table>/<higher>><lower>``: the paper's higher model (or subgroup) above the lower
  (``order/supp_table3/all>ai_hybrid``, ``order/supp_fig3/female>male``);
  ``order/<table>/<best>>rest``: the paper's best model is the run's best;
* ``fig3/high_risk_percent``, ``fig3/ai_threshold``; ``nri/<component>`` (``events``, ``nonevents``,
  ``overall``); ``supp_fig4/hr/<covariate>``; ``supp_table7/min_hr``; ``fig2/<top_structure_...>``;
  ``supp_table6/reference_site``, ``supp_table6/lower_than_reference``;
* the cohort margins: ``table1/n``, ``table1/male_percent``, ``table1/death_percent``,
  ``cohort/followup_{median,q1,q3}``, ``supp_table2/normal_percent``,
  ``supp_table2/normal_death_percent`` and ``calibration/within`` (the calibration table's summary).

:func:`row_keys` lists every key the paper's values allow. Each row's ``group`` says what agreement
means: ``margins`` (the cohort numbers; the synthetic cohort is calibrated to Tables 1-2 by
construction), ``fitted`` (the keys listed in ``generator_targets`` of ``paper_values.yaml``: the
generator's structural constants are fitted to them, :func:`generator_targets`), ``held_out``
(every other row: a test of the generator's structure) and ``own`` (chapter 8's results, which the paper
does not report: no paper value and no criterion; :mod:`ctac_helpers.results.beyond` gives their keys,
``own/...``). ``scorecard_notes`` in ``paper_values.yaml``
may give, per key, one sentence on why the book may miss the row (:func:`scorecard_notes`).
:func:`holds_by_key` counts, across several run directories, how often each row holds; :func:`seed_values`
keeps one run's value of each row, which the held-out check records seed by seed.

A table the run does not hold (a stage that was skipped or failed) gives no rows. The book's
"Replication scorecard" and "Run status" pages are rendered by :func:`scorecard_page` and
:func:`status_page` when ``ctac-book build`` stages the source tree (:mod:`ctac_helpers.publish.book`), and the
front page's account of what the run reproduces by :func:`front_summary`: the counts of the groups and
the paper's headline findings (``headline_findings`` in ``paper_values.yaml``, :func:`findings_status`),
each reproduced when every row that tests it holds.
"""

from __future__ import annotations

import logging
import math
import os
import re
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from ctac_helpers.core import manifest
from ctac_helpers.results import beyond as beyond_results
from ctac_helpers.definitions import format_p
from ctac_helpers.core.stages import STAGES, execution_order
from ctac_helpers.results.subgroups import PAPER_KEYS as _SUBGROUP_PAPER_KEYS
from ctac_helpers.results.subgroups import SUBGROUPS
from ctac_helpers.publish import figures, fmt

logger = logging.getLogger(__name__)

COLUMNS = ["key", "group", "item", "quantity", "paper", "book", "difference", "tolerance", "criterion", "within",
           "where"]
#: Kinds of number a tolerance is given for in ``scorecard_tolerances``.
TOLERANCE_KINDS = ("auc", "subgroup_auc", "p_value", "interval", "percent", "threshold", "count", "cohort")
#: Kinds whose tolerance is a rule named by text, not a number: kind -> the one allowed value.
_TEXT_KINDS = {"cohort": "calibration", "interval": "paper_ci"}
#: The row groups, in the order the page reports them, with their headings.
GROUPS: dict[str, str] = {"fitted": "Fitted to", "held_out": "Held out", "margins": "Cohort margins",
                          beyond_results.OWN_GROUP: "Beyond the paper"}
#: Table id -> the chapter notebook (``notebooks/<stem>``) that writes it.
TABLE_CHAPTERS: dict[str, str] = {t: f"notebooks/{Path(s.notebook).stem}" for s in STAGES for t in s.tables}

_AUC_TABLES = {
    "supp_table3": "all patients",
    "supp_table4": "normal perfusion (stress TPD < 5%)",
    "supp_table5": "no coronary calcium (CAC = 0)",
}
#: How the order rows of an AUC table pair its models: ``adjacent`` (each neighbour in the paper's
#: order, and the best model above the rest) or ``pairs`` (every pair whose paper AUCs differ).
_ORDER_RULE = {"supp_table3": "adjacent", "supp_table4": "pairs", "supp_table5": "pairs"}
_HR_LABELS = {"abnormal_perfusion": "abnormal perfusion (stress TPD >= 5%)", "cac_gt400": "CAC > 400"}
_NRI_LABELS = {"events": "events", "nonevents": "non-events", "overall": "overall"}
_P_TEXT = re.compile(r"^\s*(<=|>=|<|>|≤|≥)?\s*(\d*\.?\d+(?:[eE][-+]?\d+)?)")
_BETTER = re.compile(r"\(\s*(\S+)\s+better\s*\)", re.IGNORECASE)
_FIG2_ROWS = (("top_structure_all", "rank", "Top structure of the CT model, all patients"),
              ("top_structure_normal_perfusion", "rank_shap_normal_perfusion", "Top structure, normal perfusion"),
              ("top_structure_no_cac", "rank_shap_no_cac", "Top structure, no coronary calcium"))
#: Keys of the cohort rows (group ``margins``).
_MARGIN_KEYS = ("table1/n", "table1/male_percent", "table1/death_percent", "cohort/followup_median",
                "cohort/followup_q1", "cohort/followup_q3", "supp_table2/normal_percent",
                "supp_table2/normal_death_percent", "calibration/within")
_FIXED_KEYS = ("supp_table6/reference_site", "supp_table6/lower_than_reference", "fig3/high_risk_percent",
               "fig3/ai_threshold", "supp_table7/min_hr")


# -- data-file entries --------------------------------------------------------------------------
def scorecard_tolerances() -> dict:
    """The scorecard's tolerances by kind (``scorecard_tolerances`` in ``paper_values.yaml``).

    Returns
    -------
    dict
        ``{kind: tolerance}``: a number for every kind of :data:`TOLERANCE_KINDS` but ``cohort``
        (``'calibration'``) and ``interval`` (``'paper_ci'``).

    Raises
    ------
    ValueError
        The entry is missing, lacks a kind, names an unknown kind, or gives a kind an invalid value.
    """
    tol = manifest.paper_values().get("scorecard_tolerances")
    if not isinstance(tol, Mapping):
        raise ValueError("data_manifest/paper_values.yaml has no 'scorecard_tolerances' mapping")
    missing = [k for k in TOLERANCE_KINDS if k not in tol]
    if missing:
        raise ValueError(f"scorecard_tolerances lacks {', '.join(missing)}")
    unknown = [str(k) for k in tol if k not in TOLERANCE_KINDS]
    if unknown:
        raise ValueError(f"scorecard_tolerances has unknown kinds {', '.join(unknown)}; "
                         f"known: {', '.join(TOLERANCE_KINDS)}")
    for kind in TOLERANCE_KINDS:
        value = tol[kind]
        if kind in _TEXT_KINDS:
            if value != _TEXT_KINDS[kind]:
                raise ValueError(f"scorecard_tolerances.{kind} must be {_TEXT_KINDS[kind]!r}, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"scorecard_tolerances.{kind} must be a non-negative number, got {value!r}")
    return dict(tol)


def _paper_aucs(table_id: str) -> dict[str, float]:
    """The paper's AUC of each model (or subgroup) of ``table_id``, as printed; models without one left out."""
    out = {}
    for name, value in (manifest.paper_entry(table_id).get("auc") or {}).items():
        v = value[0] if isinstance(value, (list, tuple)) else value
        if v is not None and math.isfinite(float(v)):
            out[str(name)] = float(v)
    return out


def _order_pairs(values: Mapping[str, float], rule: str) -> list[tuple[str, str]]:
    """``(higher, lower)`` pairs of names whose values differ, in the values' descending order.

    ``rule`` ``adjacent``: the pairs between consecutive distinct values (every name of the higher
    value with every name of the next lower); ``pairs``: every pair of different values. Equal
    values (a tie as printed) never give a pair.
    """
    names = sorted(values, key=lambda k: -values[k])  # stable: ties keep the data file's order
    if rule == "pairs":
        return [(h, lo) for i, h in enumerate(names) for lo in names[i + 1:] if values[h] > values[lo]]
    if rule != "adjacent":
        raise ValueError(f"unknown order rule {rule!r}; allowed: adjacent, pairs")
    levels = sorted(set(values.values()), reverse=True)
    return [(h, lo) for high, low in zip(levels, levels[1:])
            for h in names if values[h] == high for lo in names if values[lo] == low]


def _best(values: Mapping[str, float]) -> str | None:
    """The name of the single highest value; None when the highest is tied or there are no values."""
    if not values:
        return None
    top = max(values.values())
    names = [k for k, v in values.items() if v == top]
    return names[0] if len(names) == 1 else None


def _subgroup_key(label) -> str:
    """The paper's key (``supp_fig3`` in ``paper_values.yaml``) of a subgroup label (``<65`` -> ``age_lt65``)."""
    return _SUBGROUP_PAPER_KEYS.get(str(label), str(label))


def _subgroup_pairs() -> dict[str, tuple[str, str]]:
    """The paper's subgroup comparisons: ``{comparison: (key_a, key_b)}`` in paper keys."""
    return {name: tuple(_subgroup_key(level[0]) for level in d["levels"]) for name, d in SUBGROUPS.items()}


def row_keys() -> list[str]:
    """Every row key the scorecard can give, from the paper's values (the scheme: module docstring).

    Returns
    -------
    list of str
        The keys, in the scorecard's order of items.
    """
    pv = manifest.paper_values()
    keys = list(_MARGIN_KEYS)
    for table_id in _AUC_TABLES:
        entry = pv.get(table_id) or {}
        keys += [f"{table_id}/auc/{m}" for m in _paper_aucs(table_id)]
        keys += [f"{table_id}/delong/{c['a']}-{c['b']}" for c in entry.get("delong_p") or []]
        aucs = _paper_aucs(table_id)
        keys += [f"order/{table_id}/{h}>{lo}" for h, lo in _order_pairs(aucs, _ORDER_RULE[table_id])]
        best = _best(aucs)
        if _ORDER_RULE[table_id] == "adjacent" and best is not None:
            keys.append(f"order/{table_id}/{best}>rest")
    keys += [f"supp_table10/delong/{m}" for m in (pv.get("supp_table10") or {}).get("delong_p") or {}]
    keys += [f"fig2/{k}" for k, _, _ in _FIG2_ROWS]
    fig3 = _paper_aucs("supp_fig3")
    keys += [f"supp_fig3/auc/{k}" for k in fig3]
    keys += [f"supp_fig3/delong/{c}" for c in (pv.get("supp_fig3") or {}).get("p") or {}]
    for a, b in _subgroup_pairs().values():
        if a in fig3 and b in fig3 and fig3[a] != fig3[b]:
            h, lo = (a, b) if fig3[a] > fig3[b] else (b, a)
            keys.append(f"order/supp_fig3/{h}>{lo}")
    keys += list(_FIXED_KEYS)
    keys += [f"nri/{c}" for c in ((pv.get("nri") or {}).get("values") or {})]
    keys += [f"supp_fig4/hr/{c}" for c in ((pv.get("supp_fig4") or {}).get("hr") or {})]
    keys += beyond_results.own_keys()
    return list(dict.fromkeys(keys))


def _check_keys(entry: str, keys: Iterable[str]) -> None:
    known = set(row_keys())
    unknown = [str(k) for k in keys if k not in known]
    if unknown:
        raise ValueError(f"{entry} in data_manifest/paper_values.yaml names unknown scorecard keys: "
                         f"{', '.join(unknown)} (ctac_helpers.publish.scorecard.row_keys() lists the known keys)")


def generator_targets() -> list[str]:
    """The scorecard keys the synthetic generator is fitted to (``generator_targets`` in ``paper_values.yaml``).

    Returns
    -------
    list of str
        The keys, in the data file's order (a mapping's keys when the entry is a mapping).

    Raises
    ------
    ValueError
        The entry is missing or not a list (or mapping) of keys; a key is unknown (not in
        :func:`row_keys`), listed twice, or a cohort margin (those rows are group ``margins``).
    """
    entry = manifest.paper_values().get("generator_targets")
    if entry is None:
        raise ValueError("data_manifest/paper_values.yaml has no 'generator_targets' list")
    if isinstance(entry, Mapping):
        entry = list(entry)
    if not isinstance(entry, list) or not all(isinstance(k, str) for k in entry):
        raise ValueError(f"generator_targets must be a list of scorecard keys, got {entry!r}")
    repeated = sorted({k for k in entry if entry.count(k) > 1})
    if repeated:
        raise ValueError(f"generator_targets lists {', '.join(repeated)} more than once")
    _check_keys("generator_targets", entry)
    margins = [k for k in entry if k in _MARGIN_KEYS]
    if margins:
        raise ValueError(f"generator_targets lists cohort margins ({', '.join(margins)}); those rows are group "
                         "'margins' by construction")
    return list(entry)


def scorecard_notes() -> dict[str, str]:
    """Why the book may miss a row, by key (``scorecard_notes`` in ``paper_values.yaml``; optional).

    Returns
    -------
    dict
        ``{key: sentence}``; empty when the entry is absent or empty.

    Raises
    ------
    ValueError
        The entry is not a mapping of keys to non-empty text, or names an unknown key.
    """
    entry = manifest.paper_values().get("scorecard_notes")
    if entry is None:
        return {}
    if not isinstance(entry, Mapping):
        raise ValueError(f"scorecard_notes must be a mapping {{key: sentence}}, got {entry!r}")
    bad = [str(k) for k, v in entry.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"scorecard_notes: the note of {', '.join(bad)} must be non-empty text")
    _check_keys("scorecard_notes", entry)
    return {str(k): v.strip() for k, v in entry.items()}


def headline_findings() -> list[dict]:
    """The paper's headline findings and the scorecard rows that test each (``headline_findings`` in
    ``paper_values.yaml``).

    Returns
    -------
    list of dict
        ``{'finding': str, 'short': str, 'keys': [key, ...]}`` in the data file's order; ``short`` (the
        finding in a few words, for the front page's first screen) is the finding itself when the data
        file gives none.

    Raises
    ------
    ValueError
        The entry is missing or not a list of such mappings, a finding has no text or no keys, a
        ``short`` is not text, or a key is unknown (not in :func:`row_keys`).
    """
    entry = manifest.paper_values().get("headline_findings")
    if not isinstance(entry, list) or not entry:
        raise ValueError("data_manifest/paper_values.yaml has no 'headline_findings' list")
    out = []
    for i, item in enumerate(entry):
        if not isinstance(item, Mapping) or not {"finding", "keys"} <= set(item) <= {"finding", "short", "keys"}:
            raise ValueError(f"headline_findings[{i}] must be a mapping with 'finding', 'keys' and optionally "
                             f"'short', got {item!r}")
        text, keys, short = item["finding"], item["keys"], item.get("short", item["finding"])
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"headline_findings[{i}].finding must be non-empty text, got {text!r}")
        if not isinstance(short, str) or not short.strip():
            raise ValueError(f"headline_findings[{i}].short must be non-empty text, got {short!r}")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(f"headline_findings[{i}].keys must be a non-empty list of scorecard keys, got {keys!r}")
        _check_keys(f"headline_findings[{i}].keys", keys)
        out.append({"finding": text.strip(), "short": short.strip(), "keys": list(keys)})
    return out


#: A headline finding's verdict on a run, by the state of its rows.
FINDING_STATUSES = ("reproduced", "not reproduced", "not tested")


def findings_status(table: pd.DataFrame, findings: list[dict] | None = None) -> pd.DataFrame:
    """Whether a run reproduces each of the paper's headline findings.

    A finding is *reproduced* when every row that tests it holds, *not reproduced* when one of them
    misses, and *not tested* when a row is absent from the run or cannot be judged and none misses.

    Parameters
    ----------
    table : pandas.DataFrame
        The output of :func:`scorecard`.
    findings : list of dict, optional
        ``{'finding', 'keys'}`` items; default :func:`headline_findings`.

    Returns
    -------
    pandas.DataFrame
        ``finding``, ``short``, ``keys`` (list), ``status`` (one of :data:`FINDING_STATUSES`) and ``missed``
        (the keys that miss), in the findings' order.
    """
    findings = findings if findings is not None else headline_findings()
    within = dict(zip(table["key"], table["within"])) if not table.empty else {}
    rows = []
    for f in findings:
        states = [within.get(k) for k in f["keys"]]
        missed = [k for k, w in zip(f["keys"], states) if _is_comparable(w) and not w]
        if missed:
            status = "not reproduced"
        elif all(_is_comparable(w) and w for w in states):
            status = "reproduced"
        else:
            status = "not tested"
        rows.append({"finding": f["finding"], "short": f.get("short", f["finding"]), "keys": list(f["keys"]),
                     "status": status, "missed": missed})
    return pd.DataFrame.from_records(rows, columns=["finding", "short", "keys", "status", "missed"])


def front_summary(table: pd.DataFrame, docs: Collection[str] | None = None, page_dir: str = "book",
                  findings: list[dict] | None = None) -> str:
    """What a run reproduces, for the book's front page (MyST Markdown, included by ``book/intro.md``).

    First the paper's headline findings (:func:`headline_findings`) in a few words each (their
    ``short``), listed as reproduced, not reproduced or not tested on this run (:func:`findings_status`),
    so that the page's first screen names them; then the count of rows that hold in each group of the
    scorecard, and a table of the findings in full. ``ctac-book build`` writes it from the run's tables,
    so the front page cannot drift from the scorecard.

    Parameters
    ----------
    table : pandas.DataFrame
        The output of :func:`scorecard`.
    docs : collection of str, optional
        Documents of the book; the scorecard is linked only when among them. Default: link it.
    page_dir : str
        Folder of the page that includes the text (links are relative to it).
    findings : list of dict, optional
        Default :func:`headline_findings`.

    Returns
    -------
    str
        The text (no heading of its own).
    """
    scorecard_link = _doc_link("book/scorecard", docs, page_dir, "replication scorecard")
    if table.empty:
        return (f"This run holds none of the results the {scorecard_link} compares with the paper, so this page "
                "cannot say what it reproduces.\n")
    summary = group_summary(table)
    n = _run_size(table)
    (hw, hn), (fw, fn), (mw, mn) = summary["held_out"], summary["fitted"], summary["margins"]
    who = f"this run of {n:,} synthetic patients" if n is not None else "this run"
    status = findings_status(table, findings)
    counts = {s: int((status["status"] == s).sum()) for s in FINDING_STATUSES}
    # the findings first, in a few words each, so that the first screen of the page names them
    lines = [
        f"**What this run reproduces.** Of the paper's {len(status)} headline findings, {who} reproduces "
        f"{counts['reproduced']} and does not reproduce {counts['not reproduced']}"
        + (f" ({counts['not tested']} cannot be tested on it)" if counts["not tested"] else "") + ":",
        "",
    ]
    for state, label in (("reproduced", "Reproduced"), ("not reproduced", "Not reproduced"),
                         ("not tested", "Not tested")):
        shorts = [_cell(s) for s in status.loc[status["status"] == state, "short"]]
        if shorts:
            lines.append(f"- **{label}:** {'; '.join(shorts)}.")
    others = " and ".join(f"{w} of the {n_} results it was fitted to" if g == "fitted" else f"{w} of {n_} cohort numbers"
                          for g, (w, n_) in (("fitted", (fw, fn)), ("margins", (mw, mn))) if n_)
    if hn:
        held = (f"Of the {hn} held-out results, which the synthetic generator was not fitted to and which test "
                f"whether it carries the paper's findings, **{hw} hold**" + (f"; so do {others}." if others else "."))
    else:
        held = ("None of the held-out results, which test the synthetic generator, can be judged"
                + (f"; {others} hold." if others else "."))
    lines += [
        "",
        held + f" The {scorecard_link} gives every row and the reason for each miss; a separate page explains "
        + _doc_link("book/intervals", docs, page_dir, "why the book's AUC intervals are narrower than the paper's")
        + ".",
        "",
        "| The paper's finding | On this run |",
        "|---|---|",
    ]
    marks = {"reproduced": "reproduced", "not reproduced": "**not reproduced**", "not tested": "not tested"}
    lines += [f"| {_cell(r.finding)} | {marks[r.status]} |" for r in status.itertuples(index=False)]
    return "\n".join(lines) + "\n"


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


def _row(key: str, item: str, quantity: str, paper: str, book: str, table: str, difference: float = math.nan,
         tolerance: float = math.nan, within: bool | None = None, criterion: str = "") -> dict:
    return {"key": key, "group": "", "item": item, "quantity": quantity, "paper": paper, "book": book,
            "difference": difference, "tolerance": tolerance, "criterion": criterion, "within": within,
            "where": TABLE_CHAPTERS.get(table, "")}


def _signed(value: float) -> str:
    """A difference with its sign: three significant digits, whole numbers from 1,000 (``-9,480``)."""
    return f"{value:+,.0f}" if abs(value) >= 1000 else f"{round(value, 9) + 0.0:+.3g}"


def _absolute(key: str, item: str, quantity: str, paper: str, book: str, table: str, paper_value: float,
              book_value: float, tolerance: float) -> dict:
    """A row compared as |book - paper| <= tolerance (not comparable when a value is missing)."""
    difference = book_value - paper_value
    comparable = math.isfinite(difference) and math.isfinite(tolerance)
    within = bool(abs(difference) <= tolerance + 1e-9) if comparable else None
    if not math.isfinite(tolerance):
        criterion = "no tolerance"
    else:
        bound = "exact" if tolerance == 0 else f"±{tolerance:.3g}"
        criterion = f"{_signed(difference)} ({bound})" if math.isfinite(difference) else f"within {bound}"
    return _row(key, item, quantity, paper, book, table, difference, tolerance, within, criterion)


def _inside(key: str, item: str, quantity: str, paper: str, book: str, table: str, paper_value: float,
            low: float, high: float, book_value: float) -> dict:
    """A row compared as low <= book <= high, the paper's printed interval (bounds inclusive)."""
    if math.isfinite(low) and math.isfinite(high):
        criterion = f"inside the paper's CI, {low:g} to {high:g}"
        within = bool(low - 1e-9 <= book_value <= high + 1e-9) if math.isfinite(book_value) else None
    else:
        criterion, within = "the paper gives no interval", None
    return _row(key, item, quantity, paper, book, table, book_value - paper_value, math.nan, within, criterion)


def _interval(estimate: float, low: float, high: float, kind: str = "auc") -> str:
    """The book's estimate and interval, rounded as on every page (:mod:`ctac_helpers.publish.fmt`)."""
    return fmt.interval(estimate, low, high, kind, missing="n/a")


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


def _p_only(text) -> str:
    """The p-value part of a printed p (``'<0.05 (15 better)'`` -> ``'<0.05'``)."""
    m = _P_TEXT.match(str(text))
    return m.group(0).strip() if m else str(text)


def _p_phrase(text) -> str:
    """A printed p-value as a statement: ``'<0.001'`` -> ``'p < 0.001'``, ``'0.384'`` -> ``'p = 0.384'``."""
    m = _P_TEXT.match(str(text))
    if not m:
        return str(text)
    op = {"≤": "<=", "≥": ">="}.get(m.group(1) or "=", m.group(1) or "=")
    return f"p {op} {m.group(2)}"


def _comparison_row(key: str, item: str, table: str, labels: tuple[str, str], context: str, paper_p: str,
                    book_p, book_text: str, paper_higher: str | None, book_aucs: tuple[float, float],
                    alpha: float) -> dict:
    """A DeLong comparison: significance at ``alpha`` and, where the paper's is significant, direction.

    ``labels`` name sides a and b; ``paper_higher`` is ``'a'``, ``'b'`` or None (the paper does not
    say which side is higher); ``book_aucs`` are the run's AUCs of a and b.
    """
    paper_sig = significant(paper_p, alpha)
    book_value = book_p if _has(book_p) else book_text
    book_sig = significant(book_value, alpha)
    paper_op, paper_number = parse_p(paper_p)
    book_op, book_number = parse_p(book_value)
    difference = book_number - paper_number if paper_op == book_op == "=" else math.nan
    a, b = labels
    directed = bool(paper_sig) and paper_higher in ("a", "b")

    def printed(sig: bool | None, text: str) -> str:
        return text if sig is None else f"{'significant' if sig else 'not significant'} ({_p_phrase(text)})"

    book = printed(book_sig, book_text or _p_only(book_value))
    if directed:
        (hi, lo), (book_hi, book_lo) = ((a, b), book_aucs) if paper_higher == "a" else ((b, a), book_aucs[::-1])
        quantity = f"{hi} better than {lo}, {context} (DeLong)"
        book += f", AUC {book_hi:.3f} vs {book_lo:.3f}"
        criterion = f"p < {alpha:g} and {hi} higher"
    else:
        what = ("not significantly different" if paper_sig is False
                else "significantly different" if paper_sig else "compared")
        quantity = f"{a} and {b} {what}, {context} (DeLong)"
        criterion = f"p on the same side of {alpha:g}"
    paper = printed(paper_sig, _p_only(paper_p) if paper_sig is not None else str(paper_p))
    if paper_sig is None or book_sig is None:
        within = None
    elif paper_sig != book_sig:
        within = False
    elif directed:
        within = bool(book_hi > book_lo) if math.isfinite(book_hi) and math.isfinite(book_lo) else None
    else:
        within = True
    return _row(key, item, quantity, paper, book, table, difference, alpha, within, criterion)


def _order_row(key: str, item: str, table: str, quantity: str, paper: str, book_hi: float,
               book_lo: float) -> dict:
    """An order row: within when the run's value of the paper's higher side is above the lower's."""
    if math.isfinite(book_hi) and math.isfinite(book_lo):
        book, within = f"{book_hi:.3f} vs {book_lo:.3f}", bool(book_hi > book_lo)
    else:
        book, within = "not in the run's table", None
    return _row(key, item, quantity, paper, book, table, within=within, criterion="same order")


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
            rows.append(_absolute("table1/n", "table1", "Patients analysed", f"{v['n']:,}", f"{n:,.0f}", "table1",
                                  v["n"], n, tol["count"]))
        for key, variable, group, quantity, paper_n, paper_pct in (
                ("table1/male_percent", "n", "male", "Men", v["male_n"], v["male_percent"]),
                ("table1/death_percent", "death", "all", "Deaths during follow-up", v["deaths"], v["death_percent"])):
            if (variable, group) not in t1.index:
                continue
            r = t1.loc[(variable, group)]
            c = calibration_row("table1", variable, group, "percent")
            tolerance = _num(c["tolerance"]) if c is not None else math.nan
            rows.append(_absolute(key, "table1", f"{quantity} (%)", f"{paper_n:,} ({paper_pct:.1f}%)",
                                  f"{_num(r['n']):,.0f} ({_num(r['percent']):.1f}%)", "table1", paper_pct,
                                  _num(r["percent"]), tolerance))
    if calib is None:
        return rows
    supp2 = _read(run_dir, "supp_table2")
    if supp2 is not None:
        supp2 = supp2[supp2["level"] == ""].set_index(["variable", "group"])
    for key, source, variable, group, statistic, quantity, paper, unit in (
            ("cohort/followup_median", "cohort", "followup_years", "all", "median", "Follow-up, median (years)",
             f"{v['followup_median_years']:.1f}", ""),
            ("cohort/followup_q1", "cohort", "followup_years", "all", "q1", "Follow-up, first quartile (years)",
             f"{v['followup_q1_years']:.1f}", ""),
            ("cohort/followup_q3", "cohort", "followup_years", "all", "q3", "Follow-up, third quartile (years)",
             f"{v['followup_q3_years']:.1f}", ""),
            ("supp_table2/normal_percent", "supp_table2", "n", "normal", "percent",
             "Normal perfusion, stress TPD < 5% (%)",
             f"{v['normal_perfusion_n']:,} ({v['normal_perfusion_percent']:.1f}%)", "%"),
            ("supp_table2/normal_death_percent", "supp_table2", "death", "normal", "percent",
             "Deaths among normal perfusion (%)",
             f"{v['normal_perfusion_deaths']:,} ({v['normal_perfusion_death_percent']:.1f}%)", "%")):
        c = calibration_row(source, variable, group, statistic)
        if c is None:
            continue
        book = _num(c["synthetic"])
        text = fmt.number(book, "percent") + "%" if unit else fmt.number(book, "years")
        if source == "supp_table2" and supp2 is not None and (variable, group) in supp2.index:
            text = f"{_num(supp2.loc[(variable, group), 'n']):,.0f} ({text})"  # the count beside the share
        rows.append(_absolute(key, key.split("/")[0], quantity, paper, text, "calibration", _num(c["paper"]), book,
                              _num(c["tolerance"])))
    within = calib["within"].str.lower() == "true"
    rows.append(_row("calibration/within", "calibration",
                     "Published cohort numbers within their calibration tolerance", f"{len(calib)} numbers",
                     f"{int(within.sum())} of {len(calib)} within", "calibration",
                     criterion="summary of chapter 0's calibration table"))
    for r in rows:
        r["group"] = "margins"
    return rows


def _auc_rows(run_dir: Path, tol: dict) -> list[dict]:
    rows = []
    for table_id, subset in _AUC_TABLES.items():
        t = _read(run_dir, table_id)
        book_auc: dict[str, float] = {}
        labels: dict[str, str] = {}
        if t is not None:
            book_auc = {r["model"]: _num(r["auc"]) for _, r in t.iterrows()}
            labels = {r["model"]: r["label"] or r["model"] for _, r in t.iterrows()}
            for _, r in t[t["paper_auc"] != ""].iterrows():
                paper = f"{_num(r['paper_auc']):.2f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
                book = _interval(_num(r["auc"]), _num(r["ci_low"]), _num(r["ci_high"]))
                rows.append(_absolute(f"{table_id}/auc/{r['model']}", table_id, f"AUC, {r['label']}, {subset}",
                                      paper, book, table_id, _num(r["paper_auc"]), _num(r["auc"]), tol["auc"]))
        d = _read(run_dir, f"{table_id}_delong")
        paper_auc = _paper_aucs(table_id)
        if d is not None:
            for _, r in d[d["paper_p"] != ""].iterrows():
                a, b = r["a"], r["b"]
                pa, pb = paper_auc.get(a, math.nan), paper_auc.get(b, math.nan)
                higher = ("a" if pa > pb else "b") if math.isfinite(pa) and math.isfinite(pb) and pa != pb else None
                label_a, label_b = (s.strip() for s in r["comparison"].split(" vs ", 1)) \
                    if " vs " in r["comparison"] else (a, b)
                rows.append(_comparison_row(f"{table_id}/delong/{a}-{b}", table_id, f"{table_id}_delong",
                                            (label_a, label_b), subset, r["paper_p"], r["p"], r["p_text"], higher,
                                            (_num(r["auc_a"]), _num(r["auc_b"])), tol["p_value"]))
        if t is not None:
            rows += _model_order_rows(table_id, subset, paper_auc, book_auc, labels)
    return rows


def _model_order_rows(table_id: str, subset: str, paper: Mapping[str, float], book: Mapping[str, float],
                      labels: Mapping[str, str]) -> list[dict]:
    """The order rows of one AUC table: pairs of the paper's models (:data:`_ORDER_RULE`), and the best."""
    rows = []
    label = lambda m: labels.get(m, m)  # noqa: E731
    for h, lo in _order_pairs(paper, _ORDER_RULE[table_id]):
        rows.append(_order_row(f"order/{table_id}/{h}>{lo}", table_id, table_id,
                               f"{label(h)} above {label(lo)}, {subset} (AUC order)",
                               f"{paper[h]:.2f} > {paper[lo]:.2f}", book.get(h, math.nan), book.get(lo, math.nan)))
    best = _best(paper)
    if _ORDER_RULE[table_id] == "adjacent" and best is not None:
        others = {m: v for m, v in book.items() if m != best and math.isfinite(v)}
        runner = max(others, key=others.get) if others else None
        paper_next = max((v for m, v in paper.items() if m != best), default=math.nan)
        row = _order_row(f"order/{table_id}/{best}>rest", table_id, table_id,
                         f"{label(best)} is the best model, {subset} (highest AUC)",
                         f"{paper[best]:.2f}, next {paper_next:.2f}", book.get(best, math.nan),
                         others[runner] if runner else math.nan)
        if runner is not None and math.isfinite(book.get(best, math.nan)):
            row["book"] = f"{book[best]:.3f}, best other {label(runner)} {others[runner]:.3f}"
        row["criterion"] = "highest AUC of all models"
        rows.append(row)
    return rows


def _supp_table10_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_table10")
    if t is None:
        return []
    sides = [c[len("auc_"):] for c in t.columns if c.startswith("auc_")]
    if len(sides) != 2:
        raise KeyError("auc_<a>, auc_<b>")
    rows = []
    for _, r in t[t["paper_p"] != ""].iterrows():
        better = _BETTER.search(r["paper_p"])
        higher = None
        if better and better.group(1) in sides:
            higher = "a" if better.group(1) == sides[0] else "b"
        rows.append(_comparison_row(f"supp_table10/delong/{r['model']}", "supp_table10", "supp_table10",
                                    (f"{sides[0]} features", f"{sides[1]} features"),
                                    f"{r['label']}, all patients", r["paper_p"], r["p"], r["p_text"], higher,
                                    (_num(r[f"auc_{sides[0]}"]), _num(r[f"auc_{sides[1]}"])), tol["p_value"]))
    return rows


def _fig2_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "fig2")
    if t is None:
        return []
    paper = manifest.paper_entry("fig2")["values"]
    rows = []
    for key, column, quantity in _FIG2_ROWS:
        if column not in t:
            continue
        top = t.loc[t[column].map(_num) == 1, "structure"]
        if top.empty:  # the table lists the ten most important structures overall only
            rows.append(_row(f"fig2/{key}", "fig2", quantity, paper[key], "not among the table's structures", "fig2",
                             criterion="same structure"))
        else:
            rows.append(_row(f"fig2/{key}", "fig2", quantity, paper[key], top.iloc[0], "fig2",
                             within=_same_structure(paper[key], top.iloc[0]), criterion="same structure"))
    return rows


def _supp_fig3_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_fig3")
    if t is None:
        return []
    paper_auc = _paper_aucs("supp_fig3")
    rows = []
    for _, r in t[t["paper_auc"] != ""].iterrows():
        rows.append(_absolute(f"supp_fig3/auc/{_subgroup_key(r['subgroup'])}", "supp_fig3",
                              f"AUC of the All model, {r['comparison']}: {r['subgroup']}",
                              f"{_num(r['paper_auc']):.2f}", _interval(_num(r["auc"]), _num(r["ci_low"]),
                                                                       _num(r["ci_high"])),
                              "supp_fig3", _num(r["paper_auc"]), _num(r["auc"]), tol["subgroup_auc"]))
    paper_p = (manifest.paper_entry("supp_fig3").get("p") or {})
    for comparison, g in t.groupby("comparison", sort=False):
        if len(g) != 2:
            logger.warning("scorecard: supp_fig3 comparison %s has %d rows, not 2; no comparison rows", comparison,
                           len(g))
            continue
        (ka, kb), (la, lb) = [_subgroup_key(s) for s in g["subgroup"]], list(g["subgroup"])
        book = {ka: _num(g.iloc[0]["auc"]), kb: _num(g.iloc[1]["auc"])}
        pa, pb = paper_auc.get(ka, math.nan), paper_auc.get(kb, math.nan)
        differ = math.isfinite(pa) and math.isfinite(pb) and pa != pb
        printed = g.iloc[0]["paper_p"] or str(paper_p.get(comparison, ""))
        if printed:
            p = _num(g.iloc[0]["p"])
            text = format_p(p)
            higher = ("a" if pa > pb else "b") if differ else None
            rows.append(_comparison_row(f"supp_fig3/delong/{comparison}", "supp_fig3", "supp_fig3",
                                        (str(la), str(lb)), f"AUC of the All model by {comparison}", printed,
                                        g.iloc[0]["p"], text, higher, (book[ka], book[kb]), tol["p_value"]))
        if differ:
            (h, hl), (lo, ll) = ((ka, la), (kb, lb)) if pa > pb else ((kb, lb), (ka, la))
            rows.append(_order_row(f"order/supp_fig3/{h}>{lo}", "supp_fig3", "supp_fig3",
                                   f"AUC of the All model: {hl} above {ll} ({comparison}, AUC order)",
                                   f"{paper_auc[h]:.2f} > {paper_auc[lo]:.2f}", book[h], book[lo]))
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
        rows.append(_row("supp_table6/reference_site", "supp_table6", "Reference site", paper["reference_site"],
                         reference.iloc[0], "supp_table6", within=reference.iloc[0] == paper["reference_site"],
                         criterion="same site"))
    rows.append(_row("supp_table6/lower_than_reference", "supp_table6",
                     "Sites with a significantly lower AUC than the reference",
                     ", ".join(paper["lower_than_reference"]), ", ".join(lower) or "none", "supp_table6",
                     within=set(lower) == set(paper["lower_than_reference"]),
                     criterion=f"same sites (p < {tol['p_value']:g})"))
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
    rows = [_absolute("fig3/high_risk_percent", "fig3",
                      "Patients in the AI high-risk class, matched to ischemic TPD >= 10% (%)",
                      f"{paper:.2f}%", f"{share:.2f}% ({n_high:,.0f} of {total:,.0f})", "fig3_logrank",
                      paper, share, tol["percent"])]
    th = _read(run_dir, "ai_threshold")
    if th is not None and len(th):
        book = _num(th.iloc[0]["threshold"])
        rows.append(_absolute("fig3/ai_threshold", "fig3", "AI threshold of the high-risk class (out-of-fold score)",
                              f"{values['ai_threshold']:.2f}", f"{book:.3f}", "ai_threshold",
                              values["ai_threshold"], book, tol["threshold"]))
    return rows


def _nri_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "nri")
    if t is None:
        return []
    paper_values = (manifest.paper_entry("nri").get("values") or {})
    rows = []
    for _, r in t[t["paper_pct"] != ""].iterrows():
        component = r["component"].removeprefix("nri_")
        label = _NRI_LABELS.get(component, component)
        paper = f"{_num(r['paper_pct']):.1f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
        book = _interval(_num(r["estimate_pct"]), _num(r["ci_low_pct"]), _num(r["ci_high_pct"]), "percent")
        printed = paper_values.get(component) or [None, None, None]
        low, high = (_num(x) for x in printed[1:3])
        rows.append(_inside(f"nri/{component}", "nri", f"NRI at 2 years, {label} (%)", paper, book, "nri",
                            _num(r["paper_pct"]), low, high, _num(r["estimate_pct"])))
    return rows


def _supp_fig4_rows(run_dir: Path, tol: dict) -> list[dict]:
    t = _read(run_dir, "supp_fig4")
    if t is None:
        return []
    paper_values = (manifest.paper_entry("supp_fig4").get("hr") or {})
    rows = []
    for _, r in t[t["paper_hr"] != ""].iterrows():
        paper_hr = _num(r["paper_hr"])
        paper = f"{paper_hr:.2f}" + (f" ({r['paper_ci']})" if r["paper_ci"] else "")
        book = _interval(_num(r["hr"]), _num(r["ci_low"]), _num(r["ci_high"]), "hr")
        label = _HR_LABELS.get(r["covariate"], r["covariate"].replace("_", " "))
        printed = paper_values.get(r["covariate"]) or [None, None, None]
        low, high = (_num(x) for x in printed[1:3])
        rows.append(_inside(f"supp_fig4/hr/{r['covariate']}", "supp_fig4", f"Adjusted hazard ratio, {label}", paper,
                            book, "supp_fig4", paper_hr, low, high, _num(r["hr"])))
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
    book = f"{hr[low]:.2f} ({t.loc[low, 'subgroup']})"
    missing = int(hr.isna().sum())
    if missing:  # a subgroup without an estimate cannot be above the bound: say so beside the smallest
        book += f"; {missing} of {len(hr)} subgroups not estimated"
    return [_row("supp_table7/min_hr", "supp_table7",
                 "Adjusted hazard ratio of AI high risk, smallest across subgroups",
                 f"above {bound:g} in all subgroups", book, "supp_table7",
                 within=bool((hr > bound).all()), criterion=f"every subgroup above {bound:g}")]


def _own_rows(run_dir: Path, tol: dict) -> list[dict]:
    """Chapter 8's results, the book's own (:mod:`ctac_helpers.results.beyond`): no paper value, no tolerance."""
    return beyond_results.own_rows(run_dir)


#: Scorecard items in the paper's order (the book's own results last): each reads its tables and returns rows.
_ITEMS: tuple[Callable[[Path, dict], list[dict]], ...] = (
    _cohort_rows, _auc_rows, _supp_table10_rows, _fig2_rows, _supp_fig3_rows, _supp_table6_rows,
    _fig3_rows, _nri_rows, _supp_fig4_rows, _supp_table7_rows, _own_rows,
)


def scorecard(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every headline number and comparison of the paper that ``run_dir`` reproduces, paper beside run.

    This is the per-run table other modules aggregate (:func:`holds_by_key` counts its rows across
    run directories by ``key``).

    Parameters
    ----------
    run_dir : path-like
        A run directory (``runs/<name>``); only its ``tables/`` are read. Tables it lacks give no rows.

    Returns
    -------
    pandas.DataFrame
        One row per key (:data:`COLUMNS`): ``key`` (stable, see the module docstring), ``group``
        (``fitted``, ``held_out`` or ``margins``), ``item`` (the paper's table or figure id,
        ``cohort``/``calibration`` for the Results text and the calibration summary), ``quantity``
        (what the row tests), ``paper`` (as printed), ``book`` (formatted), ``difference`` (book -
        paper, NaN unless both are numbers), ``tolerance`` (NaN where no numeric tolerance applies:
        intervals, orders, categories), ``criterion`` (the rule as text, e.g. ``+0.013 (±0.02)`` or
        ``inside the paper's CI, 1.46 to 2.01``), ``within`` (True, False or None when not comparable)
        and ``where`` (the chapter notebook that reproduces it, ``notebooks/<stem>``).

    Raises
    ------
    ValueError
        The tolerances or ``generator_targets`` in ``paper_values.yaml`` are missing or invalid.
    """
    run_dir = Path(run_dir)
    tol = scorecard_tolerances()
    targets = set(generator_targets())
    rows: list[dict] = []
    for item in _ITEMS:
        try:
            rows.extend(item(run_dir, tol))
        except KeyError as exc:  # a table of another layout (an older run): leave the item out, say so
            logger.warning("scorecard: %s skipped, a table lacks the column %s", item.__name__.strip("_"), exc)
    unique: dict[str, dict] = {}
    for r in rows:
        if r["key"] in unique:  # a run table that repeats a row: the first one counts
            logger.warning("scorecard: a second row with the key %s is left out", r["key"])
            continue
        if r["group"] not in ("margins", beyond_results.OWN_GROUP):
            r["group"] = "fitted" if r["key"] in targets else "held_out"
        unique[r["key"]] = r
    rows = list(unique.values())
    table = pd.DataFrame.from_records(rows, columns=COLUMNS)
    table["difference"] = table["difference"].astype(float)
    table["tolerance"] = table["tolerance"].astype(float)
    table["within"] = table["within"].astype(object).where(table["within"].notna(), None)
    logger.info("scorecard of %s: %d rows, %d of %d comparable within", run_dir, len(table),
                sum(w is True for w in table["within"]), int(table["within"].notna().sum()))
    return table


def holds_by_key(run_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """How often each scorecard row holds across several run directories (e.g. seeds of the generator).

    Parameters
    ----------
    run_dirs : iterable of path-like
        Run directories; each is read by :func:`scorecard`.

    Returns
    -------
    pandas.DataFrame
        One row per key met in any run, in the order of first appearance: ``key``, ``group``,
        ``item``, ``quantity``, ``runs`` (run directories that have the row), ``comparable`` (of
        those, runs where ``within`` is True or False) and ``holds`` (runs where it is True).

    Raises
    ------
    ValueError
        ``run_dirs`` is empty.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("holds_by_key needs at least one run directory")
    counts: dict[str, dict] = {}
    for run_dir in run_dirs:
        for r in scorecard(run_dir).itertuples(index=False):
            c = counts.setdefault(r.key, {"key": r.key, "group": r.group, "item": r.item, "quantity": r.quantity,
                                          "runs": 0, "comparable": 0, "holds": 0})
            c["runs"] += 1
            c["comparable"] += r.within is not None
            c["holds"] += r.within is True
    columns = ["key", "group", "item", "quantity", "runs", "comparable", "holds"]
    out = pd.DataFrame.from_records(list(counts.values()), columns=columns)
    return out.astype({"runs": int, "comparable": int, "holds": int})


# -- pages ----------------------------------------------------------------------------------------
def _text(value) -> str:
    """A value as text: empty for None and NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _cell(value) -> str:
    text = _text(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def item_label(item: str) -> str:
    """Readable name of a scorecard item: ``supp_table3`` -> ``Supplementary Table 3``."""
    m = re.fullmatch(r"(supp_)?(table|fig)(\d+)", item)
    if m:
        kind = "Table" if m.group(2) == "table" else "Fig."
        return f"{'Supplementary ' if m.group(1) else ''}{kind} {m.group(3)}"
    return {"cohort": "Results text", "calibration": "Calibration", "nri": "NRI (Results text)",
            **beyond_results.ITEM_LABELS}.get(item, item)


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


def _doc_link(doc: str, docs: Collection[str] | None, page_dir: str, label: str | None = None) -> str:
    """A ``{doc}`` link to a page of the book, or its name in italics when the book lacks the page."""
    if docs is not None and doc not in docs:
        return f"*{label or Path(doc).name.replace('_', ' ')}*"
    target = os.path.relpath(doc, page_dir).replace(os.sep, "/")
    return f"{{doc}}`{label} <{target}>`" if label else f"{{doc}}`{target}`"


def _fmt(value: float, spec: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def _is_comparable(w) -> bool:
    return w is not None and not (isinstance(w, float) and math.isnan(w))


def group_summary(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """``{group: (within, comparable)}`` of a :func:`scorecard` table, for every group of :data:`GROUPS`."""
    out = {}
    for group in GROUPS:
        w = [bool(x) for x in table.loc[table["group"] == group, "within"] if _is_comparable(x)]
        out[group] = (sum(w), len(w))
    return out


def seed_values(table: pd.DataFrame, groups: Sequence[str] = ("held_out", "fitted")) -> dict:
    """What one run gives for each row of ``groups``: the held-out check records it seed by seed.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`scorecard` table.
    groups : sequence of str
        Groups of :data:`GROUPS` whose rows are kept.

    Returns
    -------
    dict
        ``{"values": {key: book}, "missed": [key, ...]}``: the run's value of each row as the scorecard
        prints it, and the keys of the rows that miss (comparable, and not within the criterion), both
        in the table's order.
    """
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown scorecard groups {unknown}; allowed: {', '.join(GROUPS)}")
    kept = table[table["group"].isin(list(groups))]
    return {"values": {str(r.key): _text(r.book) for r in kept.itertuples()},
            "missed": [str(r.key) for r in kept.itertuples() if _is_comparable(r.within) and not r.within]}


#: How the page names each group in running text, with what agreement there means.
_GROUP_TEXT = {
    "held_out": ("held out", "results the synthetic generator was not fitted to: the test of its structure"),
    "fitted": ("fitted to", "results the generator's structural constants are fitted to: agreement by construction"),
    "margins": ("cohort margins", "the cohort numbers of Tables 1-2, which the cohort is calibrated to"),
}
#: What the page says where ``scorecard_notes`` records no reason for a row that misses.
NO_NOTE = "Not established: no cause is recorded for this row."
# The leading number of a printed value, and a value printed with its interval (publish.fmt.interval).
_LEADING_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")
_WITH_INTERVAL = re.compile(r"^\s*-?\d+(?:\.\d+)? \((-?\d+(?:\.\d+)?)(?:-| to )(-?\d+(?:\.\d+)?)\)")


def chance_note(paper: str, book: str, tolerance: float) -> str | None:
    """The reason for a miss that a row's own numbers give: the paper's value inside this run's interval.

    A row judged by a numeric tolerance (an AUC, a share) misses while the paper's value lies inside the
    confidence interval the run prints for its own estimate: the miss is within the run's sampling error.

    Parameters
    ----------
    paper, book : str
        The row's cells as printed (``0.59``; ``0.552 (0.500-0.604)``).
    tolerance : float
        The row's tolerance (NaN for a row judged otherwise: then there is no such note).

    Returns
    -------
    str or None
        One sentence, or None when the numbers do not give it.
    """
    m_paper, m_book = _LEADING_NUMBER.match(str(paper)), _WITH_INTERVAL.match(str(book))
    if m_paper is None or m_book is None or not math.isfinite(tolerance):
        return None
    value, low, high = float(m_paper.group(1)), float(m_book.group(1)), float(m_book.group(2))
    if not low <= value <= high:
        return None
    return (f"Within this run's sampling error: the paper's {m_paper.group(1)} lies inside this run's confidence "
            f"interval ({m_book.group(1)} to {m_book.group(2)}), which is wider than the criterion "
            f"(±{tolerance:.3g}); no other cause is recorded.")


def _within_cell(within, difference: float, tolerance: float) -> str:
    """The *Within* cell: ``yes``/``**no**`` (with the difference and its tolerance for a numeric
    criterion), ``not judged`` where the row cannot be compared."""
    if not _is_comparable(within):
        return "not judged"
    text = "yes" if within else "**no**"
    if math.isfinite(difference) and math.isfinite(tolerance):
        bound = "exact" if tolerance == 0 else f"±{tolerance:.3g}"
        text += f" ({_signed(difference)}; {bound})"
    return text


def _run_size(table: pd.DataFrame) -> int | None:
    """The run's number of patients, read off the ``table1/n`` row (None without it)."""
    row = table[table["key"] == "table1/n"]
    if row.empty or not math.isfinite(row.iloc[0]["difference"]):
        return None
    return int(round(manifest.paper_entry("cohort")["values"]["n"] + row.iloc[0]["difference"]))


def size_sentence(table: pd.DataFrame) -> str:
    """One sentence on the run's cohort size when it is not the paper's ('' when it is, or unknown)."""
    n, paper_n = _run_size(table), manifest.paper_entry("cohort")["values"]["n"]
    if n is None or n == paper_n:
        return ""
    return (f"This run analysed {n:,} patients, not the paper's {paper_n:,}: with fewer patients the models learn "
            "less (their AUCs fall with the training set, as chapter 8's learning curve shows) and the results vary "
            "more from one seed to another, so some rows miss for the run's size alone (the `paper` profile, "
            "`make book`, runs at the paper's size).")


def miss_lines(table: pd.DataFrame, notes: Mapping[str, str] | None = None) -> list[str]:
    """The rows of a :func:`scorecard` table that miss, one Markdown list item each, with why.

    Parameters
    ----------
    table : pandas.DataFrame
        The output of :func:`scorecard`.
    notes : mapping, optional
        ``{key: reason}``; default :func:`scorecard_notes`. A row without a note gives the reason its own
        numbers show (:func:`chance_note`: the paper's value inside the run's interval), else says that no
        cause is recorded (:data:`NO_NOTE`) rather than guess one.

    Returns
    -------
    list of str
        ``- **<what is compared>** (<item>, <group>): paper <value>; this book <value>. *Why:* <reason>``
    """
    notes = dict(notes) if notes is not None else scorecard_notes()
    lines = []
    for r in table[table["within"].map(lambda w: _is_comparable(w) and not w)].itertuples(index=False):
        group = _GROUP_TEXT.get(r.group, (r.group, ""))[0]
        # without a note, the row's own numbers may say why; else the key tells a maintainer where one would go
        reason = notes.get(r.key) or chance_note(r.paper, r.book, r.tolerance) or f"{NO_NOTE[:-1]} (`{r.key}`)."
        lines.append(f"- **{_cell(r.quantity)}** ({_cell(item_label(r.item))}, {group}): paper {_cell(r.paper)}; "
                     f"this book {_cell(r.book)}. *Why:* {_cell(reason)}")
    return lines


def scorecard_page(table: pd.DataFrame, docs: Collection[str] | None = None, page_dir: str = "book",
                   tolerances: Mapping | None = None, notes: Mapping[str, str] | None = None) -> str:
    """The "Replication scorecard" page (MyST Markdown) of a :func:`scorecard` table.

    The page leads with the count of rows that hold in each group (held out, fitted to, cohort
    margins) and the list of rows that miss, each with the reason ``scorecard_notes`` records (or the
    plain statement that none is recorded); then how a row is judged, and every row, one table per
    group. The tables have six columns so that they fit a 1280-pixel page: the criterion's numbers
    (difference and tolerance) sit in the *Within* cell.

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
        The tolerances the page states; default :func:`scorecard_tolerances`.
    notes : mapping, optional
        ``{key: reason}`` shown beside the rows that miss; default :func:`scorecard_notes`.

    Returns
    -------
    str
        The page's text.
    """
    tol = dict(tolerances) if tolerances is not None else scorecard_tolerances()
    count = "exactly" if tol["count"] == 0 else f"within {tol['count']:g}"
    parts = ["# Replication scorecard", ""]
    if table.empty:
        parts += ["Every headline number and comparison of the paper beside this run's value, generated from "
                  "the run's tables when the book is built. The run directory holds none of the tables the "
                  "scorecard reads.", ""]
        return "\n".join(parts)
    other = sorted(set(table["group"]) - set(GROUPS))
    if other:
        raise ValueError(f"scorecard rows of unknown groups {other}; known: {', '.join(GROUPS)}")
    summary = group_summary(table)
    counts = [f"**{summary[g][0]} of {summary[g][1]}** {_GROUP_TEXT[g][0]} ({_GROUP_TEXT[g][1]})"
              for g in ("held_out", "fitted", "margins")]
    # chapter 8's rows have no paper value: counted apart, listed last
    n_own = int((table["group"] == beyond_results.OWN_GROUP).sum())
    n_other = sum(not _is_comparable(w) for w, g in zip(table["within"], table["group"])
                  if g != beyond_results.OWN_GROUP)
    misses = miss_lines(table, notes)
    parts += [
        "Every headline number and comparison of the paper beside this run's value, generated from the run's "
        f"tables when the book is built. Of its {len(table)} rows, these hold: {'; '.join(counts)}."
        + (f" {n_other} row{'s' if n_other != 1 else ''} cannot be judged (*not judged* below)." if n_other else "")
        + (f" {n_own} further row{'s are' if n_own != 1 else ' is'} the book's own results (chapter 8), with no "
           "paper value to compare." if n_own else ""),
        "",
        "```{note}\nOn the default the patients are synthetic (chapter 0): agreement shows that the method and the "
        "generator carry the paper's findings, not that the findings hold in patients.\n```",
        "",
        "## What this run does not reproduce",
        "",
    ]
    size = size_sentence(table)
    if not misses:
        parts += ["Nothing: every row that can be judged holds." + (f" {size}" if size else ""), ""]
    else:
        parts += [f"{len(misses)} row{'s' if len(misses) != 1 else ''} miss. Each gives the reason recorded in "
                  "`scorecard_notes` (`data_manifest/paper_values.yaml`); where none is recorded, the page says "
                  "so." + (f" {size}" if size else ""), "", *misses, ""]
    parts += [
        "## How a row is judged",
        "",
        "*Held out* rows test the synthetic generator: it is not tuned to them. *Fitted to* rows are the few "
        "results its structural constants are fitted to (`generator_targets` in "
        f"`data_manifest/paper_values.yaml`; {_doc_link('book/generator_fit', docs, page_dir)}), so agreement "
        "there is by construction, as it "
        "is for the *cohort margins*, the numbers of Tables 1-2 and the Results text the cohort is calibrated to "
        "(chapter 0).",
        "",
        f"*Within* says whether a row meets its criterion: AUCs within {tol['auc']:g} of the paper's "
        f"({tol['subgroup_auc']:g} for the subgroup AUCs of Supplementary Fig. 3); hazard ratios and NRI components "
        f"inside the paper's 95% interval; shares within {tol['percent']:g} percentage points; the AI threshold "
        f"within {tol['threshold']:g}; cohort numbers within the tolerance of the calibration table; the cohort's "
        f"size {count}. A DeLong comparison holds when it is significant (p < {tol['p_value']:g}) in this run exactly "
        "where it is in the paper and, where the paper's is significant, the same model has the higher AUC. An "
        "*AUC order* row holds when this run ranks the two models as the paper's AUCs do (a tie in the paper gives "
        "no row). Beside a numeric criterion, *Within* gives this run's value minus the paper's and the "
        "tolerance; *not judged* marks a row that summarises rather than compares. The paper's AUC intervals "
        "are shown as printed but judge nothing: "
        + _doc_link("book/intervals", docs, page_dir, "why they are wider than the book's")
        + ".",
        "",
        "## All rows",
        "",
    ]
    header = ["Item", "Quantity", "Paper", "This book", "Within", "Chapter"]
    for group, heading in GROUPS.items():
        sub = table[table["group"] == group]
        if sub.empty:
            continue
        rows = [[_cell(item_label(r.item)), _cell(r.quantity), _cell(r.paper), _cell(r.book),
                 "no paper value" if group == beyond_results.OWN_GROUP
                 else _within_cell(r.within, r.difference, r.tolerance), _chapter_link(r.where, docs, page_dir)]
                for r in sub.itertuples(index=False)]
        # the theme's compact table style: six columns of wrapped text fit a 1280-pixel page
        parts += [f"### {heading}", "", "```{table}", ":class: table-sm small", "",
                  figures.pipe_table(header, rows), "```", ""]
    return "\n".join(parts)


def generator_fit_page(content: Mapping, table: pd.DataFrame | None = None,
                       fingerprint: str | None = None) -> str:
    """The "Fitting the synthetic generator" page (MyST Markdown) of ``data_manifest/generator.yaml``.

    Parameters
    ----------
    content : mapping
        The parsed ``generator.yaml``: ``constants``, and the ``fit`` and ``heldout`` records that
        ``ctac-book calibrate`` writes (either may be absent).
    table : pandas.DataFrame, optional
        This run's :func:`scorecard`, to show the fitted rows beside the fit's record and each held-out
        row's paper value and value in this run beside those of the other seeds.
    fingerprint : str, optional
        :func:`ctac_helpers.cohort.synth.generator_fingerprint` of the file's constants with today's
        generator; compared with the one the fit recorded.

    Returns
    -------
    str
        The page's text.
    """
    constants = content.get("constants") or {}
    fit = content.get("fit") or {}
    parts = [
        "# Fitting the synthetic generator",
        "",
        "The synthetic cohort's margins are fitted cell by cell to the paper's Tables 1 and 2 (chapter 0), and the "
        "fits recorded in `data_manifest/margins.yaml`, so that every machine draws the same cohort. "
        "Its *structure*, how strongly each hidden death component separates deaths from survivors, is set "
        "by a few constants fitted by `ctac-book calibrate` to a small, declared set of the paper's results "
        "(`generator_targets` in `data_manifest/paper_values.yaml`). Every other result of the paper is "
        "*held out*: the replication scorecard reports the two groups separately, and the held-out rows test "
        "whether the generator's structure is right. This page is generated from "
        "`data_manifest/generator.yaml` each time the book is built.",
        "",
        "## Constants",
        "",
    ]
    fitted_names = ("death_shift", "age_modulation", "ct_athero", "coupling_ct", "coupling_myocardial",
                    "ischemic_fraction")
    rows = []
    for name, value in constants.items():
        if isinstance(value, Mapping):
            text = ", ".join(f"{k} {float(v):.3f}" for k, v in value.items())
        else:
            text = f"{float(value):g}"
        rows.append([f"`{_cell(name)}`", _cell(text), "fitted" if name in fitted_names else "design assumption"])
    parts += [figures.pipe_table(["Constant", "Value", "How it was set"], rows), "",
              "`death_shift`: each death component's mean in patients who died (within-cell standard deviations): "
              "a CT-only burden (lungs, body composition, frailty), a coronary component (calcium, perfusion, "
              "ejection fraction, history), a myocardial component seen only by SPECT, and a clinical component "
              "(stress type, exercise capacity, comorbidities). `ischemic_fraction`: the mean reversible share of "
              "the stress perfusion deficit. The design assumptions are documented in "
              "`ctac_helpers.cohort.synth.GeneratorConstants`.", ""]
    if not fit:
        parts += ["The file holds no fit record: these constants were not written by `ctac-book calibrate`.", ""]
    else:
        parts += ["## The fit", "",
                  f"Method: {_cell(fit.get('method', ''))}. Cohort: {int(fit.get('n_patients', 0)):,} patients, "
                  f"seed {fit.get('seed', '')}. Proxy evaluations: {fit.get('proxy_evaluations', '')}; time: "
                  f"{float(fit.get('seconds', float('nan'))) / 60:.1f} minutes on the machine that ran it.", ""]
        n_rounds = len(fit.get("rounds") or [])
        if fit.get("kept_round") is not None and n_rounds > 1:
            parts += [f"Confirmations: {n_rounds}; round {int(fit['kept_round'])}, whose confirmed AUCs come nearest "
                      "the targets, is kept (its values are below"
                      + ("; round 0 is the starting point, confirmed before any proxy fit)." if any(
                          r.get("round") == 0 for r in fit.get("rounds") or []) else ")."), ""]
        recorded = fit.get("fingerprint")
        if not recorded:
            parts += ["```{warning}", "The fit record names no fingerprint of the generator it was made with (it "
                      "predates the record's `fingerprint`), so whether the generator has changed since cannot be "
                      "told from the file. The values under *Book's procedure* are those of the fit, not of this "
                      "build; this run's fitted rows are shown below. `ctac-book calibrate` writes a new record.",
                      "```", ""]
        elif fingerprint is not None and fingerprint != recorded:
            parts += ["```{warning}", "The generator has changed since this fit: with the same constants it now "
                      "produces other data than when they were fitted (its fingerprint differs). The values under "
                      "*Book's procedure* are those of the earlier generator; this run's fitted rows are shown "
                      "below. `ctac-book calibrate` refits the constants.", "```", ""]
        rows = []
        for t in fit.get("targets") or []:
            rows.append([f"`{_cell(t.get('key'))}`", _fmt(t.get("paper"), "g"), _fmt(t.get("proxy"), ".3f"),
                         _fmt(t.get("confirmed"), ".3f"), _cell(t.get("moved_by", ""))])
        parts += [figures.pipe_table(["Target", "Paper", "Proxy", "Book's procedure", "Moved by"], rows), "",
                  "*Proxy*: a penalised logistic regression cross-validated on the same features (fast, and "
                  "smooth in the constants); *Book's procedure*: chapter 5's XGBoost cross-validation on the "
                  "fitted cohort. Targets moved by the margins are listed for completeness: no structural "
                  "constant can change them.", ""]
        offsets = fit.get("offsets") or {}
        if offsets:
            parts += ["The proxy's distance from the book's procedure at the last confirmation (what a further "
                      "round would add to the proxy's targets; each round's own values are in `generator.yaml`): "
                      + ", ".join(f"`{_cell(k)}` {float(v):+.3f}" for k, v in offsets.items()) + ".", ""]
    if table is not None and not table.empty and "group" in table:
        fitted = table[table["group"] == "fitted"]
        if not fitted.empty:
            rows = [[f"`{_cell(r.key)}`", _cell(r.paper), _cell(r.book),
                     "" if r.within is None else ("yes" if r.within else "**no**")] for r in fitted.itertuples()]
            parts += ["## The fitted rows in this run", "",
                      figures.pipe_table(["Key", "Paper", "This run", "Within"], rows), ""]
    heldout = content.get("heldout") or {}
    parts += ["## The held-out rows on other seeds", ""]
    rows_h = heldout.get("rows") or []
    if not rows_h:
        parts += ["No held-out check is recorded for these constants (`ctac-book calibrate --heldout-only "
                  "--heldout-seeds 5` runs one, without fitting them again).", ""]
    else:
        seeds = heldout.get("seeds") or []
        held = [r for r in rows_h if r.get("group") == "held_out" and r.get("comparable")]
        rate = sum(r["holds"] for r in held) / max(1, sum(r["comparable"] for r in held))
        parts += [f"The book was run on {len(seeds)} other seed{'' if len(seeds) == 1 else 's'} "
                  f"({', '.join(map(str, seeds))}), fixed before any result was seen. The table below gives each "
                  "held-out row, its value in each run where the record keeps it, and in how many of those runs it "
                  "holds; on average "
                  f"**{rate:.0%}** of the held-out rows hold per run. Of the {len(held)} row{'' if len(held) == 1 else 's'}, "
                  f"{sum(r['holds'] == r['comparable'] for r in held)} hold in every run, "
                  f"{sum(r['holds'] == 0 for r in held)} in none and the others in some: a row that misses "
                  "in every run points at the generator's structure, one that holds in some at sampling.", ""]
        per_seed = [r for r in heldout.get("per_seed") or [] if r.get("seed") is not None]
        if per_seed:
            def share(pair):
                h, c = (int(x) for x in pair or (0, 0))
                return f"{h} of {c}" + (f" ({h / c:.0%})" if c else "")

            parts += ["Each seed on its own:", "",
                      figures.pipe_table(["Seed", "Held-out rows that hold", "Fitted rows that hold"],
                                         [[str(int(r["seed"])), share(r.get("held_out")), share(r.get("fitted"))]
                                          for r in per_seed]), ""]
            have = {int(r["seed"]) for r in per_seed}
            unrecorded = [str(x) for x in seeds if int(x) not in have]
            if unrecorded:
                parts += [f"Seed{'' if len(unrecorded) == 1 else 's'} {', '.join(unrecorded)} ran before each seed's "
                          "own counts were recorded: only the pooled counts (the rate above, the table below) include "
                          f"{'it' if len(unrecorded) == 1 else 'them'}.", ""]
        parts += _heldout_table(held, per_seed, table)
    parts += _spread_section(content.get("spread") or {}, fingerprint, fit)
    return "\n".join(parts)


# A comparison's value as the scorecard prints it: "significant (p = 0.019), AUC 0.796 vs 0.791".
_SIGNIFICANCE = re.compile(r"^\s*(?:not )?significant \((p\s*(?:<=|>=|<|>|=|≤|≥)\s*[^)]*)\)")


def _short(book: str) -> str:
    """A value as the held-out table shows it: a comparison's p-value, the estimate of a value printed
    with its interval, any other value whole."""
    text = book or ""
    m = _SIGNIFICANCE.match(text)
    if m:
        return m.group(1)
    return _LEADING_NUMBER.match(text).group(1) if _WITH_INTERVAL.match(text) else text


def _heldout_table(held: list[Mapping], per_seed: list[Mapping], table: pd.DataFrame | None) -> list[str]:
    """The held-out rows of the record: the paper's value, this run's and each seed's, and how often each holds."""
    valued = [r for r in per_seed if isinstance(r.get("values"), Mapping)]
    this = {} if table is None or table.empty or "key" not in table else {r.key: r for r in table.itertuples()}
    head = ["Held-out row"] + (["Paper", "This run"] if this else []) + [str(int(r["seed"])) for r in valued]
    rows = []
    for h in held:
        key = h.get("key")
        row = [f"`{_cell(key)}`"]
        if this:
            r = this.get(key)
            mark = r is not None and _is_comparable(r.within) and not r.within
            row += [_cell(r.paper) if r is not None else "",
                    _bold(_cell(_short(r.book)), mark) if r is not None else "not in this run"]
        for seed in valued:
            value = seed["values"].get(key)
            row.append("" if value is None else _bold(_cell(_short(str(value))), key in (seed.get("missed") or ())))
        rows.append(row + [f"{int(h.get('holds', 0))} of {int(h.get('comparable', 0))}"])
    parts = [figures.pipe_table(head + ["Holds in"], rows), ""]
    if valued:
        parts += ["*This run*: the run this book shows; one column per seed of the check. A value in **bold** misses "
                  "the row's criterion (the scorecard page gives each criterion); a comparison shows its p-value and a "
                  "value printed with its interval the estimate alone.", ""]
        unvalued = [str(int(r["seed"])) for r in per_seed if not isinstance(r.get("values"), Mapping)]
        if unvalued:
            parts += [f"Seed{'' if len(unvalued) == 1 else 's'} {', '.join(unvalued)} ran before each row's value was "
                      "recorded seed by seed: its counts are in the last column only.", ""]
    return parts


def _bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold and text else text


def _mean_sd(values: Iterable) -> tuple[float, float]:
    """Mean and sample standard deviation of the numbers given (``None`` left out; NaN where undefined)."""
    v = [float(x) for x in values if x is not None]
    return (statistics.fmean(v) if v else math.nan, statistics.stdev(v) if len(v) > 1 else math.nan)


def _spread_section(spread: Mapping, fingerprint: str | None, fit: Mapping) -> list[str]:
    """The generator fit page's section on ``spread`` (``ctac-book calibrate --spread-seeds``)."""
    parts = ["## What the structure gives, seed by seed", ""]
    rows_s = spread.get("rows") or []
    if not rows_s:
        return parts + ["No spread is recorded for these constants (`ctac-book calibrate --no-fit --spread-seeds 11` "
                        "records one on twelve seeds, in seconds a seed).", ""]
    seeds = spread.get("seeds") or []
    others = f" and {', '.join(map(str, seeds[1:]))}" if len(seeds) > 1 else ""
    parts += [f"Some held-out rows can be judged without the book's models. On the cohorts of {len(seeds)} "
              f"seed{'' if len(seeds) == 1 else 's'} ({seeds[0]}{others}; "
              f"{int(spread.get('n_patients', 0)):,} patients each), drawn with these constants, "
              "`ctac_helpers.pipeline.calibrate.structure_spread` computes them directly. Their mean and spread "
              "over seeds tell a row that the generator's structure cannot reach from one that sampling moves.", ""]
    if fingerprint is not None and spread.get("fingerprint") not in (None, fingerprint):
        parts += ["```{warning}", "The generator has changed since this spread was recorded (its fingerprint "
                  "differs): the values below are those of the earlier generator.", "```", ""]
    everyone = next((r for r in rows_s if r.get("key") == "signal/all"), {})
    overall_values, paper_all = everyone.get("values") or [], everyone.get("paper")
    signal, direct = [], []
    for r in rows_s:
        key, values, paper = str(r.get("key")), r.get("values") or [], r.get("paper")
        mean, sd = _mean_sd(values)
        shown = f"{mean:.3f} ({_fmt(sd, '.3f')})"
        if key.startswith("signal/"):
            gaps = [v - a for v, a in zip(values, overall_values) if v is not None and a is not None]
            g_mean, g_sd = _mean_sd(gaps)
            paper_gap = "" if paper is None or paper_all is None or key == "signal/all" else f"{paper - paper_all:+.2f}"
            signal.append([f"`{_cell(key)}`", _fmt(paper, "g"), paper_gap, shown,
                           "" if key == "signal/all" else f"{g_mean:+.3f} ({_fmt(g_sd, '.3f')})"])
        else:
            lo = min(v for v in values if v is not None)
            hi = max(v for v in values if v is not None)
            direct.append([f"`{_cell(key)}`", _fmt(paper, "g"), shown, f"{lo:.3f}-{hi:.3f}"])
    if signal:
        parts += ["The latent death signal (`synth.death_signal`: the best linear separation of deaths that the "
                  "hidden death components and age allow) is what a model would reach if it saw those components "
                  "themselves; the book's models see them only through noisy measurements and reach less. The "
                  "paper prints its All model's AUC, so the comparison is of the *gap* to all patients: a subgroup "
                  "where the paper's model does worse than in all patients should be one where the signal is "
                  f"weaker too. The signal's AUC in all patients is {_mean_sd(overall_values)[0]:.3f} on average.", "",
                  figures.pipe_table(["Subgroup", "Paper (All model)", "Paper: gap to all patients",
                                      "Signal: mean (SD)", "Signal: gap to all patients"], signal), ""]
    if direct:
        eat = next((t for t in fit.get("targets") or [] if t.get("key") == "supp_table3/auc/eat"), {})
        at_fit = (f" (at the fit, {eat['proxy']:.3f} for the proxy and {eat['confirmed']:.3f} for the book's XGBoost "
                  "in all patients)") if eat.get("proxy") is not None and eat.get("confirmed") is not None else ""
        parts += ["The perfusion model is stress TPD alone, so its AUC in each subset follows from the cohort; the "
                  "EAT model's is shown by its proxy, a penalised logistic regression on EAT volume and density"
                  f"{at_fit}.", "",
                  figures.pipe_table(["Quantity", "Paper", "Generator: mean (SD)", "Range over seeds"], direct), ""]
    return parts


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
    parts += [figures.pipe_table(["Stage", "Status", "Started", "Duration (s)", "Code hash"], rows), "",
              "*Code hash*: the first 12 characters of the hash of the code a stage ran with; stages run with "
              "different code show different hashes (the hash the latest `ctac-book run` recorded is under "
              "Hashes).", ""]
    packages = run_json.get("packages") or {}
    if packages:
        versions = [[_cell(k), f"`{_cell(v)}`"] for k, v in packages.items()]
        parts += ["## Package versions", "", figures.pipe_table(["Package", "Version"], versions), ""]
    if params:
        parts += ["## Parameters", "", "```yaml", yaml.safe_dump(dict(params), sort_keys=False).rstrip(), "```", ""]
    parts += ["## Hashes", ""]
    if run_json.get("code_hash"):
        parts += [f"Code hash (the `ctac_helpers` package and `data_manifest/`): `{run_json['code_hash']}`",
                  ""]
    outputs = [[_cell(n), f"`{_cell(path)}`", f"`{_cell(digest)}`"]
               for n in names for path, digest in sorted(((recorded.get(n) or {}).get("outputs") or {}).items())]
    if outputs:
        parts += [figures.pipe_table(["Stage", "Output", "SHA-256"], outputs), ""]
    else:
        parts += ["No stage has recorded outputs.", ""]
    return "\n".join(parts)
