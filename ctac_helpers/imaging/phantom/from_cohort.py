"""Where the synthetic cohort meets the phantoms: a phantom's parameters from a patient's cohort row.

This is the only module of :mod:`ctac_helpers.imaging.phantom` that reads the cohort generator
(:mod:`ctac_helpers.cohort.synth`); the drawing code takes the plain parameters this module writes
(a DataFrame row or any mapping), so the two meet through data (a contract in ``pyproject.toml``
keeps it so). :func:`phantom_parameters` turns cohort rows and their CT drivers into a parameter
table; :func:`phantom_cohort` draws a synthetic cohort and returns its table and a builder.

EAT density. The phantom's epicardial fat is homogeneous adipose tissue with a mild texture. Its
density is the cohort's EAT density shifted by :data:`EAT_DENSITY_SHIFT_HU` (-65 -> -100 HU): real
measurements are higher than pure fat because partial-volume voxels at the myocardium and vessel
borders enter the window, which the phantom does not model; the shift keeps the fat far enough
inside the window that noise moves the measured volume and density only slightly, and it keeps the
differences between patients. Only slightly: at ultra-low-dose noise (28 HU) heart voxels pushed
below -30 HU enter the measure, and the measured EAT exceeds the truth by a few percent (+4% and
+3 HU median on the synthetic cohort, more for small EAT volumes), exactly as a Gaussian noise
model predicts from the noise-free image.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pandas as pd
from scipy import special

from ctac_helpers.cohort import synth
from ctac_helpers.core import manifest
from ctac_helpers.imaging.phantom.anatomy import LUNG_LOBES
from ctac_helpers.imaging.phantom.build import Phantom, phantom_from_row
from ctac_helpers.imaging.phantom.lesions import MAX_PHANTOM_CAC

# The phantom's EAT density is the cohort's shifted by this much (HU; see the module notes).
EAT_DENSITY_SHIFT_HU = -35.0


def _effect(tissue: dict, param: str, drivers: pd.DataFrame) -> np.ndarray:
    total = np.zeros(len(drivers))
    for driver, coef in tissue.get("effects", {}).get(param, {}).items():
        total += coef * drivers[driver].to_numpy(float)
    return total


def _target_volume(name: str, drivers: pd.DataFrame) -> np.ndarray:
    """The synthetic feature model's expected volume (mL) of a structure, without its random jitter."""
    st = manifest.synthetic_structures().loc[name]
    tissue = manifest.tissue_models()[st["tissue"]]
    female = drivers["female"].to_numpy(float)
    return (st["volume_ml"] * np.where(female == 1, st["female_ratio"], 1.0)
            * np.exp(_effect(tissue, "log_volume", drivers)))


def _tissue_hu(tissue: str, drivers: pd.DataFrame) -> np.ndarray:
    t = manifest.tissue_models()[tissue]
    return t["hu_mean"] + _effect(t, "hu_mean", drivers)


def phantom_parameters(cohort: pd.DataFrame, drivers: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Phantom parameters for every patient of a synthetic cohort.

    Parameters
    ----------
    cohort : pandas.DataFrame
        Synthetic cohort rows (:func:`ctac_helpers.cohort.synth.synthetic_dataset`'s ``cohort``).
    drivers : pandas.DataFrame
        Their CT drivers (:func:`ctac_helpers.cohort.synth.ct_drivers`), row-aligned with ``cohort``.
    seed : int
        Seed of the per-patient draws (pose jitter, coverage, phantom seeds).

    Returns
    -------
    pandas.DataFrame
        One row per patient: identifiers, grid (``nz, ny, nx, spacing_x/y/z`` from the site's voxel
        size and an axial coverage of about 29 cm), ``noise_hu`` (the protocol's SD),
        ``hu_offset`` (the site's), body size (sex, BMI), organ volumes and tissue HU from the
        synthetic feature model (:func:`ctac_helpers.core.manifest.tissue_models`) at the patient's
        drivers, ``eat_volume_ml`` (the cohort's EAT volume), ``eat_density_hu`` (its density +
        :data:`EAT_DENSITY_SHIFT_HU`), ``cac_score`` (the cohort's, capped at
        :data:`~ctac_helpers.imaging.phantom.lesions.MAX_PHANTOM_CAC`), ``aortic_calcium``
        (expected aortic plaques, from the atherosclerosis driver), ``fov_z_shift_mm`` and
        ``phantom_seed``, and ``driver_*`` copies of the drivers.
    """

    cohort = cohort.reset_index(drop=True)
    drivers = drivers.reset_index(drop=True)
    if len(cohort) != len(drivers):
        raise ValueError(f"cohort ({len(cohort)} rows) and drivers ({len(drivers)} rows) differ in length")
    # Per-patient draws keyed by the patient id: a patient's phantom does not depend on which
    # other patients are in the table.
    draws = np.array([np.random.default_rng(np.random.SeedSequence([int(seed), 1000, zlib.crc32(str(pid).encode())]))
                      .standard_normal(4) for pid in cohort["patient_id"]]).reshape(-1, 4)
    female = drivers["female"].to_numpy(float) == 1
    bmi = cohort["bmi"].to_numpy(float)
    site = cohort["site"].to_numpy()
    vox = np.array([synth.SITE_VOXEL_MM[s] for s in site], float)
    coverage = np.clip(290.0 + 20.0 * draws[:, 0], 240.0, 340.0)
    fov_shift = np.clip(15.0 + 15.0 * draws[:, 1], -coverage / 2 + 75.0, coverage / 2 - 75.0)
    muscle = np.exp(_effect(manifest.tissue_models()["muscle"], "log_volume", drivers))
    lungs = sum(_target_volume(n_, drivers) for n_ in LUNG_LOBES)
    d = drivers
    out = pd.DataFrame({
        "patient_id": cohort["patient_id"].to_numpy(),
        "phantom_seed": (np.floor(special.ndtr(draws[:, 3]) * (2 ** 31 - 1))).astype(np.int64),
        "sex": cohort["sex"].to_numpy(), "age": cohort["age"].to_numpy(float), "bmi": bmi,
        "site": site, "ct_protocol": cohort["ct_protocol"].to_numpy(),
        "spacing_x": vox[:, 0], "spacing_y": vox[:, 1], "spacing_z": vox[:, 2],
        "nz": np.round(coverage / vox[:, 2]).astype(int), "ny": 512, "nx": 512,
        "coverage_mm": coverage,
        "noise_hu": cohort["ct_protocol"].map(synth.PROTOCOL_NOISE_HU).to_numpy(float),
        "hu_offset": pd.Series(site).map(synth.SITE_HU_OFFSET).to_numpy(float),
        "height_scale": np.where(female, 0.93, 1.0),
        "body_width_mm": 330.0 * (bmi / 29.0) ** 0.45 * np.where(female, 0.92, 1.0),
        "body_depth_mm": 250.0 * (bmi / 29.0) ** 0.55 * np.where(female, 0.95, 1.0),
        "subcut_fat_mm": 16.0 * (bmi / 29.0) ** 1.8 * np.where(female, 1.35, 1.0),
        "muscle_mm": 12.0 * muscle,
        "autochthon_scale": _target_volume("autochthon_left", drivers) / 320.0,
        "heart_volume_ml": _target_volume("heart", drivers),
        "lung_volume_ml": lungs,
        "aorta_scale": (_target_volume("aorta", drivers) / 160.0) ** 0.4,
        "liver_volume_ml": _target_volume("liver", drivers),
        "spleen_volume_ml": _target_volume("spleen", drivers),
        "stomach_volume_ml": _target_volume("stomach", drivers),
        "heart_hu": _tissue_hu("heart", d), "blood_hu": _tissue_hu("blood", d), "aorta_hu": _tissue_hu("aorta", d),
        "lung_hu": _tissue_hu("lung", d), "muscle_hu": _tissue_hu("muscle", d), "liver_hu": _tissue_hu("liver", d),
        "spleen_hu": _tissue_hu("spleen", d), "soft_hu": _tissue_hu("soft", d), "cord_hu": _tissue_hu("cord", d),
        "bone_hu": _tissue_hu("bone", d), "vertebra_hu": _tissue_hu("vertebra", d),
        "cartilage_hu": _tissue_hu("cartilage", d),
        "fat_hu": (-100.0 + 4.0 * np.clip(d["age"].to_numpy(float), -2, 2)
                   - 3.0 * np.clip(d["adiposity"].to_numpy(float), -2, 2)),
        "eat_volume_ml": cohort["eat_volume"].to_numpy(float),
        "eat_density_hu": cohort["eat_density"].to_numpy(float) + EAT_DENSITY_SHIFT_HU,
        "paracardial_fat_ml": 55.0 * np.exp(0.35 * d["adiposity"].to_numpy(float) + 0.25 * d["bmi"].to_numpy(float)
                                            + 0.15 * draws[:, 2]),
        "cac_score": np.minimum(cohort["cac_score"].to_numpy(float), MAX_PHANTOM_CAC),
        "aortic_calcium": np.clip(1.5 + 2.0 * d["athero"].to_numpy(float) + 1.0 * d["age"].to_numpy(float), 0, 12),
        "fov_z_shift_mm": fov_shift,
    })
    for col in drivers.columns:
        out[f"driver_{col}"] = drivers[col].to_numpy(float)
    return out


def phantom_cohort(n: int, seed: int, shape=None, spacing=None) -> tuple[pd.DataFrame, Callable[[int], Phantom]]:
    """Phantom parameters for ``n`` synthetic patients and a function that builds one phantom.

    The patients are the first ``n`` rows of ``synth.synthetic_dataset(max(n, 200), seed)`` (the
    generator's minimum size is 200; its rows are in random order), so phantoms inherit the
    cohort's latent drivers and with them its mortality signal.

    Parameters
    ----------
    n : int
        Number of phantoms.
    seed : int
        Seed of the synthetic cohort and of the phantom parameters.
    shape : (int, int, int), optional
        Grid of every phantom; by default 512 x 512 in-plane and as many slices as the patient's
        axial coverage needs at its slice thickness.
    spacing : (float, float, float), optional
        Voxel size of every phantom; by default the site's (:data:`ctac_helpers.cohort.synth.SITE_VOXEL_MM`).

    Returns
    -------
    params : pandas.DataFrame
        :func:`phantom_parameters`' table (grid columns set as requested).
    make : callable
        ``make(i, keep_clean=False) -> Phantom`` for row ``i``: phantoms are built one at a time,
        so only one volume needs to be in memory (see also :func:`~ctac_helpers.imaging.phantom.build.iter_phantoms`).
    """

    ds = synth.synthetic_dataset(max(int(n), 200), seed)
    drivers = synth.ct_drivers(ds.cohort, ds.latent).iloc[: int(n)]
    params = phantom_parameters(ds.cohort.iloc[: int(n)], drivers, seed)
    if spacing is not None:
        params["spacing_x"], params["spacing_y"], params["spacing_z"] = (float(s) for s in spacing)
        params["nz"] = np.round(params["coverage_mm"] / float(spacing[2])).astype(int)
    if shape is not None:
        params["nz"], params["ny"], params["nx"] = (int(s) for s in shape)

    def make(i: int, keep_clean: bool = False) -> Phantom:
        return phantom_from_row(params.iloc[int(i)], keep_clean=keep_clean)

    return params, make
