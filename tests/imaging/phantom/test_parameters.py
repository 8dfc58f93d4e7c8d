"""The parameters a phantom is drawn from (imaging.phantom.parameters)."""

import json

import numpy as np

from ctac_helpers.imaging import phantom


def test_filled_parameters_are_json_values_with_the_defaults():
    filled = phantom.filled_parameters({"cac_score": np.float64(250.0), "age": float("nan"), "noise_hu": None})
    assert filled["cac_score"] == 250.0 and type(filled["cac_score"]) is float
    # NaN and None take the reference patient's value, as ctac_phantom does
    assert filled["age"] == phantom.DEFAULT_PARAMETERS["age"]
    assert filled["noise_hu"] == phantom.DEFAULT_PARAMETERS["noise_hu"]
    assert set(filled) == set(phantom.DEFAULT_PARAMETERS)
    json.dumps(filled, allow_nan=False)
    assert phantom.filled_parameters(None) == phantom.filled_parameters({})
