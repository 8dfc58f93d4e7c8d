import numpy as np
import pandas as pd
import pytest

from ctac_helpers.cohort import fit_report as calibration
from ctac_helpers.cohort import flow as cohort
from ctac_helpers.cohort import tables


def test_mann_whitney_matches_r():
    # R: wilcox.test(1:5, 6:10)$p.value == 0.007936508 (exact, no ties)
    assert tables.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(0.007936508, abs=1e-8)
    assert np.isnan(tables.mann_whitney_p([], [1.0]))


def test_pearson_chi_square_without_correction_matches_hand_computation():
    # 2x2 table [[12, 7], [5, 9]]: chi2 = 2.4304 (computed by hand), p = 0.1190
    # (R: chisq.test(matrix(c(12, 5, 7, 9), 2), correct = FALSE))
    values = ["a"] * 12 + ["b"] * 7 + ["a"] * 5 + ["b"] * 9
    groups = ["g1"] * 19 + ["g2"] * 14
    assert tables.chi_square_p(values, groups) == pytest.approx(0.1190, abs=5e-4)





def test_baseline_table_tidy_rows(small_dataset):
    c = small_dataset.cohort
    t1 = tables.baseline_table(c, "sex", tables.row_spec("table1"), "table1")
    assert list(t1.columns[:14]) == tables.TIDY_COLUMNS
    assert set(t1["group"]) == {"all", "male", "female"}
    n_rows = len(tables.row_spec("table1"))
    assert len(t1) == 3 * n_rows
    age = t1[(t1.variable == "age") & (t1.group == "all")].iloc[0]
    assert age["median"] == pytest.approx(np.percentile(c["age"], 50))
    htn = t1[(t1.variable == "hypertension") & (t1.group == "male")].iloc[0]
    male = c[c.sex == "male"]
    assert htn["n"] == male["hypertension"].sum()
    assert htn["percent"] == pytest.approx(100 * male["hypertension"].mean())
    # one p-value per variable, shown on its first row
    ecg = t1[t1.variable == "ecg_response"]
    assert (ecg["p_display"] != "").sum() == 1
    with pytest.raises(ValueError, match="allowed"):
        tables.baseline_table(c, "site", [], "x")


def test_side_by_side_has_book_and_paper_columns(small_dataset):
    t2 = tables.baseline_table(small_dataset.cohort, "death", tables.row_spec("table2"), "table2", include_all=False)
    wide = tables.side_by_side(t2, "table2")
    assert {"death (book)", "death (paper)", "alive (book)", "alive (paper)", "p (book)", "p (paper)"} <= set(wide.columns)
    age = wide[wide["Characteristic"] == "Age [years]"].iloc[0]
    assert age["death (paper)"] == "71 (63, 79)"


def test_calibration_report_flags_misses(small_dataset):
    c = small_dataset.cohort.copy()
    report = calibration.calibration_report(c)
    assert {"paper", "synthetic", "difference", "tolerance", "within"} <= set(report.columns)
    c["age"] = c["age"] + 10  # a cohort ten years older must fail the age rows
    bad = calibration.calibration_report(c)
    age_rows = bad[bad.variable == "age"]
    assert not age_rows["within"].any()
    assert calibration.quantile_tolerance(65, "age") == pytest.approx(3.25)
    assert calibration.quantile_tolerance(0.58, "stress_shape_index_ed") == pytest.approx(0.029)


def test_patient_flow_and_headline(small_dataset):
    flow = cohort.patient_flow(1500)
    assert flow.loc[flow.step == "analysed", "book"].iloc[0] == 1500
    assert flow.loc[flow.step == "enrolled", "paper"].iloc[0] == 10983
    head = cohort.headline_numbers(small_dataset.cohort)
    assert head.loc[head.quantity == "Patients analysed", "book"].iloc[0] == 1500
    assert flow["book"].notna().sum() == 1 and (flow["note"] == "").all()


def test_patient_flow_counts_a_sites_exclusions():
    exclusions = pd.DataFrame({"reason": ["no_heart", "unreadable"], "what": ["", ""], "n": [2, 1]})
    flow = cohort.patient_flow(197, exclusions).set_index("step")
    assert flow.loc["remaining", "book"] == 200 and flow.loc["incomplete_ctac", "book"] == 3
    assert flow.loc["analysed", "book"] == 197 and flow.loc["incomplete_ctac", "note"] == "no_heart: 2, unreadable: 1"
    assert np.isnan(flow.loc["enrolled", "book"])
    none = cohort.patient_flow(200, exclusions.iloc[:0]).set_index("step")
    assert none.loc["incomplete_ctac", "book"] == 0 and none.loc["incomplete_ctac", "note"] == ""


def test_paper_display_prints_the_manifests_values_as_the_tables_do():
    from ctac_helpers.cohort.tables import paper_display
    assert paper_display("table1", "age", "all") == "65 (57, 73)"
    assert paper_display("table1", "n", "male") == "5745 (54.8)"
    assert paper_display("table1", "n", "all") == "10480"
    assert paper_display("supp_table2", "cac_category", "normal", "0") == "2903 (39.6)"
    assert paper_display("supp_table2", "stress_tpd", "normal") == ""  # printed for the abnormal group only
    with pytest.raises(ValueError, match="table1 has no row variable='weight'"):
        paper_display("table1", "weight", "all")


@pytest.mark.parametrize("p, expected", [(97.4, "97th"), (1, "1st"), (0.2, "1st"), (2, "2nd"), (3, "3rd"),
                                         (11, "11th"), (12.4, "12th"), (21, "21st"), (22, "22nd"), (100, "100th"),
                                         (float("nan"), "n/a"), (None, "n/a")])
def test_ordinal(p, expected):
    assert tables.ordinal(p) == expected
