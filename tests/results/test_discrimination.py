import numpy as np
import pandas as pd
import pytest

from ctac_helpers.stats import delong
from ctac_helpers.results import discrimination as disc


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.2).astype(int)
    scores = pd.DataFrame({"ai_ctac": y * 1.0 + rng.normal(0, 1, n),
                           "eat": y * 0.2 + rng.normal(0, 1, n),
                           "cac": np.round(y * 0.5 + rng.normal(0, 1, n), 1)})  # ties
    return y, scores


def test_subset_masks_follow_the_rules_and_leave_missing_out():
    cohort = pd.DataFrame({"stress_tpd": [1.0, 5.0, 12.0, np.nan], "cac_score": [0.0, 10.0, np.nan, 0.0]})
    assert disc.subset_mask(cohort, "all").tolist() == [True] * 4
    assert disc.subset_mask(cohort, "normal_perfusion").tolist() == [True, False, False, False]
    assert disc.subset_mask(cohort, "no_cac").tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="allowed: all, normal_perfusion, no_cac"):
        disc.subset_mask(cohort, "normal")
    with pytest.raises(ValueError, match="cac_score"):
        disc.subset_mask(cohort.drop(columns="cac_score"), "no_cac")


def test_roc_curve_area_is_the_mann_whitney_auc_with_ties(toy):
    y, scores = toy
    for m in scores:
        c = disc.roc_curve(y, scores[m].to_numpy())
        assert (c["fpr"].iloc[0], c["tpr"].iloc[0]) == (0.0, 0.0)
        assert (c["fpr"].iloc[-1], c["tpr"].iloc[-1]) == (1.0, 1.0)
        assert c["fpr"].is_monotonic_increasing and c["tpr"].is_monotonic_increasing
        area = np.trapezoid(c["tpr"], c["fpr"]) if hasattr(np, "trapezoid") else np.trapz(c["tpr"], c["fpr"])
        assert area == pytest.approx(delong.auc(y, scores[m].to_numpy()), abs=1e-12)


def test_roc_curve_hand_case():
    # scores 0.9 (event), 0.5 (event), 0.5 (non-event), 0.1 (non-event): the tie moves both at once.
    c = disc.roc_curve([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    assert c["fpr"].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert c["tpr"].tolist() == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="both outcomes"):
        disc.roc_curve([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        disc.roc_curve([1, 0], [np.nan, 0.3])


def test_roc_curves_long_and_unknown_model(toy):
    y, scores = toy
    long = disc.roc_curves(y, scores, ["eat", "ai_ctac"])
    assert list(dict.fromkeys(long["model"])) == ["eat", "ai_ctac"]
    with pytest.raises(ValueError, match="lack the models"):
        disc.roc_curves(y, scores, ["all"])


def test_auc_table_reads_the_papers_values_and_is_seeded(toy):
    y, scores = toy
    t1 = disc.auc_table(y, scores, n_resamples=200, seed=1, table_id="supp_table3")
    t2 = disc.auc_table(y, scores, n_resamples=200, seed=1, table_id="supp_table3")
    pd.testing.assert_frame_equal(t1, t2)
    row = t1.set_index("model").loc["ai_ctac"]
    assert row["label"] == "AI CTAC" and row["paper_auc"] == 0.78 and row["paper_ci"] == "0.71-0.85"
    assert row["ci_low"] <= row["auc"] <= row["ci_high"]
    assert row["auc"] == pytest.approx(delong.auc(y, scores["ai_ctac"].to_numpy()))
    assert row["difference"] == pytest.approx(row["auc"] - 0.78)
    t3 = disc.auc_table(y, scores, n_resamples=200, seed=2, table_id="supp_table3")
    assert not np.allclose(t1["ci_low"], t3["ci_low"])


def test_delong_table_matches_delong_test_and_carries_the_paper_p(toy):
    y, scores = toy
    pairs = [{"a": "ai_ctac", "b": "eat", "p": "<0.001"}, ("ai_ctac", "cac")]
    t = disc.delong_table(y, scores, pairs)
    r = delong.delong_test(y, scores["ai_ctac"].to_numpy(), scores["eat"].to_numpy())
    assert t.loc[0, "p"] == pytest.approx(r.p_value) and t.loc[0, "paper_p"] == "<0.001"
    assert t.loc[1, "paper_p"] == "" and t.loc[0, "comparison"] == "AI CTAC vs EAT"
    assert disc.paper_comparisons("supp_table4")[1] == {"a": "ai_hybrid", "b": "ai_ctac", "p": "0.384"}


def test_subset_comparison_table_same_scores_give_no_difference(toy):
    y, scores = toy
    t = disc.subset_comparison_table(y, scores, scores.copy(), ["ai_ctac"], n_resamples=100, seed=1,
                                     labels=("15", "32"), paper_p={"ai_ctac": "0.40"})
    assert t.loc[0, "difference"] == 0 and t.loc[0, "p"] == 1.0 and t.loc[0, "paper_p"] == "0.40"
    assert t.loc[0, "ci_15"] == t.loc[0, "ci_32"]
    # the interval's bounds at full precision beside the rounded text the page shows
    lo, hi = t.loc[0, "ci_low_15"], t.loc[0, "ci_high_15"]
    assert 0 < lo < t.loc[0, "auc_15"] < hi < 1 and t.loc[0, "ci_15"] == f"{lo:.3f}-{hi:.3f}"
    assert (t.loc[0, "ci_low_32"], t.loc[0, "ci_high_32"]) == (lo, hi)
    with pytest.raises(ValueError, match="same patients"):
        disc.subset_comparison_table(y, scores, scores.iloc[:10], ["ai_ctac"], n_resamples=100, seed=1)
