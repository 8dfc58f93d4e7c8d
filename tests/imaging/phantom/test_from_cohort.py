"""Phantoms of the synthetic cohort (imaging.phantom.from_cohort): parameters from cohort rows."""

import functools

import numpy as np
import pandas as pd

from ctac_helpers.cohort import synth
from ctac_helpers.imaging import phantom


@functools.lru_cache(maxsize=None)
def _cohort():
    params, make = phantom.phantom_cohort(12, 20240101, shape=(36, 160, 160), spacing=(2.5, 2.5, 6.0))
    truths = [make(i).truth for i in range(len(params))]
    return params, truths


def test_phantom_cohort_follows_the_synthetic_cohort():
    params, truths = _cohort()
    ds = synth.synthetic_dataset(200, 20240101)
    cohort = ds.cohort.iloc[:12]
    assert params["patient_id"].tolist() == cohort["patient_id"].tolist()
    assert (params["noise_hu"] == cohort["ct_protocol"].map(synth.PROTOCOL_NOISE_HU)).all()
    assert (params["hu_offset"] == cohort["site"].map(synth.SITE_HU_OFFSET)).all()
    np.testing.assert_allclose(params["eat_volume_ml"], cohort["eat_volume"])
    np.testing.assert_allclose(params["eat_density_hu"], cohort["eat_density"] + phantom.EAT_DENSITY_SHIFT_HU)
    drivers = synth.ct_drivers(ds.cohort, ds.latent).iloc[:12]
    np.testing.assert_allclose(params["driver_lung"], drivers["lung"])
    eat = np.array([t["eat_volume_ml"] for t in truths])
    dens = np.array([t["eat_tissue_density_hu"] for t in truths])
    cac = np.array([t["agatston"] for t in truths])
    lung_hu = np.array([t["structures"]["lung_lower_lobe_left"]["mean_hu"] - o
                        for t, o in zip(truths, params["hu_offset"])])
    heart = np.array([t["structures"]["heart"]["volume_ml"] for t in truths])
    assert np.corrcoef(eat, cohort["eat_volume"])[0, 1] > 0.95
    assert np.corrcoef(dens, cohort["eat_density"])[0, 1] > 0.95
    assert np.corrcoef(heart, params["heart_volume_ml"])[0, 1] > 0.95
    assert np.corrcoef(lung_hu, params["lung_hu"])[0, 1] > 0.95
    assert np.corrcoef(params["lung_hu"], drivers["lung"])[0, 1] < -0.5
    # CAC: zero stays zero, any calcium gives calcium, and the ranks follow the cohort's.
    zero = cohort["cac_score"].to_numpy() == 0
    assert (cac[zero] == 0).all() and (cac[~zero] > 0).all()
    assert pd.Series(cac[~zero]).corr(pd.Series(cohort["cac_score"].to_numpy()[~zero]), method="spearman") > 0.8


def test_phantom_cohort_default_grid_is_the_sites():
    params, make = phantom.phantom_cohort(5, 7)
    # A patient's parameters do not depend on the other patients in the table.
    pd.testing.assert_frame_equal(params.iloc[2:4].reset_index(drop=True),
                                  phantom.phantom_cohort(4, 7)[0].iloc[2:4].reset_index(drop=True))
    vox = np.array([synth.SITE_VOXEL_MM[s] for s in params["site"]])
    np.testing.assert_allclose(params[["spacing_x", "spacing_y", "spacing_z"]], vox)
    assert (params["ny"] == 512).all()
    np.testing.assert_allclose(params["nz"] * params["spacing_z"], params["coverage_mm"], atol=3.0)
    rows = list(phantom.iter_phantoms(params.iloc[:0]))
    assert rows == []
