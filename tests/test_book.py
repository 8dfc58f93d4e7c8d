"""Staging the book's source tree and compiling it with Jupyter Book (a two-page book)."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from ctac_helpers import book

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
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


@pytest.mark.slow
def test_build_book(repo, run_dir, tmp_path):
    out = tmp_path / "out"
    index = book.build_book(run_dir, repo, out)
    assert index == out / "_build" / "html" / "index.html" and index.is_file()
    page = (out / "_build" / "html" / "notebooks" / "00_x.html").read_text(encoding="utf-8")
    assert "Chapter X" in page and "hello" in page
    assert list((out / "_build" / "html" / "_downloads").rglob("t.csv"))


@pytest.mark.slow
def test_build_warnings_are_errors(repo, run_dir, tmp_path):
    (repo / "book" / "intro.md").write_text("# Intro\n\nSee {ref}`no-such-label`.\n")
    with pytest.raises(RuntimeError, match=r"(?s)jupyter-book build failed.*no-such-label"):
        book.build_book(run_dir, repo, tmp_path / "out")
