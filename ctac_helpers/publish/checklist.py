"""The TRIPOD+AI reporting checklist page: each item, where this book answers it, and where the paper does.

The items live in ``data_manifest/tripod_ai.yaml`` (:func:`load_checklist` validates them);
``ctac-book build`` renders them as ``book/tripod_ai.md`` (:func:`checklist_page`) and checks, before
Jupyter Book runs, that every figure and table an item points at is on its chapter's page
(:func:`missing_anchors`). Links are MyST cross-references (``{numref}`` to a chapter's numbered figure or
table, ``{doc}`` to a page), so Sphinx, whose warnings fail the build, and the browser check
(:mod:`ctac_helpers.publish.browser`, every link's ``#fragment``) check them again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

from ctac_helpers.core import manifest
from ctac_helpers.publish.figures import figure_label, table_label
from ctac_helpers.core.stages import STAGES, Stage

logger = logging.getLogger(__name__)

__all__ = ["CHECKLIST_FILE", "GENERATED_PAGES", "checklist_page", "load_checklist", "missing_anchors"]

CHECKLIST_FILE = manifest.MANIFEST_DIR / "tripod_ai.yaml"
#: Book pages ``ctac-book build`` writes (:func:`ctac_helpers.publish.book.write_generated_pages`): valid link targets
#: although the repository's ``book/`` folder does not hold them.
GENERATED_PAGES = ("book/scorecard", "book/status", "book/generator_fit", "book/tripod_ai")
_ITEM_KEYS = {"id", "section", "topic", "applies", "asks", "book", "book_note", "paper", "paper_note"}
_REQUIRED = ("id", "section", "topic", "applies", "asks", "book", "paper")
_APPLIES = ("D", "E", "D;E")
_REPO_BOOK = Path(__file__).resolve().parents[2] / "book"


def _chapter_stages(stages: tuple[Stage, ...]) -> dict[str, Stage]:
    return {f"notebooks/{Path(s.notebook).stem}": s for s in stages}


def load_checklist(path: str | os.PathLike | None = None, stages: tuple[Stage, ...] = STAGES,
                   book_dir: str | os.PathLike = _REPO_BOOK) -> list[dict]:
    """The checklist's items, validated.

    Parameters
    ----------
    path : path-like, optional
        The YAML file (default ``data_manifest/tripod_ai.yaml``).
    stages : tuple of Stage
        The book's stages: a location ``{doc: notebooks/<stem>, figure: <id>}`` must name a figure (or table)
        that the stage of that notebook writes.
    book_dir : path-like
        The repository's ``book/`` folder: a location ``{doc: book/<name>}`` must be a page there or a
        generated page (:data:`GENERATED_PAGES`).

    Returns
    -------
    list of dict
        The items in the file's order; each location a dict with ``doc`` and optionally ``figure`` or ``table``.

    Raises
    ------
    ValueError
        Naming the item and field: a missing or unknown field, a duplicated id, an ``applies`` other than
        D, E or D;E, or a location that names an unknown page, figure or table.
    """
    path = Path(path) if path is not None else CHECKLIST_FILE
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = content.get("items")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path.name}: expected a non-empty list under 'items'")
    chapters = _chapter_stages(stages)
    pages = {f"book/{p.stem}" for p in Path(book_dir).glob("*.md")} | set(GENERATED_PAGES)
    seen: set[str] = set()
    out = []
    for n, item in enumerate(items, 1):
        where = f"{path.name}, item {n}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected a mapping with the fields {', '.join(_REQUIRED)}")
        where = f"{path.name}, item {item.get('id', n)!s}"
        missing = [k for k in _REQUIRED if k not in item]
        unknown = sorted(set(item) - _ITEM_KEYS)
        if missing or unknown:
            raise ValueError(f"{where}: " + (f"missing fields {missing}" if missing else f"unknown fields {unknown}; "
                                             f"allowed: {', '.join(sorted(_ITEM_KEYS))}"))
        item_id = str(item["id"])
        if item_id in seen:
            raise ValueError(f"{where}: the id {item_id!r} appears twice")
        seen.add(item_id)
        if item["applies"] not in _APPLIES:
            raise ValueError(f"{where}: applies must be one of {', '.join(_APPLIES)}, got {item['applies']!r}")
        for key in ("section", "topic", "asks"):
            if not isinstance(item[key], str) or not item[key].strip():
                raise ValueError(f"{where}: {key} must be non-empty text")
        if item["paper"] is not None and (not isinstance(item["paper"], str) or not item["paper"].strip()):
            raise ValueError(f"{where}: paper must be text (where the paper answers it) or null (not reported)")
        if not isinstance(item["book"], list):
            raise ValueError(f"{where}: book must be a list of locations ([] when the book does not answer it)")
        locations = [_check_location(where, loc, chapters, pages) for loc in item["book"]]
        out.append({**item, "id": item_id, "book": locations})
    return out


def _check_location(where: str, loc, chapters: Mapping[str, Stage], pages: set[str]) -> dict:
    if not isinstance(loc, Mapping) or "doc" not in loc or set(loc) - {"doc", "figure", "table"} \
            or ("figure" in loc and "table" in loc):
        raise ValueError(f"{where}: a book location is {{doc: <page>}} with at most one of figure or table, got {loc!r}")
    doc = str(loc["doc"])
    if doc in chapters:
        stage = chapters[doc]
        for kind, declared in (("figure", stage.figures), ("table", stage.tables)):
            if kind in loc and loc[kind] not in declared:
                raise ValueError(f"{where}: {doc} writes no {kind} {loc[kind]!r}; its {kind}s: {', '.join(declared)}")
    elif doc in pages:
        if "figure" in loc or "table" in loc:
            raise ValueError(f"{where}: {doc} is a page without numbered figures or tables of the run; link the page")
    else:
        raise ValueError(f"{where}: unknown page {doc!r}; chapters: {', '.join(chapters)}; pages: {', '.join(sorted(pages))}")
    return dict(loc)


def _anchor(loc: Mapping) -> str | None:
    if "figure" in loc:
        return figure_label(loc["figure"])
    if "table" in loc:
        return table_label(loc["table"])
    return None


def _chapter_name(doc: str) -> str:
    stem = Path(doc).name
    number = stem.split("_", 1)[0]
    return f"chapter {int(number)}" if number.isdigit() else stem.replace("_", " ")


def _location_markdown(loc: Mapping, docs: Collection[str] | None, page_dir: str) -> str:
    doc, anchor = loc["doc"], _anchor(loc)
    name = _chapter_name(doc)
    if docs is not None and doc not in docs:  # a page outside this book: named, not linked
        return f"{name}, {anchor}" if anchor else name
    if anchor:
        return f"{name}, {{numref}}`{anchor}`"
    target = os.path.relpath(doc, page_dir).replace(os.sep, "/")
    return f"{{doc}}`{target}`"  # shown as the page's title


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def checklist_page(items: list[dict], docs: Collection[str] | None = None, page_dir: str = "book") -> str:
    """The "Reporting checklist (TRIPOD+AI)" page (MyST Markdown).

    Parameters
    ----------
    items : list of dict
        :func:`load_checklist`.
    docs : collection of str, optional
        The book's documents (``_toc.yml`` entries without suffix); a location outside them is named, not
        linked. Default: link every location.
    page_dir : str
        Folder of the page in the book's source tree (``{doc}`` links are relative to it).
    """
    book_n = sum(bool(i["book"]) for i in items)
    paper_n = sum(i["paper"] is not None for i in items)
    neither = sum(not i["book"] and i["paper"] is None for i in items)
    parts = [
        "# Reporting checklist (TRIPOD+AI)",
        "",
        "TRIPOD+AI {cite:p}`collins2024tripodai` lists what a report of a clinical prediction model, built by "
        "regression or machine learning, should state: 27 items, several in parts. For each, the table gives "
        "where this book answers it (a chapter, and the figure or table that does) and where the paper does "
        "(its section, figure or table), or *not reported*. The column *Asks* is this book's one-line summary "
        "of the item, not the guideline's wording; beside each item's number and topic, D, E or D;E says whether "
        "it concerns a model's development, its evaluation or both. The page is generated from "
        "`data_manifest/tripod_ai.yaml` when the book is built, and the build checks that every linked figure "
        "and table is on its chapter's page.",
        "",
    ]
    counts = (f"**{book_n} of {len(items)}** items are answered by this book, **{paper_n} of {len(items)}** by the "
              f"paper; {neither} by neither.")
    only_book = [(i["id"], sorted({_chapter_name(loc["doc"]) for loc in i["book"]})) for i in items
                 if i["paper"] is None and i["book"]]
    if only_book:
        counts += (f" The book answers {len(only_book)} item{'s' if len(only_book) != 1 else ''} the paper does not "
                   "report: "
                   + ", ".join(f"{item_id} ({' and '.join(where)})" for item_id, where in only_book) + ".")
    parts += [counts, ""]
    header = ["Item", "Asks", "This book", "The paper"]
    section = None
    rows: list[list[str]] = []

    def flush():
        if rows:
            parts.extend(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                         + ["| " + " | ".join(r) + " |" for r in rows] + [""])
            rows.clear()

    for item in items:
        if item["section"] != section:
            flush()
            section = item["section"]
            parts += [f"## {section}", ""]
        book = "; ".join(_location_markdown(loc, docs, page_dir) for loc in item["book"]) or "*not reported*"
        if item.get("book_note"):
            book += f". {_cell(item['book_note'])}" if item["book"] else f": {_cell(item['book_note'])}"
        paper = _cell(item["paper"]) if item["paper"] is not None else "*not reported*"
        if item.get("paper_note"):
            paper += f". {_cell(item['paper_note'])}" if item["paper"] is not None else f": {_cell(item['paper_note'])}"
        rows.append([f"**{item['id']}** {_cell(item['topic'])} ({item['applies']})", _cell(item["asks"]), book, paper])
    flush()
    return "\n".join(parts)


def missing_anchors(items: list[dict], src: str | os.PathLike, docs: Collection[str]) -> list[str]:
    """The figures and tables the checklist links that are not on their chapter's staged page.

    Parameters
    ----------
    items : list of dict
        :func:`load_checklist`.
    src : path-like
        The staged source tree (``notebooks/<stem>.ipynb`` are the executed chapters).
    docs : collection of str
        The book's documents; locations outside them are not linked, hence not checked.

    Returns
    -------
    list of str
        ``"item <id>: <doc> has no <label>"`` for each missing one (empty when all are there).
    """
    src = Path(src)
    texts: dict[str, str] = {}
    problems = []
    for item in items:
        for loc in item["book"]:
            anchor = _anchor(loc)
            if anchor is None or loc["doc"] not in docs:
                continue
            doc = loc["doc"]
            if doc not in texts:
                path = src / f"{doc}.ipynb"
                texts[doc] = path.read_text(encoding="utf-8") if path.is_file() else ""
            if f":name: {anchor}" not in texts[doc]:
                problems.append(f"item {item['id']}: {doc} has no {anchor}")
    return problems
