"""A site's own data: the ``ctac-book init-site`` templates and the checks made before a run.

A site brings two tables and its images:

* the cohort table (``cohort.csv``), one row per patient, columns of ``data_manifest/cohort_schema.yaml``;
* the scan manifest (``scans.csv``), one row per CT scan, columns of ``data_manifest/scan_manifest.yaml``,
  pointing to DICOM series folders or NIfTI files (and optionally label maps and pericardium masks);
* a secret key (``secret.key``) for the keyed hash that pseudonymises patient ids. It must stay
  outside the run directory, whose contents are meant to be shared.

:func:`init_site` writes templates of these files and a run configuration (``site.yaml``) pointing to
them; :func:`validate_site` checks everything and reports every problem at once, each with the file,
the spreadsheet row (see :mod:`ctac_helpers.cohort.validate`), the column, the value and what was expected.

Examples
--------
::

    ctac-book init-site mysite                    # writes mysite/{site.yaml,cohort.csv,scans.csv,secret.key}
    ctac-book validate --config mysite/site.yaml  # every problem, one per line
    ctac-book run --config mysite/site.yaml
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ctac_helpers.pipeline import config as config_mod
from ctac_helpers.imaging import ingest
from ctac_helpers.core import manifest
from ctac_helpers.cohort import validate
from ctac_helpers.core import stages as stages_mod
from ctac_helpers.imaging.grid import grid_differences
from ctac_helpers.cohort.privacy import MIN_SECRET_BYTES, pseudonymise, read_secret
from ctac_helpers.cohort.validate import Problem, ValidationError, read_table, spreadsheet_rows, validate_cohort

__all__ = [
    "SITE_FILES", "MEASURED_COLUMNS", "init_site", "cohort_template", "scans_template", "read_table",
    "run_directory", "check_secret", "check_scan_images", "parameter_problems", "validate_site",
    "require_valid_site",
    "load_cohort", "load_scans",
]

logger = logging.getLogger(__name__)

#: The files :func:`init_site` writes, by role.
SITE_FILES = {"config": "site.yaml", "cohort": "cohort.csv", "scans": "scans.csv", "secret": "secret.key"}
#: Cohort columns the book measures on the scans (or takes from the scan manifest): optional in a
#: site's cohort table, and replaced by the image-derived values when present.
MEASURED_COLUMNS = ("cac_score", "eat_volume", "eat_density")
_PROGRESS_EVERY = 500  # scans between two progress lines of the image checks
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

_CONFIG_TEMPLATE = """\
# ctac-book run configuration for a site's own data, written by `ctac-book init-site`.
#   check the data:  ctac-book validate --config {config}
#   run the book:    ctac-book run --config {config}
profile: paper           # base profile (paper or quick)
name: {name}{name_pad}# run directory runs/<name>
site:
  cohort: cohort.csv     # clinical table, one row per patient (relative to this file)
  scans: scans.csv       # scan manifest, one row per CT scan
  secret: secret.key     # key of the keyed hash that pseudonymises patient ids; keep it private, outside runs/
  # labels: [MyHospital]  # uncomment: this site's own codes for the `site` columns of cohort.csv and scans.csv
  # protocols: [low_dose_140kvp]  # uncomment: its own codes for `ct_protocol` (cohort.csv) and `protocol` (scans.csv)
stages:                  # per-stage notebook parameters overriding the profile's
  models:
    features: imaging    # CT features measured on this site's scans by chapters 2-4
"""


# -- templates ------------------------------------------------------------------------------------
def _range_text(col: Mapping) -> str:
    rng = col.get("range")
    if not isinstance(rng, list):
        return ""
    text = f"range {rng[0]} to {rng[1]}"
    plausible = col.get("plausible")
    if isinstance(plausible, list):
        text += f" (typically {plausible[0]} to {plausible[1]})"
    return text


def _column_line(col: Mapping, note: str = "") -> str:
    kind = col["type"]
    parts = []
    if kind == "binary":
        parts.append("0/1 flag")
    elif kind == "category":
        parts.append(f"category, one of: {', '.join(map(str, col['categories']))}")
    elif kind == "path":
        parts.append("path (absolute, or relative to this file's folder)")
    elif kind == "code":
        codes = manifest.cohort_schema().loc[col["codes"], "categories"]
        key = manifest.DECLARED_CODES.get(col["codes"], "labels")
        parts.append(f"code, one of: {', '.join(map(str, codes))}, or one declared as site.{key} in site.yaml "
                     "(never free text: other values are refused)")
    else:
        parts.append({"float": "number", "int": "whole number", "string": "text"}.get(kind, kind))
    unit = col.get("unit")
    if isinstance(unit, str) and unit:
        parts.append(f"unit {unit}")
    if _range_text(col):
        parts.append(_range_text(col))
    if note:
        parts.append(note)
    else:
        parts.append(("required column" if col["required"] else "optional column")
                     + (", empty cells allowed" if col["nullable"] else ", no empty cells"))
    return f"# {col['name']}: {'; '.join(parts)}. {col['description']}"


def _template(title: list[str], schema: pd.DataFrame, notes: Mapping[str, str]) -> str:
    lines = [f"# {t}" if t else "#" for t in title]
    lines += [
        "#",
        "# Lines starting with '#' above the header are ignored (delete them or keep them). Row numbers",
        "# in messages are spreadsheet rows and count these lines: the header is the first row without '#'.",
        "# An empty cell is a missing value. Ids are read as text (leading zeros are kept).",
        "#",
        "# Columns (name: type; unit; allowed values; required or not. Description):",
    ]
    for _, col in schema.iterrows():
        entry = {k: v for k, v in col.items() if not (isinstance(v, float) and v != v)}
        lines.append(_column_line(entry, notes.get(col["name"], "")))
    lines.append(",".join(schema.index))
    return "\n".join(lines) + "\n"


def cohort_template() -> str:
    """The text of an empty cohort table: ``#`` lines describing every column, then the header."""
    notes = {c: "optional here: measured on the scans (or given in scans.csv); a value given here is replaced"
             for c in MEASURED_COLUMNS}
    title = ["cohort.csv: the clinical table, one row per patient (schema: data_manifest/cohort_schema.yaml).",
             "Flags are 0 or 1; numbers use '.' as the decimal mark and the units below (age in years,",
             "perfusion deficits and ejection fractions in %, not fractions)."]
    return _template(title, manifest.cohort_schema(), notes)


def scans_template() -> str:
    """The text of an empty scan manifest: ``#`` lines describing every column, then the header."""
    checks = manifest.image_checks()
    title = ["scans.csv: the scan manifest, one row per CT scan (schema: data_manifest/scan_manifest.yaml).",
             "Each image is a folder holding exactly one DICOM series, or a NIfTI file (.nii, .nii.gz), in HU",
             f"(air at about -1000; at least {checks['min_slices']} equally spaced slices of one geometry).",
             "Label maps and pericardium masks are optional, and must be computed on this very CT (same grid)."]
    return _template(title, manifest.scan_manifest_schema(), {})


def init_site(directory: str | os.PathLike) -> dict[str, Path]:
    """Create a site folder with a run configuration, table templates and a secret key.

    Parameters
    ----------
    directory : path-like
        Folder to create (or an existing one holding none of the files). Its name becomes the run
        name (characters other than letters, digits, ``_``, ``.`` and ``-`` are replaced by ``_``).

    Returns
    -------
    dict of str to Path
        ``config`` (``site.yaml``), ``cohort`` (``cohort.csv``), ``scans`` (``scans.csv``) and
        ``secret`` (``secret.key``, 32 random bytes hex-encoded, mode 0600).

    Raises
    ------
    ValueError
        ``directory`` is a file, or already holds one of the files (nothing is overwritten).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory}: exists and is not a folder; "
                         "expected a new or existing folder for the site")
    paths = {role: directory / name for role, name in SITE_FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists() or p.is_symlink()]
    if existing:
        raise ValueError(f"{directory}: already holds {', '.join(existing)}; expected a folder without "
                         f"{', '.join(SITE_FILES.values())} (nothing was overwritten: move them away or choose "
                         "another folder)")
    directory.mkdir(parents=True, exist_ok=True)
    name = _NAME_CHARS.sub("_", directory.resolve().name) or "site"
    if any(part == "runs" for part in directory.resolve().parts):
        logger.warning("%s is inside a 'runs' folder; keep the site's data and its secret key outside runs/",
                       directory)
    paths["config"].write_text(_CONFIG_TEMPLATE.format(
        config=paths["config"], name=name, name_pad=" " * max(1, 19 - len(name))), encoding="utf-8")
    paths["cohort"].write_text(cohort_template(), encoding="utf-8")
    paths["scans"].write_text(scans_template(), encoding="utf-8")
    # created with mode 0600 from the start: the key is never readable by others, not even briefly
    fd = os.open(paths["secret"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    # Keeps the key out of a repository the site folder may live in (appended to, never replaced).
    ignore = directory / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if SITE_FILES["secret"] not in lines:
        with ignore.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if lines and lines[-1] else "") + SITE_FILES["secret"] + "\n")
    logger.debug("site folder %s written", directory)
    return paths


# -- checks ---------------------------------------------------------------------------------------
def run_directory(config: Mapping, run_dir: str | os.PathLike | None = None) -> Path:
    """The run directory of ``config``: ``run_dir`` when given, else ``./runs/<name>`` (as the CLI)."""
    return Path(run_dir) if run_dir is not None else Path.cwd() / "runs" / config["name"]


def check_secret(path: str | os.PathLike, run_dir: str | os.PathLike) -> list[Problem]:
    """Check the secret key file: it exists, is not empty and lies outside the run directory.

    A key inside some other ``runs/`` folder, or readable by other users, is a warning.
    """
    path, column = Path(path), "site.secret"
    problems: list[Problem] = []
    resolved, rd = path.resolve(), Path(run_dir).resolve()
    if resolved == rd or rd in resolved.parents:
        problems.append(Problem(str(path), None, column, f"a key inside the run directory {rd}",
                                "a key file outside the run directory (a run directory is meant to be shared; "
                                "move the key elsewhere and update site.secret)"))
    elif "runs" in resolved.parent.parts:
        problems.append(Problem(str(path), None, column, "a key inside a 'runs' folder",
                                "a key file outside runs/, where run directories are kept and shared", "warning"))
    if not path.is_file():
        problems.append(Problem(str(path), None, column, "no such file",
                                "an existing file holding the key (`ctac-book init-site` writes one; or "
                                "python -c 'import secrets; print(secrets.token_hex(32))' > FILE)"))
        return problems
    try:
        content = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(str(path), None, column, f"unreadable ({exc.strerror})", "a readable key file"))
        return problems
    if not content.strip():
        problems.append(Problem(str(path), None, column, "an empty file",
                                "a key, e.g. 64 hex characters from secrets.token_hex(32)"))
    elif len(content.strip()) < MIN_SECRET_BYTES:
        problems.append(Problem(str(path), None, column, f"a key of {len(content.strip())} byte(s)",
                                f"a key of at least {MIN_SECRET_BYTES} bytes, e.g. 64 hex characters from "
                                "secrets.token_hex(32)"))
    if os.name == "posix" and path.stat().st_mode & 0o077:
        problems.append(Problem(str(path), None, column, f"mode {path.stat().st_mode & 0o777:04o}",
                                f"a key readable by its owner only (chmod 600 {path})", "warning"))
    return problems


def _problem(file: str, row: int, column: str, path: str, exc: Exception, what: str) -> Problem:
    message = str(exc)
    prefix = f"{path}: "
    detail = message[len(prefix):] if message.startswith(prefix) else message
    return Problem(file, row, column, repr(path), f"{what}; this one fails: {detail}")


def _nifti_header(path: str | os.PathLike, what: str) -> sitk.ImageFileReader:
    """The NIfTI file's header (size, spacing, origin, direction, pixel type), without its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ingest.IngestError(f"{path}: unreadable {what} ({ingest.first_line(exc)})") from None
    return reader


_INTEGER_PIXELS = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                   sitk.sitkUInt64, sitk.sitkInt64}


def _labels_match_by_header(header: sitk.ImageFileReader, ct_header, ct: sitk.Image) -> bool:
    """Whether a label file's header alone shows it lies on the CT's grid (then its voxels need no reading).

    True when it is an integer, single-component image with exactly the grid of the CT's own NIfTI
    header (both are reoriented alike at ingestion), or already in LPS with exactly the ingested
    CT's grid. Anything else is left to :func:`ctac_helpers.imaging.ingest.read_label_map`.
    """
    if header.GetPixelID() not in _INTEGER_PIXELS or header.GetNumberOfComponents() != 1:
        return False
    if header.GetDimension() != 3:
        return False
    if ct_header is not None and not grid_differences(header, ct_header, 1e-6, 1e-6, 1e-6):
        return True
    lps = np.allclose(header.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    return bool(lps and not grid_differences(header, ct, 1e-6, 1e-6, 1e-6))


def _check_scan(scan: Mapping, file: str, row: int) -> list[Problem]:
    """Image checks of one manifest row; every failure becomes a Problem."""
    problems: list[Problem] = []
    image = scan.get("image")
    if not isinstance(image, str) or not image.strip():
        return problems  # an empty cell is reported by the manifest check
    kind = ingest.image_kind(image)
    if kind is None:
        return problems  # a missing file is reported by the manifest check
    ct = ct_header = None
    try:
        if kind == "nifti":
            ct_header = _nifti_header(image, "NIfTI file")
        ct, _ = ingest.read_ct(image)
    except (ValueError, RuntimeError, OSError) as exc:
        problems.append(_problem(file, row, "image", image, exc, "a readable CT"))
    if ct is not None:
        try:
            ingest.check_ct(ct, image)
        except (ValueError, RuntimeError, OSError) as exc:
            problems.append(_problem(file, row, "image", image, exc,
                                     "a CT in HU that passes the image checks (data_manifest/scan_manifest.yaml)"))
    for column in ("label_map", "pericardium"):
        src = scan.get(column)
        if not isinstance(src, str) or not src.strip() or ingest.image_kind(src) is None:
            continue  # absent (optional) or missing (reported by the manifest check)
        what = column.replace("_", " ")
        kind = "labels" if column == "label_map" else "mask"
        arr = None
        try:
            if Path(src).is_file():
                header = _nifti_header(src, what)
                if ct is not None and _labels_match_by_header(header, ct_header, ct):
                    # on the CT's grid by its header: no reorientation, but the values are read and checked
                    ingest.check_nifti_complete(src, header, what)
                    arr = sitk.GetArrayFromImage(sitk.ReadImage(src))
                    problem = validate.label_value_problem(arr, kind)
                    if problem:
                        raise ingest.IngestError(f"{src}: {what}: {problem}")
            if arr is None and ct is not None:
                arr = sitk.GetArrayFromImage(ingest.read_label_map(src, ct, what=what, kind=kind))
        except (ValueError, RuntimeError, OSError) as exc:
            problems.append(_problem(file, row, column, src, exc,
                                     f"a {what} of this CT (its voxel grid, valid values)"))
            continue
        if arr is not None:
            problems += _label_content_problems(arr, column, scan, file, row, src)
    return problems


def _measured(scan: Mapping, column: str) -> bool:
    """Whether the book measures ``column`` (CAC or EAT) on this scan: the manifest gives no value."""
    value = pd.to_numeric(pd.Series([scan.get(column)]), errors="coerce").iloc[0]
    return bool(np.isnan(value))


def _label_content_problems(arr: np.ndarray, column: str, scan: Mapping, file: str, row: int,
                            src: str) -> list[Problem]:
    """An empty label map (error), no heart where CAC or EAT are measured (warning), an empty
    pericardium mask where EAT is measured (error)."""
    empty = not arr.any()
    if column == "pericardium":
        if empty and _measured(scan, "eat_volume"):
            return [Problem(file, row, column, f"{src!r}, an empty mask (every voxel 0)",
                            "the pericardial sac to measure EAT in (or an empty cell: the book then derives the "
                            "sac from the heart)")]
        return []
    if empty:
        return [Problem(file, row, column, f"{src!r}, an empty label map (every voxel 0)",
                        "the structures segmented on this CT (TotalSegmentator v2 class ids)")]
    needs = {m: c for m, c in (("CAC", "cac_score"), ("EAT", "eat_volume")) if _measured(scan, c)}
    problem = validate.heart_problem(arr) if needs else None
    if problem:
        return [Problem(file, row, column, f"{src!r}, with {problem}",
                        f"a heart, to measure {' and '.join(needs)} on this scan (the manifest gives no "
                        f"{' or '.join(needs.values())}); without one they cannot be measured", "warning")]
    return []


def check_scan_images(scans: pd.DataFrame, file: str | None = None) -> list[Problem]:
    """Read and check every scan's images; return every problem, one scan after the other.

    For each row with an existing image: the CT is read as ingestion reads it
    (:func:`ctac_helpers.imaging.ingest.read_ct`: an unreadable file, a DICOM folder with several series,
    a series with mixed geometry or unevenly spaced slices) and checked
    (:func:`ctac_helpers.imaging.ingest.check_ct`: slices, spacing, air at -1000 HU rather than a +1024
    offset, NaN or infinite voxels, a constant volume); each label map and pericardium mask must lie
    on the CT's grid (:func:`ctac_helpers.imaging.ingest.read_label_map`) and hold valid values
    (:func:`ctac_helpers.cohort.validate.label_value_problem`: integers, not negative, class ids of the
    class map). An empty label map and an empty pericardium mask where EAT is measured are errors;
    a label map without a heart where CAC or EAT are measured is a warning (the scan cannot be
    measured). NIfTI headers are read first, and a label file whose header already shows the CT's
    grid is not reoriented. Only one scan is held in memory.

    Parameters
    ----------
    scans : DataFrame
        A manifest from :func:`ctac_helpers.imaging.ingest.read_scan_manifest` (paths resolved).
    file : str, optional
        Name used in the problems (default ``scans.attrs['file']``).

    Returns
    -------
    list of Problem
    """
    file = file or scans.attrs.get("file", "scan manifest")
    rows = spreadsheet_rows(scans)
    problems: list[Problem] = []
    records = scans.to_dict("records")
    for i, scan in enumerate(records):
        problems.extend(_check_scan(scan, file, int(rows[i])))
        if (i + 1) % _PROGRESS_EVERY == 0:
            logger.info("checked the images of %d of %d scans (%d problem(s) so far)", i + 1, len(records),
                        len(problems))
    return problems


def _read(path: str, column: str, reader) -> tuple[pd.DataFrame | None, list[Problem]]:
    try:
        return reader(path), []
    except FileNotFoundError:
        return None, [Problem(path, None, column, "no such file",
                              "an existing CSV file (`ctac-book init-site` writes a template)")]
    except IsADirectoryError:
        return None, [Problem(path, None, column, "a folder",
                              "a CSV file: the table itself, not the folder that holds it")]
    except ValidationError as exc:
        return None, list(exc.problems)
    except (ValueError, OSError) as exc:
        return None, [Problem(path, None, column, "an unreadable table", str(exc))]


def _no_rows(df: pd.DataFrame, file: str, expected: str) -> list[Problem]:
    return [] if len(df) else [Problem(file, None, "(rows)", "no data rows", expected)]


def validate_site(config: Mapping, run_dir: str | os.PathLike | None = None,
                  check_images: bool = True, config_file: str | os.PathLike | None = None,
                  notebooks_dir: str | os.PathLike | None = None) -> list[Problem]:
    """Check a site's data as a run would use it; return every problem found (errors and warnings).

    Checks every stage parameter the configuration sets against its notebook's declaration
    (:func:`ctac_helpers.cohort.validate.config_parameter_problems`), the secret key
    (:func:`check_secret`), the cohort table
    (:func:`ctac_helpers.cohort.validate.validate_cohort`, the CT columns of :data:`MEASURED_COLUMNS`
    optional), the scan manifest (:func:`ctac_helpers.imaging.ingest.validate_scan_manifest`, against the
    cohort's patient ids) and, with ``check_images``, every scan's images
    (:func:`check_scan_images`).

    Parameters
    ----------
    config : mapping
        A configuration from :func:`ctac_helpers.pipeline.config.load_config` with a ``site`` section.
    run_dir : path-like, optional
        The run directory (default ``./runs/<name>``, as the CLI); the key must lie outside it.
    check_images : bool
        Read every image. False checks the parameters, the tables and the key only (fast).
    config_file : path-like, optional
        The configuration file ``config`` was loaded from: a parameter's problem names it (or the
        profile's file) and the line. Without it the problems name ``configuration``.
    notebooks_dir : path-like, optional
        The stage notebooks (default: the book's ``notebooks/``).

    Returns
    -------
    list of Problem
        Errors and warnings, in the order: parameters, key, cohort table, scan manifest, images.

    Raises
    ------
    ValueError
        ``config`` has no ``site`` section.
    """
    site = config.get("site")
    if not site:
        raise ValueError("the configuration has no 'site' section; expected site: {cohort, scans, secret} "
                         "(`ctac-book init-site DIR` writes one)")
    problems = parameter_problems(config, config_file, notebooks_dir)
    problems += check_secret(site["secret"], run_directory(config, run_dir))
    cohort_file, scans_file = str(site["cohort"]), str(site["scans"])
    cohort, found = _read(cohort_file, "site.cohort", read_table)
    problems += found
    if cohort is not None:
        problems += _no_rows(cohort, cohort_file, "one row per patient below the header")
        problems += validate_cohort(cohort, cohort_file, optional=MEASURED_COLUMNS, log_warnings=False,
                                    extra_categories=_declared_categories(site.get("labels"), site.get("protocols")))
    scans, found = _read(scans_file, "site.scans", ingest.read_scan_manifest)
    problems += found
    if scans is not None:
        problems += _no_rows(scans, scans_file, "one row per CT scan below the header")
        ids = cohort["patient_id"].dropna() if cohort is not None and "patient_id" in cohort.columns else None
        problems += ingest.validate_scan_manifest(scans, scans_file, check_files=True, cohort_ids=ids,
                                                  codes=_declared_codes(site.get("labels"), site.get("protocols")))
        if check_images and "image" in scans.columns:
            problems += check_scan_images(scans, scans_file)
    return problems


def parameter_problems(config: Mapping, config_file: str | os.PathLike | None = None,
                       notebooks_dir: str | os.PathLike | None = None, stages=None) -> list[Problem]:
    """Every stage parameter of ``config`` checked against its notebook's ``parameters`` cell.

    ``config_file`` (the file ``config`` was loaded from) lets each problem name the file that sets
    the parameter and its line; ``notebooks_dir`` defaults to the book's ``notebooks/`` and
    ``stages`` to the book's stage registry.
    """
    from ctac_helpers.pipeline import runner  # deferred: the runner is needed for its notebooks folder only

    layers = config_mod.config_layers(config.get("profile"), config_file)
    return validate.config_parameter_problems(config, stages or stages_mod.STAGES,
                                              notebooks_dir or runner.NOTEBOOKS_DIR, layers)


def require_valid_site(config: Mapping, run_dir: str | os.PathLike | None = None,
                       check_images: bool = True, config_file: str | os.PathLike | None = None) -> list[Problem]:
    """Validate a site's data (:func:`validate_site`); log the warnings, raise on any error.

    Returns
    -------
    list of Problem
        The warnings.

    Raises
    ------
    ValidationError
        Listing every error.
    """
    problems = validate_site(config, run_dir=run_dir, check_images=check_images, config_file=config_file)
    for p in problems:
        if p.severity == "warning":
            logger.warning("%s", p)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems, what="the site's data")
    return [p for p in problems if p.severity == "warning"]


# -- loading for a run ----------------------------------------------------------------------------
def _declared_categories(labels, protocols) -> dict:
    """A site's own codes for the cohort table's coded columns (``site.labels``, ``site.protocols``)."""
    declared = {"labels": list(labels or []), "protocols": list(protocols or [])}
    return {column: declared[key] for column, key in manifest.DECLARED_CODES.items()}


def _declared_codes(labels, protocols) -> dict:
    """The codes allowed in the scan manifest's coded columns, with the site's own."""
    return manifest.scan_manifest_codes({"labels": list(labels or []), "protocols": list(protocols or [])})


def _raise_errors(problems: list[Problem], what: str) -> None:
    for p in problems:
        if p.severity == "warning":
            logger.warning("%s", p)
    if any(p.severity == "error" for p in problems):
        raise ValidationError(problems, what=what)


def load_cohort(cohort_file: str | os.PathLike, secret_file: str | os.PathLike,
                run_dir: str | os.PathLike | None = None, site_labels=(), site_protocols=(),
                name: str | None = None) -> pd.DataFrame:
    """A site's cohort table, validated and pseudonymised, as the data stage writes it.

    Parameters
    ----------
    cohort_file : path-like
        The site's cohort table (``cohort.csv``; ``#`` lines are skipped).
    secret_file : path-like
        The site key (:func:`ctac_helpers.cohort.privacy.read_secret`); it may not lie inside ``run_dir``.
    run_dir : path-like, optional
        The run directory the table is written to.
    site_labels : iterable of str
        The site's own labels for the ``site`` column (configuration key ``site.labels``).
    site_protocols : iterable of str
        The site's own codes for the ``ct_protocol`` column (configuration key ``site.protocols``).
    name : str, optional
        The table's name in messages (default: its path). A notebook passes its label, since its
        output is published and a path names the machine's folders.

    Returns
    -------
    DataFrame
        One row per patient, ``patient_id`` replaced by its keyed-hash pseudonym (``P-`` and 16 hex
        digits); the CT columns the book measures on the scans (:data:`MEASURED_COLUMNS`) are
        added as missing values where the table lacks them.

    Raises
    ------
    ValidationError
        Listing every problem of the table (file, row, column, value, what was expected).
    ValueError
        The key is missing, too short or inside the run directory.
    """
    secret = read_secret(secret_file, run_dir)
    cohort = read_table(cohort_file)
    file = name or str(cohort_file)
    problems = _no_rows(cohort, file, "one row per patient below the header")
    problems += validate_cohort(cohort, file, optional=MEASURED_COLUMNS, log_warnings=False,
                                extra_categories=_declared_categories(site_labels, site_protocols))
    _raise_errors(problems, f"the cohort table {file}")
    cohort = cohort.copy()
    cohort["patient_id"] = pseudonymise(cohort["patient_id"], secret, "patient")
    schema = manifest.cohort_schema()
    for col in MEASURED_COLUMNS:
        if col not in cohort.columns:
            cohort[col] = np.nan
    # the synthetic cohort's layout; columns outside the schema (warned about above) are not carried on
    ordered = [c for c in schema.index if c in cohort.columns]
    cohort = cohort[ordered]
    for name, col in schema.loc[ordered].iterrows():
        if col["type"] in ("float", "int", "binary"):
            cohort[name] = pd.to_numeric(cohort[name], errors="coerce")
    logger.info("site cohort %s: %d patients, ids pseudonymised", file, len(cohort))
    return cohort.reset_index(drop=True)


def load_scans(scan_manifest: str | os.PathLike, secret_file: str | os.PathLike,
               run_dir: str | os.PathLike | None = None, cohort_ids: pd.Series | None = None,
               site_labels=(), site_protocols=(), name: str | None = None) -> pd.DataFrame:
    """A site's scan manifest, validated, with scan and patient ids pseudonymised.

    Parameters
    ----------
    scan_manifest : path-like
        The site's scan manifest (``scans.csv``); paths are resolved against its folder.
    secret_file : path-like
        The site key, the same as the cohort's, so that the pseudonyms of the two tables match.
    run_dir : path-like, optional
        The run directory.
    cohort_ids : Series, optional
        The pseudonymised patient ids of the cohort (``artifacts/cohort.parquet``): scans of other
        patients are errors, patients without a scan warnings.
    site_labels, site_protocols : iterable of str
        The site's own codes for the ``site`` and ``protocol`` columns (``site.labels``,
        ``site.protocols``), besides the schema's: any other value is an error.
    name : str, optional
        The manifest's name in messages (default: its path).

    Returns
    -------
    DataFrame
        The manifest with ``scan_id`` (``S-`` pseudonyms) and ``patient_id`` (``P-`` pseudonyms);
        columns outside ``data_manifest/scan_manifest.yaml`` are dropped. The image paths stay as
        given: they are used to read the images and never written to an artifact.

    Raises
    ------
    ValidationError
        Listing every problem of the manifest.
    """
    secret = read_secret(secret_file, run_dir)
    scans = ingest.read_scan_manifest(scan_manifest)
    file = name or str(scan_manifest)
    codes = _declared_codes(site_labels, site_protocols)
    problems = _no_rows(scans, file, "one row per CT scan below the header")
    problems += ingest.validate_scan_manifest(scans, file, check_files=True, codes=codes)
    _raise_errors(problems, f"the scan manifest {file}")
    schema = manifest.scan_manifest_schema()
    # a column the schema does not know may hold anything (names, notes): it goes no further
    scans = scans[[c for c in scans.columns if c in schema.index]].copy()
    for col in schema.index[schema["type"] == "float"]:
        if col in scans.columns:  # read as text, checked above
            scans[col] = pd.to_numeric(scans[col], errors="coerce")
    scans["scan_id"] = pseudonymise(scans["scan_id"], secret, "scan")
    scans["patient_id"] = pseudonymise(scans["patient_id"], secret, "patient")
    if cohort_ids is not None:
        # checked on the pseudonyms, so that no raw id reaches a message in the executed notebook
        problems = [p for p in ingest.validate_scan_manifest(scans, file, check_files=False, cohort_ids=cohort_ids)
                    if p.column == "patient_id"]
        _raise_errors(problems, f"the scan manifest {file}")
    logger.info("site scans %s: %d scans, ids pseudonymised", file, len(scans))
    return scans.reset_index(drop=True)
