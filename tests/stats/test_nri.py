"""Tests of ctac_helpers.stats.nri: time-dependent (Kaplan-Meier) NRI, plain NRI and its bootstrap."""

import logging
import math
from fractions import Fraction as F

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ctac_helpers.stats import nri

# --- the 10-patient toy, horizon t0 = 2 ------------------------------------------------------
# id   time  event  old  new   move
# U1   0.5   death   0    1    up
# U2   1.0   death   0    1    up
# U3   3.0   cens    0    1    up
# D1   1.5   death   1    0    down
# D2   2.5   cens    1    0    down
# D3   3.5   cens    1    0    down
# N1   0.8   death   1    1    -
# N2   1.2   cens    0    0    -
# N3   2.0   death   0    0    -     (death exactly at t0: an event, S is right-continuous)
# N4   4.0   cens    1    1    -
TOY_T = np.array([0.5, 1.0, 3.0, 1.5, 2.5, 3.5, 0.8, 1.2, 2.0, 4.0])
TOY_E = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0])
TOY_OLD = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1])
TOY_NEW = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0, 1])
TOY_H = 2.0
# Kaplan-Meier of everyone at t0 (distinct death times <= 2, number at risk n_j, deaths d_j):
#   t=0.5: 10 at risk -> 9/10;  t=0.8: 9 -> 8/9;  t=1.0: 8 -> 7/8;  (censored at 1.2: 6 left)
#   t=1.5: 6 -> 5/6;  t=2.0: 5 -> 4/5
#   S(2) = 9/10 * 8/9 * 7/8 * 5/6 * 4/5 = 7/10 * 4/6 = 7/15;  1 - S(2) = 8/15
# Up group (U1, U2, U3): t=0.5: 3 -> 2/3; t=1.0: 2 -> 1/2;  S_up(2) = 1/3;  P(up) = 3/10
# Down group (D1, D2, D3): t=1.5: 3 -> 2/3;                  S_down(2) = 2/3; P(down) = 3/10
# Bayes: P(up | event)       = (1 - S_up) P(up) / (1 - S)  = (2/3)(3/10) / (8/15) = 3/8
#        P(down | event)     = (1 - S_down) P(down) / (1 - S) = (1/3)(3/10) / (8/15) = 3/16
#        P(up | non-event)   = S_up P(up) / S              = (1/3)(3/10) / (7/15) = 3/14
#        P(down | non-event) = S_down P(down) / S          = (2/3)(3/10) / (7/15) = 3/7
# NRI+ = 3/8 - 3/16 = 3/16;  NRI- = 3/7 - 3/14 = 3/14;  NRI = 3/16 + 3/14 = 45/112
# (Dropping the censored patients instead would give 5 events of 10 and a different answer.)
TOY_EXPECTED = {
    "p_up_events": F(3, 8), "p_down_events": F(3, 16), "p_up_nonevents": F(3, 14),
    "p_down_nonevents": F(3, 7), "nri_events": F(3, 16), "nri_nonevents": F(3, 14),
    "nri_overall": F(45, 112), "event_probability": F(8, 15),
}


def _km(t, e, h):
    """Kaplan-Meier S(h) by definition: product over distinct death times u <= h of 1 - d(u) / n(u)."""
    s = 1.0
    for u in np.unique(t[(e == 1) & (t <= h)]):
        s *= 1.0 - np.sum((t == u) & (e == 1)) / np.sum(t >= u)
    return s


def _nri_reference(t, e, old, new, h):
    """nricens.km.main written out independently (dict of the NRIResult float fields)."""
    old, new = np.asarray(old, bool), np.asarray(new, bool)
    up, down = new & ~old, old & ~new
    s = _km(t, e, h)
    p_up, p_down = up.mean(), down.mean()
    s_up = _km(t[up], e[up], h) if up.any() else s
    s_down = _km(t[down], e[down], h) if down.any() else s
    out = {"p_up_events": (1 - s_up) * p_up / (1 - s), "p_down_events": (1 - s_down) * p_down / (1 - s),
           "p_up_nonevents": s_up * p_up / s, "p_down_nonevents": s_down * p_down / s,
           "event_probability": 1 - s}
    out["nri_events"] = out["p_up_events"] - out["p_down_events"]
    out["nri_nonevents"] = out["p_down_nonevents"] - out["p_up_nonevents"]
    out["nri_overall"] = out["nri_events"] + out["nri_nonevents"]
    return out


def _random_data(seed, n=80, horizon=2.0, censor_before_horizon=True):
    rng = np.random.default_rng(seed)
    t = np.round(rng.exponential(3.0, n), 1) + 0.1          # rounded: many tied times
    e = rng.random(n) < 0.6
    if not censor_before_horizon:
        e = np.where(t <= horizon, True, e)                  # nobody censored at or before t0
    old = rng.random(n) < 0.4
    # New classification agrees with the old one for most, flips some; correlated with early death.
    flip = rng.random(n) < 0.3
    new = np.where(flip, (t < horizon) & e | (rng.random(n) < 0.2), old)
    return t, e.astype(int), old, new


def _fields(res):
    return {k: getattr(res, k) for k in TOY_EXPECTED}


# --- point estimate: hand computation and reference ------------------------------------------

def test_toy_matches_hand_computation():
    res = nri.nri_time_dependent(TOY_T, TOY_E, TOY_OLD, TOY_NEW, TOY_H)
    for key, value in TOY_EXPECTED.items():
        assert getattr(res, key) == pytest.approx(float(value), abs=1e-12), key
    assert (res.n, res.n_up, res.n_down) == (10, 3, 3)
    # Not the naive count (5 deaths by t0 among 10, censored counted as alive).
    naive = nri.nri_binary((TOY_E == 1) & (TOY_T <= TOY_H), TOY_OLD, TOY_NEW)
    assert naive.nri_overall != pytest.approx(res.nri_overall)


def test_toy_death_at_horizon_is_an_event():
    # Just before t0 the death at 2.0 no longer counts: S(1.99) = 7/10 * 5/6 = 7/12.
    res = nri.nri_time_dependent(TOY_T, TOY_E, TOY_OLD, TOY_NEW, 1.99)
    assert res.event_probability == pytest.approx(5 / 12)
    # Up and down groups are unchanged (no death in (1.99, 2]): P(up | event) = (2/3)(3/10)/(5/12).
    assert res.p_up_events == pytest.approx(0.48)


def test_toy_input_types_and_order_do_not_matter():
    ref = nri.nri_time_dependent(TOY_T, TOY_E, TOY_OLD, TOY_NEW, TOY_H)
    perm = np.random.default_rng(3).permutation(10)
    res = nri.nri_time_dependent(list(TOY_T[perm]), TOY_E[perm].astype(bool), TOY_OLD[perm] == 1,
                                 pd.Series(TOY_NEW[perm].astype(float)), TOY_H)
    assert _fields(res) == pytest.approx(_fields(ref), abs=1e-12)
    # Changing the time unit (years -> days) with the horizon changes nothing.
    days = nri.nri_time_dependent(TOY_T * 365.25, TOY_E, TOY_OLD, TOY_NEW, TOY_H * 365.25)
    assert _fields(days) == pytest.approx(_fields(ref), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_matches_independent_reference(seed):
    t, e, old, new = _random_data(seed)
    res = nri.nri_time_dependent(t, e, old, new, 2.0)
    assert _fields(res) == pytest.approx(_nri_reference(t, e, old, new, 2.0), abs=1e-12)
    assert res.n_up == int((new & ~old).sum()) and res.n_down == int((old & ~new).sum())


@pytest.mark.parametrize("seed", range(6))
def test_equals_binary_nri_without_censoring_before_horizon(seed):
    t, e, old, new = _random_data(seed, n=120, censor_before_horizon=False)
    assert not np.any((e == 0) & (t <= 2.0))
    td = nri.nri_time_dependent(t, e, old, new, 2.0)
    binary = nri.nri_binary((e == 1) & (t <= 2.0), old, new)
    assert _fields(td) == pytest.approx(_fields(binary), abs=1e-12)
    assert (td.n, td.n_up, td.n_down) == (binary.n, binary.n_up, binary.n_down)


def test_binary_nri_hand_computation():
    # 4 events: up, up, down, none -> NRI+ = (2 - 1) / 4 = 0.25
    # 6 non-events: down, down, down, up, none, none -> NRI- = (3 - 1) / 6 = 1/3
    event = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    old = [0, 0, 1, 1, 1, 1, 1, 0, 0, 1]
    new = [1, 1, 0, 1, 0, 0, 0, 1, 0, 1]
    res = nri.nri_binary(event, old, new)
    assert (res.p_up_events, res.p_down_events) == pytest.approx((0.5, 0.25))
    assert (res.p_down_nonevents, res.p_up_nonevents) == pytest.approx((0.5, 1 / 6))
    assert (res.nri_events, res.nri_nonevents, res.nri_overall) == pytest.approx((0.25, 1 / 3, 7 / 12))
    assert (res.event_probability, res.n, res.n_up, res.n_down) == (0.4, 10, 3, 4)


# --- invariances and edge cases -------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_swapping_old_and_new_flips_the_sign(seed):
    t, e, old, new = _random_data(seed)
    fwd = nri.nri_time_dependent(t, e, old, new, 2.0)
    back = nri.nri_time_dependent(t, e, new, old, 2.0)
    assert fwd.nri_overall != pytest.approx(0.0)
    for key in ("nri_events", "nri_nonevents", "nri_overall"):
        assert getattr(back, key) == pytest.approx(-getattr(fwd, key), abs=1e-12)
    assert (back.p_up_events, back.p_down_events) == pytest.approx((fwd.p_down_events, fwd.p_up_events))
    assert (back.n_up, back.n_down) == (fwd.n_down, fwd.n_up)
    b_fwd, b_back = nri.nri_binary(e, old, new), nri.nri_binary(e, new, old)
    assert b_back.nri_overall == pytest.approx(-b_fwd.nri_overall)


def test_no_reclassification_gives_zero():
    res = nri.nri_time_dependent(TOY_T, TOY_E, TOY_OLD, TOY_OLD, TOY_H)
    assert (res.nri_events, res.nri_nonevents, res.nri_overall) == (0.0, 0.0, 0.0)
    assert (res.p_up_events, res.p_down_events, res.p_up_nonevents, res.p_down_nonevents) == (0, 0, 0, 0)
    assert (res.n_up, res.n_down) == (0, 0)
    assert res.event_probability == pytest.approx(8 / 15)
    assert nri.nri_binary(TOY_E, TOY_NEW, TOY_NEW).nri_overall == 0.0


def test_only_upward_moves():
    # Everyone moved up: S_up = S, so P(up | event) = P(up | non-event) = 1 and the NRI is 0.
    ones, zeros = np.ones(10, int), np.zeros(10, int)
    res = nri.nri_time_dependent(TOY_T, TOY_E, zeros, ones, TOY_H)
    assert (res.p_up_events, res.p_up_nonevents, res.p_down_events) == pytest.approx((1.0, 1.0, 0.0))
    assert res.nri_overall == pytest.approx(0.0, abs=1e-12)
    # Only the up group of the toy moves: the down components vanish, NRI+ = P(up | event) = 3/8.
    only_up = TOY_NEW | TOY_OLD
    res = nri.nri_time_dependent(TOY_T, TOY_E, TOY_OLD, only_up, TOY_H)
    assert (res.n_up, res.n_down, res.p_down_events, res.p_down_nonevents) == (3, 0, 0.0, 0.0)
    assert (res.nri_events, res.nri_nonevents) == pytest.approx((3 / 8, -3 / 14))


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, match", [
    ({"time": []}, "time must be a non-empty 1-D array"),
    ({"time": TOY_T.reshape(2, 5)}, "time must be a non-empty 1-D array"),
    ({"time": np.r_[-0.5, TOY_T[1:]]}, "finite follow-up times >= 0"),
    ({"time": np.r_[np.nan, TOY_T[1:]]}, "finite follow-up times >= 0"),
    ({"event": TOY_E[:-1]}, r"event must be 1-D with one value per patient \(10\)"),
    ({"event": np.r_[2, TOY_E[1:]]}, r"event must hold 1 \(death\) or 0"),
    ({"event": np.array(["death"] * 10)}, r"event must hold 1 \(death\) or 0"),
    ({"risk_old": TOY_OLD[:-1]}, r"risk_old must be 1-D with one value per patient \(10\)"),
    ({"risk_new": np.linspace(0, 1, 10)}, "risk_new must be a binary high-risk classification"),
    ({"risk_new": np.array(["high"] * 10)}, "risk_new must be a binary high-risk classification"),
    ({"risk_old": np.r_[2, TOY_OLD[1:]]}, "risk_old must be a binary high-risk classification"),
    ({"horizon": 0}, "horizon must be a finite time > 0"),
    ({"horizon": -1.0}, "horizon must be a finite time > 0"),
    ({"horizon": math.inf}, "horizon must be a finite time > 0"),
    ({"horizon": math.nan}, "horizon must be a finite time > 0"),
    ({"horizon": 0.4}, "no death at or before the horizon 0.4"),
    ({"event": np.zeros(10, int)}, "no death at or before the horizon"),
    ({"horizon": 4.0}, "nobody is followed beyond the horizon 4.0"),
])
def test_time_dependent_errors(change, match):
    args = {"time": TOY_T, "event": TOY_E, "risk_old": TOY_OLD, "risk_new": TOY_NEW, "horizon": TOY_H}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        nri.nri_time_dependent(**args)
    with pytest.raises(ValueError, match=match):
        nri.bootstrap_nri(**args, n_resamples=10, seed=0)


@pytest.mark.parametrize("event, old, new, match", [
    ([1, 1, 1], [0, 1, 0], [1, 1, 0], "event must contain both classes"),
    ([1, 0, 2], [0, 1, 0], [1, 1, 0], "event must hold binary labels"),
    ([1, 0, 1], [0, 1], [1, 1, 0], r"risk_old must be 1-D with one value per patient \(3\)"),
    ([1, 0, 1], [0, 1, 0], [0.2, 0.9, 0.5], "risk_new must be a binary high-risk classification"),
])
def test_binary_errors(event, old, new, match):
    with pytest.raises(ValueError, match=match):
        nri.nri_binary(event, old, new)


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": None}, "seed must be a non-negative integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": 1.5}, "seed must be a non-negative integer"),
    ({"seed": 0, "n_resamples": 1}, "n_resamples must be an integer >= 2"),
    ({"seed": 0, "level": 1.0}, "level must be a confidence level strictly between 0 and 1"),
])
def test_bootstrap_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nri.bootstrap_nri(TOY_T, TOY_E, TOY_OLD, TOY_NEW, TOY_H, **kwargs)


# --- bootstrap ------------------------------------------------------------------------------

def _quantile_type2(x, p):
    """R's quantile(type = 2), as in R's source: x_j and x_(j+1) averaged when n p is an integer."""
    x, n = np.sort(x), len(x)
    nppm = n * p
    j = math.floor(nppm + 4 * np.finfo(float).eps)
    h = 1.0 if nppm > j else 0.5
    return (1 - h) * x[min(max(j - 1, 0), n - 1)] + h * x[min(j, n - 1)]


@pytest.fixture(scope="module")
def boot_data():
    return _random_data(11, n=200)


def test_bootstrap_deterministic_and_seed_dependent(boot_data):
    t, e, old, new = boot_data
    a = nri.bootstrap_nri(t, e, old, new, 2.0, 300, seed=5)
    b = nri.bootstrap_nri(t, e, old, new, 2.0, 300, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = nri.bootstrap_nri(t, e, old, new, 2.0, 300, seed=6)
    pd.testing.assert_series_equal(a["estimate"], c["estimate"])
    assert not np.allclose(a[["se", "ci_low", "ci_high"]], c[["se", "ci_low", "ci_high"]])


def test_bootstrap_table(boot_data):
    t, e, old, new = boot_data
    out = nri.bootstrap_nri(t, e, old, new, 2.0, 300, seed=1, level=0.9)
    assert list(out.columns) == ["component", "estimate", "se", "ci_low", "ci_high", "p", "n_resamples"]
    assert list(out["component"]) == ["nri_events", "nri_nonevents", "nri_overall"]
    point = nri.nri_time_dependent(t, e, old, new, 2.0)
    assert out["estimate"].tolist() == pytest.approx([point.nri_events, point.nri_nonevents,
                                                      point.nri_overall], abs=1e-12)
    assert (out["ci_low"] <= out["estimate"]).all() and (out["estimate"] <= out["ci_high"]).all()
    assert (out["ci_low"] < out["ci_high"]).all() and (out["se"] > 0).all()
    assert out["p"].tolist() == pytest.approx(2 * stats.norm.sf(np.abs(out["estimate"] / out["se"])))
    assert (out["n_resamples"] == 300).all()
    assert out.attrs == {"horizon": 2.0, "level": 0.9}
    # A wider level gives a wider interval from the same replicates.
    wide = nri.bootstrap_nri(t, e, old, new, 2.0, 300, seed=1, level=0.99)
    assert (wide["ci_low"] <= out["ci_low"]).all() and (wide["ci_high"] >= out["ci_high"]).all()
    assert wide["se"].tolist() == out["se"].tolist()


def test_bootstrap_replicates_are_nri_of_resampled_patients(boot_data):
    # The weighted Kaplan-Meier of draw counts must equal the NRI recomputed on each resample,
    # drawn from the documented stream: one default_rng(seed), integers(0, n, (B, n)) for B <= 100.
    # B = 50, level 0.9: n p = 2.5 and 47.5, so the percentile interval is (x_(3), x_(48)) sorted.
    t, e, old, new = boot_data
    n, b = t.size, 50
    idx = np.random.default_rng(9).integers(0, n, (b, n))
    reps = np.array([[getattr(nri.nri_time_dependent(t[i], e[i], old[i], new[i], 2.0), k)
                      for k in ("nri_events", "nri_nonevents", "nri_overall")] for i in idx])
    out = nri.bootstrap_nri(t, e, old, new, 2.0, b, seed=9, level=0.9)
    assert out["se"].to_numpy() == pytest.approx(reps.std(axis=0, ddof=1), abs=1e-12)
    srt = np.sort(reps, axis=0)
    assert out["ci_low"].tolist() == pytest.approx(srt[2], abs=1e-12)
    assert out["ci_high"].tolist() == pytest.approx(srt[47], abs=1e-12)
    assert out["ci_low"].tolist() == pytest.approx([_quantile_type2(r, 0.05) for r in reps.T], abs=1e-12)
    # B = 40, level 0.5: n p = 10 and 30 are integers, where type 2 averages x_(10) and x_(11).
    reps40 = np.array([[getattr(nri.nri_time_dependent(t[i], e[i], old[i], new[i], 2.0), k)
                        for k in ("nri_events", "nri_nonevents", "nri_overall")]
                       for i in np.random.default_rng(9).integers(0, n, (40, n))])
    out40 = nri.bootstrap_nri(t, e, old, new, 2.0, 40, seed=9, level=0.5)
    srt = np.sort(reps40, axis=0)
    assert out40["ci_low"].tolist() == pytest.approx((srt[9] + srt[10]) / 2, abs=1e-12)
    assert out40["ci_high"].tolist() == pytest.approx((srt[29] + srt[30]) / 2, abs=1e-12)


def test_weighted_km_equals_km_of_repeated_patients():
    t, e, old, new = _random_data(4, n=50)
    counts = np.random.default_rng(0).integers(0, 4, (3, t.size)).astype(float)
    up, down = new & ~old, old & ~new
    got = nri._nri_km(nri._sorted_times(t, e.astype(bool), 2.0), counts, up, down)
    for row, w in zip(got, counts.astype(int)):
        ref = _nri_reference(np.repeat(t, w), np.repeat(e, w), np.repeat(old, w), np.repeat(new, w), 2.0)
        assert row[:3] == pytest.approx([ref["nri_events"], ref["nri_nonevents"], ref["nri_overall"]])
        assert row[7] == pytest.approx(ref["event_probability"])


def test_bootstrap_without_reclassification():
    out = nri.bootstrap_nri(TOY_T, TOY_E, TOY_OLD, TOY_OLD, TOY_H, 50, seed=0)
    assert (out[["estimate", "se", "ci_low", "ci_high"]].to_numpy() == 0).all()
    assert (out["p"] == 1.0).all()


def test_bootstrap_drops_resamples_without_events(caplog):
    # One death by t0 among 20: about (19/20)^20 = 36% of resamples miss it and have no NRI.
    t = np.r_[1.0, np.full(19, 3.0)]
    e = np.r_[1, np.zeros(19, int)]
    old = np.r_[0, np.zeros(19, int)]
    new = np.r_[1, np.zeros(10, int), np.ones(9, int)]
    with caplog.at_level(logging.WARNING, logger="ctac_helpers.stats.nri"):
        out = nri.bootstrap_nri(t, e, old, new, 2.0, 200, seed=0)
    used = int(out["n_resamples"].iloc[0])
    assert 30 < 200 - used < 120
    assert f"{200 - used} of 200 resamples had no death" in caplog.text
    assert np.isfinite(out[["se", "ci_low", "ci_high", "p"]].to_numpy()).all()
    # With 2 resamples, some seeds leave fewer than 2 defined replicates: a clear error.
    errors = 0
    for seed in range(20):
        try:
            nri.bootstrap_nri(t, e, old, new, 2.0, 2, seed=seed)
        except ValueError as err:
            assert "fewer than 2 bootstrap resamples give a defined NRI" in str(err)
            errors += 1
    assert 0 < errors < 20


@pytest.mark.parametrize("horizon", [None, "2", True])
def test_horizon_must_be_a_number(horizon):
    t = np.array([1.0, 2.5, 3.0, 0.5])
    e = np.array([1, 0, 0, 1])
    with pytest.raises(ValueError, match="horizon must be a number"):
        nri.nri_time_dependent(t, e, [0, 1, 0, 1], [1, 1, 0, 0], horizon)
