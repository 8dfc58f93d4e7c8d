"""The replication scorecard on a hand-written run directory, and its generated pages."""

import copy
import math
import shutil

import pandas as pd
import pytest

from ctac_helpers.core import manifest
from ctac_helpers.publish import scorecard as sc

TOL = sc.scorecard_tolerances()
PAPER = manifest.paper_values()


def _write(run_dir, table_id, text):
    (run_dir / "tables").mkdir(parents=True, exist_ok=True)
    (run_dir / "tables" / f"{table_id}.csv").write_text(text.strip() + "\n")


def _paper_with(monkeypatch, **changes):
    """Patch paper_values.yaml's mapping: ``changes`` replace (or, as None, remove) top-level entries."""
    values = copy.deepcopy(PAPER)
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    monkeypatch.setattr(manifest, "paper_values", lambda: values)
    return values


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding a few of the tables the scorecard reads (others are absent)."""
    rd = tmp_path / "run"
    # the paper: All 0.80, coronary calcium 0.64; 0.019 off is within 0.02, 0.021 off is not
    _write(rd, "supp_table3", """
model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,1000,60,0.781,0.70,0.85,0.8,0.74-0.87,
cac,Coronary calcium,1000,60,0.661,0.60,0.80,0.64,0.57-0.71,
ai_spect,AI SPECT,1000,60,0.6,0.5,0.7,,,
""")
    _write(rd, "supp_table3_delong", """
a,b,comparison,auc_a,auc_b,difference,ci_low,ci_high,p,p_text,paper_p
all,cac,All vs Coronary calcium,0.78,0.74,0.04,0.01,0.07,1e-05,<0.001,<0.001
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.77,0.78,-0.01,-0.02,-0.005,1e-4,<0.001,<0.001
ai_ctac,cac,AI CTAC vs Coronary calcium,0.78,0.77,0.01,-0.01,0.03,0.2,0.200,<0.001
all,eat,All vs EAT,0.78,0.55,0.23,0.2,0.26,1e-09,<0.001,
""")
    _write(rd, "supp_table4_delong", """
a,b,comparison,auc_a,auc_b,difference,ci_low,ci_high,p,p_text,paper_p
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.75,0.76,-0.01,-0.03,0.01,0.369,0.369,0.384
""")
    _write(rd, "supp_table10", """
model,label,auc_15,ci_15,auc_32,ci_32,difference,p,p_text,paper_p
ai_hybrid,AI hybrid,0.77,0.75-0.79,0.76,0.74-0.78,0.01,0.01,0.010,<0.05 (15 better)
all,All,0.76,0.74-0.78,0.76,0.74-0.78,0.0,0.331,0.331,0.09
ai_ctac,AI CTAC,0.75,0.73-0.77,0.77,0.75-0.79,-0.02,0.01,0.010,0.40
""")
    # the paper: male 0.77, female 0.79, <65 0.79, >=65 0.74, black 0.70, white 0.84; p 0.08, 0.16, 0.74
    _write(rd, "supp_fig3", """
comparison,subgroup,n,events,auc,ci_low,ci_high,p,paper_auc,paper_p
sex,male,500,30,0.799,0.7,0.9,0.3,0.77,0.08
sex,female,500,30,0.821,0.7,0.9,0.3,0.79,0.08
age,<65,500,30,0.75,0.7,0.8,0.01,0.79,0.16
age,>=65,500,30,0.74,0.7,0.8,0.01,0.74,0.16
race,black,100,10,0.86,0.7,0.95,0.5,0.7,0.74
race,white,800,50,0.84,0.8,0.9,0.5,0.84,0.74
""")
    _write(rd, "supp_fig4", """
covariate,hr,ci_low,ci_high,p,n,events,paper_hr,paper_ci
abnormal_perfusion,1.6,1.3,1.9,1e-6,1000,60,1.71,1.46-2.01
cac_gt400,1.2,1.0,1.5,0.01,1000,60,2.11,1.67-2.65
age,1.03,1.02,1.04,1e-10,1000,60,,
""")
    _write(rd, "nri", """
component,estimate,se,ci_low,ci_high,p,n_resamples,estimate_pct,ci_low_pct,ci_high_pct,paper_pct,paper_ci,paper_p
nri_events,0.16,0.02,0.12,0.2,1e-5,100,16.0,12.0,20.0,15.1,11.4-18.8,<0.001
nri_overall,0.30,0.02,0.26,0.34,1e-5,100,30.0,26.0,34.0,16.1,12.4-19.8,<0.001
""")
    _write(rd, "fig3_logrank", """
split,group,n,deaths,chi2,df,p
tpd,TPD < 10%,950,50,10,1,1e-3
tpd,TPD >= 10%,50,10,10,1,1e-3
ai,AI high risk,50,20,40,1,1e-9
ai,AI low risk,950,40,40,1,1e-9
""")
    _write(rd, "ai_threshold", """
threshold,share,n_flagged,reference,reference_share,n_reference,n,paper_threshold,paper_share_percent
0.26,0.05,50,stress TPD >= 10%,0.05,50,1000,0.17,4.13
""")
    _write(rd, "fig2", """
structure,importance,share,rank,rank_shap_all,rank_shap_normal_perfusion,rank_shap_no_cac
lung_upper_lobe_right,10,0.3,1,1,2,
heart,8,0.2,2,2,1,
""")
    _write(rd, "table1", """
table,variable,label,level,group,n_group,n,percent,median,q1,q3,p_value,test,display,p_display
table1,n,N,,all,1000,1000,100,,,,,,1000,
table1,n,N,,male,1000,548,54.8,,,,,,548 (54.8),
table1,death,Mortality,,all,1000,90,9.0,,,,0.01,Pearson chi-square,90 (9.0),0.010
""")
    _write(rd, "calibration", """
source,variable,level,group,statistic,paper,synthetic,difference,tolerance,within,note
table1,n,,male,percent,54.8,54.8,0,1.5,True,
table1,death,,all,percent,6.2,9.0,2.8,1.5,False,
cohort,followup_years,,all,median,2.9,3.0,0.1,0.2,True,
""")
    return rd


def _row(table, quantity_part):
    hit = table[table["quantity"].str.contains(quantity_part, regex=False)]
    assert len(hit) == 1, (quantity_part, list(table["quantity"]))
    return hit.iloc[0]


def _key(table, key):
    hit = table[table["key"] == key]
    assert len(hit) == 1, (key, list(table["key"]))
    return hit.iloc[0]


def test_scorecard_columns_and_items(run_dir):
    table = sc.scorecard(run_dir)
    assert list(table.columns) == sc.COLUMNS
    assert table["difference"].dtype == float and table["tolerance"].dtype == float
    assert set(table["within"].map(type)) <= {bool, type(None)}
    assert table["key"].is_unique and set(table["key"]) <= set(sc.row_keys())
    assert set(table["group"]) == {"fitted", "held_out", "margins"}
    # one AUC row per published number; the unpublished AI SPECT interval, EAT p and age HR give none
    assert list(table.loc[table["key"].str.startswith("supp_table3/auc/"), "key"]) == [
        "supp_table3/auc/all", "supp_table3/auc/cac"]
    assert not table["key"].isin(["supp_table3/auc/ai_spect", "supp_table3/delong/all-eat"]).any()
    assert "supp_fig4/hr/age" not in set(table["key"])
    assert table.loc[table["item"] == "supp_table3", "where"].eq("notebooks/05_models").all()
    assert table.loc[table["item"] == "supp_fig4", "where"].eq("notebooks/07_survival_nri").all()


def test_row_keys_follow_the_paper_values():
    keys = sc.row_keys()
    assert len(keys) == len(set(keys))
    for model, value in PAPER["supp_table3"]["auc"].items():
        assert (f"supp_table3/auc/{model}" in keys) is (value[0] is not None)
    for c in PAPER["supp_table5"]["delong_p"]:
        assert f"supp_table5/delong/{c['a']}-{c['b']}" in keys
    assert {f"supp_fig3/delong/{c}" for c in PAPER["supp_fig3"]["p"]} <= set(keys)
    assert {"fig3/high_risk_percent", "nri/events", "supp_fig4/hr/cac_gt400", "calibration/within"} <= set(keys)


# -- tolerances -------------------------------------------------------------------------------------
def test_auc_tolerance_is_strict(run_dir):
    assert TOL["auc"] == 0.02 and TOL["subgroup_auc"] == 0.03 and TOL["percent"] == 1.5
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_table3/auc/all")
    assert r["quantity"] == "AUC, All, all patients"
    assert r["paper"] == "0.80 (0.74-0.87)" and r["book"] == "0.781 (0.700-0.850)"
    assert r["difference"] == pytest.approx(-0.019) and r["tolerance"] == 0.02 and r["within"] is True
    assert r["criterion"] == "-0.019 (±0.02)"
    r = _key(table, "supp_table3/auc/cac")
    assert r["difference"] == pytest.approx(0.021) and r["within"] is False


def test_subgroup_auc_tolerance(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_fig3/auc/male")
    assert r["difference"] == pytest.approx(0.029) and r["tolerance"] == 0.03 and r["within"] is True
    assert _key(table, "supp_fig3/auc/female")["within"] is False  # 0.031 off
    assert _key(table, "supp_fig3/auc/age_lt65")["quantity"] == "AUC of the All model, age: <65"


def test_hazard_ratios_and_nri_inside_the_paper_interval(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_fig4/hr/abnormal_perfusion")
    assert r["paper"] == "1.71 (1.46-2.01)" and r["book"] == "1.60 (1.30-1.90)"
    assert r["difference"] == pytest.approx(1.6 - 1.71) and math.isnan(r["tolerance"])
    assert r["criterion"] == "inside the paper's CI, 1.46 to 2.01" and r["within"] is True
    assert _key(table, "supp_fig4/hr/cac_gt400")["within"] is False  # 1.2 below 1.67
    r = _key(table, "nri/events")
    assert r["paper"] == "15.1 (11.4-18.8)" and r["book"] == "16.0 (12.0-20.0)" and r["within"] is True
    assert _key(table, "nri/overall")["within"] is False  # 30.0 above 19.8


@pytest.mark.parametrize("hr, within", [(1.46, True), (2.01, True), (1.45, False), (2.02, False)])
def test_interval_bounds_are_inclusive(run_dir, hr, within):
    _write(run_dir, "supp_fig4", f"""
covariate,hr,ci_low,ci_high,p,n,events,paper_hr,paper_ci
abnormal_perfusion,{hr},1.3,2.5,1e-6,1000,60,1.71,1.46-2.01
""")
    assert _key(sc.scorecard(run_dir), "supp_fig4/hr/abnormal_perfusion")["within"] is within


def test_percent_and_threshold_rows(run_dir):
    table = sc.scorecard(run_dir)
    paper = PAPER["fig3"]["values"]["ai_high_risk_percent"]
    r = _key(table, "fig3/high_risk_percent")
    assert r["book"] == "5.00% (50 of 1,000)" and r["tolerance"] == 1.5
    assert r["difference"] == pytest.approx(5.0 - paper) and r["within"] is (abs(5.0 - paper) <= 1.5)
    for n_high, within in ((55, True), (57, False)):  # 5.5% and 5.7% against 4.13%
        _write(run_dir, "fig3_logrank", f"split,group,n,deaths,chi2,df,p\nai,AI high risk,{n_high},20,40,1,1e-9\n"
                                        f"ai,AI low risk,{1000 - n_high},40,40,1,1e-9\n")
        assert _key(sc.scorecard(run_dir), "fig3/high_risk_percent")["within"] is within
    r = _key(table, "fig3/ai_threshold")
    assert (r["paper"], r["book"]) == ("0.17", "0.260") and r["difference"] == pytest.approx(0.09)
    assert r["tolerance"] == TOL["threshold"] and r["within"] is False


def test_cohort_rows_use_the_calibration_tolerance(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "table1/n")
    assert r["paper"] == "10,480" and r["book"] == "1,000" and r["within"] is False
    assert r["difference"] == -9480 and r["tolerance"] == TOL["count"] and r["criterion"] == "-9,480 (exact)"
    r = _key(table, "table1/male_percent")
    assert r["book"] == "548 (54.8%)" and r["tolerance"] == 1.5 and r["within"] is True
    r = _key(table, "table1/death_percent")
    assert r["difference"] == pytest.approx(2.8) and r["within"] is False
    r = _key(table, "cohort/followup_median")
    assert r["item"] == "cohort" and r["where"] == "notebooks/00_data" and r["within"] is True
    r = _key(table, "calibration/within")
    assert r["book"] == "2 of 3 within" and r["within"] is None and math.isnan(r["difference"])
    # the calibration table has no row for these
    assert not table["key"].isin(["cohort/followup_q1", "supp_table2/normal_percent"]).any()
    assert table.loc[table["key"].str.match(r"(table1|cohort|calibration)/"), "group"].eq("margins").all()


# -- comparisons ------------------------------------------------------------------------------------
def test_delong_rows_need_significance_and_direction(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_table3/delong/all-cac")
    assert r["quantity"] == "All better than Coronary calcium, all patients (DeLong)"
    assert r["paper"] == "significant (p < 0.001)" and r["book"] == "significant (p < 0.001), AUC 0.780 vs 0.740"
    assert r["within"] is True and r["tolerance"] == TOL["p_value"] and math.isnan(r["difference"])
    # significant in both, but the run's AI CTAC is the higher: the direction fails
    r = _key(table, "supp_table3/delong/ai_hybrid-ai_ctac")
    assert r["quantity"] == "AI hybrid better than AI CTAC, all patients (DeLong)"
    assert r["book"] == "significant (p < 0.001), AUC 0.770 vs 0.780" and r["within"] is False
    r = _key(table, "supp_table3/delong/ai_ctac-cac")
    assert r["book"].startswith("not significant (p = 0.200)") and r["within"] is False
    # not significant in the paper: only the side of 0.05 counts, not the direction
    r = _key(table, "supp_table4/delong/ai_hybrid-ai_ctac")
    assert r["quantity"] == ("AI hybrid and AI CTAC not significantly different, normal perfusion "
                             "(stress TPD < 5%) (DeLong)")
    assert (r["paper"], r["book"]) == ("not significant (p = 0.384)", "not significant (p = 0.369)")
    assert r["difference"] == pytest.approx(0.369 - 0.384) and r["within"] is True


def test_supp_table10_rows_read_which_side_is_better(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_table10/delong/ai_hybrid")
    assert r["quantity"] == "15 features better than 32 features, AI hybrid, all patients (DeLong)"
    assert r["paper"] == "significant (p < 0.05)" and r["within"] is True
    assert _key(table, "supp_table10/delong/all")["within"] is True
    assert _key(table, "supp_table10/delong/ai_ctac")["within"] is False  # 0.01 against the paper's 0.40
    _write(run_dir, "supp_table10", """
model,label,auc_15,ci_15,auc_32,ci_32,difference,p,p_text,paper_p
ai_hybrid,AI hybrid,0.75,0.73-0.77,0.77,0.75-0.79,-0.02,0.01,0.010,<0.05 (15 better)
""")
    assert _key(sc.scorecard(run_dir), "supp_table10/delong/ai_hybrid")["within"] is False  # 32 better


def test_supp_fig3_comparisons(run_dir):
    table = sc.scorecard(run_dir)
    r = _key(table, "supp_fig3/delong/sex")
    assert r["quantity"] == "male and female not significantly different, AUC of the All model by sex (DeLong)"
    assert (r["paper"], r["book"], r["within"]) == ("not significant (p = 0.08)", "not significant (p = 0.300)", True)
    assert _key(table, "supp_fig3/delong/age")["within"] is False  # 0.01 against 0.16


@pytest.mark.parametrize("text, op, value, sig", [
    ("<0.001", "<", 0.001, True), ("0.384", "=", 0.384, False), ("<0.05 (15 better)", "<", 0.05, True),
    ("<0.1", "<", 0.1, None), (">0.5", ">", 0.5, False), ("", "", math.nan, None), (0.02, "=", 0.02, True),
    ("n/a", "", math.nan, None),
])
def test_parse_p_and_significant(text, op, value, sig):
    got_op, got_value = sc.parse_p(text)
    assert got_op == op and (got_value == value or (math.isnan(got_value) and math.isnan(value)))
    assert sc.significant(text) is sig


# -- order ------------------------------------------------------------------------------------------
ALL_MODELS = """
model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,1000,60,0.80,0.7,0.9,0.8,,
ai_hybrid,AI hybrid,1000,60,0.78,0.7,0.9,0.79,,
ai_ctac,AI CTAC,1000,60,0.785,0.7,0.9,0.78,,
ai_spect,AI SPECT,1000,60,0.65,0.6,0.7,0.65,,
cac,Coronary calcium,1000,60,0.64,0.6,0.7,0.64,,
perfusion,Perfusion,1000,60,0.62,0.6,0.7,0.62,,
eat,EAT,1000,60,0.56,0.5,0.6,0.56,,
"""


def test_order_rows_in_all_patients_follow_the_paper(run_dir):
    _write(run_dir, "supp_table3", ALL_MODELS)
    table = sc.scorecard(run_dir)
    order = table[table["key"].str.startswith("order/supp_table3/")]
    paper = {m: v[0] for m, v in PAPER["supp_table3"]["auc"].items()}
    ranked = sorted(paper, key=paper.get, reverse=True)
    expected = [f"order/supp_table3/{h}>{lo}" for h, lo in zip(ranked, ranked[1:])]
    expected.append(f"order/supp_table3/{ranked[0]}>rest")
    assert list(order["key"]) == expected
    assert set(order["group"]) == {"held_out"} and set(order["item"]) == {"supp_table3"}
    r = _key(table, "order/supp_table3/all>ai_hybrid")
    assert r["quantity"] == "All above AI hybrid, all patients (AUC order)"
    assert (r["paper"], r["book"], r["within"]) == ("0.80 > 0.79", "0.800 vs 0.780", True)
    assert _key(table, "order/supp_table3/ai_hybrid>ai_ctac")["within"] is False  # the run swaps them
    r = _key(table, "order/supp_table3/all>rest")
    assert r["quantity"] == "All is the best model, all patients (highest AUC)" and r["within"] is True
    assert r["book"] == "0.800, best other AI CTAC 0.785"
    _write(run_dir, "supp_table3", ALL_MODELS.replace("eat,EAT,1000,60,0.56", "eat,EAT,1000,60,0.81"))
    table = sc.scorecard(run_dir)
    assert _key(table, "order/supp_table3/all>rest")["within"] is False
    assert _key(table, "order/supp_table3/perfusion>eat")["within"] is False


def test_order_rows_skip_ties_in_the_paper(run_dir, monkeypatch):
    # the paper's normal-perfusion AUCs tie AI CTAC and AI hybrid (0.76): every other pair gives a row
    _write(run_dir, "supp_table4", ALL_MODELS)
    paper4 = {m: v[0] for m, v in PAPER["supp_table4"]["auc"].items()}
    assert paper4["ai_ctac"] == paper4["ai_hybrid"]
    order = sc.scorecard(run_dir)
    order = order[order["key"].str.startswith("order/supp_table4/")]
    ties = sum(paper4[a] == paper4[b] for i, a in enumerate(paper4) for b in list(paper4)[i + 1:])
    assert len(order) == len(paper4) * (len(paper4) - 1) // 2 - ties
    assert not order["key"].str.contains("ai_ctac>ai_hybrid|ai_hybrid>ai_ctac", regex=True).any()
    # a tie in the adjacent order of all patients: both tied models against their neighbours, not each other
    supp3 = copy.deepcopy(PAPER["supp_table3"])
    supp3["auc"]["ai_ctac"][0] = supp3["auc"]["ai_hybrid"][0]
    _paper_with(monkeypatch, supp_table3=supp3)
    _write(run_dir, "supp_table3", ALL_MODELS)
    keys = [k for k in sc.scorecard(run_dir)["key"] if k.startswith("order/supp_table3/")]
    assert keys[:4] == ["order/supp_table3/all>ai_hybrid", "order/supp_table3/all>ai_ctac",
                        "order/supp_table3/ai_hybrid>ai_spect", "order/supp_table3/ai_ctac>ai_spect"]
    assert keys == [k for k in sc.row_keys() if k.startswith("order/supp_table3/")]
    # a tie at the top: no best-model row
    supp3["auc"]["ai_hybrid"][0] = supp3["auc"]["ai_ctac"][0] = supp3["auc"]["all"][0]
    assert not any(k.endswith(">rest") for k in sc.row_keys())


def test_subgroup_order_rows(run_dir, monkeypatch):
    table = sc.scorecard(run_dir)
    r = _key(table, "order/supp_fig3/female>male")
    assert r["quantity"] == "AUC of the All model: female above male (sex, AUC order)"
    assert (r["paper"], r["book"], r["within"]) == ("0.79 > 0.77", "0.821 vs 0.799", True)
    assert _key(table, "order/supp_fig3/age_lt65>age_ge65")["within"] is True
    assert _key(table, "order/supp_fig3/white>black")["within"] is False
    fig3 = copy.deepcopy(PAPER["supp_fig3"])
    fig3["auc"]["female"] = fig3["auc"]["male"]
    _paper_with(monkeypatch, supp_fig3=fig3)
    keys = set(sc.scorecard(run_dir)["key"])
    assert not any(k.startswith("order/supp_fig3/") and "male" in k for k in keys)
    assert "order/supp_fig3/white>black" in keys


# -- groups, targets and notes ----------------------------------------------------------------------
def test_groups_come_from_generator_targets(run_dir, monkeypatch):
    targets = sc.generator_targets()
    assert targets == PAPER["generator_targets"] and len(targets) == len(set(targets))
    table = sc.scorecard(run_dir)
    assert _key(table, "supp_table3/auc/all")["group"] == "fitted"
    assert _key(table, "fig3/high_risk_percent")["group"] == "fitted"
    assert _key(table, "fig3/ai_threshold")["group"] == "held_out"
    assert _key(table, "supp_table3/delong/all-cac")["group"] == "held_out"
    assert _key(table, "table1/male_percent")["group"] == "margins"
    assert set(table.loc[table["group"] == "fitted", "key"]) <= set(targets)
    _paper_with(monkeypatch, generator_targets=["nri/events"])
    table = sc.scorecard(run_dir)
    assert list(table.loc[table["group"] == "fitted", "key"]) == ["nri/events"]
    assert _key(table, "supp_table3/auc/all")["group"] == "held_out"


@pytest.mark.parametrize("targets, message", [
    (["supp_table3/auc/all", "supp_table3/auc/nonsense"], "unknown scorecard keys: supp_table3/auc/nonsense"),
    (["nri/events", "nri/events"], "lists nri/events more than once"),
    (["table1/male_percent"], "cohort margins"),
    ("supp_table3/auc/all", "must be a list"),
    (None, "no 'generator_targets'"),
])
def test_generator_targets_are_validated(monkeypatch, targets, message):
    _paper_with(monkeypatch, generator_targets=targets)
    with pytest.raises(ValueError, match=message):
        sc.generator_targets()


def test_scorecard_notes_are_validated(monkeypatch):
    # the real file's notes are text keyed by real rows
    assert all(k in sc.row_keys() and v.strip() for k, v in sc.scorecard_notes().items())
    _paper_with(monkeypatch, scorecard_notes=None)
    assert sc.scorecard_notes() == {}
    _paper_with(monkeypatch, scorecard_notes={"nri/events": "A different estimator."})
    assert sc.scorecard_notes() == {"nri/events": "A different estimator."}
    _paper_with(monkeypatch, scorecard_notes={"nri/everything": "x"})
    with pytest.raises(ValueError, match="unknown scorecard keys: nri/everything"):
        sc.scorecard_notes()
    _paper_with(monkeypatch, scorecard_notes={"nri/events": " "})
    with pytest.raises(ValueError, match="nri/events must be non-empty text"):
        sc.scorecard_notes()
    _paper_with(monkeypatch, scorecard_notes=["nri/events"])
    with pytest.raises(ValueError, match="must be a mapping"):
        sc.scorecard_notes()


def test_tolerances_are_validated(monkeypatch):
    assert set(sc.TOLERANCE_KINDS) == set(TOL) and TOL["cohort"] == "calibration" and TOL["interval"] == "paper_ci"
    _paper_with(monkeypatch, scorecard_tolerances=None)
    with pytest.raises(ValueError, match="no 'scorecard_tolerances'"):
        sc.scorecard_tolerances()
    for bad, message in (({**TOL, "auc": "big"}, "auc must be a non-negative number"),
                         ({**TOL, "cohort": 1.0}, "cohort must be 'calibration'"),
                         ({**TOL, "interval": 0.25}, "interval must be 'paper_ci'"),
                         ({k: v for k, v in TOL.items() if k != "subgroup_auc"}, "lacks subgroup_auc"),
                         ({**TOL, "hazard_ratio": 0.25}, "unknown kinds hazard_ratio")):
        _paper_with(monkeypatch, scorecard_tolerances=bad)
        with pytest.raises(ValueError, match=message):
            sc.scorecard_tolerances()


def test_holds_by_key_counts_runs(run_dir, tmp_path):
    other = tmp_path / "run2"
    shutil.copytree(run_dir, other)
    _write(other, "supp_table3", """
model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,1000,60,0.70,0.60,0.80,0.8,0.74-0.87,
cac,Coronary calcium,1000,60,0.645,0.60,0.70,0.64,0.57-0.71,
""")
    (other / "tables" / "nri.csv").unlink()
    counts = sc.holds_by_key([run_dir, other]).set_index("key")
    assert list(counts.columns) == ["group", "item", "quantity", "runs", "comparable", "holds"]
    assert tuple(counts.loc["supp_table3/auc/all", ["runs", "comparable", "holds"]]) == (2, 2, 1)
    assert tuple(counts.loc["supp_table3/auc/cac", ["runs", "comparable", "holds"]]) == (2, 2, 1)
    assert tuple(counts.loc["supp_table3/delong/all-cac", ["runs", "holds"]]) == (2, 2)
    assert tuple(counts.loc["nri/events", ["runs", "holds"]]) == (1, 1)
    assert tuple(counts.loc["calibration/within", ["runs", "comparable", "holds"]]) == (2, 0, 0)
    assert counts.loc["supp_table3/auc/all", "group"] == "fitted"
    with pytest.raises(ValueError, match="at least one run directory"):
        sc.holds_by_key([])


def test_seed_values_keep_each_rows_value_and_its_misses(run_dir):
    table = sc.scorecard(run_dir)
    got = sc.seed_values(table)
    kept = table[table["group"].isin(["held_out", "fitted"])]
    assert list(got["values"]) == list(kept["key"])  # the table's order, no margins or own rows
    assert got["values"]["supp_table3/auc/all"] == _key(table, "supp_table3/auc/all")["book"]
    missed = [r.key for r in kept.itertuples() if r.within is False]
    assert missed and got["missed"] == missed
    assert not any(_key(table, k)["within"] is None for k in got["missed"])  # not comparable is not a miss
    assert set(sc.seed_values(table, groups=("fitted",))["values"]) == set(table.loc[table.group == "fitted", "key"])
    with pytest.raises(ValueError, match="unknown scorecard groups"):
        sc.seed_values(table, groups=("heldout",))


def test_absent_tables_give_no_rows(run_dir, tmp_path):
    table = sc.scorecard(run_dir)
    for item in ("supp_table5", "supp_table6", "supp_table7", "supp_table2"):
        assert item not in set(table["item"])
    (run_dir / "tables" / "calibration.csv").unlink()
    (run_dir / "tables" / "supp_table3.csv").unlink()
    table = sc.scorecard(run_dir)
    assert not table["item"].isin(["calibration", "cohort"]).any()
    assert math.isnan(_key(table, "table1/male_percent")["tolerance"])
    assert _key(table, "table1/male_percent")["within"] is None
    # without its AUC table, supp_table3 keeps its DeLong rows but has no AUC or order rows
    assert table.loc[table["item"] == "supp_table3", "key"].str.startswith("supp_table3/delong/").all()
    empty = sc.scorecard(tmp_path / "no-such-run")
    assert empty.empty and list(empty.columns) == sc.COLUMNS


def test_a_table_of_another_layout_skips_its_item(run_dir, caplog):
    _write(run_dir, "nri", "component,estimate\nnri_events,0.2\n")
    table = sc.scorecard(run_dir)
    assert "nri" not in set(table["item"]) and "supp_fig4" in set(table["item"])
    assert "nri_rows skipped" in caplog.text


def test_a_repeated_row_counts_once(run_dir, caplog):
    _write(run_dir, "supp_table4_delong", """
a,b,comparison,auc_a,auc_b,difference,ci_low,ci_high,p,p_text,paper_p
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.75,0.76,-0.01,-0.03,0.01,0.369,0.369,0.384
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.75,0.76,-0.01,-0.03,0.01,0.01,0.010,0.384
""")
    r = _key(sc.scorecard(run_dir), "supp_table4/delong/ai_hybrid-ai_ctac")
    assert r["within"] is True and "second row with the key supp_table4/delong/ai_hybrid-ai_ctac" in caplog.text


def test_item_label():
    assert sc.item_label("supp_table3") == "Supplementary Table 3"
    assert sc.item_label("fig2") == "Fig. 2" and sc.item_label("table1") == "Table 1"
    assert sc.item_label("cohort") == "Results text"


# -- pages ----------------------------------------------------------------------------------------
def _section(page, heading):
    start = page.index(f"\n{heading}\n")
    rest = page[start + len(heading) + 2:]
    ends = [i for i in (rest.find("\n## "), rest.find("\n### ")) if i >= 0]
    return rest[:min(ends)] if ends else rest


def test_scorecard_page(run_dir):
    table = sc.scorecard(run_dir)
    page = sc.scorecard_page(table)
    assert page.startswith("# Replication scorecard\n")
    headings = [ln for ln in page.splitlines() if ln.startswith("#")]
    assert headings == ["# Replication scorecard", "## What this run does not reproduce", "## How a row is judged",
                        "## All rows", "### Fitted to", "### Held out", "### Cohort margins"]
    counts = {}
    for group in ("fitted", "held_out", "margins"):
        w = [x for x in table.loc[table["group"] == group, "within"] if x is not None]
        counts[group] = (sum(w), len(w))
    (fw, fn), (hw, hn), (mw, mn) = counts["fitted"], counts["held_out"], counts["margins"]
    lead = page.split("\n## ")[0]
    assert f"**{hw} of {hn}** held out" in lead and f"**{fw} of {fn}** fitted to" in lead
    assert f"**{mw} of {mn}** cohort margins" in lead and "synthetic" in lead
    # the misses come first, one line each, with the reason or the plain statement that none is recorded
    misses = [ln for ln in _section(page, "## What this run does not reproduce").splitlines() if ln.startswith("- ")]
    assert len(misses) == sum(w is False for w in table["within"])
    line = next(ln for ln in misses if "**AUC, Coronary calcium, all patients**" in ln)
    # no note recorded, but the paper's value lies inside this run's interval: the numbers say why
    assert line == ("- **AUC, Coronary calcium, all patients** (Supplementary Table 3, fitted to): paper 0.64 "
                    "(0.57-0.71); this book 0.661 (0.600-0.800). *Why:* Within this run's sampling error: the paper's "
                    "0.64 lies inside this run's confidence interval (0.600 to 0.800), which is wider than the "
                    "criterion (±0.02); no other cause is recorded.")
    # a comparison says what it tests and what each side found
    line = next(ln for ln in misses if "AI CTAC better than Coronary calcium" in ln)
    assert "paper significant (p < 0.001); this book not significant (p = 0.200)" in line
    # every table fits: six columns, the criterion's numbers in the Within cell, the theme's compact style
    header = "| Item | Quantity | Paper | This book | Within | Chapter |"
    sections = (("### Fitted to", "fitted"), ("### Held out", "held_out"), ("### Cohort margins", "margins"))
    for heading, group in sections:
        text = _section(page, heading)
        assert text.strip().startswith("```{table}\n:class: table-sm small")
        lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
        assert lines[0] == header and lines[1] == "| --- | --- | --- | --- | --- | --- |"
        assert len(lines) == 2 + (table["group"] == group).sum()
    lines = page.splitlines()
    row = next(ln for ln in lines if "| AUC, All, all patients |" in ln)
    assert row == ("| Supplementary Table 3 | AUC, All, all patients | 0.80 (0.74-0.87) | 0.781 (0.700-0.850) | "
                   "yes (-0.019; ±0.02) | [chapter 5](../notebooks/05_models.ipynb) |")
    assert "| **no** (+0.021; ±0.02) |" in next(ln for ln in lines if "| AUC, Coronary calcium, all" in ln)
    # no empty Within cell: a summary row says it is not judged
    assert "| not judged |" in next(ln for ln in lines if "| Published cohort numbers within" in ln)
    assert all("|  | [chapter" not in ln for ln in lines)
    assert "{doc}`../book/generator_fit`" not in page and "{doc}`generator_fit`" in page
    # chapters and pages outside the book are named, not linked
    page = sc.scorecard_page(table, docs={"notebooks/00_data"})
    assert "[chapter 0](../notebooks/00_data.ipynb)" in page and "](../notebooks/05_models" not in page
    assert "| chapter 5 |" in page and "{doc}" not in page and "*generator fit*" in page


@pytest.mark.parametrize("paper, book, tolerance, expected", [
    ("0.59", "0.552 (0.500-0.604)", 0.02, "the paper's 0.59 lies inside this run's confidence interval (0.500 to 0.604)"),
    ("0.56 (0.49-0.63)", "0.539 (0.517-0.561)", 0.02, "0.56 lies inside"),  # the upper bound counts
    ("0.77", "0.807 (0.785-0.830)", 0.03, None),  # outside the interval: chance is not the reason shown
    ("0.59", "0.552", 0.02, None),  # no interval printed
    ("1.71 (1.46-2.01)", "1.34 (1.13-1.58)", math.nan, None),  # judged by the paper's interval, not a tolerance
    ("-0.10", "-0.05 (-0.20 to 0.10)", 0.02, "the paper's -0.10 lies inside"),
])
def test_chance_note(paper, book, tolerance, expected):
    note = sc.chance_note(paper, book, tolerance)
    if expected is None:
        assert note is None
    else:
        assert expected in note and note.startswith("Within this run's sampling error") and note.endswith(".")


def test_scorecard_page_states_a_small_run(run_dir):
    table = sc.scorecard(run_dir)  # table1 of 1,000 patients
    page = sc.scorecard_page(table)
    assert "This run analysed 1,000 patients, not the paper's 10,480" in page
    # a smaller run's models learn less, not only vary more: its AUCs miss for its size, not by chance alone
    assert "the models learn less" in page and "learning curve" in page and "by chance alone" not in page
    full = table.copy()
    full.loc[full["key"] == "table1/n", "difference"] = 0.0
    assert "This run analysed" not in sc.scorecard_page(full)


def test_scorecard_page_shows_notes(run_dir, monkeypatch):
    table = sc.scorecard(run_dir)
    page = sc.scorecard_page(table, notes={"supp_table3/auc/cac": "The generator's calcium is too strong."})
    line = next(ln for ln in page.splitlines() if "**AUC, Coronary calcium, all patients**" in ln)
    assert line.endswith("*Why:* The generator's calcium is too strong.") and "`supp_table3/auc/cac`" not in line
    assert "no cause is recorded for this row (`nri/overall`)" in page
    _paper_with(monkeypatch, scorecard_notes={"nri/overall": "Another estimator."})
    page = sc.scorecard_page(table)  # notes from paper_values.yaml by default
    assert next(ln for ln in page.splitlines() if "**NRI at 2 years, overall (%)**" in ln).endswith(
        "*Why:* Another estimator.")


def test_scorecard_page_escapes_pipes_and_handles_an_empty_table():
    table = pd.DataFrame([{"key": "x/y", "group": "held_out", "item": "x", "quantity": "a | b", "paper": "1",
                           "book": "2", "difference": 1.0, "tolerance": math.nan, "criterion": "c", "within": None,
                           "where": ""}], columns=sc.COLUMNS)
    page = sc.scorecard_page(table, tolerances=TOL, notes={})
    assert "| x | a \\| b | 1 | 2 | not judged |  |" in page
    assert "**0 of 0** held out" in page and "Nothing: every row that can be judged holds." in page
    assert "### Fitted to" not in page and "### Held out" in page
    with pytest.raises(ValueError, match="unknown groups"):
        sc.scorecard_page(table.assign(group="elsewhere"), tolerances=TOL, notes={})
    empty = sc.scorecard_page(pd.DataFrame(columns=sc.COLUMNS))
    assert "holds none of the tables" in empty and "| Item |" not in empty


def test_headline_findings_are_validated(monkeypatch):
    findings = sc.headline_findings()
    assert findings and all(f["finding"] and f["keys"] for f in findings)
    assert set(k for f in findings for k in f["keys"]) <= set(sc.row_keys())
    # each names itself in a few words for the front page's first screen
    assert all(f["short"] != f["finding"] and len(f["short"]) < len(f["finding"]) for f in findings)
    _paper_with(monkeypatch, headline_findings=[{"finding": "Long text", "keys": ["nri/overall"]}])
    assert sc.headline_findings() == [{"finding": "Long text", "short": "Long text", "keys": ["nri/overall"]}]
    for entry, message in (([], "no 'headline_findings'"), ([{"finding": "x"}], "'finding', 'keys' and optionally"),
                           ([{"finding": "x", "keys": ["nri/overall"], "note": "y"}], "optionally 'short'"),
                           ([{"finding": "x", "short": 3, "keys": ["nri/overall"]}], "short must be non-empty"),
                           ([{"finding": " ", "keys": ["nri/overall"]}], "non-empty text"),
                           ([{"finding": "x", "keys": []}], "non-empty list"),
                           ([{"finding": "x", "keys": ["nri/nope"]}], "unknown scorecard keys: nri/nope")):
        _paper_with(monkeypatch, headline_findings=entry)
        with pytest.raises(ValueError, match=message):
            sc.headline_findings()


FINDINGS = [{"finding": "All beats calcium", "short": "All first", "keys": ["supp_table3/delong/all-cac"]},
            {"finding": "CTAC beats calcium", "short": "CTAC second",
             "keys": ["supp_table3/delong/ai_ctac-cac", "supp_table3/delong/all-cac"]},
            {"finding": "Hybrid beats CTAC, normal perfusion", "keys": ["supp_table4/delong/ai_hybrid-ai_ctac"]},
            {"finding": "Lungs on top", "keys": ["fig2/top_structure_all", "supp_table7/min_hr"]}]


def test_findings_status(run_dir):
    table = sc.scorecard(run_dir)
    status = sc.findings_status(table, FINDINGS)
    assert list(status["status"]) == ["reproduced", "not reproduced", "reproduced", "not tested"]
    assert status.loc[1, "missed"] == ["supp_table3/delong/ai_ctac-cac"]
    # a row that misses outweighs a row the run lacks
    table.loc[table["key"] == "fig2/top_structure_all", "within"] = False
    assert sc.findings_status(table, FINDINGS).loc[3, "status"] == "not reproduced"
    assert set(sc.findings_status(pd.DataFrame(columns=sc.COLUMNS), FINDINGS)["status"]) == {"not tested"}


def test_front_summary(run_dir):
    table = sc.scorecard(run_dir)
    text = sc.front_summary(table, findings=FINDINGS)
    (hw, hn) = sc.group_summary(table)["held_out"]
    # first the findings in a few words, by what the run does with them (a finding without a short names
    # itself in full)
    assert text.startswith("**What this run reproduces.** Of the paper's 4 headline findings, this run of 1,000 "
                           "synthetic patients reproduces 2 and does not reproduce 1 (1 cannot be tested on it):\n\n"
                           "- **Reproduced:** All first; Hybrid beats CTAC, normal perfusion.\n"
                           "- **Not reproduced:** CTAC second.\n"
                           "- **Not tested:** Lungs on top.\n\n"), text
    assert f"Of the {hn} held-out results, which the synthetic generator was not fitted to" in text
    assert f"**{hw} hold**" in text
    assert "| All beats calcium | reproduced |" in text and "| CTAC beats calcium | **not reproduced** |" in text
    assert "{doc}`replication scorecard <scorecard>`" in text and "<intervals>`" in text
    # the same counts as the scorecard page: both are read off one table
    assert f"**{hw} of {hn}** held out" in sc.scorecard_page(table)
    # pages outside the book are named, not linked
    assert "{doc}" not in sc.front_summary(table, docs={"book/intro"}, findings=FINDINGS)
    assert "cannot say what it reproduces" in sc.front_summary(pd.DataFrame(columns=sc.COLUMNS))


RUN_JSON = {
    "code_hash": "c" * 64,
    "packages": {"pandas": "2.3.3", "python": "3.11.7"},
    "parameters": {"name": "demo", "seed": 7, "stages": {"data": {"n_patients": 100}}},
    "stages": {
        "models": {"status": "failed", "started": "2026-01-01T00:02:00+00:00", "duration_s": None,
                   "code_hash": "b" * 64, "outputs": {}},
        "data": {"status": "ok", "started": "2026-01-01T00:00:00+00:00", "duration_s": 12.345,
                 "code_hash": "a" * 64,
                 "outputs": {"tables/calibration.csv": "1" * 64, "artifacts/cohort.parquet": "2" * 64}},
    },
}


def test_status_page():
    page = sc.status_page(RUN_JSON)
    assert page.startswith("# Run status\n") and "`runs/demo`" in page
    lines = page.splitlines()
    stages = [ln.split(" | ")[0].lstrip("| ") for ln in lines if ln.startswith("| ") and "-01-01T" in ln]
    assert stages == ["data", "models"]  # execution order, not run.json's
    assert f"| data | ok | 2026-01-01T00:00:00+00:00 | 12.3 | `{'a' * 12}` |" in lines
    assert "| models | failed | 2026-01-01T00:02:00+00:00 |  |" in page
    assert "| cohort | not run |" in page  # stages the run never recorded
    assert "| pandas | `2.3.3` |" in lines
    assert "```yaml" in page and "  data:\n    n_patients: 100" in page
    assert f"`{'c' * 64}`" in page
    assert f"| data | `artifacts/cohort.parquet` | `{'2' * 64}` |" in lines
    assert sc.status_page({}).startswith("# Run status\n") and "no `run.json`" in sc.status_page({})


def test_generator_fit_page():
    content = {
        "constants": {"death_shift": {"ct_burden": 1.0, "coronary": 0.5}, "time_risk": 0.5,
                      "ischemic_fraction": 0.4},
        "fit": {"method": "proxy then confirmation", "n_patients": 10480, "seed": 1, "seconds": 120.0,
                "proxy_evaluations": 12,
                "targets": [{"key": "supp_table3/auc/all", "paper": 0.8, "proxy": 0.81, "confirmed": 0.79,
                             "moved_by": "death_shift"}],
                "offsets": {"supp_table3/auc/all": 0.02}},
        "heldout": {"seeds": [2, 3], "rows": [
            {"key": "nri/events", "group": "held_out", "runs": 2, "comparable": 2, "holds": 1},
            {"key": "supp_table3/auc/all", "group": "fitted", "runs": 2, "comparable": 2, "holds": 2}]},
    }
    page = sc.generator_fit_page(content)
    assert page.startswith("# Fitting the synthetic generator")
    assert "| `death_shift` | ct_burden 1.000, coronary 0.500 | fitted |" in page
    assert "| `time_risk` | 0.5 | design assumption |" in page
    assert "| `supp_table3/auc/all` | 0.8 | 0.810 | 0.790 | death_shift |" in page
    assert "2.0 minutes" in page and "+0.020" in page and "last confirmation" in page
    # only held-out rows are counted on other seeds
    assert "| `nri/events` | 1 of 2 |" in page and "**50%**" in page
    assert "Of the 1 row, 0 hold in every run, 0 in none and the others in some" in page
    assert "`supp_table3/auc/all` | 2 of 2" not in page
    bare = sc.generator_fit_page({"constants": {"time_risk": 0.5}})
    assert "holds no fit record" in bare and "No held-out check is recorded" in bare
    assert "Each seed on its own" not in page  # the record keeps no per-seed counts
    per_seed = {**content["heldout"], "per_seed": [{"seed": 3, "held_out": [42, 60], "fitted": [7, 10]}]}
    seeded = sc.generator_fit_page({**content, "heldout": per_seed})
    assert "| 3 | 42 of 60 (70%) | 7 of 10 (70%) |" in seeded
    assert "Seed 2 ran before each seed's own counts were recorded" in seeded
    assert "| Held-out row | 3 | Holds in |" not in seeded  # the seed's entry keeps no values
    # each seed's value of each row (its estimate alone; a miss in bold), and this run's beside the paper's
    valued = {**per_seed, "per_seed": [{**per_seed["per_seed"][0], "missed": ["nri/events"],
                                        "values": {"nri/events": "18.2 (12.0-24.1)", "supp_table3/auc/all": "0.8"}},
                                       {"seed": 2, "held_out": [1, 1], "fitted": [1, 1], "missed": [],
                                        "values": {"nri/events": "not significant (p = 0.191), AUC 0.749 vs 0.729"}}]}
    page_v = sc.generator_fit_page({**content, "heldout": valued})
    assert "| Held-out row | 3 | 2 | Holds in |" in page_v and "| `nri/events` | **18.2** | p = 0.191 | 1 of 2 |" in page_v
    this = pd.DataFrame({"key": ["nri/events"], "group": ["held_out"], "paper": ["15.1 (11.4-18.8)"],
                         "book": ["16.0 (10.1-21.9)"], "within": [True]})
    page_t = sc.generator_fit_page({**content, "heldout": valued}, this)
    assert "| Held-out row | Paper | This run | 3 | 2 | Holds in |" in page_t
    assert "| `nri/events` | 15.1 (11.4-18.8) | 16.0 | **18.2** | p = 0.191 | 1 of 2 |" in page_t
    older = {**valued, "per_seed": [valued["per_seed"][0], {"seed": 2, "held_out": [1, 1], "fitted": [1, 1]}]}
    assert "Seed 2 ran before each row's value was recorded" in sc.generator_fit_page({**content, "heldout": older})
    # the record's fingerprint of the generator, against today's
    assert "names no fingerprint" in page and "is kept" not in page
    kept = sc.generator_fit_page({**content, "fit": {**content["fit"], "kept_round": 1, "rounds": [{}, {}]}})
    assert "Confirmations: 2; round 1, whose confirmed AUCs come nearest the targets, is kept" in kept
    # round 0 (the starting point, confirmed before any proxy fit) can be the one kept
    start = sc.generator_fit_page({**content, "fit": {**content["fit"], "kept_round": 0,
                                                     "rounds": [{"round": 0}, {"round": 1}]}})
    assert ("Confirmations: 2; round 0, whose confirmed AUCs come nearest the targets, is kept (its values are "
            "below; round 0 is the starting point, confirmed before any proxy fit).") in start
    content["fit"]["fingerprint"] = "a" * 64
    assert "```{warning}" not in sc.generator_fit_page(content, fingerprint="a" * 64)
    changed = sc.generator_fit_page(content, fingerprint="b" * 64)
    assert "The generator has changed since this fit" in changed and "names no fingerprint" not in changed


def test_generator_fingerprint_follows_what_the_generator_produces():
    from ctac_helpers.cohort import synth

    c = synth.generator_constants()
    same = synth.generator_fingerprint(c)
    assert len(same) == 64 and synth.generator_fingerprint(c) == same
    assert synth.generator_fingerprint(c.replace(age_modulation=c.age_modulation + 0.05)) != same


def test_supp_table7_row_names_subgroups_without_an_estimate(run_dir):
    _write(run_dir, "supp_table7", """
subgroup,n,events,hr,ci_low,ci_high,p,dropped,note
men,5745,398,5.8,4.5,7.4,1e-45,male,
women,4735,253,,,,,male,the Cox model did not converge
age >= 65,5341,461,4.96,3.98,6.19,1e-46,,
""")
    r = _key(sc.scorecard(run_dir), "supp_table7/min_hr")
    assert r["within"] is False
    assert r["book"] == "4.96 (age >= 65); 1 of 3 subgroups not estimated"
    _write(run_dir, "supp_table7", """
subgroup,n,events,hr,ci_low,ci_high,p,dropped,note
men,5745,398,5.8,4.5,7.4,1e-45,male,
women,4735,253,6.1,4.4,8.5,1e-27,male,
""")
    r = _key(sc.scorecard(run_dir), "supp_table7/min_hr")
    assert r["within"] is True and r["book"] == "5.80 (men)"


def test_generator_fit_page_shows_the_structure_spread():
    rows = [{"key": "signal/all", "paper": 0.8, "values": [0.90, 0.88]},
            {"key": "signal/male", "paper": 0.77, "values": [0.89, 0.89]},
            {"key": "perfusion/no_cac", "paper": 0.59, "values": [0.60, 0.64]}]
    fit = {"targets": [{"key": "supp_table3/auc/eat", "paper": 0.56, "proxy": 0.549, "confirmed": 0.539}]}
    content = {"constants": {"time_risk": 0.5}, "fit": {**fit, "fingerprint": "f1"},
               "spread": {"seeds": [1, 2], "n_patients": 3000, "fingerprint": "f1", "rows": rows}}
    page = sc.generator_fit_page(content, fingerprint="f1")
    section = page[page.index("## What the structure gives, seed by seed"):]
    assert "2 seeds (1 and 2; 3,000 patients each)" in section
    # the signal's gap to all patients, seed by seed, beside the paper's gap for its All model
    assert "| `signal/male` | 0.77 | -0.03 | 0.890 (0.000) | +0.000 (0.014) |" in section
    assert "| `signal/all` | 0.8 |  | 0.890 (0.014) |  |" in section
    assert "| `perfusion/no_cac` | 0.59 | 0.620 (0.028) | 0.600-0.640 |" in section
    assert "0.549 for the proxy and 0.539 for the book's XGBoost" in section
    assert "has changed since this spread" not in section
    moved = sc.generator_fit_page(content, fingerprint="f2")
    assert "has changed since this spread was recorded" in moved
    bare = sc.generator_fit_page({"constants": {"time_risk": 0.5}})
    assert "No spread is recorded for these constants" in bare
