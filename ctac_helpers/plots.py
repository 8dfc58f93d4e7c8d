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


def structure_frequency(freq: pd.DataFrame, threshold: float, title: str, columns: dict[str, str]):
    """Supplementary Fig. 7: how often each structure is fully present, one bar group per data set.

    Parameters
    ----------
    freq : DataFrame
        Index: structure; one frequency column (0-1) per data set.
    threshold : float
        The frequency rule (structures strictly above it are kept), drawn as a line.
    columns : dict
        Column of ``freq`` -> legend label.
    """
    freq = freq.sort_values(list(columns)[0])
    fig, ax = plt.subplots(figsize=(7.5, max(4.0, 0.16 * len(freq) + 1)))
    y = np.arange(len(freq))
    h = 0.8 / len(columns)
    for i, (col, label) in enumerate(columns.items()):
        ax.barh(y + (i - (len(columns) - 1) / 2) * h, freq[col].to_numpy(float), height=h, label=label,
                color=OKABE_ITO[i % len(OKABE_ITO)])
    ax.axvline(threshold, color="0.2", ls="--", lw=1, label=f"rule: > {threshold:.0%}")
    ax.set_yticks(y, [s.replace("_", " ") for s in freq.index], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of scans in which the structure is fully present")
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    ax.set_title(title)
    return fig


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """RGBA image of a label slice: each structure a colour of the Okabe-Ito cycle, background clear."""
    rgba = np.zeros(labels.shape + (4,))
    for k in np.unique(labels[labels > 0]):
        rgba[labels == k] = matplotlib.colors.to_rgba(OKABE_ITO[int(k) % (len(OKABE_ITO) - 1)], 0.45)
    return rgba


def segmentation_overlay(panels: list[dict], title: str):
    """Axial and coronal CT slices with the segmentation drawn over them, one row per scan.

    Each panel dict holds ``ct`` and ``labels`` (arrays z, y, x), ``spacing`` (x, y, z in mm),
    ``name`` and optionally ``z`` / ``y`` (slice indices; default: the centre of the labels).
    """
    fig, axes = plt.subplots(len(panels), 2, figsize=(7.5, 3.4 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels):
        ct, lab = p["ct"], p["labels"]
        sx, sy, sz = p["spacing"]
        zz, yy, _ = (np.argwhere(lab > 0).mean(axis=0).astype(int) if (lab > 0).any()
                     else np.array(lab.shape) // 2)
        z, y = p.get("z", zz), p.get("y", yy)
        window = dict(cmap="gray", vmin=-1000, vmax=600, interpolation="nearest")
        row[0].imshow(ct[z], **window, aspect=sy / sx)
        row[0].imshow(_label_colours(lab[z]), aspect=sy / sx, interpolation="nearest")
        row[0].set_title(f"{p['name']}: axial slice {z}", fontsize=9)
        # coronal: flip so that the head is at the top (axis 0 runs feet to head in LPS)
        row[1].imshow(ct[::-1, y, :], **window, aspect=sz / sx)
        row[1].imshow(_label_colours(lab[::-1, y, :]), aspect=sz / sx, interpolation="nearest")
        row[1].set_title(f"{p['name']}: coronal slice {y}", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bland_altman(panels: list[dict], title: str):
    """Bland-Altman plots (difference against mean of measured and true), one panel per quantity.

    Each panel dict holds ``measured``, ``truth``, ``label`` (with unit) and optionally ``groups``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        m, t = np.asarray(p["measured"], float), np.asarray(p["truth"], float)
        mean, diff = (m + t) / 2, m - t
        ax.scatter(mean, diff, s=14, color=OKABE_ITO[0], alpha=0.8)
        if len(diff) > 1:
            bias, sd = diff.mean(), diff.std(ddof=1)
            for v, ls in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                ax.axhline(v, color=OKABE_ITO[3], ls=ls, lw=1)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel(f"mean of measured and true {p['label']}")
        ax.set_ylabel(f"measured - true {p['label']}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def radiomics_distributions(imaged: pd.DataFrame, synthetic: pd.DataFrame, structures: list[str]):
    """Mean attenuation and volume of a few structures: the synthetic cohort's histogram, imaged scans as ticks."""
    structures = structures or []
    fig, axes = plt.subplots(2, max(1, len(structures)), figsize=(3.0 * max(1, len(structures)), 4.8), squeeze=False)
    for j, s in enumerate(structures):
        for i, (feat, label, scale) in enumerate((("Mean", "mean HU", 1.0), ("MeshVolume", "volume (mL)", 1e-3))):
            col = f"ct__{s}__{feat}"
            ax = axes[i, j]
            if col in synthetic:
                ax.hist(synthetic[col].dropna().to_numpy(float) * scale, bins=40, color=OKABE_ITO[5], alpha=0.7,
                        density=True, label="synthetic cohort")
            if col in imaged:
                v = imaged[col].dropna().to_numpy(float) * scale
                ax.plot(v, np.zeros_like(v), "|", color=OKABE_ITO[3], ms=18, mew=2, label="imaged scans")
            ax.set_xlabel(label, fontsize=8)
            ax.set_yticks([])
            if i == 0:
                ax.set_title(s.replace("_", " "), fontsize=9)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.suptitle("Radiomics of selected structures: imaged scans against the synthetic cohort")
    fig.tight_layout()
    return fig
