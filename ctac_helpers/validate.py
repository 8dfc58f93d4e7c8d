"""Validation of a cohort table against ``data_manifest/cohort_schema.yaml``, and reading site tables.

Every problem is reported at once, each with the file, the row, the column, the offending value and
what was expected, so that an analyst can fix their table in one pass.

Row numbers are spreadsheet rows, 1-based: the row a spreadsheet program shows when it opens the CSV
file. For a plain table the header is row 1 and the first data row is row 2. A table read with
:func:`read_table` may start with ``#`` comment lines (the ``ctac-book init-site`` templates do);
they are rows too, so with 40 comment lines the header is row 41 and the first data row row 42.
Blank lines count as rows (a spreadsheet shows them) but hold no data. A table read with
:func:`read_table` carries its data rows' numbers in ``df.attrs['rows']``; any other frame is
numbered as a plain table (its data row ``i``, 0-based, is row ``i + 2``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import manifest

logger = logging.getLogger(__name__)

_MAX_PER_COLUMN = 20  # a column that is wrong everywhere is reported once per kind, with a count


@dataclass(frozen=True)
class Problem:
    """One validation finding; ``severity`` is ``'error'`` or ``'warning'``."""

    file: str
    row: int | None
    column: str
    value: str
    expected: str
    severity: str = "error"

    def __str__(self) -> str:
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


#: Id columns kept as text by :func:`read_table` (leading zeros matter).
ID_COLUMNS = ("patient_id", "scan_id")


def spreadsheet_rows(df: pd.DataFrame) -> np.ndarray:
    """The spreadsheet row number of each data row of ``df`` (see the module docstring).

    ``df.attrs['rows']`` (set by :func:`read_table`) when it has one entry per row, else
    ``2, 3, ...`` (header = row 1).
    """
    rows = df.attrs.get("rows")
    if rows is not None and len(rows) == len(df):
        return np.asarray(rows, dtype=int)
    return np.arange(len(df)) + 2


def _report(problems, file, column, mask, values, expected, severity="error", rows=None):
    """Append one problem per row where ``mask`` is set (at most ``_MAX_PER_COLUMN``, then a count).

    ``values`` and ``mask`` are positional (data row ``i``); ``rows`` maps ``i`` to its spreadsheet
    row (default ``i + 2``).
    """
    idx = np.flatnonzero(mask)
    if rows is None:
        rows = np.arange(len(mask)) + 2
    for i in idx[:_MAX_PER_COLUMN]:
        problems.append(Problem(file, int(rows[i]), column, repr(values[i]), expected, severity))
    if len(idx) > _MAX_PER_COLUMN:
        problems.append(Problem(file, None, column, f"{len(idx) - _MAX_PER_COLUMN} more rows like these",
                                expected, severity))


def unit_hint(unit: str | None, lo: float, hi: float, bad: np.ndarray) -> str:
    """A hint naming a likely unit mix-up when every out-of-range value fits after converting it.

    Recognised: HU stored with a +1024 offset, years given in months, percentages given as
    fractions. Returns ``''`` when no conversion explains the values.
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
    if unit == "%" and np.all(bad <= 1) and fits(bad * 100):
        return " (the values look like fractions: give percentages, e.g. 60 not 0.60)"
    return ""


def read_table(path: str | os.PathLike, id_columns: Iterable[str] = ID_COLUMNS) -> pd.DataFrame:
    """Read a site's CSV table, skipping its leading ``#`` comment lines.

    Only the lines before the header are comment lines: a line starting with ``#`` (or a blank
    line) there is skipped; after the header every line is data. Rows whose cells are all empty
    (blank lines, a spreadsheet's trailing ``,,,`` rows) are dropped. Id columns are read as text.

    Parameters
    ----------
    path : path-like
        The CSV file (UTF-8, with or without a byte-order mark).
    id_columns : iterable of str
        Columns kept as strings (``patient_id``, ``scan_id``).

    Returns
    -------
    DataFrame
        With ``attrs['file']`` (the path) and ``attrs['rows']`` (the spreadsheet row of each data
        row, counting the comment lines and the header, see the module docstring).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        No header line.
    ValidationError
        Not UTF-8 text, repeated column names, or rows with more cells than the header (every such
        row listed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = raw.count(b"\n", 0, exc.start) + 1
        byte = raw[exc.start:exc.start + 1]
        problem = Problem(str(path), row, "(encoding)", f"the byte {byte!r}, not UTF-8 text",
                          "a CSV file saved as UTF-8 ('CSV UTF-8' in a spreadsheet's Save As)")
        raise ValidationError([problem], what=str(path)) from None
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
        buf.seek(pos)
        break
    reader = csv.reader(buf)
    header = next(reader)
    header_row = n_skipped + 1
    problems: list[Problem] = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(Problem(str(path), header_row, name, "a repeated column name", "each column once"))
        seen.add(name)
    records, rows = [], []
    for k, rec in enumerate(reader):
        row = header_row + 1 + k  # one record = one spreadsheet row, even when a quoted cell spans lines
        if not any(cell.strip() for cell in rec):
            continue
        if len(rec) > len(header):
            problems.append(Problem(str(path), row, "(row)", f"{len(rec)} cells",
                                    f"at most {len(header)} cells, one per header column (an unquoted comma "
                                    "inside a value?)"))
            continue
        records.append(rec)
        rows.append(row)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems, what=str(path))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    out.seek(0)
    ids = {c: str for c in id_columns if c in header}
    df = pd.read_csv(out, dtype=ids, skip_blank_lines=False)
    df.attrs["file"] = str(path)
    df.attrs["rows"] = rows
    return df


def validate_cohort(df: pd.DataFrame, file: str = "cohort table", optional: Iterable[str] = (),
                    log_warnings: bool = True, extra_categories: Mapping[str, Iterable[str]] | None = None
                    ) -> list[Problem]:
    """Check a cohort table against the schema; return every problem found (errors and warnings).

    Checks: required columns present; unknown columns (warning); types (numbers, 0/1 flags,
    category labels); allowed ranges, with a hint when the values look like another unit (HU with
    a +1024 offset, months, fractions); values in the wrong unit (a column whose median lies outside
    its plausible range, e.g. age in months or TPD as a fraction, checked from 10 values on);
    missing values where not allowed; duplicate patient ids; follow-up times <= 0; deaths without
    follow-up time.

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
    problems: list[Problem] = []
    missing = [c for c in schema.index[schema["required"]] if c not in df.columns]
    for c in missing:
        problems.append(Problem(file, None, c, "column missing", f"a column {c!r} ({schema.loc[c, 'description']})"))
    for c in df.columns:
        if c not in schema.index:
            problems.append(Problem(file, None, c, "unknown column",
                                    "only the schema's columns (data_manifest/cohort_schema.yaml); it is ignored",
                                    "warning"))
    for name, col in schema.iterrows():
        if name not in df.columns:
            continue
        raw = df[name]
        values = raw.to_numpy(dtype=object)
        isnull = raw.isna().to_numpy()
        if not col["nullable"] and isnull.any():
            _report(problems, file, name, isnull, values, "a value (this column may not be empty)", rows=rows)
        present = ~isnull
        kind = col["type"]
        if kind in ("float", "int", "binary"):
            num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
            bad_type = present & np.isnan(num)
            if bad_type.any():
                what = "0 or 1 (a flag: not yes/no or true/false)" if kind == "binary" else f"a number ({kind})"
                _report(problems, file, name, bad_type, values, what, rows=rows)
            ok = present & ~bad_type
            if kind == "binary":
                bad = ok & ~np.isin(num, (0.0, 1.0))
                if bad.any():
                    _report(problems, file, name, bad, values, "0 or 1", rows=rows)
            elif isinstance(col["range"], list):
                lo, hi = col["range"]
                unit = f" {col['unit']}" if col["unit"] else ""
                if name == "followup_years":  # reported by the follow-up check below
                    ok = ok & (num > 0)
                bad = ok & ((num < lo) | (num > hi))
                if bad.any():
                    hint = unit_hint(col["unit"], lo, hi, num[bad])
                    _report(problems, file, name, bad, values, f"a value in [{lo}, {hi}]{unit}{hint}", rows=rows)
                if isinstance(col["plausible"], list) and ok.sum() >= 10:
                    plo, phi = col["plausible"]
                    med = float(np.median(num[ok]))
                    if not plo <= med <= phi:
                        problems.append(Problem(file, None, name, f"median {med:g}",
                                                f"a median in [{plo}, {phi}]{unit}: is the column in another unit "
                                                f"(e.g. a fraction instead of %, months instead of years)?"))
        elif kind == "category":
            allowed = list(col["categories"]) + [c for c in extra_categories.get(name, [])
                                                 if c not in col["categories"]]
            bad = present & ~np.isin(raw.astype(str).to_numpy(), allowed)
            if bad.any():
                _report(problems, file, name, bad, values, f"one of {allowed}", rows=rows)
        elif kind == "string":
            pass
    id_col = "patient_id"
    if id_col in df.columns:
        dup = df[id_col].duplicated(keep=False).to_numpy() & df[id_col].notna().to_numpy()
        if dup.any():
            _report(problems, file, id_col, dup, df[id_col].to_numpy(dtype=object), "a unique patient id",
                    rows=rows)
    if "followup_years" in df.columns:
        time = pd.to_numeric(df["followup_years"], errors="coerce").to_numpy(float)
        not_positive = time <= 0
        if not_positive.any():
            _report(problems, file, "followup_years", not_positive, df["followup_years"].to_numpy(dtype=object),
                    "a follow-up time > 0 years (from the scan to death or censoring)", rows=rows)
    if {"death", "followup_years"} <= set(df.columns):
        died = pd.to_numeric(df["death"], errors="coerce").to_numpy(float) == 1
        no_time = died & pd.to_numeric(df["followup_years"], errors="coerce").isna().to_numpy()
        if no_time.any():
            _report(problems, file, "followup_years", no_time, df["followup_years"].to_numpy(dtype=object),
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
