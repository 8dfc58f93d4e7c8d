"""The book's figures (ctac_helpers.publish.plots): ROC curves through their operating points, and figures the page
shows without scaling their text under 9 pt."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ctac_helpers.stats import delong
from ctac_helpers.results import discrimination as disc
from ctac_helpers.core import figtext
from ctac_helpers.publish import fmt
from ctac_helpers.publish import plots
from ctac_helpers.stats import survival  # noqa: E402
from ctac_helpers.core.rundir import RunDir  # noqa: E402

#: The width (CSS px) the book's theme gives a figure at a 1280 px window (measured in Chromium).
SHOWN_WIDTH = 672
LABELS = {"all": "All", "ai_hybrid": "AI hybrid", "ai_ctac": "AI CTAC", "cac": "Coronary calcium",
          "perfusion": "Perfusion"}


@pytest.fixture(scope="module")
def tied():
    """Scores with many ties: a CAC score that is 0 for 40% of patients, a perfusion score in whole percent."""
    rng = np.random.default_rng(11)
    n = 1500
    y = (rng.random(n) < 0.07).astype(int)
    scores = pd.DataFrame({m: y * rng.uniform(0.3, 1.0) + rng.normal(0, 1, n) for m in ("all", "ai_hybrid", "ai_ctac")})
    scores["cac"] = np.where(rng.random(n) < 0.4, 0.0, np.round(np.exp(rng.normal(3, 2, n)) * (1 + y)))
    scores["perfusion"] = np.round(np.clip(rng.normal(3, 4, n) + 3 * y, 0, None))
    return y, scores


def _panel(y, scores, title="All patients"):
    # as chapter 5 builds it: the AUCs of the table, the curves of the same patients' scores
    table = disc.auc_table(y, scores, list(LABELS), n_resamples=20, seed=1)
    return {"curves": disc.roc_curves(y, scores, list(LABELS)), "labels": LABELS, "title": title,
            "aucs": table.set_index("model").loc[list(LABELS), "auc"].to_dict()}


def _roc_lines(fig):
    """The ROC curves a figure draws: (legend label, x, y, drawstyle) of every line whose label gives an AUC."""
    return [(line.get_label(), *line.get_data(), line.get_drawstyle())
            for ax in fig.axes for line in ax.get_lines() if "(AUC " in line.get_label()]


@pytest.mark.parametrize("draw", ["roc_panels", "roc_and_importance"])
def test_every_plotted_roc_curve_encloses_the_auc_of_its_legend(tied, draw):
    y, scores = tied
    mask = scores["cac"].to_numpy() == 0  # the patients without calcium: their CAC scores all tie
    cases = [(y, scores), (y[mask], scores[mask])]
    panels = [_panel(y, scores), _panel(y[mask], scores[mask], "No coronary calcium")]
    if draw == "roc_panels":
        fig = plots.roc_panels(panels, "All-cause mortality")
    else:
        importance = {"values": pd.Series([3.0, 2.0, 1.0], index=["heart", "aorta", "liver"]), "title": "top"}
        fig = plots.roc_and_importance(panels[0], importance, "All patients")
        cases, panels = cases[:1], panels[:1]
    lines = _roc_lines(fig)
    expected = [(yy, ss, p, model) for (yy, ss), p in zip(cases, panels) for model in p["aucs"]]
    assert len(lines) == len(expected) == 5 * len(panels)
    for (label, fpr, tpr, drawstyle), (yy, ss, p, model) in zip(lines, expected):
        auc = p["aucs"][model]
        assert label == f"{LABELS[model]} (AUC {fmt.auc(auc)})"
        assert drawstyle == "default"  # straight segments, not steps
        # the points are the exact operating points: one per distinct score, tied scores in one point
        curve = disc.roc_curve(yy, ss[model].to_numpy())
        np.testing.assert_array_equal(fpr, curve["fpr"].to_numpy())
        np.testing.assert_array_equal(tpr, curve["tpr"].to_numpy())
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoids under the drawn lines
        assert abs(area - auc) <= 1e-9, (model, area, auc)
        assert abs(area - delong.auc(yy, ss[model].to_numpy())) <= 1e-9
    if draw == "roc_panels":  # without calcium every CAC score is 0: one tie, one step from (0, 0) to (1, 1)
        _, fpr, tpr, _ = lines[5 + list(LABELS).index("cac")]
        assert list(fpr) == [0.0, 1.0] and list(tpr) == [0.0, 1.0]
    plt.close(fig)


def test_a_roc_curve_whose_area_is_not_its_auc_is_refused(tied):
    y, scores = tied
    panel = _panel(y, scores)
    # a step drawing of the tied CAC curve encloses less than its AUC; an AUC from other patients differs too
    steps = disc.roc_curve(y, scores["cac"].to_numpy())
    step_area = float(np.sum(np.diff(steps["fpr"]) * steps["tpr"].to_numpy()[:-1]))
    assert panel["aucs"]["cac"] - step_area > 0.01
    wrong = dict(panel, aucs={**panel["aucs"], "cac": step_area})
    with pytest.raises(ValueError, match="ROC curve of 'cac': the area under its points is"):
        plots.roc_panels([wrong], "All-cause mortality")
    assert plots.roc_area([0, 0, 0.5, 1], [0, 0.5, 1, 1]) == 0.875  # the hand case of test_discrimination
    plt.close("all")


def _figures(tied) -> dict:
    """Every figure of the book, on made-up inputs of the chapters' shapes."""
    rng = np.random.default_rng(0)
    y, scores = tied
    panel = _panel(y, scores)
    structures = ["autochthon_left", "costal_cartilages", "iliopsoas_right", "lung_lower_lobe_right", "vertebrae_T12",
                  "heart", "aorta", "esophagus", "rib_left_12", "humerus_left"]
    steps = pd.DataFrame({"label": ["Enrolled in REFINE SPECT (4 sites)", "Used to train and validate the EAT model",
                                    "Remaining participants", "Excluded: incomplete CTAC scan", "Analysed cohort"],
                          "kind": ["main", "exclusion", "main", "exclusion", "main"],
                          "paper": [12000, 800, 11200, 720, 10480], "book": [np.nan] * 4 + [1500]})
    report = pd.DataFrame({"source": np.repeat(["table1", "table2", "supp_table2", "cac_categories", "cohort"], 40),
                           "difference": rng.normal(0, 1, 200), "tolerance": 1.0})
    report["within"] = report["difference"].abs() < 1
    freq = pd.DataFrame({"frequency_cohort": rng.random(60), "frequency_phantoms": rng.random(60)},
                        index=[f"structure_name_{i}_left" for i in range(60)])
    ct = rng.normal(0, 200, (40, 64, 64))
    labels = np.zeros((40, 64, 64), int)
    labels[10:30, 20:40, 20:40] = 3
    synthetic = pd.DataFrame({f"ct__{s}__{f}": rng.normal(100, 30, 300) * (1000 if f == "MeshVolume" else 1)
                              for s in structures[:5] for f in ("Mean", "MeshVolume")})
    ranks = pd.DataFrame([{"structure": s, "by": by, "group": g, "rank": int(rng.integers(1, 11))} for s in structures
                          for by, g in [("all", "all")] + [("site", x) for x in ("Yale", "Cedars-Sinai", "Calgary",
                                                                                  "Columbia")]
                          + [("image_quality", q) for q in ("good", "adequate", "poor")]])
    waterfall = {"values": pd.Series(rng.normal(0, 0.3, 11), index=structures + ["22 other structures"]),
                 "base": -2.6, "title": "SYN40101-000123: risk 0.612 (99th percentile)\n78 y, male, stress TPD 12.3%"}
    time, event = rng.uniform(0, 6, 1500), (rng.random(1500) < 0.07).astype(int)
    km = []
    for group in (np.where(rng.random(1500) < 0.2, "ischemic TPD >= 10%", "ischemic TPD < 10%"),
                  np.where(rng.random(1500) < 0.2, "AI high risk", "AI low risk")):
        km.append({"curve": survival.kaplan_meier(time, event, group, np.linspace(0, 5, 121)),
                   "at_risk": survival.at_risk_table(time, group=group, times=list(range(6))),
                   "labels": {g: g for g in sorted(set(group))}, "title": "split", "note": "log-rank p <0.001"})
    rows = pd.DataFrame({"label": [f"sex: female ({i},678, 36 deaths)" for i in range(6)],
                         "est": rng.uniform(0.6, 3.0, 6), "paper": 1.5,
                         "text": ["3.67 (2.20-6.24), p <0.001"] * 6})
    rows["low"], rows["high"] = rows["est"] * 0.6, rows["est"] * 1.7
    return {
        "supp_fig1": plots.patient_flow(steps),
        "calibration": plots.calibration_dots(report),
        "supp_fig7": plots.structure_frequency(freq, 0.8, "Supplementary Fig. 7 | Frequency of segmented structures",
                                               {"frequency_cohort": "synthetic cohort",
                                                "frequency_phantoms": "phantoms (n = 24)"}),
        "overlay": plots.segmentation_overlay([{"ct": ct, "labels": labels, "spacing": (3.5, 3.5, 7.0),
                                                "name": "phantom-SYN40101-000001"}] * 2, "Segmentations"),
        "bland_altman": plots.bland_altman([{"measured": rng.random(9) * 400, "truth": rng.random(9) * 400,
                                             "label": "Agatston score"},
                                            {"measured": rng.random(9), "truth": rng.random(9),
                                             "label": "calcium volume (mm³)"}], "Coronary calcium"),
        "radiomics": plots.radiomics_distributions(synthetic.head(6), synthetic, structures[:5]),
        "fig1": plots.roc_panels([panel], "All-cause mortality"),
        "fig2a": plots.roc_and_importance(panel, {"values": pd.Series(np.linspace(1, 0.1, 10), index=structures),
                                                  "title": "AI CTAC: top-10 structures", "xlabel": "total gain"},
                                          "All patients: 1,500 patients, 93 deaths"),
        "supp_fig2": plots.importance_heatmap(ranks, structures, "AI CTAC: rank of the structures"),
        "fig4": plots.shap_waterfalls([waterfall] * 3, "AI CTAC: top-10 structures of high-risk patients"),
        "fig3": plots.kaplan_meier_panels(km, "Fig. 3: survival"),
        "forest": plots.forest(rows.rename(columns={"low": "ci_low", "high": "ci_high"}), estimate="est",
                               label="label", paper="paper", text="text", log=True, reference=1.0,
                               xlabel="adjusted hazard ratio (95% CI, log scale)",
                               title="Supplementary Fig. 4: multivariable Cox model of all-cause mortality"),
    }


def test_every_figure_shows_its_text_at_9_points_or_more(tied, tmp_path, recwarn):
    rd = RunDir(tmp_path)
    for name, fig in _figures(tied).items():
        path = rd.write_figure(name, fig)
        plt.close(fig)
        record, dpi, width = figtext.read_record(path)
        assert record["points"] >= plots.SMALL, (name, record)
        shown = figtext.shown_points(record["points"], dpi, width, min(width, SHOWN_WIDTH))
        assert shown >= figtext.MIN_POINTS, (name, f"{width / dpi:.2f} in wide", record, shown)
    # laying the figures out raised no warning (a warning would show on the chapter's page)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]
