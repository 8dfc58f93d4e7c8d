"""Tests of ctac_helpers.publish.explorer: the patient record, its figure and the live widget's callbacks.

Three patients: P1 has a tiny CT with a label map (heart, aorta, a lung lobe) and died; P2 and P3
have no scan. The widget is driven as a user would (setting the widgets' values fires the
observers) and its Output is read back.
"""

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from ctac_helpers.publish import explorer as ex  # noqa: E402
from ctac_helpers.core import figtext
from ctac_helpers.core import manifest
from ctac_helpers.publish import plots  # noqa: E402

HEART, AORTA, LUNG = (manifest.structure_id(s) for s in ("heart", "aorta", "lung_upper_lobe_left"))
SHAPE = (8, 12, 10)  # z, y, x
SPACING = (2.0, 2.0, 5.0)  # x, y, z in mm


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def scans(tmp_path):
    ct = np.full(SHAPE, -1000, dtype=np.int16)
    ct[:, 2:10, 2:8] = 40
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:7, 4:8, 3:6] = HEART  # centre (z, y, x) = (4, 5.5 -> 6, 4)
    labels[1:8, 3:5, 6:8] = AORTA
    labels[5:8, 8:10, 2:4] = LUNG
    paths = {}
    for name, arr in (("ct", ct), ("labels", labels)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(SPACING)
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(img, str(paths[name]))
    return pd.DataFrame({"scan_id": ["phantom-P1", "sample-x"], "patient_id": ["P1", "sample-x"],
                         "dataset": ["phantom", "sample"], "ct_path": [str(paths["ct"])] * 2,
                         "label_path": [str(paths["labels"])] * 2})


@pytest.fixture
def cohort():
    return pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "age": [70.0, 55.0, 62.0],
                         "sex": ["male", "female", "male"], "stress_tpd": [12.0, 3.0, 5.0],
                         "cac_score": [400.0, 0.0, 10.0], "death": [1, 0, 1],
                         "followup_years": [2.0, 5.5, 1.25]})


@pytest.fixture
def predictions():
    scores = {"all": [0.5, 0.2, 0.1], "ai_ctac": [0.3, 0.4, 0.05], "cac": [400.0, 0.0, 10.0],
              "perfusion": [12.0, 3.0, 5.0]}
    rows = [{"patient_id": p, "fold": i % 2, "model": m, "score": s[i]}
            for m, s in scores.items() for i, p in enumerate(["P1", "P2", "P3"])]
    return pd.DataFrame(rows)


@pytest.fixture
def shap():
    # as written by chapter 5: patient_id column, one column per structure, bias last
    return pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "heart": [0.3, -0.1, 0.0],
                         "aorta": [-0.5, 0.2, 0.01], "lung_upper_lobe_left": [0.1, 0.05, -0.3],
                         "coronary_calcium": [0.05, 0.0, 0.02], "bias": [-2.0, -2.0, -2.0]})


@pytest.fixture
def explorer(cohort, predictions, shap, scans):
    return ex.explorer(cohort, predictions, shap, scans, k=3, dpi=40)


def _png(output):
    data = base64.b64decode(output["data"]["image/png"])
    assert data.startswith(b"\x89PNG")
    return data


def _texts(widget_output):
    return [o["data"]["text/plain"] for o in widget_output.outputs]


# -- tables -------------------------------------------------------------------------------------------
def test_risk_table_percentiles_class_and_outcome(cohort, predictions):
    t = ex.risk_table(cohort, predictions)
    assert list(t.index) == ["P1", "P2", "P3"]
    assert t["score__all"].tolist() == [0.5, 0.2, 0.1]
    assert t["percentile__all"].tolist() == pytest.approx([100, 200 / 3, 100 / 3])
    assert t["percentile__ai_ctac"].tolist() == pytest.approx([200 / 3, 100, 100 / 3])
    # one patient of three has stress TPD >= 10%: the matched threshold flags the highest All score
    assert t.attrs["threshold"] == 0.5 and t.attrs["class_model"] == "all"
    assert t["ai_high_risk"].tolist() == [True, False, False]
    assert t["death"].tolist() == [1, 0, 1]
    # models in the book's order
    assert [c for c in t.columns if c.startswith("score__")] == ["score__cac", "score__perfusion", "score__ai_ctac",
                                                                 "score__all"]


def test_risk_table_rejects_bad_predictions(cohort, predictions):
    with pytest.raises(ValueError, match="twice"):
        ex.risk_table(cohort, pd.concat([predictions, predictions.head(1)]))
    with pytest.raises(ValueError, match="class_model 'ai_hybrid' not in the predictions"):
        ex.risk_table(cohort, predictions, class_model="ai_hybrid")
    with pytest.raises(ValueError, match="stress_tpd"):
        ex.risk_table(cohort.drop(columns="stress_tpd"), predictions)


def test_patient_record_numbers(cohort, predictions, shap, scans):
    rec = ex.patient_record("P1", cohort, predictions, shap, scans, k=3)
    assert rec["risk"] == 0.5 and rec["risk_percentile"] == pytest.approx(100)
    assert rec["ai_high_risk"] is True and rec["threshold"] == 0.5
    assert rec["death"] == 1 and rec["outcome"] == "died at 2.0 years"
    assert rec["clinical"] == {"age": 70.0, "sex": "male", "stress_tpd": 12.0, "cac_score": 400.0}
    # top 3 by |SHAP|, largest first, bias never a structure
    assert list(rec["shap"].index) == ["aorta", "heart", "lung_upper_lobe_left"]
    assert rec["shap"].tolist() == [-0.5, 0.3, 0.1]
    assert rec["shap_base"] == -2.0 and rec["shap_margin"] == pytest.approx(-2.05)
    assert rec["scan"]["scan_id"] == "phantom-P1"
    r = rec["risks"].set_index("model")
    assert r.loc["ai_ctac", "score"] == 0.3 and r.loc["ai_ctac", "percentile"] == pytest.approx(200 / 3)
    assert r.loc["all", "label"] == "All" and r.loc["cac", "kind"] == "univariate"

    other = ex.patient_record("P2", cohort, predictions, shap, scans)
    assert other["scan"] is None and other["ai_high_risk"] is False
    assert other["outcome"] == "alive at last follow-up (5.5 years)"
    # default k=10 keeps every structure except coronary_calcium, whose SHAP value is 0 for P2
    assert list(other["shap"].index) == ["aorta", "heart", "lung_upper_lobe_left"]


def test_patient_record_without_shap_or_patient(cohort, predictions, shap, scans):
    rec = ex.patient_record("P3", cohort, predictions, shap[shap["patient_id"] != "P3"], None)
    assert rec["shap"].empty and np.isnan(rec["shap_margin"]) and rec["scan"] is None
    # a structure with a SHAP value of exactly 0 (never split on) is not among the patient's drivers
    rec = ex.patient_record("P3", cohort, predictions, shap, scans)
    assert list(rec["shap"].index) == ["lung_upper_lobe_left", "coronary_calcium", "aorta"]
    with pytest.raises(KeyError, match="P9"):
        ex.patient_record("P9", cohort, predictions, shap, scans)


def test_example_patients(cohort, predictions, scans):
    risks = ex.risk_table(cohort, predictions)
    chosen = ex.example_patients(risks, scans)
    # P1 is the only imaged patient; the highest-risk death left is P3; the only survivor is P2
    assert chosen.to_dict("list") == {"patient_id": ["P1", "P3", "P2"],
                                      "reason": ["highest risk with a CT scan", "highest-risk death",
                                                 "lowest-risk survivor"],
                                      "has_scan": [True, False, False]}
    assert ex.example_patients(risks, scans, model="ai_ctac", n=2)["patient_id"].tolist() == ["P1", "P3"]
    with pytest.raises(ValueError):
        ex.example_patients(risks, scans, n=4)


def test_example_patients_without_scans_fall_back_to_everyone(cohort, predictions):
    risks = ex.risk_table(cohort, predictions)
    # without scans the first rule finds nobody; the death and the survivor still come from all patients
    assert ex.example_patients(risks, None).to_dict("list") == {
        "patient_id": ["P1", "P2"], "reason": ["highest-risk death", "lowest-risk survivor"],
        "has_scan": [False, False]}


# -- figures ------------------------------------------------------------------------------------------
def test_slice_centre_and_load_scan(scans):
    images = ex.load_scan(scans.iloc[0])
    assert images["ct"].shape == SHAPE and images["spacing"] == SPACING
    assert images["centre"] == (4, 6, 4) == ex.slice_centre(images["labels"])
    assert ex.slice_centre(np.zeros((4, 6, 8), dtype=np.uint8)) == (2, 3, 4)


def test_patient_figure_with_scan(cohort, predictions, shap, scans):
    rec = ex.patient_record("P1", cohort, predictions, shap, scans, k=3)
    fig = ex.patient_figure(rec)
    axial, coronal, bars, text = fig.axes
    assert len(fig.axes) == 4
    assert axial.get_title() == "phantom-P1: axial slice 4"  # the heart's centre
    assert coronal.get_title().startswith("coronal slice 6")
    assert bars.get_title() == "AI CTAC: top-3 structures by |SHAP|"
    assert text.get_title() == "Risk and outcome" and fig.get_suptitle() == "Patient P1"
    # bars from top to bottom in the record's SHAP order, coloured by sign
    patches = sorted(bars.patches, key=lambda p: -p.get_y())
    assert [p.get_width() for p in patches] == pytest.approx([-0.5, 0.3, 0.1])
    ticks = sorted(zip(bars.get_yticks(), [t.get_text() for t in bars.get_yticklabels()]), reverse=True)
    assert [name for _, name in ticks] == ["aorta", "heart", "lung upper lobe left"]
    assert matplotlib.colors.to_hex(patches[0].get_facecolor()) == ex.LOWERS.lower()
    assert matplotlib.colors.to_hex(patches[1].get_facecolor()) == ex.RAISES.lower()
    # CT + overlay in both views; the top structures visible on the slice are outlined
    assert len(axial.images) == 2 and len(coronal.images) == 2
    assert len(axial.collections) == 2  # heart and aorta cross slice 4, the lung lobe does not
    panel = text.texts[0].get_text()
    assert "Risk (All model): 0.500, 100th percentile" in panel
    assert "AI class: HIGH risk" in panel and "died at 2.0 years" in panel and "AI CTAC: 0.300 (67th)" in panel

    fig7 = ex.patient_figure(rec, ex.load_scan(rec["scan"]), z=7)
    assert fig7.axes[0].get_title().endswith("axial slice 7")
    assert len(fig7.axes[0].collections) == 2  # aorta and lung lobe; the heart ends at slice 6
    with pytest.raises(ValueError, match="outside the scan"):
        ex.patient_figure(rec, z=SHAPE[0])


def test_patient_figure_without_scan(cohort, predictions, shap, scans):
    rec = ex.patient_record("P2", cohort, predictions, shap, scans, k=2)
    fig = ex.patient_figure(rec)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == ex.NO_SCAN and "no CT scan in this run" in fig.axes[0].texts[0].get_text()
    assert fig.axes[1].get_title() == "AI CTAC: top-2 structures by |SHAP|"
    assert "AI class: low risk" in fig.axes[2].texts[0].get_text()
    # a patient without SHAP values: the bar panel says so instead of drawing nothing
    rec = ex.patient_record("P2", cohort, predictions, shap[shap["patient_id"] != "P2"], scans)
    bars = ex.patient_figure(rec).axes[1]
    assert bars.get_title() == "AI CTAC: no SHAP values" and not bars.patches


def test_examples_figure_stacks_patients(cohort, predictions, shap, scans):
    recs = [ex.patient_record(p, cohort, predictions, shap, scans) for p in ("P1", "P2")]
    fig = ex.examples_figure(recs)
    assert [sf.get_suptitle() for sf in fig.subfigs] == ["Patient P1", "Patient P2"]
    assert [len(sf.axes) for sf in fig.subfigs] == [4, 3]
    # as wide as the page at most, no text under 9 pt: the page shows it at its own size
    assert fig.get_size_inches()[0] <= plots.PAGE_WIDTH
    assert figtext.text_record(fig)["points"] >= figtext.MIN_POINTS
    with pytest.raises(ValueError):
        ex.examples_figure([])


# -- the live explorer ------------------------------------------------------------------------------
def test_explorer_starts_on_the_imaged_patients(explorer):
    # samples (not in the cohort) are left out; the list starts with the patients who have a scan
    assert explorer.imaged == ["P1"]
    assert explorer.only_with_scans.value is True
    assert [v for _, v in explorer.dropdown.options] == ["P1"]
    assert explorer.dropdown.options[0][0] == "P1 | risk 0.500 (100th) | died | CT"
    assert explorer.record["patient_id"] == "P1"
    assert explorer.slider.max == SHAPE[0] - 1 and explorer.slider.value == 4 and not explorer.slider.disabled
    assert _texts(explorer.output) == ["<patient P1: axial slice 4>"]
    _png(explorer.output.outputs[0])


def test_dropdown_change_renders_the_new_patient(explorer):
    first = _png(explorer.output.outputs[-1])
    explorer.only_with_scans.value = False  # the checkbox's observer lists every patient
    assert [v for _, v in explorer.dropdown.options] == ["P1", "P2", "P3"]
    assert explorer.dropdown.value == "P1" and explorer.record["patient_id"] == "P1"

    explorer.dropdown.value = "P2"  # what the user's choice does
    assert explorer.record["patient_id"] == "P2"
    texts = _texts(explorer.output)
    assert len(texts) == 2 and texts[0].startswith("P2: no CT scan in this run")
    assert texts[1] == "<patient P2: no CT scan>"
    assert _png(explorer.output.outputs[-1]) != first
    assert explorer.slider.disabled and explorer.z is None
    assert len(explorer.figure.axes) == 3 and explorer.figure.get_suptitle() == "Patient P2"

    explorer.dropdown.value = "P1"
    assert _texts(explorer.output) == ["<patient P1: axial slice 4>"]
    assert not explorer.slider.disabled and explorer.figure.axes[0].get_title().endswith("axial slice 4")


def test_slider_change_moves_the_axial_slice(explorer):
    before = _png(explorer.output.outputs[-1])
    explorer.slider.value = 2
    assert explorer.z == 2
    assert explorer.figure.axes[0].get_title() == "phantom-P1: axial slice 2"
    assert _texts(explorer.output) == ["<patient P1: axial slice 2>"]
    assert _png(explorer.output.outputs[-1]) != before
    explorer.set_slice(6)  # the callback itself moves the slider too
    assert explorer.slider.value == 6 and _texts(explorer.output) == ["<patient P1: axial slice 6>"]
    # a new patient resets the slice to the heart
    explorer.select("P1")
    assert explorer.slider.value == 4 and explorer.z == 4


def test_selecting_a_patient_without_scan_while_filtered(explorer):
    explorer.select("P3")
    assert explorer.only_with_scans.value is False
    assert explorer.dropdown.value == "P3" and len(explorer.dropdown.options) == 3
    assert _texts(explorer.output)[0].startswith("P3: no CT scan")
    explorer.slider.value = 0  # no scan: a slider move changes nothing
    assert explorer.record["patient_id"] == "P3" and explorer.z is None
    explorer.only_with_scans.value = True  # back to the imaged list: the shown patient follows it
    assert explorer.dropdown.value == "P1" and explorer.record["patient_id"] == "P1"
    assert _texts(explorer.output) == ["<patient P1: axial slice 4>"]


def test_explorer_without_any_scan(cohort, predictions, shap):
    e = ex.explorer(cohort, predictions, shap, None, dpi=40)
    assert e.only_with_scans.value is False and e.only_with_scans.disabled
    assert e.dropdown.value == "P1" and _texts(e.output)[0].startswith("P1: no CT scan")


def test_a_failing_callback_says_so_in_the_output(explorer, scans):
    explorer.only_with_scans.value = False
    explorer.dropdown.value = "P2"
    explorer._images.clear()
    for path in (scans["ct_path"].iloc[0], scans["label_path"].iloc[0]):
        open(path, "wb").close()  # the scan is gone (a moved run directory)
    explorer.dropdown.value = "P1"
    assert len(explorer.output.outputs) == 1
    assert _texts(explorer.output)[0].startswith("Could not show patient P1")
