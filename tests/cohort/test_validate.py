import ast
import datetime

import numpy as np
import papermill
import pytest

from ctac_helpers.pipeline import config
from ctac_helpers.core import manifest
from ctac_helpers.models import cv as models
from ctac_helpers.pipeline import runner
from ctac_helpers.imaging import segment
from ctac_helpers.core import stages
from ctac_helpers.cohort import validate
from ctac_helpers.cohort.validate import ValidationError, require_valid_cohort, validate_cohort


@pytest.fixture()
def cohort(small_dataset):
    return small_dataset.cohort.copy()


def errors(problems):
    return [p for p in problems if p.severity == "error"]


def test_synthetic_cohort_is_valid(cohort):
    assert errors(validate_cohort(cohort)) == []
    assert require_valid_cohort(cohort) is cohort


def test_missing_required_column(cohort):
    probs = errors(validate_cohort(cohort.drop(columns=["age"]), "site.csv"))
    assert len(probs) == 1
    assert probs[0].column == "age" and "column missing" in str(probs[0]) and "site.csv" in str(probs[0])


def test_unknown_column_is_a_warning(cohort):
    probs = validate_cohort(cohort.assign(height=170))
    assert [p.severity for p in probs if p.column == "height"] == ["warning"]


def test_out_of_range_value_names_row_column_value_and_range(cohort):
    cohort.loc[4, "bmi"] = 95.0
    (p,) = errors(validate_cohort(cohort, "c.csv"))
    assert (p.file, p.row, p.column, p.value) == ("c.csv", 6, "bmi", "95.0")
    assert "[12, 80] kg/m2" in p.expected


def test_wrong_unit_is_caught_by_the_median(cohort):
    cohort["stress_tpd"] = cohort["stress_tpd"] / 100  # given as a fraction
    msgs = [str(p) for p in errors(validate_cohort(cohort))]
    assert any("stress_tpd" in m and "another unit" in m for m in msgs)
    cohort2 = cohort.copy()
    cohort2["stress_tpd"] = cohort2["stress_tpd"] * 100
    cohort2["age"] = cohort2["age"] * 12  # months
    assert any(p.column == "age" for p in errors(validate_cohort(cohort2)))


def test_types_categories_flags_duplicates_and_deaths_without_time(cohort):
    cohort["age"] = cohort["age"].astype(object)
    cohort.loc[0, "age"] = "sixty"
    cohort.loc[1, "sex"] = "M"
    cohort.loc[2, "diabetes"] = 2
    cohort.loc[3, "patient_id"] = cohort.loc[5, "patient_id"]
    dead = cohort.index[cohort["death"] == 1][0]
    cohort.loc[dead, "followup_years"] = np.nan
    with pytest.raises(ValidationError) as exc:
        require_valid_cohort(cohort, "c.csv")
    msg = str(exc.value)
    assert "column 'age': got 'sixty'; expected a number" in msg
    assert "column 'sex': got 'M'; expected one of ['male', 'female']" in msg
    assert "column 'diabetes': got 2" in msg and "0 or 1" in msg
    assert "a unique patient id" in msg
    assert "time to death" in msg
    assert len(exc.value.problems) >= 6


# -- the stages' declared parameters ----------------------------------------------------------------
@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_every_notebook_declares_typed_parameters_whose_defaults_it_accepts(stage):
    specs = validate.read_parameter_specs(runner.NOTEBOOKS_DIR / stage.notebook)
    assert specs and all(s.type in ("int", "float", "str", "bool", "list") for s in specs.values())
    for name, entry in papermill.inspect_notebook(str(runner.NOTEBOOKS_DIR / stage.notebook)).items():
        assert specs[name].accepts(ast.literal_eval(entry["default"])), (stage.notebook, name)


def test_declared_choices_are_the_codes_own():
    specs = {s.name: validate.read_parameter_specs(runner.NOTEBOOKS_DIR / s.notebook) for s in stages.STAGES}
    assert set(specs["segmentation"]["segmenter"].choices) == set(segment.SEGMENTERS)
    assert set(specs["segmentation"]["site_segmenter"].choices) == set(segment.SEGMENTERS) - {"phantom"}
    for stage in ("subgroups", "survival"):
        assert set(specs[stage]["model"].choices) == set(models.FEATURE_SETS)
    assert set(specs["models"]["radiomics_subset"].choices) == {"subset15", "all"}
    for subset in specs["models"]["radiomics_subset"].choices:
        assert manifest.radiomics_features(subset)


@pytest.mark.parametrize("profile", config.list_profiles())
def test_the_profiles_set_only_valid_parameters(profile):
    cfg = config.load_config(profile)
    layers = config.config_layers(profile)
    assert validate.config_parameter_problems(cfg, stages.STAGES, runner.NOTEBOOKS_DIR, layers) == []


@pytest.mark.parametrize("help_text, value, ok", [
    ("rows [at least 2]", 2, True), ("rows [at least 2]", 1, False), ("rows [at least 2]", True, False),
    ("rows [at least 2]", 2.0, False), ("share [0 to 1]", 1, True), ("share [0 to 1]", 1.5, False),
    ("share [0 to 1]", float("nan"), False), ("level [more than 0, less than 1]", 0, False),
    ("grid [3 integers, each at least 8]", [8, 9, 10], True), ("grid [3 integers, each at least 8]", [8, 9], False),
    ("grid [3 integers, each at least 8]", [8, 9, 7], False), ("mode [one of: a, b]", "b", True),
    ("mode [one of: a, b]", "c", False), ("no constraint", "anything", True),
])
def test_parameter_constraints(help_text, value, ok):
    kind = "list" if "integers" in help_text else "str" if "one of" in help_text or "no constraint" in help_text \
        else "int" if "rows" in help_text else "float"
    spec = validate.parse_parameter("p", {"inferred_type_name": kind, "help": help_text}, "nb.ipynb")
    assert spec.accepts(value) is ok


def test_an_unreadable_constraint_is_refused():
    with pytest.raises(ValueError, match=r"nb.ipynb: parameter 'p': cannot read the constraint \[>= 2\]"):
        validate.parse_parameter("p", {"inferred_type_name": "int", "help": "x [>= 2]"}, "nb.ipynb")


# -- cell values and images -------------------------------------------------------------------------
@pytest.mark.parametrize("text, hint", [
    ("27,5", "a decimal comma: write 27.5"), ("62 %", "write 62 without '%'"), ("61 yrs", "without the unit 'yrs'"),
    ("2024-02-30", ""), ("01/02/2099", "a date in the future"), ("NULL", "leave the cell empty"),
    ("#VALUE!", "error value"), ("sixty", ""),
])
def test_number_hints(text, hint):
    got = validate.number_hint(text, "years", nullable=True, today=datetime.date(2025, 1, 1))
    assert (hint in got) if hint else got == ""


def test_voxel_checks_name_nan_slices_inf_and_constant_volumes():
    arr = np.zeros((6, 4, 4), np.float32)
    arr[0] = 1.0
    assert validate.nonfinite_voxels(arr) is None and validate.constant_volume(arr) is None
    arr[2:4, 1, 1] = np.nan
    arr[5, 0, 0] = np.inf
    assert validate.nonfinite_voxels(arr) == ("2 NaN and 1 infinite voxel(s) in 3 of 6 slices (slice 3-4, 6, counted "
                                              "from 1 in the file's order)")
    assert validate.nonfinite_voxels(np.full((2, 2, 2), np.nan)).startswith("every voxel is NaN")
    assert validate.nonfinite_voxels(np.zeros((2, 2), np.int16)) is None
    assert validate.constant_volume(np.full((3, 3, 3), -1024, np.int16)).startswith("every voxel is -1024")


def test_label_value_checks():
    labels = np.zeros((4, 4, 4), np.int16)
    labels[1] = 51
    assert validate.label_value_problem(labels) is None and validate.heart_problem(labels) is None
    labels[0, 0, 0] = 118
    assert "outside the class map (118)" in validate.label_value_problem(labels)
    labels[0, 0, 0] = -3
    assert "negative label values (-3)" in validate.label_value_problem(labels)
    assert "negative" in validate.label_value_problem(labels, "mask")
    assert validate.label_value_problem(np.full((2, 2), 300, np.uint16), "mask") is None
    assert "must be integers" in validate.label_value_problem(np.full((2, 2), 0.5))
    assert validate.heart_problem(np.full((2, 2), 52)) == "no heart (class 51 'heart' has no voxel)"
    with pytest.raises(ValueError, match="allowed: 'labels', 'mask'"):
        validate.label_value_problem(labels, "masks")
