"""Structure presence: which TotalSegmentator structures each scan holds whole, cut or not at all.

The paper keeps the structures "with a frequency of >80% on all scans". :func:`structure_status` reads
one multilabel map (from any backend of :mod:`ctac_helpers.imaging.segment`) and says whether each
structure is present, truncated by the field of view or absent; :func:`presence_table` collects the
scans' statuses, :func:`structure_frequency` counts them per structure and :func:`select_structures`
applies the paper's threshold.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ctac_helpers.core import manifest

__all__ = ["structure_status", "presence_table", "structure_frequency", "select_structures"]


def structure_status(labels: sitk.Image | np.ndarray,
                     names: Sequence[str] | None = None,
                     crossing: Sequence[str] | None = None) -> dict[str, str]:
    """Whether each structure is present, truncated or absent in a multilabel map.

    Parameters
    ----------
    labels : SimpleITK.Image or numpy.ndarray
        Label map in TotalSegmentator v2 class ids (an array in SimpleITK's (z, y, x) order).
    names : sequence of str, optional
        Structures to report (default: all 117 ``total`` classes, in class-id order).
    crossing : sequence of str, optional
        Structures that cross every chest field of view axially (default:
        ``manifest.fov_crossing_structures()``: aorta, esophagus, trachea, spinal cord, ...). Their
        cut by the first or last axial slice (array axis 0, as in an LPS-oriented scan) is their
        normal state, not truncation; only the in-plane border counts for them.

    Returns
    -------
    dict[str, str]
        name -> ``"absent"`` (no voxel), ``"truncated"`` (a voxel on the first or last axial slice
        or on the in-plane border of the volume: CTAC scans cut the liver, stomach and aortic arch)
        or ``"present"``.

    Notes
    -----
    Only the volume's border counts as the field of view: a structure cut by a circular
    reconstruction field of view inside the square matrix is reported as present.
    """
    if isinstance(labels, sitk.Image):
        arr = sitk.GetArrayViewFromImage(labels)
    else:
        arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"labels must be 3-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and np.any(arr != np.round(arr)):
            raise ValueError(f"labels must hold integer class ids, got {arr.dtype} values")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError("labels must not be negative")

    class_map = manifest.class_map()
    ids = {name: i for i, name in class_map.items()}
    names = list(class_map.values()) if names is None else list(names)
    crossing = frozenset(manifest.fov_crossing_structures() if crossing is None else crossing)
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise ValueError(f"unknown structure(s) {unknown}; allowed: the TotalSegmentator v2 class names "
                         "of ctac_helpers.core.manifest.class_map()")

    from scipy import ndimage

    boxes = ndimage.find_objects(arr, max_label=max(ids[n] for n in names)) if names else []
    shape = arr.shape
    status = {}
    for name in names:
        box = boxes[ids[name] - 1] if ids[name] - 1 < len(boxes) else None
        if box is None:
            status[name] = "absent"
        elif any(s.start == 0 or s.stop == shape[a] for a, s in enumerate(box)
                 if not (a == 0 and name in crossing)):
            # a face of the volume: first/last axial slice or the in-plane border
            status[name] = "truncated"
        else:
            status[name] = "present"
    return status


def presence_table(statuses: Mapping[str, Mapping[str, str]]) -> pd.DataFrame:
    """Long table of structure statuses: one row per (scan_id, structure).

    Parameters
    ----------
    statuses : mapping
        scan_id -> :func:`structure_status` result.

    Returns
    -------
    pandas.DataFrame
        Columns ``scan_id, structure, status``.
    """
    rows = []
    for scan_id, per_scan in statuses.items():
        for structure, status in per_scan.items():
            if status not in manifest.STRUCTURE_STATUSES:
                raise ValueError(f"scan {scan_id!r}, structure {structure!r}: unknown status "
                                 f"{status!r}; allowed: {', '.join(manifest.STRUCTURE_STATUSES)}")
            rows.append((scan_id, structure, status))
    return pd.DataFrame(rows, columns=["scan_id", "structure", "status"])


def structure_frequency(presence: pd.DataFrame, include_truncated: bool = False) -> pd.DataFrame:
    """How often each structure is present across scans.

    Parameters
    ----------
    presence : pandas.DataFrame
        :func:`presence_table` output. A structure not listed for a scan counts as absent there.
    include_truncated : bool
        Count truncated structures as present. Default False: frequency counts the scans that
        hold the structure whole, the book's reading of the paper's "frequency of >80% on all
        scans" (the paper does not say how cut structures were counted).

    Returns
    -------
    pandas.DataFrame
        ``structure, n_scans, n_present, n_truncated, n_absent, frequency`` with
        ``frequency = n_present / n_scans`` (``(n_present + n_truncated) / n_scans`` with
        ``include_truncated``), sorted by frequency descending, then class id.
    """
    missing = {"scan_id", "structure", "status"} - set(presence.columns)
    if missing:
        raise ValueError(f"presence table lacks column(s) {sorted(missing)}")
    bad = sorted(set(presence["status"]) - set(manifest.STRUCTURE_STATUSES))
    if bad:
        raise ValueError(f"unknown status(es) {bad}; "
                         f"allowed: {', '.join(manifest.STRUCTURE_STATUSES)}")
    if presence.duplicated(["scan_id", "structure"]).any():
        raise ValueError("presence table has duplicate (scan_id, structure) rows")
    columns = ["structure", "n_scans", "n_present", "n_truncated", "n_absent", "frequency"]
    n_scans = presence["scan_id"].nunique()
    if n_scans == 0:
        return pd.DataFrame(columns=columns)
    counts = (pd.crosstab(presence["structure"], presence["status"])
              .reindex(columns=list(manifest.STRUCTURE_STATUSES), fill_value=0))
    out = pd.DataFrame({
        "structure": counts.index.astype(str),
        "n_scans": n_scans,
        "n_present": counts["present"].to_numpy(),
        "n_truncated": counts["truncated"].to_numpy(),
    })
    out["n_absent"] = n_scans - out["n_present"] - out["n_truncated"]
    seen = out["n_present"] + (out["n_truncated"] if include_truncated else 0)
    out["frequency"] = seen / n_scans
    order = {name: i for i, name in manifest.class_map().items()}
    out["_id"] = out["structure"].map(order).fillna(np.inf)
    out = out.sort_values(["frequency", "_id", "structure"], ascending=[False, True, True],
                          kind="mergesort")
    return out.drop(columns="_id").reset_index(drop=True)[columns]


def select_structures(frequency: pd.DataFrame, threshold: float = 0.8) -> list[str]:
    """Structures whose frequency is strictly above ``threshold`` (the paper: >80% of scans).

    Raises
    ------
    ValueError
        ``threshold`` not strictly between 0 and 1, or the table lacks ``structure``/``frequency``.
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
    missing = {"structure", "frequency"} - set(frequency.columns)
    if missing:
        raise ValueError(f"frequency table lacks column(s) {sorted(missing)}")
    return frequency.loc[frequency["frequency"] > threshold, "structure"].tolist()
