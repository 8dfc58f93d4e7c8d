"""Tests of ctac_helpers.results.subgroups: subgroup masks, per-subgroup AUCs and per-site AUCs vs a reference."""

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ctac_helpers.stats import delong
from ctac_helpers.cohort import synth
from ctac_helpers.results import subgroups as sg

# --- a hand-made 8-patient cohort -----------------------------------------------------------
#  idx  sex     age   race    site
#   0   male    50    black   Yale
#   1   female  64.9  white   Yale
#   2   male    65    None    Calgary   (age exactly 65: ">=65"; race not recorded)
#   3   female  70    asian   Calgary   (neither Black nor White)
#   4   male    NaN   white   Ottawa    (age missing: in neither age group)
#   5   female  80    black   None
#   6   male    40    NaN     Yale
#   7   female  66    white   Ottawa
SMALL = pd.DataFrame({
    "sex": ["male", "female", "male", "female", "male", "female", "male", "female"],
    "age": [50, 64.9, 65, 70, np.nan, 80, 40, 66],
    "race": ["black", "white", None, "asian", "white", "black", np.nan, "white"],
    "site": ["Yale", "Yale", "Calgary", "Calgary", "Ottawa", None, "Yale", "Ottawa"],
})


def _b(*bits):
    return np.array(bits, dtype=bool)


def test_masks_of_small_cohort():
    m = sg.subgroup_masks(SMALL)
    assert list(m) == ["sex", "age", "race"]
    assert list(m["sex"]) == ["male", "female"] and list(m["age"]) == ["<65", ">=65"]
    assert list(m["race"]) == ["black", "white"]
    np.testing.assert_array_equal(m["sex"]["male"], _b(1, 0, 1, 0, 1, 0, 1, 0))
    np.testing.assert_array_equal(m["sex"]["female"], _b(0, 1, 0, 1, 0, 1, 0, 1))
    np.testing.assert_array_equal(m["age"]["<65"], _b(1, 1, 0, 0, 0, 0, 1, 0))
    np.testing.assert_array_equal(m["age"][">=65"], _b(0, 0, 1, 1, 0, 1, 0, 1))
    np.testing.assert_array_equal(m["race"]["black"], _b(1, 0, 0, 0, 0, 1, 0, 0))
    np.testing.assert_array_equal(m["race"]["white"], _b(0, 1, 0, 0, 1, 0, 0, 1))
    for sides in m.values():
        assert all(v.dtype == bool and v.shape == (8,) for v in sides.values())


def test_masks_ignore_the_index_and_support_other_rules():
    cohort = SMALL.set_index(pd.Index([10, 3, 7, 1, 0, 5, 2, 9]))
    defs = {"site": {"column": "site", "levels": (("yale", "==", "Yale"), ("other", "!=", "Yale"))},
            "old": {"column": "age", "levels": (("le70", "<=", 70), ("gt70", ">", 70))}}
    m = sg.subgroup_masks(cohort, defs)
    np.testing.assert_array_equal(m["site"]["yale"], _b(1, 1, 0, 0, 0, 0, 1, 0))
    # A missing site matches no rule, not even "!=".
    np.testing.assert_array_equal(m["site"]["other"], _b(0, 0, 1, 1, 1, 0, 0, 1))
    np.testing.assert_array_equal(m["old"]["le70"], _b(1, 1, 1, 1, 0, 0, 1, 1))
    np.testing.assert_array_equal(m["old"]["gt70"], _b(0, 0, 0, 0, 0, 1, 0, 0))


def test_subgroups_constant_matches_synthetic_cohort_coding():
    assert {lv[2] for lv in sg.SUBGROUPS["sex"]["levels"]} == set(synth.PAPER_DEATHS)
    assert {lv[2] for lv in sg.SUBGROUPS["race"]["levels"]} <= set(synth.RACE_SHARE)
    with pytest.raises(TypeError):
        sg.SUBGROUPS["sex"] = {}


@pytest.mark.parametrize("cohort, defs, match", [
    (SMALL.drop(columns="race"), sg.SUBGROUPS, "comparison 'race': column 'race' not in the cohort"),
    (SMALL.assign(sex=SMALL["sex"].str[0].str.upper()), sg.SUBGROUPS,
     r"value 'male' does not occur in column 'sex'; observed levels: \['F', 'M'\]"),
    (SMALL.assign(age=SMALL["age"].astype(str)), sg.SUBGROUPS, "operator '<' needs a numeric column"),
    (SMALL, {"x": {"column": "age", "levels": (("a", "~", 1), ("b", ">=", 1))}}, "unknown operator '~'"),
    (SMALL, {"x": {"column": "age", "levels": (("young", "<", 70), ("old", ">=", 65))}},
     r"levels 'young' and 'old' share 2 patient\(s\)"),
    (SMALL, {"x": {"column": "age", "levels": (("a", "<", 65), ("a", ">=", 65))}}, "distinct labels"),
    (SMALL, {"x": {"column": "age", "levels": (("a", "<", 65),)}}, "levels must be two"),
    (SMALL, {"x": {"column": "age", "levels": (("a", "<"), ("b", ">=", 65))}}, "levels must be two"),
    (SMALL, {"x": {"column": "age"}}, "must be a mapping with keys 'column' and 'levels'"),
    (SMALL, {}, "definitions must be a non-empty mapping"),
])
def test_mask_errors(cohort, defs, match):
    with pytest.raises(ValueError, match=match):
        sg.subgroup_masks(cohort, defs)


# --- subgroup_auc ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n = 300
    cohort = pd.DataFrame({
        "sex": rng.choice(["male", "female"], n),
        "age": rng.integers(40, 90, n).astype(float),
        "race": rng.choice(np.array(["black", "white", "asian", None], dtype=object), n,
                           p=[.25, .4, .1, .25]),
        "site": rng.choice(np.array(["Yale", "Calgary", "Ottawa", "Columbia", None], dtype=object), n,
                           p=[.3, .25, .2, .2, .05]),
    })
    x = rng.normal(size=n)
    y = (x + rng.normal(scale=0.3, size=n) > 0.7).astype(int)
    # Stronger signal in men, and scores rounded to give ties.
    score = np.round(x + rng.normal(scale=np.where(cohort["sex"] == "male", 0.5, 2.0)), 1)
    return cohort, y, score


def _expected_masks(cohort):
    return [("sex", "male", cohort["sex"] == "male"), ("sex", "female", cohort["sex"] == "female"),
            ("age", "<65", cohort["age"] < 65), ("age", ">=65", cohort["age"] >= 65),
            ("race", "black", cohort["race"] == "black"), ("race", "white", cohort["race"] == "white")]


def test_subgroup_auc_against_sklearn_and_delong(data):
    cohort, y, score = data
    out = sg.subgroup_auc(y, score, cohort)
    assert list(out.columns) == ["comparison", "subgroup", "n", "events", "auc", "ci_low", "ci_high", "p"]
    expected = _expected_masks(cohort)
    assert list(zip(out["comparison"], out["subgroup"])) == [(c, s) for c, s, _ in expected]
    for (_, row), (_, _, mask) in zip(out.iterrows(), expected):
        m = mask.to_numpy()
        assert (row["n"], row["events"]) == (m.sum(), y[m].sum())
        assert row["auc"] == pytest.approx(roc_auc_score(y[m], score[m]), abs=1e-12)
        ci = delong.auc_ci_delong(y[m], score[m])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.ci_low, ci.ci_high), abs=1e-12)
        assert row["ci_low"] < row["auc"] < row["ci_high"]
    # Race: only Black and White patients with race recorded.
    assert out["n"].iloc[4] + out["n"].iloc[5] == cohort["race"].isin(["black", "white"]).sum()
    assert out["n"].iloc[4] + out["n"].iloc[5] < len(cohort)
    for i in (0, 2, 4):
        (_, _, ma), (_, _, mb) = expected[i], expected[i + 1]
        ma, mb = ma.to_numpy(), mb.to_numpy()
        p = delong.delong_test_unpaired(y[ma], score[ma], y[mb], score[mb]).p_value
        assert out["p"].iloc[i] == out["p"].iloc[i + 1] == pytest.approx(p, abs=1e-12)
    # The simulated signal is stronger in men: a clear sex difference.
    assert out["auc"].iloc[0] > out["auc"].iloc[1] and out["p"].iloc[0] < 0.01


def test_subgroup_auc_mask_forms_and_level(data):
    cohort, y, score = data
    male = (cohort["sex"] == "male").to_numpy()
    tup = sg.subgroup_auc(y, score, {"sex": (male, ~male)})
    assert list(tup["subgroup"]) == ["a", "b"]
    named = sg.subgroup_auc(y, score, {"sex": {"m": male, "f": ~male}})
    assert list(named["subgroup"]) == ["m", "f"]
    from_cohort = sg.subgroup_auc(y, score, cohort)
    cols = ["n", "events", "auc", "ci_low", "ci_high", "p"]
    np.testing.assert_allclose(tup[cols].to_numpy(float), from_cohort[cols].iloc[:2].to_numpy(float))
    np.testing.assert_allclose(named[cols].to_numpy(float), tup[cols].to_numpy(float))
    # Only the interval depends on the level.
    narrow = sg.subgroup_auc(y, score, {"sex": (male, ~male)}, level=0.8)
    assert (narrow["ci_low"] > tup["ci_low"]).all() and (narrow["ci_high"] < tup["ci_high"]).all()
    np.testing.assert_array_equal(narrow[["auc", "p"]], tup[["auc", "p"]])
    # Custom definitions for a cohort DataFrame.
    defs = {"age70": {"column": "age", "levels": (("<70", "<", 70), (">=70", ">=", 70))}}
    out = sg.subgroup_auc(y, score, cohort, definitions=defs)
    young = (cohort["age"] < 70).to_numpy()
    assert out["auc"].iloc[0] == pytest.approx(roc_auc_score(y[young], score[young]))
    assert out["auc"].iloc[1] == pytest.approx(roc_auc_score(y[~young], score[~young]))


def test_subgroup_auc_errors(data):
    cohort, y, score = data
    male = (cohort["sex"] == "male").to_numpy()
    no_female_death = np.where(male, y, 0)
    with pytest.raises(ValueError, match="comparison 'sex', side 'female': y must contain both classes"):
        sg.subgroup_auc(no_female_death, score, cohort)
    cases = [
        ({"s": (male, np.zeros_like(male))}, "comparison 's', side 'b' is empty"),
        ({"s": (male, np.ones_like(male))}, r"sides 'a' and 'b' share \d+ patient\(s\)"),
        ({"s": (male.astype(int), ~male)}, "side 'a'.* must be a boolean array with one value per patient"),
        ({"s": (male[:-1], ~male[:-1])}, "must be a boolean array with one value per patient"),
        ({"s": (male, ~male, male)}, "comparison 's' must have exactly two sides"),
        ({"s": {"only": male}}, "comparison 's' must have exactly two sides"),
        ({}, "groups must be a non-empty mapping"),
        (cohort.iloc[:-1], "the cohort has 299 rows but y has 300"),
        (cohort.drop(columns="sex"), "column 'sex' not in the cohort"),
    ]
    for groups, match in cases:
        with pytest.raises(ValueError, match=match):
            sg.subgroup_auc(y, score, groups)
    with pytest.raises(ValueError, match="score must be finite"):
        sg.subgroup_auc(y, np.r_[np.nan, score[1:]], cohort)
    with pytest.raises(ValueError, match="score must have one value per label"):
        sg.subgroup_auc(y, score[:-1], cohort)
    with pytest.raises(ValueError, match="y must contain both classes"):
        sg.subgroup_auc(np.zeros_like(y), score, cohort)
    with pytest.raises(ValueError, match="level must be a confidence level"):
        sg.subgroup_auc(y, score, cohort, level=0)


# --- performance_by_group -------------------------------------------------------------------

def test_performance_by_group_against_sklearn_and_delong(data, caplog):
    cohort, y, score = data
    # A pandas Series with a shuffled index: used by position, not aligned.
    site = pd.Series(cohort["site"].to_numpy(), index=np.random.default_rng(0).permutation(len(cohort)))
    with caplog.at_level(logging.INFO, logger="ctac_helpers.results.subgroups"):
        out = sg.performance_by_group(y, score, site, "Yale")
    n_missing = int(cohort["site"].isna().sum())
    assert n_missing > 0 and f"{n_missing} patient(s) with a missing level left out" in caplog.text
    assert list(out.columns) == ["group", "n", "events", "auc", "ci_low", "ci_high", "difference", "p"]
    assert list(out["group"]) == ["Yale", "Calgary", "Columbia", "Ottawa"]
    assert out["n"].sum() == len(cohort) - n_missing
    g = cohort["site"].to_numpy()
    ref = g == "Yale"
    auc_ref = roc_auc_score(y[ref], score[ref])
    for _, row in out.iterrows():
        m = g == row["group"]
        assert (row["n"], row["events"]) == (m.sum(), y[m].sum())
        assert row["auc"] == pytest.approx(roc_auc_score(y[m], score[m]), abs=1e-12)
        assert row["ci_low"] < row["auc"] < row["ci_high"]
        assert row["difference"] == pytest.approx(row["auc"] - auc_ref, abs=1e-12)
        if row["group"] == "Yale":
            assert row["difference"] == 0.0 and np.isnan(row["p"])
        else:
            p = delong.delong_test_unpaired(y[m], score[m], y[ref], score[ref]).p_value
            assert row["p"] == pytest.approx(p, abs=1e-12) and 0 < row["p"] <= 1


def test_performance_by_group_other_level_types(data):
    cohort, y, score = data
    codes = np.random.default_rng(1).integers(1, 4, len(y))  # protocols 1, 2, 3
    out = sg.performance_by_group(y, score, codes, 2)
    assert list(out["group"]) == [2, 1, 3]
    m = codes == 3
    assert out["auc"].iloc[2] == pytest.approx(roc_auc_score(y[m], score[m]))
    cat = sg.performance_by_group(y, score, pd.Categorical(cohort["site"]), "Calgary")
    assert list(cat["group"]) == ["Calgary", "Columbia", "Ottawa", "Yale"]
    # Mixed label types cannot be sorted: order of first appearance.
    mixed = np.where(codes == 1, "a", codes).astype(object)
    mixed[codes != 1] = codes[codes != 1]
    out = sg.performance_by_group(y, score, mixed, "a")
    assert out["group"].iloc[0] == "a" and set(out["group"].iloc[1:]) == {2, 3}


def test_performance_by_group_errors(data):
    cohort, y, score = data
    site = cohort["site"].to_numpy()
    with pytest.raises(ValueError, match=r"reference 'Boston' is not a level of group; levels: \['Calgary'"):
        sg.performance_by_group(y, score, site, "Boston")
    single = sg.performance_by_group(y, score, np.full(len(y), "Yale"), "Yale")  # a single site: no comparison
    assert single["group"].tolist() == ["Yale"] and np.isnan(single["p"].iloc[0])
    assert single["auc"].iloc[0] == pytest.approx(roc_auc_score(y, score))
    with pytest.raises(ValueError, match="group must have one level per patient"):
        sg.performance_by_group(y, score, site[:-1], "Yale")
    with pytest.raises(ValueError, match="level 'Ottawa': y must contain both classes"):
        sg.performance_by_group(np.where(site == "Ottawa", 0, y), score, site, "Yale")
    with pytest.raises(ValueError, match="reference level 'Yale': y must contain both classes"):
        sg.performance_by_group(np.where(site == "Yale", 1, y), score, site, "Yale")
    with pytest.raises(ValueError, match="level must be a confidence level"):
        sg.performance_by_group(y, score, site, "Yale", level=1.5)


def test_beside_paper_reads_the_papers_supp_fig3_values():
    from ctac_helpers.core import manifest
    table = pd.DataFrame({"comparison": ["sex", "sex", "age", "age", "race", "race", "site"],
                          "subgroup": ["male", "female", "<65", ">=65", "black", "white", "Yale"]})
    out = sg.beside_paper(table, manifest.paper_entry("supp_fig3"))
    assert out["paper_auc"].tolist()[:6] == [0.77, 0.79, 0.79, 0.74, 0.70, 0.84]
    assert np.isnan(out["paper_auc"].iloc[6]) and out["paper_p"].tolist() == ["0.08", "0.08", "0.16", "0.16",
                                                                              "0.74", "0.74", ""]
    with pytest.raises(ValueError, match="'subgroup'"):
        sg.beside_paper(table.drop(columns="subgroup"), {})


def test_choose_reference_prefers_the_papers_level_else_the_most_frequent():
    assert sg.choose_reference(pd.Series(["Yale", "Calgary", "Calgary"]), "Yale") == "Yale"
    assert sg.choose_reference(pd.Series(["B", "A", "B", None]), "Yale") == "B"
    assert sg.choose_reference(pd.Series(["B", "A"]), "Yale") == "A"  # a tie: the first in sorted order
    with pytest.raises(ValueError, match="no level"):
        sg.choose_reference(pd.Series([None, None]), "Yale")
