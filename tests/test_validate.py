import numpy as np
import pytest

from ctac_helpers.validate import ValidationError, require_valid_cohort, validate_cohort


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
