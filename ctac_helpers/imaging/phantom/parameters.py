"""The parameters a phantom is drawn from: the reference patient, the CTAC grid and the filling-in of defaults.

A phantom is a pure function of a flat mapping of numbers and strings (the keys of
:data:`DEFAULT_PARAMETERS`), a seed and a grid. Any subset of the keys will do: missing or NaN values
take the reference patient's. Where the values come from (the synthetic cohort, through
:mod:`ctac_helpers.imaging.phantom.from_cohort`, or a hand-written record) is no concern of the drawing
code, which reads nothing else.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

# The grid of a CTAC volume: (z, y, x) voxels and (x, y, z) voxel size in mm.
CTAC_SHAPE = (80, 512, 512)
CTAC_SPACING = (0.98, 0.98, 3.0)

# The reference patient (male, BMI 29, 65 years, every driver 0). Missing keys of ``params``
# take these values.
DEFAULT_PARAMETERS: dict = {
    "sex": "male", "age": 65.0, "bmi": 29.0, "site": "Yale", "ct_protocol": "low_dose_120kvp",
    "noise_hu": 15.0, "hu_offset": 0.0,
    "body_width_mm": 330.0, "body_depth_mm": 250.0, "subcut_fat_mm": 16.0, "muscle_mm": 12.0,
    "height_scale": 1.0,
    "heart_volume_ml": 620.0, "lung_volume_ml": 5550.0, "aorta_scale": 1.0, "liver_volume_ml": 1650.0,
    "spleen_volume_ml": 210.0, "stomach_volume_ml": 350.0, "autochthon_scale": 1.0,
    "heart_hu": 38.0, "blood_hu": 40.0, "aorta_hu": 42.0, "lung_hu": -845.0, "muscle_hu": 44.0,
    "liver_hu": 56.0, "spleen_hu": 48.0, "soft_hu": 35.0, "cord_hu": 32.0, "bone_hu": 320.0,
    "vertebra_hu": 270.0, "cartilage_hu": 150.0, "fat_hu": -100.0,
    "eat_volume_ml": 130.0, "eat_density_hu": -100.0, "paracardial_fat_ml": 60.0,
    "cac_score": 0.0, "aortic_calcium": 2.0, "fov_z_shift_mm": 15.0,
}


def fill_defaults(params: Mapping) -> dict:
    """The parameters a phantom is drawn with: ``params`` over :data:`DEFAULT_PARAMETERS`.

    Parameters
    ----------
    params : mapping
        Any subset of the keys of :data:`DEFAULT_PARAMETERS` (other keys are kept and ignored by the
        drawing); None or NaN values take the reference patient's value.

    Returns
    -------
    dict
        Every key of :data:`DEFAULT_PARAMETERS`, numpy scalars as Python values and the numeric
        parameters as ``float``.
    """
    p = dict(DEFAULT_PARAMETERS)
    for k, v in dict(params).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        p[k] = v.item() if isinstance(v, np.generic) else v
    for k, v in DEFAULT_PARAMETERS.items():
        if isinstance(v, float):
            p[k] = float(p[k])
    return p


def json_values(obj):
    """``obj`` with numpy scalars as Python values, NaN as None and keys as strings, nested.

    Parameters
    ----------
    obj : object
        A dict, list, tuple or scalar, nested to any depth.

    Returns
    -------
    object
        The same structure, ready for :func:`json.dumps` (tuples become lists).
    """
    if isinstance(obj, dict):
        return {str(k): json_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_values(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def filled_parameters(params: Mapping | None) -> dict:
    """The parameters a phantom is built with, as JSON values.

    Parameters
    ----------
    params : mapping or None
        Phantom parameters as :func:`ctac_helpers.imaging.phantom.build.ctac_phantom` takes them (any
        subset of :data:`DEFAULT_PARAMETERS`; missing or NaN values take the reference patient's values).

    Returns
    -------
    dict
        Every key of :data:`DEFAULT_PARAMETERS` (and any other key given), with numpy scalars turned into
        Python numbers: two mappings that build the same phantom give equal dicts (the phantom cache's
        key, :mod:`ctac_helpers.imaging.phantom_cache`).
    """
    return json_values(fill_defaults({} if params is None else params))
