"""The quick profile, run and built into a temporary directory, as a new user would."""

import json

import pandas as pd
import pytest

from ctac_helpers.publish import browser
from ctac_helpers.pipeline import cli
from ctac_helpers.core import figtext
from ctac_helpers.core.stages import STAGES

pytestmark = pytest.mark.slow


def test_run_directory_contract(built):
    _, run_dir = built
    for stage in STAGES:
        for rel in stage.output_relpaths():
            assert (run_dir / rel).is_file(), rel
        assert (run_dir / "executed" / stage.notebook).is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parameters"]["stages"]["data"]["n_patients"] == 1500
    assert record["packages"]["numpy"]
    assert all(record["stages"][s.name]["status"] == "ok" for s in STAGES)
    assert record["stages"]["cohort"]["inputs"]["cohort"] == record["stages"]["data"]["outputs"]["artifacts/cohort.parquet"]


def test_tables_have_the_papers_rows(built):
    _, run_dir = built
    t1 = pd.read_csv(run_dir / "tables" / "table1.csv", keep_default_na=False)
    assert {"variable", "level", "group", "n", "percent", "median", "q1", "q3", "p_value"} <= set(t1.columns)
    assert set(t1["group"]) == {"all", "male", "female"}
    for v in ("age", "bmi", "hypertension", "cac_score", "eat_volume", "stress_tpd", "ecg_response", "death"):
        assert v in set(t1["variable"]), v
    n_row = t1[(t1.variable == "n") & (t1.group == "all")].iloc[0]
    assert int(n_row["n"]) == 1500
    t2 = pd.read_csv(run_dir / "tables" / "table2.csv", keep_default_na=False)
    assert set(t2["group"]) == {"death", "alive"}
    st2 = pd.read_csv(run_dir / "tables" / "supp_table2.csv", keep_default_na=False)
    assert {"normal", "abnormal"} <= set(st2["group"]) and "cac_category" in set(st2["variable"])
    cal = pd.read_csv(run_dir / "tables" / "calibration.csv")
    assert len(cal) > 250 and cal["within"].dtype == bool


def test_html_pages(built):
    root, _ = built
    html = root / "_build" / "html"
    assert (html / "index.html").is_file()
    data = (html / "notebooks" / "00_data.html").read_text(encoding="utf-8")
    cohort = (html / "notebooks" / "01_cohort.html").read_text(encoding="utf-8")
    assert "synthetic cohort" in data.lower() and "Calibration" in data
    assert "Table 1" in cohort and "Supplementary Table 2" in cohort
    assert "<img" in cohort  # the flow diagram is rendered


def test_no_local_path_published_and_a_downloaded_notebook_reruns_from_the_project_root(
        built, tmp_path, monkeypatch):
    """``root`` plays the project root (it holds runs/quick): a reader re-runs a chapter downloaded from the book."""
    import shutil

    import papermill

    from ctac_helpers.core import paths
    from ctac_helpers.core.rundir import file_sha256

    root, run_dir = built
    html = root / "_build" / "html"
    for folder in (run_dir, html):
        for path in (p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".ipynb", ".html", ".md",
                                                                                   ".txt", ".csv", ".parquet")):
            assert str(root) not in path.read_bytes().decode("latin-1"), path
    download = tmp_path / "download"
    download.mkdir()
    shutil.copy(html / "_sources" / "notebooks" / "01_cohort.ipynb", download)
    recorded = json.loads((run_dir / "run.json").read_text())["stages"]["cohort"]["outputs"]
    for rel in recorded:  # moved away, so the re-run must write them again
        (run_dir / rel).rename(tmp_path / rel.replace("/", "_"))
    monkeypatch.delenv(paths.LOCATIONS_ENV, raising=False)
    try:
        papermill.execute_notebook(str(download / "01_cohort.ipynb"), str(download / "out.ipynb"), cwd=str(root),
                                   kernel_name="python3", progress_bar=False)
        assert {rel: file_sha256(run_dir / rel) for rel in recorded} == recorded
    finally:  # the session's run directory stays as the other tests expect it
        for rel in recorded:
            if not (run_dir / rel).is_file():
                (tmp_path / rel.replace("/", "_")).rename(run_dir / rel)


def test_second_run_with_nothing_changed_executes_nothing(built):
    _, run_dir = built
    executed = {p: p.stat().st_mtime_ns for p in (run_dir / "executed").glob("*.ipynb")}
    outputs = {p: p.stat().st_mtime_ns for p in (run_dir / "tables").glob("*.csv")}
    assert cli.main(["run", "--profile", "quick", "--run-dir", str(run_dir)]) == 0
    assert {p: p.stat().st_mtime_ns for p in executed} == executed
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs


def test_imaging_chapters(built):
    root, run_dir = built
    scans = pd.read_parquet(run_dir / "artifacts" / "scans.parquet")
    assert (scans["dataset"] == "phantom").sum() == 6
    feats = pd.read_parquet(run_dir / "artifacts" / "image_features.parquet")
    assert len(feats) == 6 and feats["patient_id"].is_unique
    assert any(c.startswith("ct__heart__") for c in feats.columns)
    assert {"cac_score", "eat_volume", "eat_density", "cac_source", "eat_source"} <= set(feats.columns)
    cac = pd.read_csv(run_dir / "tables" / "cac_agreement.csv")
    eat = pd.read_csv(run_dir / "tables" / "eat_agreement.csv")
    assert cac["within"].all()
    low_dose = eat[eat["protocol"] != "ultra_low_dose_120kvp"]  # 28 HU noise biases the HU window (chapter 3)
    assert len(low_dose) and low_dose["volume_within"].all() and low_dose["density_within"].all()
    agreement = pd.read_csv(run_dir / "tables" / "pyradiomics_agreement.csv")
    assert (agreement["max_relative_difference"] < 1e-6).all()
    html = root / "_build" / "html" / "notebooks"
    assert "Supplementary Fig. 7" in (html / "02_segmentation.html").read_text(encoding="utf-8")


def test_models_chapter(built):
    root, run_dir = built
    cohort = pd.read_parquet(run_dir / "artifacts" / "cohort.parquet")
    pred = pd.read_parquet(run_dir / "artifacts" / "predictions.parquet")
    assert {"patient_id", "fold", "model", "score"} <= set(pred.columns)
    # One out-of-fold score per patient and model, for every patient of the cohort.
    counts = pred.groupby("model")["patient_id"].agg(["size", "nunique"])
    assert (counts["size"] == len(cohort)).all() and (counts["nunique"] == len(cohort)).all()
    assert {"all", "ai_hybrid", "ai_ctac", "ai_spect", "eat", "cac", "perfusion"} <= set(pred["model"])
    assert pred["fold"].nunique() == 5  # the quick profile's folds
    t3 = pd.read_csv(run_dir / "tables" / "supp_table3.csv", keep_default_na=False)
    assert set(t3["model"]) >= {"all", "ai_ctac", "cac", "perfusion"}
    assert ((t3["ci_low"] <= t3["auc"]) & (t3["auc"] <= t3["ci_high"])).all()
    assert (t3["paper_auc"].astype(float) > 0).all()
    for table in ("supp_table3_delong", "supp_table4_delong", "supp_table5_delong"):
        d = pd.read_csv(run_dir / "tables" / f"{table}.csv")
        assert len(d) and d["p"].between(0, 1).all(), table
    t10 = pd.read_csv(run_dir / "tables" / "supp_table10.csv")
    assert list(t10["model"]) == ["all", "ai_ctac", "ai_hybrid"] and t10["p"].between(0, 1).all()
    for fig in ("fig1", "fig2a", "fig2b", "fig2c", "fig4", "supp_fig2"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    page = (root / "_build" / "html" / "notebooks" / "05_models.html").read_text(encoding="utf-8")
    assert "Supplementary Table 10" in page and "<img" in page


def test_the_quick_book_in_the_browser(built, capsys):
    root, run_dir = built
    html = root / "_build" / "html"
    rc = cli.main(["check-html", "--profile", "quick", "--run-dir", str(run_dir), "--html", str(html)])
    out = capsys.readouterr().out
    assert rc == 0, out
    pages = browser.list_pages(html)
    assert {"index.html", "book/scorecard.html", "notebooks/05_models.html"} <= set(pages)
    shots = sorted(p.name for p in (run_dir / "screenshots").iterdir())
    assert shots == sorted(browser.screenshot_name(p) for p in pages)
    # every figure of the book records its smallest text, so that the check above measured each one
    images = sorted((html / "_images").glob("*.png"))
    assert images and all(figtext.read_record(p)[0] is not None for p in images), images


def test_the_first_screen_says_what_is_synthetic_and_what_is_reproduced(built, tmp_path):
    """A reader who opens the book sees, without scrolling (1280 x 800), that the patients are synthetic
    and which of the paper's headline findings the run reproduces and which it does not."""
    from ctac_helpers.publish import scorecard

    root, run_dir = built
    seen = browser.first_screen(root / "_build" / "html", screenshot=tmp_path / "first_screen.png")
    seen = seen.replace("\u2019", "'")  # the page's typographic apostrophes
    assert "The patients are synthetic" in seen and "1,500 synthetic patients" in seen
    status = scorecard.findings_status(scorecard.scorecard(run_dir))
    assert f"Of the paper's {len(status)} headline findings" in seen
    for state, label in (("reproduced", "Reproduced:"), ("not reproduced", "Not reproduced:")):
        shorts = list(status.loc[status["status"] == state, "short"])
        assert not shorts or label in seen
        assert all(short in seen for short in shorts), (state, shorts, seen)
