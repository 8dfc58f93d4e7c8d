"""Scan ingestion: the scan manifest, DICOM / NIfTI reading, image checks and the NIfTI cache.

Every later imaging step reads the cached NIfTI files written here, never the site's DICOM files:

* a DICOM series is read with SimpleITK (GDCM), which orders the slices by their position along
  the slice normal and applies RescaleSlope / RescaleIntercept, so the voxels are in HU;
* every image is reoriented to LPS, so that array axis 0 runs from the feet to the head for every
  scanner and for label maps written by other tools (TotalSegmentator writes RAS NIfTI);
* only the voxel grid and the voxel values survive: the cached NIfTI carries no DICOM header, so
  names, ids, dates of birth, accession numbers and institutions never go past this module. The
  record returned for a scan holds geometry and a few acquisition numbers (kVp, slice thickness),
  nothing that identifies a person or a place.

References
----------
DICOM PS3.3 C.7.6.2 (Image Plane Module: ImagePositionPatient, ImageOrientationPatient) and
C.11.1.1.2 (Modality LUT: RescaleSlope, RescaleIntercept).
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.cohort import validate
from ctac_helpers.imaging.grid import grid_differences
from ctac_helpers.core.rundir import atomic_path
from ctac_helpers.cohort.validate import Problem, ValidationError, report_problems, read_table, spreadsheet_rows, unit_hint

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PATH_COLUMNS = ("image", "label_map", "pericardium")
# DICOM tags read at ingestion: geometry and acquisition only (never identifiers).
_TAG_POSITION = "0020|0032"
_TAG_ORIENTATION = "0020|0037"
_TAG_SPACING = "0028|0030"
_TAG_ROWS = "0028|0010"
_TAG_COLUMNS = "0028|0011"
_TAG_MODALITY = "0008|0060"
_TAG_THICKNESS = "0018|0050"
_TAG_KVP = "0018|0060"


class IngestError(ValueError):
    """A scan that cannot be ingested; the message names the file and what was expected."""


# -- the manifest ---------------------------------------------------------------------------------
def read_scan_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a scan manifest CSV; path columns are resolved against the manifest's folder.

    Leading ``#`` comment lines (the ``ctac-book init-site`` template's) are skipped and ids are
    kept as strings (leading zeros matter), see :func:`ctac_helpers.cohort.validate.read_table`. The
    returned frame has ``attrs['file']`` set to the manifest's path and ``attrs['rows']`` to the
    spreadsheet row of each scan, for error messages.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scan manifest {path} does not exist")
    df = read_table(path)
    base = path.resolve().parent
    for col in PATH_COLUMNS:
        if col in df.columns:
            df[col] = [_resolve(base, v) for v in df[col]]
    df.attrs["file"] = str(path)
    return df


def _resolve(base: Path, value) -> object:
    if not isinstance(value, str) or not value.strip():
        return value
    p = Path(value.strip()).expanduser()
    return str(p if p.is_absolute() else base / p)


def validate_scan_manifest(df: pd.DataFrame, file: str | None = None, check_files: bool = True,
                           cohort_ids=None, codes: Mapping[str, list] | None = None) -> list[Problem]:
    """Check a scan manifest; return every problem found (errors and warnings).

    Checks: required columns (a column named in another case or with spaces is named as such),
    unknown columns (warning), empty values, the ids (:func:`ctac_helpers.cohort.validate.check_ids`:
    unique scan ids, spaces, case, spreadsheet damage), numbers and ranges of the site-supplied
    CAC / EAT values, that each path exists and is a DICOM folder or a NIfTI file (an empty folder
    named as such; when ``check_files``), that no two scans share an image and no label map is the
    CT itself, and, given the cohort's patient ids, scans without a patient (an id that matches
    one of the cohort only in case or spaces named) and patients without a scan; given ``codes``,
    that the coded columns (``site``, ``protocol``) hold only those codes.

    ``codes`` (:func:`ctac_helpers.core.manifest.scan_manifest_codes`) is what keeps a site's free text
    out of the book: a value outside it is an error naming the allowed codes. The book's own
    manifests (phantoms, samples) pass None.
    """
    file = file or df.attrs.get("file", "scan manifest")
    rows = spreadsheet_rows(df)
    schema = manifest.scan_manifest_schema()
    problems, meant = validate.column_name_problems(df, schema, file)
    for c in schema.index[schema["required"]]:
        if c not in df.columns and c not in meant:
            problems.append(Problem(file, None, c, "column missing", f"a column {c!r} ({schema.loc[c, 'description']})"))
    renamed = {p.column for p in problems}
    for c in df.columns:
        if c not in schema.index and c not in renamed:
            problems.append(Problem(file, None, c, "unknown column",
                                    "only the columns of data_manifest/scan_manifest.yaml; it is ignored", "warning"))
    for name, col in schema.iterrows():
        if name not in df.columns:
            continue
        raw = df[name]
        values = raw.to_numpy(dtype=object)
        isnull = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        nullable = bool(col["nullable"])
        if not nullable and isnull.any():
            report_problems(problems, file, name, isnull, values, "a value (this column may not be empty)", rows=rows)
        present = ~isnull
        if col["type"] == "float":
            num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
            bad = present & np.isnan(num)
            if bad.any():
                report_problems(problems, file, name, bad, values, "a number", rows=rows,
                        hints=lambda v: validate.number_hint(v, col["unit"], nullable))
            infinite = present & np.isinf(num)
            if infinite.any():
                report_problems(problems, file, name, infinite, values, "a finite number", rows=rows)
            lo, hi = col["range"]
            out = present & np.isfinite(num) & ((num < lo) | (num > hi))
            if out.any():
                hint = unit_hint(col["unit"], lo, hi, num[out])
                report_problems(problems, file, name, out, values, f"a value in [{lo}, {hi}] {col['unit']}{hint}",
                        rows=rows)
        elif col["type"] == "code" and codes is not None:
            allowed = list(codes.get(name, []))
            bad = present & ~np.isin(raw.astype(str).to_numpy(), allowed)
            if bad.any():
                key = "site." + manifest.DECLARED_CODES.get(col["codes"], "labels")
                report_problems(problems, file, name, bad, values,
                        f"one of the codes {allowed} (a site's own codes are declared as {key} in its "
                        "configuration; free text is not carried into the book)", rows=rows)
        elif col["type"] == "path" and check_files:
            bad = np.array([bool(p) and image_kind(str(v)) is None for v, p in zip(values, present)], dtype=bool)
            if bad.any():
                what = ("an existing DICOM series folder or NIfTI file (.nii, .nii.gz)" if name == "image"
                        else "an existing NIfTI file, or a folder of <structure>.nii.gz masks")
                report_problems(problems, file, name, bad, values, what, rows=rows, hints=_path_hint)
    problems += validate.check_ids(df, "scan_id", file, "scan id")
    problems += [p for p in validate.check_ids(df, "patient_id", file, "patient id")
                 if "a unique patient id" not in p.expected]  # a patient may have several scans
    problems += _shared_paths(df, file, rows)
    if cohort_ids is not None and "patient_id" in df.columns:
        cohort_ids = set(map(str, cohort_ids))
        orphan = ~df["patient_id"].astype(str).isin(cohort_ids).to_numpy() & df["patient_id"].notna().to_numpy()
        if orphan.any():
            report_problems(problems, file, "patient_id", orphan, df["patient_id"].to_numpy(dtype=object),
                    "a patient id of the cohort table (this scan has no patient)", rows=rows,
                    hints=lambda v: validate.id_mismatch_hint(v, cohort_ids))
        missing = sorted(cohort_ids - set(df["patient_id"].astype(str)))
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            problems.append(Problem(file, None, "patient_id", f"{len(missing)} cohort patient(s) without a scan: {shown}",
                                    "a scan for every patient of the cohort table", "warning"))
    return problems


def _path_hint(value) -> str:
    """Why a path cell names no image: an empty folder, a folder without DICOM files, another file type."""
    if not isinstance(value, str):
        return ""
    p = Path(value)
    if p.is_dir():
        return " (an empty folder)"
    if p.is_file():
        return f" (a file of another type: {p.name!r})"
    if "\\" in value and Path(value.replace("\\", "/")).exists():
        return " (a Windows path: separate folders with '/', which every system reads, not '\\')"
    return " (no such file or folder)"


def _shared_paths(df: pd.DataFrame, file: str, rows) -> list[Problem]:
    """Two scans with one image, and label maps or masks that are the scan's CT itself."""
    problems: list[Problem] = []
    if "image" in df.columns:
        images = df["image"].to_numpy(dtype=object)
        first: dict[str, int] = {}
        for i, v in enumerate(images):
            if isinstance(v, str) and v.strip():
                key = os.path.normpath(v)
                if key in first:
                    problems.append(Problem(file, int(rows[i]), "image", validate.show(v),
                                            f"an image of this scan only; row {int(rows[first[key]])} names the "
                                            "same image (a copied row?)"))
                else:
                    first[key] = i
        for column in ("label_map", "pericardium"):
            if column not in df.columns:
                continue
            for i, (img, lab) in enumerate(zip(images, df[column].to_numpy(dtype=object))):
                if isinstance(img, str) and isinstance(lab, str) and img.strip() and \
                        os.path.normpath(img) == os.path.normpath(lab):
                    problems.append(Problem(file, int(rows[i]), column, validate.show(lab),
                                            f"a {column.replace('_', ' ')} file, not the scan's CT (the same path "
                                            "as its image)"))
    return problems


def require_valid_scan_manifest(df: pd.DataFrame, file: str | None = None, **kwargs) -> pd.DataFrame:
    """Validate and return ``df``; raise :class:`~ctac_helpers.cohort.validate.ValidationError` listing every error."""
    problems = validate_scan_manifest(df, file, **kwargs)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems, what=f"the scan manifest {file or df.attrs.get('file', '')}".strip())
    return df


def image_kind(path: str) -> str | None:
    """``'dicom'`` for a non-empty folder, ``'nifti'`` for a NIfTI file, else None (what ingestion can read)."""
    p = Path(path)
    if p.is_dir():
        return "dicom" if any(p.iterdir()) else None
    if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES):
        return "nifti"
    return None


# -- reading images -------------------------------------------------------------------------------
def read_ct(path: str | os.PathLike) -> tuple[sitk.Image, dict]:
    """Read a CT from a DICOM series folder or a NIfTI file, reoriented to LPS, header-free.

    Returns
    -------
    image : SimpleITK.Image
        The CT in HU (int16 when the values are integral and fit, else float32), LPS orientation,
        with no metadata dictionary.
    info : dict
        ``format``, ``n_files``, ``slice_thickness_mm`` and ``kvp`` (DICOM only, NaN otherwise).

    Raises
    ------
    IngestError
        Missing or unreadable file, no or several DICOM series, a series with mixed geometry or
        missing slices, a non-CT modality, NaN or infinite voxels in a NIfTI file.
    """
    path = Path(path)
    kind = image_kind(str(path))
    if kind is None:
        raise IngestError(f"{path}: not found, or neither a DICOM series folder nor a NIfTI file (.nii, .nii.gz)")
    if kind == "nifti":
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise IngestError(f"{path}: unreadable NIfTI file ({first_line(exc)})") from None
        check_nifti_complete(path, image, "NIfTI file")
        if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
            # ITK reads NaN voxels as 0 HU; the file's own values tell
            problem = validate.nifti_voxel_problem(path)
            if problem:
                raise IngestError(f"{path}: {problem}; expected {validate.CT_VOXELS_EXPECTED}")
        info = {"format": "nifti", "n_files": 1, "slice_thickness_mm": float("nan"), "kvp": float("nan")}
    else:
        image, info = _read_dicom_series(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise IngestError(f"{path}: expected a 3D single-channel CT, got a {image.GetDimension()}D image "
                          f"with {image.GetNumberOfComponentsPerPixel()} component(s)")
    return _clean(image), info


def check_nifti_complete(path: str | os.PathLike, header, what: str = "NIfTI file") -> None:
    """Raise when a NIfTI file holds fewer bytes than its header announces.

    ITK reads a truncated NIfTI file (an interrupted copy) without an error and fills the missing
    voxels with whatever is in memory, so the length is compared with the header's: ``vox_offset``
    plus the voxels' bytes. For ``.nii.gz`` the gzip trailer gives the length without decompressing;
    only when it is short (or the file has several gzip members) is the stream decompressed to count.

    Parameters
    ----------
    path : path-like
        The NIfTI file.
    header : SimpleITK.Image or SimpleITK.ImageFileReader
        The file as read by SimpleITK (an image, or a reader after ``ReadImageInformation``): its
        NIfTI metadata (``dim[i]``, ``bitpix``, ``vox_offset``) is used.
    what : str
        Name of the file's role in the message.

    Raises
    ------
    IngestError
        The file is shorter than its header announces.
    """
    path = Path(path)
    try:
        ndim = int(header.GetMetaData("dim[0]"))
        dims = [int(header.GetMetaData(f"dim[{i}]")) for i in range(1, ndim + 1)]
        n_bytes = int(np.prod(dims)) * int(header.GetMetaData("bitpix")) // 8
        expected = int(float(header.GetMetaData("vox_offset"))) + n_bytes
    except (RuntimeError, ValueError):
        return  # no NIfTI header fields to compare with
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 4, 0))
            size = int.from_bytes(fh.read(4), "little")  # the last member's length, mod 2**32
        if size >= expected % 2**32:
            return
        size = 0
        with gzip.open(path, "rb") as fh:
            try:
                while chunk := fh.read(1 << 22):
                    size += len(chunk)
            except (OSError, EOFError) as exc:
                raise IngestError(f"{path}: unreadable {what} ({exc})") from None
    else:
        size = path.stat().st_size
    if size < expected:
        raise IngestError(f"{path}: truncated {what}: {size} bytes, its header announces {expected}; "
                          "expected a complete file (an interrupted copy?)")


def first_line(exc: Exception) -> str:
    """The last non-empty line of an exception's message (a reader's cause), or its type name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, dict]:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise IngestError(f"{folder}: no DICOM series found in this folder")
    if len(series) > 1:
        counts = {s or "(no SeriesInstanceUID)": len(reader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
        listing = ", ".join(f"{k} ({v} files)" for k, v in counts.items())
        raise IngestError(f"{folder}: {len(series)} DICOM series found ({listing}); expected one series per scan: "
                          "put each series in its own folder")
    files = list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    checks = manifest.image_checks()
    if len(files) < checks["min_slices"]:
        raise IngestError(f"{folder}: {len(files)} slice(s); expected at least {checks['min_slices']}")
    headers = [_slice_header(f) for f in files]
    first = headers[0]
    if first["modality"] and first["modality"] != "CT":
        raise IngestError(f"{files[0]}: modality {first['modality']!r}; expected 'CT'")
    for f, h in zip(files, headers):
        for key in ("rows", "columns", "spacing", "orientation"):
            if not _same(h[key], first[key]):
                raise IngestError(f"{f}: {key} {h[key]} differs from {first[key]} in {files[0]}; "
                                  "expected one geometry across the series (mixed series in one folder?)")
    _check_slice_positions(folder, files, headers, checks["max_gap_ratio"])
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise IngestError(f"{folder}: the series could not be read ({first_line(exc)})") from None
    info = {"format": "dicom", "n_files": len(files), "slice_thickness_mm": first["thickness"], "kvp": first["kvp"]}
    return image, info


def _slice_header(file: str) -> dict:
    r = sitk.ImageFileReader()
    r.SetFileName(file)
    r.LoadPrivateTagsOff()
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise IngestError(f"{file}: unreadable DICOM file ({first_line(exc)})") from None

    def tag(key, kind=str, default=None):
        if not r.HasMetaDataKey(key):
            return default
        raw = r.GetMetaData(key).strip()
        if kind is str:
            return raw
        try:
            vals = [float(v) for v in raw.split("\\") if v.strip()]
        except ValueError:
            return default
        return vals if kind is list else (vals[0] if vals else default)

    return {
        "position": tag(_TAG_POSITION, list),
        "orientation": tag(_TAG_ORIENTATION, list),
        "spacing": tag(_TAG_SPACING, list),
        "rows": tag(_TAG_ROWS, float),
        "columns": tag(_TAG_COLUMNS, float),
        "modality": tag(_TAG_MODALITY, str, ""),
        "thickness": tag(_TAG_THICKNESS, float, float("nan")),
        "kvp": tag(_TAG_KVP, float, float("nan")),
    }


def _same(a, b, tol: float = 1e-3) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return len(a) == len(b) and bool(np.allclose(a, b, atol=tol))
    return abs(a - b) <= tol


def _check_slice_positions(folder: Path, files: list[str], headers: list[dict], max_gap_ratio: float) -> None:
    """Slices must be equally spaced along the normal: a gap means missing slices."""
    if any(h["position"] is None or h["orientation"] is None for h in headers):
        raise IngestError(f"{folder}: ImagePositionPatient / ImageOrientationPatient missing; "
                          "expected both in every slice to order the series")
    o = np.asarray(headers[0]["orientation"], float)
    normal = np.cross(o[:3], o[3:])
    z = np.array([np.dot(normal, h["position"]) for h in headers])
    order = np.argsort(z)
    dz = np.diff(z[order])
    if np.any(dz < 1e-3):
        i = int(np.argmax(dz < 1e-3))
        raise IngestError(f"{folder}: two slices at the same position ({files[order[i]]} and {files[order[i + 1]]}); "
                          "expected one slice per position (duplicate files or two series mixed?)")
    step = float(np.median(dz))
    worst = int(np.argmax(np.abs(dz - step)))
    if abs(dz[worst] - step) > max_gap_ratio * step:
        raise IngestError(f"{folder}: slice gap of {dz[worst]:.2f} mm between {Path(files[order[worst]]).name} and "
                          f"{Path(files[order[worst + 1]]).name}, the other slices are {step:.2f} mm apart; "
                          "expected equally spaced slices (missing slices?)")


def _clean(image: sitk.Image) -> sitk.Image:
    """LPS orientation and no metadata: only the grid and the values remain."""
    image = sitk.DICOMOrient(image, "LPS")
    arr = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(arr.dtype, np.floating):
        if np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767:
            arr = arr.astype(np.int16)
        else:
            arr = arr.astype(np.float32)
    elif arr.dtype != np.int16 and arr.min() >= -32768 and arr.max() <= 32767:
        arr = arr.astype(np.int16)
    clean = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    clean.SetSpacing(image.GetSpacing())
    clean.SetOrigin(image.GetOrigin())
    clean.SetDirection(image.GetDirection())
    return clean


def check_ct(image: sitk.Image, source: str) -> dict:
    """Geometry and intensity checks of an ingested CT; return its summary, raise on a bad image.

    Checks (thresholds in ``data_manifest/scan_manifest.yaml``): enough slices, spacing in mm in a
    CT's range, finite voxels that are not all alike (NaN, infinite values and a constant volume are
    named as such), the darkest voxels are air (otherwise the values are not HU, typically stored
    values without the RescaleIntercept of -1024), and the 0.1th / 99.9th percentiles inside the HU
    range.
    """
    checks = manifest.image_checks()
    size, spacing = image.GetSize(), image.GetSpacing()
    if size[2] < checks["min_slices"]:
        raise IngestError(f"{source}: {size[2]} slice(s); expected at least {checks['min_slices']}")
    lo, hi = checks["spacing_mm"]
    for axis, s in zip("xyz", spacing):
        if not lo <= s <= hi:
            raise IngestError(f"{source}: voxel spacing {s:g} along {axis}; expected a spacing in [{lo}, {hi}] mm")
    arr = sitk.GetArrayViewFromImage(image)
    problem = validate.nonfinite_voxels(arr) or validate.constant_volume(arr)
    if problem:
        raise IngestError(f"{source}: {problem}; expected {validate.CT_VOXELS_EXPECTED}")
    sample = arr[:, ::4, ::4]  # percentiles of a 1-in-16 in-plane sample are exact enough and 16x cheaper
    p_lo, p_hi = (float(v) for v in np.percentile(sample, [0.1, 99.9]))
    if p_lo > checks["air_hu_max"]:
        hint = (" The values look shifted by +1024 (stored values without RescaleIntercept): subtract 1024."
                if -100 <= p_lo <= 100 else "")
        raise IngestError(f"{source}: the darkest voxels are at {p_lo:.0f}; expected air at about -1000 HU "
                          f"(0.1th percentile <= {checks['air_hu_max']} HU).{hint}")
    h_lo, h_hi = checks["hu_range"]
    if p_lo < h_lo or p_hi > h_hi:
        raise IngestError(f"{source}: 0.1th-99.9th percentiles {p_lo:.0f} to {p_hi:.0f}; expected values in "
                          f"[{h_lo}, {h_hi}] HU")
    return {
        "size_x": size[0], "size_y": size[1], "n_slices": size[2],
        "spacing_x_mm": spacing[0], "spacing_y_mm": spacing[1], "spacing_z_mm": spacing[2],
        "hu_p001": p_lo, "hu_p999": p_hi,
    }


def read_label_map(path: str | os.PathLike, ct: sitk.Image, what: str = "label map",
                   kind: str = "labels") -> sitk.Image:
    """Read a multilabel map (file) or a folder of ``<structure>.nii.gz`` masks onto the CT's grid.

    The labels are reoriented to LPS like the CT and must then lie on exactly the CT's grid (size,
    spacing, origin, direction): a label map made for another image is an error, not something to
    resample silently. A mask folder is combined into TotalSegmentator v2 class ids; files whose
    names are not v2 structures are ignored with a warning. The values are checked before any cast
    (:func:`ctac_helpers.cohort.validate.label_value_problem`): non-integer or negative values, and in a
    multilabel map (``kind='labels'``) values outside the class map, are errors. A mask
    (``kind='mask'``, e.g. the pericardium) may hold any non-negative integers.
    """
    path = Path(path)
    if path.is_dir():
        ids = {name: i for i, name in manifest.class_map().items()}
        combined = None
        for f in sorted(path.glob("*.nii*")):
            name = f.name.split(".nii")[0]
            if name not in ids:
                logger.warning("%s: %s is not a TotalSegmentator v2 structure; ignored", path, f.name)
                continue
            mask = _clean_labels(_read_nifti(f, what), f, what, "mask")
            _check_grid(mask, ct, f, what)
            arr = sitk.GetArrayViewFromImage(mask) > 0
            if combined is None:
                combined = np.zeros(arr.shape, np.uint8)
            combined[arr] = ids[name]
        if combined is None:
            raise IngestError(f"{path}: no <structure>.nii.gz masks with TotalSegmentator v2 names in this folder")
        out = sitk.GetImageFromArray(combined)
        out.CopyInformation(ct)
        return out
    labels = _clean_labels(_read_nifti(path, what), path, what, kind)
    _check_grid(labels, ct, path, what)
    # within tolerance is the same grid: copy the CT's exactly, as PyRadiomics checks to 1e-6 of a voxel
    labels.CopyInformation(ct)
    return labels


def _read_nifti(path: Path, what: str) -> sitk.Image:
    if not (path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)):
        raise IngestError(f"{path}: {what} not found; expected a NIfTI file (.nii, .nii.gz)")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise IngestError(f"{path}: unreadable {what} ({first_line(exc)})") from None
    check_nifti_complete(path, image, what)
    return image


def _clean_labels(image: sitk.Image, path, what: str, kind: str) -> sitk.Image:
    image = sitk.DICOMOrient(image, "LPS")
    arr = sitk.GetArrayViewFromImage(image)
    problem = validate.label_value_problem(arr, kind)
    if problem:  # checked before the cast below, which would read -1 as 255
        raise IngestError(f"{path}: {what}: {problem}")
    out = sitk.GetImageFromArray(arr.astype(np.uint8 if arr.max() < 256 else np.uint16))
    out.CopyInformation(image)
    return out


def _check_grid(labels: sitk.Image, ct: sitk.Image, path, what: str, tol: float = 1e-3) -> None:
    # half a voxel of origin tolerance is too lax; 1% of a voxel absorbs float rounding of writers
    diff = grid_differences(labels, ct, tol, 0.01 * min(ct.GetSpacing()), tol)
    if diff:
        listing = "; ".join(f"{k} {v}" + (" mm" if k in ("spacing", "origin") else "") for k, v in diff.items())
        raise IngestError(f"{path}: the {what}'s grid does not match the CT's ({listing}); "
                          "expected a label map computed on this CT")


# -- one scan -------------------------------------------------------------------------------------
def ingest_scan(scan: Mapping, cache_dir: str | os.PathLike) -> dict:
    """Read, check and cache one scan of the manifest as header-free NIfTI files.

    Writes ``<cache_dir>/<scan_id>/ct.nii.gz`` and, when the manifest gives them, ``labels.nii.gz``
    (precomputed segmentation) and ``pericardium.nii.gz``, each atomically.

    Returns
    -------
    dict
        ``scan_id``, ``patient_id``, the cached paths (``ct_path``, ``label_path``,
        ``pericardium_path``; None where absent), the image summary of :func:`check_ct` and the
        acquisition numbers of :func:`read_ct`.
    """
    scan_id = str(scan["scan_id"])
    ct, info = read_ct(scan["image"])
    summary = check_ct(ct, str(scan["image"]))
    out_dir = Path(cache_dir) / scan_id
    record = {"scan_id": scan_id, "patient_id": str(scan["patient_id"]), **info, **summary,
              "ct_path": str(write_image(ct, out_dir / "ct.nii.gz")), "label_path": None, "pericardium_path": None}
    for column, name, key in (("label_map", "labels.nii.gz", "label_path"),
                              ("pericardium", "pericardium.nii.gz", "pericardium_path")):
        src = scan.get(column)
        if isinstance(src, str) and src.strip():
            labels = read_label_map(src, ct, what=column.replace("_", " "),
                                    kind="labels" if column == "label_map" else "mask")
            record[key] = str(write_image(labels, out_dir / name))
    return record


def write_image(image: sitk.Image, path: str | os.PathLike) -> Path:
    """Write an image atomically (compressed NIfTI), so a killed run never leaves half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
