"""Numbered, captioned and downloadable figures and tables in the chapters.

A chapter shows each of its outputs with one call, which writes the file into the run directory and
displays it::

    from ctac_helpers.publish import figures

    figures.show_figure(rd, "supp_fig3", fig, "Supplementary Fig. 3 | AUC of the All model by subgroup",
                        tables=["supp_fig3"])
    figures.show_table(rd, "supp_table6", table6, "Supplementary Table 6 | AUC by site and CT protocol",
                       view=table6.assign(p=table6["p"].map(format_p)), precision=3)

Each call displays one output that carries two renderings of the same thing:

``text/markdown``
    MyST for the book: a ``{figure}`` directive on the PNG copy that ``ctac-book build`` stages under
    ``run/figures/`` (or a ``{table}`` directive holding a pipe table), named ``fig-<id>`` / ``tbl-<id>``
    so that Sphinx numbers it and ``{numref}`` can point at it, with its caption and ``{download}`` links
    to the staged ``run/figures/<id>.png`` and ``run/tables/<id>.csv``. The book renders it because
    ``_config.yml`` sets ``nb_render_markdown_format: myst`` and ranks ``text/markdown`` first.
``text/html``
    for Jupyter, where MyST is not rendered: the image (embedded) or the table, its caption and the files'
    paths in the run directory.

The links point at files the run has written; a missing file is an error here, at run time, rather than
a broken link (a Sphinx warning, hence a failed build) later.
"""

from __future__ import annotations

import base64
import html
import numbers
import re
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ctac_helpers.core.rundir import RunDir

#: Where the staged book keeps the run's tables and figures, relative to a chapter
#: (``notebooks/<name>.ipynb`` -> ``run/tables``, ``run/figures``; see :func:`ctac_helpers.publish.book.stage_source`).
RUN_PREFIX = "../run"

# ASCII punctuation that means something to MyST/CommonMark inside a table cell; escaped with a backslash.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}<>|$~])")
_CAPTION_ID = re.compile(r"^(?P<id>[^|]+?)\s*\|\s*(?P<text>.*)$", re.S)
# runs of ordinary white space (not the no-break spaces put in on purpose)
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
# "65 (57, 73)": a table cell may wrap before the quartiles, not between them
_NUMBER_PAIR = re.compile(r"(?<=\d),\s+(?=[-\u2212]?\d)")


def figure_label(figure_id: str) -> str:
    """The cross-reference label of figure ``figure_id`` (``{numref}`fig-<id>```)."""
    return f"fig-{figure_id}"


def table_label(table_id: str) -> str:
    """The cross-reference label of table ``table_id`` (``{numref}`tbl-<id>```)."""
    return f"tbl-{table_id}"


def escape_markdown(text: object) -> str:
    """``text`` as literal inline Markdown: special characters escaped, line breaks turned into spaces."""
    return _MD_SPECIAL.sub(r"\\\1", _SPACES.sub(" ", str(text)).strip(" "))


def caption_markdown(caption: str) -> str:
    """The caption in MyST, the paper's id before ``|`` in bold (``**Supplementary Fig. 3 |** AUC ...``).

    The caption is inline MyST written by the chapter (roles such as ``{cite}`` are allowed); it must hold
    no line break, because a figure's caption is its first paragraph and a table's is a directive argument.
    """
    caption = " ".join(caption.split())
    match = _CAPTION_ID.match(caption)
    if not match:
        return caption
    return f"**{match['id']} |** {match['text']}"


def caption_text(caption: str) -> str:
    """The caption as plain text (markup left in; for alt text and ``text/plain``)."""
    return " ".join(caption.split())


def _link(kind: str, relpath: str) -> str:
    name = relpath.rsplit("/", 1)[-1]
    return f"{{download}}`{kind} {name} <{RUN_PREFIX}/{relpath}>`"


def download_links(figure: str | None = None, tables: Iterable[str] = ()) -> str:
    """One line of ``{download}`` links to a figure's PNG and tables' CSVs, as staged in the book."""
    links = [] if figure is None else [_link("figure", f"figures/{figure}.png")]
    links += [_link("data" if figure is not None else "table", f"tables/{t}.csv") for t in tables]
    return "Download: " + " · ".join(links)


def figure_markdown(figure_id: str, caption: str, tables: Iterable[str] = (), alt: str | None = None,
                    width: str | None = None) -> str:
    """The MyST of a numbered figure on the staged PNG, with its caption and download links."""
    lines = [f"```{{figure}} {RUN_PREFIX}/figures/{figure_id}.png", f":name: {figure_label(figure_id)}",
             f":alt: {caption_text(alt if alt is not None else caption)}"]
    if width:
        lines.append(f":width: {width}")
    lines += ["", caption_markdown(caption), "", download_links(figure_id, tables), "```"]
    return "\n".join(lines) + "\n"


def _format_value(value: object, precision: int, formatter: str | Callable | None, na_rep: str) -> str:
    if formatter is None and not isinstance(value, (list, tuple, dict)) and pd.isna(value):
        return na_rep
    if formatter is not None:
        return formatter(value) if callable(formatter) else formatter.format(value)
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.{precision}f}"
    return str(value)


def format_frame(df: pd.DataFrame, precision: int = 2, formats: Mapping[str, str | Callable] | None = None,
                 na_rep: str = "") -> pd.DataFrame:
    """Every cell of ``df`` as display text (the index is dropped).

    Floats get ``precision`` decimals, booleans ``yes``/``no``, missing values ``na_rep``, other values
    ``str``; ``formats`` maps a column to a format string (``"{:,}"``) or a function of the value, applied
    to every cell of it.
    """
    formats = dict(formats or {})
    unknown = set(formats) - set(df.columns)
    if unknown:
        raise KeyError(f"formats for columns that the table does not have: {sorted(unknown)}")
    out = {str(col): [_format_value(v, precision, formats.get(col), na_rep) for v in df[col].tolist()]
           for col in df.columns}
    return pd.DataFrame(out, columns=[str(c) for c in df.columns])


def pipe_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A Markdown pipe table of cells that are already Markdown (the caller escapes them), without a final newline.

    Parameters
    ----------
    header : sequence of str
        The column headers.
    rows : iterable of sequence of str
        The rows, one cell per column.
    align : sequence of str, optional
        Each column's delimiter: ``---`` (the default), ``---:`` (right-aligned) or ``:---:``.

    Raises
    ------
    ValueError
        A row, or ``align``, that does not have one entry per column (named by its number, from 1).
    """
    header = list(header)
    align = ["---"] * len(header) if align is None else list(align)
    lines = [header, align, *(list(r) for r in rows)]
    for i, line in enumerate(lines[1:]):
        if len(line) != len(header):
            what = "align" if i == 0 else f"row {i}"
            raise ValueError(f"{what} has {len(line)} cells; the header has {len(header)} columns")
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def markdown_table(df: pd.DataFrame, precision: int = 2, formats: Mapping[str, str | Callable] | None = None,
                   na_rep: str = "") -> str:
    """A pipe table of ``df`` (no index; numeric columns right-aligned), its cells escaped.

    Underscores in the column names become spaces, so that headers read as words and can wrap.

    The space of a number pair such as the quartiles in ``65 (57, 73)`` becomes a no-break space, so that a
    narrow column wraps the cell before the parenthesis rather than inside it.
    """
    if df.shape[1] == 0:
        raise ValueError("a table needs at least one column")
    text = format_frame(df, precision, formats, na_rep)
    align = ["---:" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "---"
             for c in df.columns]
    # a column's name is a header for people: "measured_volume_ml" reads, and wraps, as "measured volume ml"
    header = [escape_markdown(c.replace("_", " ")) for c in text.columns]
    rows = [[escape_markdown(_NUMBER_PAIR.sub(",\u00a0", v)) for v in row] for row in text.itertuples(index=False)]
    return pipe_table(header, rows, align) + "\n"


def table_markdown(table_id: str, view: pd.DataFrame, caption: str, precision: int = 2,
                   formats: Mapping[str, str | Callable] | None = None, na_rep: str = "") -> str:
    """The MyST of a numbered table (a ``{table}`` directive holding a pipe table) and its download link."""
    # table-sm and small: the theme's (Bootstrap's) compact table, so that wide tables fit the page more often
    return (f"```{{table}} {caption_markdown(caption)}\n:name: {table_label(table_id)}\n:class: table-sm small\n\n"
            + markdown_table(view, precision, formats, na_rep) + "```\n\n" + download_links(tables=[table_id]) + "\n")


def _require(rd: RunDir, table_ids: Iterable[str]) -> list[str]:
    table_ids = list(table_ids)
    missing = [t for t in table_ids if not rd.table_path(t).is_file()]
    if missing:
        raise FileNotFoundError(f"tables {missing} are not in {rd.root / 'tables'}: write them (rd.write_table) "
                                "before linking them")
    return table_ids


def _files_html(paths: Iterable[str]) -> str:
    return "<p>Files in the run directory: " + ", ".join(f"<code>{html.escape(p)}</code>" for p in paths) + "</p>"


def _display(bundle: dict) -> None:
    from IPython.display import display

    display(bundle, raw=True)


def show_figure(rd: RunDir, figure_id: str, fig, caption: str, *, data: pd.DataFrame | None = None,
                tables: Iterable[str] = (), alt: str | None = None, width: str | None = None,
                dpi: int = 150) -> None:
    """Write ``fig`` as ``figures/<figure_id>.png`` and show it as a numbered figure with download links.

    Parameters
    ----------
    rd : RunDir
        The chapter's run directory.
    figure_id : str
        The paper's id (``supp_fig3``): the PNG's name and the label ``fig-<figure_id>``.
    fig : matplotlib.figure.Figure
        The figure; it is closed after saving, so Jupyter's inline backend does not show it a second time.
    caption : str
        ``"<the paper's id> | <what it shows>"``, e.g. ``"Supplementary Fig. 3 | AUC by subgroup"``.
    data : DataFrame, optional
        The figure's data, written as ``tables/<figure_id>.csv`` and linked.
    tables : iterable of str
        Further tables (already written) to link under the figure, e.g. the data written by an earlier cell.
    alt : str, optional
        Alternative text of the image; the caption by default.
    width : str, optional
        Display width (``"80%"``); the page's width by default.
    dpi : int
        Resolution of the PNG.
    """
    import matplotlib.pyplot as plt

    path = rd.write_figure(figure_id, fig, dpi=dpi)
    plt.close(fig)
    linked = []
    if data is not None:
        rd.write_table(figure_id, data)
        linked.append(figure_id)
    linked += [t for t in _require(rd, tables) if t not in linked]
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    text = caption_text(caption)
    page = (f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption_text(alt or caption))}"'
            f' style="max-width:100%"/><figcaption>{html.escape(text)}</figcaption></figure>'
            + _files_html([f"figures/{figure_id}.png"] + [f"tables/{t}.csv" for t in linked]))
    _display({"text/markdown": figure_markdown(figure_id, caption, linked, alt=alt, width=width),
              "text/html": page, "text/plain": text})


def show_table(rd: RunDir, table_id: str, df: pd.DataFrame, caption: str, *, view: pd.DataFrame | None = None,
               precision: int = 2, formats: Mapping[str, str | Callable] | None = None, na_rep: str = "",
               write: bool = True) -> None:
    """Write ``df`` as ``tables/<table_id>.csv`` and show it as a numbered table with a download link.

    Parameters
    ----------
    rd : RunDir
        The chapter's run directory.
    table_id : str
        The paper's id (``supp_table6``): the CSV's name and the label ``tbl-<table_id>``.
    df : DataFrame
        The tidy table written to the CSV.
    caption : str
        ``"<the paper's id> | <what it shows>"``.
    view : DataFrame, optional
        What the page shows instead of ``df`` (e.g. the paper's values beside the book's, p-values as
        text); its index is not shown (``reset_index()`` first to show it).
    precision, formats, na_rep
        Display of the cells: see :func:`format_frame`.
    write : bool
        False when an earlier cell already wrote ``tables/<table_id>.csv`` (it must exist).
    """
    if write:
        rd.write_table(table_id, df)
    else:
        _require(rd, [table_id])
    view = df if view is None else view
    text = caption_text(caption)
    shown = format_frame(view, precision, formats, na_rep)
    page = (f"<p><b>{html.escape(text)}</b></p>" + shown.to_html(index=False, escape=True)
            + _files_html([f"tables/{table_id}.csv"]))
    _display({"text/markdown": table_markdown(table_id, view, caption, precision, formats, na_rep),
              "text/html": page, "text/plain": text})


def display_table(df: pd.DataFrame, precision: int = 2, formats: Mapping[str, str | Callable] | None = None,
                  na_rep: str = "") -> None:
    """Show ``df`` as a plain table (no number, no file): formatted as :func:`format_frame` formats it.

    For the small tables a chapter shows beside its text (a summary, a preview), so that they read like the
    numbered ones rather than like pandas' own output (``72.000000``, ``None``, ``True``).
    """
    shown = format_frame(df, precision, formats, na_rep)
    # a {table} without a caption is not numbered; its class gives it the numbered tables' compact look
    _display({"text/markdown": "```{table}\n:class: table-sm small\n\n" + markdown_table(df, precision, formats, na_rep)
                               + "```\n",
              "text/html": shown.to_html(index=False, escape=True),
              "text/plain": shown.to_string(index=False)})
