"""Numbered figures and tables with download links (ctac_helpers.publish.figures), and the chapters that use them."""

import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

import fakebook  # noqa: E402
from ctac_helpers.publish import book
from ctac_helpers.publish import figures
from ctac_helpers.cohort import tables  # noqa: E402
from ctac_helpers.core.rundir import RunDir  # noqa: E402
from ctac_helpers.core.stages import STAGES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: Every chapter has the book's chapter shape (figures.show_figure/show_table, a Prerequisites box).
SHAPED = tuple(s.notebook for s in STAGES)


@pytest.fixture
def shown(monkeypatch):
    """The bundles the helpers display, in order."""
    bundles = []
    monkeypatch.setattr(figures, "_display", bundles.append)
    return bundles


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    return fig


# -- pure Markdown ---------------------------------------------------------------------------------------
def test_caption_puts_the_papers_id_in_bold():
    assert figures.caption_markdown("Supplementary Fig. 3 | AUC by  subgroup") == \
        "**Supplementary Fig. 3 |** AUC by subgroup"
    assert figures.caption_markdown("A caption without an id") == "A caption without an id"


def test_escape_markdown_keeps_text_literal():
    assert figures.escape_markdown("<0.001 | a_b *c* $x$ {r}`y`") == \
        r"\<0.001 \| a\_b \*c\* \$x\$ \{r\}\`y\`"
    assert figures.escape_markdown("two\nlines") == "two lines"


def test_figure_markdown_is_a_named_figure_on_the_staged_png_with_links():
    md = figures.figure_markdown("supp_fig3", "Supplementary Fig. 3 | AUC by subgroup", tables=["supp_fig3"])
    lines = md.splitlines()
    assert lines[0] == "```{figure} ../run/figures/supp_fig3.png"
    assert ":name: fig-supp_fig3" in lines and ":alt: Supplementary Fig. 3 | AUC by subgroup" in lines
    assert "**Supplementary Fig. 3 |** AUC by subgroup" in lines
    assert ("Download: {download}`figure supp_fig3.png <../run/figures/supp_fig3.png>` · "
            "{download}`data supp_fig3.csv <../run/tables/supp_fig3.csv>`") in lines
    assert lines[-1] == "```"


def test_markdown_table_formats_and_aligns():
    df = pd.DataFrame({"group": ["a|b", "c"], "n": [10, 2], "auc": [0.71234, np.nan], "p": ["<0.001", "0.2"]})
    md = figures.markdown_table(df, precision=3, formats={"n": "{:,}"})
    assert md.splitlines() == [
        "| group | n | auc | p |",
        "| --- | ---: | ---: | --- |",
        r"| a\|b | 10 | 0.712 | \<0.001 |",
        "| c | 2 |  | 0.2 |",
    ]
    quartiles = figures.markdown_table(pd.DataFrame({"age": ["65 (57, 73)", "-65 (-70, -61)"]}))
    assert quartiles.splitlines()[2:] == ["| 65 (57,\u00a073) |", "| -65 (-70,\u00a0-61) |"]
    with pytest.raises(KeyError, match="nope"):
        figures.markdown_table(df, formats={"nope": "{}"})


def test_values_read_as_text_for_people_not_as_pandas_prints_them(shown):
    df = pd.DataFrame({"age": [72.0, np.nan], "flag": [True, False], "race": ["white", None], "n": [3, 12]})
    assert figures.format_frame(df, precision=1).values.tolist() == [["72.0", "yes", "white", "3"],
                                                                     ["", "no", "", "12"]]
    figures.display_table(df, precision=0, na_rep="missing")
    [bundle] = shown
    assert bundle["text/markdown"].splitlines()[:2] == ["```{table}", ":class: table-sm small"]
    assert bundle["text/markdown"].splitlines()[5:] == ["| 72 | yes | white | 3 |", "| missing | no | missing | 12 |",
                                                        "```"]
    assert "72.000000" not in bundle["text/html"] and "None" not in bundle["text/html"]


def test_table_markdown_is_a_named_table_with_a_download_link():
    md = figures.table_markdown("table1", pd.DataFrame({"x": [1]}), "Table 1 | Baseline")
    assert md.startswith("```{table} **Table 1 |** Baseline\n:name: tbl-table1\n")
    assert md.endswith("```\n\nDownload: {download}`table table1.csv <../run/tables/table1.csv>`\n")


# -- writing and displaying ------------------------------------------------------------------------------
def test_show_figure_writes_the_png_and_data_and_displays_both_renderings(tmp_path, shown):
    rd = RunDir(tmp_path / "run")
    fig = _figure()
    data = pd.DataFrame({"x": [0, 1]})
    assert figures.show_figure(rd, "fig9", fig, "Fig. 9 | A line", data=data) is None
    assert rd.figure_path("fig9").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rd.read_table("fig9").equals(data)
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend does not show it twice
    (bundle,) = shown
    assert set(bundle) == {"text/markdown", "text/html", "text/plain"}
    assert "```{figure} ../run/figures/fig9.png" in bundle["text/markdown"]
    assert "<../run/tables/fig9.csv>" in bundle["text/markdown"]
    assert 'src="data:image/png;base64,' in bundle["text/html"] and "tables/fig9.csv" in bundle["text/html"]
    assert bundle["text/plain"] == "Fig. 9 | A line"


def test_show_figure_links_only_tables_that_exist(tmp_path, shown):
    rd = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"\['later'\]"):
        figures.show_figure(rd, "fig9", _figure(), "Fig. 9 | x", tables=["later"])
    rd.write_table("later", pd.DataFrame({"a": [1]}))
    figures.show_figure(rd, "fig9", _figure(), "Fig. 9 | x", tables=["later"])
    assert "<../run/tables/later.csv>" in shown[-1]["text/markdown"]


def test_show_table_writes_the_tidy_table_and_shows_the_view(tmp_path, shown):
    rd = RunDir(tmp_path / "run")
    tidy = pd.DataFrame({"variable": ["age"], "median": [65.0]})
    view = pd.DataFrame({"Characteristic": ["Age"], "book": ["65 (57, 73)"]})
    figures.show_table(rd, "table1", tidy, "Table 1 | Baseline", view=view)
    pd.testing.assert_frame_equal(rd.read_table("table1"), tidy, check_dtype=False)
    md = shown[-1]["text/markdown"]
    assert "| Age | 65 (57,\u00a073) |" in md and "median" not in md
    assert "<td>65 (57, 73)</td>" in shown[-1]["text/html"]
    figures.show_table(rd, "table1", tidy, "Table 1 | again", write=False)  # already written: only shown
    with pytest.raises(FileNotFoundError):
        figures.show_table(rd, "never_written", tidy, "x", write=False)


def test_show_table_writes_full_precision_and_shows_the_rounded_view(tmp_path, shown):
    rd = RunDir(tmp_path / "run")
    tidy = pd.DataFrame({"model": ["all"], "auc": [0.123456789012], "p": [0.0]})
    figures.show_table(rd, "supp_table3", tidy, "Supplementary Table 3 | AUCs", precision=3,
                       formats={"p": tables.format_p})
    csv = rd.table_path("supp_table3").read_text()
    assert csv == "model,auc,p\nall,0.123456789012,0\n"
    assert rd.read_table("supp_table3")["auc"].iloc[0] == 0.123456789012
    md, page = shown[-1]["text/markdown"], shown[-1]["text/html"]
    # the page rounds: three decimals, the underflowed p-value as "< 1e-300"
    assert "| all | 0.123 | \\< 1e-300 |" in md and "0.1234" not in md
    assert "<td>0.123</td>" in page and "<td>&lt; 1e-300</td>" in page


# -- the chapters ----------------------------------------------------------------------------------------
def _cells(name):
    return nbformat.read(REPO / "notebooks" / name, as_version=4).cells


@pytest.mark.parametrize("name", SHAPED)
def test_chapter_has_the_books_shape(name):
    cells = _cells(name)
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    code = [c for c in cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    assert all("hide-input" in c.metadata.get("tags", []) for c in code[1:])
    assert all(not c.get("outputs") for c in code)
    markdown = [c.source for c in cells if c.cell_type == "markdown"]
    headings = [s.splitlines()[0] for s in markdown]
    # chapter 8 reproduces nothing of the paper: its opening section says what it adds instead
    opening = "## What this chapter adds" if "## What this chapter adds" in headings else "## What this chapter reproduces"
    reproduces = headings.index(opening)
    assert markdown[reproduces + 1].startswith(":::{admonition} Prerequisites")  # right after it
    # the chapter ends: Summary (prose and numbers), Exercises, What's next
    level2 = [h for h in headings if h.startswith("## ")]
    assert level2[-3:] == ["## Summary", "## Exercises", "## What's next"]
    summary = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Summary"))
    shown = "\n".join(c.source for c in cells[summary:] if c.cell_type == "code")
    assert "display(Markdown(" in shown and ".style" not in shown  # prose, and tables as Markdown, not a Styler
    assert "{doc}`" in markdown[-1]  # What's next links the next page


_SOLUTION = re.compile(r"^````\{dropdown\} Solution\n(.*?)^````$", re.M | re.S)
_CODE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


@pytest.mark.parametrize("name", SHAPED)
def test_exercises_have_folded_solutions_whose_code_compiles(name):
    text = next(c.source for c in _cells(name) if c.source.startswith("## Exercises"))
    questions = re.findall(r"^\*\*Exercise (\d+)\.\*\* ", text, re.M)
    solutions = _SOLUTION.findall(text)
    assert 2 <= len(questions) <= 3 and questions == [str(k) for k in range(1, len(questions) + 1)]
    assert len(solutions) == len(questions)
    for solution in solutions:
        assert solution.strip()
        for block in _CODE.findall(solution):
            compile(block, f"{name} exercise", "exec")  # a solution's code is at least valid Python


@pytest.mark.parametrize("name", SHAPED)
def test_prerequisites_name_every_input_and_the_chapter_that_makes_it(name):
    stage = next(s for s in STAGES if s.notebook == name)
    box = next(c.source for c in _cells(name) if c.source.startswith(":::{admonition} Prerequisites"))
    for artifact in stage.inputs:
        producer = next(s for s in STAGES if artifact in s.artifacts)
        assert f"`artifacts/{artifact}.parquet`" in box
        assert f"{{doc}}`{Path(producer.notebook).stem}`" in box


@pytest.mark.parametrize("name", SHAPED)
def test_every_output_is_shown_numbered_and_referenced(name):
    """Each declared table and figure is shown by the helpers and cross-referenced in the chapter's text."""
    stage = next(s for s in STAGES if s.notebook == name)
    code = "\n".join(c.source for c in _cells(name) if c.cell_type == "code")
    text = "\n".join(c.source for c in _cells(name) if c.cell_type == "markdown")
    assert "rd.write_figure(" not in code and "rd.write_table(" not in code  # all through figures.show_*
    for figure_id in stage.figures:
        assert re.search(rf'show_figure\(rd, "{figure_id}"', code), figure_id
        assert f"{{numref}}`{figures.figure_label(figure_id)}`" in text, figure_id
    for table_id in stage.tables:
        # a figure's data may be written and linked by show_figure(..., data=...)
        assert re.search(rf'show_(table|figure)\(rd, "{table_id}"', code), table_id
        if re.search(rf'show_table\(rd, "{table_id}"', code):
            assert f"{{numref}}`{figures.table_label(table_id)}`" in text, table_id


# -- a book built from them ------------------------------------------------------------------------------
def _executed_chapter(run: RunDir) -> nbformat.NotebookNode:
    """A chapter as papermill leaves it: the helpers' bundles as outputs of its cells."""
    fig = _figure()
    rd_bundles = []
    figures._display, saved = rd_bundles.append, figures._display
    try:
        figures.show_figure(run, "supp_fig9", fig, "Supplementary Fig. 9 | A line",
                            data=pd.DataFrame({"x": [0, 1], "y": [0, 1]}))
        figures.show_table(run, "table9", pd.DataFrame({"p": ["<0.001"], "auc": [0.8]}), "Table 9 | Values")
        figures.display_table(pd.DataFrame({"quantity": ["plain"], "value": [np.nan]}), na_rep="missing")
    finally:
        figures._display = saved
    cells = [new_markdown_cell("# Chapter 9"),
             new_markdown_cell("See {numref}`fig-supp_fig9` and {numref}`tbl-table9`.")]
    for i, bundle in enumerate(rd_bundles):
        cell = new_code_cell("figures.show_...()", execution_count=i + 1, metadata={"tags": ["hide-input"]})
        cell.outputs = [new_output("display_data", data=bundle)]
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.mark.slow
def test_book_numbers_the_figure_and_table_and_links_their_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "book").mkdir(parents=True)
    fakebook.copy_book_config(repo)
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/09_x\n"
                                   "  - file: book/references\n")
    (repo / "book" / "intro.md").write_text("# Intro\n\nThe paper {cite:p}`marcinkiewicz2025`.\n")
    shutil.copy(REPO / "book" / "references.md", repo / "book" / "references.md")
    run = RunDir(tmp_path / "run")
    nbformat.write(_executed_chapter(run), run.root / "executed" / "09_x.ipynb")

    book.build_book(run.root, repo, tmp_path / "out")  # warnings are errors
    html_dir = tmp_path / "out" / "_build" / "html"
    page = (html_dir / "notebooks" / "09_x.html").read_text(encoding="utf-8")
    assert re.search(r'caption-number">Book figure 1 </span>.*Supplementary Fig. 9 \|', page)
    assert re.search(r'caption-number">Book table 1 </span>.*Table 9 \|', page)
    assert "Book table 2" not in page and re.search(r'<table class="table-sm small table[^"]*">', page)  # unnumbered
    assert re.search(r"<td[^>]*><p>missing</p></td>", page)
    assert 'href="#fig-supp-fig9"' in page and 'href="#tbl-table9"' in page
    assert "&lt;0.001" in page
    links = re.findall(r'class="reference download internal" download="" href="([^"]+)"', page)
    assert sorted(Path(link).name for link in links) == ["supp_fig9.csv", "supp_fig9.png", "table9.csv"]
    for link in links:
        assert (html_dir / "notebooks" / link).resolve().is_file()
    references = (html_dir / "book" / "references.html").read_text(encoding="utf-8")
    assert "Holistic AI analysis of hybrid cardiac perfusion images" in references
    assert "TotalSegmentator" in references  # :all: lists every entry of references.bib


def test_pipe_table_takes_markdown_cells_as_they_are():
    assert figures.pipe_table(["a", "b"], [["**no**", "`x`"], ["1", ""]]).splitlines() == [
        "| a | b |", "| --- | --- |", "| **no** | `x` |", "| 1 |  |"]
    assert figures.pipe_table(["n"], [], align=["---:"]) == "| n |\n| ---: |"
    with pytest.raises(ValueError, match="row 2 has 1 cells; the header has 2 columns"):
        figures.pipe_table(["a", "b"], [["1", "2"], ["3"]])
    with pytest.raises(ValueError, match="align has 1 cells"):
        figures.pipe_table(["a", "b"], [], align=["---"])
