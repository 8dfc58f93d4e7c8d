"""Fitting the synthetic generator's structural constants to declared targets (``ctac-book calibrate``).

The synthetic cohort's margins are fitted to Tables 1-2 cell by cell (:mod:`ctac_helpers.cohort.synth`).
Its *structure* (how strongly each death component separates deaths from survivors, and how much
of the stress perfusion deficit is reversible) is set by a handful of constants
(:data:`ctac_helpers.cohort.synth.FITTED_CONSTANTS`) fitted here to the few paper results listed under
``generator_targets`` in ``data_manifest/paper_values.yaml``: the overall AUCs of the multivariable
models, the AUCs of AI CTAC and AI hybrid in patients without coronary calcium, and the share of
patients with ischemia >= 10%. Every other result of the paper is held out: it tests whether the
generator's structure is right.

The procedure, in two stages:

1. **Proxy fit.** The component shifts, their age modulation and coupling among deaths, and the
   weight of the coronary component in CT atherosclerosis (:data:`FREE_CONSTANTS`) minimise the
   squared distance, in AUC units, between each
   target and a fast proxy of the book's models: an L2-penalised logistic regression, 5-fold
   cross-validated out-of-fold AUCs on the generated cohort (common random numbers: the same seed
   for every evaluation, so the objective is smooth in the constants), plus a penalty for every
   published cohort number that the structure pushes beyond 80% of its calibration tolerance
   (:func:`margin_excess`). The reversible share of the stress deficit is solved separately by
   bisection (it affects no model input).
2. **Confirmation.** The book's own procedure (:func:`ctac_helpers.models.cv.cross_validate`: 10 folds,
   the authors' grid, early stopping) runs on the cohort of the starting point first (round 0) and then
   on each fitted cohort. Where it misses a target by more than ``confirm_tolerance`` the proxy's offset
   from it at this point is added to the proxy targets and stage 1 runs again (at most ``max_rounds``
   confirmations, round 0's included). The round whose confirmed AUCs
   come nearest the targets (smallest largest miss) is kept, not necessarily the last: a correction
   can overshoot where the proxy's offset changes with the constants.

Two checks follow a fit. The held-out check (:func:`heldout_check`) runs the whole book on other seeds
and counts how often each held-out scorecard row holds. The structure's spread (:func:`structure_spread`)
measures, in seconds a seed, the held-out quantities that need none of the book's models (the latent
death signal by subgroup, stress TPD alone and the EAT model's proxy by subset), so that a row the
structure cannot reach is told from one that sampling moves.

The result (constants, targets, values reached by proxy and confirmation in every round, the
proxy's offsets from the book's procedure at the last confirmation, time taken) is written to
``data_manifest/generator.yaml``; the book's "Generator fit" page renders it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ctac_helpers.core import manifest
from ctac_helpers.definitions import TPD_ISCHEMIA
from ctac_helpers.models import cv as models
from ctac_helpers.cohort import synth
from ctac_helpers.results import discrimination, subgroups
from ctac_helpers.stats.delong import auc
from ctac_helpers.core.rundir import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "FitConfig",
    "FitTarget",
    "calibrate",
    "confirm_aucs",
    "fit_ischemic_fraction",
    "fit_targets",
    "proxy_aucs",
    "heldout_check",
    "heldout_run",
    "margin_excess",
    "moved_by",
    "heldout_seeds",
    "resumable_heldout",
    "spread_record",
    "spread_seeds",
    "structure_spread",
    "write_generator_file",
]

#: Patient subsets a target may be computed in.
SUBSETS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    name: functools.partial(discrimination.subset_mask, subset=name) for name in discrimination.SUBSETS}
# Target-key prefixes (``<table>/auc/<model>``) and the subset each table is computed in.
_AUC_TABLE_SUBSET = {"supp_table3": "all", "supp_table5": "no_cac"}
_SHARE_KEY = "fig3/high_risk_percent"
PROXY_MODELS = ("eat", "ai_ctac", "ai_spect", "ai_hybrid", "all")


@dataclass(frozen=True)
class FitTarget:
    """One paper result the generator is fitted to.

    Attributes
    ----------
    key : str
        The scorecard key (``supp_table3/auc/all``).
    kind : {'auc', 'share'}
        An out-of-fold AUC of ``model`` in ``subset``, or the percentage with ischemia >= 10%.
    value : float
        The paper's value (AUC, or percent).
    model, subset : str
        For AUC targets.
    """

    key: str
    kind: str
    value: float
    model: str = ""
    subset: str = "all"


@dataclass(frozen=True)
class FitConfig:
    """Options of :func:`calibrate` (grouped, as data).

    Attributes
    ----------
    n_patients, seed : int
        Size and seed of the cohort the constants are fitted on (the paper profile's).
    proxy_folds : int
        Folds of the proxy's cross-validation.
    confirm : bool
        Run the book's own procedure after the proxy fit.
    confirm_tolerance : float
        Largest miss of a confirmed AUC target that ends the fit (AUC units).
    max_rounds : int
        Most confirmations: round 0 confirms the starting point, each later round follows a proxy fit
        with the offsets of the one before. Without ``confirm``: one proxy fit.
    n_jobs : int
        Processes of the confirmation's cross-validation.
    max_evaluations : int
        Most proxy evaluations per proxy fit (finite-difference steps included); the best point
        evaluated is kept.
    """

    n_patients: int = synth.PAPER_N
    seed: int = models.DEFAULT_SEED
    proxy_folds: int = 5
    confirm: bool = True
    confirm_tolerance: float = 0.01
    max_rounds: int = 2
    n_jobs: int = 2
    max_evaluations: int = 20

    def __post_init__(self):
        if self.n_patients < 2000:
            raise ValueError(f"n_patients must be >= 2000 to fit AUCs, got {self.n_patients!r}")
        if self.proxy_folds < 2 or self.max_rounds < 1 or self.max_evaluations < 5:
            raise ValueError("proxy_folds >= 2, max_rounds >= 1 and max_evaluations >= 5 are required")
        if not 0 < self.confirm_tolerance < 0.05:
            raise ValueError(f"confirm_tolerance must lie in (0, 0.05), got {self.confirm_tolerance!r}")


def fit_targets() -> list[FitTarget]:
    """The targets named by ``generator_targets`` in ``paper_values.yaml``, with the paper's values.

    AUC targets of the univariate comparators (``cac``, ``perfusion``) follow from the fitted margins
    alone; they are listed (and reported) but no constant can move them.

    Raises
    ------
    ValueError
        A key the generator cannot be fitted to (allowed: ``supp_table3/auc/<model>``,
        ``supp_table5/auc/<model>``, ``fig3/high_risk_percent``).
    """
    keys = manifest.paper_values().get("generator_targets") or []
    out = []
    for key in keys:
        parts = str(key).split("/")
        if key == _SHARE_KEY:
            value = float(manifest.paper_entry("fig3")["values"]["ai_high_risk_percent"])
            out.append(FitTarget(key, "share", value))
        elif len(parts) == 3 and parts[0] in _AUC_TABLE_SUBSET and parts[1] == "auc":
            paper = _printed_auc(parts[0], parts[2])
            if paper is None:
                raise ValueError(f"generator target {key!r}: {parts[0]} prints no AUC of {parts[2]!r}")
            out.append(FitTarget(key, "auc", paper, parts[2], _AUC_TABLE_SUBSET[parts[0]]))
        else:
            raise ValueError(f"generator target {key!r} cannot be fitted; allowed: "
                             f"{', '.join(t + '/auc/<model>' for t in _AUC_TABLE_SUBSET)}, {_SHARE_KEY}")
    return out


def _printed_auc(table_id: str, name: str) -> float | None:
    """The paper's AUC of model or subgroup ``name`` in ``table_id`` (``auc`` in ``paper_values.yaml``: a number,
    or ``[AUC, low, high]``); None where it prints none."""
    value = (manifest.paper_entry(table_id).get("auc") or {}).get(name)
    value = value[0] if isinstance(value, (list, tuple)) else value
    return None if value is None else float(value)


# -- the proxy -------------------------------------------------------------------------------------
def _design(arr: np.ndarray) -> np.ndarray:
    """Standardised columns (log1p of skewed non-negative ones, medians for missing values) and one
    indicator per column with missing values. Computed once on all patients: the outcome plays no
    part in it, and the proxy only has to move with the constants as the book's models do."""
    a = arr.astype(float, copy=True)
    missing = np.isnan(a)
    keep = ~missing.all(axis=0)
    a, missing = a[:, keep], missing[:, keep]
    lo, med, q99 = np.nanmin(a, axis=0), np.nanmedian(a, axis=0), np.nanpercentile(a, 99, axis=0)
    skewed = (lo >= 0) & (q99 > 1) & (q99 > 10 * np.maximum(med, 1e-9))
    a[:, skewed] = np.log1p(a[:, skewed])
    a = np.where(missing, np.nanmedian(a, axis=0), a)
    sd = a.std(axis=0)
    a = (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    flags = missing[:, missing.any(axis=0)].astype(float)
    return np.hstack([a, flags])


def _oof_scores(arr: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold scores of an L2-penalised logistic regression: smooth in the generator's
    constants (unlike early-stopped trees), which finite-difference fitting needs."""
    from sklearn.linear_model import LogisticRegression

    design = _design(arr)
    oof = np.zeros(len(y))
    for k in np.unique(fold):
        test = fold == k
        clf = LogisticRegression(C=0.05, max_iter=300)
        clf.fit(design[~test], y[~test])
        oof[test] = clf.decision_function(design[test])
    return oof


def proxy_aucs(data: synth.SyntheticDataset, model_names: Sequence[str] = PROXY_MODELS, folds: int = 5,
               seed: int = models.DEFAULT_SEED) -> dict[tuple[str, str], float]:
    """Out-of-fold AUCs of a fast proxy of the book's models, in every subset of :data:`SUBSETS`.

    An L2-penalised logistic regression (sklearn) on the same feature matrices as the book's
    XGBoost models (:func:`ctac_helpers.models.cv.feature_matrix`; skewed columns on a log scale,
    missing values imputed and flagged), stratified ``folds``-fold. Univariate comparators are
    scored by their variable.

    Returns
    -------
    dict
        ``{(model, subset): AUC}``.
    """
    cohort = data.cohort
    fold = models.outer_folds(cohort["death"], folds, seed)
    masks = {name: f(cohort) for name, f in SUBSETS.items()}
    out = {}
    for model in model_names:
        X, y = models.feature_matrix(cohort, data.ct_features, model)
        y = y.to_numpy()
        if models.FEATURE_SETS[model]["kind"] == "univariate":
            score = X.iloc[:, 0].to_numpy(float)
        else:
            score = _oof_scores(models.feature_arrays(X)[0], y, fold)
        for name, m in masks.items():
            out[(model, name)] = auc(y[m], score[m])
    return out


def ischemic_share(cohort: pd.DataFrame, threshold: float = TPD_ISCHEMIA) -> float:
    """Percentage of patients whose ischemic TPD (stress - rest) is at least ``threshold``."""
    return 100.0 * float(np.mean(cohort["stress_tpd"] - cohort["rest_tpd"] >= threshold))


def fit_ischemic_fraction(target_percent: float, config: FitConfig,
                          constants: synth.GeneratorConstants) -> float:
    """The mean reversible share of the stress deficit that gives ``target_percent`` ischemia >= 10%.

    Bisection on the generated cohort (only rest TPD depends on it).
    """
    def share(fraction: float) -> float:
        cohort = synth.synthetic_cohort(config.n_patients, config.seed, constants.replace(ischemic_fraction=fraction))
        return ischemic_share(cohort)

    lo, hi = 0.01, 0.95
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if share(mid) < target_percent:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    # the share moves in steps of one patient: keep the end nearer the target
    lo, hi = round(lo, 4), round(hi, 4)
    return min((lo, hi), key=lambda f: abs(share(f) - target_percent))


#: Where every fit starts (the fitted constants; the design constants come from generator.yaml): the
#: constants that the previous fit kept (its round 2), made on the generator before the CAC-TPD pair correlation
#: changed from 0.21 to 0.25. Round 0 confirms them on today's generator before any proxy step.
START = {"death_shift": {"ct_burden": 0.895, "coronary": 1.4202, "myocardial": 0.1388, "clinical": 0.7213},
         "age_modulation": 0.163, "ct_athero": 0.3351, "coupling_ct": 0.7766, "coupling_myocardial": 0.2017,
         "ischemic_fraction": 0.4586}

# A published cohort number beyond MARGIN_START of its calibration tolerance weighs like an AUC
# 0.05 off target per tolerance beyond that: the structure must not break the margins it is built
# on, and the fit keeps a safety distance from each tolerance's edge.
MARGIN_WEIGHT = 5.0
MARGIN_START = 0.8


def margin_excess(cohort: pd.DataFrame) -> np.ndarray:
    """Per published cohort number: how far, in tolerances, it lies beyond :data:`MARGIN_START` of
    its tolerance (0 nearer the target).

    The numbers and tolerances of :func:`ctac_helpers.cohort.fit_report.calibration_report` (Tables 1-2,
    Supplementary Table 2, the CAC categories, follow-up).
    """
    from ctac_helpers.cohort.fit_report import calibration_report

    report = calibration_report(cohort)
    ratio = (report["difference"].abs() / report["tolerance"]).to_numpy(float)
    return np.maximum(0.0, ratio - MARGIN_START)


#: The constants stage 1 fits, with their bounds (``death_shift``: each component's).
FREE_CONSTANTS = {"death_shift": (0.05, 3.0), "age_modulation": (-0.5, 0.9), "ct_athero": (0.0, 0.9),
                  "coupling_ct": (0.0, 1.5), "coupling_myocardial": (0.0, 1.5)}
_SCALARS = [name for name in FREE_CONSTANTS if name != "death_shift"]


def _vector(constants: synth.GeneratorConstants) -> np.ndarray:
    return np.r_[constants.shifts(), [getattr(constants, name) for name in _SCALARS]]


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    k = len(synth.COMPONENTS)
    lower = np.r_[[FREE_CONSTANTS["death_shift"][0]] * k, [FREE_CONSTANTS[n][0] for n in _SCALARS]]
    upper = np.r_[[FREE_CONSTANTS["death_shift"][1]] * k, [FREE_CONSTANTS[n][1] for n in _SCALARS]]
    return lower, upper


def _from_vector(start: synth.GeneratorConstants, x: np.ndarray) -> synth.GeneratorConstants:
    k = len(synth.COMPONENTS)
    return start.replace(death_shift=dict(zip(synth.COMPONENTS, np.round(x[:k], 4))),
                         **{name: round(float(v), 4) for name, v in zip(_SCALARS, x[k:])})


def _fit_structure(targets: Sequence[FitTarget], offsets: Mapping[str, float], config: FitConfig,
                   start: synth.GeneratorConstants, record: list) -> synth.GeneratorConstants:
    """Stage 1: the constants of :data:`FREE_CONSTANTS` whose proxy AUCs come nearest the (offset) targets."""
    from scipy.optimize import least_squares

    aucs = [t for t in targets if moved_by(t) == "structure"]
    wanted = np.array([t.value + offsets.get(t.key, 0.0) for t in aucs])
    lower, upper = _bounds()

    first = len(record)
    best: dict = {"cost": np.inf, "u": None}

    def residuals(u: np.ndarray) -> np.ndarray:
        if len(record) - first >= config.max_evaluations:
            raise _BudgetSpent
        constants = _from_vector(start, u - 1.0)
        data = synth.synthetic_dataset(config.n_patients, config.seed, constants)
        got = proxy_aucs(data, sorted({t.model for t in aucs}), config.proxy_folds, config.seed)
        reached = np.array([got[(t.model, t.subset)] for t in aucs])
        margins = margin_excess(data.cohort)
        names = list(synth.COMPONENTS) + _SCALARS
        record.append({"stage": "proxy", **dict(zip(names, _vector(constants))),
                       **{t.key: v for t, v in zip(aucs, reached)}, "margin_excess": float(margins.sum())})
        logger.info("proxy evaluation %d: %s -> %s; margins %.2f", len(record),
                    ", ".join(f"{n} {v:.3f}" for n, v in zip(names, _vector(constants))),
                    ", ".join(f"{t.key.split('/', 1)[1]} {v:.3f}" for t, v in zip(aucs, reached)),
                    float(margins.sum()))
        res = np.r_[(reached - wanted) / 0.01, MARGIN_WEIGHT * margins]
        if res @ res < best["cost"]:
            best.update(cost=float(res @ res), u=np.array(u, float))
        return res

    # The search runs on value + 1 (never 0, so that the 6% relative finite-difference steps are
    # never degenerate); the proxy's AUCs move by a few thousandths per step.
    try:
        least_squares(residuals, np.clip(_vector(start), lower, upper) + 1.0, diff_step=0.06,
                      bounds=(lower + 1.0, upper + 1.0), x_scale="jac")
    except _BudgetSpent:
        logger.info("proxy fit: %d evaluations spent; keeping the best point", config.max_evaluations)
    return _from_vector(start, best["u"] - 1.0)


class _BudgetSpent(Exception):
    """The proxy fit's evaluation budget is spent (scipy's max_nfev does not count Jacobian steps)."""


def confirm_aucs(data: synth.SyntheticDataset, config: FitConfig) -> dict[tuple[str, str], float]:
    """Out-of-fold AUCs of the book's own procedure (10 folds, the authors' grid, early stopping)."""
    cv_config = models.CVConfig(seed=config.seed, keep_boosters=(), execution=models.Execution(n_jobs=config.n_jobs))
    result = models.cross_validate(data.cohort, data.ct_features, cv_config)
    wide = result.scores()
    cohort = data.cohort.set_index("patient_id").loc[wide.index].reset_index()
    y = wide["death"].to_numpy()
    masks = {name: f(cohort) for name, f in SUBSETS.items()}
    return {(model, name): auc(y[m], wide[model].to_numpy()[m])
            for model in wide.columns if model != "death" for name, m in masks.items()}


def calibrate(config: FitConfig = FitConfig(), start: synth.GeneratorConstants | None = None) -> dict:
    """Fit the generator's constants to :func:`fit_targets` (see the module documentation).

    Parameters
    ----------
    config : FitConfig
        Size, seed and effort of the fit.
    start : GeneratorConstants, optional
        Starting point; default :data:`START` for the fitted constants and ``generator.yaml``'s design
        constants, so that the command reproduces the file from scratch.

    Returns
    -------
    dict
        The content of ``generator.yaml``: ``constants`` and the ``fit`` record (targets, values
        reached by the proxy and by the confirmation, offsets, evaluations, seconds).
    """
    t0 = time.perf_counter()
    targets = fit_targets()
    if start is None:  # the fixed starting point, with the design constants of generator.yaml
        start = synth.generator_constants().replace(**START)
    constants = start
    share = [t for t in targets if t.kind == "share"]
    if share:
        constants = constants.replace(ischemic_fraction=fit_ischemic_fraction(share[0].value, config, constants))
        logger.info("ischemic fraction %.4f", constants.ischemic_fraction)
    offsets: dict[str, float] = {}
    record: list[dict] = []
    rounds = []
    kept = None  # (largest confirmed miss, round index, constants) of the best round so far
    # Round 0 confirms the starting point itself before any proxy fit: if it already meets the targets the
    # fit ends there, and otherwise the first proxy fit corrects by the proxy's offset measured at the start
    # instead of trusting the proxy blind. Rounds 1.. each fit the proxy (with the offsets) and confirm.
    first = 0 if config.confirm else 1
    for round_no in range(first, first + config.max_rounds):
        if round_no > 0:
            constants = _fit_structure(targets, offsets, config, constants, record)
        data = synth.synthetic_dataset(config.n_patients, config.seed, constants)
        proxy = proxy_aucs(data, PROXY_MODELS + ("cac", "perfusion"), config.proxy_folds, config.seed)
        confirmed = confirm_aucs(data, config) if config.confirm else {}
        rounds.append({"round": round_no,
                       "constants": dict(zip(list(synth.COMPONENTS) + _SCALARS, map(float, _vector(constants)))),
                       "proxy": {t.key: proxy.get((t.model, t.subset)) for t in targets if t.kind == "auc"},
                       "confirmed": {t.key: confirmed.get((t.model, t.subset)) for t in targets if t.kind == "auc"}})
        if not config.confirm:
            break
        misses = {t.key: confirmed[(t.model, t.subset)] - t.value for t in targets
                  if moved_by(t) == "structure"}
        logger.info("round %d confirmed: %s", round_no, ", ".join(f"{k} {v:+.3f}" for k, v in misses.items()))
        worst = max(abs(v) for v in misses.values())
        if kept is None or worst < kept[0]:
            kept = (worst, len(rounds) - 1, constants)
        if worst <= config.confirm_tolerance:
            break
        # the proxy's offset from the book's procedure at this point, carried into the next proxy fit
        offsets = {t.key: offsets.get(t.key, 0.0) + proxy[(t.model, t.subset)] - confirmed[(t.model, t.subset)]
                   for t in targets if t.key in misses}
    chosen = len(rounds) - 1
    if kept is not None:
        _, chosen, constants = kept
        if chosen != len(rounds) - 1:
            logger.info("keeping round %d, nearest the targets (largest miss %.3f)", rounds[chosen]["round"], kept[0])
    # the share needs the cohort table only, not the CT features a dataset also draws
    reached_share = ischemic_share(synth.synthetic_cohort(config.n_patients, config.seed, constants))
    final = rounds[chosen]
    fit = {
        "method": "proxy least squares (L2 logistic regression, "
                  f"{config.proxy_folds}-fold) then the book's XGBoost procedure"
                  if config.confirm else
                  f"proxy least squares (L2 logistic regression, {config.proxy_folds}-fold), "
                  "not confirmed",
        "n_patients": config.n_patients,
        "seed": config.seed,
        "targets": [{"key": t.key, "paper": t.value,
                     "proxy": _round(final["proxy"].get(t.key)) if t.kind == "auc" else _round(reached_share),
                     "confirmed": (_round(final["confirmed"].get(t.key)) if t.kind == "auc"
                                   else _round(reached_share)) if config.confirm else None,
                     "moved_by": moved_by(t)}
                    for t in targets],
        "rounds": [{**r, "proxy": {k: _round(v) for k, v in r["proxy"].items()},
                    "confirmed": {k: _round(v) for k, v in r["confirmed"].items()}} for r in rounds],
        "offsets": {k: _round(v) for k, v in offsets.items()},
        "kept_round": final["round"],
        "proxy_evaluations": len(record),
        "seconds": round(time.perf_counter() - t0, 1),
        # what the generator produced with these constants: the fit page tells when that has changed
        "fingerprint": synth.generator_fingerprint(constants),
    }
    return {"version": 1, "constants": constants.as_dict(), "fit": fit}


#: Models whose AUC the fitted constants cannot move: their inputs' difference between deaths and
#: survivors is fixed by the margins of Tables 1-2 (the EAT model's two inputs, the comparators).
MARGIN_MODELS = ("eat", "cac", "perfusion")


def moved_by(target: FitTarget) -> str:
    """What can move a target: the structural constants, the reversible fraction, or only the margins."""
    if target.kind == "share":
        return "ischemic_fraction"
    return "margins (Tables 1-2)" if target.model in MARGIN_MODELS else "structure"


# The imaging chapters do not feed any scorecard row on the synthetic default: the held-out check
# runs them on two small phantoms so that a seed costs the models chapter and little else.
HELDOUT_IMAGING = {"n_phantoms": 2, "phantom_shape": [48, 128, 128], "phantom_spacing": [3.9, 3.9, 6.0],
                   "n_workers": 1}


def heldout_seeds(seed: int = models.DEFAULT_SEED, count: int = 5) -> list[int]:
    """The seeds of the held-out check: the ``count`` seeds after ``seed`` (fixed before any result
    is seen, so that no seed can be chosen for what it gives)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    return [int(seed) + i for i in range(1, count + 1)]


def heldout_run(seed: int, run_root: str | Path, profile: str = "paper") -> Path:
    """Run every stage of ``profile`` with ``seed`` into ``<run_root>/heldout-<seed>``.

    The imaging chapters run on two small phantoms (:data:`HELDOUT_IMAGING`): no scorecard row
    reads them on the synthetic default. Finished stages are not run again.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    from ctac_helpers.pipeline import runner
    from ctac_helpers.core import stages
    from ctac_helpers.pipeline.config import load_config

    config = load_config(profile)
    config.update(name=f"heldout-{seed}", seed=int(seed))
    for stage in ("segmentation", "cac_eat", "radiomics"):
        config["stages"][stage] = {**config["stages"].get(stage, {}),
                                   **{k: v for k, v in HELDOUT_IMAGING.items()
                                      if stage == "segmentation" or k == "n_workers"}}
    run_dir = Path(run_root) / f"heldout-{seed}"
    logger.info("held-out check: seed %d into %s", seed, run_dir)
    runner.run_stages(config, run_dir, stages=stages.STAGES, notebooks_dir=runner.NOTEBOOKS_DIR)
    return run_dir


def heldout_check(seeds: Sequence[int], run_root: str | Path, profile: str = "paper",
                  on_seed: Callable[[list[int], pd.DataFrame, list[dict]], None] | None = None,
                  previous: Mapping | None = None) -> pd.DataFrame:
    """Run the book on other seeds and count, per scorecard row, in how many runs it holds.

    Parameters
    ----------
    seeds : sequence of int
        See :func:`heldout_seeds`.
    run_root : path-like
        Parent of the run directories (:func:`heldout_run`).
    profile : str
        The profile to run (``paper``).
    on_seed : callable, optional
        Called after each seed with the seeds done so far, their counts and the per-seed summaries
        (to record progress).
    previous : mapping, optional
        An earlier check of the same generator (``generator.yaml``'s ``heldout`` record: ``seeds`` and
        ``rows``, and ``per_seed`` where it has them; see :func:`resumable_heldout`): its seeds are not
        run again and its counts are added to those of the seeds run now, so that an interrupted check
        goes on where it stopped.

    Returns
    -------
    DataFrame
        :func:`ctac_helpers.publish.scorecard.holds_by_key` of the run directories, plus the counts of
        ``previous``; a row met in a run of either has its counts summed. The per-seed summaries
        (``{"seed", "held_out": [holds, comparable], "fitted": [holds, comparable]}``, those of
        ``previous`` first) go to ``on_seed``; a seed run now adds its value of each held-out and fitted
        row, and the keys of those that miss (:func:`ctac_helpers.publish.scorecard.seed_values`).

    Raises
    ------
    ValueError
        ``previous`` records a seed twice or its rows lack a count.
    """
    from ctac_helpers.publish import scorecard as scorecard_mod

    done = [int(s) for s in (previous or {}).get("seeds") or []]
    if len(set(done)) != len(done):
        raise ValueError(f"the earlier held-out check records a seed twice: {done}")
    earlier = pd.DataFrame.from_records(list((previous or {}).get("rows") or []))
    if len(earlier):
        missing = {"key", "group", "runs", "comparable", "holds"} - set(earlier.columns)
        if missing:
            raise ValueError(f"the earlier held-out check's rows lack {sorted(missing)}")
    if done:
        logger.info("held-out check: seeds %s recorded earlier, not run again", done)
    run_dirs = []
    holds = _add_counts(earlier, pd.DataFrame())
    per_seed = [dict(r) for r in (previous or {}).get("per_seed") or []]
    for s in seeds:
        if int(s) in done:
            continue
        run_dirs.append(heldout_run(s, run_root, profile))
        done.append(int(s))
        holds = _add_counts(earlier, scorecard_mod.holds_by_key(run_dirs))
        card = scorecard_mod.scorecard(run_dirs[-1])
        summary = scorecard_mod.group_summary(card)
        per_seed.append({"seed": int(s), **{g: list(summary[g]) for g in ("held_out", "fitted")},
                         **scorecard_mod.seed_values(card)})
        if on_seed is not None:
            on_seed(list(done), holds, list(per_seed))
    return holds


def _add_counts(earlier: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """The held-out counts of two sets of runs summed per key (keys in the order first met)."""
    counts = ["runs", "comparable", "holds"]
    frames = [f for f in (earlier, now) if len(f)]
    if not frames:
        return pd.DataFrame(columns=["key", "group", *counts])
    both = pd.concat(frames, ignore_index=True)
    # the labels (group, item, quantity) of the latest runs, the counts of all
    labels = both.drop(columns=counts).drop_duplicates("key", keep="last").set_index("key")
    summed = both.groupby("key", sort=False)[counts].sum().astype(int)
    return summed.join(labels).reset_index()[["key", *labels.columns, *counts]]


def resumable_heldout(content: Mapping, fingerprint: str) -> dict | None:
    """The ``heldout`` record of ``generator.yaml`` if it was made with the generator of ``fingerprint``.

    A record made before the held-out check stored its own ``fingerprint`` belongs to the fit's
    (a new fit drops the record), so the fit's fingerprint stands for it. None when there is no record
    or it was made with another generator: its counts say nothing of this one.
    """
    heldout = content.get("heldout") or {}
    if not heldout.get("seeds"):
        return None
    made_with = heldout.get("fingerprint") or (content.get("fit") or {}).get("fingerprint")
    return dict(heldout) if made_with == fingerprint else None


# -- the structure's spread over seeds --------------------------------------------------------------
#: Quantities of :func:`structure_spread`: ``{key: the scorecard key of the paper's value set beside it}``.
#: ``signal/<subgroup>``: AUC of the latent death signal (:func:`ctac_helpers.cohort.synth.death_signal`) in
#: the All model's subgroups (Supplementary Fig. 3) and in all patients; ``perfusion/<subset>``: AUC of
#: stress TPD alone (the book's perfusion model); ``eat_proxy/<subset>``: the proxy of the EAT model.
_SIGNAL_GROUPS = ("all",) + tuple(subgroups.PAPER_KEYS.get(label, label)
                                  for spec in subgroups.SUBGROUPS.values() for label, _, _ in spec["levels"])
SPREAD_QUANTITIES = {
    **{f"signal/{k}": (f"supp_fig3/auc/{k}" if k != "all" else "supp_table3/auc/all") for k in _SIGNAL_GROUPS},
    **{f"{m}/{s}": f"{spec['table']}/auc/{'perfusion' if m == 'perfusion' else 'eat'}"
       for m in ("perfusion", "eat_proxy") for s, spec in discrimination.SUBSETS.items()},
}


def spread_seeds(count: int, seed: int = models.DEFAULT_SEED) -> list[int]:
    """The seeds of the structure's spread: the default ``seed`` and the ``count`` seeds after it (those of
    :func:`heldout_seeds` first), fixed before any result is seen."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    return [int(seed)] + (heldout_seeds(seed, count) if count else [])


def structure_spread(seeds: Sequence[int], n_patients: int = synth.PAPER_N,
                     constants: synth.GeneratorConstants | None = None, folds: int = 5) -> pd.DataFrame:
    """What the generator's structure gives, seed by seed, for quantities that need none of the book's models.

    Each is computed on the cohort drawn with each seed (seconds a seed, where the held-out check runs
    the whole book): the AUC of the latent death signal, the best linear separation of deaths that
    the death components and age allow (:func:`ctac_helpers.cohort.synth.death_signal`), in all patients
    and in each subgroup of Supplementary Fig. 3; the AUC of stress TPD alone, and of the EAT model's
    proxy (:func:`proxy_aucs`), in all patients and the subsets of Supplementary Tables 4-5. Their
    spread over seeds tells a row that the structure cannot reach from one that sampling moves.

    Parameters
    ----------
    seeds : sequence of int
        The cohorts' seeds.
    n_patients : int
        Cohort size (default the paper's).
    constants : GeneratorConstants, optional
        Default those of ``generator.yaml``.
    folds : int
        Folds of the EAT proxy's cross-validation.

    Returns
    -------
    pandas.DataFrame
        One row per seed and quantity: ``seed``, ``key`` (of :data:`SPREAD_QUANTITIES`), ``value``.
    """
    if not len(seeds):
        raise ValueError("seeds must name at least one seed")
    constants = synth.generator_constants() if constants is None else constants
    rows = []
    for seed in seeds:
        data = synth.synthetic_dataset(n_patients, int(seed), constants)
        cohort = data.cohort
        y = cohort["death"].to_numpy()
        components = data.latent[[f"component_{k}" for k in synth.COMPONENTS]].to_numpy()
        signal = synth.death_signal(components, constants, cohort["age"])
        masks = {"all": np.ones(len(y), bool)}
        for sides in subgroups.subgroup_masks(cohort).values():
            masks.update({subgroups.PAPER_KEYS.get(label, label): m for label, m in sides.items()})
        values = {f"signal/{k}": auc(y[masks[k]], signal[masks[k]]) for k in _SIGNAL_GROUPS}
        proxy = proxy_aucs(data, ("eat",), folds, int(seed))
        tpd = cohort["stress_tpd"].to_numpy(float)
        for subset in discrimination.SUBSETS:
            m = discrimination.subset_mask(cohort, subset)
            values[f"perfusion/{subset}"] = auc(y[m], tpd[m])
            values[f"eat_proxy/{subset}"] = proxy[("eat", subset)]
        rows += [{"seed": int(seed), "key": k, "value": float(values[k])} for k in SPREAD_QUANTITIES]
        logger.info("structure spread: seed %d done", seed)
    return pd.DataFrame(rows, columns=["seed", "key", "value"])


def spread_record(table: pd.DataFrame, fingerprint: str, n_patients: int = synth.PAPER_N) -> dict:
    """The ``spread`` record of ``generator.yaml`` from :func:`structure_spread`'s table.

    ``{seeds, n_patients, fingerprint, rows: [{key, paper_key, paper, values}]}``, ``values`` in seed
    order; ``paper`` the paper's value of ``paper_key`` where it prints one.
    """
    seeds = sorted(int(s) for s in table["seed"].unique())
    rows = []
    for key, paper_key in SPREAD_QUANTITIES.items():
        sub = table[table["key"] == key].set_index("seed")["value"]
        table_id, _, name = paper_key.split("/")
        rows.append({"key": key, "paper_key": paper_key, "paper": _printed_auc(table_id, name),
                     "values": [_round(sub.get(s)) for s in seeds]})
    return {"seeds": seeds, "n_patients": int(n_patients), "fingerprint": fingerprint, "rows": rows}


def _round(value):
    return None if value is None else round(float(value), 4)


_MARGINS_HEADER = (
    "# Cell distributions of the synthetic cohort's continuous variables, fitted to the paper's Tables 1-2\n"
    "# (ctac_helpers.cohort.synth.fit_margins). Written by `ctac-book calibrate --margins`; not to be edited\n"
    "# by hand. The generator reads these parameters rather than fitting them, because the fit lands\n"
    "# elsewhere on another machine's linear algebra; `digest` names the targets each fit was made for.\n")
_GENERATOR_HEADER = (
    "# Structural constants of the synthetic cohort generator (ctac_helpers.cohort.synth.GeneratorConstants)\n"
    "# and the record of their fit. Written by `ctac-book calibrate` (ctac_helpers.pipeline.calibrate):\n"
    "# the fitted constants (ctac_helpers.cohort.synth.FITTED_CONSTANTS) are not to be edited by hand; the\n"
    "# others are design assumptions, documented in GeneratorConstants.\n")


def _write_data_file(name: str, header: str, content: Mapping, path: str | Path | None) -> Path:
    """Write a ``data_manifest`` file (or ``path``) atomically under its header comment; forget cached reads."""
    path = Path(path) if path is not None else manifest.MANIFEST_DIR / name
    atomic_write_text(path, header + yaml.safe_dump(dict(content), sort_keys=False, default_flow_style=None, width=110))
    manifest.clear_cache()
    return path


def write_margins_file(content: Mapping, path: str | Path | None = None) -> Path:
    """Write ``margins.yaml`` (:func:`ctac_helpers.cohort.synth.margins_record`) atomically, and forget cached
    reads and fits."""
    path = _write_data_file(synth.MARGINS_FILE, _MARGINS_HEADER, content, path)
    synth.forget_margins()
    return path


def write_generator_file(content: Mapping, path: str | Path | None = None) -> Path:
    """Write ``generator.yaml`` atomically, keeping its header comment, and forget cached reads."""
    return _write_data_file(synth.GENERATOR_FILE, _GENERATOR_HEADER, content, path)
