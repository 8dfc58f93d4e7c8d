import numpy as np
import pandas as pd
import pytest

from ctac_helpers import calibration, manifest, synth


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
    assert synth.cac_category([0, 0.5, 100, 100.1, 400, 401]).tolist() == ["0", "1-100", "1-100", "101-400", "101-400", ">400"]
