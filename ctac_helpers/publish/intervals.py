"""The widths of the run's confidence intervals beside the paper's: why the book's AUC intervals are narrower.

The paper prints 95% intervals for the AUCs of Supplementary Table 3, the adjusted hazard ratios of
Supplementary Fig. 4 and the NRI components; its Methods say that confidence intervals are percentile
bootstrap intervals. The book's AUC intervals (chapter 5) are stratified percentile bootstrap intervals
of the AUC of the pooled out-of-fold scores of all patients (:func:`ctac_helpers.results.discrimination.auc_table`).

:func:`interval_widths` sets each interval the paper prints beside the run's and compares their widths
at the same cohort size: an interval's width shrinks with the square root of the number of patients
(at a fixed share of deaths), so the run's width is scaled by ``sqrt(n_run / n_paper)`` before the
ratio is taken. Widths are upper minus lower bound, on the log scale for hazard ratios. Where the run
holds its out-of-fold scores, each AUC's DeLong interval (:func:`ctac_helpers.stats.delong.auc_ci_delong`) is
computed beside the bootstrap's as a check that the bootstrap gives the sampling width of an AUC on the
whole cohort. :func:`intervals_page` renders the book's page; ``ctac-book build`` writes it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from ctac_helpers.stats import delong
from ctac_helpers.core import manifest
from ctac_helpers.publish import fmt
from ctac_helpers.publish.figures import pipe_table

logger = logging.getLogger(__name__)

COLUMNS = ["kind", "key", "label", "paper", "book", "paper_width", "book_width", "book_width_at_paper_size",
           "ratio", "delong_width"]
#: Interval kinds, in the page's order.
KINDS = ("AUC", "hazard ratio", "NRI")
_AUC_LABELS = {"all": "All", "ai_hybrid": "AI hybrid", "ai_ctac": "AI CTAC", "ai_spect": "AI SPECT",
               "cac": "Coronary calcium", "perfusion": "Perfusion", "eat": "EAT"}
_HR_LABELS = {"abnormal_perfusion": "abnormal perfusion", "cac_gt400": "CAC > 400"}
#: The ratio of two widths "about" a reference: within this factor of it.
_ABOUT = 1.3


def _read(run_dir: Path, table_id: str) -> pd.DataFrame | None:
    path = run_dir / "tables" / f"{table_id}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _finite(*values) -> bool:
    return all(v is not None and isinstance(v, (int, float)) and math.isfinite(float(v)) for v in values)


def _width(low: float, high: float, log: bool) -> float:
    if not _finite(low, high) or (log and (low <= 0 or high <= 0)):
        return math.nan
    return math.log(high / low) if log else float(high) - float(low)


def _ci_text(estimate: float, low: float, high: float, spec: str) -> str:
    return f"{format(estimate, spec)} ({format(low, spec)} to {format(high, spec)})"


def _delong_widths(run_dir: Path) -> dict[str, float]:
    """DeLong interval width of each model's AUC from the run's out-of-fold scores ({} without them)."""
    preds, cohort = run_dir / "artifacts" / "predictions.parquet", run_dir / "artifacts" / "cohort.parquet"
    if not (preds.is_file() and cohort.is_file()):
        return {}
    scores = pd.read_parquet(preds, columns=["patient_id", "model", "score"])
    deaths = pd.read_parquet(cohort, columns=["patient_id", "death"])
    out = {}
    for model, g in scores.merge(deaths, on="patient_id").groupby("model", sort=False):
        ci = delong.auc_ci_delong(g["death"].to_numpy().astype(int), g["score"].to_numpy(float))
        out[str(model)] = ci.ci_high - ci.ci_low
    return out


def interval_widths(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Each 95% interval the paper prints beside the run's, with their widths at the paper's cohort size.

    Parameters
    ----------
    run_dir : path-like
        A run directory; ``tables/supp_table3.csv``, ``supp_fig4.csv`` and ``nri.csv`` are read, and
        ``artifacts/predictions.parquet`` with ``cohort.parquet`` for the DeLong widths. Absent files
        give no rows (or no DeLong widths).

    Returns
    -------
    pandas.DataFrame
        One row per interval (:data:`COLUMNS`): ``kind`` (:data:`KINDS`), ``key`` (model, covariate or
        NRI component), ``label``, ``paper`` and ``book`` (estimate and interval as text), the two
        widths (log scale for hazard ratios), ``book_width_at_paper_size`` (the run's width times
        ``sqrt(n_run / n_paper)``), ``ratio`` (the paper's width over that) and ``delong_width`` (AUC
        rows with the run's scores; NaN otherwise).
    """
    run_dir = Path(run_dir)
    cohort = manifest.paper_entry("cohort")["values"]
    t3, hr, nri = _read(run_dir, "supp_table3"), _read(run_dir, "supp_fig4"), _read(run_dir, "nri")
    n_run = next((float(t["n"].iloc[0]) for t in (t3, hr) if t is not None and "n" in t and len(t)), math.nan)
    scale = math.sqrt(n_run / cohort["n"]) if math.isfinite(n_run) and n_run > 0 else math.nan
    rows = []

    def add(kind, key, label, paper, book, spec, log, number):
        p_est, p_lo, p_hi = (float(x) if x is not None else math.nan for x in paper)
        b_est, b_lo, b_hi = book
        if not _finite(p_lo, p_hi, b_lo, b_hi):
            return
        pw, bw = _width(p_lo, p_hi, log), _width(b_lo, b_hi, log)
        at_paper = bw * scale
        rows.append({"kind": kind, "key": key, "label": label, "paper": _ci_text(p_est, p_lo, p_hi, spec),
                     # the paper's as it prints them, the book's by the book's rounding rule (ctac_helpers.publish.fmt)
                     "book": _ci_text(b_est, b_lo, b_hi, f".{fmt.DECIMALS[number]}f"),
                     "paper_width": pw, "book_width": bw,
                     "book_width_at_paper_size": at_paper,
                     "ratio": pw / at_paper if at_paper > 0 else math.nan, "delong_width": math.nan})

    if t3 is not None:
        paper_auc = manifest.paper_entry("supp_table3").get("auc") or {}
        for r in t3.itertuples(index=False):
            printed = paper_auc.get(r.model)
            if isinstance(printed, (list, tuple)) and len(printed) == 3:
                add("AUC", r.model, f"AUC, {_AUC_LABELS.get(r.model, r.model)}", printed,
                    (r.auc, r.ci_low, r.ci_high), ".2f", False, "auc")
        widths = _delong_widths(run_dir)
        for row in rows:
            row["delong_width"] = widths.get(row["key"], math.nan)
    if hr is not None:
        paper_hr = manifest.paper_entry("supp_fig4").get("hr") or {}
        for r in hr.itertuples(index=False):
            if r.covariate in paper_hr:
                add("hazard ratio", r.covariate, f"Adjusted HR, {_HR_LABELS.get(r.covariate, r.covariate)}",
                    paper_hr[r.covariate], (r.hr, r.ci_low, r.ci_high), ".2f", True, "hr")
    if nri is not None:
        paper_nri = manifest.paper_entry("nri").get("values") or {}
        for r in nri.itertuples(index=False):
            component = str(r.component).removeprefix("nri_")
            if component in paper_nri:
                add("NRI", component, f"NRI at 2 years, {component.replace('nonevents', 'non-events')} (%)",
                    paper_nri[component], (r.estimate_pct, r.ci_low_pct, r.ci_high_pct), ".1f", False, "percent")
    out = pd.DataFrame.from_records(rows, columns=COLUMNS)
    logger.info("interval widths of %s: %d intervals", run_dir, len(out))
    return out


def _range_text(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    lo, hi, med = float(v.min()), float(v.max()), float(v.median())
    return f"{med:.1f}" if len(v) == 1 else f"{lo:.1f} to {hi:.1f} (median {med:.1f})"


def width_summary(widths: pd.DataFrame, folds: int) -> str:
    """The finding in words: how much wider the paper's intervals are, by kind, and what that matches.

    Parameters
    ----------
    widths : pandas.DataFrame
        The output of :func:`interval_widths`.
    folds : int
        The paper's number of cross-validation folds; ``sqrt(folds)`` is how much wider an interval on
        one test fold is than on the whole cohort.

    Returns
    -------
    str
        Markdown sentences; every number is computed from ``widths``.
    """
    if widths.empty:
        return "This run holds none of the intervals the paper prints, so their widths cannot be compared."
    auc, other = widths[widths["kind"] == "AUC"], widths[widths["kind"] != "AUC"]
    fold_ratio = math.sqrt(folds)
    parts = []
    if len(auc) and auc["ratio"].notna().any():
        med = float(auc["ratio"].median())
        parts.append(f"At the paper's cohort size, the paper's AUC intervals are {_range_text(auc['ratio'])} times "
                     "as wide as this run's.")
        if med / _ABOUT <= fold_ratio <= med * _ABOUT:
            parts.append(f"That is close to √{folds} = {fold_ratio:.1f}: an AUC measured on one of the {folds} test "
                         "folds of the cross-validation (a tenth of the patients) has an interval that much wider "
                         "than an AUC measured on all of them. The paper's AUC intervals have the width they would "
                         "have if its bootstrap resampled the patients of one fold, or averaged the folds' "
                         "intervals, instead of resampling the pooled scores of all patients as the book does.")
        else:
            parts.append(f"That is not close to √{folds} = {fold_ratio:.1f}, the factor of an interval measured "
                         f"on one of {folds} test folds instead of on all patients: on this run that explanation "
                         "does not account for the difference.")
    if len(other) and other["ratio"].notna().any():
        med = float(other["ratio"].median())
        about_one = 1 / _ABOUT <= med <= _ABOUT
        parts.append(f"The paper's hazard ratio and NRI intervals are {_range_text(other['ratio'])} times as wide "
                     "as this run's" + (": about the width its whole cohort implies." if about_one else "."))
    with_delong = auc.dropna(subset=["delong_width"])
    if len(with_delong):
        ratio = with_delong["book_width"] / with_delong["delong_width"]
        parts.append(f"This run's bootstrap AUC intervals are {_range_text(ratio)} times as wide as DeLong's "
                     "intervals on the same scores: both measure the sampling of patients for an AUC on the "
                     "whole cohort.")
    return " ".join(parts)


def intervals_page(widths: pd.DataFrame, docs: Collection[str] | None = None, page_dir: str = "book") -> str:
    """The page "Why the book's AUC intervals are narrower than the paper's" (MyST Markdown).

    Parameters
    ----------
    widths : pandas.DataFrame
        The output of :func:`interval_widths`.
    docs : collection of str, optional
        Documents of the book; chapter 5 is linked only when among them. Default: link it.
    page_dir : str
        Folder of the page in the book's source tree.

    Returns
    -------
    str
        The page's text.
    """
    folds = int(manifest.paper_entry("methods")["values"]["cv_folds"])
    chapter5 = "notebooks/05_models"
    ch5 = ("Chapter 5" if docs is not None and chapter5 not in docs
           else f"{{doc}}`Chapter 5 <{os.path.relpath(chapter5, page_dir).replace(os.sep, '/')}>`")
    n = manifest.paper_entry("cohort")["values"]
    parts = [
        "# Why the book's AUC intervals are narrower than the paper's",
        "",
        width_summary(widths, folds),
        "",
        "## How the book computes an AUC interval",
        "",
        f"{ch5} scores every patient once, with a model that did not "
        f"see them (cross-validation), pools the test folds' scores, and resamples the patients with "
        "replacement, deaths and survivors separately (a stratified bootstrap, `ctac_helpers.stats.bootstrap`): the "
        "interval runs from the 2.5th to the 97.5th percentile of the resamples' AUCs. It describes how much "
        "the AUC of the whole cohort would vary with another sample of patients drawn the same way, and nothing "
        "else: the synthetic cohort has no differences between sites or scanners beyond those the generator "
        "puts in (chapter 0).",
        "",
        "## What the paper says",
        "",
        "The paper's Methods say that its confidence intervals were computed by the percentile bootstrap, the "
        f"book's method, on {n['n']:,} patients with {n['deaths']:,} deaths and {folds}-fold cross-validation; "
        "they do not say what was resampled. Whatever the reason the ratios above point to, it is a reading of "
        "the paper's numbers, not something the paper states.",
        "",
        "The scorecard never judges an AUC by the paper's interval: it compares the AUCs themselves with a fixed "
        "tolerance.",
        "",
        "## The intervals",
        "",
        "Widths are upper minus lower bound (for hazard ratios, of their logarithms). *Ratio*: the paper's width "
        "over this run's, after scaling this run's to the paper's cohort size (times the square root of the "
        "ratio of the cohort sizes; intervals narrow with the square root of the number of patients).",
        "",
    ]
    if widths.empty:
        parts += ["This run holds none of these intervals.", ""]
        return "\n".join(parts)
    rows = [[r.label, r.paper, r.book, f"{r.ratio:.1f}" if math.isfinite(r.ratio) else ""]
            for r in widths.itertuples(index=False)]
    parts += [pipe_table(["Interval", "Paper", "This run", "Ratio"], rows), ""]
    return "\n".join(parts)

