"""The truth of a phantom (``Phantom.truth``), taken from its own voxels before noise.

"Noise-free image" below means the image with the site offset but without noise.

* ``agatston``: the Agatston score of the noise-free coronary lesions by the standard definition
  (2D lesions >= 130 HU, peak-density weights, area >= 1 mm^2 and >= 3 pixels) scaled to 3 mm
  slices as :func:`ctac_helpers.imaging.calcium.agatston` does; ``agatston_unscaled`` without the scaling;
  ``calcium_volume_mm3`` (lesion voxels x voxel volume); ``cac_category``; ``lesions`` (one row
  per 2D lesion: slice, pixels, area, peak HU, weight, score, artery).
* ``eat_volume_ml`` / ``eat_density_hu``: the voxels of the epicardial fat compartment (inside
  the pericardial sac, outside the heart, coronary arteries and calcium): their volume, and their
  mean noise-free HU. Every such voxel lies in the fat window (-190..-30 HU) noise-free.
  ``eat_tissue_density_hu`` is the same without the site offset.
* ``paracardial_fat_ml``: fat just outside the sac (anterior and inferior fat pads).
* ``structures``: per TotalSegmentator structure its visible volume (mL), its mean noise-free HU
  (``mean_hu``) and its status: ``present``
  (labelled voxels, none on the first/last axial slice or the in-plane edge), ``truncated``
  (labelled voxels touching one of these) or ``absent``.
"""

from __future__ import annotations

import numpy as np

from ctac_helpers.core import manifest
from ctac_helpers.definitions import cac_category
from ctac_helpers.imaging import presence
from ctac_helpers.imaging.calcium import MIN_PIXELS, REFERENCE_THICKNESS_MM
from ctac_helpers.imaging.phantom.canvas import Canvas, Grid
from ctac_helpers.imaging.phantom.lesions import MAX_PHANTOM_CAC


def compute_truth(b: Canvas, p: dict, grid: Grid, lesions, eat_vals, counts, hu_sums, n_para: int, voxel_ml: float,
                  offset: float) -> dict:
    """The truth of a drawn phantom (see the module notes).

    Parameters
    ----------
    b : Canvas
        The drawn phantom (labels and pericardium are read).
    p : dict
        Its filled-in parameters.
    grid : Grid
        Its grid.
    lesions : pandas.DataFrame
        The 2D lesions placed (:func:`ctac_helpers.imaging.phantom.lesions.place_lesions`).
    eat_vals : numpy.ndarray
        Noise-free HU (without the offset) of the epicardial fat voxels.
    counts, hu_sums : numpy.ndarray
        Voxels and noise-free HU sums per label id (:func:`ctac_helpers.imaging.phantom.noise.finish_image`).
    n_para : int
        Voxels of paracardial fat.
    voxel_ml : float
        Volume of one voxel in mL.
    offset : float
        The site's HU offset.

    Returns
    -------
    dict
        Scores, volumes, densities, structure status and the definitions they follow; JSON-ready once
        passed through :func:`ctac_helpers.imaging.phantom.parameters.json_values`.
    """
    cmap = manifest.class_map()
    names = set(manifest.synthetic_structures().index) | {cmap[i] for i in np.flatnonzero(counts[1:]) + 1 if i in cmap}
    ids = {n: manifest.structure_id(n) for n in names}
    # the same definition of present / truncated / absent as the pipeline's
    status = presence.structure_status(b.lab, sorted(ids))
    structures = {n: {"volume_ml": float(counts[i] * voxel_ml), "status": status[n],
                      "mean_hu": float(hu_sums[i] / counts[i]) + offset if counts[i] else float("nan")}
                  for n, i in sorted(ids.items())}
    sx, sy, sz = grid.spacing
    agat = float(lesions["score"].sum()) if len(lesions) else 0.0
    n_vox = int(lesions["n_pixels"].sum()) if len(lesions) else 0
    n_eat = int(eat_vals.size)
    eat_density = float(eat_vals.mean()) + offset if n_eat else float("nan")
    return {
        "agatston": agat,
        "agatston_unscaled": agat * REFERENCE_THICKNESS_MM / sz,
        "calcium_volume_mm3": n_vox * sx * sy * sz,
        "cac_category": cac_category(agat),
        "cac_target": float(min(max(p["cac_score"], 0.0), MAX_PHANTOM_CAC)),
        "n_lesions": int(len(lesions)),
        "lesions": lesions.to_dict(orient="records"),
        "eat_volume_ml": n_eat * voxel_ml,
        "eat_density_hu": eat_density,
        "eat_tissue_density_hu": eat_density - offset,
        "eat_n_voxels": n_eat,
        "eat_target_ml": float(p["eat_volume_ml"]),
        "paracardial_fat_ml": float(n_para * voxel_ml),
        "pericardium_volume_ml": float(np.count_nonzero(b.peri) * voxel_ml),
        "structures": structures,
        "fov_z_mm": [float(grid.z[0]), float(grid.z[-1])],
        "noise_hu": float(p["noise_hu"]),
        "hu_offset": offset,
        "spacing": list(grid.spacing),
        "shape": list(grid.shape),
        "origin": list(grid.origin),
        "definitions": {
            "agatston": "noise-free coronary lesions, 2D >=130 HU, weights 1-4 by peak, area >= 1 mm2 and "
                        f">= {MIN_PIXELS} pixels, scaled by slice thickness / {REFERENCE_THICKNESS_MM:g} mm",
            "eat": "voxels of the epicardial fat compartment (inside the sac, outside heart, coronaries and "
                   "calcium); density = their mean noise-free HU (site offset included)",
            "status": "truncated = labelled voxels on the first/last axial slice or the in-plane edge",
            "mean_hu": "mean noise-free HU of the structure's labelled voxels (site offset included)",
        },
    }
