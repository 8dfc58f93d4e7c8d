"""Building a phantom: :func:`ctac_phantom` draws one from plain parameters, a seed and a grid.

The drawing order is fixed (body, lungs, abdomen, mediastinum, heart, vessels, spine, ribs, lesions,
then truth and noise), and so is the random stream each step draws from: the same parameters, seed and
grid give identical arrays. :func:`phantom_from_row` builds the phantom of one row of a parameter table
(its grid and seed in the row), :func:`iter_phantoms` those of a whole table, one volume at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ctac_helpers.imaging.phantom.anatomy import (Anatomy, paint_abdomen, paint_body, paint_lungs, paint_mediastinum,
                                                  paint_vessels)
from ctac_helpers.imaging.phantom.canvas import T_EAT, T_PARA, Canvas, Grid, rng_stream
from ctac_helpers.imaging.phantom.heart import CoronaryTree, HeartShells, paint_heart
from ctac_helpers.imaging.phantom.lesions import place_lesions
from ctac_helpers.imaging.phantom.noise import finish_image
from ctac_helpers.imaging.phantom.parameters import CTAC_SHAPE, CTAC_SPACING, fill_defaults
from ctac_helpers.imaging.phantom.skeleton import paint_ribs, paint_spine
from ctac_helpers.imaging.phantom.truth import compute_truth

logger = logging.getLogger(__name__)


@dataclass
class Phantom:
    """One digital CTAC phantom and its truth.

    Attributes
    ----------
    ct : numpy.ndarray of int16
        HU volume ``(z, y, x)`` with noise and site offset.
    labels : numpy.ndarray of uint8
        TotalSegmentator v2 ``total`` class ids (0: unlabelled).
    pericardium : numpy.ndarray of bool
        The pericardial sac and its contents (heart, epicardial fat, proximal great vessels).
    coronary_region : numpy.ndarray of bool
        The coronary arteries grown by 4 mm, plus every calcified lesion.
    eat_mask : numpy.ndarray of bool
        The true epicardial fat compartment.
    spacing, origin : tuple of 3 float
        SimpleITK ``(x, y, z)`` voxel size and position of voxel ``(0, 0, 0)`` in mm.
    truth : dict
        See :mod:`ctac_helpers.imaging.phantom.truth`.
    lesions : pandas.DataFrame
        The true 2D coronary lesions (also in ``truth['lesions']``).
    params : dict
        The parameters the phantom was built from (defaults filled in).
    seed : int
    clean : numpy.ndarray of int16 or None
        The noise-free image (with the site offset) when built with ``keep_clean=True``.
    """

    ct: np.ndarray
    labels: np.ndarray
    pericardium: np.ndarray
    coronary_region: np.ndarray
    eat_mask: np.ndarray
    spacing: tuple
    origin: tuple
    truth: dict
    lesions: pd.DataFrame
    params: dict
    seed: int
    clean: np.ndarray | None = None
    direction: tuple = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def _image(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetDirection(self.direction)
        return img

    def ct_image(self) -> sitk.Image:
        """The CT as a SimpleITK image (int16 HU, spacing/origin/direction set)."""
        return self._image(self.ct)

    def label_image(self) -> sitk.Image:
        """The TotalSegmentator-id label map as a SimpleITK image (uint8)."""
        return self._image(self.labels)

    def pericardium_image(self) -> sitk.Image:
        """The pericardium mask as a SimpleITK image (uint8 0/1)."""
        return self._image(self.pericardium.astype(np.uint8))

    def coronary_region_image(self) -> sitk.Image:
        """The coronary-region mask as a SimpleITK image (uint8 0/1)."""
        return self._image(self.coronary_region.astype(np.uint8))


def ctac_phantom(params: Mapping | None = None, seed: int = 0, shape=CTAC_SHAPE, spacing=CTAC_SPACING,
                 keep_clean: bool = False) -> Phantom:
    """Build one digital CTAC phantom.

    Parameters
    ----------
    params : mapping, optional
        Phantom parameters (a row of
        :func:`~ctac_helpers.imaging.phantom.from_cohort.phantom_parameters`, or any subset of
        :data:`~ctac_helpers.imaging.phantom.parameters.DEFAULT_PARAMETERS`; missing keys take the
        reference patient's values). Grid keys in ``params`` are ignored: ``shape`` and ``spacing``
        set the grid.
    seed : int
        Seed of every random choice (pose, textures, lesion placement, noise): the same parameters,
        seed and grid give identical arrays.
    shape : (int, int, int)
        ``(nz, ny, nx)``; the default is a CTAC volume of 80 x 512 x 512.
    spacing : (float, float, float)
        ``(x, y, z)`` voxel size in mm; the z spacing is the slice thickness.
    keep_clean : bool
        Also keep the noise-free image (``Phantom.clean``).

    Returns
    -------
    Phantom
    """
    p = fill_defaults({} if params is None else params)
    nz, ny, nx = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    origin = (-(nx - 1) / 2.0 * sx, -(ny - 1) / 2.0 * sy, p["fov_z_shift_mm"] - (nz - 1) / 2.0 * sz)
    grid = Grid((nz, ny, nx), (sx, sy, sz), origin)
    b = Canvas(grid, p)
    an = Anatomy(p, rng_stream(seed, 1))
    tree = CoronaryTree(an, rng_stream(seed, 2))
    shells = HeartShells(an, tree, rng_stream(seed, 3))
    shells.fit(p["eat_volume_ml"], p["paracardial_fat_ml"])

    paint_body(b, an)
    paint_lungs(b, an, rng_stream(seed, 4))
    paint_abdomen(b, an)
    paint_mediastinum(b, an)
    heart_box = paint_heart(b, an, tree, shells, rng_stream(seed, 5))
    paint_vessels(b, an, rng_stream(seed, 6))
    paint_spine(b, an)
    paint_ribs(b, an)
    lesions = place_lesions(b, an, tree, rng_stream(seed, 7))

    offset = float(p["hu_offset"])
    voxel_ml = sx * sy * sz / 1000.0
    # Truth that needs the noise-free image, taken before the noise goes in. Epicardial and
    # paracardial fat are painted only inside the heart's box: look for them there alone.
    eat_mask = np.zeros(grid.shape, bool)
    eat_mask[heart_box] = b.tis[heart_box] == T_EAT
    eat_vals = b.hu[heart_box][eat_mask[heart_box]].astype(np.float64)
    n_para = int(np.count_nonzero(b.tis[heart_box] == T_PARA))
    sigma = float(p["noise_hu"])
    ct, clean, counts, hu_sums = finish_image(b.hu, b.lab, offset, sigma, rng_stream(seed, 99), keep_clean)
    b.hu = None

    truth = compute_truth(b, p, grid, lesions, eat_vals, counts, hu_sums, n_para, voxel_ml, offset)
    logger.info("phantom seed %d: %s, Agatston %.1f, EAT %.1f mL / %.1f HU, noise %.0f HU", seed, shape,
                truth["agatston"], truth["eat_volume_ml"], truth["eat_density_hu"], sigma)
    return Phantom(ct=ct, labels=b.lab, pericardium=b.peri, coronary_region=b.creg, eat_mask=eat_mask,
                   spacing=(sx, sy, sz), origin=origin, truth=truth, lesions=lesions, params=p, seed=int(seed),
                   clean=clean)


def phantom_from_row(row: Mapping, keep_clean: bool = False) -> Phantom:
    """The phantom of one row of a parameter table, on its own grid and with its own seed.

    Parameters
    ----------
    row : mapping
        A plain record or a DataFrame row (a row of
        :func:`~ctac_helpers.imaging.phantom.from_cohort.phantom_parameters`, say): the grid
        (``nz, ny, nx, spacing_x, spacing_y, spacing_z``), the seed (``phantom_seed``) and any phantom
        parameters (:func:`ctac_phantom`'s ``params``).
    keep_clean : bool
        Also keep the noise-free image (``Phantom.clean``).

    Returns
    -------
    Phantom
    """
    shape = (int(row["nz"]), int(row["ny"]), int(row["nx"]))
    spacing = (float(row["spacing_x"]), float(row["spacing_y"]), float(row["spacing_z"]))
    return ctac_phantom(row, seed=int(row["phantom_seed"]), shape=shape, spacing=spacing, keep_clean=keep_clean)


def iter_phantoms(params: pd.DataFrame, keep_clean: bool = False) -> Iterator[Phantom]:
    """Build the phantoms of a parameter table one after another (one volume in memory at a time).

    Parameters
    ----------
    params : pandas.DataFrame
        One row per phantom, as :func:`phantom_from_row` takes it.
    keep_clean : bool
        Also keep each noise-free image.

    Yields
    ------
    Phantom
    """
    for _, row in params.iterrows():
        yield phantom_from_row(row, keep_clean=keep_clean)
