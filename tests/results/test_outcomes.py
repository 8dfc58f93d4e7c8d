"""The paper's outcome covariates, Cox adjusters and subgroups (ctac_helpers.results.outcomes)."""
import numpy as np
import pandas as pd
import pytest

from ctac_helpers.results import outcomes
from ctac_helpers.stats import survival as sv


def _small_cohort():
    return pd.DataFrame({
        "patient_id": ["a", "b", "c", "d"], "followup_years": [1.0, 2.0, 3.0, 4.0], "death": [1, 0, 0, 1],
        "sex": ["male", "female", "female", None], "age": [70, 50, 64, 65], "stress_tpd": [12.0, 5.0, 4.9, np.nan],
        "cac_score": [0.0, 400.0, 401.0, 10.0], "hypertension": [1, 0, 1, 0], "dyslipidemia": [0, 0, 1, 1],
        "diabetes": [1, 1, 0, 0], "peripheral_vascular_disease": [0, 0, 0, 1], "prior_mi": [0, 1, 0, 0],
        "family_history_cad": [1, 0, 0, 0]}, index=[10, 11, 12, 13])


def test_ischemic_tpd_is_stress_minus_rest_with_stress_standing_in():
    c = _small_cohort().assign(rest_tpd=[1.0, np.nan, 4.9, 2.0])
    isch = outcomes.ischemic_tpd(c)
    assert list(isch.index) == [10, 11, 12, 13]
    assert isch.loc[10] == 11.0 and isch.loc[11] == 5.0 and isch.loc[12] == pytest.approx(0.0)
    assert np.isnan(isch.loc[13])  # no stress TPD: no ischemic TPD
    assert isch.attrs["stress_only"] == 1  # patient b: stress TPD stood in
    without = outcomes.ischemic_tpd(_small_cohort())
    assert without.attrs["stress_only"] == 3
    pd.testing.assert_series_equal(without, _small_cohort()["stress_tpd"].rename("ischemic_tpd"))


def test_risk_covariates_uses_the_ischemic_deficit():
    c = _small_cohort().assign(rest_tpd=[1.0, 0.0, 0.0, 0.0])
    out = outcomes.risk_covariates(c, [0.5, 0.2, 0.1, 0.3], 0.3, tpd_ischemia=4.95)
    # a: 12 - 1 = 11 >= 4.95; b: 5 - 0 = 5 >= 4.95; c: 4.9 < 4.95
    assert out["ischemia"].tolist()[:3] == [1, 1, 0]
    c2 = c.assign(rest_tpd=[8.0, 0.0, 0.0, 0.0])
    assert outcomes.risk_covariates(c2, [0.5, 0.2, 0.1, 0.3], 0.3)["ischemia"].tolist()[:3] == [0, 0, 0]
    # abnormal perfusion still reads stress TPD
    assert outcomes.risk_covariates(c2, [0.5, 0.2, 0.1, 0.3], 0.3)["abnormal_perfusion"].tolist()[:3] == [1, 1, 0]


def test_risk_covariates_encodes_the_papers_cut_points():
    c = _small_cohort()
    out = outcomes.risk_covariates(c, [0.5, 0.2, 0.1, 0.3], 0.3)
    assert list(out.index) == [10, 11, 12, 13]
    assert out["ai_high_risk"].tolist() == [1, 0, 0, 1]  # score >= threshold
    assert out["ischemia"].tolist()[:3] == [1, 0, 0] and np.isnan(out.loc[13, "ischemia"])
    assert out["abnormal_perfusion"].tolist()[:3] == [1, 1, 0]  # TPD >= 5
    assert out["cac_gt400"].tolist() == [0, 0, 1, 0]  # strictly above 400
    assert out["cac_zero"].tolist() == [1, 0, 0, 0]
    assert out["male"].tolist()[:3] == [1, 0, 0] and np.isnan(out.loc[13, "male"])
    assert set(outcomes.COX_ADJUSTERS) <= set(out.columns)
    shifted = outcomes.risk_covariates(c, [0.5, 0.2, 0.1, 0.3], 0.3, tpd_ischemia=4.9, cac_high=10)
    assert shifted["ischemia"].tolist()[:3] == [1, 1, 1] and shifted["cac_gt400"].tolist() == [0, 1, 1, 0]


def test_cox_adjusters_are_the_papers():
    from ctac_helpers.core import manifest
    paper = manifest.paper_entry("supp_fig4")["adjusted_for"]
    assert [("male" if a == "sex" else a) for a in paper] == list(outcomes.COX_ADJUSTERS)


@pytest.mark.parametrize("change, match", [
    (lambda c: c.drop(columns="diabetes"), "diabetes"),
    (lambda c: c.assign(sex=["male", "F", "female", "male"]), "row 1: 'F'; expected 'male' or 'female'"),
])
def test_risk_covariates_errors(change, match):
    with pytest.raises(ValueError, match=match):
        outcomes.risk_covariates(change(_small_cohort()), [0.1, 0.2, 0.3, 0.4], 0.2)
    with pytest.raises(ValueError, match="one value per patient"):
        outcomes.risk_covariates(_small_cohort(), [0.1, 0.2], 0.2)


def test_query_masks_and_the_papers_subgroups():
    frame = outcomes.risk_covariates(_small_cohort(), [0.5, 0.2, 0.1, 0.3], 0.3)
    masks = sv.query_masks(frame, {"everyone": None, "men": "male == 1", "older": "age >= 65"})
    assert masks["everyone"].all() and masks["men"].tolist() == [True, False, False, False]
    assert masks["older"].tolist() == [True, False, False, True]
    every = sv.query_masks(frame, outcomes.HR_SUBGROUPS)
    assert list(every) == list(outcomes.HR_SUBGROUPS) and every["no coronary calcium"].tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="'typo'.*invalid query 'wieght > 1'"):
        sv.query_masks(frame, {"typo": "wieght > 1"})
    with pytest.raises(ValueError, match="not a boolean condition"):
        sv.query_masks(frame, {"sum": "age + 1"})
    with pytest.raises(ValueError, match="selects no patient"):
        sv.query_masks(frame, {"none": "age > 200"})


def test_covariate_label():
    assert outcomes.covariate_label("cac_gt400") == "Severe coronary calcium"
    assert outcomes.covariate_label("nonexistent_column") == "nonexistent_column"
