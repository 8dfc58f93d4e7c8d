"""The paper's fixed definitions, used by several layers of the package.

One place for the cut points and names that the paper fixes and that more than one module needs:
the coronary calcium categories, the ischemia threshold of total perfusion deficit (TPD), the model
whose score defines the AI high-risk class, and how a p-value is printed. This module imports nothing
else of the package (the import contract in ``pyproject.toml`` checks it). Feature sets and model
names are data: ``data_manifest/models.yaml``, read by :mod:`ctac_helpers.models.cv`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CAC_CATEGORIES",
    "CLASS_MODEL",
    "P_FLOOR",
    "TPD_ABNORMAL",
    "TPD_ISCHEMIA",
    "cac_category",
    "format_p",
]

#: The paper's coronary calcium categories (Agatston): 0, >0-100, >100-400, >400.
CAC_CATEGORIES: tuple[str, ...] = ("0", "1-100", "101-400", ">400")

#: Ischemic TPD (stress - rest, % of the myocardium) at or above which perfusion counts as ischemic
#: (Fig. 3, NRI): the AI high-risk threshold flags as many patients as this reading does.
TPD_ISCHEMIA = 10.0

#: Stress TPD (%) at or above which perfusion is abnormal (the paper's normal perfusion: stress TPD < 5).
TPD_ABNORMAL = 5.0

#: The model whose out-of-fold score defines the AI high-risk class (chapter 7): the All model.
CLASS_MODEL = "all"

#: Below this a p-value prints as ``< 1e-300`` rather than ``<0.001``: it is then near or past the end of
#: double precision (subnormal below about 2.2e-308, 0 below about 5e-324), where its digits mean
#: nothing, and a p-value that underflowed to 0 must not pass for an ordinary small one.
P_FLOOR = 1e-300


def cac_category(score):
    """CAC category of an Agatston score: ``'0'``, ``'1-100'``, ``'101-400'`` or ``'>400'``.

    Parameters
    ----------
    score : float or array-like of float
        Agatston score(s).

    Returns
    -------
    str or numpy.ndarray of str
        A scalar gives a ``str``, an array an array of ``str`` (:data:`CAC_CATEGORIES`).
    """
    cac = np.asarray(score, float)
    out = np.select([cac <= 0, cac <= 100, cac <= 400], list(CAC_CATEGORIES[:3]), CAC_CATEGORIES[3])
    return str(out) if np.ndim(out) == 0 else out


def format_p(p: float) -> str:
    """p-values as the paper prints them: ``<0.001`` or three decimals; ``< 1e-300`` below :data:`P_FLOOR`.

    Parameters
    ----------
    p : float or None
        A p-value; 0 (an underflow) and subnormal values print as ``< 1e-300``.

    Returns
    -------
    str
        ``"< 1e-300"``, ``"<0.001"``, ``"0.020"``..., or ``""`` for a missing or non-finite value.
    """
    if p is None or not np.isfinite(p):
        return ""
    if p < P_FLOOR:
        return "< 1e-300"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
