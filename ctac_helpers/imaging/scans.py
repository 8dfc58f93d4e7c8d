"""The imaging stages' per-scan tasks and the tables assembled from their results.

Each task takes one scan (a dict) and returns one record (a dict); :func:`ctac_helpers.pipeline.batch.run_batch`
runs them resumably on Dask. The three chapters call them in order:

* :func:`segmentation_task` (chapter 2): ingest the scan (``ingest``), segment it (``segment``),
  record each structure's status (present / truncated / absent, ``presence``);
* :func:`cac_eat_task` (chapter 3): Agatston score (``calcium``) and epicardial fat (``fat``),
  or the site's own values where the manifest gives them, with their source;
* :func:`radiomics_task` (chapter 4): the PyRadiomics features of the selected structures
  (``radiomics``), NaN plus the status flag where a structure is absent or truncated.

Every record carries ``scan_id`` and ``patient_id``; the feature table of chapter 4 has the column
schema of the synthetic cohort (``ct__<structure>__<feature>``), so the models can read either.

A scan that cannot be measured is data, not a crash: the scan tables of chapters 2 and 3 keep a row for
every scan with its ``status`` (``ok`` or ``excluded``) and, for an excluded scan, a ``reason`` from the
fixed vocabulary :data:`EXCLUSION_REASONS`; the patients left without a measured scan are counted by
:func:`patient_exclusions`, which the patient flow of chapter 1 and the models of chapter 5 use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ctac_helpers.imaging import calcium
from ctac_helpers.imaging import fat
from ctac_helpers.imaging import ingest
from ctac_helpers.core import manifest
from ctac_helpers.definitions import cac_category
from ctac_helpers.imaging import phantom
from ctac_helpers.imaging import phantom_cache
from ctac_helpers.imaging import presence
from ctac_helpers.imaging import radiomics
from ctac_helpers.imaging import segment

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STATUS_PREFIX = "status__"
SAMPLE_SCANS = (
    # folder, image, label map (file or mask folder), what the sample shows
    ("abdomen-3mm", "ct.nii.gz", "seg-total-fast.nii.gz", "abdominal CT, TotalSegmentator --fast"),
    ("abdomen-3mm-short", "ct.nii.gz", "seg-total.nii.gz", "abdominal CT (30 slices), TotalSegmentator"),
    ("dicom-series", "dicom", "seg-total.nii.gz", "DICOM series (20 slices), TotalSegmentator"),
    ("chest-cta-aorta", "ct.nii.gz", ".", "chest CTA around the aorta, binary masks"),
    ("chest-cta-pulmonary", "ct.nii.gz", None, "chest CTA around the heart, heart mask on a larger grid"),
)


def resolve_path(path: str | os.PathLike) -> Path:
    """A path from a run config: absolute, or relative to the repository root (not the notebook)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()


def source_files(module) -> list[Path]:
    """The source files of a module, or of every module of a package (sorted by name).

    Parameters
    ----------
    module : module
        An imported module or package.

    Returns
    -------
    list of pathlib.Path
    """
    path = Path(module.__file__)
    return sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]


def task_key(name: str, **params) -> str:
    """Identity of a batch: the task, its parameters and the code of the modules it runs.

    A stored per-scan result is reused only under the same key, so editing ``calcium.py`` (or any module
    of the ``phantom`` package) makes the next run recompute the Agatston scores instead of serving stale
    ones.
    """
    h = hashlib.sha256()
    h.update(name.encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for mod in (ingest, segment, presence, calcium, fat, radiomics, phantom):
        for path in source_files(mod):
            h.update(path.read_bytes())
    h.update((manifest.MANIFEST_DIR / "scan_manifest.yaml").read_bytes())
    h.update((manifest.MANIFEST_DIR / "radiomics_features.yaml").read_bytes())
    return h.hexdigest()


# -- the real samples -----------------------------------------------------------------------------
def sample_manifest(samples_dir: str | os.PathLike, work_dir: str | os.PathLike) -> pd.DataFrame:
    """A scan manifest of the real CT samples in ``samples_dir`` (``../shared/ct-samples``).

    Returns an empty manifest when the folder is absent. The chest CTA's heart mask lies on a larger
    grid than its CT; it is resampled onto the CT's grid in physical space (nearest neighbour) and
    written to ``work_dir``, because the precomputed backend accepts only label maps on the CT's grid.
    """
    samples_dir = Path(samples_dir)
    columns = ["scan_id", "patient_id", "image", "label_map", "pericardium", "site", "protocol", "description"]
    if not samples_dir.is_dir():
        # named by its last part only: the message may reach a page, and the full path names the machine's folders
        logger.warning("CT samples folder %s not found: the real-sample sections are skipped", samples_dir.name)
        return pd.DataFrame(columns=columns)
    rows = []
    for folder, image, labels, what in SAMPLE_SCANS:
        src = samples_dir / folder
        if not (src / image).exists():
            continue
        if labels is None:
            label_path = _combine_on_ct_grid(src, Path(work_dir) / f"{folder}-labels.nii.gz")
        else:
            label_path = src if labels == "." else src / labels
        rows.append({"scan_id": f"sample-{folder}", "patient_id": f"sample-{folder}", "image": str(src / image),
                     "label_map": str(label_path), "pericardium": None, "site": "sample", "protocol": "sample",
                     "description": what})
    return pd.DataFrame(rows, columns=columns)


def _combine_on_ct_grid(folder: Path, out: Path) -> Path:
    """Resample every ``<structure>.nii.gz`` mask of ``folder`` onto its CT's grid, as one label map."""
    ct = sitk.ReadImage(str(folder / "ct.nii.gz"))
    ids = {name: i for i, name in manifest.class_map().items()}
    combined = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint8)
    for f in sorted(folder.glob("*.nii.gz")):
        name = f.name[: -len(".nii.gz")]
        if name not in ids:
            continue
        mask = sitk.Resample(sitk.ReadImage(str(f)), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        combined[sitk.GetArrayViewFromImage(mask) > 0] = ids[name]
    img = sitk.GetImageFromArray(combined)
    img.CopyInformation(ct)
    return ingest.write_image(img, out)


# -- chapter 2: ingestion and segmentation ------------------------------------------------------------
def phantom_task(item: Mapping, out_dir: str, shape: Sequence[int], spacing: Sequence[float]) -> dict:
    """Generate one digital phantom from its parameters and write it (CT, labels, pericardium, truth).

    A phantom built before with the same parameters, seed, grid and code (in any run directory) is
    taken from the phantom cache instead (:mod:`ctac_helpers.imaging.phantom_cache`): the same bytes.
    ``from_cache`` says which.
    """
    params = dict(item["params"])
    paths, reused = phantom_cache.write_phantom_cached(params, int(item["seed"]), shape, spacing,
                                                       Path(out_dir) / str(item["scan_id"]), "phantom")
    return {"scan_id": item["scan_id"], "patient_id": item["patient_id"], **{k: str(v) for k, v in paths.items()},
            "from_cache": reused}


def make_phantom_task(out_dir, shape: Sequence[int], spacing: Sequence[float]):
    """:func:`phantom_task` with its settings bound (a picklable callable for :func:`batch.run_batch`)."""
    return functools.partial(phantom_task, out_dir=str(out_dir), shape=[int(v) for v in shape],
                             spacing=[float(v) for v in spacing])


def make_segmentation_task(cache_dir, segmenter: str, **options):
    """:func:`segmentation_task` with its settings bound; ``ValueError`` for an unknown backend."""
    if segmenter not in segment.SEGMENTERS:
        raise ValueError(f"unknown segmenter {segmenter!r}; allowed: {', '.join(segment.SEGMENTERS)}")
    return functools.partial(segmentation_task, cache_dir=str(cache_dir), segmenter=segmenter, options=options)


class ScanFailed(RuntimeError):
    """A site scan's failure, its message stripped of the scan's file paths (see :func:`redact_paths`)."""


class ScanUnreadable(ScanFailed):
    """A site scan that could not be ingested (an :class:`ctac_helpers.imaging.ingest.IngestError`), paths stripped."""


def redact_paths(text: str, scan: Mapping) -> str:
    """``text`` with every path of ``scan`` (image, label map, pericardium) replaced by a placeholder.

    A site's folder names may carry identifiers (a patient's record number, a date); a failure
    message is written to the run directory, so it names the scan's pseudonym and the manifest
    column instead of the path.
    """
    for column in ingest.PATH_COLUMNS:
        value = scan.get(column)
        if isinstance(value, str) and value.strip():
            p = Path(value)
            for form in sorted({value, str(p), str(p.resolve()), p.name}, key=len, reverse=True):
                if len(form) > 3:
                    text = text.replace(form, f"<{column} of scan {scan['scan_id']}>")
    return text


def segmentation_task(scan: Mapping, cache_dir: str, segmenter: str, options: Mapping | None = None) -> dict:
    """Ingest and segment one scan; record each structure's status.

    ``segmenter`` names the backend for this scan (``segment.get_segmenter``). The precomputed and
    phantom backends read the label map that ingestion cached; the TotalSegmentator backend runs the
    model, loaded once per worker process (``segment.cached_segmenter``). A scan marked
    ``redact_paths`` (a site's) fails with a :class:`ScanFailed` whose message names no file path.
    """
    if not scan.get("redact_paths"):
        return _segment_scan(scan, cache_dir, segmenter, options)
    try:
        return _segment_scan(scan, cache_dir, segmenter, options)
    except Exception as exc:  # noqa: BLE001 - re-raised with the paths removed
        kind = ScanUnreadable if isinstance(exc, ingest.IngestError) else ScanFailed
        raise kind(redact_paths(f"{type(exc).__name__}: {exc}", scan)) from None


def _segment_scan(scan: Mapping, cache_dir: str, segmenter: str, options: Mapping | None = None) -> dict:
    rec = ingest.ingest_scan(scan, cache_dir)
    ct = sitk.ReadImage(rec["ct_path"])
    seg = segment.cached_segmenter(segmenter, **dict(options or {}))
    if segmenter in ("precomputed", "phantom") and not rec["label_path"]:
        raise ValueError(f"scan {rec['scan_id']}: the {segmenter!r} backend needs a label_map in the manifest")
    labels = seg.segment(ct, rec["label_path"])
    rec["label_path"] = str(ingest.write_image(labels, Path(cache_dir) / rec["scan_id"] / "labels.nii.gz"))
    rec["segmentation_source"] = segmenter
    for k in ("site", "protocol", "dataset", "cac_score", "eat_volume", "eat_density"):
        if k in scan:
            rec[f"manifest_{k}"] = scan[k]
    status = presence.structure_status(labels)
    rec.update({f"{STATUS_PREFIX}{name}": s for name, s in status.items()})
    return rec


# -- scans that cannot be measured ----------------------------------------------------------------
SCAN_OK, SCAN_EXCLUDED = "ok", "excluded"
#: Why a scan, or a patient, is left out: the only values of the scan tables' ``reason`` column (never a
#: message from the site's files), the chapter that decides it and what it means.
EXCLUSION_REASONS = {
    "unreadable": ("segmentation", "the CT or its label map could not be read, or failed the image checks"),
    "segmentation_failed": ("segmentation", "the scan could not be segmented"),
    "no_heart": ("cac_eat", "no heart in the label map, so neither coronary calcium nor epicardial fat can be measured"),
    "empty_pericardium": ("cac_eat", "an empty pericardium mask, so no epicardial fat can be measured"),
    "measurement_failed": ("cac_eat", "coronary calcium or epicardial fat could not be measured"),
    "radiomics_failed": ("radiomics", "the radiomics features could not be computed"),
    "no_scan": ("segmentation", "no scan of the patient in the scan manifest"),
}
_STATUS_COLUMNS = ["status", "reason"]


def _failure_reason(error: str) -> str:
    """The reason code of a failed segmentation task, from its exception's name (``batch`` records it)."""
    return "unreadable" if error in (ingest.IngestError.__name__, ScanUnreadable.__name__) else "segmentation_failed"


def measured(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a scan table (chapter 2's or 3's) whose scan was measured: ``status`` ``ok``."""
    if "status" not in table.columns:
        raise ValueError("the scan table has no status column; expected the scans or cac_eat artifact of this "
                         "version (run the segmentation and cac_eat stages again)")
    return table[table["status"] == SCAN_OK].reset_index(drop=True)


def exclusion_counts(table: pd.DataFrame, stage: str | None = None) -> pd.DataFrame:
    """Excluded rows of a scan or patient table by reason: ``reason, what, n`` (reasons of ``stage`` only if given)."""
    excluded = table[table["status"] == SCAN_EXCLUDED] if "status" in table.columns else table
    counts = excluded["reason"].value_counts()
    rows = [{"reason": code, "what": what, "n": int(counts[code])}
            for code, (where, what) in EXCLUSION_REASONS.items()
            if code in counts.index and (stage is None or where == stage)]
    return pd.DataFrame(rows, columns=["reason", "what", "n"])


def exclusion_text(counts: pd.DataFrame) -> str:
    """Markdown of :func:`exclusion_counts`, ``"1 `no_heart` (no heart in the label map, ...)"``; ``"none"`` if empty."""
    if not len(counts):
        return "none"
    return "; ".join(f"{r.n:,} `{r.reason}` ({r.what})" for r in counts.itertuples())


def scan_table(runs, datasets: Sequence[str], manifests: Sequence[pd.DataFrame | None] = ()) -> pd.DataFrame:
    """One row per scan from the segmentation batches' results, with its data set's name and status.

    Segmented scans have ``status`` ``ok``; a scan whose task failed keeps a row with ``status``
    ``excluded``, its ``reason`` (``unreadable`` or ``segmentation_failed``) and its patient, from the
    ``manifests`` the batches ran on (``scan_id``, ``patient_id``; None for none). A structure that a
    segmented scan's record does not mention was not in its label map: it is absent.
    """
    frames = [r.frame().assign(dataset=d, status=SCAN_OK, reason="") for r, d in zip(runs, datasets) if len(r.results)]
    patient_of = {sid: pid for m in manifests if m is not None for sid, pid in zip(m["scan_id"], m["patient_id"])}
    for r, d in zip(runs, datasets):
        if len(r.failures):
            failed = pd.DataFrame({"scan_id": r.failures["scan_id"], "patient_id": r.failures["scan_id"].map(patient_of),
                                   "dataset": d, "status": SCAN_EXCLUDED,
                                   "reason": r.failures["error"].map(_failure_reason)})
            frames.append(failed)
    if not frames:
        return pd.DataFrame(columns=["scan_id", "patient_id", "dataset", *_STATUS_COLUMNS])
    # A column that is empty in one batch (the site's own CAC of phantoms, say) takes its type from the
    # batches that fill it: its empty parts are left out of the concatenation and come back as missing.
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    scans = pd.concat([f.dropna(axis=1, how="all") for f in frames], ignore_index=True).reindex(columns=columns)
    status_cols = [c for c in scans.columns if c.startswith(STATUS_PREFIX)]
    ok = scans["status"] == SCAN_OK
    scans.loc[ok, status_cols] = scans.loc[ok, status_cols].fillna("absent")
    return scans


def site_batches(scans: pd.DataFrame, segmenter: str) -> dict[str, list[dict]]:
    """A site's scans grouped by segmentation backend, as items for :func:`batch.run_batch`.

    Scans with a precomputed label map use it (``precomputed``); the others go to ``segmenter``.
    When that is ``totalsegmentator``, its weights are looked for first, so that a site without
    them learns it at once (:class:`ctac_helpers.imaging.segment.WeightsNotFound`) rather than scan by scan.

    Parameters
    ----------
    scans : DataFrame
        The site's manifest with pseudonymised ids (:func:`ctac_helpers.pipeline.site.load_scans`).
    segmenter : str
        Backend for scans without a label map: one of ``segment.SEGMENTERS`` except ``phantom``.

    Returns
    -------
    dict
        Backend name to its items (each marked ``redact_paths``); backends without scans are left out.
    """
    allowed = [s for s in segment.SEGMENTERS if s != "phantom"]
    if segmenter not in allowed:
        raise ValueError(f"unknown segmenter {segmenter!r} for a site's scans; allowed: {', '.join(allowed)}")
    has_labels = scans["label_map"].map(lambda v: isinstance(v, str) and bool(v.strip())) \
        if "label_map" in scans.columns else pd.Series(False, index=scans.index)
    items = scans.assign(redact_paths=True).to_dict("records")
    if segmenter == "precomputed":  # every scan must then bring its label map (the backend says so if not)
        return {"precomputed": items} if items else {}
    out = {"precomputed": [it for it, h in zip(items, has_labels) if h],
           segmenter: [it for it, h in zip(items, has_labels) if not h]}
    if out.get(segmenter) and segmenter == "totalsegmentator":
        segment.cached_segmenter("totalsegmentator")  # raises WeightsNotFound before any scan is read
    return {k: v for k, v in out.items() if v}


def site_manifest_text(scans: pd.DataFrame) -> str:
    """One Markdown paragraph describing a site's manifest: scans, patients and the source of each input."""
    def given(col):
        if col not in scans.columns:
            return 0
        return int(scans[col].map(lambda v: (isinstance(v, str) and bool(v.strip())) or
                                  (isinstance(v, (int, float)) and np.isfinite(v))).sum())
    n = len(scans)
    return (f"The site's manifest lists **{n:,} scans** of {scans['patient_id'].nunique():,} patients (ids "
            f"pseudonymised). Precomputed label maps: {given('label_map'):,} of {n:,}; pericardium masks: "
            f"{given('pericardium'):,}; Agatston scores from the site's software: {given('cac_score'):,}; "
            f"EAT from the site's software: {given('eat_volume'):,}. Everything not supplied is measured here.")


#: Columns of the scan table that hold the paths of the cached images.
PATH_COLUMNS = ("ct_path", "label_path", "pericardium_path")


def relative_scan_paths(scans: pd.DataFrame, root: str | os.PathLike) -> pd.DataFrame:
    """The scan table with its image paths inside ``root`` (the run directory) made relative to it.

    The ``scans`` artifact is written this way, so that it does not depend on where the run directory
    lies: two runs of the same configuration write byte-identical artifacts, and a moved run directory
    still reads. Paths outside ``root`` (a site's own files) stay absolute. :func:`resolve_scan_paths`
    undoes it.
    """
    base = Path(root).resolve()
    out = scans.copy()

    def rel(value):
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).resolve()
        return path.relative_to(base).as_posix() if path.is_relative_to(base) else value

    for col in PATH_COLUMNS:
        if col in out:
            out[col] = out[col].map(rel)
    return out


def resolve_scan_paths(scans: pd.DataFrame, root: str | os.PathLike) -> pd.DataFrame:
    """The scan table with relative image paths (see :func:`relative_scan_paths`) made absolute."""
    base = Path(root).resolve()
    out = scans.copy()
    for col in PATH_COLUMNS:
        if col in out:
            out[col] = out[col].map(lambda v: str(base / v) if isinstance(v, str) and v and not Path(v).is_absolute()
                                    else v)
    return out


def scan_summary(scans: pd.DataFrame) -> pd.DataFrame:
    """The book's view of the scan table: status, geometry, segmentation source and structure counts.

    Excluded scans (:func:`scan_table`) keep their row, with their reason and no geometry.
    """
    status = scans[[c for c in scans.columns if c.startswith(STATUS_PREFIX)]]
    ok = (scans["status"] == SCAN_OK).to_numpy()
    geometry = ["size_x", "size_y", "n_slices", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm"]
    scans = scans.reindex(columns=[*scans.columns, *(c for c in geometry if c not in scans.columns)])
    out = scans.reindex(columns=["scan_id", "dataset", "status", "reason", "format", "segmentation_source"])
    out["voxels (x, y, z)"] = [f"{a:.0f} x {b:.0f} x {c:.0f}" if good else "" for a, b, c, good in
                               zip(scans["size_x"], scans["size_y"], scans["n_slices"], ok)]
    out["spacing (mm)"] = [f"{a:.2f} x {b:.2f} x {c:.2f}" if good else "" for a, b, c, good in
                           zip(scans["spacing_x_mm"], scans["spacing_y_mm"], scans["spacing_z_mm"], ok)]
    for name in ("present", "truncated"):  # none counted for a scan that was not segmented
        out[name] = pd.array(np.where(ok, (status == name).sum(axis=1).to_numpy(), 0), dtype="Int64")
        out.loc[~ok, name] = pd.NA
    return out


def presence_long(scans: pd.DataFrame) -> pd.DataFrame:
    """Long table (scan_id, dataset, structure, status) from the segmentation records."""
    cols = [c for c in scans.columns if c.startswith(STATUS_PREFIX)]
    long = scans[["scan_id", "dataset", *cols]].melt(id_vars=["scan_id", "dataset"], value_vars=cols,
                                                     var_name="structure", value_name="status")
    long["structure"] = long["structure"].str[len(STATUS_PREFIX):]
    return long.sort_values(["scan_id", "structure"]).reset_index(drop=True)


def cohort_presence(ct_features: pd.DataFrame) -> pd.DataFrame:
    """Long presence table (scan_id, dataset, structure, status) of the synthetic cohort's status columns."""
    cols = [c for c in ct_features.columns if c.endswith("__status")]
    long = ct_features[["patient_id", *cols]].melt(id_vars="patient_id", var_name="structure", value_name="status")
    long["structure"] = long["structure"].map(lambda c: manifest.parse_feature_column(c)[0])
    return long.rename(columns={"patient_id": "scan_id"}).assign(dataset="synthetic cohort")


# -- chapter 3: CAC and EAT -----------------------------------------------------------------------
def _site_value(scan: Mapping, key: str) -> float | None:
    v = scan.get(f"manifest_{key}")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def needs_heart(scan: Mapping) -> bool:
    """Whether measuring ``scan`` needs a heart in its label map: the site did not supply both CAC and EAT."""
    return _site_value(scan, "cac_score") is None or _site_value(scan, "eat_volume") is None


def cac_eat_task(scan: Mapping) -> dict:
    """Agatston score and EAT of one segmented scan, or the site's values where supplied.

    Returns ``cac_score``, ``cac_volume_mm3``, ``cac_lesions``, ``cac_source`` ('measured' or
    'site'), ``eat_volume`` (mL), ``eat_density`` (HU), ``eat_region`` and ``eat_source``; or, for a
    scan whose pericardium mask is empty (no epicardial fat could be measured in it), only ``status``
    ``excluded`` and ``reason`` ``empty_pericardium``.
    """
    ct = sitk.ReadImage(scan["ct_path"])
    labels = sitk.ReadImage(scan["label_path"])
    rec = {"scan_id": scan["scan_id"], "patient_id": scan["patient_id"]}
    peri = sitk.ReadImage(scan["pericardium_path"]) if scan.get("pericardium_path") else None
    if peri is not None and _site_value(scan, "eat_volume") is None and not sitk.GetArrayViewFromImage(peri).any():
        return {**rec, "status": SCAN_EXCLUDED, "reason": "empty_pericardium"}
    site_cac = _site_value(scan, "cac_score")
    if site_cac is not None:
        rec.update(cac_score=site_cac, cac_volume_mm3=None, cac_lesions=None, cac_source="site")
    else:
        res = calcium.cac_from_image(ct, labels)
        rec.update(cac_score=float(res.score), cac_volume_mm3=float(res.volume_mm3), cac_lesions=int(res.n_lesions),
                   cac_source="measured")
    site_vol, site_den = _site_value(scan, "eat_volume"), _site_value(scan, "eat_density")
    if site_vol is not None:
        rec.update(eat_volume=site_vol, eat_density=site_den, eat_region=None, eat_source="site")
    else:
        e = fat.eat_from_image(ct, labels, peri)
        rec.update(eat_volume=float(e["eat_volume_ml"]), eat_density=float(e["eat_density_hu"]),
                   eat_region=e["eat_region"], eat_source="measured")
    rec["cac_category"] = str(cac_category(rec["cac_score"]))
    return rec


def cac_eat_table(scans: pd.DataFrame, run) -> pd.DataFrame:
    """Chapter 3's table: one row per scan of chapter 2's table, measured or excluded with its reason.

    Parameters
    ----------
    scans : DataFrame
        Chapter 2's scan table (:func:`scan_table`), every scan with its ``status``.
    run : BatchResult
        :func:`cac_eat_task` run on the scans of :func:`cac_eat_items`.

    Returns
    -------
    DataFrame
        The task's columns, ``dataset``, ``protocol`` (the manifest's), ``status`` and ``reason``: the
        scans chapter 2 excluded keep their reason; ``no_heart`` for a segmented scan without a heart
        that needed one, ``measurement_failed`` where the task raised, and the task's own exclusions.
    """
    rows = scans.reindex(columns=["scan_id", "patient_id", "dataset", "manifest_protocol", "status", "reason"]).rename(
        columns={"manifest_protocol": "protocol"})
    results = run.frame().drop(columns=["patient_id"], errors="ignore")
    results = results.reindex(columns=[*results.columns, *(c for c in _STATUS_COLUMNS if c not in results.columns)])
    out = rows.drop(columns=_STATUS_COLUMNS).merge(results, on="scan_id", how="left")
    out[_STATUS_COLUMNS] = out[_STATUS_COLUMNS].astype(object)
    out["status"] = out["status"].fillna(SCAN_OK)
    out["reason"] = out["reason"].fillna("")
    todo = {item["scan_id"] for item in cac_eat_items(scans)}
    measured_ids, failed_ids = set(results["scan_id"]), set(run.failures["scan_id"])
    earlier = rows.set_index("scan_id")
    for i, sid in enumerate(out["scan_id"]):
        if earlier.at[sid, "status"] != SCAN_OK:  # chapter 2's exclusion
            out.loc[i, _STATUS_COLUMNS] = [SCAN_EXCLUDED, earlier.at[sid, "reason"]]
        elif sid not in todo:
            out.loc[i, _STATUS_COLUMNS] = [SCAN_EXCLUDED, "no_heart"]
        elif sid in failed_ids:
            out.loc[i, _STATUS_COLUMNS] = [SCAN_EXCLUDED, "measurement_failed"]
        elif sid not in measured_ids:
            raise ValueError(f"scan {sid}: neither measured nor failed; expected the batch run on cac_eat_items(scans)")
    unknown = set(out["reason"]) - set(EXCLUSION_REASONS) - {""}
    if unknown:
        raise ValueError(f"unknown exclusion reason(s) {sorted(unknown)}; allowed: {', '.join(EXCLUSION_REASONS)}")
    return out


def cac_eat_items(scans: pd.DataFrame) -> list[dict]:
    """The scans chapter 3 measures: segmented by chapter 2 and, unless the site gave both CAC and EAT, with a heart."""
    segmented = measured(scans)
    heart = segmented.get(f"{STATUS_PREFIX}heart", pd.Series("absent", index=segmented.index))
    keep = [(h != "absent") or not needs_heart(row) for h, row in zip(heart, segmented.to_dict("records"))]
    return segmented[keep].to_dict("records")


# -- chapter 4: radiomics -------------------------------------------------------------------------
def radiomics_task(scan: Mapping, structures: Sequence[str], features: Sequence[str]) -> dict:
    """The PyRadiomics features of ``structures`` in one scan, in the shared column schema.

    Absent and truncated structures get NaN features (never zeros: a model would read a zero as a
    measurement) and their status in ``ct__<structure>__status``.
    """
    ct = sitk.ReadImage(scan["ct_path"])
    labels = sitk.ReadImage(scan["label_path"])
    status = {s: scan.get(f"{STATUS_PREFIX}{s}", "absent") for s in structures}
    measured = [s for s in structures if status[s] == "present"]
    rec: dict = {"scan_id": scan["scan_id"], "patient_id": scan["patient_id"]}
    table = radiomics.structure_features(ct, labels, structures=measured, features=list(features)) if measured else None
    for s in structures:
        rec[manifest.feature_column(s, "status")] = status[s]
        for f in features:
            value = table.loc[s, f] if table is not None and s in table.index else np.nan
            rec[manifest.feature_column(s, f)] = float(value)
    return rec


def bland_altman(measured, truth) -> dict:
    """Bias, SD of the differences and 95% limits of agreement (Bland & Altman, Lancet 1986)."""
    d = np.asarray(measured, float) - np.asarray(truth, float)
    bias, sd = float(np.mean(d)), float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
    return {"n": int(len(d)), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
            "max_abs_error": float(np.max(np.abs(d))) if len(d) else float("nan")}


# -- agreement with the phantoms' truth -----------------------------------------------------------
def phantom_truth(phantom_dir: str | os.PathLike, scan_ids) -> pd.DataFrame:
    """The phantoms' true CAC and EAT (``true_*`` columns), read from the truth files they were written with,
    and the site's scanner offset added to each phantom (``hu_offset``)."""
    rows = []
    for sid in scan_ids:
        truth = phantom.read_truth(Path(phantom_dir) / str(sid))
        rows.append({"scan_id": sid, "true_agatston": truth["agatston"],
                     "true_calcium_volume_mm3": truth["calcium_volume_mm3"],
                     "true_eat_volume_ml": truth["eat_volume_ml"], "true_eat_density_hu": truth["eat_density_hu"],
                     "hu_offset": truth["hu_offset"]})
    return pd.DataFrame(rows, columns=["scan_id", "true_agatston", "true_calcium_volume_mm3",
                                       "true_eat_volume_ml", "true_eat_density_hu", "hu_offset"])


def phantom_eat_density(truth: pd.DataFrame, scans: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """Each phantom's true EAT density beside its patient's in the cohort (for the text of chapter 3).

    Parameters
    ----------
    truth : pandas.DataFrame
        :func:`phantom_truth` (``scan_id``, ``true_eat_density_hu``, ``hu_offset``).
    scans : pandas.DataFrame
        The scan table (``scan_id``, ``patient_id``).
    cohort : pandas.DataFrame
        The cohort table (``patient_id``, ``eat_density``).

    Returns
    -------
    pandas.DataFrame
        ``scan_id, patient_id, true_eat_density_hu, patient_eat_density_hu, hu_offset``, one row per phantom.
    """
    out = truth[["scan_id", "true_eat_density_hu", "hu_offset"]].merge(scans[["scan_id", "patient_id"]], on="scan_id")
    out = out.merge(cohort[["patient_id", "eat_density"]].rename(columns={"eat_density": "patient_eat_density_hu"}),
                    on="patient_id")
    return out[["scan_id", "patient_id", "true_eat_density_hu", "patient_eat_density_hu", "hu_offset"]]


def cac_within(measured, truth, rel: float = 0.05, small: float = 60.0, units: float = 3.0) -> np.ndarray:
    """The book's CAC criterion: within ``rel`` of the truth, or ``units`` when the truth is below ``small``."""
    m, t = np.asarray(measured, float), np.asarray(truth, float)
    return np.where(t < small, np.abs(m - t) <= units, np.abs(m - t) <= rel * t)


def cac_agreement(ph: pd.DataFrame) -> pd.DataFrame:
    """Per phantom: true and measured Agatston score and calcium volume, error, within the criterion."""
    out = pd.DataFrame({
        "scan_id": ph["scan_id"], "protocol": ph.get("protocol"),
        "true_agatston": ph["true_agatston"], "measured_agatston": ph["cac_score"],
        "error": ph["cac_score"] - ph["true_agatston"],
        "true_volume_mm3": ph["true_calcium_volume_mm3"], "measured_volume_mm3": ph["cac_volume_mm3"],
    })
    out["within"] = cac_within(out["measured_agatston"], out["true_agatston"])
    return out


def eat_agreement(ph: pd.DataFrame, rel: float = 0.05, hu: float = 2.0) -> pd.DataFrame:
    """Per phantom: true and measured EAT volume and density, and whether each is within its criterion."""
    out = pd.DataFrame({
        "scan_id": ph["scan_id"], "protocol": ph.get("protocol"),
        "true_volume_ml": ph["true_eat_volume_ml"], "measured_volume_ml": ph["eat_volume"],
        "true_density_hu": ph["true_eat_density_hu"], "measured_density_hu": ph["eat_density"],
    })
    out["volume_within"] = np.abs(out["measured_volume_ml"] - out["true_volume_ml"]) <= rel * out["true_volume_ml"]
    out["density_within"] = np.abs(out["measured_density_hu"] - out["true_density_hu"]) <= hu
    return out


def share_text(table: pd.DataFrame, column: str = "within") -> str:
    """'k / n phantoms' for a boolean column."""
    return f"{int(table[column].sum())} / {len(table)} phantoms"


# -- chapter 4 assembly ---------------------------------------------------------------------------
def make_radiomics_task(structures: Sequence[str], features: Sequence[str]):
    """:func:`radiomics_task` with the structures and features bound."""
    return functools.partial(radiomics_task, structures=list(structures), features=list(features))


def analysis_scans(scans: pd.DataFrame, cac_eat: pd.DataFrame) -> pd.DataFrame:
    """The scans chapter 4 measures for the models: segmented, measured by chapter 3, not a real sample.

    The real samples are there to check the methods (not CTAC scans, no patients); a scan chapter 3
    excluded has no CAC or EAT, so its patient cannot enter the models.
    """
    kept = set(measured(cac_eat)["scan_id"])
    segmented = measured(scans)
    return segmented[(segmented["dataset"] != "sample") & segmented["scan_id"].isin(kept)].reset_index(drop=True)


def image_feature_table(radiomics_rows: pd.DataFrame, cac_eat: pd.DataFrame) -> pd.DataFrame:
    """One row per patient in the shared schema: ``patient_id``, CT features, CAC and EAT with sources.

    Feature columns are float32 as in the synthetic table; the models read either table. CAC and EAT
    come from the scans chapter 3 measured (``cac_eat`` rows with ``status`` ``ok``, when it has one).
    """
    feats = radiomics_rows.drop(columns=["scan_id"])
    num = [c for c in feats.columns if c.startswith(manifest.CT_PREFIX) and not c.endswith("__status")]
    feats[num] = feats[num].astype(np.float32)
    keep = ["patient_id", "cac_score", "cac_volume_mm3", "cac_category", "cac_source",
            "eat_volume", "eat_density", "eat_region", "eat_source"]
    values = measured(cac_eat) if "status" in cac_eat.columns else cac_eat
    return feats.merge(values[[c for c in keep if c in values.columns]], on="patient_id", how="left")


def analysed_cohort(cohort: pd.DataFrame, cac_eat: pd.DataFrame,
                    image_features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The analysed cohort: on a site's data, the patients with a measured scan (the paper's flow).

    On a site's own scans (``dataset`` ``site`` in ``cac_eat``) a patient none of whose scans could be
    measured leaves the analysis, as the paper's incomplete CTAC scans do; the phantoms and samples of
    the synthetic default are no patients' only scans, so there the cohort is analysed whole.

    Returns
    -------
    (cohort, left_out)
        The analysed patients (rows of ``cohort``, in its order) and :func:`patient_exclusions`, or
        None when the run holds no site scans.
    """
    if not (cac_eat["dataset"] == "site").any():
        return cohort, None
    left_out = patient_exclusions(cohort["patient_id"], cac_eat, image_features)
    return cohort[~cohort["patient_id"].isin(left_out["patient_id"])].reset_index(drop=True), left_out


def patient_exclusions(patient_ids, cac_eat: pd.DataFrame, image_features: pd.DataFrame) -> pd.DataFrame:
    """The patients left without a measured scan, each with the reason (:data:`EXCLUSION_REASONS`).

    Parameters
    ----------
    patient_ids : sequence
        The cohort's patients.
    cac_eat : DataFrame
        Chapter 3's table: every scan with its ``status`` and ``reason``.
    image_features : DataFrame
        Chapter 4's table: the patients with CT features.

    Returns
    -------
    DataFrame
        ``patient_id``, ``reason``: ``no_scan`` for a patient without a scan; the reason of the
        patient's first scan when none was measured; ``radiomics_failed`` when a scan was measured but
        gave no features. Patients in ``image_features`` are not listed.
    """
    analysed = set(image_features["patient_id"])
    scans = cac_eat.groupby("patient_id", sort=False)
    rows = []
    for pid in patient_ids:
        if pid in analysed:
            continue
        if pid not in scans.groups:
            reason = "no_scan"
        else:
            own = scans.get_group(pid)
            ok = own["status"] == SCAN_OK
            reason = "radiomics_failed" if ok.any() else own["reason"].iloc[0]
        rows.append({"patient_id": pid, "reason": reason})
    return pd.DataFrame(rows, columns=["patient_id", "reason"])


def fill_measured_ct(cohort: pd.DataFrame, cac_eat: pd.DataFrame) -> pd.DataFrame:
    """The cohort with its missing CAC and EAT values taken from chapter 3's measurements.

    A site's cohort table need not hold the CT values the book measures on its scans
    (:data:`ctac_helpers.pipeline.site.MEASURED_COLUMNS`); the outcome chapters then use the measured (or
    site-supplied) ones. Values the cohort table holds are kept; a patient with several scans takes
    the first scan's value.
    """
    out = cohort.copy()
    values = measured(cac_eat) if "status" in cac_eat.columns else cac_eat  # an excluded scan has no values
    per_patient = values.drop_duplicates("patient_id").set_index("patient_id")
    for col in ("cac_score", "eat_volume", "eat_density"):
        if col not in per_patient.columns:
            continue
        found = out["patient_id"].map(per_patient[col]).astype(float)
        out[col] = out[col].astype(float).fillna(found) if col in out.columns else found
    return out


def pyradiomics_agreement(scans: pd.DataFrame, per_scan: int, features: Sequence[str], settings: Mapping) -> pd.DataFrame:
    """Largest relative difference between the one-pass features and PyRadiomics' extractor.

    For each scan, the ``per_scan`` largest structures fully present are measured both ways.
    """
    rows = []
    for _, scan in scans.iterrows():
        ct, labels = sitk.ReadImage(scan["ct_path"]), sitk.ReadImage(scan["label_path"])
        counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel())
        names = manifest.class_map()
        present = [names[i] for i in np.argsort(counts)[::-1] if i > 0 and counts[i] > 0 and i in names
                   and scan.get(f"{STATUS_PREFIX}{names[i]}") == "present"][:per_scan]
        if not present:
            continue
        fast = radiomics.structure_features(ct, labels, structures=present, features=list(features), settings=dict(settings))
        ref = radiomics.pyradiomics_features(ct, labels, structures=present, features=list(features), settings=dict(settings))
        for s in present:
            a, b = fast.loc[s, list(features)].to_numpy(float), ref.loc[s, list(features)].to_numpy(float)
            rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
            rows.append({"scan_id": scan["scan_id"], "structure": s, "n_features": len(features),
                         "max_relative_difference": float(np.nanmax(rel)),
                         "worst_feature": list(features)[int(np.nanargmax(rel))]})
    return pd.DataFrame(rows, columns=["scan_id", "structure", "n_features", "max_relative_difference", "worst_feature"])


def radiomics_summary(image_features: pd.DataFrame, synthetic: pd.DataFrame, structures: Sequence[str]) -> pd.DataFrame:
    """Per structure: presence, median attenuation and volume in the imaged scans and the synthetic cohort."""
    rows = []
    for s in structures:
        mean_col, vol_col, st_col = (manifest.feature_column(s, f) for f in ("Mean", "MeshVolume", "status"))
        row = {"structure": s, "scans": len(image_features),
               "present": int((image_features[st_col] == "present").sum()) if st_col in image_features else 0,
               "mean_hu_imaged": float(np.nanmedian(image_features[mean_col])) if mean_col in image_features else np.nan,
               "volume_ml_imaged": float(np.nanmedian(image_features[vol_col])) / 1000 if vol_col in image_features else np.nan,
               "mean_hu_synthetic": float(np.nanmedian(synthetic[mean_col])) if mean_col in synthetic else np.nan,
               "volume_ml_synthetic": float(np.nanmedian(synthetic[vol_col])) / 1000 if vol_col in synthetic else np.nan}
        rows.append(row)
    return pd.DataFrame(rows)


# -- what the models read -------------------------------------------------------------------------
FEATURE_SOURCES = ("synthetic", "imaging")


def feature_structures(ct_features: pd.DataFrame, source: str = "imaging") -> list[str] | None:
    """The structures of the CT models for a feature source.

    ``'imaging'``: the structures of chapter 4's table, i.e. those its frequency rule kept on the scans
    of this run (a site's scans keep their own selection). ``'synthetic'``: None, the models' default
    (:func:`ctac_helpers.models.cv.default_structures`).
    """
    if source not in FEATURE_SOURCES:
        raise ValueError(f"unknown feature source {source!r}; allowed: {', '.join(FEATURE_SOURCES)}")
    if source == "synthetic":
        return None
    found = sorted({manifest.parse_feature_column(c)[0] for c in ct_features.columns
                    if c.startswith(manifest.CT_PREFIX) and c.endswith("__status")})
    if not found:
        raise ValueError("the image feature table holds no structure (no ct__<structure>__status column): "
                         "did chapter 4 select any structure?")
    return found


def model_inputs(cohort: pd.DataFrame, synthetic_features: pd.DataFrame,
                 image_features: pd.DataFrame | None, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort and CT feature table the models chapter uses, from either source.

    Parameters
    ----------
    cohort : DataFrame
        The cohort table (chapter 0 or a site's own).
    synthetic_features : DataFrame
        The synthetic CT feature table (``artifacts/ct_features.parquet``).
    image_features : DataFrame or None
        Chapter 4's ``artifacts/image_features.parquet``; required when ``source='imaging'``.
    source : {'synthetic', 'imaging'}
        ``'synthetic'``: the cohort and the synthetic table as they are. ``'imaging'``: the patients
        with image-derived features only, whose CAC score and EAT volume and density are replaced by
        the values measured on (or supplied with) their scans, so that every CT input of the models
        comes from the images.

    Returns
    -------
    (cohort, ct_features)
        Aligned on ``patient_id``, in the cohort's order.
    """
    if source not in FEATURE_SOURCES:
        raise ValueError(f"unknown feature source {source!r}; allowed: {', '.join(FEATURE_SOURCES)}")
    if source == "synthetic":
        if not any(c.startswith(manifest.CT_PREFIX) for c in synthetic_features.columns):
            raise ValueError("the CT feature table of chapter 0 is empty (a site's run: its CT features are "
                             "measured on its scans); set the models chapter's parameter features: imaging")
        return cohort, synthetic_features
    if image_features is None or not len(image_features):
        raise ValueError("feature source 'imaging' needs the radiomics chapter's image_features artifact "
                         "(run the segmentation, cac_eat and radiomics stages first)")
    img = image_features.set_index("patient_id")
    unknown = sorted(set(img.index) - set(cohort["patient_id"]))
    if unknown:
        raise ValueError(f"image features for patient(s) not in the cohort table: {', '.join(map(str, unknown[:10]))}")
    sub = cohort[cohort["patient_id"].isin(img.index)].copy()
    for col in ("cac_score", "eat_volume", "eat_density"):
        if col in img.columns:
            sub[col] = img.loc[sub["patient_id"], col].to_numpy(float)
    ct_cols = [c for c in img.columns if c.startswith(manifest.CT_PREFIX)]
    feats = img.loc[sub["patient_id"], ct_cols].reset_index()
    return sub.reset_index(drop=True), feats
