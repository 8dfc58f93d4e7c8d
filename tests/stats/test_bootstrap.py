import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ctac_helpers.stats import bootstrap
from ctac_helpers.stats import delong


def _data(n, seed, prevalence=0.2, effects=(0.5, 1.0, 1.5), decimals=1):
    """Outcome and scores of a few correlated models, rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    shared = rng.normal(size=n)
    scores = {f"m{k}": np.round(effects[k] * y + shared + rng.normal(size=n), decimals)
              for k in range(len(effects))}
    return y, scores


@pytest.mark.parametrize("stratified", [True, False])
def test_replicates_are_the_aucs_of_the_resampled_data(stratified):
    y, scores = _data(300, 0)
    reps = bootstrap.bootstrap_auc_replicates(y, scores, 20, seed=5, stratified=stratified)
    assert list(reps.columns) == ["m0", "m1", "m2"] and len(reps) == 20
    draws = bootstrap.resample_indices(y == 1, 20, 5, stratified)
    for b, idx in enumerate(draws):
        for name, s in scores.items():
            assert reps.loc[b, name] == pytest.approx(delong.auc(y[idx], s[idx]), abs=1e-12)


def test_stratification_keeps_class_counts():
    y, _ = _data(500, 1)
    labels = y == 1
    m = int(labels.sum())
    strat = [int(labels[idx].sum()) for idx in bootstrap.resample_indices(labels, 50, 3, True)]
    free = [int(labels[idx].sum()) for idx in bootstrap.resample_indices(labels, 50, 3, False)]
    assert strat == [m] * 50
    assert len(set(free)) > 5  # unstratified class counts vary


def test_same_seed_same_output_and_chunking_does_not_matter(monkeypatch):
    y, scores = _data(400, 2)
    a = bootstrap.bootstrap_auc(y, scores, 250, seed=11)
    pd.testing.assert_frame_equal(a, bootstrap.bootstrap_auc(y, scores, 250, seed=11))
    monkeypatch.setattr(bootstrap, "_CHUNK", 7)
    pd.testing.assert_frame_equal(a, bootstrap.bootstrap_auc(y, scores, 250, seed=11))
    b = bootstrap.bootstrap_auc(y, scores, 250, seed=12)
    assert not np.allclose(a["ci_low"], b["ci_low"])
    # A model's replicates do not depend on which other models are bootstrapped with it.
    alone = bootstrap.bootstrap_auc_replicates(y, {"m1": scores["m1"]}, 250, seed=11)
    together = bootstrap.bootstrap_auc_replicates(y, scores, 250, seed=11)
    np.testing.assert_array_equal(alone["m1"], together["m1"])


def test_bootstrap_auc_table():
    y, scores = _data(600, 3)
    df = bootstrap.bootstrap_auc(y, scores, 300, seed=1)
    assert list(df.columns) == ["model", "auc", "ci_low", "ci_high", "n_resamples"]
    assert list(df["model"]) == ["m0", "m1", "m2"]
    assert (df["n_resamples"] == 300).all()
    for _, r in df.iterrows():
        assert r.auc == delong.auc(y, scores[r.model])
        assert r.ci_low < r.auc < r.ci_high
    reps = bootstrap.bootstrap_auc_replicates(y, scores, 300, seed=1)
    np.testing.assert_allclose(df["ci_low"], reps.quantile(0.025).to_numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(df["ci_high"], reps.quantile(0.975).to_numpy(), rtol=0, atol=1e-15)
    # A 90% interval lies inside the 95% interval of the same replicates.
    df90 = bootstrap.bootstrap_auc(y, scores, 300, seed=1, level=0.9)
    assert (df90["ci_low"] >= df["ci_low"]).all() and (df90["ci_high"] <= df["ci_high"]).all()


def test_input_forms_agree():
    y, scores = _data(200, 4)
    as_dict = bootstrap.bootstrap_auc(y, scores, 50, seed=3)
    as_frame = bootstrap.bootstrap_auc(y, pd.DataFrame(scores), 50, seed=3)
    as_array = bootstrap.bootstrap_auc(y.astype(bool), np.vstack(list(scores.values())), 50, seed=3)
    pd.testing.assert_frame_equal(as_dict, as_frame)
    assert list(as_array["model"]) == ["model_0", "model_1", "model_2"]
    cols = ["auc", "ci_low", "ci_high"]
    np.testing.assert_array_equal(as_dict[cols], as_array[cols])


def test_width_shrinks_with_sample_size():
    widths = {}
    for n in (400, 4000):
        y, scores = _data(n, 5, effects=(1.0,))
        df = bootstrap.bootstrap_auc(y, scores, 200, seed=2)
        widths[n] = float(df["ci_high"][0] - df["ci_low"][0])
    # Width scales as 1 / sqrt(n): about sqrt(10) = 3.2 times narrower.
    assert 2.0 < widths[400] / widths[4000] < 5.0


def test_bootstrap_spread_agrees_with_delong():
    y, scores = _data(3000, 6, effects=(0.8, 1.2))
    reps = bootstrap.bootstrap_auc_replicates(y, scores, 400, seed=4)
    for name, s in scores.items():
        assert reps[name].std(ddof=1) == pytest.approx(delong.auc_ci_delong(y, s).se, rel=0.15)
    diff = bootstrap.bootstrap_auc_difference(y, scores["m1"], scores["m0"], 400, seed=4)
    test = delong.delong_test(y, scores["m1"], scores["m0"])
    assert diff.difference == test.difference
    assert diff.se == pytest.approx(test.se, rel=0.15)
    assert diff.p_value == pytest.approx(test.p_value, abs=0.02)


def test_difference_uses_the_paired_replicates():
    y, scores = _data(500, 7)
    r = bootstrap.bootstrap_auc_difference(y, scores["m2"], scores["m0"], 300, seed=9, level=0.9)
    reps = bootstrap.bootstrap_auc_replicates(y, {"a": scores["m2"], "b": scores["m0"]}, 300, seed=9)
    d = (reps["a"] - reps["b"]).to_numpy()
    assert r.auc_a == delong.auc(y, scores["m2"]) and r.auc_b == delong.auc(y, scores["m0"])
    assert r.difference == r.auc_a - r.auc_b
    np.testing.assert_allclose([r.ci_low, r.ci_high], np.quantile(d, [0.05, 0.95]), rtol=0, atol=1e-15)
    assert r.se == pytest.approx(d.std(ddof=1), rel=1e-12)
    assert r.z == pytest.approx(r.difference / d.std(ddof=1), rel=1e-12)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(r.z)), rel=1e-12)
    assert r.ci_low < r.difference < r.ci_high
    assert (r.level, r.n_resamples) == (0.9, 300)


def test_difference_of_identical_scores():
    y, scores = _data(300, 8)
    r = bootstrap.bootstrap_auc_difference(y, scores["m1"], scores["m1"], 100, seed=1)
    assert (r.difference, r.ci_low, r.ci_high, r.se, r.z, r.p_value) == (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def test_unstratified_drops_single_class_resamples(caplog):
    # 2 positives in 12: about 8% of unstratified resamples draw no positive.
    y = np.array([1, 1] + [0] * 10)
    s = np.arange(12.0)
    reps = bootstrap.bootstrap_auc_replicates(y, {"s": s}, 200, seed=0, stratified=False)
    n_nan = int(reps["s"].isna().sum())
    assert 0 < n_nan < 50
    with caplog.at_level("WARNING", logger="ctac_helpers.stats.bootstrap"):
        df = bootstrap.bootstrap_auc(y, {"s": s}, 200, seed=0, stratified=False)
    assert df["n_resamples"][0] == 200 - n_nan
    assert "single class" in caplog.text


@pytest.mark.parametrize("kwargs, match", [
    (dict(seed=None), "seed"),
    (dict(seed=1.0), "seed"),
    (dict(seed=True), "seed"),
    (dict(seed=-1), "seed"),
    (dict(seed=1, n_resamples=1), "n_resamples"),
    (dict(seed=1, n_resamples=10.0), "n_resamples"),
    (dict(seed=1, level=1.0), "level"),
])
def test_invalid_arguments_raise(kwargs, match):
    y, scores = _data(50, 9)
    with pytest.raises(ValueError, match=match):
        bootstrap.bootstrap_auc(y, scores, **kwargs)


def test_seed_is_required():
    y, scores = _data(50, 9)
    with pytest.raises(TypeError):
        bootstrap.bootstrap_auc(y, scores, 100)


def test_invalid_data_raise():
    y, scores = _data(50, 10)
    with pytest.raises(ValueError, match="both classes"):
        bootstrap.bootstrap_auc(np.zeros(50), scores, seed=1)
    with pytest.raises(ValueError, match="m1"):
        bootstrap.bootstrap_auc(y, {"m0": scores["m0"], "m1": scores["m1"][:-1]}, seed=1)
    with pytest.raises(ValueError, match="no model"):
        bootstrap.bootstrap_auc(y, {}, seed=1)
    with pytest.raises(ValueError, match="finite"):
        bootstrap.bootstrap_auc(y, pd.DataFrame({"a": np.r_[np.nan, scores["m0"][1:]]}), seed=1)
    with pytest.raises(ValueError, match=r"\(n_models, n_samples\)"):
        bootstrap.bootstrap_auc(y, scores["m0"], seed=1)
    with pytest.raises(ValueError, match="score_b"):
        bootstrap.bootstrap_auc_difference(y, scores["m0"], scores["m1"][:10], seed=1)


def test_weighted_auc_equals_the_auc_of_the_repeated_patients():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # ties, which count one half
    w = rng.integers(0, 4, 200)
    repeated = np.repeat(np.arange(200), w)
    assert bootstrap.weighted_auc(y, s, w) == pytest.approx(delong.auc(y[repeated], s[repeated]), abs=1e-12)
    assert bootstrap.weighted_auc(y, s, np.full(200, 0.5)) == pytest.approx(delong.auc(y, s), abs=1e-12)


def test_weighted_auc_refuses_bad_weights():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    with pytest.raises(ValueError, match="non-negative"):
        bootstrap.weighted_auc(y, s, [1, -1, 1, 1])
    with pytest.raises(ValueError, match="4 finite"):
        bootstrap.weighted_auc(y, s, [1, 1, 1])
    with pytest.raises(ValueError, match="both classes"):
        bootstrap.weighted_auc(y, s, [1, 0, 1, 0])
