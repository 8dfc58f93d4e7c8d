"""The synthetic cohort: the book's embedded default, calibrated to what the paper publishes.

The registry behind the paper is private. This module generates, from a seed and for any cohort
size, a table with every variable of the paper's Tables 1 and 2 (plus the 22 SPECT variables, the
sites, acquisition protocol, image quality, race and follow-up) and per-structure CT radiomics
features in the schema that the imaging stages also produce.

How it is built
---------------
1. **Cells.** Sex and death are allocated exactly (5,745 men, 651 deaths: 398 men and 253 women at
   full size; proportionally at any other size).
2. **Margins.** For every variable the paper prints by sex (Table 1) and by mortality (Table 2),
   the four sex x death cells get their own distribution, fitted so that both printed margins hold
   (:mod:`ctac_helpers.cohort.cellfit`: IPF for categories, two-piece normals for continuous values).
   Perfusion targets (69.9% with stress TPD < 5%, 4.7% of them died, the abnormal group's TPD
   quartiles) are fitted into the TPD distribution the same way. The continuous fits are recorded in
   ``data_manifest/margins.yaml`` and read from there (:func:`fitted_continuous`): refitted on another
   machine, they land elsewhere, and the cohort would differ between machines.
3. **Dependence and the death signal.** Within a cell, each patient's values are the cell's
   quantiles at the normal probabilities of latent Gaussian scores. Two kinds of latent variable
   drive them. *Factors* (ageing, adiposity, cardiometabolic and coronary disease, lung disease,
   frailty, exercise capacity) give realistic correlations and carry no death signal. *Death
   components* carry it: a CT-only burden (lungs, body composition, frailty), a coronary component
   (calcium, CT atherosclerosis, perfusion, ejection fraction, history), a myocardial component seen
   only by SPECT, and a clinical component (stress type, exercise capacity, comorbidities) that CT
   does not see. In patients who died each component is shifted by its own ``death_shift``, smaller
   in older patients (``age_modulation``), so that models discriminate better in the young. Each
   variable's loadings on its components are set so that the components explain exactly the
   difference between deaths and survivors that Table 2 prints (:func:`component_loadings`); a
   variable whose printed difference needs more than its components can give keeps the rest as a
   signal of its own, reported by :func:`loading_report`. Flags take exactly the cell's share (the
   highest latent scores), continuous values are random draws.
4. **CT features.** Each structure's intensity histogram (mean, SD, skewness, kurtosis) and
   ellipsoid shape depend on the patient's age, sex, BMI, coronary calcium, adiposity, cardiac size
   and on two disease burdens that the clinical table does not record (lung disease and frailty),
   which mix their own factor with the CT-only death component; aortic atherosclerosis also follows
   the coronary component. Site calibration offsets, protocol- and BMI-dependent noise and presence
   (present / truncated by the field of view / absent) are added. The 32 PyRadiomics features follow
   from these parameters (Cornish-Fisher percentiles, extreme-value minima and maxima, ellipsoid
   shape descriptors).
5. **Follow-up and rest perfusion.** Deaths occur earlier in patients with a stronger death signal
   (``time_risk``); rest TPD leaves a reversible (ischemic) part of the stress deficit.

The structural constants (the components' death shifts, their age modulation and coupling among
deaths, the coronary component's weight in CT atherosclerosis and the reversible fraction of the
stress deficit) are fitted by ``ctac-book calibrate`` (:mod:`ctac_helpers.pipeline.calibrate`) to a few of the
paper's results and stored in ``data_manifest/generator.yaml``; the others are design assumptions
stated in that file. Findings on these data demonstrate the method, not the clinical result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from ctac_helpers.core import manifest
from ctac_helpers.definitions import TPD_ABNORMAL
from ctac_helpers.cohort.cellfit import CELLS, ContinuousModel, Target, allocate_counts, ipf_sex_death
from ctac_helpers.stats.bootstrap import weighted_auc

logger = logging.getLogger(__name__)

PAPER_N = 10480
PAPER_MALE = 5745
PAPER_DEATHS = {"male": 398, "female": 253}

SITES = ("Calgary", "Yale", "Columbia", "Ottawa")
# Supplementary Table 8 (acquisition per site) is not available: shares, protocols and voxel sizes
# are the book's assumptions; Columbia and Ottawa get noisier protocols.
SITE_SHARE = {"Calgary": 0.25, "Yale": 0.33, "Columbia": 0.22, "Ottawa": 0.20}
SITE_PROTOCOLS = {
    "Calgary": {"low_dose_120kvp": 0.8, "low_dose_100kvp": 0.2},
    "Yale": {"low_dose_120kvp": 0.7, "ultra_low_dose_120kvp": 0.3},
    "Columbia": {"low_dose_100kvp": 0.6, "ultra_low_dose_120kvp": 0.4},
    "Ottawa": {"low_dose_120kvp": 0.5, "ultra_low_dose_120kvp": 0.5},
}
SITE_HU_OFFSET = {"Calgary": 4.0, "Yale": 0.0, "Columbia": -5.0, "Ottawa": 3.0}
SITE_VOXEL_MM = {"Calgary": (1.17, 1.17, 5.0), "Yale": (0.98, 0.98, 3.0), "Columbia": (0.98, 0.98, 3.75),
                 "Ottawa": (1.17, 1.17, 5.0)}
PROTOCOL_NOISE_HU = {"low_dose_120kvp": 15.0, "low_dose_100kvp": 20.0, "ultra_low_dose_120kvp": 28.0}
# Race: the Canadian sites rarely record it; the US sites mostly do.
RACE_RECORDED = {"Calgary": 0.05, "Yale": 0.85, "Columbia": 0.85, "Ottawa": 0.05}
RACE_SHARE = {"white": 0.72, "black": 0.16, "asian": 0.05, "other": 0.07}

FACTORS = ("age", "adiposity", "cardiometabolic", "coronary", "lung", "frailty", "fitness")
# Within-cell loadings of each variable's latent score on the shared factors. They set the
# correlations, never the margins, and carry no death signal (that is the components' job).
LOADINGS: dict[str, dict[str, float]] = {
    "age": {"age": 0.95},
    "bmi": {"adiposity": 0.85, "age": -0.10},
    "hypertension": {"age": 0.35, "cardiometabolic": 0.45, "adiposity": 0.20},
    "diabetes": {"cardiometabolic": 0.55, "adiposity": 0.30},
    "dyslipidemia": {"cardiometabolic": 0.45, "coronary": 0.20},
    "smoking": {"lung": 0.50, "age": -0.15},
    "family_history_cad": {"coronary": 0.15, "age": -0.20},
    "prior_mi": {"coronary": 0.70},
    "prior_pci": {"coronary": 0.75},
    "prior_cabg": {"coronary": 0.60, "age": 0.15},
    "peripheral_vascular_disease": {"coronary": 0.35, "cardiometabolic": 0.20, "age": 0.20, "lung": 0.15},
    "stress_type": {"frailty": 0.45, "age": 0.30, "fitness": -0.40, "adiposity": 0.15},
    "ecg_response": {"coronary": 0.35},
    "peak_hr": {"fitness": 0.55, "age": -0.30, "frailty": -0.30},
    "peak_sbp": {"fitness": 0.45, "cardiometabolic": 0.20, "age": 0.10},
    "peak_dbp": {"fitness": 0.35, "cardiometabolic": 0.20, "age": -0.15},
    "stress_ef": {"coronary": -0.60, "fitness": 0.10},
    "stress_edv": {"coronary": 0.45, "adiposity": 0.20},
    "stress_shape_index_ed": {"coronary": 0.35, "adiposity": 0.10},
    "stress_tpd": {"coronary": 0.75, "age": 0.15, "cardiometabolic": 0.10},
    "cac_score": {"age": 0.45, "coronary": 0.05, "cardiometabolic": 0.15},
    "eat_volume": {"adiposity": 0.75, "age": 0.20, "cardiometabolic": 0.10},
    "eat_density": {"adiposity": -0.35, "age": 0.10},
}

# Continuous variables fitted to the printed margins: (transform, offset).
CONTINUOUS = {
    "age": ("identity", 0.0),
    "bmi": ("log", 0.0),
    "cac_score": ("log", 0.0),
    "eat_volume": ("log", 0.0),
    "eat_density": ("identity", 0.0),
    "peak_hr": ("identity", 0.0),
    "peak_sbp": ("identity", 0.0),
    "peak_dbp": ("identity", 0.0),
    "stress_ef": ("identity", 0.0),
    "stress_edv": ("log", 0.0),
    "stress_shape_index_ed": ("identity", 0.0),
    "stress_tpd": ("log", 0.5),
}
BINARY = ("hypertension", "diabetes", "dyslipidemia", "smoking", "family_history_cad", "prior_mi",
          "prior_pci", "prior_cabg")
# Peripheral vascular disease enters the paper's Cox model but not its tables: assumed prevalence
# 7% of men and 5% of women, 6% of survivors and 12% of those who died.
PVD_BY_SEX = (0.07, 0.05)
PVD_BY_DEATH = (0.0561, 0.12)
ECG_LEVELS = ("negative", "positive", "equivocal", "nondiagnostic", "borderline")
PERFUSION_THRESHOLD = TPD_ABNORMAL  # stress TPD (%) below which perfusion is normal


#: The death components (see the module documentation, step 3).
COMPONENTS = ("ct_burden", "coronary", "myocardial", "clinical")
# Which components each variable reflects, with relative weights (a design choice, not fitted).
# The loadings' size follows from the variable's printed difference between deaths and survivors
# (component_loadings). Age carries its own signal; the ECG response follows no component (its
# levels differ little between deaths and survivors, and not monotonically).
COMPONENT_WEIGHTS: dict[str, dict[str, float]] = {
    "bmi": {"ct_burden": 1.0},
    "hypertension": {"clinical": 1.0},
    "diabetes": {"clinical": 1.0},
    "dyslipidemia": {"coronary": 1.0},
    "smoking": {"ct_burden": 1.0},
    "family_history_cad": {"clinical": 1.0},
    "prior_mi": {"coronary": 1.0},
    "prior_pci": {"coronary": 1.0},
    "prior_cabg": {"coronary": 1.0},
    "peripheral_vascular_disease": {"coronary": 0.5, "clinical": 0.5},
    # frail patients cannot exercise: pharmacological stress, low peak heart rate and pressures
    "stress_type": {"ct_burden": 0.7, "clinical": 0.3},
    "peak_hr": {"ct_burden": 0.7, "clinical": 0.3},
    "peak_sbp": {"ct_burden": 0.5, "clinical": 0.3, "myocardial": 0.2},
    "peak_dbp": {"ct_burden": 0.5, "clinical": 0.3, "myocardial": 0.2},
    "stress_ef": {"myocardial": 0.6, "coronary": 0.4},
    "stress_edv": {"myocardial": 1.0},
    "stress_shape_index_ed": {"myocardial": 1.0},
    "stress_tpd": {"coronary": 0.6, "myocardial": 0.4},
    "cac_score": {"coronary": 1.0},
    "eat_volume": {"coronary": 0.5, "ct_burden": 0.5},
    "eat_density": {"ct_burden": 1.0},
}
# A variable's latent score keeps at least this share of its variance as its own.
MIN_UNIQUE_VARIANCE = 0.05
# Within-cell correlations of latent scores that published joint statistics depend on, held whatever
# the components contribute: Supplementary Table 2 prints ejection fraction and the CAC categories
# among patients with normal and abnormal perfusion. The values are those of the earlier, single-
# factor generator, which reproduced that table, except CAC-TPD (0.21 then): 0.25 keeps the share with
# CAC > 400 among normal perfusion within its tolerance with the fitted components.
PAIR_CORRELATIONS: dict[tuple[str, str], float] = {
    ("stress_ef", "stress_tpd"): -0.51,
    ("cac_score", "stress_tpd"): 0.25,
    ("cac_score", "stress_ef"): -0.16,
}
#: Structural constants fitted by ``ctac-book calibrate`` (the others are design assumptions).
FITTED_CONSTANTS = ("death_shift", "age_modulation", "ct_athero", "coupling_ct", "coupling_myocardial",
                    "ischemic_fraction")


@dataclass(frozen=True)
class GeneratorConstants:
    """The generator's structural constants (``data_manifest/generator.yaml``).

    Attributes
    ----------
    death_shift : mapping of str to float
        Per death component (:data:`COMPONENTS`), its mean in patients who died, in within-cell
        standard deviations (fitted). A model that saw every component without noise would reach
        ``AUC = Phi(|shift| / sqrt(2))``.
    age_modulation : float
        How much the components' shift shrinks per within-cell SD of age in patients who died:
        ``shift * (1 - age_modulation * z_age)`` (fitted). Positive values make deaths of younger
        patients more explicable.
    time_risk : float
        Deaths with a stronger death signal occur earlier: the time from scan to death is a share
        ``F ** exp(time_risk * r)`` of the censoring time, ``F`` a Beta draw and ``r`` the
        standardised death signal (design).
    ct_lung, ct_frailty : float
        Weight of the CT-only component in the unrecorded lung-disease and frailty burdens that the
        CT model sees (the rest is their own factor) (design).
    ct_athero : float
        Weight of the coronary component in the CT atherosclerosis driver (aorta), beside the
        coronary calcium score (fitted).
    coupling_ct, coupling_myocardial : float
        Among patients who died, how the CT-only burden rises, and the myocardial component falls,
        with the coronary component (within-cell regression weights before rescaling to unit
        variance; fitted). Deaths without coronary disease then show less on CT and more on SPECT,
        which is what the paper finds in patients without coronary calcium.
    ischemic_fraction : float
        Mean reversible share of the stress perfusion deficit (stress - rest TPD = ischemic TPD)
        (fitted to the paper's 4.13% with ischemia >= 10%).
    """

    death_shift: Mapping[str, float] = field(default_factory=lambda: {
        "ct_burden": 1.0, "coronary": 0.45, "myocardial": 0.3, "clinical": 0.45})
    age_modulation: float = 0.3
    time_risk: float = 0.5
    ct_lung: float = 0.85
    ct_frailty: float = 0.6
    ct_athero: float = 0.3
    coupling_ct: float = 0.0
    coupling_myocardial: float = 0.0
    ischemic_fraction: float = 0.35

    def __post_init__(self):
        unknown = set(self.death_shift) ^ set(COMPONENTS)
        if unknown:
            raise ValueError(f"death_shift must give exactly the components {', '.join(COMPONENTS)}; "
                             f"got {', '.join(sorted(self.death_shift))}")
        for name in ("ct_lung", "ct_frailty", "ischemic_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")

    def shifts(self) -> np.ndarray:
        """The death shifts in :data:`COMPONENTS` order."""
        return np.array([float(self.death_shift[k]) for k in COMPONENTS])

    def replace(self, **changes) -> "GeneratorConstants":
        """A copy with some constants changed (``death_shift`` may be given in part)."""
        if "death_shift" in changes:
            changes["death_shift"] = {**self.death_shift, **changes["death_shift"]}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["death_shift"] = {k: float(self.death_shift[k]) for k in COMPONENTS}
        return out


GENERATOR_FILE = "generator.yaml"


def generator_constants(content: Mapping | None = None) -> GeneratorConstants:
    """The constants of ``data_manifest/generator.yaml`` (fitted by ``ctac-book calibrate``).

    Parameters
    ----------
    content : mapping, optional
        The parsed file, or what ``ctac-book calibrate`` is about to write; default the file itself.

    Raises
    ------
    ValueError
        The file lacks ``constants`` or holds an unknown or invalid constant.
    """
    entry = (manifest.generator_file() if content is None else content).get("constants")
    if not isinstance(entry, Mapping):
        raise ValueError(f"data_manifest/{GENERATOR_FILE} has no 'constants' mapping")
    known = {f.name for f in dataclasses.fields(GeneratorConstants)}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"data_manifest/{GENERATOR_FILE}: unknown constants {sorted(unknown)}; "
                         f"allowed: {', '.join(sorted(known))}")
    return GeneratorConstants(**{k: (dict(v) if isinstance(v, Mapping) else float(v)) for k, v in entry.items()})


@dataclass
class SyntheticDataset:
    """A synthetic cohort: the cohort table, its CT features and the latent drivers behind them."""

    cohort: pd.DataFrame
    ct_features: pd.DataFrame
    latent: pd.DataFrame


# -- calibration targets -------------------------------------------------------------------------
def _tolerance(value: float, decimals: int) -> float:
    """The calibration tolerance: 5% of the value or 2 units of the printed precision."""
    return max(0.05 * abs(value), 2 * 10.0 ** (-decimals))


def continuous_targets(variable: str) -> list[Target]:
    """Every printed quantile of ``variable`` (and extra perfusion targets) as fitting targets."""
    decimals = int(manifest.schema_column(variable).get("decimals", 0))
    levels = {"q1": 0.25, "median": 0.5, "q3": 0.75}
    targets = []
    for key in ("table1", "table2"):
        tab = manifest.paper_table(key)
        for _, r in tab[(tab.variable == variable)].iterrows():
            targets.append(Target(r.group, "quantile", r.value, level=levels[r.statistic],
                                  tol=_tolerance(r.value, decimals)))
    if variable == "stress_tpd":
        coh = manifest.paper_entry("cohort")["values"]
        t2 = {r["variable"]: r for r in manifest.paper_entry("table2")["rows"] if r["variable"] == "n"}
        deaths, alive = t2["n"]["death"][0], t2["n"]["alive"][0]
        normal_deaths = coh["normal_perfusion_deaths"]
        at = PERFUSION_THRESHOLD - 1e-6
        targets += [
            Target("all", "cdf", coh["normal_perfusion_percent"] / 100, at=at, tol=0.015),
            Target("death", "cdf", normal_deaths / deaths, at=at, tol=0.015),
            Target("alive", "cdf", (coh["normal_perfusion_n"] - normal_deaths) / alive, at=at, tol=0.015),
        ]
        st2 = manifest.paper_table("supp_table2")
        for _, r in st2[(st2.variable == "stress_tpd") & (st2.group == "abnormal")].iterrows():
            targets.append(Target("all", "cond_quantile", r.value, level=levels[r.statistic],
                                  at=PERFUSION_THRESHOLD, tol=_tolerance(r.value, decimals)))
    if variable == "cac_score":
        cats = manifest.paper_table("cac_categories")
        pct = cats[cats.statistic == "percent"].set_index("level")["value"] / 100
        targets += [
            Target("all", "cdf", pct["0"], at=0.0, tol=0.015),
            Target("all", "cdf", pct["0"] + pct["1-100"], at=100.0, tol=0.015),
            Target("all", "cdf", pct["0"] + pct["1-100"] + pct["101-400"], at=400.0, tol=0.015),
        ]
    return targets


def _paper_cell_weights() -> list[float]:
    n_f = PAPER_N - PAPER_MALE
    return [PAPER_MALE - PAPER_DEATHS["male"], PAPER_DEATHS["male"], n_f - PAPER_DEATHS["female"],
            PAPER_DEATHS["female"]]


MARGINS_FILE = "margins.yaml"


def _unfitted(variable: str) -> ContinuousModel:
    """The cell model of one continuous variable, before its parameters are fitted."""
    if variable not in CONTINUOUS:
        raise ValueError(f"{variable!r} is not a continuous variable of the synthetic cohort; "
                         f"allowed: {', '.join(CONTINUOUS)}")
    transform, offset = CONTINUOUS[variable]
    lower, upper = manifest.schema_column(variable).get("range", (-np.inf, np.inf))
    return ContinuousModel(transform=transform, offset=offset, zero_inflated=(variable == "cac_score"),
                           lower=float(lower), upper=float(upper))


def margin_digest(variable: str) -> str:
    """SHA-256 of what the cell fit of ``variable`` starts from: its model, the cell sizes and its targets.

    ``data_manifest/margins.yaml`` records it beside the fitted parameters; a recorded fit whose digest
    differs was made for other targets and is not used. The fitting code (:mod:`ctac_helpers.cohort.cellfit`)
    is not in the digest: after a change to it, ``ctac-book calibrate --margins`` rewrites the file.
    """
    model = _unfitted(variable)
    spec = (model.transform, model.offset, model.zero_inflated, model.lower, model.upper,
            tuple(_paper_cell_weights()), tuple(dataclasses.astuple(t) for t in continuous_targets(variable)))
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def fit_margins(variable: str) -> ContinuousModel:
    """Fit the cell model of one continuous variable to its printed margins (seconds).

    The least-squares fit is deterministic on one machine but not across machines: its path depends on
    the last bits of the linear algebra (the BLAS kernels a CPU selects), and the fitted cells of the
    calcium score, for one, differ by several percent between kernels. The generator therefore reads
    the fits recorded in ``data_manifest/margins.yaml`` (:func:`fitted_continuous`) and this function
    only makes them (``ctac-book calibrate --margins``).
    """
    return _unfitted(variable).fit(_paper_cell_weights(), continuous_targets(variable))


def margins_record() -> dict:
    """The content of ``data_manifest/margins.yaml``: every continuous variable fitted afresh.

    Returns
    -------
    dict
        ``{"version": 1, "variables": {variable: {"digest": margin_digest, "params": [...]}}}``; the
        parameters as Python floats, which YAML writes and reads back exactly.
    """
    return {"version": 1, "variables": {
        v: {"digest": margin_digest(v), "params": [float(x) for x in fit_margins(v).params]} for v in CONTINUOUS}}


def forget_margins() -> None:
    """Forget the cell fits read so far and what follows from them (after ``margins.yaml`` is rewritten)."""
    for cached in (fitted_continuous, printed_death_shift, _anchor_levels):
        cached.cache_clear()


def _recorded_margins() -> Mapping:
    try:
        content = manifest.margins_file()
    except FileNotFoundError:
        return {}
    return (content or {}).get("variables") or {}


@functools.lru_cache(maxsize=None)
def fitted_continuous(variable: str) -> ContinuousModel:
    """The fitted cell model of one continuous variable: the fit recorded in ``data_manifest/margins.yaml``.

    The recorded parameters make the cohort the same on every machine (see :func:`fit_margins`). Where
    the file has no fit for the variable's current targets (a target or the model changed since it was
    written), the variable is fitted now, with a warning: the cohort may then differ between machines
    until ``ctac-book calibrate --margins`` records the new fit.
    """
    recorded = _recorded_margins().get(variable) or {}
    if recorded.get("digest") == margin_digest(variable):
        model = _unfitted(variable)
        params = np.asarray(recorded.get("params") or [], float)
        expected = 16 if model.zero_inflated else 12
        if params.shape != (expected,) or not np.isfinite(params).all():
            raise ValueError(f"data_manifest/{MARGINS_FILE}, variable {variable!r}: {params.size} parameters, "
                             f"finite: {bool(np.isfinite(params).all())}; expected {expected} finite numbers")
        model.params = params
        return model
    logger.warning("data_manifest/%s records no fit of %s for its current targets: fitted now (the fit can "
                   "differ between machines; `ctac-book calibrate --margins` records it)", MARGINS_FILE, variable)
    return fit_margins(variable)


def _count_margins(variable: str, level: str, groups: tuple[str, str], table: str) -> np.ndarray:
    tab = manifest.paper_table(table)
    sub = tab[(tab.variable == variable) & (tab.statistic == "n")]
    if level:
        sub = sub[sub.level == level]
    return np.array([sub[sub.group == g]["value"].iloc[0] for g in groups], float)


@functools.lru_cache(maxsize=None)
def categorical_probabilities(variable: str) -> tuple[tuple[str, ...], np.ndarray]:
    """``(levels, P(level | sex, death))`` fitted by IPF to Tables 1 and 2; shape (2, 2, K)."""
    w = np.array(_paper_cell_weights(), float).reshape(2, 2)
    if variable in BINARY:
        levels = ("0", "1")
        pos_sex = _count_margins(variable, "", ("male", "female"), "table1")
        pos_death = _count_margins(variable, "", ("alive", "death"), "table2")
        by_sex = np.c_[w.sum(axis=1) - pos_sex, pos_sex]
        by_death = np.c_[w.sum(axis=0) - pos_death, pos_death]
    elif variable == "peripheral_vascular_disease":
        levels = ("0", "1")
        pos_sex = np.array(PVD_BY_SEX) * w.sum(axis=1)
        pos_death = np.array(PVD_BY_DEATH) * w.sum(axis=0)
        by_sex = np.c_[w.sum(axis=1) - pos_sex, pos_sex]
        by_death = np.c_[w.sum(axis=0) - pos_death, pos_death]
    elif variable == "stress_type":
        levels = ("exercise", "pharmacological")
        ex_sex = _count_margins("stress_type", "exercise", ("male", "female"), "table1")
        ex_death = _count_margins("stress_type", "exercise", ("alive", "death"), "table2")
        by_sex = np.c_[ex_sex, w.sum(axis=1) - ex_sex]
        by_death = np.c_[ex_death, w.sum(axis=0) - ex_death]
    elif variable == "ecg_response":
        levels = ECG_LEVELS + ("missing",)
        by_sex = np.array([_count_margins("ecg_response", lv, ("male", "female"), "table1") for lv in ECG_LEVELS]).T
        by_death = np.array([_count_margins("ecg_response", lv, ("alive", "death"), "table2") for lv in ECG_LEVELS]).T
        by_sex = np.c_[by_sex, w.sum(axis=1) - by_sex.sum(axis=1)]
        by_death = np.c_[by_death, w.sum(axis=0) - by_death.sum(axis=1)]
    else:
        raise ValueError(f"{variable!r} is not a categorical variable of the synthetic cohort")
    return levels, ipf_sex_death(w, by_sex, by_death)


# -- the cohort -----------------------------------------------------------------------------------
def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent random streams per purpose, so changing one part never shifts another."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))


def _auc_from_quantiles(q_pos: np.ndarray, q_neg: np.ndarray) -> float:
    """P(X_pos > X_neg) (ties count half) from two distributions given on the same probability grid."""
    below = np.searchsorted(np.sort(q_neg), q_pos, side="left")
    upto = np.searchsorted(np.sort(q_neg), q_pos, side="right")
    return float(np.mean((below + upto) / 2) / len(q_neg))


@functools.lru_cache(maxsize=None)
def printed_death_shift(variable: str) -> float:
    """A variable's difference between deaths and survivors, in within-cell normal-score units.

    ``sqrt(2) * Phi^-1(AUC)`` of the variable for death within each sex (averaged over sexes), from
    the fitted cell distributions; for flags, the probit difference of the cell proportions.
    """
    w = np.array(_paper_cell_weights(), float)
    sex_w = np.array([w[0] + w[1], w[2] + w[3]]) / w.sum()
    if variable in CONTINUOUS:
        model = fitted_continuous(variable)
        u = (np.arange(4000) + 0.5) / 4000
        aucs = [_auc_from_quantiles(model.cell_quantile(2 * i + 1, u), model.cell_quantile(2 * i, u)) for i in range(2)]
        return float(np.sqrt(2) * special.ndtri(np.clip(np.dot(sex_w, aucs), 1e-6, 1 - 1e-6)))
    _, probs = categorical_probabilities(variable)
    p1 = np.clip(probs[:, :, 1], 1e-6, 1 - 1e-6)
    return float(np.dot(sex_w, special.ndtri(p1[:, 1]) - special.ndtri(p1[:, 0])))


def margin_auc(variable: str, below: float | None = None, grid: int = 4000) -> float:
    """AUC of one continuous variable for death, implied by its fitted cell distributions alone.

    The generator keeps every cell's distribution (sex x death), so a model of this variable alone has
    this AUC on the paper-size cohort whatever the structural constants, up to sampling. With
    ``below``, among the patients whose value is below it (e.g. stress TPD < 5%: normal perfusion).
    Each cell is represented by ``grid`` quantiles weighted by the cell's size; ties count one half.
    """
    if variable not in CONTINUOUS:
        raise ValueError(f"unknown continuous variable {variable!r}; allowed: {', '.join(CONTINUOUS)}")
    model = fitted_continuous(variable)
    u = (np.arange(grid) + 0.5) / grid
    sizes = np.array(_paper_cell_weights(), float)
    values, weights, died = [], [], []
    for c in range(4):
        v = model.cell_quantile(c, u)
        keep = np.ones(grid, bool) if below is None else v < below
        values.append(v[keep])
        weights.append(np.full(int(keep.sum()), sizes[c] / grid))
        died.append(np.full(int(keep.sum()), c in (1, 3)))
    v, w, d = (np.concatenate(x) for x in (values, weights, died))
    return weighted_auc(d, v, w)


def component_loadings(constants: GeneratorConstants) -> dict[str, np.ndarray]:
    """Each variable's loadings on the death components (:data:`COMPONENTS` order).

    A variable with component weights ``w`` gets loadings ``a = c * w`` with ``c`` chosen so that
    ``a . shift`` equals the variable's printed difference between deaths and survivors
    (:func:`printed_death_shift`): the components then account for that difference and the variable
    adds no death signal of its own. The loadings' squared length is capped at
    ``1 - MIN_UNIQUE_VARIANCE``; a capped variable keeps the remainder of its printed difference as
    a signal of its own (:func:`loading_report`).
    """
    shifts = constants.shifts()
    out = {}
    for var, weights in COMPONENT_WEIGHTS.items():
        w = np.array([weights.get(k, 0.0) for k in COMPONENTS])
        explained = float(w @ shifts)
        a = w * (printed_death_shift(var) / explained) if explained > 1e-9 else np.zeros(len(COMPONENTS))
        norm = float(np.sqrt(a @ a))
        cap = np.sqrt(1.0 - MIN_UNIQUE_VARIANCE)
        out[var] = a * (cap / norm) if norm > cap else a
    return out


def loading_report(constants: GeneratorConstants) -> pd.DataFrame:
    """Per variable: printed death shift, the part the components explain, and its own remainder.

    Columns ``variable``, ``printed_shift`` (within-cell SDs), ``explained`` (``a . shift``),
    ``own`` (the difference: a signal only this variable carries), and one ``loading_<component>``
    column per component.
    """
    shifts = constants.shifts()
    rows = []
    for var, a in component_loadings(constants).items():
        printed = printed_death_shift(var)
        rows.append({"variable": var, "printed_shift": printed, "explained": float(a @ shifts),
                     "own": printed - float(a @ shifts), **{f"loading_{k}": float(v) for k, v in zip(COMPONENTS, a)}})
    return pd.DataFrame(rows)


def _components(rng, n: int, died: np.ndarray, age_score: np.ndarray, constants: GeneratorConstants) -> np.ndarray:
    """Within-cell component scores ``Z`` (n x components); the full value is ``Z + shift * died``.

    In patients who died, ``Z`` also carries ``-age_modulation * shift * z_age`` (``z_age`` the age
    score, standard normal within the cell): older deaths sit closer to the survivors; and the
    CT-only and myocardial components follow the coronary one (``coupling_ct``,
    ``coupling_myocardial``). Each column stays at unit variance within the cell.
    """
    z = rng.standard_normal((n, len(COMPONENTS)))
    slope = constants.age_modulation * constants.shifts()
    # kept at unit variance within the cell, so that the cells' quantiles keep their meaning
    z[died] = (z[died] - np.outer(age_score[died], slope)) / np.sqrt(1.0 + slope ** 2)
    cor, ct, myo = (COMPONENTS.index(k) for k in ("coronary", "ct_burden", "myocardial"))
    for j, coupling in ((ct, constants.coupling_ct), (myo, -constants.coupling_myocardial)):
        z[died, j] = (z[died, j] + coupling * z[died, cor]) / np.sqrt(1.0 + coupling ** 2)
    return z


def _latent_scores(rng, n: int, factors: np.ndarray, died: np.ndarray,
                   constants: GeneratorConstants) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every variable's within-cell latent score, and the component scores ``Z`` behind them.

    Age comes first: the components of patients who died depend on it (:func:`_components`).
    Pairs in :data:`PAIR_CORRELATIONS` get a factor of their own that tops their correlation up (or
    down) to its target, whatever the components contribute.
    """
    loadings = component_loadings(constants)
    noise = rng.standard_normal((n, len(LOADINGS)))
    lam, comp = {}, {}
    for var, loads in LOADINGS.items():
        a = loadings.get(var, np.zeros(len(COMPONENTS)))
        f = np.array([loads.get(k, 0.0) for k in FACTORS])
        room = 1.0 - MIN_UNIQUE_VARIANCE - float(a @ a)  # the factors share what the components leave
        if f @ f > room:
            f = f * np.sqrt(max(room, 0.0) / float(f @ f))
        lam[var], comp[var] = f, a
    pair_load: dict[str, float] = {}
    pair_noise = rng.standard_normal((n, len(PAIR_CORRELATIONS)))
    own_pair = {var: np.zeros(n) for var in LOADINGS}
    for j, ((v1, v2), target) in enumerate(PAIR_CORRELATIONS.items()):
        rest = target - float(lam[v1] @ lam[v2]) - float(comp[v1] @ comp[v2])
        b = np.sqrt(abs(rest))
        own_pair[v1] = own_pair[v1] + b * pair_noise[:, j]
        own_pair[v2] = own_pair[v2] + np.sign(rest) * b * pair_noise[:, j]
        pair_load[v1] = pair_load.get(v1, 0.0) + b * b
        pair_load[v2] = pair_load.get(v2, 0.0) + b * b
    age_score = None
    components = np.zeros((n, len(COMPONENTS)))
    scores: dict[str, np.ndarray] = {}
    for j, var in enumerate(sorted(LOADINGS, key=lambda v: v != "age")):
        if var != "age" and age_score is None:
            age_score = scores["age"]
            components = _components(rng, n, died, age_score, constants)
        explained = float(lam[var] @ lam[var]) + float(comp[var] @ comp[var]) + pair_load.get(var, 0.0)
        unique = np.sqrt(max(MIN_UNIQUE_VARIANCE, 1.0 - explained))
        scores[var] = factors @ lam[var] + components @ comp[var] + own_pair[var] + unique * noise[:, j]
    return scores, components


ANCHORS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
# Values whose share below them the paper prints: anchored exactly in every cell.
ANCHOR_VALUES = {"stress_tpd": (PERFUSION_THRESHOLD - 1e-6,), "cac_score": (0.0, 100.0, 400.0)}


@functools.lru_cache(maxsize=None)
def _anchor_levels(variable: str, cell: int) -> tuple[float, ...]:
    model = fitted_continuous(variable)
    levels = set(ANCHORS)
    # every printed quantile's value too: a group's quantile pools several cells, and it is exact
    # only when each cell's share below the printed value is
    printed = {t.value for t in continuous_targets(variable) if t.kind == "quantile"}
    for value in sorted(set(ANCHOR_VALUES.get(variable, ())) | printed):
        u = (np.arange(20000) + 0.5) / 20000
        levels.add(float(np.mean(model.cell_quantile(cell, u) <= value)))
    return tuple(sorted(lv for lv in levels if 0.0 < lv < 1.0))


def _anchored(u: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Warp a cell's random probabilities so that their empirical ``levels`` quantiles are exact.

    The warp is piecewise linear between a handful of anchors: sample quantiles then equal the
    fitted ones (no sampling error in the printed quartiles), while the spacing of individual
    values stays random. Exact quantile lattices (values at (rank + 0.5) / n) would instead make the
    deaths' values so regular that cross-validated models learn the lattice backwards.
    """
    if len(u) < 4 * (len(levels) + 1):
        return u
    emp = np.quantile(u, levels)
    return np.interp(u, np.r_[0.0, emp, 1.0], np.r_[0.0, levels, 1.0])


def _assign_top(score, cell_idx, probs_by_cell) -> np.ndarray:
    """Binary flag: within each cell the ``round(p * n_cell)`` highest latent scores get 1."""
    out = np.zeros(len(score), dtype=int)
    for c, (s, d) in enumerate(CELLS):
        idx = np.flatnonzero(cell_idx == c)
        k = int(round(probs_by_cell[0 if s == "male" else 1, d] * len(idx)))
        if k:
            out[idx[np.argsort(-score[idx], kind="stable")[:k]]] = 1
    return out


def synthetic_cohort(n_patients: int = PAPER_N, seed: int = 20240101,
                     constants: GeneratorConstants | None = None) -> pd.DataFrame:
    """The synthetic cohort table (schema columns only). See :func:`synthetic_dataset`."""
    return _cohort_and_latent(n_patients, seed, constants)[0]


def _cohort_and_latent(n_patients: int, seed: int,
                       constants: GeneratorConstants | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    constants = generator_constants() if constants is None else constants
    if not isinstance(n_patients, (int, np.integer)) or n_patients < 200:
        raise ValueError(f"n_patients must be an integer >= 200 (got {n_patients!r}); the paper's cohort is {PAPER_N}")
    n = int(n_patients)
    rng = _rng(seed, 1)
    n_male = int(round(n * PAPER_MALE / PAPER_N))
    n_female = n - n_male
    d_male = int(round(n_male * PAPER_DEATHS["male"] / PAPER_MALE))
    d_female = int(round(n_female * PAPER_DEATHS["female"] / (PAPER_N - PAPER_MALE)))
    sizes = [n_male - d_male, d_male, n_female - d_female, d_female]
    cell_idx = np.repeat(np.arange(4), sizes)
    sex = np.where(cell_idx < 2, "male", "female")
    death = np.isin(cell_idx, (1, 3)).astype(int)

    factors = rng.standard_normal((n, len(FACTORS)))
    scores, components = _latent_scores(rng, n, factors, death == 1, constants)
    df = pd.DataFrame({"sex": sex, "death": death})

    for var in CONTINUOUS:
        model = fitted_continuous(var)
        vals = np.empty(n)
        for c in range(4):
            m = cell_idx == c
            u = _anchored(special.ndtr(scores[var][m]), _anchor_levels(var, c))
            vals[m] = model.cell_quantile(c, u)
        df[var] = vals

    for var in BINARY + ("peripheral_vascular_disease",):
        _, probs = categorical_probabilities(var)
        df[var] = _assign_top(scores[var], cell_idx, probs[:, :, 1])
    _, probs = categorical_probabilities("stress_type")
    pharm = _assign_top(scores["stress_type"], cell_idx, probs[:, :, 1])
    df["stress_type"] = np.where(pharm == 1, "pharmacological", "exercise")
    df["ecg_response"] = _ecg(rng, scores["ecg_response"], cell_idx)

    # Printed precision of the registry (integers for age, rates and pressures).
    for var in ("age", "peak_hr", "peak_sbp", "peak_dbp", "stress_ef", "stress_edv"):
        df[var] = np.round(df[var])
    df["bmi"] = np.round(df["bmi"], 1)
    df["stress_shape_index_ed"] = np.round(df["stress_shape_index_ed"], 3)
    df["stress_tpd"] = np.round(df["stress_tpd"], 2)
    df["cac_score"] = np.round(df["cac_score"], 1)
    df["eat_volume"] = np.round(df["eat_volume"], 1)
    df["eat_density"] = np.round(df["eat_density"], 1)

    _derived_spect(df, _rng(seed, 2))
    _rest_perfusion(df, _rng(seed, 6), constants)
    _acquisition(df, _rng(seed, 3))
    full = components + np.outer(death, constants.shifts())  # each component as the patient has it
    _followup(df, _rng(seed, 4), death_signal(full, constants, df["age"]), constants)

    latent = pd.DataFrame(factors, columns=[f"factor_{f}" for f in FACTORS])
    for j, k in enumerate(COMPONENTS):
        latent[f"component_{k}"] = full[:, j]
    # Shuffle rows so that ids carry no information about the cell they came from.
    perm = _rng(seed, 5).permutation(n)
    df = df.iloc[perm].reset_index(drop=True)
    latent = latent.iloc[perm].reset_index(drop=True)
    df.insert(0, "patient_id", [f"SYN{seed % 100000:05d}-{i:06d}" for i in range(1, n + 1)])
    latent.insert(0, "patient_id", df["patient_id"].values)
    order = [c for c in manifest.cohort_schema().index if c in df.columns]
    return df[order], latent


def _ecg(rng, score, cell_idx) -> np.ndarray:
    levels, probs = categorical_probabilities("ecg_response")
    out = np.empty(len(score), dtype=object)
    for c, (s, d) in enumerate(CELLS):
        idx = np.flatnonzero(cell_idx == c)
        counts = dict(zip(levels, allocate_counts(len(idx), probs[0 if s == "male" else 1, d])))
        shuffled = rng.permutation(idx)
        # Missing, non-diagnostic and borderline responses do not follow coronary disease.
        pos = 0
        for lv in ("missing", "nondiagnostic", "borderline"):
            out[shuffled[pos:pos + counts[lv]]] = None if lv == "missing" else lv
            pos += counts[lv]
        rest = shuffled[pos:]
        rest = rest[np.argsort(-score[rest], kind="stable")]
        k_pos, k_eq = counts["positive"], counts["equivocal"]
        out[rest[:k_pos]] = "positive"
        out[rest[k_pos:k_pos + k_eq]] = "equivocal"
        out[rest[k_pos + k_eq:]] = "negative"
    return out


def _derived_spect(df: pd.DataFrame, rng) -> None:
    """The 18 further SPECT variables, derived from TPD, EF, EDV and shape with physiological noise."""
    n = len(df)
    tpd, ef, edv, si = (df[c].to_numpy(float) for c in ("stress_tpd", "stress_ef", "stress_edv", "stress_shape_index_ed"))
    female = (df["sex"] == "female").to_numpy()
    age = df["age"].to_numpy(float)
    nz = rng.standard_normal
    df["stress_esv"] = np.round(np.clip(edv * (1 - ef / 100), 1, 500))
    si_es = np.clip(si * (0.82 + 0.45 * (1 - ef / 100)) + 0.015 * nz(n), 0.25, 0.95)
    df["stress_shape_index_es"] = np.round(si_es, 3)
    df["stress_eccentricity_ed"] = np.round(np.sqrt(np.clip(1 - (si + 0.02 * nz(n)) ** 2, 0.04, 0.96)), 3)
    df["stress_eccentricity_es"] = np.round(np.sqrt(np.clip(1 - si_es ** 2, 0.04, 0.96)), 3)
    df["stress_sss"] = np.round(np.clip(0.75 * tpd + 0.9 * nz(n), 0, 68))
    df["stress_extent"] = np.round(np.clip(1.25 * tpd + 0.8 * nz(n), 0, 100), 1)
    # Territories cover 41% (LAD), 29% (LCx) and 30% (RCA) of the myocardium.
    frac = np.array([0.41, 0.29, 0.30])
    share = rng.dirichlet(frac * 6, size=n)
    for j, terr in enumerate(("lad", "lcx", "rca")):
        df[f"stress_tpd_{terr}"] = np.round(np.clip(tpd * share[:, j] / frac[j], 0, 100), 1)
    mass = np.exp(np.log(np.where(female, 105, 145)) + 0.45 * np.log(edv / np.where(female, 66, 102))
                  + 0.10 * nz(n))
    df["stress_lv_mass"] = np.round(np.clip(mass, 30, 500))
    df["stress_sms"] = np.round(np.clip(0.55 * (62 - ef) + 0.3 * tpd + 3 * nz(n), 0, 100))
    df["stress_sts"] = np.round(np.clip(0.35 * (62 - ef) + 0.2 * tpd + 2 * nz(n), 0, 60))
    bw = np.exp(np.log(38) + 0.018 * np.clip(62 - ef, -20, 60) + 0.01 * tpd + 0.25 * nz(n))
    df["stress_phase_bandwidth"] = np.round(np.clip(bw, 5, 360))
    df["stress_phase_sd"] = np.round(np.clip(bw / 3.3 * np.exp(0.12 * nz(n)), 1, 120))
    pfr = 2.6 - 0.006 * (age - 65) + 0.02 * (ef - 64) + 0.35 * nz(n)
    df["stress_peak_filling_rate"] = np.round(np.clip(pfr, 0.2, 6), 2)
    df["stress_time_to_peak_filling"] = np.round(np.clip(165 + 0.4 * (age - 65) - 0.8 * (ef - 64) + 25 * nz(n), 50, 600))
    df["stress_mass_volume_ratio"] = np.round(np.clip(df["stress_lv_mass"] / edv, 0.2, 6), 2)
    ref = np.where(female, 66, 102)
    df["stress_tid_stress_only"] = np.round(np.clip(edv / ref * np.exp(0.05 * nz(n)), 0.3, 3), 2)


def _acquisition(df: pd.DataFrame, rng) -> None:
    n = len(df)
    sites = np.array(SITES)
    share = np.array([SITE_SHARE[s] for s in SITES])
    df["site"] = sites[np.repeat(np.arange(len(SITES)), allocate_counts(n, share))[rng.permutation(n)]]
    protocol = np.empty(n, dtype=object)
    for s in SITES:
        idx = np.flatnonzero(df["site"].to_numpy() == s)
        names = list(SITE_PROTOCOLS[s])
        p = np.array([SITE_PROTOCOLS[s][k] for k in names])
        protocol[idx] = np.array(names)[rng.choice(len(names), size=len(idx), p=p)]
    df["ct_protocol"] = protocol
    noise = _noise_hu(df, rng)
    df["image_quality"] = np.where(noise < 19, "good", np.where(noise < 30, "adequate", "poor"))
    rec = rng.random(n) < df["site"].map(RACE_RECORDED).to_numpy()
    races = np.array(list(RACE_SHARE))
    drawn = races[rng.choice(len(races), size=n, p=np.array(list(RACE_SHARE.values())))]
    df["race"] = np.where(rec, drawn, None)


def _noise_hu(df: pd.DataFrame, rng=None) -> np.ndarray:
    """Image noise (HU SD in soft tissue): protocol dose class, patient size, and scan-to-scan jitter."""
    base = df["ct_protocol"].map(PROTOCOL_NOISE_HU).to_numpy(float)
    size = (df["bmi"].to_numpy(float) / 29.0) ** 1.2
    jitter = np.exp(0.15 * rng.standard_normal(len(df))) if rng is not None else 1.0
    return base * size * jitter


def death_signal(components: np.ndarray, constants: GeneratorConstants, age) -> np.ndarray:
    """Each patient's death signal: ``shift . U + d_age * z_age``, standardised over the cohort.

    ``U`` holds the full component values (n x components, the death shift included), ``z_age``
    is age in 12-year units around 65 and ``d_age`` age's printed death shift: the best linear
    separation of deaths from survivors that the components and age allow.
    """
    age_z = (np.asarray(age, float) - 65.0) / 12.0
    r = components @ constants.shifts() + printed_death_shift("age") * age_z
    return (r - r.mean()) / r.std()


def _followup(df: pd.DataFrame, rng, signal: np.ndarray, constants: GeneratorConstants) -> None:
    """Follow-up: a censoring time; deaths occur before it; observed times match the paper's quartiles.

    A death occurs at the share ``F ** exp(time_risk * r)`` of the censoring time, ``F`` a Beta
    draw and ``r`` the death signal standardised among the deaths: deaths with a stronger signal
    come earlier, as they must for hazard ratios to exceed the ratio of death proportions. Deaths
    shorten the observed times, so the censoring quartiles are corrected (a few fixed-point steps
    on the log scale) until the observed median and quartiles equal the published ones.
    """
    tab = manifest.paper_entry("cohort")["values"]
    target = np.log([tab[k] for k in ("followup_q1_years", "followup_median_years", "followup_q3_years")])
    z = rng.standard_normal(len(df))
    frac = rng.beta(1.3, 1.2, size=len(df))
    died = df["death"].to_numpy() == 1
    if died.sum() > 1:
        r = signal[died]
        frac[died] = frac[died] ** np.exp(constants.time_risk * (r - r.mean()) / r.std())
    params = target.copy()
    for _ in range(6):
        q1, med, q3 = params
        censor = np.clip(np.exp(med + np.where(z < 0, (med - q1), (q3 - med)) / 0.6745 * z), 0.05, 12.0)
        t = np.where(died, np.maximum(censor * frac, 0.01), censor)
        params = params + (target - np.log(np.percentile(t, [25, 50, 75])))
    df["followup_years"] = np.round(t, 3)


REVERSIBILITY_CONCENTRATION = 4.0  # Beta(m k, (1 - m) k): the reversible share's spread around its mean m


def _rest_perfusion(df: pd.DataFrame, rng, constants: GeneratorConstants) -> None:
    """Rest TPD: the stress deficit less a reversible (ischemic) share drawn per patient."""
    m, k = constants.ischemic_fraction, REVERSIBILITY_CONCENTRATION
    # quantiles of fixed uniforms: each patient's share grows with m, so the fit's bisection is monotone
    u = rng.random(len(df))
    share = special.betaincinv(m * k, (1 - m) * k, u) if m > 0 else np.zeros(len(df))
    df["rest_tpd"] = np.round(df["stress_tpd"].to_numpy(float) * (1 - share), 2)


# -- CT features ----------------------------------------------------------------------------------
CT_DRIVERS = ("age", "female", "bmi", "lung", "frailty", "athero", "adiposity", "cardiac")


def ct_drivers(cohort: pd.DataFrame, latent: pd.DataFrame, constants: GeneratorConstants | None = None) -> pd.DataFrame:
    """Per-patient drivers of the CT model, standardised (see :data:`CT_DRIVERS`).

    ``lung`` and ``frailty`` are the unrecorded disease burdens: each mixes its own factor with the
    CT-only death component as the patient has it (``component_ct_burden`` of ``latent``, the death
    shift included). ``athero`` follows the coronary calcium score and, with weight ``ct_athero``,
    the coronary component (atherosclerosis that calcium scoring misses). The others are functions
    of recorded variables.
    """
    c = generator_constants() if constants is None else constants
    burden = latent["component_ct_burden"].to_numpy()
    return pd.DataFrame(
        {
            "age": (cohort["age"].to_numpy(float) - 65.0) / 12.0,
            "female": (cohort["sex"] == "female").to_numpy(float),
            "bmi": (np.log(cohort["bmi"].to_numpy(float)) - np.log(29.0)) / 0.2,
            "lung": np.sqrt(1 - c.ct_lung ** 2) * latent["factor_lung"].to_numpy() + c.ct_lung * burden,
            "frailty": np.sqrt(1 - c.ct_frailty ** 2) * latent["factor_frailty"].to_numpy() + c.ct_frailty * burden,
            "athero": ((np.log1p(cohort["cac_score"].to_numpy(float)) - 3.0) / 2.5
                       + c.ct_athero * latent["component_coronary"].to_numpy()),
            "adiposity": latent["factor_adiposity"].to_numpy(),
            "cardiac": (np.log(cohort["stress_edv"].to_numpy(float)) - np.log(84.0)) / 0.3,
        }
    )


def _cornish_fisher(z, g, k):
    return z + (z ** 2 - 1) * g / 6 + (z ** 3 - 3 * z) * k / 24 - (2 * z ** 3 - 5 * z) * g ** 2 / 36


def radiomics_from_parameters(mean, sd, skew, kurt, volume_mm3, sphericity, minor_ratio, least_ratio,
                              voxel_mm3, bin_width: float = 25.0) -> dict[str, np.ndarray]:
    """The 32 PyRadiomics features implied by a histogram and an ellipsoid (vectorised).

    Percentiles come from the Cornish-Fisher expansion of the histogram's first four moments,
    extremes from the expected maximum of ``N`` voxels, entropy and uniformity from a binned normal
    (PyRadiomics' ``binWidth``), and shape features from an ellipsoid with the given volume,
    sphericity and axis ratios. Values are consistent with each other (e.g. ``Range = Maximum -
    Minimum``, ``Energy = N * (Mean^2 + Variance)``), as PyRadiomics' own output is.
    """
    mean, sd, skew, kurt = (np.asarray(a, float) for a in (mean, sd, skew, kurt))
    kurt = np.maximum(kurt, skew ** 2 - 1.9)  # Pearson's bound: excess kurtosis >= skew^2 - 2
    n_vox = np.maximum(volume_mm3 / voxel_mm3, 8.0)
    q = {p: mean + sd * _cornish_fisher(special.ndtri(p), skew, kurt) for p in (0.10, 0.25, 0.50, 0.75, 0.90)}
    ordered = np.maximum.accumulate(np.vstack([q[p] for p in (0.10, 0.25, 0.50, 0.75, 0.90)]), axis=0)
    p10, p25, p50, p75, p90 = ordered
    e_n = np.sqrt(2 * np.log(n_vox))
    mn = np.maximum(-1024.0, np.minimum(p10, mean - sd * e_n * np.clip(1 - 0.18 * skew, 0.3, 1.8)))
    mx = np.minimum(3071.0, np.maximum(p90, mean + sd * e_n * np.clip(1 + 0.25 * skew, 0.4, 2.5)))
    var = sd ** 2
    feats = {
        "Energy": n_vox * (mean ** 2 + var),
        "TotalEnergy": n_vox * (mean ** 2 + var) * voxel_mm3,
        "Entropy": np.maximum(0.05, np.log2(np.sqrt(2 * np.pi * np.e) * sd / bin_width)),
        "Minimum": mn,
        "10Percentile": p10,
        "90Percentile": p90,
        "Maximum": mx,
        "Mean": mean,
        "Median": p50,
        "InterquartileRange": p75 - p25,
        "Range": mx - mn,
        "MeanAbsoluteDeviation": sd * np.clip(0.7979 * (1 - 0.03 * kurt), 0.45, 0.80),
        "RobustMeanAbsoluteDeviation": 0.5585 * (p90 - p10) / 2.5631,
        "RootMeanSquared": np.sqrt(mean ** 2 + var),
        "Skewness": skew,
        "Kurtosis": kurt + 3.0,
        "Variance": var,
        "Uniformity": np.minimum(1.0, bin_width / (2 * np.sqrt(np.pi) * sd)),
    }
    v = np.asarray(volume_mm3, float)
    psi = np.asarray(sphericity, float)
    area = np.pi ** (1 / 3) * (6 * v) ** (2 / 3) / psi
    a = (6 * v / (np.pi * minor_ratio * least_ratio)) ** (1 / 3)
    b, c = minor_ratio * a, least_ratio * a
    svr = area / v
    edge = voxel_mm3 ** (1 / 3)
    max3d = a * (1 + 0.15 * (1 - psi))
    feats.update(
        {
            "MeshVolume": v * np.clip(1 - 0.5 * edge * svr, 0.5, 1.0),
            "VoxelVolume": v,
            "SurfaceArea": area,
            "SurfaceVolumeRatio": svr,
            "Sphericity": psi,
            "Maximum3DDiameter": max3d,
            "Maximum2DDiameterSlice": np.minimum(max3d, np.sqrt(a * b) * 1.05),
            "Maximum2DDiameterColumn": np.minimum(max3d, 0.92 * a),
            "Maximum2DDiameterRow": np.minimum(max3d, np.sqrt(a * c) * 1.1),
            "MajorAxisLength": 0.894 * a,
            "MinorAxisLength": 0.894 * b,
            "LeastAxisLength": 0.894 * c,
            "Elongation": np.asarray(minor_ratio, float),
            "Flatness": np.asarray(least_ratio, float),
        }
    )
    return feats


def synthetic_ct_features(cohort: pd.DataFrame, latent: pd.DataFrame, seed: int,
                          constants: GeneratorConstants | None = None) -> pd.DataFrame:
    """Per-structure status and the 32 radiomics features for every patient.

    Columns: ``patient_id``, ``ct__<structure>__status`` (present / truncated / absent) and
    ``ct__<structure>__<feature>`` (float32; NaN unless the structure is present).
    """
    rng = _rng(seed, 10)
    n = len(cohort)
    drivers = ct_drivers(cohort, latent, constants)
    tissues = manifest.tissue_models()
    structures = manifest.synthetic_structures()
    features = manifest.radiomics_features("all")
    site = cohort["site"].to_numpy()
    offset = pd.Series(site).map(SITE_HU_OFFSET).to_numpy(float)
    voxel = np.array([np.prod(SITE_VOXEL_MM[s]) for s in site])
    noise = _noise_hu(cohort, _rng(seed, 11))
    quality_jitter = cohort["image_quality"].map({"good": 0.04, "adequate": 0.06, "poor": 0.10}).to_numpy(float)
    female = drivers["female"].to_numpy()
    out: dict[str, np.ndarray] = {"patient_id": cohort["patient_id"].to_numpy()}
    nz = rng.standard_normal

    def effect(tissue: dict, param: str, local: pd.DataFrame) -> np.ndarray:
        eff = tissue.get("effects", {}).get(param, {})
        total = np.zeros(n)
        for driver, coef in eff.items():
            total += coef * local[driver].to_numpy()
        return total

    for name, st in structures.iterrows():
        tissue = tissues[st["tissue"]]
        local = drivers.copy()
        # Disease is regional: each structure sees the patient's burden plus its own variation.
        local["lung"] = drivers["lung"] + 0.6 * nz(n)
        local["frailty"] = drivers["frailty"] + 0.5 * nz(n)
        sd_t = np.maximum(4.0, tissue["hu_sd"] + effect(tissue, "hu_sd", local) + 0.08 * tissue["hu_sd"] * nz(n))
        sd = np.sqrt(sd_t ** 2 + noise ** 2)
        mean = (tissue["hu_mean"] + effect(tissue, "hu_mean", local) + offset
                + (0.08 * tissue["hu_sd"] + 2.0) * nz(n))
        skew = tissue["skewness"] * (sd_t / sd) ** 3 + effect(tissue, "skewness", local) + 0.15 * nz(n)
        kurt = tissue["kurtosis"] * (sd_t / sd) ** 4 + 0.2 * abs(tissue["kurtosis"]) * nz(n)
        log_vol = (np.log(st["volume_ml"] * 1000.0) + np.log(np.where(female == 1, st["female_ratio"], 1.0))
                   + effect(tissue, "log_volume", local) + quality_jitter * nz(n) + 0.08 * nz(n))
        sph = np.clip(st["sphericity"] + effect(tissue, "sphericity", local) + 0.03 * nz(n), 0.08, 0.95)
        r1 = np.clip(st["minor_ratio"] * np.exp(0.08 * nz(n)), 0.1, 1.0)
        r2 = np.minimum(r1, np.clip(st["least_ratio"] * np.exp(0.08 * nz(n)), 0.05, 1.0))
        feats = radiomics_from_parameters(mean, sd, skew, kurt, np.exp(log_vol), sph, r1, r2, voxel)
        u = rng.random(n)
        status = np.where(u < st["p_present"], "present",
                          np.where(u < st["p_present"] + st["p_truncated"], "truncated", "absent"))
        out[manifest.feature_column(name, "status")] = status
        keep = status == "present"
        for f in features:
            out[manifest.feature_column(name, f)] = np.where(keep, feats[f], np.nan).astype(np.float32)
    return pd.DataFrame(out)


def synthetic_dataset(n_patients: int = PAPER_N, seed: int = 20240101,
                      constants: GeneratorConstants | None = None) -> SyntheticDataset:
    """Generate the synthetic cohort, its CT features and latent drivers.

    Parameters
    ----------
    n_patients : int
        Cohort size (the paper's is 10,480). Counts scale proportionally.
    seed : int
        Seed of every random draw; the same seed and size give identical data.
    constants : GeneratorConstants, optional
        The structural constants; default those of ``data_manifest/generator.yaml``
        (:func:`generator_constants`).

    Returns
    -------
    SyntheticDataset
    """
    constants = generator_constants() if constants is None else constants
    cohort, latent = _cohort_and_latent(n_patients, seed, constants)
    features = synthetic_ct_features(cohort, latent, seed, constants)
    logger.info("synthetic cohort: %d patients, %d deaths, %d CT feature columns",
                len(cohort), int(cohort["death"].sum()), features.shape[1] - 1)
    return SyntheticDataset(cohort=cohort, ct_features=features, latent=latent)


#: Size and seed of the small cohort whose values fingerprint the generator (:func:`generator_fingerprint`).
FINGERPRINT_COHORT = (1000, 1)


def _significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Values rounded to ``digits`` significant digits (zeros and non-finite values kept)."""
    a = np.asarray(values, float)
    out = a.copy()
    ok = np.isfinite(a) & (a != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(a[ok]))))
    out[ok] = np.round(a[ok] * scale) / scale
    return out


def generator_fingerprint(constants: GeneratorConstants | None = None) -> str:
    """A digest of what the generator produces with ``constants``: the SHA-256 of a small cohort.

    The cohort and CT features of :data:`FINGERPRINT_COHORT` (numbers to six significant digits, so
    that the last bit of a float does not count) are hashed. ``ctac-book calibrate`` records it with its
    fit; when the generator's code or the data it reads change what it produces, the digest changes
    and the fit page says that the fit was made with another generator. Notes and other text of the
    data files do not move it.
    """
    n, seed = FINGERPRINT_COHORT
    ds = synthetic_dataset(n, seed, generator_constants() if constants is None else constants)
    digest = hashlib.sha256()
    for frame in (ds.cohort, ds.ct_features):
        for name in frame.columns:
            col = frame[name]
            values = _significant(col.to_numpy(float)) if pd.api.types.is_numeric_dtype(col) else col.astype(str).to_numpy()
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(values).tobytes() if values.dtype != object
                          else "\x1f".join(values).encode())
    return digest.hexdigest()


def perfusion_status(tpd) -> np.ndarray:
    """``'normal'`` where stress TPD < 5%, else ``'abnormal'`` (the paper's definition)."""
    return np.where(np.asarray(tpd, float) < PERFUSION_THRESHOLD, "normal", "abnormal")
