import math

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import roc_auc_score

from ctac_helpers.stats import delong


def _naive_delong(y, scores):
    """DeLong et al. (1988) by definition: O(m n) loops over every positive-negative pair."""
    y = np.asarray(y)
    scores = np.atleast_2d(np.asarray(scores, float))
    k = scores.shape[0]
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)

    def psi(a, b):
        return 1.0 if a > b else (0.5 if a == b else 0.0)

    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    for r in range(k):
        for ii, i in enumerate(pos):
            for jj, j in enumerate(neg):
                h = psi(scores[r, i], scores[r, j])
                v10[r, ii] += h / n
                v01[r, jj] += h / m
    aucs = v10.mean(axis=1)
    s10 = np.zeros((k, k))
    s01 = np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = sum((v10[r, i] - aucs[r]) * (v10[s, i] - aucs[s]) for i in range(m)) / (m - 1)
            s01[r, s] = sum((v01[r, j] - aucs[r]) * (v01[s, j] - aucs[s]) for j in range(n)) / (n - 1)
    return aucs, s10 / m + s01 / n


def _tied_data(seed, n=70, k=3):
    """Correlated integer-valued scores: many ties, within and across classes."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = [0, 1]
    latent = y + rng.normal(size=n)
    scores = np.vstack([np.round(latent * (r + 1) + rng.normal(scale=1.0, size=n)) for r in range(k)])
    return y, scores


# --- AUC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    y, scores = _tied_data(seed, n=300)
    assert len(np.unique(scores[0])) < 40  # the data really are tied
    for s in scores:
        assert delong.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-14)


def test_auc_accepts_bool_labels_and_is_rank_invariant():
    y, scores = _tied_data(3)
    a = delong.auc(y, scores[0])
    assert delong.auc(y.astype(bool), scores[0]) == a
    assert delong.auc(y.astype(float), np.exp(scores[0] / 5)) == a  # monotone transform
    assert delong.auc(y, -scores[0]) == pytest.approx(1 - a, abs=1e-15)


def test_auc_hand_cases():
    # Positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4) -> 3/4.
    assert delong.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # A tie between a positive and a negative counts 1/2: (1 + 0.5 + 1 + 1) / 4.
    assert delong.auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9]) == 0.875
    assert delong.auc([0, 1], [3.0, 3.0]) == 0.5


# --- fast DeLong against the definition ----------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_delong_equals_naive_definition(seed):
    y, scores = _tied_data(seed)
    aucs, cov = delong.delong_covariance(y, scores)
    ref_aucs, ref_cov = _naive_delong(y, scores)
    assert cov.shape == (3, 3)
    np.testing.assert_allclose(aucs, ref_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=0, atol=1e-12)
    # Also with continuous (untied) scores.
    cont = scores + np.random.default_rng(seed).normal(scale=0.01, size=scores.shape)
    np.testing.assert_allclose(delong.delong_covariance(y, cont)[1], _naive_delong(y, cont)[1],
                               rtol=0, atol=1e-12)


def test_delong_test_equals_naive_contrast():
    y, scores = _tied_data(5)
    aucs, cov = _naive_delong(y, scores[:2])
    r = delong.delong_test(y, scores[0], scores[1])
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert r.difference == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert r.se == pytest.approx(se, abs=1e-12)
    assert r.z == pytest.approx((aucs[0] - aucs[1]) / se, abs=1e-10)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(r.z)), abs=1e-12)
    assert r.correlation == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]), abs=1e-12)


# --- hand-computed cases -------------------------------------------------------------------------

def test_hand_computed_variance_and_interval():
    # y = [0,0,1,1], score = [0.1,0.4,0.35,0.8]: positives x = (0.35, 0.8), negatives (0.1, 0.4).
    # V10(x) = share of negatives below x: V10 = (1/2, 1).  V01(y) = share of positives above y:
    # V01(0.1) = 1, V01(0.4) = 1/2.  AUC = 3/4.
    # S10 = ((1/2-3/4)^2 + (1-3/4)^2) / (2-1) = 1/8, S01 = 1/8 likewise.
    # var = S10/m + S01/n = 1/16 + 1/16 = 1/8.
    r = delong.auc_ci_delong([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert r.auc == 0.75
    assert r.variance == pytest.approx(0.125, abs=1e-15)
    assert r.se == pytest.approx(math.sqrt(0.125), abs=1e-15)
    z975 = 1.959963984540054
    assert r.ci_low == pytest.approx(0.75 - z975 * math.sqrt(0.125), abs=1e-12)
    assert r.ci_high == 1.0  # 0.75 + 0.693 cut to 1
    assert (r.n_positive, r.n_negative, r.level) == (2, 2, 0.95)


def test_hand_computed_variance_with_tie():
    # y = [0,0,1,1], score = [0.2,0.5,0.5,0.9]; the positive 0.5 ties the negative 0.5.
    # V10 = (0.5 vs {0.2, 0.5} -> (1 + 1/2)/2, 0.9 -> 1) = (3/4, 1); V01 = (0.2 -> 1, 0.5 -> (1/2 + 1)/2)
    # = (1, 3/4). AUC = 7/8. S10 = S01 = 2 (1/8)^2 = 1/32. var = 1/64 + 1/64 = 1/32.
    r = delong.auc_ci_delong([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9])
    assert r.auc == 0.875
    assert r.variance == pytest.approx(1 / 32, abs=1e-15)


def test_hand_computed_paired_test():
    # Model a as above: V10_a = (1/2, 1), V01_a = (1, 1/2), AUC_a = 3/4.
    # Model b = [0.3, 0.2, 0.1, 0.6]: positives (0.1, 0.6), negatives (0.3, 0.2).
    # V10_b = (0, 1), V01_b = (1/2, 1/2), AUC_b = 1/2.
    # S10: var_a = 1/8, var_b = ((0-1/2)^2 + (1-1/2)^2) = 1/2, cov = (-1/4)(-1/2) + (1/4)(1/2) = 1/4.
    # S01: var_a = 1/8, var_b = 0, cov = 0.
    # S = S10/2 + S01/2: S_aa = 1/8, S_bb = 1/4, S_ab = 1/8.
    # var(diff) = 1/8 + 1/4 - 2/8 = 1/8; z = (1/4) / sqrt(1/8) = 1/sqrt(2); p = erfc(1/2).
    y = [0, 0, 1, 1]
    a = [0.1, 0.4, 0.35, 0.8]
    b = [0.3, 0.2, 0.1, 0.6]
    aucs, cov = delong.delong_covariance(y, [a, b])
    np.testing.assert_allclose(aucs, [0.75, 0.5], atol=1e-15)
    np.testing.assert_allclose(cov, [[1 / 8, 1 / 8], [1 / 8, 1 / 4]], atol=1e-15)
    r = delong.delong_test(y, a, b)
    assert r.difference == 0.25
    assert r.se == pytest.approx(math.sqrt(1 / 8), abs=1e-15)
    assert r.z == pytest.approx(1 / math.sqrt(2), abs=1e-14)
    assert r.p_value == pytest.approx(math.erfc(0.5), abs=1e-14)
    assert r.correlation == pytest.approx((1 / 8) / math.sqrt(1 / 8 * 1 / 4), abs=1e-14)
    assert r.ci_b == (0.0, 1.0)  # 0.5 +/- 1.96 * 0.5 cut to [0, 1]
    swapped = delong.delong_test(y, b, a)
    assert (swapped.difference, swapped.z, swapped.p_value) == (-r.difference, -r.z, r.p_value)


def test_perfect_separation():
    y = np.array([0, 0, 0, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.9])
    r = delong.auc_ci_delong(y, perfect)
    # Every V10 and V01 equals 1: no spread, variance 0, interval collapses on 1.
    assert (r.auc, r.variance, r.ci_low, r.ci_high) == (1.0, 0.0, 1.0, 1.0)
    t = delong.delong_test(y, perfect, perfect * 3 + 1)
    assert (t.difference, t.se, t.z, t.p_value) == (0.0, 0.0, 0.0, 1.0)
    # Against an imperfect model the difference has a positive SE from the imperfect one only.
    other = np.array([0.1, 0.8, 0.3, 0.7, 0.9])
    t = delong.delong_test(y, perfect, other)
    assert t.se == pytest.approx(delong.auc_ci_delong(y, other).se, abs=1e-15)
    assert t.difference > 0 and 0 < t.p_value < 1


def test_identical_scores_give_zero_difference_and_p_one():
    y, scores = _tied_data(7, n=200)
    r = delong.delong_test(y, scores[0], scores[0])
    assert (r.difference, r.se, r.z, r.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert r.ci_a == r.ci_b
    assert r.correlation == pytest.approx(1.0)


def test_zero_se_with_nonzero_difference_gives_p_zero():
    # Perfect versus perfectly reversed: both variances are 0, the difference is 1.
    y = [0, 0, 1, 1]
    r = delong.delong_test(y, [1, 2, 3, 4], [4, 3, 2, 1])
    assert (r.difference, r.se, r.z, r.p_value) == (1.0, 0.0, math.inf, 0.0)


# --- unpaired test -------------------------------------------------------------------------------

def test_unpaired_matches_proc_formula_and_is_antisymmetric():
    ya, sa = _tied_data(11, n=150)
    yb, sb = _tied_data(12, n=90)
    r = delong.delong_test_unpaired(ya, sa[1], yb, sb[0])
    # pROC's delong.unpaired.test from the O(m n) placements: D = diff / sqrt(SR + SS),
    # df = (SR + SS)^2 / (SR^2 / (ntotR - 1) + SS^2 / (ntotS - 1)), p = 2 pt(-|D|, df).
    (auc_a,), var_a = _naive_delong(ya, sa[1])
    (auc_b,), var_b = _naive_delong(yb, sb[0])
    var_a, var_b = var_a[0, 0], var_b[0, 0]
    se = math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (ya.size - 1) + var_b ** 2 / (yb.size - 1))
    assert r.distribution == "t"
    assert r.difference == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert r.se == pytest.approx(se, abs=1e-12)
    assert r.statistic == pytest.approx((auc_a - auc_b) / se, abs=1e-10)
    assert r.df == pytest.approx(df, rel=1e-10)
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(r.statistic), df), abs=1e-12)
    ca = delong.auc_ci_delong(ya, sa[1])
    assert r.ci_a == (ca.ci_low, ca.ci_high)
    back = delong.delong_test_unpaired(yb, sb[0], ya, sa[1])
    assert (back.statistic, back.df, back.p_value) == (pytest.approx(-r.statistic, abs=1e-14),
                                                        pytest.approx(r.df, rel=1e-14),
                                                        pytest.approx(r.p_value, abs=1e-14))


def test_unpaired_normal_variant_is_a_z_test():
    ya, sa = _tied_data(11, n=150)
    yb, sb = _tied_data(12, n=90)
    t = delong.delong_test_unpaired(ya, sa[1], yb, sb[0])
    z = delong.delong_test_unpaired(ya, sa[1], yb, sb[0], distribution="normal")
    assert (z.distribution, z.df) == ("normal", math.inf)
    assert (z.statistic, z.se, z.difference) == (t.statistic, t.se, t.difference)
    assert z.p_value == pytest.approx(2 * stats.norm.sf(abs(z.statistic)), abs=1e-14)


def test_unpaired_hand_computed_t_and_df():
    # Sample a: y = [0,0,1,1], score = [0.1,0.4,0.35,0.8]: AUC 3/4, DeLong variance 1/8 (see
    # test_hand_computed_variance_and_interval). Sample b: [0.2,0.5,0.5,0.9]: AUC 7/8, variance 1/32.
    # V = 1/8 + 1/32 = 5/32; D = (3/4 - 7/8) / sqrt(5/32) = -1/sqrt(10);
    # df = (5/32)^2 / ((1/8)^2 / 3 + (1/32)^2 / 3) = (25/1024) / (17/3072) = 75/17.
    y = [0, 0, 1, 1]
    r = delong.delong_test_unpaired(y, [0.1, 0.4, 0.35, 0.8], y, [0.2, 0.5, 0.5, 0.9])
    assert r.difference == -0.125
    assert r.se == pytest.approx(math.sqrt(5 / 32), abs=1e-15)
    assert r.statistic == pytest.approx(-1 / math.sqrt(10), abs=1e-14)
    assert r.df == pytest.approx(75 / 17, rel=1e-14)
    assert r.p_value == pytest.approx(2 * stats.t.sf(1 / math.sqrt(10), 75 / 17), abs=1e-14)
    # the same by the incomplete beta function: P(|T| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2)
    assert r.p_value == pytest.approx(special.betainc(75 / 34, 0.5, (75 / 17) / (75 / 17 + 0.1)), abs=1e-14)
    # against the normal: 2 (1 - Phi(1 / sqrt(10))) = erfc(1 / sqrt(20)) is smaller
    z = delong.delong_test_unpaired(y, [0.1, 0.4, 0.35, 0.8], y, [0.2, 0.5, 0.5, 0.9], distribution="normal")
    assert z.p_value == pytest.approx(math.erfc(1 / math.sqrt(20)), abs=1e-14) and z.p_value < r.p_value


def test_unpaired_t_p_exceeds_normal_p_in_small_groups():
    rng = np.random.default_rng(21)
    for _ in range(5):
        ya, yb = np.tile([0, 1], 6), np.tile([0, 1], 5)
        sa = ya * 1.5 + rng.normal(size=ya.size)
        sb = rng.normal(size=yb.size)
        t = delong.delong_test_unpaired(ya, sa, yb, sb)
        z = delong.delong_test_unpaired(ya, sa, yb, sb, distribution="normal")
        assert t.df < 30 and t.statistic != 0
        assert t.p_value > z.p_value
    # In large groups the t distribution approaches the normal.
    ya, sa = _tied_data(15, n=3000, k=1)
    yb, sb = _tied_data(16, n=3000, k=1)
    t = delong.delong_test_unpaired(ya, sa[0] * 2, yb, sb[0])
    z = delong.delong_test_unpaired(ya, sa[0] * 2, yb, sb[0], distribution="normal")
    assert t.df > 1000 and t.p_value == pytest.approx(z.p_value, rel=1e-2)


def test_unpaired_same_sample_twice_has_p_one():
    y, s = _tied_data(13)
    r = delong.delong_test_unpaired(y, s[0], y, s[0])
    assert (r.difference, r.statistic, r.p_value) == (0.0, 0.0, 1.0)
    assert r.se == pytest.approx(math.sqrt(2) * delong.auc_ci_delong(y, s[0]).se)
    # equal variances and sizes: df = (2V)^2 / (2 V^2 / (N - 1)) = 2 (N - 1)
    assert r.df == pytest.approx(2 * (y.size - 1), rel=1e-12)


def test_unpaired_zero_variances():
    # Both samples perfectly separated: no spread, df undefined; equal AUCs give p = 1.
    y = [0, 0, 1, 1]
    r = delong.delong_test_unpaired(y, [1, 2, 3, 4], y, [5, 6, 7, 8])
    assert (r.difference, r.se, r.statistic, r.p_value) == (0.0, 0.0, 0.0, 1.0) and math.isnan(r.df)
    # One sample without spread: df is the other sample's N - 1.
    r = delong.delong_test_unpaired(y, [1, 2, 3, 4], [0, 0, 0, 1, 1], [0.1, 0.4, 0.2, 0.35, 0.8])
    assert r.df == pytest.approx(4.0, rel=1e-14)


def test_unpaired_rejects_unknown_distribution():
    y = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="'t', 'normal'"):
        delong.delong_test_unpaired(y, [1, 2, 3, 4], y, [1, 2, 3, 4], distribution="z")


def test_p_value_underflow_is_zero_and_logged(caplog):
    # A perfect score against a random one in 40,000 patients: z is about 100, beyond the smallest float.
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 20000)
    perfect = y + rng.random(y.size) * 0.5
    noise = rng.random(y.size)
    with caplog.at_level("INFO", logger="ctac_helpers.stats.delong"):
        r = delong.delong_test(y, perfect, noise)
    assert r.z > 40 and r.p_value == 0.0
    expected = (math.log(2) + stats.norm.logsf(r.z)) / math.log(10)  # about -2000
    messages = [rec.getMessage() for rec in caplog.records if "underflows" in rec.getMessage()]
    assert len(messages) == 1 and f"log10 p = {expected:.6g}" in messages[0]


def test_level_changes_interval_width():
    y, s = _tied_data(14, n=200)
    r90, r95 = delong.auc_ci_delong(y, s[2], 0.90), delong.auc_ci_delong(y, s[2], 0.95)
    w90, w95 = r90.ci_high - r90.ci_low, r95.ci_high - r95.ci_low
    assert w95 / w90 == pytest.approx(stats.norm.ppf(0.975) / stats.norm.ppf(0.95), rel=1e-12)


# --- input validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("y, score, match", [
    ([0, 0, 0], [1, 2, 3], "both classes"),
    ([1, 1], [1, 2], "both classes"),
    ([0, 1, 2], [1, 2, 3], "binary labels"),
    ([0, 1, np.nan], [1, 2, 3], "binary labels"),
    (["a", "b"], [1, 2], "binary labels"),
    ([], [], "empty"),
    ([[0, 1]], [[1, 2]], "1-D"),
    ([0, 1, 1], [1, 2], "expected 3 samples"),
    ([0, 1], [1, np.nan], "finite"),
    ([0, 1], [1, np.inf], "finite"),
])
def test_invalid_inputs_raise(y, score, match):
    with pytest.raises(ValueError, match=match):
        delong.auc(y, score)


def test_invalid_inputs_of_the_tests_name_the_argument():
    y = [0, 0, 1, 1]
    with pytest.raises(ValueError, match="score_b"):
        delong.delong_test(y, [1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="y_b"):
        delong.delong_test_unpaired(y, [1, 2, 3, 4], [0, 0], [1, 2])
    with pytest.raises(ValueError, match="level"):
        delong.auc_ci_delong(y, [1, 2, 3, 4], level=95)
    with pytest.raises(ValueError, match=r"\(n_models, n_samples\)"):
        delong.delong_covariance(y, np.ones((4, 2)))


def test_results_are_frozen():
    r = delong.delong_test([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], [0.3, 0.2, 0.1, 0.6])
    with pytest.raises(AttributeError):
        r.p_value = 0.0
