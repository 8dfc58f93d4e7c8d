"""Tests of ctac_helpers.publish.checklist: the TRIPOD+AI data file, its validation, the page and the anchor check."""

import json

import pytest
import yaml

from ctac_helpers.publish import book
from ctac_helpers.publish import checklist

# The items of the TRIPOD+AI checklist (BMJ 2024;385:e078378), as numbered there.
TRIPOD_AI_IDS = (["1", "2", "3a", "3b", "3c", "4", "5a", "5b", "6a", "6b", "6c", "7", "8a", "8b", "8c", "9a", "9b",
                  "9c", "10", "11"] + [f"12{c}" for c in "abcdefg"] + ["13", "14", "15", "16", "17"]
                 + [f"18{c}" for c in "abcdef"] + ["19", "20a", "20b", "20c", "21", "22", "23a", "23b", "24", "25",
                                                   "26", "27a", "27b", "27c"])


def test_the_data_file_lists_every_item_once_in_order():
    items = checklist.load_checklist()
    assert [i["id"] for i in items] == TRIPOD_AI_IDS
    assert all(i["applies"] in ("D", "E", "D;E") for i in items)
    # chapter 8 answers what it was written for
    beyond = {i["id"] for i in items if any(loc["doc"] == "notebooks/08_beyond" for loc in i["book"])}
    assert {"10", "12e", "12f", "13", "24"} <= beyond


def _write(tmp_path, items):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"items": items}), encoding="utf-8")
    return path


ITEM = {"id": "1", "section": "S", "topic": "T", "applies": "D", "asks": "a", "paper": None,
        "book": [{"doc": "notebooks/05_models", "table": "supp_table3"}]}


@pytest.mark.parametrize("change, message", [
    ({"book": [{"doc": "notebooks/05_models", "figure": "supp_table3"}]}, "writes no figure 'supp_table3'"),
    ({"book": [{"doc": "notebooks/99_none"}]}, "unknown page 'notebooks/99_none'"),
    ({"book": [{"doc": "book/intro", "table": "x"}]}, "without numbered figures"),
    ({"book": [{"doc": "notebooks/05_models", "figure": "fig1", "table": "supp_table3"}]}, "at most one"),
    ({"applies": "X"}, "applies must be one of"),
    ({"colour": "red"}, "unknown fields"),
    ({"paper": ""}, "paper must be text"),
])
def test_bad_items_are_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        checklist.load_checklist(_write(tmp_path, [{**ITEM, **change}]))
    with pytest.raises(ValueError, match="appears twice"):
        checklist.load_checklist(_write(tmp_path, [ITEM, ITEM]))
    with pytest.raises(ValueError, match="missing fields"):
        checklist.load_checklist(_write(tmp_path, [{k: v for k, v in ITEM.items() if k != "asks"}]))


def test_page_links_what_the_book_holds_and_names_the_rest(tmp_path):
    items = checklist.load_checklist(_write(tmp_path, [
        ITEM, {**ITEM, "id": "2", "book": [{"doc": "book/intro"}], "paper": "Methods | x", "book_note": "Why."},
        {**ITEM, "id": "3", "section": "U", "book": []}]))
    page = checklist.checklist_page(items, docs={"notebooks/05_models", "book/intro"})
    assert page.startswith("# Reporting checklist (TRIPOD+AI)\n")
    assert "| **1** T (D) | a | chapter 5, {numref}`tbl-supp_table3` | *not reported* |" in page
    assert "| **2** T (D) | a | {doc}`intro`. Why. | Methods \\| x |" in page
    assert "| **3** T (D) | a | *not reported* | *not reported* |" in page
    assert "## S" in page and "## U" in page
    assert "**2 of 3** items are answered by this book, **1 of 3** by the paper; 1 by neither." in page
    assert "1 (chapter 5), 2 (intro)" not in page  # item 2's paper answers it
    assert "The book answers 1 item the paper does not report: 1 (chapter 5)." in page
    outside = checklist.checklist_page(items, docs={"book/intro"})
    assert "| chapter 5, tbl-supp_table3 |" in outside


def test_missing_anchors_reads_the_staged_chapters(tmp_path):
    items = checklist.load_checklist(_write(tmp_path, [ITEM]))
    (tmp_path / "notebooks").mkdir()
    nb = tmp_path / "notebooks" / "05_models.ipynb"
    nb.write_text(json.dumps({"cells": [{"outputs": [{"data": {"text/markdown": "```{table} X\n:name: tbl-fig2\n"}}]}]}))
    docs = {"notebooks/05_models"}
    assert checklist.missing_anchors(items, tmp_path, docs) == ["item 1: notebooks/05_models has no tbl-supp_table3"]
    nb.write_text(json.dumps({"cells": [{"outputs": [{"data": {"text/markdown": "```{table} X\n:name: tbl-supp_table3\n"}}]}]}))
    assert checklist.missing_anchors(items, tmp_path, docs) == []
    assert checklist.missing_anchors(items, tmp_path, set()) == []  # not in the book: not linked, not checked


def test_the_build_refuses_a_checklist_link_to_a_missing_figure(tmp_path):
    import fakebook
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    repo = tmp_path / "repo"
    (repo / "book").mkdir(parents=True)
    fakebook.copy_book_config(repo)
    (repo / "book" / "intro.md").write_text("# Intro\n")
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/08_beyond\n"
                                   "  - file: book/tripod_ai\n")
    run = tmp_path / "run"
    (run / "executed").mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 8. Beyond")]), run / "executed" / "08_beyond.ipynb")
    with pytest.raises(FileNotFoundError, match=r"item 10: notebooks/08_beyond has no fig-learning_curve"):
        book.stage_source(run, repo, tmp_path / "src")
