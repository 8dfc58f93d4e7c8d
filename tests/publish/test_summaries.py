"""Chapter summaries in words: every number of a sentence comes from the tables it is given."""

import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.imaging import structure_frequency
from ctac_helpers.publish import scorecard as sc
from ctac_helpers.publish import summaries


def _rows(*rows):
    base = {"group": "held_out", "item": "supp_table3", "paper": "p", "book": "b", "difference": float("nan"),
            "tolerance": float("nan"), "criterion": "", "where": "notebooks/05_models"}
    return pd.DataFrame([{**base, **r} for r in rows], columns=sc.COLUMNS)


def test_scorecard_text_counts_and_lists_the_misses():
    rows = _rows({"key": "supp_table3/auc/all", "quantity": "AUC, All", "within": True},
                 {"key": "supp_table3/auc/cac", "quantity": "AUC, CAC", "within": False},
                 {"key": "calibration/within", "quantity": "summary", "within": None})
    text = summaries.scorecard_text(rows, notes={"supp_table3/auc/cac": "A reason."})
    assert text.startswith("Of the 2 results of the paper this chapter reproduces and the replication scorecard "
                           "judges, **1 hold**; 1 does not:")
    assert "- **AUC, CAC** (Supplementary Table 3, held out): paper p; this book b. *Why:* A reason." in text
    assert summaries.scorecard_text(rows.iloc[:1], notes={}).endswith("**1 hold**.")
    assert "can be judged" in summaries.scorecard_text(rows.iloc[2:], notes={})


def test_chapter_scorecard_keeps_the_chapters_rows(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "supp_table3.csv").write_text(
        "model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference\n"
        "all,All,1000,60,0.79,0.7,0.85,0.8,0.74-0.87,\n")
    (tmp_path / "tables" / "ai_threshold.csv").write_text(
        "threshold,share,n_flagged,reference,reference_share,n_reference,n,paper_threshold,paper_share_percent\n"
        "0.2,0.04,40,x,0.04,40,1000,0.17,4.13\n")
    rows = summaries.chapter_scorecard(tmp_path, "05_models")
    assert set(rows["where"]) == {"notebooks/05_models"} and "supp_table3/auc/all" in set(rows["key"])
    assert "fig3/ai_threshold" not in set(rows["key"])


def _table2():
    rows = [("n", "", "death", 60, None), ("n", "", "alive", 940, None),
            ("age", "", "death", 60, 71.0), ("age", "", "alive", 940, 64.0),
            ("smoking", "", "death", 60, None), ("smoking", "", "alive", 940, None),
            ("diabetes", "", "death", 60, None), ("diabetes", "", "alive", 940, None)]
    p = {"age": 1e-6, "smoking": 0.5, "diabetes": 0.4}  # the paper: age <0.001, smoking 0.913, diabetes <0.001
    return pd.DataFrame([{"variable": v, "label": v.title(), "level": lvl, "group": g, "n": n, "median": m,
                          "p_value": p.get(v, float("nan"))} for v, lvl, g, n, m in rows])


def test_cohort_text():
    text = summaries.cohort_text(_table2())
    assert "1,000 patients, of whom 60 (6.0%) died during follow-up (the paper: 6.2%)" in text
    assert "median 71 against 64 years (the paper: 71 against 64)" in text
    assert "Of the 3 characteristics whose difference between deaths and survivors Table 2 tests, 2 are " \
           "significant (p < 0.05) here exactly where they are in the paper; the others: Diabetes." in text


def _freq(rows, n):
    presence = pd.DataFrame([{"scan_id": f"s{i}", "structure": s, "status": status}
                             for s, statuses in rows.items() for i, status in enumerate(statuses)])
    assert all(len(v) == n for v in rows.values())
    return structure_frequency(presence)


def test_selection_text_gives_each_difference_its_reason():
    cohort = _freq({"heart": ["present"] * 10, "liver": ["present"] * 9 + ["absent"],
                    "scapula_left": ["present"] * 9 + ["truncated"], "vertebrae_T2": ["present"] * 7 + ["absent"] * 3,
                    "aorta": ["present"] * 9 + ["absent"]}, 10)
    phantoms = _freq({"heart": ["present"] * 4, "liver": ["truncated"] * 4, "scapula_left": ["absent"] * 4,
                      "vertebrae_T2": ["present"] * 4, "rib_left_3": ["present"] * 4,
                      "aorta": ["present"] * 2 + ["absent"] * 2}, 4)
    text = summaries.selection_text({"synthetic cohort": cohort, "phantoms": phantoms}, 0.8, 33,
                                    modelled=["heart", "liver", "scapula_left", "vertebrae_T2", "aorta"])
    assert text.startswith("The > 80% rule keeps 4 structures in the synthetic cohort; 3 structures in the "
                           "phantoms; the paper keeps 33.")
    assert ("The phantoms keep 2 structures the synthetic cohort does not: 1 is not among the structures the "
            "synthetic cohort models at all (rib left 3); 1 is present in 80% or fewer of the synthetic cohort's "
            "patients (vertebrae T2 70%).") in text
    assert ("The synthetic cohort keeps 3 structures the phantoms do not: 1 is on none of them (scapula left); "
            "1 is cut by the edge of the field of view on some (liver on 4 of 4); 1 is present on 80% or fewer of "
            "them (aorta).") in text
    # one source: its count only
    assert summaries.selection_text({"site scans": phantoms}, 0.8, 33) == (
        "The > 80% rule keeps 3 structures in the site scans; the paper keeps 33.")


def test_eat_density_text():
    truth = pd.DataFrame({"true_eat_density_hu": [-93.5, -100.2, -106.4], "patient_eat_density_hu": [-58.4, -60.3, -75.3],
                          "hu_offset": [0.0, -5.0, 4.0]})
    text = summaries.eat_density_text(truth, -35.0)
    assert "runs from -106 to -94 HU, their patients' (the synthetic cohort's values, which the models read) from " \
           "-75 to -58 HU" in text
    assert "shifted by -35 HU (`phantom.EAT_DENSITY_SHIFT_HU`) plus its site's scanner offset (-5 to +4 HU here)" in text
    assert "at most 0.1 HU more" in text
    assert "cannot be set beside" in summaries.eat_density_text(truth.iloc[:0], -35.0)


def test_cac_eat_text():
    cac = pd.DataFrame({"error": [0.0, -2.5, 1.0], "within": [True, True, False]})
    eat = pd.DataFrame({"measured_density_hu": [-90.0, -95.0, -100.0], "true_density_hu": [-90.5, -95.0, -103.0],
                        "volume_within": [True, True, True], "density_within": [True, True, False]})
    text = summaries.cac_eat_text(cac, eat, pd.Series([True, True, True]))
    assert text.startswith("On 3 phantoms, the measured Agatston score is within the book's criterion on 2 (largest "
                           "error 2.5 units) and puts 3 in their true CAC category; the EAT volume is within its "
                           "criterion on 3 and the EAT density on 2 (largest difference 3.0 HU).")
    assert summaries.cac_eat_text(cac.iloc[:0], eat.iloc[:0], pd.Series([], dtype=bool)).startswith("No phantom")


def test_radiomics_text():
    agreement = pd.DataFrame({"max_relative_difference": [1e-14, 3.3e-13]})
    assert summaries.radiomics_text(agreement, 46, 6, 32) == (
        "The chapter measures 32 features on each of 46 structures in 6 scans. On the 2 structures checked, the "
        "book's one-pass computation equals PyRadiomics' own extractor to a relative difference of at most 3.3e-13, "
        "rounding error of floating-point arithmetic.")


def test_models_text():
    table3 = pd.DataFrame({"model": ["eat", "cac", "all", "ai_ctac"], "label": ["EAT", "Coronary calcium", "All", "AI CTAC"],
                           "auc": [0.55, 0.66, 0.74, 0.76], "ci_low": [0.5, 0.6, 0.7, 0.71],
                           "ci_high": [0.6, 0.7, 0.78, 0.8], "paper_auc": [0.56, 0.64, 0.80, 0.78]})
    text = summaries.models_text(table3)
    assert text.startswith("In all patients the best model is **AI CTAC**, AUC 0.760 (0.710-0.800); in the paper it "
                           "is All (AUC 0.80). The All model's AUC is 0.740 (0.700-0.780).")
    assert text.endswith("The models in order of AUC: AI CTAC 0.760, All 0.740, Coronary calcium 0.660, EAT 0.550.")
    table3.loc[table3["model"] == "all", "auc"] = 0.77
    assert ", as in the paper (AUC 0.80)." in summaries.models_text(table3)


def test_subgroups_text():
    fig3 = pd.DataFrame({"comparison": ["sex", "sex", "age", "age"], "subgroup": ["male", "female", "<65", ">=65"],
                         "auc": [0.75, 0.72, 0.79, 0.70], "p": [0.47, 0.47, 0.01, 0.01],
                         "paper_p": ["0.08", "0.08", "0.16", "0.16"]})
    assert summaries.subgroups_text(fig3) == (
        "The All model's AUC by sex, male 0.750 and female 0.720 do not differ significantly (p = 0.470, as in the "
        "paper); by age, <65 0.790 and >=65 0.700 differ significantly (p = 0.010, where the paper's do not).")


def test_survival_text():
    bound = manifest.paper_entry("supp_table7")["values"]["mean_adjusted_hr_all_subgroups_above"]
    table7 = pd.DataFrame({"subgroup": ["all patients", "men", "women"], "hr": [3.7, bound + 1, None]})
    nri = pd.DataFrame({"component": ["nri_events", "nri_overall"], "estimate_pct": [9.2, 9.6],
                        "ci_low_pct": [-1.7, -1.2], "ci_high_pct": [19.6, 20.2]})
    text = summaries.survival_text({"threshold": 0.0809, "share": 0.0367, "n_flagged": 55}, table7, nri)
    assert text.startswith("The AI high-risk class (score 0.081 or above) holds 55 patients (3.7%)")
    assert f"exceeds {bound:g} in 1 of 2 subgroups (the paper: in all), lowest 3.70 in all patients." in text
    assert "overall NRI of 9.6% (-1.2 to 20.2; the paper: 16.1%)." in text
