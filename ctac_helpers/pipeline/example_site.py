"""An example site: the files a hospital would bring, made from the synthetic generator.

``ctac-book example-site DIR`` writes what ``ctac-book init-site DIR`` asks a site to fill in, already
filled: a cohort table, DICOM series of every patient's CTAC scan, precomputed label maps, a scan
manifest and a run configuration. It lets a new user walk the whole site path (validate, run, build)
before touching their own data, and it is what the privacy test builds the book from.

Everything in it is made up, identifiers included, and they look like a hospital's on purpose:

* the cohort table and the manifest use medical record numbers (``MRN...``) as patient ids and
  accession numbers (``ACC...``) as scan ids;
* every DICOM slice carries a patient name, patient id, birth date, accession number, institution,
  referring physician and study date.

None of them may appear in a run directory or a built book: ids are pseudonymised by the data and
segmentation stages, and DICOM headers are dropped at ingestion. :func:`write_example_site` returns
the identifiers so that a test can search for them.

The scans are digital CTAC phantoms (:mod:`ctac_helpers.imaging.phantom`) of the cohort's patients, so CT
findings follow the patients' risk as in the synthetic cohort. Sources are mixed as at a real site:
every scan has a precomputed label map, every second scan a pericardium mask, and every fourth scan
an Agatston score from the "site's own software" (the phantom's true score), which the book uses as
given and labels as such.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from ctac_helpers.imaging import phantom
from ctac_helpers.cohort import synth
from ctac_helpers.core.rundir import atomic_path
from ctac_helpers.pipeline.site import MEASURED_COLUMNS, init_site

__all__ = ["EXAMPLE_LABEL", "ExampleSite", "write_example_site", "write_dicom_series"]

logger = logging.getLogger(__name__)

#: The example site's own label for the cohort table's ``site`` column (declared in ``site.labels``).
EXAMPLE_LABEL = "Example General"
_FIRST_NAMES = ("ALICE", "BRUNO", "CHIARA", "DMITRI", "ELENA", "FARID", "GRETA", "HIRO", "INES", "JONAS")
_LAST_NAMES = ("QUILLFEATHER", "ZANDERVELT", "MORROWGLEN", "HOLLOWAYNE", "FERNSBY", "TARRAGONE")
_INSTITUTION = "Saint Fictitia Heart Institute"
_PHYSICIAN = "WINTERBOTTOM^OPHELIA"
_CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_UID_ROOT = "1.2.826.0.1.3680043.2.1125.9"  # an example root: the UIDs name nothing real


@dataclass(frozen=True)
class ExampleSite:
    """What :func:`write_example_site` wrote.

    Attributes
    ----------
    paths : dict of str to Path
        ``config``, ``cohort``, ``scans``, ``secret`` (as :func:`ctac_helpers.pipeline.site.init_site`),
        ``images`` and ``labels`` (folders).
    identifiers : DataFrame
        One row per patient: ``patient_id`` (MRN), ``scan_id`` (accession number), ``name``,
        ``birth_date``, ``institution``, ``physician``, ``study_date``: every made-up identifier
        written into the site's files.
    """

    paths: dict
    identifiers: pd.DataFrame


def write_dicom_series(image: sitk.Image, folder: str | os.PathLike, tags: dict[str, str],
                       series_uid: str) -> Path:
    """Write a 3-D CT (int16 HU) as one DICOM file per slice, each with ``tags`` and its geometry.

    Parameters
    ----------
    image : SimpleITK.Image
        The CT, axial slices along z, identity direction.
    folder : path-like
        Created; receives ``slice0001.dcm``, ...
    tags : dict
        DICOM tags (``"gggg|eeee"`` to value) written into every slice, e.g. patient name and id.
    series_uid : str
        Series instance UID; slice ``k`` gets the SOP instance UID ``<series_uid>.<k>``.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"{folder} already exists; expected a new folder for the DICOM series")
    # slices go to a hidden folder renamed at the end: a killed writer never leaves half a series
    tmp_folder = folder.with_name(f".{folder.name}.tmp")
    if tmp_folder.exists():
        shutil.rmtree(tmp_folder)
    tmp_folder.mkdir(parents=True)
    arr = sitk.GetArrayFromImage(image).astype(np.int16)
    sx, sy, sz = image.GetSpacing()
    ox, oy, oz = image.GetOrigin()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study_uid = series_uid.rsplit(".", 1)[0]
    for k in range(arr.shape[0]):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(arr[k]))
        sl.SetSpacing((sx, sy))
        meta = {
            "0008|0060": "CT", "0008|0016": _CT_SOP_CLASS, "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study_uid, "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": f"{ox:.4f}\\{oy:.4f}\\{oz + k * sz:.4f}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{sy:.4f}\\{sx:.4f}", "0018|0050": f"{sz:.4f}", "0018|0060": "120",
            "0028|1052": "0", "0028|1053": "1", **tags,
        }
        for tag, value in meta.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_folder / f"slice{k + 1:04d}.dcm"))
        writer.Execute(sl)
    os.replace(tmp_folder, folder)
    return folder


def _identifiers(n: int, seed: int, ages: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 7301])
    mrn = rng.choice(np.arange(1_000_000, 9_999_999), size=n, replace=False)
    acc = rng.choice(np.arange(10_000_000, 99_999_999), size=n, replace=False)
    study_year = 2012 + (np.arange(n) % 8)
    month, day = rng.integers(1, 13, n), rng.integers(1, 29, n)
    birth_year = study_year - np.round(ages).astype(int)
    return pd.DataFrame({
        "patient_id": [f"MRN{m}" for m in mrn],
        "scan_id": [f"ACC{a}" for a in acc],
        "name": [f"{_LAST_NAMES[i % len(_LAST_NAMES)]}{i:04d}^{_FIRST_NAMES[i % len(_FIRST_NAMES)]}"
                 for i in range(n)],
        "birth_date": [f"{y:04d}{m:02d}{d:02d}" for y, m, d in zip(birth_year, month, day)],
        "institution": _INSTITUTION,
        "physician": _PHYSICIAN,
        "study_date": [f"{y:04d}{m:02d}{d:02d}" for y, m, d in zip(study_year, (month % 12) + 1, day)],
    })


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    """Replace the template's header and rows by ``df``, keeping its ``#`` lines (column notes)."""
    comments = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    text = "\n".join(comments) + "\n" + df.to_csv(index=False, lineterminator="\n", float_format="%.6g")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _config_text(name: str, n_folds: int) -> str:
    return f"""\
# ctac-book run configuration of the example site, written by `ctac-book example-site`.
#   check the data:  ctac-book validate --config site.yaml
#   run the book:    ctac-book run --config site.yaml
#   build it:        ctac-book build --config site.yaml
profile: quick
name: {name}
site:
  cohort: cohort.csv     # clinical table, one row per patient (relative to this file)
  scans: scans.csv       # scan manifest, one row per CT scan
  secret: secret.key     # key of the keyed hash that pseudonymises ids; keep it private, outside runs/
  labels: [{EXAMPLE_LABEL}]   # this site's own label in the cohort table's `site` column
stages:
  segmentation: {{n_workers: 1}}
  cac_eat: {{n_workers: 1}}
  radiomics: {{n_workers: 1}}
  models:
    features: imaging    # the CT features measured on this site's scans by chapters 2-4
    n_folds: {n_folds}
    n_resamples: 200
    early_stopping_rounds: 20
    n_jobs: 1
  survival:
    n_resamples: 200
"""


def write_example_site(directory: str | os.PathLike, n_patients: int = 200, seed: int = 20240101,
                       shape: tuple[int, int, int] = (40, 96, 96),
                       spacing: tuple[float, float, float] = (5.2, 5.2, 8.0), n_folds: int = 3) -> ExampleSite:
    """Write a complete example site into ``directory``.

    Parameters
    ----------
    directory : path-like
        A new folder, or an existing one without the site's files (nothing is overwritten).
    n_patients : int
        Patients, each with one CT scan (at least 200, the generator's smallest cohort).
    seed : int
        Seed of the cohort, the phantoms and the identifiers.
    shape : tuple of int
        CT grid in voxels (z, y, x); the default keeps a scan's processing well under a second.
    spacing : tuple of float
        Voxel size in mm (x, y, z).
    n_folds : int
        Cross-validation folds written into the configuration (few deaths at small sizes).

    Returns
    -------
    ExampleSite
        The paths written and every made-up identifier they hold.

    Raises
    ------
    ValueError
        ``directory`` already holds a site's files, or ``n_patients`` is below 200.
    """
    paths = dict(init_site(directory))
    root = Path(directory)
    data = synth.synthetic_dataset(n_patients=n_patients, seed=seed)
    cohort = data.cohort.reset_index(drop=True)
    ids = _identifiers(len(cohort), seed, cohort["age"].to_numpy(float))
    drivers = synth.ct_drivers(cohort, data.latent.set_index("patient_id").loc[cohort["patient_id"]].reset_index())
    params = phantom.phantom_parameters(cohort, drivers, seed)
    images, labels = root / "images", root / "labels"
    rows = []
    for i in range(len(cohort)):
        ph = phantom.ctac_phantom(params.iloc[i].to_dict(), seed=seed + i, shape=tuple(shape),
                                  spacing=tuple(spacing))
        who = ids.iloc[i]
        tags = {"0010|0010": who["name"], "0010|0020": who["patient_id"], "0010|0030": who["birth_date"],
                "0010|0040": "M" if cohort.at[i, "sex"] == "male" else "F", "0008|0050": who["scan_id"],
                "0008|0080": who["institution"], "0008|0090": who["physician"], "0008|0020": who["study_date"],
                "0008|0070": "Example Medical Systems"}
        # folders are numbered, not named after patients: paths are not where identifiers belong
        series = write_dicom_series(ph.ct_image(), images / f"scan{i + 1:04d}", tags,
                                    series_uid=f"{_UID_ROOT}.{seed % 100000}.{i + 1}.1")
        label_path = labels / f"scan{i + 1:04d}_labels.nii.gz"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(label_path) as tmp:
            sitk.WriteImage(ph.label_image(), str(tmp), True)
        peri_path = None
        if i % 2 == 0:
            peri_path = labels / f"scan{i + 1:04d}_pericardium.nii.gz"
            with atomic_path(peri_path) as tmp:
                sitk.WriteImage(ph.pericardium_image(), str(tmp), True)
        rows.append({"scan_id": who["scan_id"], "patient_id": who["patient_id"],
                     "image": series.relative_to(root).as_posix(), "site": EXAMPLE_LABEL,
                     "protocol": cohort.at[i, "ct_protocol"], "label_map": label_path.relative_to(root).as_posix(),
                     "pericardium": peri_path.relative_to(root).as_posix() if peri_path else "",
                     "cac_score": round(float(ph.truth["agatston"]), 1) if i % 4 == 0 else ""})
        if (i + 1) % 50 == 0:
            logger.info("example site: %d of %d scans written", i + 1, len(cohort))
    site_cohort = cohort.drop(columns=[c for c in MEASURED_COLUMNS if c in cohort.columns]).assign(
        patient_id=ids["patient_id"], site=EXAMPLE_LABEL)
    _write_csv(paths["cohort"], site_cohort)
    _write_csv(paths["scans"], pd.DataFrame(rows))
    name = yaml.safe_load(paths["config"].read_text(encoding="utf-8"))["name"]
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(_config_text(name, n_folds), encoding="utf-8")
    paths.update(images=images, labels=labels)
    logger.info("example site written to %s: %d patients, %d deaths, %d scans", root, len(cohort),
                int(cohort["death"].sum()), len(rows))
    return ExampleSite(paths=paths, identifiers=ids)
