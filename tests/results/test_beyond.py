"""Chapter 8's results on the scorecard: rows of the book's own, read from its tables."""

import math

import pandas as pd
import pytest

from ctac_helpers.results import beyond as br
from ctac_helpers.publish import scorecard as sc


def _tables(run_dir):
    t = run_dir / "tables"
    t.mkdir(parents=True)
    cal = pd.DataFrame({
        "model": ["all", "eat", "all", "eat", "cac"], "label": ["All", "EAT", "All", "EAT", "Coronary calcium"],
        "version": ["fold models"] * 2 + ["recalibrated"] * 3,
        "slope": [2.5, 1.1, 0.95, 0.9, 1.0], "slope_low": [2.0, 0.8, 0.7, 0.5, 0.6], "slope_high": [3.0, 1.4, 1.2, 1.3, 1.4],
        "ici": [0.03, 0.01, 0.006, 0.008, 0.007], "miscalibrated": [True, False, False, False, False]})
    cal.to_csv(t / "calibration_metrics.csv", index=False)
    pd.DataFrame({"strategy": ["all", "ai_class", "treat all", "ai_class", "treat all"],
                  "label": ["All", "class", "treat all", "class", "treat all"], "risks": ["fold models", "", "", "", ""],
                  "threshold": [0.1, 0.1, 0.1, 0.094, 0.094], "net_benefit": [0.01, 0.007, -0.04, 0.0072, -0.0353],
                  "at_ai_threshold": [False, False, False, True, True]}).to_csv(t / "decision_summary.csv", index=False)
    rows = []
    for th, nb_all, nb_treat in ((0.05, 0.02, 0.012), (0.1, 0.01, -0.04), (0.2, -0.001, -0.17)):
        rows += [("all", th, nb_all, "recalibrated"), ("treat all", th, nb_treat, "recalibrated"),
                 ("treat none", th, 0.0, "recalibrated"), ("all", th, 0.5, "fold models")]
    pd.DataFrame(rows, columns=["strategy", "threshold", "net_benefit", "risks"]).to_csv(t / "decision_curves.csv",
                                                                                          index=False)
    pd.DataFrame({"model": ["all", "eat", "cac"], "repeats": 3, "auc_ch5": [0.8, 0.55, 0.64],
                  "min": [0.78, 0.50, 0.64], "max": [0.81, 0.56, 0.64]}).to_csv(t / "stability_auc.csv", index=False)
    pd.DataFrame({"seed": [1, 1, 1, 2, 2, 2], "fraction": 1, "model": ["all", "eat", "cac"] * 2,
                  "auc": [0.79, 0.52, 0.64, 0.80, 0.65, 0.64]}).to_csv(t / "stability.csv", index=False)
    pd.DataFrame({"a": ["all", "eat"], "b": ["eat", "cac"], "repeats": [2, 2], "same_sign": [2, 1]}).to_csv(
        t / "stability_differences.csv", index=False)
    pd.DataFrame({"model": ["all"] * 3, "fraction": [0.1, 0.5, 1.0], "n_train": [100, 500, 1000],
                  "auc": [0.6, 0.7, 0.75]}).to_csv(t / "learning_curve.csv", index=False)


def test_own_rows_read_chapter_8s_tables(tmp_path):
    _tables(tmp_path)
    rows = {r["key"]: r for r in br.own_rows(tmp_path)}
    assert set(rows) <= set(br.own_keys()) and set(br.own_keys()) <= set(sc.row_keys())
    assert rows["own/calibration/miscalibrated"]["book"] == "1 of 2"
    assert rows["own/calibration/slope/all"]["book"] == "2.50 (2.00 to 3.00) -> 0.95 (0.70 to 1.20)"
    assert rows["own/calibration/ici/eat"]["book"] == "0.010 -> 0.008"
    assert rows["own/decision/ai_class"]["book"] == "0.72 vs -3.53" and "(0.094)" in rows["own/decision/ai_class"]["quantity"]
    assert rows["own/decision/useful/all"]["book"] == "2 of 3 (0.050 to 0.100)"
    assert rows["own/stability/order"]["book"] == "1 of 2"  # seed 2 puts EAT above calcium
    assert rows["own/stability/auc_range"]["book"] == "0.060 (EAT, 3 repeats)"
    assert rows["own/stability/comparisons"]["book"] == "1 of 2"
    assert rows["own/learning/all"]["book"] == "0.600 (100 patients) -> 0.750 (1,000)"
    for r in rows.values():
        assert r["group"] == "own" and r["within"] is None and math.isnan(r["tolerance"])
        assert r["where"] == "notebooks/08_beyond" and r["paper"] == "not reported in the paper"
    assert br.own_rows(tmp_path / "nothing") == []


def test_the_scorecard_lists_them_last_without_a_criterion(tmp_path):
    _tables(tmp_path)
    table = sc.scorecard(tmp_path)
    own = table[table["group"] == "own"]
    assert len(own) == len(br.own_rows(tmp_path)) and list(table["group"])[-len(own):] == ["own"] * len(own)
    page = sc.scorecard_page(table)
    assert f"{len(own)} further rows are the book's own results (chapter 8), with no paper value" in page
    assert "### Beyond the paper" in page
    line = next(ln for ln in page.splitlines() if "own results" not in ln and "Learning curve" in ln)
    assert line.startswith("| Learning curve (book figure) | AUC of All, smallest training share")
    assert line.endswith("| no paper value | [chapter 8](../notebooks/08_beyond.ipynb) |")


@pytest.mark.parametrize("table, gone", [("calibration_metrics", "own/calibration/"),
                                         ("learning_curve", "own/learning/")])
def test_a_table_of_another_layout_is_left_out(tmp_path, table, gone):
    _tables(tmp_path)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "tables" / f"{table}.csv", index=False)
    keys = {r["key"] for r in br.own_rows(tmp_path)}
    assert not any(k.startswith(gone) for k in keys)
    assert "own/stability/order" in keys
