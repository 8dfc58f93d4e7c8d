"""Tests of ctac_helpers.stats.decision: net benefit against the formula, by hand and by a plain loop."""

import numpy as np
import pandas as pd
import pytest

from ctac_helpers.stats import decision

# Ten patients, three deaths, risks in decreasing order.
Y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 0, 0])
RISK = np.array([0.9, 0.8, 0.7, 0.4, 0.35, 0.3, 0.2, 0.1, 0.05, 0.02])


def test_net_benefit_hand_computed():
    # t = 0.25: six flagged (risk >= 0.25), deaths 0.9, 0.7, 0.3: NB = 3/10 - 3/10 * (0.25 / 0.75) = 0.2
    # t = 0.3: the same six (a risk equal to the threshold is flagged): NB = 0.3 - 0.3 * 3/7
    # t = 0.5: 0.9, 0.8, 0.7 flagged, two deaths: NB = 0.2 - 0.1 * 1 = 0.1
    # t = 0.95: nobody flagged: NB = 0
    nb = decision.net_benefit(Y, RISK, [0.25, 0.3, 0.5, 0.95])
    assert nb == pytest.approx([0.2, 0.3 - 0.3 * 3 / 7, 0.1, 0.0], abs=1e-15)
    # treat all at t = 0.25: 0.3 - 0.7 * (1/3)
    assert decision.treat_all_net_benefit(Y, [0.25])[0] == pytest.approx(0.3 - 0.7 / 3)
    # a classification flagging the first two patients: TP 1, FP 1
    assert decision.classification_net_benefit(Y, RISK >= 0.8, [0.5])[0] == pytest.approx(0.1 - 0.1)


def test_net_benefit_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    y = (rng.random(700) < 0.15).astype(int)
    risk = np.round(rng.beta(2, 10, 700), 2)  # ties, some equal to the thresholds
    t = decision.threshold_grid(0.01, 0.4, 0.01)
    loop = [((risk >= s) & (y == 1)).sum() / y.size - ((risk >= s) & (y == 0)).sum() / y.size * s / (1 - s)
            for s in t]
    assert decision.net_benefit(y, risk, t) == pytest.approx(loop, abs=1e-15)


def test_decision_curve_table():
    t = decision.threshold_grid(0.05, 0.5, 0.05)
    assert t[0] == 0.05 and t[-1] == 0.5 and len(t) == 10
    curve = decision.decision_curve(Y, pd.DataFrame({"m": RISK}), t, classifications={"class": RISK >= 0.7})
    assert list(dict.fromkeys(curve["strategy"])) == ["m", "class", decision.TREAT_ALL, decision.TREAT_NONE]
    assert (curve.loc[curve["strategy"] == decision.TREAT_NONE, "net_benefit"] == 0).all()
    m = curve[curve["strategy"] == "m"].set_index("threshold")["net_benefit"]
    assert m.loc[0.5] == pytest.approx(0.1)


def test_bad_thresholds_and_inputs():
    with pytest.raises(ValueError, match="0 < low < high < 1"):
        decision.threshold_grid(0.0, 0.3, 0.01)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        decision.net_benefit(Y, RISK, [1.0])
    with pytest.raises(ValueError, match="one value per label"):
        decision.net_benefit(Y, RISK[:5], [0.1])
    with pytest.raises(ValueError, match="lack the models"):
        decision.decision_curve(Y, pd.DataFrame({"m": RISK}), [0.1], ["x"])
    with pytest.raises(ValueError, match="name of a model"):
        decision.decision_curve(Y, pd.DataFrame({"m": RISK}), [0.1], classifications={"m": RISK > 0.5})
