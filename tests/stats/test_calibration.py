"""Tests of ctac_helpers.stats.calibration against independent references (scikit-learn, scipy, a plain loop)."""

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from ctac_helpers.stats import calibration as mc


def _simulated(n=4000, seed=0, slope=1.0, shift=0.0):
    """Outcomes drawn from true risks; the risks reported are logit-transformed by ``slope`` and ``shift``."""
    rng = np.random.default_rng(seed)
    true = special.expit(rng.normal(-2.5, 1.0, n))
    y = (rng.random(n) < true).astype(int)
    reported = special.expit((special.logit(true) - shift) / slope)
    return y, reported


def test_brier_score_matches_scikit_learn():
    y, p = _simulated(500, seed=1)
    assert mc.brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    rate = y.mean()
    assert mc.scaled_brier_score(y, p) == pytest.approx(1 - brier_score_loss(y, p) / (rate * (1 - rate)))
    assert mc.scaled_brier_score(y, np.full(y.size, rate)) == pytest.approx(0.0, abs=1e-12)


def test_calibration_slope_matches_scikit_learn_and_citl_solves_its_score_equation():
    y, p = _simulated(3000, seed=2, slope=0.6, shift=0.4)
    fit = mc.calibration_fit(y, p)
    lp = special.logit(p)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(lp[:, None], y)
    assert fit.slope == pytest.approx(ref.coef_[0, 0], rel=1e-5)
    assert fit.intercept == pytest.approx(ref.intercept_[0], rel=1e-5, abs=1e-6)
    # calibration-in-the-large: the intercept a with sum(y - expit(a + logit p)) = 0
    a = optimize.brentq(lambda a: np.sum(y - special.expit(a + lp)), -10, 10, xtol=1e-14)
    assert fit.citl == pytest.approx(a, abs=1e-7)
    assert fit.slope_ci[0] < fit.slope < fit.slope_ci[1] and fit.citl_ci[0] < fit.citl < fit.citl_ci[1]


def test_calibrated_risks_give_slope_one_and_shrunk_risks_a_slope_above_one():
    y, p = _simulated(20000, seed=3)
    good = mc.calibration_fit(y, p)
    assert good.slope_ci[0] < 1 < good.slope_ci[1] and good.citl_ci[0] < 0 < good.citl_ci[1]
    y, shrunk = _simulated(20000, seed=3, slope=2.0)  # risks pulled towards the middle: a slope of about 2
    assert mc.calibration_fit(y, shrunk).slope == pytest.approx(2.0, rel=0.1)
    assert mc.calibration_errors(y, shrunk)["ici"] > 3 * mc.calibration_errors(y, p)["ici"]


def _lowess_loop(x, y, frac):
    """Cleveland's local linear lowess (tricube weights, no robustness step) written out point by point."""
    n = x.size
    k = int(np.floor(frac * n + 1e-10))
    out = np.empty(n)
    for i in range(n):
        d = np.abs(x - x[i])
        h = np.sort(d)[k - 1]
        w = np.where(d / h < 1, (1 - (d / h) ** 3) ** 3, 0.0)
        A = np.column_stack([np.ones(n), x - x[i]])
        out[i] = np.linalg.solve(A.T @ (w[:, None] * A), A.T @ (w * y))[0]
    return np.clip(out, 0, 1)


def test_ici_and_its_relatives_match_a_plain_lowess_loop():
    rng = np.random.default_rng(4)
    p = np.linspace(0.02, 0.6, 80)  # spaced more than 1% of the range apart: no point shares a local fit
    order = rng.permutation(p.size)
    p = p[order]
    y = (rng.random(p.size) < p).astype(int)
    d = np.abs(p - _lowess_loop(p, y.astype(float), mc.LOWESS_FRAC))
    errors = mc.calibration_errors(y, p)
    assert errors["ici"] == pytest.approx(d.mean(), abs=1e-12)
    assert errors["e50"] == pytest.approx(np.median(d), abs=1e-12)
    assert errors["e90"] == pytest.approx(np.quantile(d, 0.9), abs=1e-12)
    assert errors["emax"] == pytest.approx(d.max(), abs=1e-12)
    assert np.allclose(mc.smooth_calibration(y, p), _lowess_loop(p, y.astype(float), mc.LOWESS_FRAC))


def test_binned_calibration_has_equal_groups_and_wilson_intervals():
    from statsmodels.stats.proportion import proportion_confint

    y, p = _simulated(1003, seed=5)
    p = np.round(p, 2)  # many ties: the groups stay of equal size
    bins = mc.binned_calibration(y, p, n_bins=10)
    assert list(bins["n"]) == [101, 101, 101] + [100] * 7
    assert bins["deaths"].sum() == y.sum()
    assert (np.diff(bins["mean_risk"]) >= 0).all()
    low, high = proportion_confint(bins["deaths"].iloc[0], 101, alpha=0.05, method="wilson")
    assert bins["ci_low"].iloc[0] == pytest.approx(low) and bins["ci_high"].iloc[0] == pytest.approx(high)


def test_smoothed_calibration_band_contains_the_curve_and_is_seeded():
    y, p = _simulated(1500, seed=6, slope=1.5)
    curve, ici = mc.smoothed_calibration(y, p, n_resamples=50, seed=7)
    again, ici2 = mc.smoothed_calibration(y, p, n_resamples=50, seed=7)
    pd.testing.assert_frame_equal(curve, again)
    assert ici == ici2
    inside = (curve["ci_low"] <= curve["observed"] + 1e-12) & (curve["observed"] <= curve["ci_high"] + 1e-12)
    assert inside.mean() > 0.9
    assert ici["ici"] == pytest.approx(mc.calibration_errors(y, p)["ici"])
    assert ici["ici_low"] <= ici["ici_high"]


def test_calibration_table_rows_and_errors():
    y, p = _simulated(800, seed=8)
    scores = pd.DataFrame({"a": p, "b": np.clip(p * 1.5, 0, 1)})
    table = mc.calibration_table(y, scores, n_resamples=20, seed=1, labels={"a": "Model A"})
    assert list(table["model"]) == ["a", "b"] and table["label"].iloc[0] == "Model A"
    assert table.loc[1, "citl"] < 0  # over-predicting risks: a negative calibration-in-the-large
    again, curves = mc.calibration_table(y, scores, n_resamples=20, seed=1, labels={"a": "Model A"},
                                         return_curves=True)
    pd.testing.assert_frame_equal(table, again)
    curve, ici = mc.smoothed_calibration(y, p, n_resamples=20, seed=1)
    pd.testing.assert_frame_equal(curves["a"], curve)
    assert table.loc[0, "ici_low"] == ici["ici_low"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        mc.calibration_fit(y, p * 3)
    with pytest.raises(ValueError, match="lack the models"):
        mc.calibration_table(y, scores, ["c"], seed=1)
    with pytest.raises(ValueError, match="both classes"):
        mc.brier_score(np.zeros(5), np.full(5, 0.1))


def test_recalibration_is_cross_fitted_and_repairs_shrunk_fold_models():
    rng = np.random.default_rng(9)
    y, true = _simulated(6000, seed=9)
    fold = rng.integers(0, 5, y.size)
    # each fold "model" shrinks the true log-odds by a different factor: a different scale in every fold
    factors = np.array([1.5, 3.0, 6.0, 2.0, 4.0])
    shrunk = special.expit(-2.7 + (special.logit(true) + 2.7) / factors[fold])
    recal, maps = mc.recalibrate_out_of_fold(y, shrunk, fold, seed=3)
    assert (maps["method"] == "within fold").all() and (maps.groupby("fold").size() == 5).all()
    assert (maps["n_fit"] + maps["n_applied"] == maps["fold"].map(pd.Series(fold).value_counts())).all()
    assert np.isfinite(recal).all()
    # the fitted slopes undo each fold's shrinkage
    assert np.allclose(maps.groupby("fold")["b"].median(), factors, rtol=0.35)
    assert mc.calibration_fit(y, shrunk).slope > 1.8
    fixed = mc.calibration_fit(y, recal)
    assert fixed.slope_ci[0] < 1 < fixed.slope_ci[1]
    again, _ = mc.recalibrate_out_of_fold(y, shrunk, fold, seed=3)
    assert np.array_equal(recal, again)


def test_each_recalibrated_risk_comes_from_a_map_fitted_without_the_patient():
    """Rebuilds every map with scikit-learn on the fold's other parts (the split the docstring describes)."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(11)
    y, true = _simulated(1500, seed=11)
    fold = rng.integers(0, 3, y.size)
    shrunk = special.expit(-2.7 + (special.logit(true) + 2.7) / 2.5)
    recal, _ = mc.recalibrate_out_of_fold(y, shrunk, fold, seed=5, inner_folds=4)
    x = special.logit(shrunk)
    expected = np.full(y.size, np.nan)
    for k in range(3):
        idx = np.flatnonzero(fold == k)
        split_seed = int(np.random.SeedSequence([5, k]).generate_state(1)[0] % (2**31 - 1))
        parts = StratifiedKFold(4, shuffle=True, random_state=split_seed).split(np.zeros(idx.size), y[idx])
        for fit_part, apply_part in parts:
            assert not set(idx[fit_part]) & set(idx[apply_part])
            lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[idx[fit_part], None], y[idx[fit_part]])
            expected[idx[apply_part]] = lr.predict_proba(x[idx[apply_part], None])[:, 1]
    assert np.allclose(recal, expected, rtol=1e-5, atol=1e-8)


def test_recalibration_of_a_raw_variable_and_of_folds_with_few_deaths():
    rng = np.random.default_rng(10)
    cac = rng.gamma(0.5, 400, 3000)
    y = (rng.random(3000) < special.expit(-3.5 + 0.4 * np.log1p(cac))).astype(int)
    fold = np.arange(3000) % 5
    risk, maps = mc.recalibrate_out_of_fold(y, cac, fold, scale=mc.risk_scale("cac", "univariate"),
                                            pooling="others", seed=1)
    assert (maps["method"] == "other folds").all() and len(maps) == 5 and ((risk > 0) & (risk < 1)).all()
    assert (maps["n_fit"] == 2400).all()
    assert np.allclose(maps["b"], 0.4, atol=0.15)
    # a fold with a single death borrows the other folds' map
    y_few = y.copy()
    y_few[(fold == 2) & (y == 1)] = 0
    y_few[np.flatnonzero(fold == 2)[0]] = 1
    _, maps = mc.recalibrate_out_of_fold(y_few, cac, fold, scale="log1p", seed=1)
    assert list(maps.loc[maps["fold"] == 2, "method"]) == ["other folds"]
    assert (maps.loc[maps["fold"] != 2, "method"] == "within fold").all()
    with pytest.raises(ValueError, match="allowed: within, others"):
        mc.recalibrate_out_of_fold(y, cac, fold, scale="log1p", pooling="all", seed=1)
    with pytest.raises(ValueError, match="no recalibration scale"):
        mc.risk_scale("eat_volume", "univariate")
