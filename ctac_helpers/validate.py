"""Validation of a cohort table against ``data_manifest/cohort_schema.yaml``.

Every problem is reported at once, each with the file, the row (1-based, as a spreadsheet shows it,
header = row 1), the column, the offending value and what was expected, so that an analyst can fix
their table in one pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def _rows(mask: np.ndarray) -> np.ndarray:
    # data row i (0-based) is spreadsheet row i + 2 (row 1 is the header)
    return np.flatnonzero(mask) + 2


def _report(problems, file, column, mask, values, expected, severity="error"):
    rows = _rows(mask)
    for r in rows[:_MAX_PER_COLUMN]:
        problems.append(Problem(file, int(r), column, repr(values[r - 2]), expected, severity))
    if len(rows) > _MAX_PER_COLUMN:
        problems.append(Problem(file, None, column, f"{len(rows) - _MAX_PER_COLUMN} more rows like these",
                                expected, severity))


def validate_cohort(df: pd.DataFrame, file: str = "cohort table") -> list[Problem]:
    """Check a cohort table against the schema; return every problem found (errors and warnings).

    Checks: required columns present; unknown columns (warning); types (numbers, 0/1 flags,
    category labels); allowed ranges; values in the wrong unit (a column whose median lies outside
    its plausible range, e.g. age in months or TPD as a fraction); missing values where not allowed;
    duplicate patient ids; deaths without follow-up time.
    """
    schema = manifest.cohort_schema()
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
            _report(problems, file, name, isnull, values, "a value (this column may not be empty)")
        present = ~isnull
        kind = col["type"]
        if kind in ("float", "int", "binary"):
            num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
            bad_type = present & np.isnan(num)
            if bad_type.any():
                _report(problems, file, name, bad_type, values, f"a number ({kind})")
            ok = present & ~bad_type
            if kind == "binary":
                bad = ok & ~np.isin(num, (0.0, 1.0))
                if bad.any():
                    _report(problems, file, name, bad, values, "0 or 1")
            elif isinstance(col["range"], list):
                lo, hi = col["range"]
                unit = f" {col['unit']}" if col["unit"] else ""
                bad = ok & ((num < lo) | (num > hi))
                if bad.any():
                    _report(problems, file, name, bad, values, f"a value in [{lo}, {hi}]{unit}")
                if isinstance(col["plausible"], list) and ok.sum() >= 10:
                    plo, phi = col["plausible"]
                    med = float(np.median(num[ok]))
                    if not plo <= med <= phi:
                        problems.append(Problem(file, None, name, f"median {med:g}",
                                                f"a median in [{plo}, {phi}]{unit}: is the column in another unit "
                                                f"(e.g. a fraction instead of %, months instead of years)?"))
        elif kind == "category":
            allowed = list(col["categories"])
            bad = present & ~np.isin(raw.astype(str).to_numpy(), allowed)
            if bad.any():
                _report(problems, file, name, bad, values, f"one of {allowed}")
        elif kind == "string":
            pass
    id_col = "patient_id"
    if id_col in df.columns:
        dup = df[id_col].duplicated(keep=False).to_numpy() & df[id_col].notna().to_numpy()
        if dup.any():
            _report(problems, file, id_col, dup, df[id_col].to_numpy(dtype=object), "a unique patient id")
    if {"death", "followup_years"} <= set(df.columns):
        died = pd.to_numeric(df["death"], errors="coerce").to_numpy(float) == 1
        no_time = died & pd.to_numeric(df["followup_years"], errors="coerce").isna().to_numpy()
        if no_time.any():
            _report(problems, file, "followup_years", no_time, df["followup_years"].to_numpy(dtype=object),
                    "a time to death for every patient with death = 1")
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
