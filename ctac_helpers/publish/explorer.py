"""Patient explorer: one patient's CT, segmentation, SHAP structures, risk and outcome.

The models chapter explains the CT model with SHAP values aggregated per structure; this module
puts one patient's explanation next to the images it comes from:

* :func:`risk_table` — every patient's out-of-fold score under every model, its percentile in the
  cohort, the AI class (chapter 7's matched threshold) and the outcome;
* :func:`patient_record` — one patient: risks, AI class, outcome, top structures by |SHAP| and the
  scan, if the run has one;
* :func:`patient_figure` — axial and coronal CT slices through the heart with the segmentation
  overlay (the top SHAP structures outlined), the top structures' SHAP bars and a text panel;
* :func:`example_patients` and :func:`examples_figure` — a few deterministic examples for the static
  book;
* :class:`PatientExplorer` (:func:`explorer`) — the live ipywidgets explorer. Its observers call
  :meth:`PatientExplorer.select` and :meth:`PatientExplorer.set_slice`, which tests call too.

Only the patients imaged by chapter 2 (the phantoms, made from the first patients of the cohort)
have CT images; every other patient is shown with a "no CT scan" panel in their place.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.definitions import CLASS_MODEL, TPD_ISCHEMIA
from ctac_helpers.models import cv as models
from ctac_helpers.publish import plots
from ctac_helpers.results import outcomes
from ctac_helpers.stats import survival
from ctac_helpers.cohort.tables import ordinal
from ctac_helpers.publish import fmt

logger = logging.getLogger(__name__)

__all__ = [
    "PatientExplorer",
    "example_patients",
    "examples_figure",
    "explorer",
    "load_scan",
    "patient_figure",
    "patient_record",
    "risk_table",
    "slice_centre",
]

ID = "patient_id"
OUTCOME = "death"
FOLLOWUP = "followup_years"
SHAP_MODEL = "ai_ctac"  # chapter 5 explains the AI CTAC model (artifacts/shap_structures.parquet)
CENTRE_STRUCTURE = "heart"
CT_WINDOW = (-1000, 600)  # the window of plots.segmentation_overlay (chapter 2)
NO_SCAN = "no CT scan"
# Same colours as the SHAP waterfalls of Fig. 4: vermillion raises the risk, blue lowers it.
RAISES, LOWERS = plots.OKABE_ITO[3], plots.OKABE_ITO[0]
#: Height (inches) of one patient in :func:`patient_figure` (slices above, SHAP bars and text below).
PATIENT_HEIGHT = 6.6


def _model_order(available) -> list[str]:
    """Models in :data:`ctac_helpers.models.cv.FEATURE_SETS` order, unknown ones last."""
    available = set(available)
    known = [m for m in models.FEATURE_SETS if m in available]
    return known + sorted(available - set(known))


def _label(model: str) -> str:
    return models.FEATURE_SETS.get(model, {}).get("label", model)


# -- tables ---------------------------------------------------------------------------------------
def risk_table(cohort: pd.DataFrame, predictions: pd.DataFrame, class_model: str = CLASS_MODEL,
               tpd_ischemia: float = TPD_ISCHEMIA) -> pd.DataFrame:
    """Every patient's scores, risk percentiles, AI class and outcome.

    Parameters
    ----------
    cohort : DataFrame
        The cohort table (``patient_id``, ``death``, ``followup_years``, ``stress_tpd``).
    predictions : DataFrame
        ``artifacts/predictions.parquet``: ``patient_id, model, score`` (one row per patient and model).
    class_model : str
        The model whose score defines the AI class (chapter 7: ``'all'``).
    tpd_ischemia : float
        The AI threshold flags as many patients as have an ischemic TPD at or above this value (%), as in
        chapter 7 (:func:`ctac_helpers.stats.survival.match_threshold`).

    Returns
    -------
    DataFrame
        Index ``patient_id`` in cohort order; ``death``, ``followup_years``, then per model
        ``score__<model>`` and ``percentile__<model>`` (rank among the scored patients, 0-100, as in
        Fig. 4's titles), and ``ai_high_risk`` (nullable boolean: NA where the patient has no score).
        ``attrs`` holds ``threshold``, ``class_model`` and ``tpd_ischemia``.

    Raises
    ------
    ValueError
        Missing columns, a patient scored twice by a model, or ``class_model`` not in the predictions.
    """
    missing = [c for c in (ID, OUTCOME, FOLLOWUP, "stress_tpd") if c not in cohort]
    if missing:
        raise ValueError(f"cohort lacks the columns {missing}")
    missing = [c for c in (ID, "model", "score") if c not in predictions]
    if missing:
        raise ValueError(f"predictions lack the columns {missing}; expected patient_id, model, score")
    dup = predictions.duplicated([ID, "model"])
    if dup.any():
        first = predictions.loc[dup].iloc[0]
        raise ValueError(f"predictions hold patient {first[ID]!r} twice under model {first['model']!r}")
    available = _model_order(predictions["model"].unique())
    if class_model not in available:
        raise ValueError(f"class_model {class_model!r} not in the predictions; available: {available}")
    wide = predictions.pivot(index=ID, columns="model", values="score")
    out = cohort.set_index(ID)[[OUTCOME, FOLLOWUP]].copy()
    for m in available:
        s = wide[m].reindex(out.index).astype(float)
        out[f"score__{m}"] = s
        out[f"percentile__{m}"] = s.rank(pct=True) * 100
    scored = out[f"score__{class_model}"].notna().to_numpy()
    tpd = outcomes.ischemic_tpd(cohort.set_index(ID)).to_numpy(float)
    match = survival.match_threshold(out[f"score__{class_model}"].to_numpy()[scored], tpd[scored] >= tpd_ischemia)
    high = pd.Series(pd.NA, index=out.index, dtype="boolean")
    high[scored] = out[f"score__{class_model}"].to_numpy()[scored] >= match.threshold
    out["ai_high_risk"] = high
    out.attrs.update(threshold=match.threshold, class_model=class_model, tpd_ischemia=tpd_ischemia)
    return out


def _shap_frame(shap_structures: pd.DataFrame) -> pd.DataFrame:
    """The SHAP table indexed by ``patient_id`` (the artifact stores it as a column)."""
    if ID in shap_structures.columns:
        return shap_structures.set_index(ID)
    if shap_structures.index.name == ID:
        return shap_structures
    raise ValueError("shap_structures needs a patient_id column or index (artifacts/shap_structures.parquet)")


def _patient_scans(scans: pd.DataFrame | None) -> pd.DataFrame:
    """Scans with a CT and a label map, one per patient (the first in table order)."""
    cols = ["scan_id", ID, "dataset", "ct_path", "label_path"]
    if scans is None or not len(scans):
        return pd.DataFrame(columns=cols).set_index(ID)
    missing = [c for c in ("scan_id", ID, "ct_path", "label_path") if c not in scans]
    if missing:
        raise ValueError(f"scans lack the columns {missing} (artifacts/scans.parquet)")
    s = scans.assign(dataset=scans["dataset"] if "dataset" in scans else "")
    ok = s["ct_path"].map(lambda v: isinstance(v, str) and bool(v)) & s["label_path"].map(
        lambda v: isinstance(v, str) and bool(v))
    s = s.loc[ok, cols]
    return s.drop_duplicates(ID, keep="first").set_index(ID)


def patient_record(patient_id: str, cohort: pd.DataFrame, predictions: pd.DataFrame,
                   shap_structures: pd.DataFrame, scans: pd.DataFrame | None, *, k: int = 10,
                   risks: pd.DataFrame | None = None, class_model: str = CLASS_MODEL,
                   shap_model: str = SHAP_MODEL, tpd_ischemia: float = TPD_ISCHEMIA) -> dict:
    """Everything the explorer shows about one patient.

    Parameters
    ----------
    patient_id : str
        A patient of ``cohort``.
    cohort, predictions : DataFrame
        As in :func:`risk_table`.
    shap_structures : DataFrame
        ``artifacts/shap_structures.parquet``: ``patient_id``, one column per structure (SHAP value on
        the log-odds scale, summed over the structure's features) and ``bias``.
    scans : DataFrame or None
        ``artifacts/scans.parquet`` with absolute image paths
        (:func:`ctac_helpers.imaging.scans.resolve_scan_paths`); None when the run has no images.
    k : int
        Number of structures kept, by decreasing |SHAP|.
    risks : DataFrame, optional
        A precomputed :func:`risk_table` (the explorer computes it once); computed otherwise.
    class_model, tpd_ischemia
        As in :func:`risk_table`.
    shap_model : str
        The model that ``shap_structures`` explains (for labels).

    Returns
    -------
    dict
        ``patient_id``; ``clinical`` (age, sex, stress TPD, CAC score where the cohort has them);
        ``death``, ``followup_years`` and ``outcome`` (text); ``risks`` (DataFrame ``model, label,
        kind, score, percentile``); ``class_model``, ``risk``, ``risk_percentile``, ``ai_high_risk``
        (bool or None) and ``threshold``; ``shap_model``, ``shap`` (Series structure -> SHAP value,
        top ``k`` by |SHAP|, largest first, structures with a SHAP value of exactly 0 left out; empty
        without SHAP values), ``shap_base`` and ``shap_margin`` (the base value and the patient's
        log-odds, NaN without SHAP values); ``scan`` (dict ``scan_id, dataset, ct_path, label_path``, or None).

    Raises
    ------
    KeyError
        ``patient_id`` is not in the cohort.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    meta = cohort.set_index(ID)
    if patient_id not in meta.index:
        raise KeyError(f"patient {patient_id!r} is not in the cohort")
    if risks is None:
        risks = risk_table(cohort, predictions, class_model, tpd_ischemia)
    row = meta.loc[patient_id]
    r = risks.loc[patient_id]
    death, years = int(row[OUTCOME]), float(row[FOLLOWUP])
    outcome = (f"died at {years:.1f} years" if death else f"alive at last follow-up ({years:.1f} years)")
    model_rows = [{"model": m, "label": _label(m), "kind": models.FEATURE_SETS.get(m, {}).get("kind", ""),
                   "score": float(r[f"score__{m}"]), "percentile": float(r[f"percentile__{m}"])}
                  for m in _model_order(c[len("score__"):] for c in risks.columns if c.startswith("score__"))]
    high = r["ai_high_risk"]
    shap = _shap_frame(shap_structures)
    if patient_id in shap.index:
        srow = shap.loc[patient_id].astype(float)
        top = models.top_structures(srow, k)
        top = top[top != 0]  # a structure the patient's trees never split on does not drive their risk
        base = float(srow["bias"]) if "bias" in srow else np.nan
        margin = float(srow.sum())  # structures + bias: the patient's log-odds under the fold model
    else:
        logger.warning("no SHAP values for patient %s", patient_id)
        top, base, margin = pd.Series(dtype=float), np.nan, np.nan
    per_patient = _patient_scans(scans)
    scan = None
    if patient_id in per_patient.index:
        s = per_patient.loc[patient_id]
        scan = {"scan_id": s["scan_id"], "dataset": s["dataset"], "ct_path": s["ct_path"],
                "label_path": s["label_path"]}
    clinical = {c: row[c] for c in ("age", "sex", "stress_tpd", "cac_score") if c in meta.columns}
    return {
        "patient_id": patient_id, "clinical": clinical, "death": death, "followup_years": years,
        "outcome": outcome, "risks": pd.DataFrame(model_rows), "class_model": class_model,
        "risk": float(r[f"score__{class_model}"]), "risk_percentile": float(r[f"percentile__{class_model}"]),
        "ai_high_risk": None if pd.isna(high) else bool(high), "threshold": risks.attrs.get("threshold"),
        "tpd_ischemia": risks.attrs.get("tpd_ischemia", tpd_ischemia), "shap_model": shap_model,
        "shap": top, "shap_base": base, "shap_margin": margin, "scan": scan,
    }


def example_patients(risks: pd.DataFrame, scans: pd.DataFrame | None, model: str = CLASS_MODEL,
                     n: int = 3) -> pd.DataFrame:
    """A few deterministic example patients for the static book.

    In this order: the highest-risk patient with a CT scan; the highest-risk patient who died
    (among those with a scan when one died, otherwise among all); the lowest-risk survivor (among
    those with a scan when possible). A patient is never chosen twice; ties go to the smaller id.

    Parameters
    ----------
    risks : DataFrame
        :func:`risk_table`.
    scans : DataFrame or None
        The scan table (only ``patient_id`` and the image paths are used).
    model : str
        The model whose score ranks the patients.
    n : int
        At most this many examples (1 to 3).

    Returns
    -------
    DataFrame
        ``patient_id, reason, has_scan``.
    """
    if n not in (1, 2, 3):
        raise ValueError(f"n must be 1, 2 or 3, got {n!r}")
    col = f"score__{model}"
    if col not in risks:
        raise ValueError(f"no scores of model {model!r} in the risk table")
    t = risks[[col, OUTCOME]].dropna(subset=[col]).rename(columns={col: "score"})
    t = t.assign(has_scan=t.index.isin(_patient_scans(scans).index)).rename_axis(ID).reset_index()
    by_risk = t.sort_values(["score", ID], ascending=[False, True], kind="stable")
    rules = [
        ("highest risk with a CT scan", lambda d: d[d["has_scan"]], False),
        ("highest-risk death", lambda d: d[d[OUTCOME] == 1], False),
        ("lowest-risk survivor", lambda d: d[d[OUTCOME] == 0], True),
    ]
    chosen: list[dict] = []
    for reason, subset, lowest in rules:
        pool = subset(by_risk[~by_risk[ID].isin([c[ID] for c in chosen])])
        if lowest:
            pool = pool.sort_values(["score", ID], ascending=[True, True], kind="stable")
        imaged = pool[pool["has_scan"]]
        pick = imaged if len(imaged) else pool  # prefer a patient whose images can be shown
        if len(pick):
            p = pick.iloc[0]
            chosen.append({ID: p[ID], "reason": reason, "has_scan": bool(p["has_scan"])})
    return pd.DataFrame(chosen, columns=[ID, "reason", "has_scan"]).head(n)


# -- images ---------------------------------------------------------------------------------------
def load_scan(scan: Mapping) -> dict:
    """Read a scan's CT and label map (arrays z, y, x), voxel spacing (x, y, z in mm) and heart centre.

    ``centre`` is :func:`slice_centre` of the labels, computed once here because every redraw needs it.
    """
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(scan["ct_path"]))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(scan["label_path"])))
    arr = sitk.GetArrayFromImage(ct)
    if labels.shape != arr.shape:
        raise ValueError(f"scan {scan.get('scan_id')!r}: label map {labels.shape} is not on the CT grid {arr.shape}")
    return {"ct": arr, "labels": labels, "spacing": tuple(ct.GetSpacing()), "centre": slice_centre(labels)}


def slice_centre(labels: np.ndarray, structure: str = CENTRE_STRUCTURE) -> tuple[int, int, int]:
    """Voxel (z, y, x) at the centre of ``structure`` (the heart); of all labels or the volume otherwise."""
    mask = labels == manifest.structure_id(structure)
    if not mask.any():
        mask = labels > 0
    if not mask.any():
        return tuple(int(v) // 2 for v in labels.shape)
    return tuple(int(round(float(np.mean(ix)))) for ix in np.nonzero(mask))


def _outline(ax, labels2d: np.ndarray, shap: pd.Series, ids: Mapping[str, int]) -> int:
    """Outline the top SHAP structures in their bar colour; returns how many were visible."""
    n = 0
    for name, value in shap.items():
        mask = labels2d == ids.get(name, -1)
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=[RAISES if value > 0 else LOWERS], linewidths=1.1)
            n += 1
    return n


def patient_figure(record: Mapping, images: Mapping | None = None, *, z: int | None = None, fig=None):
    """One patient: CT slices with the segmentation, the top structures by SHAP, risk and outcome.

    Parameters
    ----------
    record : dict
        :func:`patient_record`.
    images : dict, optional
        :func:`load_scan` of the record's scan (read here when omitted and the patient has a scan).
    z : int, optional
        Axial slice; default the centre of the heart. The coronal slice always runs through the heart's
        centre and marks the axial slice with a dashed line.
    fig : Figure or SubFigure, optional
        Where to draw (:func:`examples_figure` stacks patients in sub-figures); a new figure otherwise.

    Returns
    -------
    Figure or SubFigure
        Four panels with a scan (axial and coronal above, SHAP bars and text below), three without (a
        "no CT scan" panel in place of the two slices); as wide as the book's page
        (:data:`ctac_helpers.publish.plots.PAGE_WIDTH`), its text at least :data:`ctac_helpers.publish.plots.SMALL` points.
        The segmentation is coloured as in chapter 2; the top structures are outlined in their bar's colour
        (vermillion raises the risk, blue lowers it).

    Raises
    ------
    ValueError
        ``z`` outside the scan.
    """
    if fig is None:
        fig = plt.figure(figsize=(plots.PAGE_WIDTH, PATIENT_HEIGHT), layout="constrained")
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1.05], width_ratios=[1, 1])
    shap = record["shap"]
    if record["scan"] is not None and images is None:
        images = load_scan(record["scan"])
    if images is not None:
        ct, lab = images["ct"], images["labels"]
        sx, sy, sz = images["spacing"]
        zc, yc, _ = images.get("centre") or slice_centre(lab)
        z = zc if z is None else int(z)
        if not 0 <= z < ct.shape[0]:
            raise ValueError(f"axial slice {z} outside the scan (0-{ct.shape[0] - 1})")
        ids = {v: k for k, v in manifest.class_map().items()}
        window = dict(cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], interpolation="nearest")
        ax_ax, ax_co = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        ax_ax.imshow(ct[z], **window, aspect=sy / sx)
        ax_ax.imshow(plots.label_colours(lab[z]), aspect=sy / sx, interpolation="nearest")
        _outline(ax_ax, lab[z], shap, ids)
        ax_ax.set_title(f"{record['scan']['scan_id']}: axial slice {z}", fontsize=plots.SMALL)
        # coronal: flipped so that the head is at the top (axis 0 runs feet to head), as in chapter 2
        cor_ct, cor_lab = ct[::-1, yc, :], lab[::-1, yc, :]
        ax_co.imshow(cor_ct, **window, aspect=sz / sx)
        ax_co.imshow(plots.label_colours(cor_lab), aspect=sz / sx, interpolation="nearest")
        _outline(ax_co, cor_lab, shap, ids)
        ax_co.axhline(ct.shape[0] - 1 - z, color="white", lw=0.8, ls="--")
        ax_co.set_title(f"coronal slice {yc} (dashed: axial slice)", fontsize=plots.SMALL)
        for ax, shape in ((ax_ax, ct[z].shape), (ax_co, cor_ct.shape)):
            # contour() autoscales to pixel centres; restore the image's full extent
            ax.set_xlim(-0.5, shape[1] - 0.5)
            ax.set_ylim(shape[0] - 0.5, -0.5)
            ax.set_axis_off()
    else:
        ax_na = fig.add_subplot(gs[0, :])
        ax_na.set_axis_off()
        ax_na.set_title(NO_SCAN, fontsize=plots.SMALL)
        ax_na.text(0.5, 0.5, f"{NO_SCAN} in this run for this patient:\nCT images exist only for the "
                             "patients imaged in chapter 2", ha="center", va="center", fontsize=plots.SMALL + 1,
                   color="0.3",
                   transform=ax_na.transAxes, wrap=True)
    _shap_bars(fig.add_subplot(gs[1, 0]), record)
    _text_panel(fig.add_subplot(gs[1, 1]), record)
    fig.suptitle(f"Patient {record['patient_id']}", fontsize=10.5)
    return fig


def _shap_bars(ax, record: Mapping) -> None:
    shap = record["shap"]
    label = _label(record["shap_model"])
    if not len(shap):
        ax.set_axis_off()
        ax.set_title(f"{label}: no SHAP values", fontsize=plots.SMALL)
        return
    y = np.arange(len(shap))[::-1]  # largest |SHAP| at the top
    ax.barh(y, shap.to_numpy(float), color=[RAISES if v > 0 else LOWERS for v in shap], height=0.7)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(y, [str(s).replace("_", " ") for s in shap.index], fontsize=plots.SMALL)
    ax.xaxis.set_major_locator(MaxNLocator(4))  # tick labels of small values collide otherwise
    ax.tick_params(axis="x", labelsize=plots.SMALL)
    ax.set_xlabel("SHAP value (log-odds of death)", fontsize=plots.SMALL)
    ax.set_title(f"{label}: top-{len(shap)} structures by |SHAP|", fontsize=plots.SMALL)


def _text_panel(ax, record: Mapping) -> None:
    ax.set_axis_off()
    ax.set_title("Risk and outcome", fontsize=plots.SMALL)
    c = record["clinical"]
    who = ", ".join(p for p in (f"{c['age']:.0f} y" if "age" in c and pd.notna(c["age"]) else "",
                                str(c.get("sex", "") or "")) if p)
    lines = [who] if who else []
    if "stress_tpd" in c and pd.notna(c["stress_tpd"]):
        lines.append(f"stress TPD {c['stress_tpd']:.1f}%")
    if "cac_score" in c and pd.notna(c["cac_score"]):
        lines.append(f"CAC score {c['cac_score']:.0f}")
    label = _label(record["class_model"])
    lines += ["", f"Risk ({label} model): {record['risk']:.3f}, {ordinal(record['risk_percentile'])} percentile"]
    if record["ai_high_risk"] is not None:
        lines.append(f"AI class: {'HIGH' if record['ai_high_risk'] else 'low'} risk "
                     f"(threshold {record['threshold']:.3f})")
    others = record["risks"]
    others = others[(others["kind"] == "xgboost") & (others["model"] != record["class_model"])]
    if len(others):
        lines += ["Other models (risk, percentile):"]
        lines += [f"  {r['label']}: {r['score']:.3f} ({ordinal(r['percentile'])})" for _, r in others.iterrows()]
    lines += ["", f"Outcome: {record['outcome']}"]
    ax.text(0, 1, "\n".join(lines), ha="left", va="top", fontsize=plots.SMALL, transform=ax.transAxes)


def examples_figure(records: Sequence[Mapping], images: Sequence[Mapping | None] | None = None,
                    title: str = "Example patients: CT, the structures that drive their risk, and outcome"):
    """The static examples: :func:`patient_figure` of each record, one row per patient."""
    if not records:
        raise ValueError("no example patients")
    images = list(images) if images is not None else [None] * len(records)
    fig = plt.figure(figsize=(plots.PAGE_WIDTH, PATIENT_HEIGHT * len(records) + 0.3), layout="constrained")
    subs = fig.subfigures(len(records), 1, squeeze=False)[:, 0]
    for sub, rec, img in zip(subs, records, images):
        patient_figure(rec, img, fig=sub)
    fig.suptitle(title)
    return fig


# -- the live explorer ----------------------------------------------------------------------------
def _png_base64(fig, dpi: int) -> str:
    buf = io.BytesIO()
    # no bbox_inches='tight': it draws the figure twice, and the live explorer redraws on every slice
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _text_output(text: str, html: str | None = None) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {"text/plain": text, "text/html": html or f"<p>{text}</p>"}}


class PatientExplorer:
    """The ipywidgets patient explorer (use :func:`explorer`).

    A patient dropdown (with a checkbox restricting it to the patients with a CT scan), an axial
    slice slider and an Output holding the patient's :func:`patient_figure`. The widgets'
    observers call :meth:`select` (new patient) and :meth:`set_slice` (new slice), which can be
    called directly as well. The Output's ``outputs`` are set explicitly (a "no CT scan" note where
    relevant, then the figure as PNG), so the explorer renders the same with or without a kernel.

    Attributes
    ----------
    widget : ipywidgets.VBox
        What to display.
    dropdown, only_with_scans, slider, output
        The widgets.
    risks : DataFrame
        :func:`risk_table`.
    imaged : list of str
        Patients with a CT scan (cohort order).
    record : dict
        The current patient's :func:`patient_record`.
    z : int or None
        The current axial slice (None without a scan).
    figure : Figure
        The last figure drawn (closed after rendering: inspect, do not show).
    """

    def __init__(self, cohort: pd.DataFrame, predictions: pd.DataFrame, shap_structures: pd.DataFrame,
                 scans: pd.DataFrame | None, *, k: int = 10, class_model: str = CLASS_MODEL,
                 shap_model: str = SHAP_MODEL, tpd_ischemia: float = TPD_ISCHEMIA,
                 only_with_scans: bool | None = None, dpi: int = 90):
        import ipywidgets as widgets

        self.cohort, self.predictions, self.scans = cohort, predictions, scans
        self.shap = _shap_frame(shap_structures)
        self.k, self.class_model, self.shap_model, self.dpi = k, class_model, shap_model, dpi
        self.risks = risk_table(cohort, predictions, class_model, tpd_ischemia)
        per_patient = _patient_scans(scans)
        self.imaged = [p for p in self.risks.index if p in per_patient.index]
        self._images: dict[str, dict] = {}  # scan_id -> arrays; only the few imaged patients
        self._updating = False  # True while select() moves the widgets itself
        self.record: dict | None = None
        self.z: int | None = None
        self.figure = None
        only = bool(self.imaged) if only_with_scans is None else bool(only_with_scans)
        self.only_with_scans = widgets.Checkbox(value=only, description="only patients with a CT scan",
                                                disabled=not self.imaged, indent=False)
        self.dropdown = widgets.Dropdown(options=self.patient_options(only), description="Patient",
                                         layout=widgets.Layout(width="34em"))
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description="Axial slice", continuous_update=False)
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.dropdown, self.only_with_scans]), self.slider, self.output])
        self.dropdown.observe(self._on_patient, names="value")
        self.slider.observe(self._on_slice, names="value")
        self.only_with_scans.observe(self._on_filter, names="value")
        if self.dropdown.value is not None:
            self.select(self.dropdown.value)

    # -- options --------------------------------------------------------------------------------
    def patient_options(self, only_with_scans: bool) -> list[tuple[str, str]]:
        """Dropdown options ``(label, patient_id)``: id, risk, percentile, outcome, CT availability."""
        ids = self.imaged if only_with_scans else list(self.risks.index)
        t = self.risks.loc[ids]
        imaged = set(self.imaged)
        score, pct = t[f"score__{self.class_model}"], t[f"percentile__{self.class_model}"]
        return [(f"{pid} | risk {fmt.number(s, 'risk')} ({ordinal(p)}) | {'died' if d else 'alive'}"
                 + (" | CT" if pid in imaged else ""), pid)
                for pid, s, p, d in zip(t.index, score, pct, t[OUTCOME])]

    # -- callbacks ------------------------------------------------------------------------------
    def select(self, patient_id: str) -> None:
        """Show ``patient_id``: rebuild the record, reset the slider to the heart, re-render."""
        record = patient_record(patient_id, self.cohort, self.predictions, self.shap, self.scans, k=self.k,
                                risks=self.risks, class_model=self.class_model, shap_model=self.shap_model)
        images = self._load(record)
        self._updating = True
        try:
            if images is not None:
                z = images["centre"][0]
                self.slider.max = images["ct"].shape[0] - 1
                self.slider.value = z
                self.slider.disabled = False
            else:
                z = None
                self.slider.value, self.slider.max, self.slider.disabled = 0, 0, True
            if self.dropdown.value != patient_id:
                if patient_id not in [v for _, v in self.dropdown.options]:
                    # a patient without a scan asked for while the list shows imaged patients only
                    self.only_with_scans.value = False
                    self.dropdown.options = self.patient_options(False)
                self.dropdown.value = patient_id
        finally:
            self._updating = False
        self.record, self.z = record, z
        self.render()

    def set_slice(self, z: int) -> None:
        """Show axial slice ``z`` of the current patient's scan (ignored without a scan)."""
        if self.record is None or self.record["scan"] is None:
            return
        z = int(z)
        if self.slider.value != z:
            self._updating = True
            try:
                self.slider.value = z
            finally:
                self._updating = False
        self.z = z
        self.render()

    def set_only_with_scans(self, only: bool) -> None:
        """Restrict the dropdown to the patients with a scan (or list everyone); keeps the patient if listed."""
        current = self.dropdown.value
        self._updating = True
        try:
            if self.only_with_scans.value != bool(only):
                self.only_with_scans.value = bool(only)
            options = self.patient_options(bool(only))
            self.dropdown.options = options
            keep = current in [v for _, v in options]
            self.dropdown.value = current if keep else (options[0][1] if options else None)
        finally:
            self._updating = False
        if self.dropdown.value is not None and self.dropdown.value != (self.record or {}).get("patient_id"):
            self.select(self.dropdown.value)

    def render(self) -> None:
        """Draw the current patient into the Output (a note without a scan, then the figure)."""
        rec = self.record
        images = self._images.get(rec["scan"]["scan_id"]) if rec["scan"] is not None else None
        fig = patient_figure(rec, images, z=self.z)
        png = _png_base64(fig, self.dpi)
        plt.close(fig)  # callbacks run outside cells: an open pyplot figure would show up in the next cell
        self.figure = fig
        outputs = []
        if rec["scan"] is None:
            outputs.append(_text_output(
                f"{rec['patient_id']}: {NO_SCAN} in this run. CT images exist for {len(self.imaged)} "
                "patient(s) (tick 'only patients with a CT scan' to list them); risk, SHAP and outcome are shown."))
        where = f"axial slice {self.z}" if self.z is not None else NO_SCAN
        outputs.append({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": png, "text/plain": f"<patient {rec['patient_id']}: {where}>"}})
        self.output.outputs = tuple(outputs)
        logger.debug("explorer: rendered %s (%s)", rec["patient_id"], where)

    def _load(self, record: Mapping) -> dict | None:
        scan = record["scan"]
        if scan is None:
            return None
        if scan["scan_id"] not in self._images:
            self._images[scan["scan_id"]] = load_scan(scan)
        return self._images[scan["scan_id"]]

    def _show_error(self, what: str, exc: Exception) -> None:
        # an observer's exception only reaches the kernel log: say it where the user looks
        logger.exception("explorer: %s failed", what)
        self.output.outputs = (_text_output(f"Could not show {what}: {exc}"),)

    def _on_patient(self, change: Mapping) -> None:
        if self._updating or change["new"] is None:
            return
        try:
            self.select(change["new"])
        except Exception as exc:  # noqa: BLE001 - shown in the Output instead of lost
            self._show_error(f"patient {change['new']}", exc)

    def _on_slice(self, change: Mapping) -> None:
        if self._updating:
            return
        try:
            self.set_slice(change["new"])
        except Exception as exc:  # noqa: BLE001
            self._show_error(f"slice {change['new']}", exc)

    def _on_filter(self, change: Mapping) -> None:
        if self._updating:
            return
        try:
            self.set_only_with_scans(change["new"])
        except Exception as exc:  # noqa: BLE001
            self._show_error("the patient list", exc)


def explorer(cohort: pd.DataFrame, predictions: pd.DataFrame, shap_structures: pd.DataFrame,
             scans: pd.DataFrame | None, **options) -> PatientExplorer:
    """Build the live patient explorer; ``display(ex.widget)`` shows it (options: :class:`PatientExplorer`)."""
    return PatientExplorer(cohort, predictions, shap_structures, scans, **options)
