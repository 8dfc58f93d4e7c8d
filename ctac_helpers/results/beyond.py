"""Chapter 8's headline numbers as scorecard rows: the book's own results, with no paper value to compare.

:func:`own_rows` reads the tables chapter 8 writes (``tables/<id>.csv`` of a run directory) and returns
rows in the scorecard's columns (:data:`ctac_helpers.publish.scorecard.COLUMNS`), in the group ``own``; the
scorecard lists them after the paper's numbers. A table the run does not hold gives no rows.

Row keys (:func:`own_keys`): ``own/calibration/miscalibrated``, ``own/calibration/slope/<model>``,
``own/calibration/ici/<model>``, ``own/decision/ai_class``, ``own/decision/useful/all``,
``own/stability/order``, ``own/stability/auc_range``, ``own/stability/comparisons`` and
``own/learning/<model>`` (``<model>`` an XGBoost model of :data:`ctac_helpers.models.cv.FEATURE_SETS`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from ctac_helpers.models.cv import FEATURE_SETS, model_names
from ctac_helpers.core.stages import get_stage

logger = logging.getLogger(__name__)

__all__ = ["ITEM_LABELS", "OWN_GROUP", "own_keys", "own_rows"]

OWN_GROUP = "own"
#: Readable names of chapter 8's tables and figures, as the scorecard's *Item* column shows them.
ITEM_LABELS = {
    "calibration_metrics": "Calibration measures (book table)",
    "calibration_curves": "Calibration curves (book figure)",
    "decision_summary": "Net benefit (book table)",
    "decision_curves": "Decision curves (book figure)",
    "stability": "Stability (book figure)",
    "stability_auc": "Stability of the AUCs (book table)",
    "stability_differences": "Stability of the comparisons (book table)",
    "learning_curve": "Learning curve (book figure)",
}
_CHAPTER = f"notebooks/{Path(get_stage('beyond').notebook).stem}"
_NO_PAPER = "not reported in the paper"


def own_keys() -> list[str]:
    """Every key :func:`own_rows` can give."""
    xgb = model_names("xgboost")
    return (["own/calibration/miscalibrated"] + [f"own/calibration/slope/{m}" for m in xgb]
            + [f"own/calibration/ici/{m}" for m in xgb] + ["own/decision/ai_class", "own/decision/useful/all",
                                                          "own/stability/order", "own/stability/auc_range",
                                                          "own/stability/comparisons"]
            + [f"own/learning/{m}" for m in xgb])


def _row(key: str, item: str, quantity: str, book: str) -> dict:
    return {"key": key, "group": OWN_GROUP, "item": item, "quantity": quantity, "paper": _NO_PAPER, "book": book,
            "difference": math.nan, "tolerance": math.nan, "criterion": "no paper value", "within": None,
            "where": _CHAPTER}


def _read(run_dir: Path, table_id: str) -> pd.DataFrame | None:
    path = run_dir / "tables" / f"{table_id}.csv"
    return pd.read_csv(path) if path.is_file() else None


def _label(model: str) -> str:
    return FEATURE_SETS[model]["label"] if model in FEATURE_SETS else model


def _calibration_rows(run_dir: Path) -> list[dict]:
    t = _read(run_dir, "calibration_metrics")
    if t is None:
        return []
    raw = t[t["version"] == "fold models"].set_index("model")
    rec = t[t["version"] == "recalibrated"].set_index("model")
    rows = [_row("own/calibration/miscalibrated", "calibration_metrics",
                 "Fold models whose calibration slope excludes 1 or calibration-in-the-large excludes 0 (95% CI)",
                 f"{int(raw['miscalibrated'].astype(bool).sum())} of {len(raw)}")]
    for m in [m for m in model_names("xgboost") if m in raw.index and m in rec.index]:
        r, c = raw.loc[m], rec.loc[m]
        rows.append(_row(f"own/calibration/slope/{m}", "calibration_metrics",
                         f"Calibration slope, {_label(m)}: fold models -> recalibrated",
                         f"{r['slope']:.2f} ({r['slope_low']:.2f} to {r['slope_high']:.2f}) -> "
                         f"{c['slope']:.2f} ({c['slope_low']:.2f} to {c['slope_high']:.2f})"))
    for m in [m for m in model_names("xgboost") if m in raw.index and m in rec.index]:
        rows.append(_row(f"own/calibration/ici/{m}", "calibration_curves",
                         f"Integrated calibration index, {_label(m)}: fold models -> recalibrated",
                         f"{raw.loc[m, 'ici']:.3f} -> {rec.loc[m, 'ici']:.3f}"))
    return rows


def _decision_rows(run_dir: Path) -> list[dict]:
    rows = []
    s = _read(run_dir, "decision_summary")
    if s is not None:
        at = s[s["at_ai_threshold"].astype(bool)]
        cls = at[at["strategy"] == "ai_class"]
        everybody = at[at["strategy"] == "treat all"]
        if len(cls) and len(everybody):
            rows.append(_row("own/decision/ai_class", "decision_summary",
                             f"Net benefit per 100 patients at chapter 7's threshold ({cls['threshold'].iloc[0]:.3f}): "
                             "AI high-risk class vs treating all",
                             f"{100 * cls['net_benefit'].iloc[0]:.2f} vs {100 * everybody['net_benefit'].iloc[0]:.2f}"))
    c = _read(run_dir, "decision_curves")
    if c is not None:
        rec = c[c["risks"] == "recalibrated"].pivot(index="threshold", columns="strategy", values="net_benefit")
        if "all" in rec:
            above = rec.index[(rec["all"] > rec[["treat all", "treat none"]].max(axis=1) + 1e-12).to_numpy()]
            span = f"{len(above)} of {len(rec)}" + (f" ({above.min():.3f} to {above.max():.3f})" if len(above) else "")
            rows.append(_row("own/decision/useful/all", "decision_curves",
                             "Thresholds at which the recalibrated All model's net benefit beats treating all and none",
                             span))
    return rows


def _stability_rows(run_dir: Path) -> list[dict]:
    rows = []
    auc = _read(run_dir, "stability_auc")
    per_repeat = _read(run_dir, "stability")
    if auc is not None and per_repeat is not None:
        order = list(auc.sort_values("auc_ch5", ascending=False, kind="stable")["model"])
        wide = per_repeat.pivot(index="seed", columns="model", values="auc")
        same = sum(list(r[order].sort_values(ascending=False, kind="stable").index) == order
                   for _, r in wide.iterrows())
        rows.append(_row("own/stability/order", "stability",
                         "Repeats of the cross-validation ranking every model as chapter 5",
                         f"{same} of {len(wide)}"))
    if auc is not None:
        ranges = (auc["max"] - auc["min"]).set_axis(auc["model"])
        widest = ranges.idxmax()
        rows.append(_row("own/stability/auc_range", "stability_auc",
                         "Largest range of a model's AUC across the repeats",
                         f"{ranges[widest]:.3f} ({_label(widest)}, {int(auc['repeats'].max())} repeats)"))
    diff = _read(run_dir, "stability_differences")
    if diff is not None:
        kept = int((diff["same_sign"] == diff["repeats"]).sum())
        rows.append(_row("own/stability/comparisons", "stability_differences",
                         "Comparisons whose AUC difference keeps chapter 5's sign in every repeat",
                         f"{kept} of {len(diff)}"))
    return rows


def _learning_rows(run_dir: Path) -> list[dict]:
    t = _read(run_dir, "learning_curve")
    if t is None:
        return []
    rows = []
    for m in [m for m in model_names("xgboost") if m in set(t["model"])]:
        g = t[t["model"] == m].sort_values("n_train")
        lo, hi = g.iloc[0], g.iloc[-1]
        rows.append(_row(f"own/learning/{m}", "learning_curve",
                         f"AUC of {_label(m)}, smallest training share -> all of the training part",
                         f"{lo['auc']:.3f} ({lo['n_train']:,.0f} patients) -> {hi['auc']:.3f} ({hi['n_train']:,.0f})"))
    return rows


def own_rows(run_dir) -> list[dict]:
    """Chapter 8's headline numbers of ``run_dir`` as scorecard rows (group ``own``; none without its tables)."""
    run_dir = Path(run_dir)
    rows = []
    for part in (_calibration_rows, _decision_rows, _stability_rows, _learning_rows):
        try:
            rows += part(run_dir)
        except KeyError as exc:  # a table of another layout (an older run): leave the rows out, say so
            logger.warning("scorecard: chapter 8's %s rows skipped, a table lacks the column %s",
                           part.__name__.strip("_").removesuffix("_rows"), exc)
    return rows
