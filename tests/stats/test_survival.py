import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from scipy import stats

from ctac_helpers.stats import survival as sv

Z95 = stats.norm.ppf(0.975)

# The 6-patient toy: deaths at 1, 2, 3 and 5; censored at 2 (after the death at 2) and at 4.
TOY_T = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0])
TOY_E = np.array([1, 1, 0, 1, 0, 1])


# --- match_threshold -------------------------------------------------------------------------

def test_match_threshold_exact_share():
    score = np.arange(1, 11) / 10.0  # 0.1 ... 1.0
    ref = np.zeros(10, bool)
    ref[[0, 4, 7]] = True            # 3 of 10 reference positives, whoever they are
    m = sv.match_threshold(score, ref)
    # The 3 largest scores are 1.0, 0.9, 0.8: threshold 0.8 flags exactly 3.
    assert m.threshold == 0.8
    assert (m.share, m.reference_share, m.n_flagged, m.n_reference, m.n) == (0.3, 0.3, 3, 3, 10)
    assert np.mean(score >= m.threshold) == m.reference_share


def test_match_threshold_ties_take_the_closest_count():
    score = np.array([0.1, 0.2, 0.5, 0.5, 0.5, 0.9])
    ref = np.array([1, 1, 0, 0, 0, 0])  # k = 2
    # Candidates: 0.9 flags 1 (|1 - 2| = 1), 0.5 flags 4 (|4 - 2| = 2) -> 0.9.
    m = sv.match_threshold(score, ref)
    assert (m.threshold, m.n_flagged) == (0.9, 1)
    assert m.share == pytest.approx(1 / 6)


def test_match_threshold_equal_distance_prefers_the_higher_threshold():
    score = np.array([0.1, 0.2, 0.5, 0.5, 0.9, 0.9])
    ref = np.array([0, 0, 0, 1, 1, 1], bool)  # k = 3
    # 0.9 flags 2 and 0.5 flags 4: both 1 away from 3; the one flagging fewer (0.9) wins.
    m = sv.match_threshold(score, ref)
    assert (m.threshold, m.n_flagged) == (0.9, 2)


def test_match_threshold_paper_like_share_and_order_invariance():
    rng = np.random.default_rng(3)
    n = 10480
    score = rng.beta(1, 12, n)
    ref = np.zeros(n, bool)
    ref[rng.choice(n, 433, replace=False)] = True  # 4.13% as in the paper
    m = sv.match_threshold(score, ref)
    assert m.n_flagged == 433 and m.share == pytest.approx(0.0413, abs=5e-5)
    perm = rng.permutation(n)
    assert sv.match_threshold(score[perm], ref[perm]) == m


def test_match_threshold_all_reference_positive_flags_everyone():
    m = sv.match_threshold([3.0, 1.0, 2.0], [1, 1, 1])
    assert (m.threshold, m.share) == (1.0, 1.0)


@pytest.mark.parametrize("score, ref, match", [
    ([0.1, np.nan, 0.3], [1, 0, 0], "finite"),
    ([0.1, 0.2, 0.3], [0, 0, 0], "no patient"),
    ([0.1, 0.2, 0.3], [1, 0], "one value per patient"),
    ([0.1, 0.2, 0.3], [0.5, 0, 1], "booleans or 0/1"),
    ([], [], "non-empty"),
])
def test_match_threshold_errors(score, ref, match):
    with pytest.raises(ValueError, match=match):
        sv.match_threshold(score, ref)


# --- Kaplan-Meier ----------------------------------------------------------------------------

def test_kaplan_meier_toy_by_hand():
    km = sv.kaplan_meier(TOY_T, TOY_E, times=[0, 1, 2.5, 3, 4.5, 6])
    # S(1) = 5/6; S(2) = 5/6 * 4/5 = 2/3 (5 at risk at 2, the censoring at 2 counts as at risk);
    # S(3) = 2/3 * 2/3 = 4/9 (3 at risk); flat to the death at 5; past the last time (5): NaN.
    expected = [1.0, 5 / 6, 2 / 3, 4 / 9, 4 / 9, np.nan]
    np.testing.assert_allclose(km["survival"], expected, rtol=1e-12)
    assert (km["group"] == "all").all()
    # At risk = follow-up >= t: 6, 6, 3 (3, 4, 5), 3, 1 (5), 0.
    assert km["n_at_risk"].tolist() == [6, 6, 3, 3, 1, 0]
    assert km["cum_events"].tolist() == [0, 1, 2, 3, 3, 4]
    # Log-log interval at t = 2.5: Greenwood sum d/(n(n - d)) = 1/(6*5) + 1/(5*4) = 1/12,
    # se = sqrt(1/12) / |log(2/3)|, interval (2/3) ** exp(+/- 1.96 se).
    se = math.sqrt(1 / 12) / abs(math.log(2 / 3))
    row = km.iloc[2]
    assert row["ci_low"] == pytest.approx((2 / 3) ** math.exp(Z95 * se), rel=1e-9)
    assert row["ci_high"] == pytest.approx((2 / 3) ** math.exp(-Z95 * se), rel=1e-9)
    assert km["ci_low"].iloc[0] == km["ci_high"].iloc[0] == 1.0
    assert np.isnan(km["ci_low"].iloc[-1])


def test_kaplan_meier_groups_are_separate_curves():
    t = np.r_[TOY_T, [1.0, 2.0, 3.0]]
    e = np.r_[TOY_E, [0, 1, 0]]
    g = np.array(["b"] * 6 + ["a"] * 3)
    km = sv.kaplan_meier(t, e, g, times=[2.0])
    assert km["group"].tolist() == ["a", "b"]  # sorted
    # Group a: 3 at risk at 2 after a censoring at 1 -> 2 at risk, one death: S = 1/2.
    np.testing.assert_allclose(km["survival"], [0.5, 2 / 3])
    assert km["n_at_risk"].tolist() == [2, 5]


def test_kaplan_meier_default_times_are_yearly():
    km = sv.kaplan_meier(TOY_T, TOY_E)
    assert km["time"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_at_risk_table():
    g = np.array(["x", "y", "x", "y", "x", "y"])
    tab = sv.at_risk_table(TOY_T, group=g, times=[0, 2, 4])
    # x: times 1, 2, 4; y: times 2, 3, 5.
    assert tab.index.tolist() == ["x", "y"]
    assert tab.loc["x"].tolist() == [3, 2, 1]
    assert tab.loc["y"].tolist() == [3, 3, 1]
    single = sv.at_risk_table(TOY_T, times=[2.5])
    assert single.loc["all", 2.5] == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(time=[1, -1], event=[1, 0]), ">= 0"),
    (dict(time=[1, np.nan], event=[1, 0]), "finite"),
    (dict(time=[1, 2], event=[1, 2]), "booleans or 0/1"),
    (dict(time=[1, 2], event=[1, 0], group=["a", None]), "missing label"),
    (dict(time=[1, 2], event=[1, 0], times=[-1]), "times"),
    (dict(time=[1, 2], event=[1, 0], level=95), "level"),
])
def test_kaplan_meier_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sv.kaplan_meier(**kwargs)


# --- log-rank --------------------------------------------------------------------------------

def test_logrank_toy_by_hand():
    t = np.array([1, 3, 5, 2, 4, 6], float)
    e = np.array([1, 1, 0, 1, 0, 1])
    g = np.array(["A", "A", "A", "B", "B", "B"])
    # Death times, with (n, n_A, d): expected deaths of A = n_A d / n,
    # hypergeometric variance n_A n_B d (n - d) / (n^2 (n - 1)):
    #   t=1 (A): (6, 3, 1): E = 0.5, V = 3*3*1*5 / (36*5) = 0.25
    #   t=2 (B): (5, 2, 1): E = 0.4, V = 2*3*1*4 / (25*4) = 0.24
    #   t=3 (A): (4, 2, 1): E = 0.5, V = 2*2*1*3 / (16*3) = 0.25
    #   t=6 (B): (1, 0, 1): E = 0,   V = 0
    # O_A = 2, E_A = 1.4, V = 0.74: chi2 = 0.6^2 / 0.74.
    chi2 = 0.36 / 0.74
    res = sv.logrank(t, e, g)
    assert res.statistic == pytest.approx(chi2, rel=1e-12)
    assert res.p_value == pytest.approx(stats.chi2.sf(chi2, 1), rel=1e-10)
    assert res.df == 1 and res.groups == ("A", "B")


def test_logrank_more_groups_and_label_invariance():
    rng = np.random.default_rng(5)
    n = 300
    g = rng.choice(["Calgary", "Ottawa", "Yale"], n)
    t = rng.exponential(np.where(g == "Yale", 3.0, 5.0))
    e = (rng.random(n) < 0.7).astype(int)
    res = sv.logrank(t, e, g)
    assert res.df == 2 and res.groups == ("Calgary", "Ottawa", "Yale")
    recoded = pd.Series(g).map({"Calgary": 3, "Ottawa": 1, "Yale": 2}).to_numpy()
    assert sv.logrank(t, e, recoded).statistic == pytest.approx(res.statistic, rel=1e-10)


def test_logrank_p_underflow_is_logged(caplog):
    # 1,000 deaths in group A before any in group B (which has none): chi-square about 2,500 on 1 df,
    # whose upper tail (about 1e-540) is below the smallest float.
    n = 1000
    t = np.r_[np.arange(1.0, n + 1), np.full(n, n + 10.0)]
    e = np.r_[np.ones(n), np.zeros(n)]
    g = np.r_[np.full(n, "A"), np.full(n, "B")]
    with caplog.at_level(logging.INFO, logger="ctac_helpers.stats.survival"):
        res = sv.logrank(t, e, g)
    assert res.statistic > 2000 and res.p_value == 0.0
    assert "underflows" in caplog.text
    # a large but representable statistic keeps its digits (2 (1 - Phi(sqrt(x))) for 1 df)
    res = sv.logrank(t[n - 400:n + 400], e[n - 400:n + 400], g[n - 400:n + 400])
    assert 0.0 < res.p_value < 1e-100
    assert res.p_value == pytest.approx(2 * stats.norm.sf(math.sqrt(res.statistic)), rel=1e-9)


def test_logrank_errors():
    with pytest.raises(ValueError, match="at least two groups"):
        sv.logrank([1, 2], [1, 0], ["a", "a"])
    with pytest.raises(ValueError, match="at least one death"):
        sv.logrank([1, 2], [0, 0], ["a", "b"])


# --- Cox -------------------------------------------------------------------------------------

def _exponential_cohort(n, beta, *, seed, extra=None):
    """Deaths from an exponential hazard 0.1 exp(beta x) with binary x; uniform censoring."""
    rng = np.random.default_rng(seed)
    x = (rng.random(n) < 0.4).astype(int)
    lin = beta * x
    df = pd.DataFrame({"x": x})
    if extra is not None:
        z = rng.normal(size=n)
        lin = lin + extra * z
        df["z"] = z
    death_time = rng.exponential(1.0 / (0.1 * np.exp(lin)))
    censor = rng.uniform(2.0, 12.0, n)
    df["followup_years"] = np.minimum(death_time, censor)
    df["death"] = (death_time <= censor).astype(int)
    return df


def test_cox_univariate_recovers_known_hazard_ratio():
    df = _exponential_cohort(3000, math.log(2.0), seed=11)
    out = sv.cox_univariate(df, "followup_years", "death", ["x"])
    row = out.iloc[0]
    assert list(out.columns) == ["covariate", "hr", "ci_low", "ci_high", "p", "n", "events"]
    assert row["ci_low"] < 2.0 < row["ci_high"]
    assert row["p"] < 1e-10
    assert (row["n"], row["events"]) == (3000, int(df["death"].sum()))
    # The interval is exp(b +/- z se) around the HR.
    assert math.log(row["hr"]) == pytest.approx((math.log(row["ci_low"]) + math.log(row["ci_high"])) / 2)


def test_cox_univariate_fits_each_covariate_alone_and_drops_missing_per_model():
    df = _exponential_cohort(600, math.log(2.0), seed=2, extra=0.5)
    df.loc[:9, "z"] = np.nan
    out = sv.cox_univariate(df, "followup_years", "death", ["x", "z"])
    assert out["n"].tolist() == [600, 590]
    ref = CoxPHFitter().fit(df[["followup_years", "death", "z"]].dropna(), "followup_years", "death",
                            fit_options=dict(sv.COX_FIT_OPTIONS))
    assert out.loc[1, "hr"] == pytest.approx(float(np.exp(ref.params_["z"])), rel=1e-8)
    assert out.loc[1, "p"] == pytest.approx(float(ref.summary.loc["z", "p"]), rel=1e-6)


def test_cox_multivariable_recovers_both_effects():
    df = _exponential_cohort(3000, math.log(2.0), seed=7, extra=0.5)
    out = sv.cox_multivariable(df, "followup_years", "death", ["x", "z"])
    assert out["covariate"].tolist() == ["x", "z"]
    assert out.loc[0, "ci_low"] < 2.0 < out.loc[0, "ci_high"]
    assert out.loc[1, "ci_low"] < math.exp(0.5) < out.loc[1, "ci_high"]
    assert 0.6 < out.attrs["concordance"] < 0.8
    assert out.attrs["n"] == 3000 and out.attrs["events"] == int(df["death"].sum())


def _efron_score(time, event, x, beta):
    """Gradient of the Efron log partial likelihood, by its definition (a loop over death times).

    At a death time with ``d`` tied deaths ``D`` and risk set ``R`` (w = exp(x beta)), Efron's
    approximation contributes ``sum_D x - sum_{l<d} (S1 - l/d D1) / (S0 - l/d D0)`` with
    ``S0 = sum_R w``, ``S1 = sum_R w x``, ``D0 = sum_D w``, ``D1 = sum_D w x``.
    """
    w = np.exp(x @ beta)
    score = np.zeros(x.shape[1])
    for t in np.unique(time[event]):
        at_risk, dead = time >= t, (time == t) & event
        d = int(dead.sum())
        s0, s1 = w[at_risk].sum(), (w[at_risk, None] * x[at_risk]).sum(axis=0)
        d0, d1 = w[dead].sum(), (w[dead, None] * x[dead]).sum(axis=0)
        score += x[dead].sum(axis=0)
        for l in range(d):
            score -= (s1 - l / d * d1) / (s0 - l / d * d0)
    return score


def test_cox_fit_solves_the_score_equations():
    # R's coxph iterates to a relative change of 1e-9 in the log partial likelihood; lifelines' default
    # stops with a score of about 1e-3 here. The fit must make the score (Efron ties) vanish.
    rng = np.random.default_rng(8)
    n = 3000
    age = rng.normal(65, 10, n)
    male = (rng.random(n) < 0.5).astype(float)
    z = rng.normal(size=n)
    death_time = rng.exponential(1.0 / (0.05 * np.exp(0.03 * (age - 65) + 0.4 * male + 0.5 * z)))
    censor = rng.uniform(1.0, 8.0, n)
    df = pd.DataFrame({"age": age, "male": male, "z": z,
                       # rounded to months: many tied death times
                       "followup_years": np.round(np.minimum(death_time, censor) * 12) / 12 + 1 / 12,
                       "death": (death_time <= censor).astype(int)})
    assert df.loc[df["death"] == 1, "followup_years"].duplicated().sum() > 500
    covariates = ["age", "male", "z"]
    out = sv.cox_multivariable(df, "followup_years", "death", covariates)
    beta = np.log(out["hr"].to_numpy())
    score = _efron_score(df["followup_years"].to_numpy(), df["death"].to_numpy() == 1,
                         df[covariates].to_numpy(float), beta)
    assert np.abs(score).max() < 1e-8
    uni = sv.cox_univariate(df, "followup_years", "death", ["z"])
    score = _efron_score(df["followup_years"].to_numpy(), df["death"].to_numpy() == 1,
                         df[["z"]].to_numpy(float), np.log(uni["hr"].to_numpy()))
    assert abs(score[0]) < 1e-8


@pytest.mark.parametrize("covariates, match", [
    (["nope"], "not in the DataFrame"),
    (["sex"], "numeric or boolean"),
    (["const"], "constant"),
    ("x", "list of column names"),
    ([], "empty"),
    (["death"], "both a covariate"),
])
def test_cox_errors(covariates, match):
    df = _exponential_cohort(50, 0.5, seed=1).assign(sex="male", const=1.0)
    with pytest.raises(ValueError, match=match):
        sv.cox_multivariable(df, "followup_years", "death", covariates)


def test_cox_univariate_needs_events():
    df = _exponential_cohort(50, 0.5, seed=1).assign(death=0)
    with pytest.raises(ValueError, match="no event"):
        sv.cox_univariate(df, "followup_years", "death", ["x"])


def _separated(n=300, seed=3):
    """A cohort whose flag ``sep`` is 1 only among survivors: its hazard ratio is 0, not estimable."""
    df = _exponential_cohort(n, math.log(2.0), seed=seed)
    df["sep"] = 0.0
    df.loc[df["death"].eq(0) & (np.arange(n) % 3 == 0), "sep"] = 1.0
    return df


def test_cox_univariate_reports_a_covariate_it_cannot_estimate():
    df = _separated()
    with pytest.raises(ValueError, match="sep"):
        sv.cox_univariate(df, "followup_years", "death", ["x", "sep"])
    out = sv.cox_univariate(df, "followup_years", "death", ["x", "sep"], on_failure="report")
    assert list(out.columns) == ["covariate", "hr", "ci_low", "ci_high", "p", "n", "events", "note"]
    assert out.loc[0, "note"] == "" and out.loc[0, "hr"] > 1
    assert np.isnan(out.loc[1, ["hr", "ci_low", "ci_high", "p"]].astype(float)).all() and out.loc[1, "note"]
    assert (out.loc[1, "n"], out.loc[1, "events"]) == (len(df), int(df["death"].sum()))
    with pytest.raises(ValueError, match="not in the DataFrame"):  # bad input is still an error
        sv.cox_univariate(df, "followup_years", "death", ["nope"], on_failure="report")
    with pytest.raises(ValueError, match="'raise' or 'report'"):
        sv.cox_univariate(df, "followup_years", "death", ["x"], on_failure="skip")


def test_cox_multivariable_reports_the_covariate_it_cannot_estimate():
    df = _separated()
    with pytest.raises(ValueError, match="sep"):
        sv.cox_multivariable(df, "followup_years", "death", ["x", "sep"])
    out = sv.cox_multivariable(df, "followup_years", "death", ["x", "sep"], on_failure="report")
    assert out["covariate"].tolist() == ["x", "sep"] and out.loc[0, "note"] == ""
    assert np.isfinite(out.loc[0, "hr"]) and np.isnan(out.loc[1, "hr"]) and out.loc[1, "note"]


def test_cox_multivariable_leaves_out_a_constant_covariate_when_reporting():
    df = _separated().assign(flat=0)
    with pytest.raises(ValueError, match="constant"):
        sv.cox_multivariable(df, "followup_years", "death", ["x", "flat"])
    out = sv.cox_multivariable(df, "followup_years", "death", ["flat", "x"], on_failure="report")
    assert out["covariate"].tolist() == ["flat", "x"]
    assert np.isnan(out.loc[0, "hr"]) and "constant among" in out.loc[0, "note"]
    alone = sv.cox_multivariable(df, "followup_years", "death", ["x"])
    # the others are fitted without it: the same estimate as the model without the constant column
    assert out.loc[1, "hr"] == pytest.approx(alone.loc[0, "hr"], rel=1e-9)
    assert out.loc[1, "note"] == ""
    every = sv.cox_multivariable(df, "followup_years", "death", ["flat"], on_failure="report")
    assert np.isnan(every.loc[0, "hr"]) and "constant" in every.loc[0, "note"]


# --- adjusted HR by subgroup -----------------------------------------------------------------

def _exposure_cohort(n, *, seed):
    """Death hazard 0.05 exp(log 3 * exposure + 0.04 (age - 65) + 0.3 male); exposure rises with age."""
    rng = np.random.default_rng(seed)
    age = rng.normal(65, 10, n)
    male = (rng.random(n) < 0.55).astype(int)
    exposure = (rng.random(n) < 1 / (1 + np.exp(-(age - 75) / 5))).astype(int)
    lin = math.log(3.0) * exposure + 0.04 * (age - 65) + 0.3 * male
    death_time = rng.exponential(1.0 / (0.05 * np.exp(lin)))
    censor = rng.uniform(1.0, 8.0, n)
    return pd.DataFrame({"age": age, "male": male, "ai_high": exposure,
                         "followup_years": np.minimum(death_time, censor),
                         "death": (death_time <= censor).astype(int)},
                        index=pd.RangeIndex(100, 100 + n))


def test_adjusted_hr_by_subgroup(caplog):
    df = _exposure_cohort(4000, seed=21)
    female = df["male"] == 0  # a Series aligned on the (non-default) index
    subgroups = {"all": np.ones(len(df), bool), "male": "male", "female": female,
                 "older": (df["age"] >= 65).to_numpy()}
    with caplog.at_level(logging.INFO, logger="ctac_helpers.stats.survival"):
        out = sv.adjusted_hr_by_subgroup(df, "ai_high", subgroups, ["age", "male"])
    assert list(out.columns) == ["subgroup", "n", "events", "hr", "ci_low", "ci_high", "p", "dropped", "note"]
    assert (out["note"] == "").all()
    assert out["subgroup"].tolist() == ["all", "male", "female", "older"]
    assert out["dropped"].tolist() == ["", "male", "male", ""]
    assert "'male': adjuster(s) ['male'] constant" in caplog.text
    for name, mask in [("male", df["male"] == 1), ("female", female), ("older", df["age"] >= 65)]:
        row = out.set_index("subgroup").loc[name]
        assert (row["n"], row["events"]) == (int(mask.sum()), int(df.loc[mask, "death"].sum()))
    # The model is correctly specified in every subgroup: the true HR 3 lies in each interval.
    assert ((out["ci_low"] < 3.0) & (out["ci_high"] > 3.0)).all()
    # Adjustment matters: the exposure is confounded by age, so the crude HR is larger.
    crude = sv.cox_univariate(df, "followup_years", "death", ["ai_high"]).loc[0, "hr"]
    assert crude > out.loc[0, "hr"]


@pytest.mark.parametrize("subgroups, match", [
    ({"none": np.zeros(200, bool)}, "empty"),
    ({"exposed": "ai_high"}, "constant"),
    ({"bad": "nope"}, "column 'nope' not in the DataFrame"),
    ({"short": np.ones(5, bool)}, "one value per patient"),
    ({"misaligned": pd.Series(True, index=range(200))}, "missing for"),
    ({}, "non-empty mapping"),
])
def test_adjusted_hr_by_subgroup_errors(subgroups, match):
    df = _exposure_cohort(200, seed=4)
    with pytest.raises(ValueError, match=match):
        sv.adjusted_hr_by_subgroup(df, "ai_high", subgroups, ["age"])


def test_adjusted_hr_by_subgroup_rejects_exposure_among_adjusters():
    df = _exposure_cohort(200, seed=4)
    with pytest.raises(ValueError, match="also listed"):
        sv.adjusted_hr_by_subgroup(df, "ai_high", {"all": "male"}, ["age", "ai_high"])


def test_adjusted_hr_by_subgroup_reports_a_failed_subgroup_instead_of_raising(caplog):
    df = _exposure_cohort(600, seed=5)
    subgroups = {"all": np.ones(len(df), bool), "exposed": "ai_high"}
    with caplog.at_level(logging.WARNING, logger="ctac_helpers.stats.survival"):
        out = sv.adjusted_hr_by_subgroup(df, "ai_high", subgroups, ["age"], on_failure="report")
    ok, failed = out.iloc[0], out.iloc[1]
    assert np.isfinite(ok["hr"]) and ok["note"] == ""
    assert np.isnan(failed["hr"]) and np.isnan(failed["p"]) and "constant" in failed["note"]
    assert failed["n"] == int(df["ai_high"].sum())
    assert "exposed" in caplog.text
    with pytest.raises(ValueError, match="on_failure must be"):
        sv.adjusted_hr_by_subgroup(df, "ai_high", subgroups, ["age"], on_failure="skip")


def test_hr_rows_report_an_overflowing_interval_as_a_value_error():
    class FakeCox:
        summary = pd.DataFrame({"coef": [2.0], "se(coef)": [800.0], "p": [0.99]}, index=["x"])
    with pytest.raises(ValueError, match="interval overflows"):
        sv._hr_rows(FakeCox(), ["x"], 0.95)


def test_an_empty_subgroup_is_reported_when_asked():
    df = _exposure_cohort(400, seed=3)
    masks = sv.query_masks(df, {"all": None, "nobody": "age > 500"}, allow_empty=True)
    assert not masks["nobody"].any()
    with pytest.raises(ValueError, match="selects no patient"):
        sv.query_masks(df, {"nobody": "age > 500"})
    with pytest.raises(ValueError, match="empty"):
        sv.adjusted_hr_by_subgroup(df, "ai_high", masks, ["age"])
    out = sv.adjusted_hr_by_subgroup(df, "ai_high", masks, ["age"], on_failure="report")
    row = out.set_index("subgroup").loc["nobody"]
    assert row["n"] == 0 and np.isnan(row["hr"]) and row["note"] == "no patient in this subgroup"
    assert np.isfinite(out.set_index("subgroup").loc["all", "hr"])


def test_the_warnings_of_a_cox_fit_are_logged_not_shown(recwarn, caplog):
    # a covariate that separates deaths from survivors: lifelines warns (and numpy may overflow) during the fit;
    # a chapter's page must show none of it, the terminal (the log) says it, with the subgroup
    rng = np.random.default_rng(0)
    n = 60
    death = np.r_[np.ones(6), np.zeros(n - 6)]
    df = pd.DataFrame({"followup_years": rng.uniform(1, 5, n), "death": death.astype(int),
                       "exposure": rng.integers(0, 2, n).astype(float), "separating": death,
                       "age": rng.normal(60, 5, n)})
    caplog.set_level(logging.WARNING, logger="ctac_helpers.stats.survival")
    sv.adjusted_hr_by_subgroup(df, "exposure", {"everyone": np.ones(n, bool)}, ["separating", "age"],
                               on_failure="report")
    assert not recwarn.list, [str(w.message) for w in recwarn]
    assert any(r.message.startswith("adjusted_hr_by_subgroup[everyone]: ConvergenceWarning:") for r in caplog.records)


def test_cox_fit_that_overshoots_from_the_default_step_still_converges():
    # 300 patients of a synthetic paper-profile run (AI high-risk class, uncentred age): lifelines' first
    # Newton step (0.95) overshoots and the fit stops with a singular Hessian; it failed 9 of the 13
    # subgroups of Supplementary Table 7 before the shorter steps were tried.
    from pathlib import Path
    from lifelines.exceptions import ConvergenceError
    from statsmodels.duration.hazard_regression import PHReg

    df = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "cox_overshoot.csv")
    cols = ["followup_years", "death", "ai_high_risk", "age"]
    with pytest.raises(ConvergenceError):
        CoxPHFitter().fit(df[cols], "followup_years", "death", fit_options=dict(sv.COX_FIT_OPTIONS))
    out = sv.cox_multivariable(df, "followup_years", "death", ["ai_high_risk", "age"]).set_index("covariate")
    # the same maximum from a short first step (both stop within about 1e-7 standard errors of it)
    ref = CoxPHFitter().fit(df[cols], "followup_years", "death",
                            fit_options={**sv.COX_FIT_OPTIONS, "step_size": 0.25})
    assert out.loc["ai_high_risk", "hr"] == pytest.approx(float(np.exp(ref.params_["ai_high_risk"])), rel=1e-6)
    # statsmodels' Efron fit agrees on age (it stops early on the exposure's log-HR, which it overshoots too)
    centred = df[["ai_high_risk", "age"]].astype(float).assign(age=lambda d: d["age"] - d["age"].mean())
    with warnings.catch_warnings():  # it stops early on the exposure; only its age coefficient is used
        warnings.simplefilter("ignore")
        sm = PHReg(df["followup_years"], centred, status=df["death"], ties="efron").fit()
    assert math.log(out.loc["age", "hr"]) == pytest.approx(sm.params[1], abs=1e-4)
    with pytest.raises(ValueError, match=r"did not converge.*initial step sizes 0.95\)"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sv, "COX_STEP_SIZES", (0.95,))
            sv.cox_multivariable(df, "followup_years", "death", ["ai_high_risk", "age"])


def test_cox_fit_that_stops_away_from_the_maximum_is_refitted():
    # 300 other patients of the same run: from lifelines' 0.95 step the univariate fit of the AI high-risk
    # class reports convergence at a log-HR of -40 with a NaN standard error (the book printed HR 2e-29).
    from pathlib import Path

    df = pd.read_csv(Path(__file__).resolve().parents[1] / "data" / "cox_false_convergence.csv")
    cols = ["followup_years", "death", "ai_high_risk"]
    with warnings.catch_warnings():  # lifelines' own note on the bad fit
        warnings.simplefilter("ignore")
        bad = CoxPHFitter().fit(df[cols], "followup_years", "death", fit_options=dict(sv.COX_FIT_OPTIONS))
    assert bad.params_["ai_high_risk"] < -20 and not np.isfinite(bad.standard_errors_["ai_high_risk"])
    out = sv.cox_univariate(df, "followup_years", "death", ["ai_high_risk"]).iloc[0]
    ref = CoxPHFitter().fit(df[cols], "followup_years", "death",
                            fit_options={**sv.COX_FIT_OPTIONS, "step_size": 0.25})
    assert out["hr"] == pytest.approx(float(np.exp(ref.params_["ai_high_risk"])), rel=1e-6)
    assert 1.0 < out["hr"] and np.isfinite([out["ci_low"], out["ci_high"]]).all()
    # from the default step alone the fit is refused, not reported
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sv, "COX_STEP_SIZES", (0.95,))
        with pytest.raises(ValueError, match="stopped away from the maximum"):
            sv.cox_univariate(df, "followup_years", "death", ["ai_high_risk"])
