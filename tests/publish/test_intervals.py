"""The widths of the run's confidence intervals beside the paper's, and the page that explains them."""

import math

import numpy as np
import pandas as pd
import pytest

from ctac_helpers.stats import delong
from ctac_helpers.publish import intervals as iv

# 2,620 patients: a quarter of the paper's 10,480, so the run's widths scale by 1/2 to the paper's size
N = 2620


def _write(run_dir, table_id, text):
    (run_dir / "tables").mkdir(parents=True, exist_ok=True)
    (run_dir / "tables" / f"{table_id}.csv").write_text(text.strip() + "\n")


@pytest.fixture
def run_dir(tmp_path):
    rd = tmp_path / "run"
    # paper: All 0.80 (0.74-0.87), width 0.13; EAT 0.56 (0.49-0.63), width 0.14; AI hybrid has no interval
    _write(rd, "supp_table3", f"""
model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,{N},163,0.79,0.77,0.81,0.8,0.74-0.87,
eat,EAT,{N},163,0.55,0.52,0.58,0.56,0.49-0.63,
ai_hybrid,AI hybrid,{N},163,0.78,0.76,0.80,0.79,,
""")
    # paper: abnormal perfusion 1.71 (1.46-2.01)
    _write(rd, "supp_fig4", f"""
covariate,hr,ci_low,ci_high,p,n,events,note,paper_hr,paper_ci
abnormal_perfusion,1.7,1.2,2.4,0.001,{N},163,,1.71,1.46-2.01
age,1.04,1.03,1.05,0.001,{N},163,,,
""")
    # paper: events 15.1 (11.4-18.8), width 7.4
    _write(rd, "nri", """
component,estimate,se,ci_low,ci_high,p,n_resamples,estimate_pct,ci_low_pct,ci_high_pct,paper_pct,paper_ci,paper_p
nri_events,0.15,0.04,0.076,0.224,0.001,100,15.0,7.6,22.4,15.1,11.4-18.8,<0.001
""")
    return rd


def test_interval_widths(run_dir):
    w = iv.interval_widths(run_dir).set_index("key")
    assert list(w.columns) == [c for c in iv.COLUMNS if c != "key"]
    assert list(w.index) == ["all", "eat", "abnormal_perfusion", "events"]  # only intervals the paper prints
    assert list(w["kind"]) == ["AUC", "AUC", "hazard ratio", "NRI"]
    r = w.loc["all"]
    assert r["paper"] == "0.80 (0.74 to 0.87)" and r["book"] == "0.790 (0.770 to 0.810)"
    assert r["paper_width"] == pytest.approx(0.13) and r["book_width"] == pytest.approx(0.04)
    assert r["book_width_at_paper_size"] == pytest.approx(0.02)  # sqrt(2620 / 10480) = 1/2
    assert r["ratio"] == pytest.approx(6.5)
    hr = w.loc["abnormal_perfusion"]  # on the log scale
    assert hr["paper_width"] == pytest.approx(math.log(2.01 / 1.46))
    assert hr["ratio"] == pytest.approx(math.log(2.01 / 1.46) / (math.log(2.4 / 1.2) / 2))
    assert w.loc["events", "ratio"] == pytest.approx(7.4 / (14.8 / 2))
    assert w["delong_width"].isna().all()  # the run holds no scores


def test_delong_widths_from_the_runs_scores(run_dir):
    rng = np.random.default_rng(5)
    ids = [f"p{i}" for i in range(400)]
    death = (rng.random(400) < 0.2).astype(int)
    score = death + rng.normal(0, 1.2, 400)
    (run_dir / "artifacts").mkdir()
    pd.DataFrame({"patient_id": ids, "death": death}).to_parquet(run_dir / "artifacts" / "cohort.parquet")
    pd.DataFrame({"patient_id": ids * 2, "model": ["all"] * 400 + ["eat"] * 400,
                  "score": np.r_[score, -score]}).to_parquet(run_dir / "artifacts" / "predictions.parquet")
    w = iv.interval_widths(run_dir).set_index("key")
    ci = delong.auc_ci_delong(death, score)
    assert w.loc["all", "delong_width"] == pytest.approx(ci.ci_high - ci.ci_low)
    assert math.isfinite(w.loc["eat", "delong_width"]) and math.isnan(w.loc["events", "delong_width"])


def test_absent_tables_give_no_rows(tmp_path):
    w = iv.interval_widths(tmp_path)
    assert w.empty and list(w.columns) == iv.COLUMNS
    assert "cannot be compared" in iv.width_summary(w, 10)
    assert "This run holds none of these intervals." in iv.intervals_page(w)


def _widths(auc_ratios, other_ratios):
    rows = [{"kind": "AUC", "ratio": r, "delong_width": math.nan, "book_width": 0.1} for r in auc_ratios]
    rows += [{"kind": "NRI", "ratio": r, "delong_width": math.nan, "book_width": 1.0} for r in other_ratios]
    return pd.DataFrame(rows)


def test_width_summary_states_what_the_numbers_show():
    text = iv.width_summary(_widths([3.0, 3.3, 3.6], [0.9, 1.1]), folds=10)
    assert "the paper's AUC intervals are 3.0 to 3.6 (median 3.3) times as wide as this run's" in text
    assert "close to √10 = 3.2" in text and "resampled the patients of one fold" in text
    assert ("The paper's hazard ratio and NRI intervals are 0.9 to 1.1 (median 1.0) times as wide as this run's: "
            "about the width its whole cohort implies.") in text
    # numbers that do not fit the explanation are not explained by it
    text = iv.width_summary(_widths([1.1, 1.2], [2.5]), folds=10)
    assert "not close to √10" in text and "resampled the patients of one fold" not in text
    assert "2.5 times as wide as this run's." in text and "whole cohort implies" not in text


def test_intervals_page(run_dir):
    w = iv.interval_widths(run_dir)
    page = iv.intervals_page(w)
    assert page.startswith("# Why the book's AUC intervals are narrower than the paper's\n")
    assert "| AUC, All | 0.80 (0.74 to 0.87) | 0.790 (0.770 to 0.810) | 6.5 |" in page
    assert "{doc}`Chapter 5 <../notebooks/05_models>`" in page
    assert "10,480 patients with 651 deaths and 10-fold cross-validation" in page
    assert "{doc}" not in iv.intervals_page(w, docs={"book/intro"})
