"""The browser check of the built book (ctac_helpers.publish.browser): headless Chromium on hand-made pages with
known faults. The quick book itself is checked in test_end_to_end.py, which builds it.

Chromium and chromedriver come from Debian (`make browser`, which `make test` runs); without them these
tests fail with a message saying what to install.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ctac_helpers.publish import browser
from ctac_helpers.pipeline import cli

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


@pytest.fixture(scope="module")
def faulty_site(tmp_path_factory) -> Path:
    """Five pages: one clean, four with one kind of fault each (and a page under _static, not checked)."""
    root = tmp_path_factory.mktemp("site")
    (root / "img").mkdir()
    Image.new("RGB", (8, 6), "red").save(root / "img" / "ok.png")
    return _write(root, {
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
        "broken_image.html", "broken_link.html", "index.html", "js_error.html", "missing_anchor.html",
        "other/target.html"]
    assert browser.screenshot_name("other/target.html") == "other__target.png"


def test_clean_pages_pass(faulty_check):
    problems, _ = faulty_check
    pages = _by_page(problems)
    assert "index.html" not in pages, pages.get("index.html")
    assert "other/target.html" not in pages, pages.get("other/target.html")


def test_each_fault_is_found_on_its_page(faulty_check):
    problems, _ = faulty_check
    pages = _by_page(problems)
    assert set(pages) == {"broken_image.html", "broken_link.html", "missing_anchor.html", "js_error.html"}, problems

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
    rc = cli.main(["check-html", "--profile", "quick", "--run-dir", str(run_dir), "--html", str(faulty_site)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "broken_image.html: image img/missing.png: did not load" in out
    assert "book/scorecard.html: scorecard: the scorecard page does not exist" in out
    assert out.rstrip().endswith(f"problem(s) on 5 of 6 pages of {faulty_site}; screenshots in "
                                 f"{run_dir / 'screenshots'}")
    assert sorted(p.name for p in (run_dir / "screenshots").iterdir()) == sorted(
        browser.screenshot_name(p) for p in browser.list_pages(faulty_site))


def test_cli_check_html_without_a_book(tmp_path, capsys):
    rc = cli.main(["check-html", "--run-dir", str(tmp_path / "run"), "--html", str(tmp_path / "absent")])
    assert rc == 2
    assert "no HTML page in" in capsys.readouterr().err
