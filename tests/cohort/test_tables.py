import numpy as np
import pytest

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


def test_side_by_side_puts_the_papers_row_under_the_books(small_dataset):
    t2 = tables.baseline_table(small_dataset.cohort, "death", tables.row_spec("table2"), "table2", include_all=False)
    view = tables.side_by_side(t2, "table2")
    assert list(view.columns) == ["Characteristic", "source", "death", "alive", "p"]
    i = view.index[view["Characteristic"] == "Age [years]"][0]
    book, paper = view.loc[i], view.loc[i + 1]
    assert book["source"] == "book" and book["death"] == t2.loc[(t2.variable == "age") & (t2.group == "death"),
                                                                 "display"].iloc[0]
    assert paper["source"] == "paper" and paper["Characteristic"] == "" and paper["death"] == "71 (63, 79)"
    # Supplementary Table 2: the paper prints a few values only; characteristics without any have no paper row
    c = small_dataset.cohort
    s2 = tables.baseline_table(c, "perfusion", tables.row_spec("table1"), "supp_table2")
    view = tables.side_by_side(s2, "supp_table2")
    assert (view["source"] == "book").sum() == s2.groupby(["variable", "level"]).ngroups
    assert 0 < (view["source"] == "paper").sum() < (view["source"] == "book").sum()


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
