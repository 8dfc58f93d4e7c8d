"""The paper's outcome analyses: its covariates, Cox adjusters and subgroups, on top of the generic estimators.

:mod:`ctac_helpers.stats.survival` holds the estimators (Kaplan-Meier, log-rank, Cox); this module
holds what the paper fixes about them: the 0/1 covariates of the outcome section (AI high risk,
ischemia, abnormal perfusion, severe and absent calcium), the adjusters of the multivariable model,
the subgroups of Supplementary Table 7 and the display names of the covariates.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ctac_helpers.core import manifest
from ctac_helpers.definitions import TPD_ABNORMAL, TPD_ISCHEMIA
from ctac_helpers.stats.checks import check_columns

__all__ = ["COX_ADJUSTERS", "HR_SUBGROUPS", "covariate_label", "ischemic_tpd", "risk_covariates"]


# ---------------------------------------------------------------------------------------------
# The paper's covariates and subgroups (data)
# ---------------------------------------------------------------------------------------------

# Adjusters of the paper's multivariable model (Results, Supplementary Fig. 4), as the 0/1 columns
# of risk_covariates: 'male' encodes sex with women as the reference.
COX_ADJUSTERS: tuple[str, ...] = ("age", "male", "hypertension", "dyslipidemia", "diabetes",
                                  "peripheral_vascular_disease", "prior_mi", "family_history_cad")

# Subgroups of Supplementary Table 7 as pandas queries on risk_covariates' columns. The paper's
# supplement is not available: these are the strata its text and Table 1 use.
HR_SUBGROUPS: Mapping[str, str | None] = {
    "all patients": None,
    "men": "male == 1",
    "women": "male == 0",
    "age < 65": "age < 65",
    "age >= 65": "age >= 65",
    "hypertension": "hypertension == 1",
    "no hypertension": "hypertension == 0",
    "diabetes": "diabetes == 1",
    "no diabetes": "diabetes == 0",
    "normal perfusion": "abnormal_perfusion == 0",
    "abnormal perfusion": "abnormal_perfusion == 1",
    "no coronary calcium": "cac_zero == 1",
    "coronary calcium": "cac_zero == 0",
}


_LABELS = {"ai_high_risk": "AI high risk", "ischemia": "Ischemia (ischemic TPD)",
           "abnormal_perfusion": "Abnormal perfusion", "cac_gt400": "Severe coronary calcium",
           "cac_zero": "No coronary calcium", "male": "Male sex"}


def covariate_label(name: str) -> str:
    """Display name of a :func:`risk_covariates` column (the cohort schema's label otherwise)."""
    if name in _LABELS:
        return _LABELS[name]
    return manifest.variable_label(name)


def ischemic_tpd(cohort: pd.DataFrame) -> pd.Series:
    """The ischemic (reversible) perfusion deficit: stress TPD minus rest TPD, in % of the myocardium.

    The paper's reference high-risk class is "ischemia >= 10%" (Fig. 3, the NRI, the AI threshold
    matched to 4.13% of patients). Stress TPD >= 10% would flag about 13% of a cohort with the
    paper's Table 1 quartiles; ischemic TPD >= 10% is the reading consistent with 4.13%. Where rest
    TPD is missing (a site without rest imaging, or no ``rest_tpd`` column) stress TPD stands in.

    Parameters
    ----------
    cohort : DataFrame
        With ``stress_tpd`` and optionally ``rest_tpd``.

    Returns
    -------
    Series
        Indexed like ``cohort``; ``attrs["stress_only"]`` counts the patients for whom stress TPD
        stood in.
    """
    check_columns(cohort, ["stress_tpd"], "cohort column(s)")
    stress = pd.to_numeric(cohort["stress_tpd"], errors="coerce")
    rest = (pd.to_numeric(cohort["rest_tpd"], errors="coerce") if "rest_tpd" in cohort
            else pd.Series(np.nan, index=cohort.index))
    out = (stress - rest).where(rest.notna(), stress).rename("ischemic_tpd")
    out.attrs["stress_only"] = int((rest.isna() & stress.notna()).sum())
    return out


def risk_covariates(cohort: pd.DataFrame, score, threshold: float, *, tpd_ischemia: float = TPD_ISCHEMIA,
                    tpd_abnormal: float = TPD_ABNORMAL, cac_high: float = 400.0) -> pd.DataFrame:
    """The 0/1 covariates of the outcome analyses, one row per patient.

    Parameters
    ----------
    cohort : DataFrame
        The cohort table: ``patient_id, followup_years, death, age, sex, stress_tpd, cac_score`` and
        the clinical history columns of :data:`COX_ADJUSTERS`.
    score : array-like of shape (n_samples,)
        The AI score of each patient (out-of-fold), aligned with ``cohort``.
    threshold : float
        AI high risk is ``score >= threshold`` (see :func:`ctac_helpers.stats.survival.match_threshold`).
    tpd_ischemia, tpd_abnormal : float
        Ischemic TPD (%, :func:`ischemic_tpd`) at or above which perfusion counts as ischemic
        (Fig. 3, NRI; the paper: 10) and stress TPD at or above which it is abnormal
        (Supplementary Fig. 4; the paper's normal perfusion is stress TPD < 5).
    cac_high : float
        CAC score above which calcium is severe (the paper: 400).

    Returns
    -------
    DataFrame
        ``patient_id, followup_years, death, score, ai_high_risk, ischemia, abnormal_perfusion,
        cac_gt400, cac_zero`` and :data:`COX_ADJUSTERS`, indexed like ``cohort``. A covariate is
        missing (NaN) where its source value is.

    Raises
    ------
    ValueError
        If a column is missing, ``sex`` holds a value other than ``male``/``female``, or ``score``
        does not have one value per patient.
    """
    need = ["patient_id", "followup_years", "death", "sex", "stress_tpd", "cac_score",
            *[c for c in COX_ADJUSTERS if c != "male"]]
    check_columns(cohort, need, "cohort column(s)")
    s = np.asarray(score, dtype=float)
    if s.shape != (len(cohort),):
        raise ValueError(f"score must hold one value per patient ({len(cohort)}); got shape {s.shape}")
    sex = cohort["sex"]
    bad = sex.notna() & ~sex.isin(["male", "female"])
    if bad.any():
        raise ValueError(f"cohort column 'sex', row {int(np.flatnonzero(bad.to_numpy())[0])}: "
                         f"{sex[bad].iloc[0]!r}; expected 'male' or 'female'")

    def flag(values: pd.Series, positive: pd.Series) -> pd.Series:
        return positive.astype(float).where(values.notna())

    tpd, cac, isch = cohort["stress_tpd"], cohort["cac_score"], ischemic_tpd(cohort)
    out = pd.DataFrame({
        "patient_id": cohort["patient_id"], "followup_years": cohort["followup_years"],
        "death": cohort["death"], "score": s, "ai_high_risk": (s >= threshold).astype(float),
        "ischemia": flag(isch, isch >= tpd_ischemia), "abnormal_perfusion": flag(tpd, tpd >= tpd_abnormal),
        "cac_gt400": flag(cac, cac > cac_high), "cac_zero": flag(cac, cac == 0),
        "male": flag(sex, sex == "male"),
    }, index=cohort.index)
    for c in COX_ADJUSTERS:
        if c != "male":
            out[c] = cohort[c].astype(float)
    return out
