"""The replication scorecard on a hand-written run directory, and its generated pages."""

import math

import pandas as pd
import pytest

from ctac_helpers import manifest
from ctac_helpers import scorecard as sc

TOL = sc.scorecard_tolerances()


def _write(run_dir, table_id, text):
    (run_dir / "tables").mkdir(parents=True, exist_ok=True)
    (run_dir / "tables" / f"{table_id}.csv").write_text(text.strip() + "\n")


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding a few of the tables the scorecard reads (others are absent)."""
    rd = tmp_path / "run"
    inside, outside = 0.80 - TOL["auc"] / 2, 0.64 + 2 * TOL["auc"]
    _write(rd, "supp_table3", f"""
model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,1000,60,{inside},0.70,0.85,0.8,0.74-0.87,
cac,Coronary calcium,1000,60,{outside},0.60,0.80,0.64,0.57-0.71,
ai_spect,AI SPECT,1000,60,0.6,0.5,0.7,,,
""")
    _write(rd, "supp_table3_delong", """
a,b,comparison,auc_a,auc_b,difference,ci_low,ci_high,p,p_text,paper_p
all,cac,All vs Coronary calcium,0.78,0.74,0.04,0.01,0.07,1e-05,<0.001,<0.001
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.78,0.77,0.01,-0.01,0.03,0.2,0.200,<0.001
ai_hybrid,ai_ctac,AI hybrid vs AI CTAC,0.78,0.77,0.01,-0.01,0.03,0.369,0.369,0.384
all,eat,All vs EAT,0.78,0.55,0.23,0.2,0.26,1e-09,<0.001,
""")
    _write(rd, "supp_table10", """
model,label,auc_15,ci_15,auc_32,ci_32,difference,p,p_text,paper_p
ai_hybrid,AI hybrid,0.77,0.75-0.79,0.76,0.74-0.78,0.01,0.01,0.010,<0.05 (15 better)
all,All,0.76,0.74-0.78,0.76,0.74-0.78,0.0,0.331,0.331,0.09
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


def test_scorecard_columns_and_items(run_dir):
    table = sc.scorecard(run_dir)
    assert list(table.columns) == sc.COLUMNS
    assert table["difference"].dtype == float and table["tolerance"].dtype == float
    assert set(table["within"].map(type)) <= {bool, type(None)}
    # one row per published number; the unpublished AI SPECT interval, EAT p and age HR give none
    assert (table["item"] == "supp_table3").sum() == 2 + 3
    assert not table["quantity"].str.contains("AI SPECT|All vs EAT|age", regex=True).any()
    assert table.loc[table["item"] == "supp_table3", "where"].eq("notebooks/05_models").all()
    assert table.loc[table["item"] == "supp_fig4", "where"].eq("notebooks/07_survival_nri").all()


def test_auc_rows(run_dir):
    table = sc.scorecard(run_dir)
    r = _row(table, "AUC, All, all patients")
    assert r["paper"] == "0.80 (0.74-0.87)" and r["book"].startswith(f"{0.80 - TOL['auc'] / 2:.2f} (0.70-0.85)")
    assert r["difference"] == pytest.approx(-TOL["auc"] / 2) and r["tolerance"] == TOL["auc"]
    assert r["within"] is True
    r = _row(table, "AUC, Coronary calcium")
    assert r["difference"] == pytest.approx(2 * TOL["auc"]) and r["within"] is False


def test_p_value_rows_agree_on_the_side_of_alpha(run_dir):
    table = sc.scorecard(run_dir)
    delong = table[table["quantity"].str.startswith("DeLong p")].reset_index(drop=True)
    assert list(delong["paper"]) == ["<0.001", "<0.001", "0.384", "<0.05 (15 better)", "0.09"]
    assert list(delong["book"]) == ["<0.001", "0.200", "0.369", "0.010", "0.331"]
    assert list(delong["within"]) == [True, False, True, True, True]
    assert math.isnan(delong.loc[0, "difference"]) and math.isnan(delong.loc[1, "difference"])
    assert delong.loc[2, "difference"] == pytest.approx(0.369 - 0.384)
    assert delong.loc[4, "difference"] == pytest.approx(0.331 - 0.09)
    assert (delong["tolerance"] == TOL["p_value"]).all()
    assert list(delong["item"]) == ["supp_table3"] * 3 + ["supp_table10"] * 2


def test_hazard_ratio_tolerance_is_relative(run_dir):
    table = sc.scorecard(run_dir)
    r = _row(table, "abnormal perfusion")
    assert r["paper"] == "1.71 (1.46-2.01)" and r["book"] == "1.60 (1.30-1.90)"
    assert r["difference"] == pytest.approx(1.6 - 1.71)
    assert r["tolerance"] == pytest.approx(TOL["hazard_ratio"] * 1.71)
    assert r["within"] is (abs(1.6 - 1.71) <= TOL["hazard_ratio"] * 1.71)
    r = _row(table, "CAC > 400")
    assert r["within"] is (abs(1.2 - 2.11) <= TOL["hazard_ratio"] * 2.11)


def test_percent_rows(run_dir):
    table = sc.scorecard(run_dir)
    r = _row(table, "NRI at 2 years, events")
    assert r["paper"] == "15.1 (11.4-18.8)" and r["book"] == "16.0 (12.0-20.0)"
    assert r["difference"] == pytest.approx(0.9) and r["within"] is (0.9 <= TOL["percent"])
    assert _row(table, "NRI at 2 years, overall")["within"] is (13.9 <= TOL["percent"])
    r = _row(table, "AI high-risk class")
    paper = manifest.paper_entry("fig3")["values"]["ai_high_risk_percent"]
    assert r["book"] == "5.00% (50 of 1,000)"
    assert r["difference"] == pytest.approx(5.0 - paper) and r["tolerance"] == TOL["percent"]
    r = _row(table, "AI threshold")
    assert (r["paper"], r["book"]) == ("0.17", "0.260") and r["difference"] == pytest.approx(0.09)
    assert r["tolerance"] == TOL["threshold"] and r["within"] is (0.09 <= TOL["threshold"])


def test_cohort_rows_use_the_calibration_tolerance(run_dir):
    table = sc.scorecard(run_dir)
    r = _row(table, "Patients analysed")
    assert r["paper"] == "10,480" and r["book"] == "1,000" and r["within"] is False
    assert r["difference"] == -9480 and r["tolerance"] == TOL["count"]
    r = _row(table, "Men")
    assert r["book"] == "548 (54.8%)" and r["tolerance"] == 1.5 and r["within"] is True
    r = _row(table, "Deaths during follow-up")
    assert r["difference"] == pytest.approx(2.8) and r["within"] is False
    r = _row(table, "Follow-up, median")
    assert r["item"] == "cohort" and r["where"] == "notebooks/00_data" and r["within"] is True
    r = _row(table, "calibration tolerance")
    assert r["book"] == "2 of 3 within" and r["within"] is None and math.isnan(r["difference"])
    # the calibration table has no row for these
    assert not table["quantity"].str.contains("Follow-up, first quartile|Normal perfusion", regex=True).any()


def test_top_structure_rows(run_dir):
    table = sc.scorecard(run_dir)
    fig2 = table[table["item"] == "fig2"].reset_index(drop=True)
    assert list(fig2["book"]) == ["lung_upper_lobe_right", "heart", "not among the table's structures"]
    assert list(fig2["within"]) == [True, False, None]


def test_absent_tables_give_no_rows(run_dir, tmp_path):
    table = sc.scorecard(run_dir)
    for item in ("supp_table4", "supp_table5", "supp_fig3", "supp_table6", "supp_table7", "supp_table2"):
        assert item not in set(table["item"])
    (run_dir / "tables" / "calibration.csv").unlink()
    (run_dir / "tables" / "supp_table3.csv").unlink()
    table = sc.scorecard(run_dir)
    assert not table["item"].isin(["calibration", "cohort"]).any()
    assert math.isnan(_row(table, "Men")["tolerance"]) and _row(table, "Men")["within"] is None
    assert list(table.loc[table["item"] == "supp_table3", "quantity"].str[:8].unique()) == ["DeLong p"]
    empty = sc.scorecard(tmp_path / "no-such-run")
    assert empty.empty and list(empty.columns) == sc.COLUMNS


def test_a_table_of_another_layout_skips_its_item(run_dir, caplog):
    _write(run_dir, "nri", "component,estimate\nnri_events,0.2\n")
    table = sc.scorecard(run_dir)
    assert "nri" not in set(table["item"]) and "supp_fig4" in set(table["item"])
    assert "nri_rows skipped" in caplog.text


@pytest.mark.parametrize("text, op, value, sig", [
    ("<0.001", "<", 0.001, True), ("0.384", "=", 0.384, False), ("<0.05 (15 better)", "<", 0.05, True),
    ("<0.1", "<", 0.1, None), (">0.5", ">", 0.5, False), ("", "", math.nan, None), (0.02, "=", 0.02, True),
    ("n/a", "", math.nan, None),
])
def test_parse_p_and_significant(text, op, value, sig):
    got_op, got_value = sc.parse_p(text)
    assert got_op == op and (got_value == value or (math.isnan(got_value) and math.isnan(value)))
    assert sc.significant(text) is sig


def test_tolerances_are_validated(monkeypatch):
    assert set(sc.TOLERANCE_KINDS) <= set(TOL) and TOL["cohort"] == "calibration"
    good = manifest.paper_values()
    monkeypatch.setattr(manifest, "paper_values", lambda: {k: v for k, v in good.items()
                                                            if k != "scorecard_tolerances"})
    with pytest.raises(ValueError, match="no 'scorecard_tolerances'"):
        sc.scorecard_tolerances()
    monkeypatch.setattr(manifest, "paper_values", lambda: {"scorecard_tolerances": {**TOL, "auc": "big"}})
    with pytest.raises(ValueError, match="auc must be a non-negative number"):
        sc.scorecard_tolerances()
    monkeypatch.setattr(manifest, "paper_values", lambda: {"scorecard_tolerances": {**TOL, "cohort": 1.0}})
    with pytest.raises(ValueError, match="cohort must be 'calibration'"):
        sc.scorecard_tolerances()


def test_item_label():
    assert sc.item_label("supp_table3") == "Supplementary Table 3"
    assert sc.item_label("fig2") == "Fig. 2" and sc.item_label("table1") == "Table 1"
    assert sc.item_label("cohort") == "Results text"


# -- pages ----------------------------------------------------------------------------------------
def test_scorecard_page(run_dir):
    table = sc.scorecard(run_dir)
    page = sc.scorecard_page(table)
    assert page.startswith("# Replication scorecard\n")
    assert "synthetic" in page and "*Within*" in page
    n_within = sum(w is True for w in table["within"])
    n_comparable = sum(w is not None for w in table["within"])
    assert f"**{n_within} of {n_comparable}** comparable numbers are within tolerance" in page
    lines = [ln for ln in page.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| Item | Quantity | Paper | This book | Difference | Tolerance | Within | Chapter |"
    assert len(lines) == 1 + len(table)
    row = next(ln for ln in lines if "AUC, All, all patients" in ln)
    assert row.startswith("| Supplementary Table 3 |")
    assert row.endswith("| yes | [chapter 5](../notebooks/05_models.ipynb) |")
    assert "| **no** |" in next(ln for ln in lines if "Coronary calcium, all" in ln)
    # chapters outside the book are named, not linked
    page = sc.scorecard_page(table, docs={"notebooks/00_data"})
    assert "[chapter 0](../notebooks/00_data.ipynb)" in page and "](../notebooks/05_models" not in page
    assert "| chapter 5 |" in page


def test_scorecard_page_escapes_pipes_and_handles_an_empty_table():
    table = pd.DataFrame([{"item": "x", "quantity": "a | b", "paper": "1", "book": "2", "difference": 1.0,
                           "tolerance": math.nan, "within": None, "where": ""}], columns=sc.COLUMNS)
    page = sc.scorecard_page(table, tolerances=TOL)
    assert "| x | a \\| b | 1 | 2 | +1 |  |  |  |" in page
    assert "**0 of 0**" in page
    empty = sc.scorecard_page(pd.DataFrame(columns=sc.COLUMNS))
    assert "holds none of the tables" in empty and "| Item |" not in empty


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
