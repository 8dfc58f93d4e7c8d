"""Figures shared by the chapters: one style, colour-blind-safe colours (Okabe & Ito 2008)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def set_style() -> None:
    """Apply the book's matplotlib style (deterministic output, colour-blind-safe cycle)."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
        "svg.hashsalt": "ctac-book",
    })


def patient_flow(steps: pd.DataFrame):
    """Supplementary Fig. 1: a vertical flow diagram.

    Parameters
    ----------
    steps : DataFrame
        Columns ``label``, ``paper`` and ``book`` (book may be NaN where the step is not simulated),
        and ``kind`` ('main' boxes in the column, 'exclusion' boxes to the right).
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    ax.set_axis_off()
    main = steps[steps["kind"] == "main"].reset_index(drop=True)
    excl = steps[steps["kind"] == "exclusion"].reset_index(drop=True)
    ys = np.linspace(0.9, 0.1, len(main))

    def text(r):
        book = "" if pd.isna(r["book"]) else f"\nthis book: n = {int(r['book']):,}"
        return f"{r['label']}\npaper: n = {int(r['paper']):,}{book}"

    for y, (_, r) in zip(ys, main.iterrows()):
        ax.text(0.3, y, text(r), ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.5", fc="#E8F1F8", ec=OKABE_ITO[0]))
    for i in range(len(main) - 1):
        ax.annotate("", xy=(0.3, ys[i + 1] + 0.07), xytext=(0.3, ys[i] - 0.07),
                    arrowprops=dict(arrowstyle="->", color="0.3"))
    for j, (_, r) in enumerate(excl.iterrows()):
        y = (ys[j] + ys[j + 1]) / 2 if j + 1 < len(ys) else ys[-1]
        ax.text(0.78, y, text(r), ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.5", fc="#FCEFD9", ec=OKABE_ITO[1]))
        ax.annotate("", xy=(0.6, y), xytext=(0.3, y), arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.set_title("Supplementary Fig. 1 | Patient flow")
    return fig


def calibration_dots(report: pd.DataFrame):
    """Each published number's difference from the synthetic value, in units of its tolerance."""
    r = report.assign(ratio=report["difference"] / report["tolerance"])
    sources = list(dict.fromkeys(r["source"]))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    rng = np.random.default_rng(0)  # jitter only spreads dots for legibility
    for i, s in enumerate(sources):
        sub = r[r["source"] == s]
        ax.scatter(sub["ratio"], i + rng.uniform(-0.25, 0.25, len(sub)), s=10,
                   color=np.where(sub["within"], OKABE_ITO[0], OKABE_ITO[3]), alpha=0.7)
    ax.axvspan(-1, 1, color=OKABE_ITO[2], alpha=0.12, label="within tolerance")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("(synthetic - paper) / tolerance")
    ax.legend(loc="lower right", frameon=False)
    ax.set_title("Calibration of the synthetic cohort to the published numbers")
    return fig
