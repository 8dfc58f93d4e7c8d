import numpy as np
import pandas as pd
import pytest

from ctac_helpers.cohort import fit_report as calibration
from ctac_helpers.core import manifest
from ctac_helpers import definitions
from ctac_helpers.cohort import synth


def test_full_scale_cohort_meets_the_calibration_target(full_cohort):
    report = calibration.calibration_report(full_cohort)
    assert len(report) > 250
    misses = report[~report["within"]]
    assert misses.empty, misses.to_string()


def test_full_scale_counts_are_exact(full_cohort):
    assert len(full_cohort) == 10480
    assert (full_cohort["sex"] == "male").sum() == 5745
    assert full_cohort["death"].sum() == 651
    assert full_cohort.loc[full_cohort["sex"] == "male", "death"].sum() == 398
    normal = full_cohort["stress_tpd"] < 5
    assert abs(normal.mean() - 0.699) < 0.005
    assert abs(full_cohort.loc[normal, "death"].mean() - 0.047) < 0.003


def test_cohort_follows_schema(small_dataset):
    cohort = small_dataset.cohort
    schema = manifest.cohort_schema()
    required = set(schema.index[schema["required"]])
    assert required <= set(cohort.columns)
    assert cohort["patient_id"].is_unique
    for name, col in schema.iterrows():
        if name not in cohort:
            continue
        values = cohort[name].dropna()
        if isinstance(col["range"], list):
            lo, hi = col["range"]
            assert values.between(lo, hi).all(), name
        if isinstance(col["categories"], list):
            assert set(values) <= set(col["categories"]), name
        if col["type"] == "binary":
            assert set(values) <= {0, 1}, name
        if not col["nullable"]:
            assert cohort[name].notna().all(), name


def test_same_seed_same_data_other_seed_other_data():
    a = synth.synthetic_dataset(400, 7)
    b = synth.synthetic_dataset(400, 7)
    c = synth.synthetic_dataset(400, 8)
    pd.testing.assert_frame_equal(a.cohort, b.cohort)
    pd.testing.assert_frame_equal(a.ct_features, b.ct_features)
    assert not a.cohort["age"].equals(c.cohort["age"])


def test_any_size_and_bad_size():
    assert len(synth.synthetic_cohort(257, 1)) == 257
    with pytest.raises(ValueError, match="n_patients"):
        synth.synthetic_cohort(10, 1)


def test_ct_features_schema_and_missingness(small_dataset):
    f = small_dataset.ct_features
    structures = manifest.synthetic_structures().index
    features = manifest.radiomics_features("all")
    assert f.shape[1] == 1 + len(structures) * (1 + len(features))
    for s in ("heart", "kidney_left"):
        status = f[manifest.feature_column(s, "status")]
        assert set(status) <= set(manifest.STRUCTURE_STATUSES)
        mean = f[manifest.feature_column(s, "Mean")]
        # absent and truncated structures are missing values, never zeros
        assert mean[status != "present"].isna().all()
        assert mean[status == "present"].notna().all()
    presence = f[manifest.feature_column("kidney_left", "status")].eq("present").mean()
    assert presence < 0.6


def test_ct_features_are_plausible_and_carry_the_death_signal(small_dataset):
    f, c = small_dataset.ct_features, small_dataset.cohort
    lung = f[manifest.feature_column("lung_lower_lobe_right", "Mean")]
    assert lung.between(-1000, -600).mean() > 0.98
    vert = f[manifest.feature_column("vertebrae_T8", "Mean")]
    assert vert.median() > 150
    # lung disease burden is higher in patients who died: their lungs are less dense
    dead = c["death"].to_numpy() == 1
    assert np.nanmean(lung[dead]) < np.nanmean(lung[~dead]) - 10


def test_radiomics_from_parameters_is_internally_consistent():
    feats = synth.radiomics_from_parameters(
        mean=np.array([40.0, -850.0]), sd=np.array([30.0, 120.0]), skew=np.array([0.2, 2.4]),
        kurt=np.array([1.0, 8.0]), volume_mm3=np.array([6e5, 1.2e6]), sphericity=np.array([0.8, 0.55]),
        minor_ratio=np.array([0.85, 0.7]), least_ratio=np.array([0.7, 0.45]), voxel_mm3=np.array([2.88, 2.88]))
    np.testing.assert_allclose(feats["Range"], feats["Maximum"] - feats["Minimum"])
    np.testing.assert_allclose(feats["Energy"], (feats["VoxelVolume"] / 2.88) * (feats["Mean"] ** 2 + feats["Variance"]))
    np.testing.assert_allclose(feats["RootMeanSquared"] ** 2, feats["Mean"] ** 2 + feats["Variance"])
    order = np.vstack([feats[k] for k in ("Minimum", "10Percentile", "Median", "90Percentile", "Maximum")])
    assert np.all(np.diff(order, axis=0) >= 0)
    # sphericity definition: pi^(1/3) (6V)^(2/3) / A
    np.testing.assert_allclose(np.pi ** (1 / 3) * (6 * feats["VoxelVolume"]) ** (2 / 3) / feats["SurfaceArea"],
                               feats["Sphericity"])
    assert np.all(feats["Minimum"] >= -1024)
    assert set(feats) == set(manifest.radiomics_features("all"))


def test_perfusion_and_cac_categories():
    assert synth.perfusion_status([4.99, 5.0]).tolist() == ["normal", "abnormal"]
    assert definitions.cac_category([0, 0.5, 100, 100.1, 400, 401]).tolist() == ["0", "1-100", "1-100", "101-400", "101-400", ">400"]


# -- the death components and the structural constants ---------------------------------------------
def test_generator_constants_are_read_from_the_data_file_and_validated():
    c = synth.generator_constants()
    assert set(c.death_shift) == set(synth.COMPONENTS)
    assert c.as_dict()["death_shift"] == {k: float(c.death_shift[k]) for k in synth.COMPONENTS}
    with pytest.raises(ValueError, match="death_shift must give exactly the components"):
        synth.GeneratorConstants(death_shift={"ct_burden": 1.0})
    with pytest.raises(ValueError, match="ischemic_fraction must lie in"):
        c.replace(ischemic_fraction=1.5)
    # a partial death_shift keeps the other components
    assert c.replace(death_shift={"coronary": 0.9}).death_shift["ct_burden"] == c.death_shift["ct_burden"]


def test_component_loadings_explain_each_printed_difference():
    c = synth.generator_constants()
    report = synth.loading_report(c)
    assert set(report["variable"]) == set(synth.COMPONENT_WEIGHTS)
    cap = np.sqrt(1 - synth.MIN_UNIQUE_VARIANCE)
    loadings = report[[f"loading_{k}" for k in synth.COMPONENTS]].to_numpy()
    norms = np.sqrt((loadings ** 2).sum(axis=1))
    assert np.all(norms <= cap + 1e-9)
    uncapped = norms < cap - 1e-9
    # where the cap does not bind, the components explain the printed difference exactly
    np.testing.assert_allclose(report.loc[uncapped, "explained"], report.loc[uncapped, "printed_shift"], atol=1e-12)
    np.testing.assert_allclose(report["explained"] + report["own"], report["printed_shift"], atol=1e-12)
    # a variable loads only on the components its weights name
    row = report.set_index("variable").loc["cac_score"]
    assert row["loading_ct_burden"] == 0 and row["loading_clinical"] == 0 and row["loading_coronary"] > 0


def test_components_carry_the_death_shift_and_age_modulation():
    c = synth.generator_constants().replace(age_modulation=0.5)
    ds = synth.synthetic_dataset(3000, 11, c)
    lat, coh = ds.latent, ds.cohort
    dead = coh["death"].to_numpy() == 1
    for k, shift in c.death_shift.items():
        diff = lat.loc[dead, f"component_{k}"].mean() - lat.loc[~dead, f"component_{k}"].mean()
        assert abs(diff - shift) < 0.25, (k, diff, shift)
    # among the deaths, older patients sit closer to the survivors
    young = dead & (coh["age"].to_numpy() < np.median(coh.loc[dead, "age"]))
    old = dead & ~young
    burden = lat["component_ct_burden"].to_numpy()
    assert burden[young].mean() > burden[old].mean() + 0.2


def test_stronger_death_signal_dies_earlier():
    c = synth.generator_constants().replace(time_risk=1.0)
    ds = synth.synthetic_dataset(4000, 12, c)
    dead = ds.cohort["death"].to_numpy() == 1
    signal = synth.death_signal(ds.latent[[f"component_{k}" for k in synth.COMPONENTS]].to_numpy(), c,
                                ds.cohort["age"])
    t = ds.cohort["followup_years"].to_numpy()
    assert np.corrcoef(signal[dead], t[dead])[0, 1] < -0.2
    flat = synth.synthetic_dataset(4000, 12, c.replace(time_risk=0.0))
    assert abs(np.corrcoef(signal[dead], flat.cohort["followup_years"].to_numpy()[dead])[0, 1]) < 0.1


def test_rest_tpd_leaves_the_reversible_share():
    c = synth.generator_constants()
    low = synth.synthetic_cohort(3000, 5, c.replace(ischemic_fraction=0.1))
    high = synth.synthetic_cohort(3000, 5, c.replace(ischemic_fraction=0.6))
    for cohort in (low, high):
        assert (cohort["rest_tpd"] <= cohort["stress_tpd"] + 1e-9).all() and (cohort["rest_tpd"] >= 0).all()
    share = [((x["stress_tpd"] - x["rest_tpd"]) >= 10).mean() for x in (low, high)]
    assert share[0] < share[1]


def test_margin_auc_is_the_auc_the_cell_distributions_give(full_cohort):
    # The full cohort keeps each cell's distribution, so its AUC is the margins' up to sampling (and the
    # anchored quantiles make it close).
    from sklearn.metrics import roc_auc_score

    y, tpd = full_cohort["death"].to_numpy(), full_cohort["stress_tpd"].to_numpy()
    assert synth.margin_auc("stress_tpd") == pytest.approx(roc_auc_score(y, tpd), abs=0.01)
    normal = tpd < 5
    assert synth.margin_auc("stress_tpd", below=5) == pytest.approx(roc_auc_score(y[normal], tpd[normal]), abs=0.015)
    # the normal range carries less of the deaths' excess than the whole range
    assert synth.margin_auc("stress_tpd", below=5) < synth.margin_auc("stress_tpd") - 0.03
    with pytest.raises(ValueError, match="unknown continuous variable 'sex'"):
        synth.margin_auc("sex")


@pytest.fixture
def fresh_margins():
    synth.forget_margins()
    yield
    synth.forget_margins()


def test_the_recorded_margins_are_those_of_the_current_targets():
    # the committed data_manifest/margins.yaml holds a fit of every continuous variable for today's targets:
    # a change of a target (paper_values.yaml, the schema's range) needs `ctac-book calibrate --margins`
    recorded = manifest.margins_file()["variables"]
    assert list(recorded) == list(synth.CONTINUOUS)
    for variable, entry in recorded.items():
        assert entry["digest"] == synth.margin_digest(variable), variable
        assert len(entry["params"]) == (16 if variable == "cac_score" else 12)


def test_the_generator_reads_the_recorded_margins(monkeypatch, fresh_margins, caplog):
    recorded = manifest.margins_file()["variables"]
    params = [p + 0.01 for p in recorded["age"]["params"]]
    content = {"variables": {**recorded, "age": {"digest": synth.margin_digest("age"), "params": params}}}
    monkeypatch.setattr(manifest, "margins_file", lambda: content)
    fitted = []
    monkeypatch.setattr(synth, "fit_margins", lambda v: fitted.append(v) or synth._unfitted(v))
    assert synth.fitted_continuous("age").params.tolist() == params and fitted == []
    # a fit recorded for other targets is not used: the variable is fitted now, with a warning
    content["variables"]["bmi"] = {**recorded["bmi"], "digest": "0" * 64}
    with caplog.at_level("WARNING"):
        synth.fitted_continuous("bmi")
    assert fitted == ["bmi"] and "records no fit of bmi" in caplog.text
    content["variables"]["peak_hr"] = {**recorded["peak_hr"], "params": recorded["peak_hr"]["params"][:9]}
    with pytest.raises(ValueError, match="'peak_hr': 9 parameters"):
        synth.fitted_continuous("peak_hr")
    with pytest.raises(ValueError, match="not a continuous variable"):
        synth.margin_digest("sex")


def test_the_cohort_does_not_depend_on_the_machines_linear_algebra():
    # The cell fits land elsewhere with another BLAS kernel (the calcium score's cells by several percent):
    # with the recorded fits, the generator's fingerprint is the same whichever kernel OpenBLAS picks.
    import os
    import subprocess
    import sys

    code = "from ctac_helpers.cohort import synth; print(synth.generator_fingerprint())"
    digests = set()
    for kernel in (None, "Nehalem", "SandyBridge"):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if kernel:
            env["OPENBLAS_CORETYPE"] = kernel
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
