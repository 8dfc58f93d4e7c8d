import pytest

from ctac_helpers.core import manifest


def test_class_map_is_totalsegmentator_v2_total():
    cm = manifest.class_map()
    assert len(cm) == 117
    assert cm[51] == "heart" and cm[10] == "lung_upper_lobe_left" and cm[117] == "costal_cartilages"
    assert manifest.structure_id("aorta") == 52


def test_synthetic_structures_are_v2_names():
    names = set(manifest.class_map().values())
    st = manifest.synthetic_structures()
    assert set(st.index) <= names
    assert set(st["tissue"]) <= set(manifest.tissue_models())
    # the paper's frequency rule keeps 33 structures; kidneys and thyroid fall below it
    assert (st["p_present"] > 0.8).sum() == 33
    assert st.loc["kidney_left", "p_present"] < 0.8 and st.loc["thyroid_gland", "p_present"] < 0.8


def test_radiomics_feature_lists():
    allf = manifest.radiomics_features("all")
    sub = manifest.radiomics_features("subset15")
    assert len(allf) == 32 and len(set(allf)) == 32
    assert len(sub) == 15 and set(sub) <= set(allf)
    assert "StandardDeviation" not in allf and "Compactness1" not in allf
    with pytest.raises(ValueError, match="allowed"):
        manifest.radiomics_features("grey")


def test_feature_column_round_trip():
    col = manifest.feature_column("lung_lower_lobe_right", "10Percentile")
    assert col == "ct__lung_lower_lobe_right__10Percentile"
    assert manifest.parse_feature_column(col) == ("lung_lower_lobe_right", "10Percentile")
    with pytest.raises(ValueError, match="ct__<structure>__<feature>"):
        manifest.parse_feature_column("age")


def test_schema_has_22_spect_variables_and_known_columns():
    assert len(manifest.spect_variables()) == 22
    schema = manifest.cohort_schema()
    assert schema.index.is_unique
    assert {"patient_id", "age", "sex", "death", "followup_years", "cac_score"} <= set(schema.index)
    with pytest.raises(ValueError, match="allowed"):
        manifest.schema_column("height")


def test_paper_table_uses_corrected_values_where_paper_is_inconsistent():
    t1 = manifest.paper_table("table1")
    pharm = t1[(t1.variable == "stress_type") & (t1.level == "pharmacological") & (t1.group == "male")]
    assert pharm.set_index("statistic")["value"].to_dict() == {"n": 2902.0, "percent": 50.5}
    assert "do not add up" in pharm["note"].iloc[0]
    age = t1[(t1.variable == "age") & (t1.group == "all")].set_index("statistic")["value"]
    assert age.to_dict() == {"median": 65.0, "q1": 57.0, "q3": 73.0}
    with pytest.raises(ValueError, match="known ids"):
        manifest.paper_entry("table99")
