"""Staging the book's source tree and compiling it with Jupyter Book (a two-page book)."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import fakebook
from ctac_helpers.publish import book

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    fakebook.copy_book_config(root)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/00_x\n")
    (root / "book" / "intro.md").write_text("# Intro\n\nDownload {download}`table t <../run/tables/t.csv>`.\n")
    return root


@pytest.fixture
def run_dir(tmp_path):
    rd = tmp_path / "run"
    (rd / "executed").mkdir(parents=True)
    (rd / "tables").mkdir()
    (rd / "tables" / "t.csv").write_text("a,b\n1,2\n")
    cell = new_code_cell("print('hello')", execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="hello\n")]
    nb = new_notebook(cells=[new_markdown_cell("# Chapter X"), cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, rd / "executed" / "00_x.ipynb")
    nbformat.write(nb, rd / "executed" / "00_y.failed.ipynb")
    return rd


def test_stage_source_copies_pages_notebooks_and_run_files(repo, run_dir, tmp_path):
    src = tmp_path / "out" / "_build" / ".source"
    src.mkdir(parents=True)
    (src / "stale.md").write_text("left over from an earlier build")
    book.stage_source(run_dir, repo, src)
    assert (src / "_config.yml").is_file() and (src / "_toc.yml").is_file()
    assert (src / "book" / "intro.md").is_file()
    assert sorted(p.name for p in (src / "notebooks").iterdir()) == ["00_x.ipynb"]  # no *.failed.ipynb
    assert (src / "run" / "tables" / "t.csv").read_text() == "a,b\n1,2\n"
    assert not (src / "stale.md").exists()


def test_missing_executed_notebook_tells_to_run_first(repo, run_dir, tmp_path):
    (run_dir / "executed" / "00_x.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match=r"lists notebooks/00_x.*run `ctac-book run` first"):
        book.stage_source(run_dir, repo, tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="run `ctac-book run` first"):
        book.stage_source(tmp_path / "no-run", repo, tmp_path / "src")


def test_missing_page_is_reported(repo, run_dir, tmp_path):
    (repo / "book" / "intro.md").unlink()
    with pytest.raises(FileNotFoundError, match="_toc.yml lists book/intro"):
        book.stage_source(run_dir, repo, tmp_path / "src")


SUPP_TABLE3 = """model,label,n,deaths,auc,ci_low,ci_high,paper_auc,paper_ci,difference
all,All,1000,60,0.78,0.74,0.82,0.8,0.74-0.87,-0.02
"""


@pytest.fixture
def scored_book(repo, run_dir):
    """The two-page book with the generated pages in its toc, a chapter 5 and a table the scorecard reads."""
    chapters = ("notebooks/00_x", "notebooks/05_models", "book/scorecard", "book/intervals", "book/status")
    (repo / "book" / "intro.md").write_text("# Intro\n\n```{include} _generated/reproduced.md\n```\n")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   + "".join(f"  - file: {c}\n" for c in chapters))
    shutil.copy(run_dir / "executed" / "00_x.ipynb", run_dir / "executed" / "05_models.ipynb")
    (run_dir / "tables" / "supp_table3.csv").write_text(SUPP_TABLE3)
    record = {"code_hash": "c" * 64, "packages": {"pandas": "2"}, "parameters": {"name": "run", "seed": 1},
              "stages": {"data": {"status": "ok", "started": "2026-01-01T00:00:00+00:00", "duration_s": 1.0,
                                  "outputs": {"tables/t.csv": "d" * 64}}}}
    (run_dir / "run.json").write_text(json.dumps(record))
    return repo, run_dir


def test_stage_source_writes_the_generated_pages(scored_book, tmp_path):
    repo, run_dir = scored_book
    (repo / "book" / "status.md").write_text("# a hand-written page of the same name is replaced\n")
    src = book.stage_source(run_dir, repo, tmp_path / "src")
    scorecard = (src / "book" / "scorecard.md").read_text(encoding="utf-8")
    assert scorecard.startswith("# Replication scorecard")
    assert "| AUC, All, all patients | 0.80 (0.74-0.87) | 0.780 (0.740-0.820) |" in scorecard
    assert "[chapter 5](../notebooks/05_models.ipynb)" in scorecard
    status = (src / "book" / "status.md").read_text(encoding="utf-8")
    assert status.startswith("# Run status") and "| data | ok |" in status and "d" * 64 in status
    intervals = (src / "book" / "intervals.md").read_text(encoding="utf-8")
    assert intervals.startswith("# Why the book's AUC intervals") and "| AUC, All | 0.80 (0.74 to 0.87) |" in intervals
    front = (src / "book" / book.FRONT_SUMMARY).read_text(encoding="utf-8")
    assert front.startswith("**What this run reproduces.** Of the paper's ") and "this run reproduces" in front
    assert "None of the held-out results, which test the synthetic generator, can be judged; 1 of the 1 results " \
           "it was fitted to hold." in front
    assert "{doc}`replication scorecard <scorecard>`" in front
    assert not (repo / "book" / "scorecard.md").exists()  # never written into the repository
    assert (repo / "book" / "status.md").read_text().startswith("# a hand-written")


def test_generated_pages_link_only_chapters_of_the_book(repo, run_dir, tmp_path):
    (run_dir / "tables" / "supp_table3.csv").write_text(SUPP_TABLE3)
    src = book.stage_source(run_dir, repo, tmp_path / "src")  # the toc has neither chapter 5 nor the pages
    scorecard = (src / "book" / "scorecard.md").read_text(encoding="utf-8")
    assert "| chapter 5 |" in scorecard and "05_models.ipynb" not in scorecard
    assert "no `run.json`" in (src / "book" / "status.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_build_book_with_generated_pages(scored_book, tmp_path):
    repo, run_dir = scored_book
    out = tmp_path / "out"
    book.build_book(run_dir, repo, out)  # warnings are errors: the pages and their links are clean
    html = out / "_build" / "html" / "book"
    page = (html / "scorecard.html").read_text(encoding="utf-8")
    assert "Replication scorecard" in page and 'href="../notebooks/05_models.html"' in page
    # the front page includes what the run reproduces
    assert "What this run reproduces." in (html / "intro.html").read_text(encoding="utf-8")
    assert "Run status" in (html / "status.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_build_book(repo, run_dir, tmp_path):
    out = tmp_path / "out"
    index = book.build_book(run_dir, repo, out)
    assert index == out / "_build" / "html" / "index.html" and index.is_file()
    page = (out / "_build" / "html" / "notebooks" / "00_x.html").read_text(encoding="utf-8")
    assert "Chapter X" in page and "hello" in page
    assert list((out / "_build" / "html" / "_downloads").rglob("t.csv"))
    # the book's style sheet (tables that fit the page) is on every page
    assert 'href="../_static/ctac-book.css' in page
    assert (out / "_build" / "html" / "_static" / "ctac-book.css").is_file()
    # nothing under _build names the folder it was built in (Sphinx's pickled environment did)
    assert not (out / "_build" / ".doctrees").exists()
    assert not [p for p in (out / "_build").rglob("*") if p.is_file() and str(tmp_path).encode() in p.read_bytes()]


@pytest.mark.slow
def test_build_warnings_are_errors(repo, run_dir, tmp_path):
    (repo / "book" / "intro.md").write_text("# Intro\n\nSee {ref}`no-such-label`.\n")
    with pytest.raises(RuntimeError, match=r"(?s)jupyter-book build failed.*no-such-label"):
        book.build_book(run_dir, repo, tmp_path / "out")
