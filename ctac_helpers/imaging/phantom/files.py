"""A phantom's files: NIfTI images and its truth as JSON (:func:`write_phantom`), read back by :func:`read_truth`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import SimpleITK as sitk

from ctac_helpers.core.rundir import atomic_path, atomic_write_json
from ctac_helpers.imaging.phantom.build import Phantom
from ctac_helpers.imaging.phantom.parameters import json_values

logger = logging.getLogger(__name__)


def write_phantom(phantom: Phantom, directory, stem: str) -> dict[str, Path]:
    """Write a phantom as NIfTI images and its truth as JSON, each file atomically.

    Files: ``<stem>_ct.nii.gz`` (int16 HU), ``<stem>_labels.nii.gz`` (uint8 TotalSegmentator ids),
    ``<stem>_pericardium.nii.gz`` (uint8 0/1) and ``<stem>_truth.json`` (truth, parameters, seed).

    Parameters
    ----------
    phantom : Phantom
        The phantom (:func:`ctac_helpers.imaging.phantom.build.ctac_phantom`).
    directory : path-like
        Where the files go.
    stem : str
        File name stem.

    Returns
    -------
    dict
        ``{'ct', 'labels', 'pericardium', 'truth'}`` -> path.
    """
    directory = Path(directory)
    paths = {
        "ct": directory / f"{stem}_ct.nii.gz",
        "labels": directory / f"{stem}_labels.nii.gz",
        "pericardium": directory / f"{stem}_pericardium.nii.gz",
        "truth": directory / f"{stem}_truth.json",
    }
    for key, image in (("ct", phantom.ct_image()), ("labels", phantom.label_image()),
                       ("pericardium", phantom.pericardium_image())):
        # atomic_path keeps the target's extensions (".tmp.nii.gz"): SimpleITK picks NIfTI from them.
        with atomic_path(paths[key]) as tmp:
            sitk.WriteImage(image, str(tmp), True)
    atomic_write_json(paths["truth"], json_values({"truth": phantom.truth, "params": phantom.params,
                                                  "seed": phantom.seed}))
    logger.info("wrote phantom %s to %s", stem, directory)
    return paths


def read_truth(path, stem: str | None = None) -> dict:
    """The truth of a written phantom (the ``truth`` part of its ``<stem>_truth.json``).

    Parameters
    ----------
    path : path-like
        The truth file, or the folder :func:`write_phantom` wrote into.
    stem : str, optional
        The phantom's stem when the folder holds several phantoms.

    Returns
    -------
    dict
        The truth as written (:mod:`ctac_helpers.imaging.phantom.truth`); ``params`` and ``seed`` are in the file too.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / f"{stem}_truth.json"] if stem else sorted(path.glob("*_truth.json"))
        found = [f for f in found if f.is_file()]
        if len(found) != 1:
            raise FileNotFoundError(f"expected one phantom truth file in {path} (stem {stem!r}), found "
                                    f"{len(found)}: write it with write_phantom first")
        path = found[0]
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["truth"]
