"""Figures of chapter 8 (beyond the paper): calibration, decision curves, stability and learning curves.

In the book's style (:func:`ctac_helpers.publish.plots.set_style`, Okabe & Ito colours). Each function takes
tidy tables computed by :mod:`ctac_helpers.stats.calibration`, :mod:`ctac_helpers.stats.decision` and
:mod:`ctac_helpers.models.stability` and returns a matplotlib figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ctac_helpers.publish.plots import OKABE_ITO, PAGE_WIDTH

__all__ = ["calibration_panels", "decision_panels", "learning_curve", "stability_panels"]

_RAW, _RECAL = OKABE_ITO[0], OKABE_ITO[3]


def calibration_panels(panels: Sequence[Mapping], title: str, ncols: int = 2):
    """One panel per model: binned and smoothed calibration of its risks, before and after recalibration.

    Parameters
    ----------
    panels : sequence of mappings
        Each with ``label`` (the model), ``binned`` (:func:`~ctac_helpers.stats.calibration.binned_calibration`
        of the fold models' risks), ``smooth`` and ``recalibrated`` (the curves of
        :func:`~ctac_helpers.stats.calibration.smoothed_calibration`, before and after recalibration) and
        ``note`` (text in the panel's corner, e.g. the slopes).
    title : str
        The figure's title.
    ncols : int
        Panels per row.
    """
    n = len(panels)
    nrows = math.ceil(n / ncols)
    # the page's width at most, so that 9-point text stays 9 points where the page shows it
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, 3.3 * nrows + 0.8), squeeze=False)
    top = 0.0
    for p in panels:
        for key in ("smooth", "recalibrated"):
            top = max(top, float(np.nanmax(p[key][["risk", "ci_high"]].to_numpy())))
        top = max(top, float(p["binned"][["mean_risk", "ci_high"]].to_numpy().max()))
    top = min(1.0, top * 1.05)
    for ax, p in zip(axes.flat, panels):
        ax.plot([0, top], [0, top], color="0.6", lw=0.8, ls=":", label="perfect calibration")
        for key, colour, name in (("smooth", _RAW, "fold models"), ("recalibrated", _RECAL, "recalibrated")):
            c = p[key]
            ax.fill_between(c["risk"], c["ci_low"], c["ci_high"], color=colour, alpha=0.15, lw=0)
            ax.plot(c["risk"], c["observed"], color=colour, lw=1.6, label=f"{name} (lowess, band)")
        b = p["binned"]
        # a Wilson bound of 0 deaths can sit a rounding error above the observed 0
        yerr = np.clip([b["observed"] - b["ci_low"], b["ci_high"] - b["observed"]], 0, None)
        ax.errorbar(b["mean_risk"], b["observed"], yerr=yerr,
                    fmt="o", ms=3.5, color=_RAW, ecolor=_RAW, elinewidth=0.8, capsize=2,
                    label="fold models (tenths of risk)")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(p["label"], fontsize=10)
        ax.text(0.03, 0.97, p.get("note", ""), transform=ax.transAxes, va="top", fontsize=9)
        ax.set_xlabel("predicted risk")
        ax.set_ylabel("observed death rate")
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    return fig


def decision_panels(panels: Sequence[Mapping], title: str):
    """Decision curves, one panel above the other.

    Parameters
    ----------
    panels : sequence of mappings
        Each with ``curves`` (:func:`~ctac_helpers.stats.decision.decision_curve`), ``labels`` (display name of
        each strategy; strategies without one are not drawn), ``title``, optionally ``dotted`` (the strategy
        drawn dotted) and ``marker``: a mapping with ``at`` (a threshold to mark) and ``label``.
    title : str
        The figure's title.
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(PAGE_WIDTH, 4.4 * len(panels)), squeeze=False, sharex=True)
    styles = {"treat all": dict(color="0.35", ls="--", lw=1.2), "treat none": dict(color="0.0", ls="-", lw=0.9)}
    colours = iter(OKABE_ITO)
    colour_of: dict[str, str] = {}
    top, bottom = 0.0, 0.0
    for p in panels:
        curves = p["curves"]
        drawn = curves[curves["strategy"].isin(list(p["labels"]))]
        top = max(top, float(drawn["net_benefit"].max()))
        bottom = min(bottom, float(drawn.loc[~drawn["strategy"].isin(list(styles)), "net_benefit"].min()))
    span = top - min(bottom, 0.0)
    for ax, p in zip(axes.flat, panels):
        for strategy, label in p["labels"].items():
            c = p["curves"][p["curves"]["strategy"] == strategy]
            if c.empty:
                continue
            if strategy in styles:
                style = styles[strategy]
            else:
                if strategy not in colour_of:
                    colour_of[strategy] = next(colours)
                style = dict(color=colour_of[strategy], lw=1.6, ls=":" if p.get("dotted") == strategy else "-")
            ax.plot(c["threshold"], c["net_benefit"], label=label, **style)
        marker = p.get("marker")
        if marker:
            ax.axvline(marker["at"], color=OKABE_ITO[4], lw=1.2, ls="-.", label=marker["label"])
        ax.set_ylim(min(bottom, 0.0) - 0.1 * span, top + 0.1 * span)
        ax.set_xlim(float(p["curves"]["threshold"].min()), float(p["curves"]["threshold"].max()))
        ax.set_ylabel("net benefit (deaths per patient)")
        ax.set_title(p["title"], fontsize=10)
        ax.legend(frameon=False, fontsize=9, loc="upper right")
    axes.flat[-1].set_xlabel("threshold risk")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def stability_panels(models: pd.DataFrame, pairs: pd.DataFrame, repeats: pd.DataFrame, title: str):
    """Chapter 5's AUCs and differences with their DeLong intervals, and the repeats' values beside them.

    Parameters
    ----------
    models : DataFrame
        ``label, auc, ci_low, ci_high, model``: chapter 5's AUC of each model and its DeLong interval.
    pairs : DataFrame
        ``label, difference, ci_low, ci_high, a, b``: chapter 5's AUC differences and their DeLong intervals.
    repeats : DataFrame
        :func:`~ctac_helpers.models.stability.pooled_aucs` of the repeats (full share; the first seed is chapter 5's).
    title : str
        The figure's title.
    """
    wide = repeats[repeats["fraction"] == 1.0].pivot(index="seed", columns="model", values="auc")
    wide = wide.reindex(pd.unique(repeats["seed"]))
    fig, axes = plt.subplots(2, 1, figsize=(PAGE_WIDTH, 0.42 * (len(models) + len(pairs)) + 3.0))
    for ax, table, value, draw in ((axes[0], models, "auc", lambda r: wide[r["model"]]),
                                   (axes[1], pairs, "difference", lambda r: wide[r["a"]] - wide[r["b"]])):
        ys = np.arange(len(table))[::-1]
        for y, (_, r) in zip(ys, table.iterrows()):
            ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=_RAW, lw=2.2, alpha=0.6,
                    label="chapter 5, DeLong 95% CI" if y == ys[0] else None)
            ax.plot(r[value], y, "o", color=_RAW, ms=5, label="chapter 5" if y == ys[0] else None)
            values = draw(r).to_numpy()
            ax.plot(values[1:], np.full(len(values) - 1, y - 0.18), "x", color=_RECAL, ms=5,
                    label="repeats on other seeds" if y == ys[0] else None)
            ax.plot(values[:1], [y - 0.18], "+", color=OKABE_ITO[2], ms=7, mew=1.5,
                    label="repeat on chapter 5's seed" if y == ys[0] else None)
        ax.set_yticks(ys, table["label"])
        ax.set_ylim(-0.8, len(table) - 0.3)
    axes[0].set_xlabel("AUC")
    axes[1].axvline(0, color="0.5", lw=0.8, ls=":")
    axes[1].set_xlabel("AUC difference")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def learning_curve(table: pd.DataFrame, labels: Mapping[str, str], title: str):
    """AUC against the number of training patients per fold model, one line per model (log x axis).

    Parameters
    ----------
    table : DataFrame
        ``model, n_train, auc`` (and ``deaths_train``, annotated under the axis).
    labels : mapping
        Display name of each model, in drawing order.
    """
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.2))
    for colour, (model, label) in zip(OKABE_ITO, labels.items()):
        t = table[table["model"] == model].sort_values("n_train")
        ax.plot(t["n_train"], t["auc"], "o-", color=colour, label=label)
    ax.set_xscale("log")
    sizes = table.groupby("n_train")["deaths_train"].first().sort_index()
    ax.set_xticks(sizes.index, [f"{n:,.0f}\n({d:,.0f} deaths)" for n, d in sizes.items()], fontsize=9)
    ax.minorticks_off()
    ax.set_xlabel("training patients of each fold model")
    ax.set_ylabel("out-of-fold AUC")
    ax.legend(frameon=False, fontsize=9)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
