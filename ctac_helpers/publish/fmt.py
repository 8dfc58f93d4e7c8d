"""The book's one rounding rule: each kind of number shows the same decimals on every page.

A value is rounded once, from its full-precision value, to the decimals of its kind (:data:`DECIMALS`),
with Python's ``format`` (the nearest decimal; a binary value that is exactly half-way goes to the even
digit). Tables, figure legends, summaries and the scorecard all print through these functions, so the
same quantity never reads 0.73 on one page and 0.74 on another. The paper's own values are quoted as the
paper prints them.
"""

from __future__ import annotations

import math

#: Decimals of each kind of number the book computes.
DECIMALS = {
    "auc": 3,  # areas under ROC curves and concordance indices: differences of a few thousandths matter
    "risk": 3,  # a model's score (a predicted probability)
    "hr": 2,  # hazard ratios and their interval bounds
    "coefficient": 2,  # coefficients of a logistic model: calibration-in-the-large and the calibration slope
    "percent": 1,  # shares in percent
    "years": 1,  # follow-up times, as the paper prints them
}


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def number(value, kind: str, missing: str = "", signed: bool = False) -> str:
    """``value`` with the decimals of ``kind`` (:data:`DECIMALS`); ``missing`` when it is missing or not finite.

    ``signed`` writes a plus sign before a positive value (a difference: ``+0.012``).

    Raises
    ------
    ValueError
        An unknown ``kind``; the message names the allowed ones.
    """
    if kind not in DECIMALS:
        raise ValueError(f"unknown kind of number {kind!r}; allowed: {', '.join(DECIMALS)}")
    v = _finite(value)
    return missing if v is None else f"{v:{'+' if signed else ''}.{DECIMALS[kind]}f}"


def interval(estimate, low, high, kind: str, missing: str = "", signed: bool = False) -> str:
    """``estimate (low-high)`` with the decimals of ``kind``; the estimate alone when a bound is missing.

    With a negative bound, or ``signed`` (see :func:`number`), the bounds are joined by ``to``:
    ``-0.30--0.05`` would misread.
    """
    text = number(estimate, kind, missing, signed)
    if text == missing or _finite(low) is None or _finite(high) is None:
        return text
    sep = " to " if signed or min(_finite(low), _finite(high)) < 0 else "-"
    return f"{text} ({number(low, kind, signed=signed)}{sep}{number(high, kind, signed=signed)})"


def auc(value, missing: str = "") -> str:
    """An AUC (or concordance index) with :data:`DECIMALS` ``["auc"]`` decimals."""
    return number(value, "auc", missing)


def hr(value, missing: str = "") -> str:
    """A hazard ratio with :data:`DECIMALS` ``["hr"]`` decimals."""
    return number(value, "hr", missing)
