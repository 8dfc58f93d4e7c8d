"""Input checks: a site's tables, its images' voxels and the stages' parameters, reported all at once.

Every problem is reported with the file, the row, the column, the offending value as written and
what was expected, so that an analyst can fix their data in one pass. This module holds the checks;
:mod:`ctac_helpers.pipeline.site` runs them over a site (``ctac-book validate`` and the check a run makes
before any stage writes) and :mod:`ctac_helpers.imaging.ingest` applies the voxel checks when it reads an
image.

Row numbers are spreadsheet rows, 1-based: the row a spreadsheet program shows when it opens the CSV
file. For a plain table the header is row 1 and the first data row is row 2. A table read with
:func:`read_table` may start with ``#`` comment lines (the ``ctac-book init-site`` templates do);
they are rows too, so with 40 comment lines the header is row 41 and the first data row row 42.
Blank lines count as rows (a spreadsheet shows them) but hold no data. A table read with
:func:`read_table` carries its data rows' numbers in ``df.attrs['rows']``; any other frame is
numbered as a plain table (its data row ``i``, 0-based, is row ``i + 2``). In a configuration file
(YAML) the row is the line of the offending key.

Cells are read as the text written in the file: only an empty cell is a missing value. ``NA``,
``NULL`` or ``<NA>`` are never turned into missing values (an id ``NA`` stays the id ``NA``; in a
number column they are reported as written).
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ctac_helpers.core import manifest

logger = logging.getLogger(__name__)

_MAX_PER_COLUMN = 20  # a column that is wrong everywhere is reported once per kind, with a count


@dataclass(frozen=True)
class Problem:
    """One validation finding; ``severity`` is ``'error'`` or ``'warning'``.

    ``kind`` is ``'table'`` (``row`` is a spreadsheet row, ``column`` a column) or ``'config'``
    (``row`` is a line of a YAML file, ``column`` a dotted key such as ``stages.models.n_folds``).
    """

    file: str
    row: int | None
    column: str
    value: str
    expected: str
    severity: str = "error"
    kind: str = "table"

    def __str__(self) -> str:
        if self.kind == "config":
            where = f"{self.file}" + (f", line {self.row}" if self.row is not None else "")
            return f"{self.severity}: {where}, key {self.column!r}: got {self.value}; expected {self.expected}"
        where = f"{self.file}" + (f", row {self.row}" if self.row is not None else "")
        return f"{self.severity}: {where}, column {self.column!r}: got {self.value}; expected {self.expected}"


class ValidationError(ValueError):
    """Raised with every error found; ``problems`` holds them (and the warnings)."""

    def __init__(self, problems: list[Problem], what: str = "the cohort table"):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = "\n".join(f"  - {p}" for p in errors[:200])
        more = f"\n  ... and {len(errors) - 200} more" if len(errors) > 200 else ""
        super().__init__(f"{len(errors)} problem(s) in {what}:\n{lines}{more}")


#: Id columns of the site tables (checked for spaces, case and spreadsheet damage).
ID_COLUMNS = ("patient_id", "scan_id")
#: Cell texts that many tools read as a missing value; here they are text like any other.
MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "<na>", "nat", "missing", "-", "?", "."})
#: Error values a spreadsheet writes into a cell whose formula failed.
SPREADSHEET_ERRORS = frozenset({"#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!",
                                "#CALC!", "#GETTING_DATA"})
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
_SCIENTIFIC_ID = re.compile(r"^[+-]?\d(\.\d+)?[eE][+-]?\d+$")


def spreadsheet_rows(df: pd.DataFrame) -> np.ndarray:
    """The spreadsheet row number of each data row of ``df`` (see the module docstring).

    ``df.attrs['rows']`` (set by :func:`read_table`) when it has one entry per row, else
    ``2, 3, ...`` (header = row 1).
    """
    rows = df.attrs.get("rows")
    if rows is not None and len(rows) == len(df):
        return np.asarray(rows, dtype=int)
    return np.arange(len(df)) + 2


def _header_row(df: pd.DataFrame) -> int:
    return int(df.attrs.get("header_row", 1))


def show(value) -> str:
    """A cell's value as a message shows it: as written, an empty cell named, a long one shortened."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "an empty cell"
    if isinstance(value, str) and (len(value) > 200 or "\n" in value):
        n_lines = value.count("\n") + 1
        span = f" over {n_lines} lines: an unmatched double quote?" if n_lines > 1 else ""
        return f"{value[:40]!r}... ({len(value)} characters{span})"
    return repr(value)


def report_problems(problems, file, column, mask, values, expected, severity="error", rows=None, hints=None):
    """Append one problem per row where ``mask`` is set (at most ``_MAX_PER_COLUMN``, then a count).

    ``values`` and ``mask`` are positional (data row ``i``); ``rows`` maps ``i`` to its spreadsheet
    row (default ``i + 2``); ``hints``, a function of the value, adds a likely cause to a row's
    expectation.
    """
    idx = np.flatnonzero(mask)
    if rows is None:
        rows = np.arange(len(mask)) + 2
    for i in idx[:_MAX_PER_COLUMN]:
        hint = hints(values[i]) if hints is not None else ""
        problems.append(Problem(file, int(rows[i]), column, show(values[i]), expected + hint, severity))
    if len(idx) > _MAX_PER_COLUMN:
        problems.append(Problem(file, None, column, f"{len(idx) - _MAX_PER_COLUMN} more rows like these",
                                expected, severity))


def unit_hint(unit: str | None, lo: float, hi: float, bad: np.ndarray) -> str:
    """A hint naming a likely unit mix-up when every out-of-range value fits after converting it.

    Recognised: HU stored with a +1024 offset, years given in months or in days, percentages given
    as fractions. Returns ``''`` when no conversion explains the values.
    """
    bad = np.asarray(bad, float)
    if not len(bad):
        return ""

    def fits(v):
        return bool(np.all((v >= lo) & (v <= hi)))

    if unit == "HU" and fits(bad - 1024):
        return (" (the values look shifted by +1024, i.e. stored values without the rescale intercept: "
                "subtract 1024)")
    if unit == "years" and fits(bad / 12):
        return " (the values look like months: give years)"
    if unit == "years" and fits(bad / 365.25):
        return " (the values look like days: give years, days / 365.25)"
    if unit == "%" and np.all(bad <= 1) and fits(bad * 100):
        return " (the values look like fractions: give percentages, e.g. 60 not 0.60)"
    return ""


def _median_hint(unit: str | None, plo: float, phi: float, med: float) -> str:
    for factor, what in ((1 / 12, "months: give years"), (1 / 365.25, "days: give years, days / 365.25")):
        if unit == "years" and plo <= med * factor <= phi:
            return f" (the values look like {what})"
    if unit == "%" and plo <= med * 100 <= phi:
        return " (the values look like fractions: give percentages, e.g. 60 not 0.60)"
    if unit == "HU" and plo <= med - 1024 <= phi:
        return " (the values look shifted by +1024: subtract 1024)"
    return " (e.g. a fraction instead of %, months instead of years)"


# -- reading a table ------------------------------------------------------------------------------
def _row_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _decode(path: Path, raw: bytes) -> str:
    """The file's text; a ValidationError naming what the bytes are when they are not UTF-8 CSV text."""
    file = str(path)

    def refuse(column, value, expected, row=None):
        raise ValidationError([Problem(file, row, column, value, expected)], what=file)

    save_as = "a CSV file saved as UTF-8 text ('CSV UTF-8 (Comma delimited)' in a spreadsheet's Save As)"
    if raw.startswith(b"PK\x03\x04"):
        refuse("(format)", "a zip archive such as an Excel workbook (.xlsx) or an OpenDocument sheet (.ods), "
               "not text", save_as)
    if raw.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        refuse("(format)", "an Excel 97-2003 workbook (.xls), not text", save_as)
    if raw.startswith(b"\x1f\x8b"):
        refuse("(format)", "a gzip-compressed file (.gz), not text",
               "the table itself: decompress it (gunzip) and name the .csv file in site.yaml")
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if raw.startswith(bom):
            refuse("(encoding)", f"{name} text (a byte-order mark {bom!r}; Excel's 'Unicode Text' is UTF-16)",
                   save_as)
    nul = raw.find(b"\x00")
    if nul >= 0:
        n = raw.count(b"\x00")
        quarter = len(raw) // 4
        if n >= quarter and (raw[1::2].count(b"\x00") > quarter or raw[0::2].count(b"\x00") > quarter):
            refuse("(encoding)", "UTF-16 text without a byte-order mark (every other byte is a NUL byte)", save_as)
        refuse("(encoding)", f"{n} NUL byte(s) (\\x00), the first in this row",
               "text without NUL bytes (a binary file, or one damaged by an interrupted copy?)",
               row=_row_of(raw, nul))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start:exc.start + 1]
        try:
            as_cp1252 = f" ({byte.decode('cp1252')!r} in Windows-1252, a spreadsheet's legacy 'CSV')"
        except UnicodeDecodeError:
            as_cp1252 = ""
        refuse("(encoding)", f"the byte {byte!r}{as_cp1252}, not UTF-8 text", save_as, row=_row_of(raw, exc.start))
    raise AssertionError("unreachable")


def _sniff_delimiter(lines: Sequence[str]) -> str:
    """The delimiter of a table's header and first lines: ``,``, ``;``, tab or ``|``.

    :class:`csv.Sniffer` decides when the header splits into several columns at its choice; otherwise
    the delimiter that splits the header into the most columns (a header holds no decimal commas).
    """
    columns = {d: len(next(csv.reader([lines[0]], delimiter=d))) for d in _DELIMITER_NAMES}
    try:
        sniffed = csv.Sniffer().sniff("".join(lines), delimiters="".join(_DELIMITER_NAMES)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed in columns and columns[sniffed] > 1:
        return sniffed
    best = max(columns, key=columns.get)
    return best if columns[best] > 1 else ","


def _swallowed_lines(record: Sequence[str], n_columns: int) -> int:
    """Lines of other rows inside one cell: a quote that was never closed takes in the rows below it.

    A quoted cell may hold a line break (free text); it is counted as swallowed rows only when its
    lines hold as many commas as a row of the table does.
    """
    for cell in record:
        if "\n" in cell or "\r" in cell:
            lines = cell.splitlines()[1:]
            rows = [ln for ln in lines if ln.count(",") >= max(n_columns - 1, 1) // 2]
            if rows:
                return len(lines)
    return 0


def read_table(path: str | os.PathLike, id_columns: Iterable[str] = ID_COLUMNS) -> pd.DataFrame:
    """Read a site's CSV table as text, skipping its leading ``#`` comment lines.

    Only the lines before the header are comment lines: a line starting with ``#`` (or a blank
    line) there is skipped; after the header every line is data. Rows whose cells are all empty
    (blank lines, a spreadsheet's trailing ``,,,`` rows) are dropped, as are columns without a name
    and without values (a spreadsheet's trailing ``,,,`` columns). Every cell is kept as the text
    written in the file; an empty cell (or one of spaces only) is a missing value and nothing else
    is: ``NA`` stays ``'NA'``.

    Parameters
    ----------
    path : path-like
        The CSV file (UTF-8, with or without a byte-order mark; LF or CRLF line ends).
    id_columns : iterable of str
        Kept for compatibility: every column is read as text.

    Returns
    -------
    DataFrame
        Cells as ``str`` (missing: NaN), with ``attrs['file']`` (the path), ``attrs['rows']`` (the
        spreadsheet row of each data row, counting the comment lines and the header, see the module
        docstring) and ``attrs['header_row']``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IsADirectoryError
        ``path`` is a folder.
    ValueError
        No header line.
    ValidationError
        A workbook rather than text, text that is not UTF-8 (UTF-16, a legacy code page, NUL
        bytes), a gzip-compressed file, another delimiter than the comma (named), a cell longer than the CSV reader's limit,
        repeated column names, a column without a name holding values, rows with more cells than
        the header, or a quote never closed, which takes in the rows below (every such row listed).
    """
    del id_columns  # every column is text
    path = Path(path)
    file = str(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not a table")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    raw = path.read_bytes()
    text = _decode(path, raw)
    buf = io.StringIO(text, newline="")
    n_skipped = 0
    while True:
        pos = buf.tell()
        line = buf.readline()
        if not line:
            raise ValueError(f"{path}: no header line; expected the column names after the '#' comment lines")
        if line.startswith("#") or not line.strip():
            n_skipped += 1
            continue
        break
    header_row = n_skipped + 1
    sample = [line] + [ln for ln in (buf.readline() for _ in range(20)) if ln]
    buf.seek(pos)
    delimiter = _sniff_delimiter(sample)
    if delimiter != "," and len(next(csv.reader([line]))) <= 1:
        name = _DELIMITER_NAMES[delimiter]
        decimal = " (and write decimals with a point: 62.5, not 62,5)" if delimiter == ";" else ""
        raise ValidationError([Problem(
            file, header_row, "(delimiter)",
            f"a {name}-delimited file (the header {line.strip()[:60]!r} is one column when split at commas)",
            "columns separated by commas: save as 'CSV UTF-8 (Comma delimited)', or set the list separator "
            f"to ','{decimal}")], what=file)
    reader = csv.reader(buf)
    problems: list[Problem] = []
    header = next(reader)
    records, rows = [], []
    k = -1
    try:
        for k, rec in enumerate(reader):
            row = header_row + 1 + k  # one record = one spreadsheet row, even when a quoted cell spans lines
            if not any(cell.strip() for cell in rec):
                continue
            if len(rec) > len(header):
                problems.append(Problem(file, row, "(row)", f"{len(rec)} cells",
                                        f"at most {len(header)} cells, one per header column (an unquoted comma "
                                        "inside a value?)"))
                continue
            swallowed = _swallowed_lines(rec, len(header))
            if swallowed:
                problems.append(Problem(file, row, "(row)", f"a quoted cell that runs on over {swallowed} more "
                                        "lines, taking in the rows below", "a closing double quote in the same "
                                        "row (an unmatched double quote?)"))
                continue
            records.append(rec + [""] * (len(header) - len(rec)))
            rows.append(row)
    except csv.Error as exc:
        limit = csv.field_size_limit()
        what = (f"a cell of more than {limit} characters" if "field limit" in str(exc)
                else f"a line the CSV reader cannot read ({exc})")
        problems.append(Problem(file, header_row + 2 + k, "(cell)", what,
                                "cells of ordinary length (an unmatched double quote that runs on over the rows "
                                "below?)"))
    seen: dict[str, str] = {}
    keep = []
    for j, name in enumerate(header):
        if not name.strip():
            if any(rec[j].strip() for rec in records):
                problems.append(Problem(file, header_row, f"(column {j + 1})", "a column without a name holding values",
                                        "a name in the header for every column with values"))
            continue  # a spreadsheet's empty trailing column
        norm = name.strip().casefold()
        if name in seen.values():
            problems.append(Problem(file, header_row, name, "a repeated column name", "each column once"))
        elif norm in seen:
            problems.append(Problem(file, header_row, name, f"a repeated column name ({seen[norm]!r} and {name!r} "
                                    "differ only in case or spaces)", "each column once"))
        seen.setdefault(norm, name)
        keep.append(j)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems, what=file)
    columns = [header[j] for j in keep]
    data = np.array([[rec[j] for j in keep] for rec in records], dtype=object).reshape(len(records), len(keep))
    df = pd.DataFrame(data, columns=columns, dtype=object)
    df = df.mask(df.apply(lambda col: col.str.strip() == ""))
    df.attrs["file"] = file
    df.attrs["rows"] = rows
    df.attrs["header_row"] = header_row
    return df


# -- cell values ----------------------------------------------------------------------------------
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")
_PERCENT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*$")
_WITH_UNIT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*([^\d\s.,+-][^\d]*)$")
_DATES = (
    (re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?\s*$"), ("y", "m", "d")),
    (re.compile(r"^\s*(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?\s*$"), ("a", "b", "y")),
)


def parse_date(text: str) -> _dt.date | None:
    """The date a cell holds (ISO ``2024-05-01``, ``01/05/2024``, ``05.01.2024``), or None.

    Day-month order is ambiguous in ``01/05/2024``; either reading is a date, and the latest of the
    readings is returned (to tell whether the date may lie in the future).
    """
    if not isinstance(text, str):
        return None
    for pattern, order in _DATES:
        m = pattern.match(text)
        if not m:
            continue
        parts = dict(zip(order, map(int, m.groups())))
        if "m" in parts:
            candidates = [(parts["y"], parts["m"], parts["d"])]
        else:
            candidates = [(parts["y"], parts["b"], parts["a"]), (parts["y"], parts["a"], parts["b"])]
        dates = []
        for y, mo, d in candidates:
            try:
                dates.append(_dt.date(y, mo, d))
            except ValueError:
                pass
        if dates:
            return max(dates)
    return None


def _missing_word_hint(text: str, nullable: bool) -> str:
    if text.strip().casefold() in MISSING_WORDS:
        return (" (for a missing value leave the cell empty: only an empty cell is missing)" if nullable
                else " (this column needs a value in every row; an empty cell or a word such as NA is not one)")
    if text.strip() in SPREADSHEET_ERRORS:
        return " (a spreadsheet's error value: the formula behind this cell failed)"
    return ""


def number_hint(value, unit: str | None = None, nullable: bool = True, today: _dt.date | None = None) -> str:
    """A likely cause when a cell is not a number: a decimal comma, a unit or '%' in the cell, a date,
    a word for a missing value, a spreadsheet error. ``''`` when none applies."""
    if not isinstance(value, str):
        return ""
    unit_text = f" in {unit}" if unit else ""
    if _DECIMAL_COMMA.match(value):
        return f" (a decimal comma: write {value.strip().replace(',', '.')})"
    m = _PERCENT.match(value)
    if m:
        return f" (write {m.group(1)} without '%')"
    date = parse_date(value)
    if date is not None:
        future = " in the future" if date > (today or _dt.date.today()) else ""
        return f" (a date{future}; this column holds a number{unit_text}, not a date)"
    m = _WITH_UNIT.match(value)
    if m and m.group(2).strip().casefold() not in MISSING_WORDS:
        return f" (write {m.group(1)} without the unit {m.group(2).strip()!r}; the column's unit is {unit or 'none'})"
    return _missing_word_hint(value, nullable)


def category_hint(value, allowed: Sequence[str], others: Iterable = (), nullable: bool = True) -> str:
    """A likely cause when a cell is not one of ``allowed``: another case or spaces, an abbreviation
    or a numeric code (``others``: the column's values, to tell a column coded two ways)."""
    if not isinstance(value, str):
        return ""
    folded = value.strip().casefold()
    for a in allowed:
        if folded == str(a).casefold():
            return f" (write {a!r}: labels are exact, in this case and without spaces)"
    prefixed = [a for a in allowed if folded and str(a).casefold().startswith(folded)]
    if len(prefixed) == 1:
        both = any(isinstance(v, str) and v in allowed for v in others)
        two_ways = "; the column also has full labels: it is coded two ways, use one" if both else ""
        return f" (an abbreviation of {prefixed[0]!r}? write {prefixed[0]!r}{two_ways})"
    if re.fullmatch(r"\s*\d+(\.0+)?\s*", value):
        return " (a numeric code: write the label itself)"
    return _missing_word_hint(value, nullable)


def _flag_hint(value) -> str:
    if isinstance(value, str) and value.strip().casefold() in {"yes", "no", "y", "n", "true", "false", "t", "f"}:
        return " (a flag: not yes/no or true/false)"
    return ""


def check_ids(df: pd.DataFrame, column: str, file: str, what: str = "id") -> list[Problem]:
    """Problems of an id column read as text: spaces, case, spreadsheet damage, duplicates.

    Errors: an id with leading or trailing spaces or a line break, a spreadsheet error value
    (``#N/A``), a long number a spreadsheet turned into scientific notation (``1.23E+11``), an id
    that differs from an earlier row's only in case, and the same id twice. A warning: an id spelled
    like a missing value (``NA``, ``NULL``, ``<NA>``), which is kept as that id.

    Parameters
    ----------
    df : DataFrame
        The table (rows numbered by :func:`spreadsheet_rows`).
    column : str
        The id column.
    file : str
        Name used in the problems.
    what : str
        The id's name in the messages (``patient id``, ``scan id``).

    Returns
    -------
    list of Problem
    """
    if column not in df.columns:
        return []
    rows = spreadsheet_rows(df)
    values = df[column].to_numpy(dtype=object)
    present = df[column].notna().to_numpy()
    text = np.array([v if isinstance(v, str) else str(v) for v in values], dtype=object)
    problems: list[Problem] = []

    def flag(test, expected, severity="error"):
        mask = np.array([test(t) for t in text], dtype=bool) & present
        if mask.any():
            report_problems(problems, file, column, mask, values, expected, severity, rows=rows)

    flag(lambda t: t != t.strip(), f"a {what} without leading or trailing spaces (ids are "
         "compared exactly: the scan manifest and the cohort table must spell each id alike)")
    flag(lambda t: "\n" in t.strip() or "\t" in t.strip(), f"a {what} on one line, without tabs")
    flag(lambda t: t.strip() in SPREADSHEET_ERRORS, f"a {what}, not a spreadsheet's error value")
    flag(lambda t: bool(_SCIENTIFIC_ID.match(t.strip())), f"the {what} as written at the source (a spreadsheet "
         "showed a long number in scientific notation and saved it so: format the column as text and export again)")
    flag(lambda t: t.strip().casefold() in MISSING_WORDS,
         f"a {what}; it is kept as this text, though many tools read it as a missing value", "warning")
    dup = df[column].duplicated(keep=False).to_numpy() & present
    if dup.any():
        report_problems(problems, file, column, dup, values, f"a unique {what}", rows=rows)
    folded = [t.strip().casefold() for t in text]
    first: dict[str, int] = {}
    for i in np.flatnonzero(present):
        first.setdefault(folded[i], i)
    # spaces are reported above; here the ids that differ from an earlier row's only in case
    near = np.flatnonzero([present[i] and text[first[folded[i]]].strip() != text[i].strip()
                           for i in range(len(text))])
    for i in near[:_MAX_PER_COLUMN]:
        j = first[folded[i]]
        problems.append(Problem(file, int(rows[i]), column, show(values[i]),
                                f"one spelling per {what}: row {int(rows[j])} has {text[j]!r}, which differs "
                                "only in case"))
    if len(near) > _MAX_PER_COLUMN:
        problems.append(Problem(file, None, column, f"{len(near) - _MAX_PER_COLUMN} more rows like these",
                                f"one spelling per {what}"))
    return problems


def id_mismatch_hint(value, known: Iterable[str]) -> str:
    """When ``value`` matches a known id only after ignoring case and spaces, a hint naming it."""
    if not isinstance(value, str):
        return ""
    folded = value.strip().casefold()
    for k in known:
        if k.strip().casefold() == folded:
            return f" (the cohort table has {k!r}: ids must match exactly, case and spaces included)"
    return ""


def column_name_problems(df: pd.DataFrame, schema: pd.DataFrame, file: str) -> tuple[list[Problem], set[str]]:
    """Columns whose names match a schema column only after ignoring case and spaces (``' Age'``).

    Returns the problems and the schema names they stand for (not reported again as missing).
    """
    problems, meant = [], set()
    by_folded = {str(n).casefold(): n for n in schema.index}
    for c in df.columns:
        if c in schema.index:
            continue
        name = by_folded.get(str(c).strip().casefold())
        if name is not None and name not in df.columns:
            problems.append(Problem(file, _header_row(df), str(c), f"the column name {c!r}",
                                    f"{name!r} (column names are exact: this case, no spaces)"))
            meant.add(name)
    return problems, meant


# -- the cohort table -----------------------------------------------------------------------------
def validate_cohort(df: pd.DataFrame, file: str = "cohort table", optional: Iterable[str] = (),
                    log_warnings: bool = True, extra_categories: Mapping[str, Iterable[str]] | None = None
                    ) -> list[Problem]:
    """Check a cohort table against the schema; return every problem found (errors and warnings).

    Checks: required columns present (a column named in another case or with spaces is named as
    such); unknown columns (warning); types (numbers, 0/1 flags, category labels), each failure
    with its likely cause where one is recognised (a decimal comma, a unit or '%' in the cell, a
    date, possibly in the future, a word for a missing value, another case, an abbreviation such as
    ``M`` for ``male`` when the column is coded two ways, a numeric code); allowed ranges, with a
    hint when the values look like another unit (HU with a +1024 offset, months or days instead of
    years, fractions); values in the wrong unit (a column whose median lies outside its plausible
    range, e.g. age in months, follow-up in days or TPD as a fraction, checked from 10 values on);
    missing values where not allowed; patient ids (:func:`check_ids`: spaces, case, duplicates,
    spreadsheet damage); follow-up times <= 0; deaths without follow-up time.

    Parameters
    ----------
    df : DataFrame
        The table; rows are numbered by :func:`spreadsheet_rows`.
    file : str
        Name used in the problems.
    optional : iterable of str
        Schema columns that may be absent or empty here although the schema requires them (a site's
        cohort table need not hold the CT values the book measures on the scans).
    log_warnings : bool
        Log each warning (callers that report the problems themselves pass False).
    extra_categories : mapping of str to iterable of str, optional
        Labels allowed in a category column besides the schema's, e.g. ``{"site": ["MyHospital"]}``
        (a site's own name, declared as ``site.labels`` in its configuration).

    Returns
    -------
    list of Problem
    """
    schema = manifest.cohort_schema().copy()
    extra_categories = {k: list(v) for k, v in (extra_categories or {}).items()}
    optional = [c for c in optional if c in schema.index]
    schema.loc[optional, "required"] = False
    schema.loc[optional, "nullable"] = True
    rows = spreadsheet_rows(df)
    problems, meant = column_name_problems(df, schema, file)
    missing = [c for c in schema.index[schema["required"]] if c not in df.columns and c not in meant]
    for c in missing:
        problems.append(Problem(file, None, c, "column missing", f"a column {c!r} ({schema.loc[c, 'description']})"))
    renamed = {p.column for p in problems}
    for c in df.columns:
        if c not in schema.index and c not in renamed:
            problems.append(Problem(file, None, c, "unknown column",
                                    "only the schema's columns (data_manifest/cohort_schema.yaml); it is ignored",
                                    "warning"))
    for name, col in schema.iterrows():
        if name not in df.columns:
            continue
        raw = df[name]
        values = raw.to_numpy(dtype=object)
        isnull = raw.isna().to_numpy()
        nullable = bool(col["nullable"])
        if not nullable and isnull.any():
            report_problems(problems, file, name, isnull, values, "a value (this column may not be empty)", rows=rows)
        present = ~isnull
        kind = col["type"]
        unit = col["unit"] if isinstance(col["unit"], str) else ""
        if kind in ("float", "int", "binary"):
            num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
            bad_type = present & np.isnan(num)
            if bad_type.any():
                if kind == "binary":
                    report_problems(problems, file, name, bad_type, values, "0 or 1", rows=rows,
                            hints=lambda v: _flag_hint(v) or _missing_word_hint(str(v), nullable))
                else:
                    report_problems(problems, file, name, bad_type, values, f"a number ({kind})", rows=rows,
                            hints=lambda v: number_hint(v, unit, nullable))
            infinite = present & np.isinf(num)
            if infinite.any():
                report_problems(problems, file, name, infinite, values, "a finite number", rows=rows)
            ok = present & np.isfinite(num)
            if kind == "binary":
                bad = ok & ~np.isin(num, (0.0, 1.0))
                if bad.any():
                    report_problems(problems, file, name, bad, values, "0 or 1", rows=rows)
            elif isinstance(col["range"], list):
                lo, hi = col["range"]
                unit_text = f" {unit}" if unit else ""
                if name == "followup_years":  # reported by the follow-up check below
                    ok = ok & (num > 0)
                bad = ok & ((num < lo) | (num > hi))
                if bad.any():
                    hint = unit_hint(col["unit"], lo, hi, num[bad])
                    report_problems(problems, file, name, bad, values, f"a value in [{lo}, {hi}]{unit_text}{hint}",
                            rows=rows)
                if isinstance(col["plausible"], list) and ok.sum() >= 10:
                    plo, phi = col["plausible"]
                    med = float(np.median(num[ok]))
                    if not plo <= med <= phi:
                        problems.append(Problem(file, None, name, f"median {med:g}",
                                                f"a median in [{plo}, {phi}]{unit_text}: is the column in "
                                                "another unit?" + _median_hint(col["unit"], plo, phi, med)))
        elif kind == "category":
            allowed = list(col["categories"]) + [c for c in extra_categories.get(name, [])
                                                 if c not in col["categories"]]
            bad = present & ~np.isin(raw.astype(str).to_numpy(), allowed)
            if bad.any():
                report_problems(problems, file, name, bad, values, f"one of {allowed}", rows=rows,
                        hints=lambda v: category_hint(v, allowed, values, nullable))
    problems += check_ids(df, "patient_id", file, "patient id")
    if "followup_years" in df.columns:
        time = pd.to_numeric(df["followup_years"], errors="coerce").to_numpy(float)
        not_positive = time <= 0
        if not_positive.any():
            report_problems(problems, file, "followup_years", not_positive, df["followup_years"].to_numpy(dtype=object),
                    "a follow-up time > 0 years (from the scan to death or censoring)", rows=rows)
    if {"death", "followup_years"} <= set(df.columns):
        died = pd.to_numeric(df["death"], errors="coerce").to_numpy(float) == 1
        no_time = died & pd.to_numeric(df["followup_years"], errors="coerce").isna().to_numpy()
        if no_time.any():
            report_problems(problems, file, "followup_years", no_time, df["followup_years"].to_numpy(dtype=object),
                    "a time to death for every patient with death = 1", rows=rows)
    if log_warnings:
        for p in problems:
            if p.severity == "warning":
                logger.warning("%s", p)
    return problems


def require_valid_cohort(df: pd.DataFrame, file: str = "cohort table") -> pd.DataFrame:
    """Validate and return ``df``; raise :class:`ValidationError` listing every error."""
    problems = validate_cohort(df, file)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems)
    return df


# -- image voxels ---------------------------------------------------------------------------------
def _spans(indices: Sequence[int]) -> str:
    """``1, 4-6, 9`` for the 1-based indices given (sorted)."""
    out, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            out.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(out)


def nonfinite_voxels(arr: np.ndarray, slice_axis: int = 0) -> str | None:
    """Where an image holds NaN or infinite voxels, named by slice; None when every voxel is finite.

    Parameters
    ----------
    arr : numpy.ndarray
        The voxels (any dtype; integer images are always finite).
    slice_axis : int
        The axis that numbers the slices (0 for a SimpleITK array, 2 for a NIfTI file's own order).
    """
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if not n_bad:
        return None
    n_nan = int(np.isnan(arr).sum())
    kinds = " and ".join(f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_bad - n_nan, "infinite")) if n)
    if n_bad == arr.size:
        return f"every voxel is {'NaN' if n_nan == n_bad else 'NaN or infinite'} (an empty or failed export?)"
    per_slice = np.moveaxis(bad, slice_axis, 0).reshape(arr.shape[slice_axis], -1).any(axis=1)
    slices = (np.flatnonzero(per_slice) + 1).tolist()
    return (f"{kinds} voxel(s) in {len(slices)} of {len(per_slice)} slices (slice {_spans(slices)}, counted from 1 "
            "in the file's order)")


def constant_volume(arr: np.ndarray) -> str | None:
    """``'every voxel is 0 (a constant volume)'`` when all voxels share one value, else None."""
    if arr.size and arr.min() == arr.max():
        return f"every voxel is {float(arr.flat[0]):g} (a constant volume: a blank or failed export?)"
    return None


CT_VOXELS_EXPECTED = "finite HU values in every voxel, varying from air to tissue"


def nifti_voxel_problem(path: str | os.PathLike) -> str | None:
    """NaN or infinite voxels of a floating-point NIfTI file, read with nibabel; None when there are none.

    ITK reads NaN voxels of a NIfTI file as 0 (0 HU: water), so the file's own values are checked.
    Integer files are not read (they hold no NaN).
    """
    import nibabel  # deferred: only floating-point NIfTI files need it

    img = nibabel.load(str(path))
    if not np.issubdtype(img.get_data_dtype(), np.floating):
        return None
    arr = np.asanyarray(img.dataobj)
    return nonfinite_voxels(arr, slice_axis=2 if arr.ndim >= 3 else 0)


def label_value_problem(arr: np.ndarray, kind: str = "labels") -> str | None:
    """What is wrong with a label image's values, or None.

    Parameters
    ----------
    arr : numpy.ndarray
        The label voxels as stored (before any cast to an unsigned type).
    kind : {'labels', 'mask'}
        ``labels``: a multilabel map, whose values must be 0 (background) or class ids of
        ``data_manifest/structures.yaml``; ``mask``: a mask (pericardium, one structure), whose
        values must be non-negative integers (0 outside).
    """
    if kind not in ("labels", "mask"):
        raise ValueError(f"unknown label kind {kind!r}; allowed: 'labels', 'mask'")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all() or not np.array_equal(arr, np.round(arr)):
            return "label values must be integers; got non-integer values (a probability map or a resampled mask?)"
    if not arr.size:
        return None
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        neg = np.unique(arr[arr < 0])
        shown = ", ".join(f"{v:g}" for v in neg[:5].astype(float)) + (" ..." if len(neg) > 5 else "")
        return (f"negative label values ({shown}); expected 0 for the background and "
                + ("the class ids of data_manifest/structures.yaml" if kind == "labels" else "positive values inside"))
    if kind == "mask":
        return None
    ids = manifest.class_map()
    if hi <= max(ids) and set(range(1, max(ids) + 1)) <= set(ids):
        return None
    present = np.unique(arr)
    outside = [v for v in present.astype(float) if v != 0 and int(v) not in ids]
    if not outside:
        return None
    shown = ", ".join(f"{v:g}" for v in outside[:5]) + (" ..." if len(outside) > 5 else "")
    return (f"label values outside the class map ({shown}); expected 0 for the background and the "
            f"TotalSegmentator v2 class ids {min(ids)}-{max(ids)} of data_manifest/structures.yaml")


#: The class the CAC and EAT measurements need in a label map.
HEART = "heart"


def heart_problem(arr: np.ndarray) -> str | None:
    """``'no heart ...'`` when a label map has no voxel of the heart class, else None."""
    heart = manifest.structure_id(HEART)
    if (np.asarray(arr) == heart).any():
        return None
    return f"no heart (class {heart} {HEART!r} has no voxel)"


# -- the stages' parameters -----------------------------------------------------------------------
_CONSTRAINT = re.compile(r"\s*\[([^\[\]]+)\]\s*$")
_NUMBER = r"([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
_BOUND = re.compile(rf"^(at least|more than|at most|less than)\s+{_NUMBER}$")
_INTERVAL = re.compile(rf"^{_NUMBER}\s+to\s+{_NUMBER}$")
_LIST = re.compile(r"^(\d+) (integers|numbers),?\s*(?:each\s+)?(.*)$")
_TYPE_TEXT = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false", "list": "a list"}
# Words rather than >= and <=: papermill's inspection gives up on a parameter line holding a second '='.
_OPS = {"at least": (lambda a, b: a >= b), "more than": (lambda a, b: a > b),
        "at most": (lambda a, b: a <= b), "less than": (lambda a, b: a < b)}


@dataclass(frozen=True)
class ParameterSpec:
    """A notebook parameter as its ``parameters`` cell declares it.

    The cell's line ``n_folds: int = 10  # outer folds [at least 2]`` declares the type (the
    annotation, read by papermill's ``inspect_notebook``) and, in brackets at the end of its
    comment, the allowed values: bounds (``[at least 2]``, ``[more than 0, less than 1]``,
    ``[0 to 1]``, i.e. at least 0 and at most 1), choices (``[one of: synthetic, imaging]``) or,
    for a list, its length and its items (``[3 integers, each at least 8]``).
    """

    name: str
    notebook: str
    type: str
    bounds: tuple = ()
    choices: tuple = ()
    length: int | None = None
    item: str | None = None
    help: str = field(default="", compare=False)

    def expected(self) -> str:
        """What a value must be, in words (``an integer, at least 2``)."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        bounds = " and ".join(f"{op} {num:g}" for op, num in self.bounds)
        if [op for op, _ in self.bounds] == ["at least", "at most"]:
            bounds = f"from {self.bounds[0][1]:g} to {self.bounds[1][1]:g}"
        if self.type == "list" and self.item:
            items = f"{self.length} {'integers' if self.item == 'int' else 'numbers'}" if self.length else \
                f"{'integers' if self.item == 'int' else 'numbers'}"
            return f"a list of {items}" + (f", each {bounds}" if bounds else "")
        base = _TYPE_TEXT.get(self.type, f"a value of type {self.type}" if self.type else "a value")
        return base + (f", {bounds}" if bounds else "")

    def _number_ok(self, value, kind: str) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if kind == "int" and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return all(_OPS[op](value, num) for op, num in self.bounds)

    def accepts(self, value) -> bool:
        """Whether ``value`` (as YAML gives it) has the declared type and lies in the declared range."""
        if self.choices:
            return isinstance(value, str) and value in self.choices
        if self.type in ("int", "float"):
            return self._number_ok(value, self.type)
        if self.type == "str":
            return isinstance(value, str)
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "list":
            if not isinstance(value, list) or (self.length is not None and len(value) != self.length):
                return False
            return self.item is None or all(self._number_ok(v, self.item) for v in value)
        return True  # an undeclared type (papermill's 'None'): nothing to check


def parse_parameter(name: str, inspected: Mapping, notebook: str) -> ParameterSpec:
    """A :class:`ParameterSpec` from papermill's inspection of one parameter.

    Raises
    ------
    ValueError
        The bracketed constraint at the end of the parameter's comment is not one this module reads.
    """
    kind = str(inspected.get("inferred_type_name") or "")
    kind = "" if kind == "None" else kind
    help_text = str(inspected.get("help") or "")
    m = _CONSTRAINT.search(help_text)
    if not m:
        return ParameterSpec(name, notebook, kind, help=help_text)
    text = m.group(1).strip()
    if text.startswith("one of:"):
        choices = tuple(c.strip() for c in text[len("one of:"):].split(",") if c.strip())
        return ParameterSpec(name, notebook, kind, choices=choices, help=help_text)
    length = item = None
    lm = _LIST.match(text)
    if lm:
        length, item, text = int(lm.group(1)), ("int" if lm.group(2) == "integers" else "float"), lm.group(3)
    bounds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        bm, im = _BOUND.match(part), _INTERVAL.match(part)
        if bm:
            bounds.append((bm.group(1), float(bm.group(2))))
        elif im:
            bounds += [("at least", float(im.group(1))), ("at most", float(im.group(2)))]
        else:
            raise ValueError(f"{notebook}: parameter {name!r}: cannot read the constraint [{m.group(1)}]; expected "
                             "bounds such as [at least 2], [more than 0, less than 1] or [0 to 1], choices such as "
                             "[one of: a, b], or a list such as [3 integers, each at least 8]")
    return ParameterSpec(name, notebook, kind, tuple(bounds), (), length, item, help_text)


def parameter_specs(inspected: Mapping[str, Mapping], notebook: str) -> dict[str, ParameterSpec]:
    """Every parameter of a notebook from papermill's ``inspect_notebook`` result."""
    return {name: parse_parameter(name, entry, notebook) for name, entry in inspected.items()}


def read_parameter_specs(notebook_path: str | os.PathLike) -> dict[str, ParameterSpec]:
    """The parameters a notebook's ``parameters`` cell declares, with their types and allowed values."""
    path = Path(notebook_path)
    stat = path.stat()
    return dict(_specs_of(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _specs_of(path: str, mtime_ns: int, size: int) -> dict[str, ParameterSpec]:
    del mtime_ns, size  # part of the cache key: an edited notebook is inspected again
    import papermill  # deferred: importing papermill is slow

    return parameter_specs(papermill.inspect_notebook(path), Path(path).name)


def _yaml_lines(path: str | os.PathLike) -> dict[tuple, int]:
    """The 1-based line of every key of a YAML file, by its path of keys (``('stages', 'models', 'n_folds')``)."""
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[tuple, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = prefix + (key.value,)
                lines[k] = key.start_mark.line + 1
                walk(value, k)

    walk(root, ())
    return lines


def stage_parameter_problems(stage: str, params: Mapping, specs: Mapping[str, ParameterSpec],
                             source: str = "configuration", lines: Mapping[tuple, int] | None = None
                             ) -> list[Problem]:
    """Problems of one stage's parameters: undeclared names, wrong types, values out of range.

    Parameters
    ----------
    stage : str
        The stage's name (the key under ``stages:``).
    params : mapping
        The parameters the configuration sets for the stage.
    specs : mapping of str to ParameterSpec
        The stage notebook's declared parameters (:func:`read_parameter_specs`).
    source : str
        The file that sets them, named in the problems.
    lines : mapping, optional
        Lines of the source's keys (:func:`_yaml_lines`), to name the line of each problem.

    Returns
    -------
    list of Problem
        Of kind ``'config'``, keyed ``stages.<stage>.<parameter>``.
    """
    lines = lines or {}
    problems = []
    for name, value in params.items():
        key = f"stages.{stage}.{name}"
        line = lines.get(("stages", stage, name))
        spec = specs.get(name)
        if spec is None:
            allowed = ", ".join(sorted(p for p in specs if p != "run_dir")) or "(none)"
            notebook = next(iter(specs.values())).notebook if specs else "the stage's notebook"
            problems.append(Problem(source, line, key, f"{name!r}, which is not declared in the parameters cell of "
                                    f"{notebook}", f"one of its parameters: {allowed}", kind="config"))
            continue
        if not spec.accepts(value):
            problems.append(Problem(source, line, key, repr(value),
                                    f"{spec.expected()} ({spec.notebook} declares {name}: {spec.type or 'any'})",
                                    kind="config"))
    return problems


def config_parameter_problems(config: Mapping, stages, notebooks_dir: str | os.PathLike,
                              layers: Sequence[tuple[str, Mapping]] = ()) -> list[Problem]:
    """Every stage parameter of ``config`` against its notebook's declaration; every problem at once.

    Parameters
    ----------
    config : mapping
        A merged configuration (:func:`ctac_helpers.pipeline.config.load_config`).
    stages : tuple of Stage
        The stage registry.
    notebooks_dir : path-like
        The folder of the stage notebooks.
    layers : sequence of (str, mapping)
        The files the configuration was merged from, lowest first, with their contents
        (:func:`ctac_helpers.pipeline.config.config_layers`): each problem names the last file that sets the
        parameter, and its line. Without them the problems name ``configuration``.

    Returns
    -------
    list of Problem
    """
    problems = []
    line_cache: dict[str, dict] = {}
    for stage in stages:
        params = dict((config.get("stages") or {}).get(stage.name) or {})
        if not params:
            continue
        specs = read_parameter_specs(Path(notebooks_dir) / stage.notebook)
        by_source: dict[str, dict] = {}
        for name, value in params.items():
            source = "configuration"
            for file, content in layers:
                if name in (((content or {}).get("stages") or {}).get(stage.name) or {}):
                    source = file
            by_source.setdefault(source, {})[name] = value
        for source, subset in by_source.items():
            if source not in line_cache:
                line_cache[source] = _yaml_lines(source) if source != "configuration" else {}
            problems += stage_parameter_problems(stage.name, subset, specs, source, line_cache[source])
    return problems
