"""Figures shared by the chapters: one style, colour-blind-safe colours (Okabe & Ito 2008).

Every figure is drawn at most :data:`PAGE_WIDTH` inches wide, with no text under :data:`SMALL` points:
the page shows a figure :data:`PAGE_WIDTH` inches wide at its own size at a 1280 px window, so its text
reads at the size it was drawn (checked in the browser, :mod:`ctac_helpers.core.figtext`). Figures with
several panels stack them rather than widen.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ctac_helpers.publish import fmt

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: Width (inches) a figure is drawn at, at most: the page's text column is 7 inches wide at a 1280 px window
#: (672 CSS pixels, 96 to the inch), so the page never scales a figure's text down; the rest is slack for the
#: saved image's tight box, which may reach past the figure's edge.
PAGE_WIDTH = 6.8
#: The smallest text of a figure, in points (:data:`ctac_helpers.core.figtext.MIN_POINTS`).
SMALL = 9


def set_style() -> None:
    """Apply the book's matplotlib style (deterministic output, colour-blind-safe cycle)."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "xtick.labelsize": SMALL,
        "ytick.labelsize": SMALL,
        "legend.fontsize": SMALL,
        "legend.title_fontsize": SMALL,
        "figure.titlesize": 11,
        "svg.hashsalt": "ctac-book",
    })


def patient_flow(steps: pd.DataFrame):
    """Supplementary Fig. 1: a vertical flow diagram.

    Parameters
    ----------
    steps : DataFrame
        Columns ``label``, ``paper`` and ``book`` (book may be NaN where the step is not simulated),
        and ``kind`` ('main' boxes in the column, 'exclusion' boxes to the right); an optional
        ``note`` is written under the book's number (the reasons of a site's exclusions).
    """
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 5.2))
    ax.set_axis_off()
    main = steps[steps["kind"] == "main"].reset_index(drop=True)
    excl = steps[steps["kind"] == "exclusion"].reset_index(drop=True)
    ys = np.linspace(0.9, 0.1, len(main))

    def text(r):
        book = "" if pd.isna(r["book"]) else f"\nthis book: n = {int(r['book']):,}"
        note = f"\n({r['note']})" if isinstance(r.get("note"), str) and r["note"] else ""
        return f"{r['label']}\npaper: n = {int(r['paper']):,}{book}{note}"

    for y, (_, r) in zip(ys, main.iterrows()):
        ax.text(0.3, y, text(r), ha="center", va="center", fontsize=SMALL + 0.5,
                bbox=dict(boxstyle="round,pad=0.5", fc="#E8F1F8", ec=OKABE_ITO[0]))
    for i in range(len(main) - 1):
        ax.annotate("", xy=(0.3, ys[i + 1] + 0.07), xytext=(0.3, ys[i] - 0.07),
                    arrowprops=dict(arrowstyle="->", color="0.3"))
    for j, (_, r) in enumerate(excl.iterrows()):
        y = (ys[j] + ys[j + 1]) / 2 if j + 1 < len(ys) else ys[-1]
        ax.text(0.78, y, text(r), ha="center", va="center", fontsize=SMALL + 0.5,
                bbox=dict(boxstyle="round,pad=0.5", fc="#FCEFD9", ec=OKABE_ITO[1]))
        ax.annotate("", xy=(0.6, y), xytext=(0.3, y), arrowprops=dict(arrowstyle="->", color="0.3"))
    ax.set_title("Supplementary Fig. 1 | Patient flow")
    return fig


def calibration_dots(report: pd.DataFrame):
    """Each published number's difference from the synthetic value, in units of its tolerance."""
    r = report.assign(ratio=report["difference"] / report["tolerance"])
    sources = list(dict.fromkeys(r["source"]))
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.6))
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
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, max(4.0, 0.17 * len(freq) + 1.2)))
    y = np.arange(len(freq))
    h = 0.8 / len(columns)
    for i, (col, label) in enumerate(columns.items()):
        ax.barh(y + (i - (len(columns) - 1) / 2) * h, freq[col].to_numpy(float), height=h, label=label,
                color=OKABE_ITO[i % len(OKABE_ITO)])
    ax.axvline(threshold, color="0.2", ls="--", lw=1, label=f"rule: > {threshold:.0%}")
    ax.set_yticks(y, [s.replace("_", " ") for s in freq.index], fontsize=SMALL)
    ax.set_ylim(-0.6, len(freq) - 0.4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of scans in which the structure is fully present")
    ax.legend(loc="lower right", frameon=True, framealpha=0.9, edgecolor="none")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def label_colours(labels: np.ndarray) -> np.ndarray:
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
    fig, axes = plt.subplots(len(panels), 2, figsize=(PAGE_WIDTH, 3.3 * len(panels)), squeeze=False)
    for row, p in zip(axes, panels):
        ct, lab = p["ct"], p["labels"]
        sx, sy, sz = p["spacing"]
        zz, yy, _ = (np.argwhere(lab > 0).mean(axis=0).astype(int) if (lab > 0).any()
                     else np.array(lab.shape) // 2)
        z, y = p.get("z", zz), p.get("y", yy)
        window = dict(cmap="gray", vmin=-1000, vmax=600, interpolation="nearest")
        row[0].imshow(ct[z], **window, aspect=sy / sx)
        row[0].imshow(label_colours(lab[z]), aspect=sy / sx, interpolation="nearest")
        row[0].set_title(f"{p['name']}: axial slice {z}", fontsize=SMALL)
        # coronal: flip so that the head is at the top (axis 0 runs feet to head in LPS)
        row[1].imshow(ct[::-1, y, :], **window, aspect=sz / sx)
        row[1].imshow(label_colours(lab[::-1, y, :]), aspect=sz / sx, interpolation="nearest")
        row[1].set_title(f"{p['name']}: coronal slice {y}", fontsize=SMALL)
        for ax in row:
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bland_altman(panels: list[dict], title: str):
    """Bland-Altman plots (difference against mean of measured and true), one panel per quantity.

    Each panel dict holds ``measured``, ``truth``, ``label`` (with unit) and optionally ``groups``.
    """
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, p in zip(axes.flat, panels):
        m, t = np.asarray(p["measured"], float), np.asarray(p["truth"], float)
        mean, diff = (m + t) / 2, m - t
        ax.scatter(mean, diff, s=14, color=OKABE_ITO[0], alpha=0.8)
        if len(diff) > 1:
            bias, sd = diff.mean(), diff.std(ddof=1)
            for v, ls in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
                ax.axhline(v, color=OKABE_ITO[3], ls=ls, lw=1)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel(f"mean of measured and true\n{p['label']}")
        ax.set_ylabel(f"measured - true {p['label']}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def radiomics_distributions(imaged: pd.DataFrame, synthetic: pd.DataFrame, structures: list[str]):
    """Mean attenuation and volume of a few structures: the synthetic cohort's histogram, imaged scans as ticks.

    One row per structure, its mean attenuation on the left and its volume on the right.
    """
    structures = structures or []
    rows = max(1, len(structures))
    fig, axes = plt.subplots(rows, 2, figsize=(PAGE_WIDTH, 0.6 + 1.9 * rows), squeeze=False)
    for i, s in enumerate(structures):
        for j, (feat, label, scale) in enumerate((("Mean", "mean HU", 1.0), ("MeshVolume", "volume (mL)", 1e-3))):
            col = f"ct__{s}__{feat}"
            ax = axes[i, j]
            if col in synthetic:
                ax.hist(synthetic[col].dropna().to_numpy(float) * scale, bins=40, color=OKABE_ITO[5], alpha=0.7,
                        density=True, label="synthetic cohort")
            if col in imaged:
                v = imaged[col].dropna().to_numpy(float) * scale
                ax.plot(v, np.zeros_like(v), "|", color=OKABE_ITO[3], ms=18, mew=2, label="imaged scans")
            ax.set_xlabel(f"{s.replace('_', ' ')}: {label}")
            ax.set_yticks([])
    if structures:
        axes[0, 0].legend(frameon=False)
    fig.suptitle("Radiomics of selected structures: imaged scans against the synthetic cohort")
    fig.tight_layout()
    return fig


# Fixed colours per model, so that a model keeps its colour in every panel and chapter.
MODEL_COLOURS = {"all": OKABE_ITO[7], "ai_hybrid": OKABE_ITO[4], "ai_ctac": OKABE_ITO[0],
                 "ai_spect": OKABE_ITO[2], "cac": OKABE_ITO[1], "perfusion": OKABE_ITO[3],
                 "eat": OKABE_ITO[5]}


#: How close (absolute) the area under a drawn ROC curve must be to the AUC its legend gives.
ROC_AREA_TOLERANCE = 1e-9


def roc_area(fpr, tpr) -> float:
    """Area under a ROC curve drawn through its points with straight segments (the trapezoid rule)."""
    x, y = np.asarray(fpr, float), np.asarray(tpr, float)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _draw_roc(ax, p: dict, legend: bool = True) -> None:
    """ROC curves through their operating points, joined by straight segments, one per model.

    Each model's points are its distinct thresholds (tied scores move sensitivity and specificity
    together, :func:`ctac_helpers.results.discrimination.roc_curve`). Joined by straight lines, the area under
    them is the AUC (Mann-Whitney, ties counted half), which the legend prints: a curve whose area is not
    the AUC given for it is refused (:data:`ROC_AREA_TOLERANCE`).
    """
    for i, (model, value) in enumerate(p["aucs"].items()):
        c = p["curves"][p["curves"]["model"] == model]
        if c.empty:
            raise ValueError(f"no ROC curve for model {model!r}")
        area = roc_area(c["fpr"], c["tpr"])
        if abs(area - float(value)) > ROC_AREA_TOLERANCE:
            raise ValueError(f"ROC curve of {model!r}: the area under its points is {area:.12f}, but its AUC is given "
                             f"as {float(value):.12f}; curve and AUC must come from the same patients and scores")
        ax.plot(c["fpr"].to_numpy(float), c["tpr"].to_numpy(float), lw=1.6,
                color=MODEL_COLOURS.get(model, OKABE_ITO[i % len(OKABE_ITO)]),
                label=f"{p['labels'].get(model, model)} (AUC {fmt.auc(value)})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(p["title"])
    if legend:
        ax.legend(loc="lower right", frameon=False)


def _draw_bars(ax, p: dict) -> None:
    v = p["values"].iloc[::-1]
    ax.barh([s.replace("_", " ") for s in v.index], v.to_numpy(float), color=OKABE_ITO[0])
    ax.set_title(p["title"])
    ax.set_xlabel(p.get("xlabel", "importance"))


def roc_panels(panels: list[dict], title: str):
    """ROC curves, one panel per patient subset (Fig. 1), two panels to a row.

    Each panel dict holds ``curves`` (long ``model, fpr, tpr``), ``aucs`` (model -> AUC), ``labels``
    (model -> legend name) and ``title``; models are drawn in the order of ``aucs``.
    """
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    side = PAGE_WIDTH / 2 if cols == 2 else 4.6
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, p in zip(axes.flat, panels):
        _draw_roc(ax, p)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_and_importance(roc: dict, importance: dict, title: str):
    """One row of Fig. 2: the subset's ROC curves (legend beside them) above the CTAC model's top-10 structures.

    ``roc`` is a :func:`roc_panels` panel; ``importance`` holds ``values`` (Series: structure ->
    importance, largest first), ``title`` and ``xlabel``.
    """
    fig = plt.figure(figsize=(PAGE_WIDTH, 8.0))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.15, 1], width_ratios=[1.25, 1])
    ax_roc, ax_key, ax_bars = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    _draw_roc(ax_roc, roc, legend=False)
    ax_key.set_axis_off()
    ax_key.legend(*ax_roc.get_legend_handles_labels(), loc="center left", frameon=False)
    _draw_bars(ax_bars, importance)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def importance_heatmap(table: pd.DataFrame, structures: list[str], title: str):
    """Rank of each structure's importance within groups (Supp. Fig. 2): rows structures, columns groups.

    ``table`` is :func:`ctac_helpers.models.cv.importance_by_group`'s output.
    """
    t = table[table["structure"].isin(structures)].copy()
    t["column"] = np.where(t["by"] == "all", "all", t["by"].str.replace("_", " ") + ": " + t["group"].astype(str))
    ranks = t.pivot(index="structure", columns="column", values="rank").reindex(structures)
    cols = ["all"] + [c for c in ranks.columns if c != "all"]
    ranks = ranks[cols]
    fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH, 2.6 + 0.55 * len(cols)), 1.6 + 0.34 * len(structures)))
    im = ax.imshow(ranks.to_numpy(float), cmap="cividis_r", aspect="auto", vmin=1, vmax=max(10, len(structures)))
    for i in range(ranks.shape[0]):
        for j in range(ranks.shape[1]):
            v = ranks.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, int(v), ha="center", va="center", fontsize=SMALL,
                        color="white" if v <= 5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(structures)), [s.replace("_", " ") for s in structures])
    fig.colorbar(im, ax=ax, label="rank (1 = most important)", shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def shap_waterfalls(panels: list[dict], title: str):
    """SHAP waterfalls of single patients (Fig. 4): the base value, then each structure's push.

    One patient to a row. Each panel dict holds ``values`` (Series: structure -> SHAP value on the
    log-odds scale, in drawing order, e.g. :func:`ctac_helpers.models.cv.top_structures` with ``rest=True``),
    ``base`` (the model's expected margin) and ``title`` (the patient's risk, age, sex, TPD, outcome).
    """
    fig, axes = plt.subplots(len(panels), 1, figsize=(PAGE_WIDTH, 0.6 + 3.9 * len(panels)), squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        v = p["values"]
        start = float(p["base"])
        y = np.arange(len(v))[::-1]
        ends = [start]
        for yi, (name, val) in zip(y, v.items()):
            colour = OKABE_ITO[3] if val > 0 else OKABE_ITO[0]
            ax.barh(yi, val, left=start, color=colour, height=0.7)
            ax.text(start + val, yi, f" {val:+.2f}" if val > 0 else f"{val:+.2f} ", va="center",
                    ha="left" if val > 0 else "right", fontsize=SMALL)
            start += val
            ends.append(start)
        # room for the values printed beyond the bars' ends
        lo, hi = min(ends), max(ends)
        pad = 0.22 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.axvline(float(p["base"]), color="0.5", lw=0.8, ls=":")
        ax.axvline(start, color="0.2", lw=0.8)
        ax.set_yticks(y, [str(n).replace("_", " ") for n in v.index])
        ax.set_xlabel("log-odds of death (base value → patient's score)")
        ax.set_title(p["title"], fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def kaplan_meier_panels(panels: list[dict], title: str):
    """Kaplan-Meier curves with their numbers at risk under the axes (Fig. 3), one panel to a row.

    Each panel dict holds ``curve`` (:func:`ctac_helpers.stats.survival.kaplan_meier` on a fine time grid:
    ``group, time, survival, ci_low, ci_high``), ``at_risk``
    (:func:`ctac_helpers.stats.survival.at_risk_table`: groups as rows, times as columns), ``labels``
    (group -> legend name, in drawing order), ``title`` and ``note`` (e.g. the log-rank p).
    """
    fig = plt.figure(figsize=(PAGE_WIDTH, 4.8 * len(panels)), layout="constrained")
    grid = fig.add_gridspec(2 * len(panels), 1, height_ratios=[4, 1.1] * len(panels))
    for j, p in enumerate(panels):
        ax = fig.add_subplot(grid[2 * j, 0])
        for i, (group, label) in enumerate(p["labels"].items()):
            c = p["curve"][p["curve"]["group"] == group].dropna(subset=["survival"])
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            ax.step(c["time"], c["survival"], where="post", color=colour, lw=1.6, label=label)
            ax.fill_between(c["time"], c["ci_low"], c["ci_high"], step="post", color=colour, alpha=0.15, lw=0)
        ax.set_ylabel("survival probability")
        ax.set_title(p["title"])
        ax.legend(loc="lower left", frameon=False, title=p.get("note"))
        ax.tick_params(labelbottom=False)
        times = [float(t) for t in p["at_risk"].columns]
        # A margin so that the numbers at risk at time 0 clear the group labels.
        ax.set_xlim(-0.06 * max(times), 1.03 * max(times))
        table = fig.add_subplot(grid[2 * j + 1, 0], sharex=ax)
        for i, group in enumerate(p["labels"]):
            for t, n in zip(times, p["at_risk"].loc[group]):
                table.text(t, -i, f"{int(n):,}", ha="center", va="center", fontsize=SMALL,
                           color=OKABE_ITO[i % len(OKABE_ITO)])
        table.set_ylim(-len(p["labels"]) + 0.5, 0.5)
        table.set_yticks([-i for i in range(len(p["labels"]))], list(p["labels"].values()))
        table.set_xticks(times)
        table.set_xlabel("years of follow-up")
        table.set_title("number at risk", fontsize=SMALL, loc="left")
        for side in ("left", "top", "right"):
            table.spines[side].set_visible(False)
        table.tick_params(axis="y", length=0)
    fig.suptitle(title)
    return fig


def forest(table: pd.DataFrame, *, estimate: str, label: str, xlabel: str, title: str, log: bool = False,
           reference: float | None = None, paper: str | None = None, text: str | None = None):
    """A forest plot: one row per line of ``table``, its estimate and interval (Supp. Figs. 3 and 4).

    ``table`` holds ``label``, ``estimate``, ``ci_low``, ``ci_high`` (column names given), optionally
    ``paper`` (the paper's estimate, drawn as an open diamond) and ``text`` (printed on the right).
    ``reference`` draws a vertical line (1 for hazard ratios); ``log`` uses a log x axis.
    """
    t = table.reset_index(drop=True)
    y = np.arange(len(t))[::-1]
    # The text goes in an axes of its own to the right, as wide as its longest line (about 0.065 in a character
    # at 9 pt), so that it stays inside the figure; the layout gives the forest what remains.
    ratios = [1.0]
    if text is not None:
        text_width = 0.065 * t[text].astype(str).str.len().max() + 0.1
        label_width = 0.065 * t[label].astype(str).str.len().max()
        ratios = [max(1.5, PAGE_WIDTH - 0.4 - label_width - text_width), text_width]
    fig, axes = plt.subplots(1, len(ratios), figsize=(PAGE_WIDTH, 1.1 + 0.4 * len(t)), sharey=True, squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": ratios})
    ax = axes[0, 0]
    est = t[estimate].to_numpy(float)
    err = np.vstack([est - t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float) - est])
    ax.errorbar(est, y, xerr=err, fmt="s", color=OKABE_ITO[0], ms=5, capsize=2.5, lw=1.2, label="this book")
    if paper is not None and t[paper].notna().any():
        ax.plot(t[paper].to_numpy(float), y, "D", mfc="none", mec=OKABE_ITO[3], ms=6, label="paper")
    if reference is not None:
        ax.axvline(reference, color="0.5", lw=0.8, ls=":")
    if log:
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [v for v in (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if lo <= v <= hi]
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(y, t[label].astype(str))
    ax.set_ylim(-0.6, len(t) - 0.4)
    if text is not None:
        tax = axes[0, 1]
        tax.set_axis_off()
        for yi, s in zip(y, t[text].astype(str)):
            tax.text(0.0, yi, s, va="center", fontsize=SMALL)
    ax.set_xlabel(xlabel)
    # the figure's title, not the axes': an axes title starts at the axes and may run past the figure's edge
    fig.suptitle(title)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    return fig
