"""A small valid site for the site tests: ``init_site`` templates filled with 10 patients and their scans.

Scan 0 is a NIfTI CT with a label map and a pericardium mask on its grid, scan 1 a DICOM series
folder, the others NIfTI CTs; every CT is 16 x 16 x 10 voxels, air (-1000 HU) in the front half.
"""

from __future__ import annotations

import copy
import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ctac_helpers import config as config_mod
from ctac_helpers import manifest, site

N_PATIENTS = 10
SHAPE = (10, 16, 16)  # z, y, x
SPACING = (0.8, 0.8, 2.5)  # x, y, z in mm
DICOM_SCAN = 1
STUDY_UID = "1.2.826.0.1.3680043.2.1125.7"
SERIES_UID = STUDY_UID + ".1"


def ct_array(offset: int = 0, shape=SHAPE) -> np.ndarray:
    """A CT in HU: air in the front half, soft tissue (40 +- 20 HU) behind it."""
    rng = np.random.default_rng(0)
    arr = rng.normal(40, 20, shape).astype(np.int16)
    arr[:, : shape[1] // 2, :] = -1000
    return (arr + offset).astype(np.int16)


def write_nifti(path: Path, arr: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def write_dicom_series(folder: Path, arr: np.ndarray, spacing=SPACING, series_uid: str = SERIES_UID,
                       first: int = 0, z=None, orientation: str = "1\\0\\0\\0\\1\\0") -> Path:
    """One DICOM file per slice of ``arr`` (z, y, x), slice ``k`` at ``z[k]`` (default ``k * spacing``)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        n = first + k + 1
        sl = sitk.GetImageFromArray(np.ascontiguousarray(arr[k]))
        sl.SetSpacing(spacing[:2])
        pos = k * spacing[2] if z is None else z[k]
        tags = {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{n}",
                "0020|000d": STUDY_UID, "0020|000e": series_uid, "0020|0013": str(n),
                "0020|0032": f"0\\0\\{pos}", "0020|0037": orientation,
                "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2])}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{n:03d}.dcm"))
        writer.Execute(sl)
    return folder


def cohort_rows(n: int = N_PATIENTS) -> list[dict]:
    """``n`` valid patients built from the schema (values inside each column's plausible range)."""
    schema = manifest.cohort_schema()
    rows = []
    for i in range(n):
        row = {}
        for name, col in schema.iterrows():
            if name in site.MEASURED_COLUMNS:
                continue  # measured on the scans
            kind = col["type"]
            if name == "patient_id":
                row[name] = f"P{i:03d}"
            elif name == "death":
                row[name] = int(i % 3 == 0)
            elif kind == "binary":
                row[name] = i % 2
            elif kind == "category":
                row[name] = col["categories"][i % len(col["categories"])]
            elif kind in ("float", "int"):
                lo, hi = col["plausible"] if isinstance(col["plausible"], list) else col["range"]
                row[name] = round(lo + (hi - lo) * (0.3 + 0.04 * i), 3)
        rows.append(row)
    return rows


def template_lines(path: Path) -> tuple[list[str], list[str]]:
    """The ``#`` lines and the header's column names of a table written by ``init_site``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    return comments, lines[len(comments)].split(",")


def table_text(comments: list[str], rows: list[dict], columns: list[str], delimiter: str = ",",
               newline: str = "\n", quoting: int = csv.QUOTE_MINIMAL) -> str:
    """A table's text: the ``#`` lines, the header and one line per row (``None`` an empty cell)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=quoting)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return "".join(c + newline for c in comments) + out.getvalue()


def write_table(path: Path, rows: list[dict], columns: list[str] | None = None, **fmt) -> None:
    """Rewrite ``path`` keeping its ``#`` lines; ``columns`` default to the template's header.

    ``fmt`` (``delimiter``, ``newline``, ``quoting``) as :func:`table_text`.
    """
    comments, header = template_lines(path)
    columns = header if columns is None else columns
    path.write_bytes(table_text(comments, rows, columns, **fmt).encode("utf-8"))


@dataclass
class Site:
    dir: Path
    paths: dict
    cohort: list
    scans: list
    run_dir: Path

    def header_row(self, role: str) -> int:
        """Spreadsheet row of the header of ``cohort`` or ``scans`` (after the ``#`` lines)."""
        text = self.paths[role].read_text(encoding="utf-8", errors="replace").splitlines()
        return next(i for i, ln in enumerate(text, start=1) if not ln.startswith("#") and ln.strip())

    def row(self, role: str, k: int) -> int:
        """Spreadsheet row of data row ``k`` (0-based) of ``cohort`` or ``scans``."""
        return self.header_row(role) + 1 + k

    def write(self) -> None:
        write_table(self.paths["cohort"], self.cohort)
        write_table(self.paths["scans"], self.scans)

    def config(self) -> dict:
        return config_mod.load_config(None, self.paths["config"])

    def validate(self, **kwargs):
        return site.validate_site(self.config(), run_dir=self.run_dir, config_file=self.paths["config"], **kwargs)


def copy_site(template: Site, tmp_path: Path) -> Site:
    """A copy of ``template`` (files, images and rows) in ``tmp_path``: built once, broken many times."""
    d = tmp_path / template.dir.name
    shutil.copytree(template.dir, d, symlinks=True)  # copy2 keeps the key's mode 0600
    paths = {role: d / p.relative_to(template.dir) for role, p in template.paths.items()}
    return Site(d, paths, copy.deepcopy(template.cohort), copy.deepcopy(template.scans),
                tmp_path / "runs" / template.dir.name)


def make_site(tmp_path: Path, name: str = "testsite") -> Site:
    """A valid site in ``tmp_path/name``; its run directory is ``tmp_path/runs/name``."""
    paths = site.init_site(tmp_path / name)
    d = tmp_path / name
    scans = []
    for i in range(N_PATIENTS):
        sid = f"S{i:03d}"
        if i == DICOM_SCAN:
            write_dicom_series(d / "images" / sid, ct_array())
            image = f"images/{sid}"
        else:
            write_nifti(d / "images" / f"{sid}.nii.gz", ct_array())
            image = f"images/{sid}.nii.gz"
        scans.append({"scan_id": sid, "patient_id": f"P{i:03d}", "image": image, "protocol": "low_dose_120kvp"})
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:6, 9:13, 5:10] = 51  # heart
    write_nifti(d / "images" / "S000_labels.nii.gz", labels)
    write_nifti(d / "images" / "S000_pericardium.nii.gz", (labels > 0).astype(np.uint8))
    scans[0].update(label_map="images/S000_labels.nii.gz", pericardium="images/S000_pericardium.nii.gz")
    s = Site(d, paths, cohort_rows(), scans, tmp_path / "runs" / name)
    s.write()
    return s
