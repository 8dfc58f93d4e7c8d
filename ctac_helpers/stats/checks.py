"""Input checks shared by the statistics modules (DeLong, bootstrap, NRI, subgroup AUCs, survival).

Each check takes what a caller passed, returns it in the form the computation needs and raises a
ValueError naming the argument and what was expected. They live here, public, so that every module
checks its input the same way without importing another module's private helpers (as lifelines keeps
its checks in ``lifelines.utils``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd


def as_labels(y_true, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a 1-D boolean array (True = positive); ValueError unless binary 0/1 with both classes."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per patient); got an array of shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty; expected binary labels 0/1")
    if y.dtype == bool:
        labels = y
    else:
        if not (np.issubdtype(y.dtype, np.number)):
            raise ValueError(f"{name} must hold binary labels 0/1 or booleans; got dtype {y.dtype}")
        values = np.unique(y)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(map(str, values[:5])) + (", ..." if values.size > 5 else "")
            raise ValueError(f"{name} must hold binary labels 0/1 or booleans; found values {shown}")
        labels = y == 1
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        present = "1 (positive)" if n_pos else "0 (negative)"
        raise ValueError(f"{name} must contain both classes 0 and 1; only {present} is present")
    return labels


def as_scores(score, n: int, name: str = "score") -> np.ndarray:
    """``score`` as a finite float array of shape (n_models, n): a 1-D score is one model."""
    s = np.asarray(score, dtype=float)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one model) or 2-D (n_models, n_samples); got shape {s.shape}")
    if s.shape[1] != n:
        raise ValueError(f"{name} must have one value per label: expected {n} samples, got {s.shape[1]}"
                         + (" (scores are expected as rows: shape (n_models, n_samples))"
                            if s.shape[0] == n else ""))
    if s.shape[0] == 0:
        raise ValueError(f"{name} holds no model (shape {s.shape})")
    if not np.all(np.isfinite(s)):
        bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"{name} must be finite; found {bad} NaN or infinite value(s)")
    return s


def as_score_1d(score, n: int, name: str = "score") -> np.ndarray:
    """One model's scores as a finite 1-D float array of length ``n``."""
    s = np.asarray(score, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per label); got shape {s.shape}")
    return as_scores(s, n, name)[0]


def check_level(level: float) -> float:
    """``level`` as a float; ValueError unless strictly between 0 and 1."""
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be a confidence level strictly between 0 and 1 (e.g. 0.95); "
                         f"got {level}")
    return level


def check_seed(seed) -> int:
    """``seed`` as an int; ValueError unless a non-negative integer."""
    # An explicit integer keeps results reproducible and visible in the notebook's parameters;
    # a Generator or None would hide the state.
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be a non-negative integer; got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}")
    return int(seed)


def check_n_resamples(n_resamples) -> int:
    """``n_resamples`` as an int; ValueError unless an integer of at least 2."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2; got {n_resamples!r}")
    return int(n_resamples)


def check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """ValueError naming the ``columns`` missing from ``df`` (``what`` says what they are) and those present."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} not in the DataFrame: {missing}; available columns: {list(df.columns)}")
