"""The analysed cohort: patient flow, the headline numbers and the cohort preview (cohort.flow)."""
import numpy as np
import pandas as pd

from ctac_helpers.cohort import flow as cohort


def test_patient_flow_and_headline(small_dataset):
    flow = cohort.patient_flow(1500)
    assert flow.loc[flow.step == "analysed", "book"].iloc[0] == 1500
    assert flow.loc[flow.step == "enrolled", "paper"].iloc[0] == 10983
    head = cohort.headline_numbers(small_dataset.cohort)
    assert head.loc[head.quantity == "Patients analysed", "book"].iloc[0] == 1500
    assert flow["book"].notna().sum() == 1 and (flow["note"] == "").all()


def test_patient_flow_counts_a_sites_exclusions():
    exclusions = pd.DataFrame({"reason": ["no_heart", "unreadable"], "what": ["", ""], "n": [2, 1]})
    flow = cohort.patient_flow(197, exclusions).set_index("step")
    assert flow.loc["remaining", "book"] == 200 and flow.loc["incomplete_ctac", "book"] == 3
    assert flow.loc["analysed", "book"] == 197 and flow.loc["incomplete_ctac", "note"] == "no_heart: 2, unreadable: 1"
    assert np.isnan(flow.loc["enrolled", "book"])
    none = cohort.patient_flow(200, exclusions.iloc[:0]).set_index("step")
    assert none.loc["incomplete_ctac", "book"] == 0 and none.loc["incomplete_ctac", "note"] == ""


def test_cohort_preview_reads_like_a_table_for_people():
    patients = pd.DataFrame({"patient_id": ["P1", "P2"], "age": [72.0, 64.5], "sex": ["male", "female"],
                             "race": ["white", None], "hypertension": [1, 0], "stress_tpd": [4.7300000001, 12.0],
                             "extra": [np.nan, 2.25]})
    view = cohort.preview(patients, n=5)
    assert list(view.columns) == ["column", "P1", "P2"]
    assert view.values.tolist() == [
        ["Age [years]", "72", "64.5"], ["Sex", "male", "female"], ["race", "white", "missing"],
        ["Hypertension", "yes", "no"], ["Stress total perfusion deficit [%]", "4.73", "12"], ["extra", "missing", "2.25"]]
