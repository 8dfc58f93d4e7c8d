"""The cohort's fit report: every published number beside the synthetic cohort's (cohort.fit_report)."""
import pandas as pd
import pytest

from ctac_helpers.cohort import fit_report as calibration


def test_calibration_report_flags_misses(small_dataset):
    c = small_dataset.cohort.copy()
    report = calibration.calibration_report(c)
    assert {"paper", "synthetic", "difference", "tolerance", "within"} <= set(report.columns)
    c["age"] = c["age"] + 10  # a cohort ten years older must fail the age rows
    bad = calibration.calibration_report(c)
    age_rows = bad[bad.variable == "age"]
    assert not age_rows["within"].any()
    assert calibration.quantile_tolerance(65, "age") == pytest.approx(3.25)
    assert calibration.quantile_tolerance(0.58, "stress_shape_index_ed") == pytest.approx(0.029)


def test_calibration_rows_read_as_text():
    report = pd.DataFrame([
        {"source": "table1", "variable": "age", "level": "", "group": "male", "statistic": "median", "paper": 64.0,
         "synthetic": 65.04, "difference": 1.04, "tolerance": 3.2, "within": True, "note": ""},
        {"source": "table2", "variable": "smoking", "level": "", "group": "death", "statistic": "percent",
         "paper": 20.7, "synthetic": 22.222, "difference": 1.522, "tolerance": 1.5, "within": False, "note": ""}])
    view = calibration.readable(report)
    assert view.values.tolist() == [
        ["table1", "Age [years], male: median", "64", "65.0", "+1.04", "±3.20", "yes"],
        ["table2", "Smoking, death: %", "20.7", "22.2", "+1.52", "±1.50", "no"]]
