"""The paper's fixed definitions: CAC categories, p-value printing, the thresholds shared by chapters."""

import numpy as np
import pytest

from ctac_helpers import definitions
from ctac_helpers.cohort import synth, tables
from ctac_helpers.publish import explorer
from ctac_helpers.results import outcomes


@pytest.mark.parametrize("score, category", [(0, "0"), (0.5, "1-100"), (1, "1-100"), (100, "1-100"),
                                             (100.1, "101-400"), (400, "101-400"), (400.5, ">400"), (5000, ">400")])
def test_category_boundaries(score, category):
    assert definitions.cac_category(score) == category


def test_category_of_arrays():
    out = definitions.cac_category(np.array([0, 50, 150, 900]))
    assert out.tolist() == ["0", "1-100", "101-400", ">400"]


def test_format_p():
    assert definitions.format_p(0.0004) == "<0.001"
    assert definitions.format_p(0.0196) == "0.020"
    assert definitions.format_p(float("nan")) == ""
    assert definitions.format_p(None) == ""


@pytest.mark.parametrize("p", [0.0, 5e-324, 2.2e-308, 4.9e-324, 9.99e-301, np.float64(1e-305)])
def test_format_p_below_1e_300(p):
    # an underflow to 0 and subnormal p-values print as "< 1e-300", never as "0" or "4.9e-324"
    assert definitions.format_p(p) == "< 1e-300"


def test_format_p_at_the_floor():
    assert definitions.P_FLOOR == 1e-300
    assert definitions.format_p(1e-300) == "<0.001"
    assert definitions.format_p(1e-200) == "<0.001"


def test_one_definition_serves_every_layer():
    # the cohort's tables, the generator and the chapter 7 defaults read the same definitions
    assert tables.format_p is definitions.format_p and tables.cac_category is definitions.cac_category
    assert synth.PERFUSION_THRESHOLD == definitions.TPD_ABNORMAL
    assert explorer.CLASS_MODEL == definitions.CLASS_MODEL and explorer.TPD_ISCHEMIA == definitions.TPD_ISCHEMIA
    assert not hasattr(synth, "cac_category") and not hasattr(synth, "ctac_phantom")
    out = outcomes.risk_covariates(pd_cohort(), [0.5, 0.2], 0.3)
    assert out["ischemia"].tolist() == [1.0, 0.0]  # ischemic TPD 10 is ischemic, 9.9 is not


def pd_cohort():
    import pandas as pd
    return pd.DataFrame({"patient_id": ["a", "b"], "followup_years": [1.0, 2.0], "death": [0, 1],
                         "sex": ["male", "female"], "stress_tpd": [10.0, 9.9], "cac_score": [0.0, 500.0],
                         **{c: [0, 1] for c in outcomes.COX_ADJUSTERS if c not in ("male", "age")},
                         "age": [60, 70]})
