"""The browser check of the built book (ctac_helpers.publish.browser): headless Chromium on hand-made pages with
known faults. The quick book itself is checked in end_to_end/test_end_to_end.py, which builds it.

Chromium and chromedriver come from Debian (`make browser`, which `make test` runs); without them these
tests fail with a message saying what to install.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ctac_helpers.publish import browser
from ctac_helpers.pipeline import cli
from ctac_helpers.core import figtext  # noqa: E402
from ctac_helpers.core.rundir import RunDir  # noqa: E402

ICON = '<link rel="icon" href="data:,">'  # so that the browser does not ask for /favicon.ico


def _page(title: str, body: str, head: str = ICON) -> str:
    return f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>{head}</head>\n" \
           f"<body>{body}</body></html>\n"


def _write(root: Path, pages: dict[str, str]) -> Path:
    for rel, text in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _output(html: str, stderr: bool = False) -> str:
    """A notebook cell's output as myst-nb renders it."""
    kind = f"output {'stderr' if stderr else 'stream'} highlight-myst-ansi notranslate"
    return (f'<div class="cell docutils container"><div class="cell_output docutils container"><div class="{kind}">'
            f'<div class="highlight"><pre>{html}</pre></div></div></div></div>')


def _markdown_output(html: str) -> str:
    """A text/markdown output (a numbered table or figure) as myst-nb renders it."""
    return f'<div class="cell docutils container"><div class="cell_output docutils container">{html}</div></div>'


def _table(columns: int, caption: str = "") -> str:
    head = "".join(f"<th>column {i}</th>" for i in range(columns))
    cells = "".join(f"<td>{1000 * i:,}</td>" for i in range(columns))
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<table class="table">{cap}<thead><tr>{head}</tr></thead><tbody><tr>{cells}</tr></tbody></table>'


def _article(body: str) -> str:
    # a text column 600 px wide, as the book's theme has one (688 px at a 1280 px window)
    return f'<article style="width:600px; padding:0 20px">{body}</article>'


def _figure_png(root: Path, name: str, width_in: float, points: float) -> Path:
    """A figure written as the chapters write theirs (with its text record), its smallest text ``points``."""
    fig, ax = plt.subplots(figsize=(width_in, 2.5))
    ax.plot([0, 1], [0, 1], label="curve")
    ax.tick_params(labelsize=max(points, 12))
    ax.set_title("a title", fontsize=14)
    ax.legend(fontsize=points)
    path = RunDir(root / "run").write_figure(name, fig)
    plt.close(fig)
    return Path(path)


@pytest.fixture(scope="module")
def faulty_site(tmp_path_factory) -> Path:
    """Pages: two clean, the others with one kind of fault each (and a page under _static, not checked)."""
    root = tmp_path_factory.mktemp("site")
    (root / "img").mkdir()
    Image.new("RGB", (8, 6), "red").save(root / "img" / "ok.png")
    # 8 in at 150 dpi: a PNG of about 1,060 px (the saved box is tight) shown at most 600 px wide, so 9 pt reads
    # as about 8 pt and 13 pt as about 11 pt
    _figure_png(root, "small_text", 8, 9.0)
    _figure_png(root, "large_text", 8, 13.0)
    # a figure in Sphinx's image folder that records no text sizes (not written by RunDir.write_figure)
    (root / "_images").mkdir()
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "_images" / "unrecorded.png", dpi=100)
    plt.close(fig)
    return _write(root, {
        "chapter.html": _page("a clean chapter", _article(
            _output("3 scans measured; 25% of them | one in 4 [00:00 is not a bar]")
            + _markdown_output(_table(4, "Book table 1: fits"))
            + '<img src="run/figures/large_text.png" alt="large text" style="max-width:100%">'
            + '<details><summary>more</summary>' + _table(3) + '</details>')),
        "noisy_outputs.html": _page("noise", _article(
            _output("scans:  17%|█▋        | 1/6 [00:00&lt;00:01,  2.96it/s]", stderr=True)
            + _output("scans:  33%|███▎      | 2/6 [00:01&lt;00:01,  2.27it/s]", stderr=True)
            + _output("/x/imaging.py:197: FutureWarning: The behavior of DataFrame concatenation\n  scans = ...")
            + _output("WARNING: scan s3 failed: unreadable")
            + _output("an ordinary line\nerror details", stderr=True)
            + _markdown_output("<table><tr><td>72.000000</td><td>None</td><td>72.0</td><td>none</td></tr></table>"))),
        "wide_tables.html": _page("tables", _article(
            _markdown_output(_table(14, "Book table 2: Table 1 | Baseline characteristics"))
            + '<div style="overflow-x:auto; width:300px">' + _table(5) + '</div>'
            + _table(3)
            + '<details><summary>folded</summary>' + _table(16) + '</details>')),
        "small_figure_text.html": _page("figure", _article(
            '<img src="run/figures/small_text.png" alt="small text" style="max-width:100%">'
            '<img src="run/figures/large_text.png" alt="large text" style="width:560px">')),
        "unmeasured_figure.html": _page("figure", _article('<img src="_images/unrecorded.png" alt="no record">')),
        "index.html": _page("clean", '<h1 id="top-title">Clean</h1><img src="img/ok.png" alt="ok">'
                                     '<a href="#top-title">here</a> <a href="other/target.html#sec">there</a> '
                                     '<a href="other/target.html">page</a> <a href="img/ok.png">file</a> '
                                     '<a href="https://doi.org/10.1038/s41746-025-01526-0">paper</a> '
                                     '<a href="#">top</a><script>console.log("fine"); console.warn("fine");</script>'),
        "other/target.html": _page("target", '<h2 id="sec">Section</h2><img src="../img/ok.png" alt="ok">'
                                             '<a href="../index.html">back</a>'),
        "broken_image.html": _page("image", '<img src="img/missing.png" alt="missing">'),
        "broken_link.html": _page("link", '<a href="nowhere.html">gone</a> <a href="img/none.csv">data</a>'),
        "missing_anchor.html": _page("anchor", '<a href="other/target.html#no-such-section">section</a>'
                                               '<a href="#nor-here">here</a>'),
        "js_error.html": _page("js", '<p>text</p><script>console.error("boom in the console");'
                                     ' undefinedFunction();</script>'),
        "_static/skipped.html": _page("asset", "<script>undefinedFunction();</script>"),
        # a section with only a subsection is not empty; one with a heading alone is
        "empty_section.html": _page("sections", _article(
            '<section id="a"><h2>Calibration</h2></section>'
            '<section id="b"><h2>Filled</h2><section id="c"><h3>Sub</h3><p>text</p></section></section>')),
        # the builder's folder in a page and in a notebook a reader downloads
        "leaky_path.html": _page("path", f"<p>run_dir = '{root}/runs/quick'</p>"),
        "_sources/notebooks/leaky.ipynb": json.dumps({"cells": [{"source": [f"run_dir = '{root}/runs/quick'"]}]}),
    })


@pytest.fixture(scope="module")
def faulty_check(faulty_site, tmp_path_factory):
    shots = tmp_path_factory.mktemp("shots")
    return browser.check_pages(faulty_site, shots), shots


def _by_page(problems) -> dict[str, list[browser.PageProblem]]:
    out: dict[str, list[browser.PageProblem]] = {}
    for p in problems:
        out.setdefault(p.page, []).append(p)
    return out


def test_chromium_is_installed():
    assert browser.find_chromium().is_file()
    assert browser.find_chromedriver().is_file()


def test_missing_chromium_says_what_to_install(faulty_site, monkeypatch):
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(browser.BrowserNotFoundError, match=r"chromium is not on PATH.*chromium-driver.*make browser"):
        browser.find_chromium()
    with pytest.raises(browser.BrowserNotFoundError, match="chromedriver is not on PATH"):
        browser.find_chromedriver()
    with pytest.raises(browser.BrowserNotFoundError, match="chromium is not on PATH"):
        browser.check_pages(faulty_site)


def test_list_pages_skips_sphinx_asset_folders(faulty_site):
    assert browser.list_pages(faulty_site) == [
        "broken_image.html", "broken_link.html", "chapter.html", "empty_section.html", "index.html", "js_error.html",
        "leaky_path.html", "missing_anchor.html", "noisy_outputs.html", "other/target.html", "small_figure_text.html",
        "unmeasured_figure.html", "wide_tables.html"]
    assert browser.screenshot_name("other/target.html") == "other__target.png"


def test_clean_pages_pass(faulty_check):
    problems, _ = faulty_check
    pages = _by_page(problems)
    assert "index.html" not in pages, pages.get("index.html")
    assert "other/target.html" not in pages, pages.get("other/target.html")
    assert "chapter.html" not in pages, pages.get("chapter.html")


def test_each_fault_is_found_on_its_page(faulty_check):
    problems, _ = faulty_check
    pages = _by_page(problems)
    assert set(pages) == {"broken_image.html", "broken_link.html", "missing_anchor.html", "js_error.html",
                          "noisy_outputs.html", "wide_tables.html", "small_figure_text.html", "empty_section.html",
                          "leaky_path.html", "_sources/notebooks/leaky.ipynb", "unmeasured_figure.html"}, problems

    [image] = pages["broken_image.html"]  # reported once, as an image (not again as a failed request)
    assert (image.kind, image.target) == ("image", "img/missing.png")

    links = pages["broken_link.html"]
    assert {(p.kind, p.target.rsplit("/", 1)[-1]) for p in links} == {("link", "nowhere.html"), ("link", "none.csv")}
    assert all("HTTP 404" in p.detail for p in links)

    anchors = pages["missing_anchor.html"]
    assert {p.kind for p in anchors} == {"anchor"}
    assert {p.target.rsplit("/", 1)[-1] for p in anchors} == {"target.html#no-such-section",
                                                              "missing_anchor.html#nor-here"}
    assert any("other/target.html has no element with id 'no-such-section'" in p.detail for p in anchors)

    js = pages["js_error.html"]
    assert {p.kind for p in js} == {"javascript", "console"}
    assert any("undefinedFunction is not defined" in p.detail for p in js if p.kind == "javascript")
    assert any("boom in the console" in p.detail for p in js if p.kind == "console")
    assert all(str(p).startswith(f"{p.page}: {p.kind}") for p in problems)


def test_an_empty_section_is_found(faulty_check):
    problems, _ = faulty_check
    [empty] = _by_page(problems)["empty_section.html"]
    assert (empty.kind, empty.detail) == ("section", "the section 'Calibration' has a heading and nothing under it")


def test_an_absolute_path_of_the_builder_in_a_page_or_a_download(faulty_site, faulty_check):
    problems, _ = faulty_check
    pages = _by_page(problems)
    for where in ("leaky_path.html", "_sources/notebooks/leaky.ipynb"):
        [leak] = pages[where]
        assert (leak.kind, leak.target) == ("path", str(faulty_site))
    # a folder named by the caller is found too; a relative one, or the root, is no path to look for
    assert browser.path_problems(faulty_site, [faulty_site / "runs", "runs", "/"])[0].target == str(faulty_site / "runs")
    assert browser.path_problems(faulty_site, ["runs/quick", "/"]) == []


def test_progress_bars_warnings_and_log_records_in_outputs(faulty_check):
    problems, _ = faulty_check
    found = sorted(p.detail for p in _by_page(problems)["noisy_outputs.html"])
    assert {p.kind for p in _by_page(problems)["noisy_outputs.html"]} == {"output"}
    assert found == sorted([
        "text written to the standard error stream and a progress bar in 2 outputs, the first: "
        "'scans:  17%|█▋        | 1/6 [00:00<00:01,  2.96it/s]'",
        "a warning in an output, the first: "
        "'/x/imaging.py:197: FutureWarning: The behavior of DataFrame concatenation'",
        "a log record in an output, the first: 'WARNING: scan s3 failed: unreadable'",
        "text written to the standard error stream in an output, the first: 'an ordinary line'",
        "2 table cell(s) of outputs as pandas prints them, not formatted for people, the first: '72.000000'",
    ]), found


def test_tables_wider_than_the_text_column_or_their_box(faulty_check):
    problems, _ = faulty_check
    tables = _by_page(problems)["wide_tables.html"]
    assert {p.kind for p in tables} == {"table"}
    details = sorted(p.detail for p in tables)
    assert len(details) == 3, details  # the 14 columns, the 5 in a 300 px box, and the 16 folded away
    assert details[0].startswith("table 1 (Book table 2: Table 1 | Baseline characteristics) is ")
    assert "wider than the text column (600 px) at a 1280 px window" in details[0]
    assert details[1].startswith("table 2 is ") and "wider than its box (300 px)" in details[1]
    assert details[2].startswith("table 4 is ") and "wider than the text column (600 px)" in details[2]


def test_figure_text_smaller_than_9_points_as_shown(faulty_site, faulty_check):
    problems, _ = faulty_check
    [small] = _by_page(problems)["small_figure_text.html"]
    assert (small.kind, small.target) == ("figure", "run/figures/small_text.png")
    record, dpi, width = figtext.read_record(faulty_site / "run" / "figures" / "small_text.png")
    assert record["points"] == 9.0 and record["text"] == "curve" and round(dpi) == 150
    shown = figtext.shown_points(9.0, dpi, width, 600)
    assert 6 < shown < 9 and f"reads as {shown:.1f} pt on the page" in small.detail, small.detail
    assert "the least is 9 pt" in small.detail
    # the same record, shown at its natural size (a CSS pixel per pixel of a 150 dpi PNG), reads larger
    assert figtext.shown_points(9.0, 150, 975, 975) == pytest.approx(9.0 * 150 / 96)


def test_a_figure_of_the_book_without_a_text_record(faulty_check):
    problems, _ = faulty_check
    [unmeasured] = _by_page(problems)["unmeasured_figure.html"]
    assert (unmeasured.kind, unmeasured.target) == ("figure", "_images/unrecorded.png")
    assert "records no text sizes" in unmeasured.detail and "cannot be checked" in unmeasured.detail


def test_the_first_screen(tmp_path):
    # a long first paragraph pushes the second below a 1280 x 800 window; folded text is not seen
    words = " ".join(f"w{i}" for i in range(700))
    _write(tmp_path, {"index.html": '<meta http-equiv="Refresh" content="0; url=book/intro.html" />',
                      "book/intro.html": _page("intro", _article(
                          f"<h1>The book</h1><p>Synthetic patients. {words}</p><p>below the fold</p>"
                          "<details><summary>folded</summary><p>hidden</p></details>"))})
    shot = tmp_path / "first.png"
    seen = browser.first_screen(tmp_path, screenshot=shot)
    assert seen.startswith("The book Synthetic patients. w0 w1 ")
    assert "below the fold" not in seen and "hidden" not in seen and "w699" not in seen
    with Image.open(shot) as im:
        assert im.size == browser.FIRST_SCREEN
    assert "below the fold" in browser.first_screen(tmp_path, "book/intro.html", size=(1280, 4000))


def test_figure_text_record_is_the_smallest_text_drawn():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_xlim(0, 0.5)  # tick labels beyond the limits are not drawn
    ax.set_xlabel("x", fontsize=11)
    ax.text(0.1, 0.5, "note\nsecond line", fontsize=6.5)
    hidden = ax.text(0.2, 0.2, "hidden", fontsize=3)
    hidden.set_visible(False)
    sizes = figtext.text_sizes(fig)
    assert (6.5, "note") in sizes and (6.5, "second line") in sizes and all(t != "hidden" for _, t in sizes)
    assert figtext.text_record(fig) == {"points": 6.5, "text": "note"}
    empty = plt.figure(figsize=(1, 1))
    assert figtext.text_record(empty) is None
    plt.close("all")


def test_a_screenshot_per_page(faulty_site, faulty_check):
    _, shots = faulty_check
    names = sorted(p.name for p in shots.iterdir())
    assert names == sorted(browser.screenshot_name(p) for p in browser.list_pages(faulty_site))
    with Image.open(shots / "index.png") as im:
        assert im.format == "PNG" and im.width == browser.WINDOW_SIZE[0] and im.height >= 600


def test_the_implicit_favicon_request_is_reported(tmp_path):
    # no <link rel="icon">: the browser asks for /favicon.ico, which the site lacks
    _write(tmp_path, {"index.html": _page("no icon", "<p>text</p>", head="")})
    [problem] = browser.check_pages(tmp_path)
    assert problem.kind == "resource" and problem.target.endswith("/favicon.ico")
    assert "404" in problem.detail and "html: favicon:" in problem.detail


def test_a_redirecting_page(tmp_path):
    # Sphinx's index.html sends the browser on to the root document
    _write(tmp_path, {"index.html": '<meta http-equiv="Refresh" content="0; url=book/intro.html" />',
                      "book/intro.html": _page("intro", '<h1 id="intro">Intro</h1><a href="../index.html">home</a>'
                                                        '<a href="#intro">here</a>')})
    assert browser.check_pages(tmp_path, tmp_path / "shots") == []
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["book__intro.png", "index.png"]


def _scorecard_page(*tables: list[tuple[str, str]]) -> str:
    """The scorecard page with one table per group of rows (as scorecard_page writes it)."""
    html = "<h1>Replication scorecard</h1><table><thead><tr><th>Group</th></tr></thead><tbody></tbody></table>"
    for rows in tables:
        cells = "".join(f"<tr><td><p>{item}</p></td><td><p>x</p></td><td><p>{chapter}</p></td></tr>"
                        for item, chapter in rows)
        html += ("<h3>rows</h3><table><thead><tr><th><p>Item</p></th><th><p>Quantity</p></th><th><p>Chapter</p></th>"
                 f"</tr></thead><tbody>{cells}</tbody></table>")
    return _page("Replication scorecard", html)


def test_scorecard_figures(tmp_path):
    (tmp_path / "_images").mkdir()
    Image.new("RGB", (8, 6), "blue").save(tmp_path / "_images" / "fig.png")
    link = '<a class="reference internal" href="../notebooks/{}.html">chapter</a>'
    _write(tmp_path, {
        "book/scorecard.html": _scorecard_page([
            ("Table 1", link.format("05_models")),
            ("Fig. 2", link.format("05_models")),
            ("Supplementary Fig. 3", link.format("06_subgroups")),
        ], [  # the rows of the next group's table are checked too
            ("Fig. 3", link.format("07_survival_nri")),  # a chapter page that does not exist
            ("Supplementary Fig. 4", "chapter 9"),  # named, not linked
        ]),
        "notebooks/05_models.html": _page("5", '<p>ROC curves (Fig. 2a-c), not Supplementary Fig. 3</p>'
                                               '<img src="../_images/fig.png" alt="roc">'),
        "notebooks/06_subgroups.html": _page("6", '<p>Subgroups (Fig. 3 of another paper)</p>'
                                                  '<img src="../_images/fig.png"><img src="../_images/gone.png">'),
    })
    problems = browser.check_scorecard(tmp_path)
    assert {p.page for p in problems} == {"book/scorecard.html"} and {p.kind for p in problems} == {"scorecard"}
    details = sorted(p.detail for p in problems)
    assert not any(d.startswith("Fig. 2:") for d in details), details
    assert "Supplementary Fig. 3: 1 of 2 images of the chapter do not load (../_images/gone.png)" in details
    assert "Supplementary Fig. 3: the chapter does not mention it" in details
    assert "Fig. 3: the chapter page does not exist" in details
    assert any(d.startswith("Supplementary Fig. 4: no link to its chapter (chapter 9") for d in details)
    assert len(problems) == 4, details


def test_scorecard_page_missing(tmp_path):
    _write(tmp_path, {"index.html": _page("book", "<p>no scorecard</p>")})
    [problem] = browser.check_scorecard(tmp_path)
    assert problem.kind == "scorecard" and "does not exist" in problem.detail


@pytest.mark.parametrize("label, text, expected", [
    ("Fig. 2", "the ROC curves of Fig. 2a-c", True),
    ("Fig. 2", "see Supplementary Fig. 2", False),
    ("Fig. 2", "see Fig. 20", False),
    ("Fig. 3", "Figure 3 of the paper", True),
    ("Supplementary Fig. 4", "Supplementary Figs. 3 and 4", True),
    ("Supplementary Fig. 6", "Fig. 4 (and Supplementary Figs. 5-6)", True),
    ("Supplementary Fig. 4", "Fig. 4", False),
])
def test_figure_mentioned(label, text, expected):
    assert browser._figure_mentioned(label, text) is expected


def test_cli_check_html(faulty_site, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "screenshots").mkdir(parents=True)
    (run_dir / "screenshots" / "stale.png").write_bytes(b"")  # a page the book no longer has
    rc = cli.main(["check-html", "--profile", "quick", "--run-dir", str(run_dir), "--html", str(faulty_site),
                   "--timeout", "90"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "broken_image.html: image img/missing.png: did not load" in out
    assert "book/scorecard.html: scorecard: the scorecard page does not exist" in out
    assert out.rstrip().endswith(f"problem(s) on 12 of 13 pages of {faulty_site}; screenshots in "
                                 f"{run_dir / 'screenshots'}")
    assert sorted(p.name for p in (run_dir / "screenshots").iterdir()) == sorted(
        browser.screenshot_name(p) for p in browser.list_pages(faulty_site))


def test_cli_check_html_without_a_book(tmp_path, capsys):
    rc = cli.main(["check-html", "--run-dir", str(tmp_path / "run"), "--html", str(tmp_path / "absent")])
    assert rc == 2
    assert "no HTML page in" in capsys.readouterr().err
