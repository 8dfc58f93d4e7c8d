"""Image grids: comparing two images' voxel grids, describing them, and moving a mask onto a CT's.

Ingestion, the segmentation backends, the radiomics and the CAC/EAT measurements all need to know
whether a label map lies on its CT's grid; they differ only in how much float rounding they forgive,
so each passes its own tolerances to :func:`grid_differences`.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)


def fmt(values, digits: int = 6) -> str:
    """``(a, b, c)`` with ``digits`` significant digits, for messages."""
    return "(" + ", ".join(f"{v:.{digits}g}" for v in values) + ")"


def grid_differences(a: sitk.Image, b: sitk.Image, spacing_tol, origin_tol, direction_tol) -> dict[str, str]:
    """The grid properties in which ``a`` and ``b`` differ, each as ``'<a> vs <b>'``.

    Tolerances are absolute (mm for spacing and origin; a scalar or one value per axis). An empty
    dict means the same grid.
    """
    out = {}
    if tuple(a.GetSize()) != tuple(b.GetSize()):
        out["size"] = f"{tuple(a.GetSize())} vs {tuple(b.GetSize())}"
    for name, va, vb, tol in (("spacing", a.GetSpacing(), b.GetSpacing(), spacing_tol),
                              ("origin", a.GetOrigin(), b.GetOrigin(), origin_tol),
                              ("direction", a.GetDirection(), b.GetDirection(), direction_tol)):
        if len(va) != len(vb) or np.any(np.abs(np.subtract(va, vb)) > tol):
            out[name] = f"{fmt(va, 4)} vs {fmt(vb, 4)}"
    return out


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> bool:
    """Whether two images have the same size, and spacing, origin, direction within ``tolerance``."""
    return a.GetDimension() == b.GetDimension() and not grid_differences(a, b, tolerance, tolerance, tolerance)


def grid_description(img: sitk.Image) -> str:
    """``size=..., spacing=..., origin=..., direction=...`` of an image, for messages."""
    return (f"size={tuple(img.GetSize())}, spacing={fmt(img.GetSpacing())}, "
            f"origin={fmt(img.GetOrigin())}, direction={fmt(img.GetDirection())}")


def on_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``image`` (a label map or mask) on ``reference``'s grid: nearest-neighbour in physical space.

    Returned unchanged when both already share the grid; voxels outside ``image`` become 0.
    """
    if not grid_differences(image, reference, 1e-4, 1e-3, 1e-5):
        return image
    logger.info("resampling a %s label image onto the CT grid %s (nearest neighbour, physical space)",
                image.GetSize(), reference.GetSize())
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetInterpolator(sitk.sitkNearestNeighbor)
    f.SetDefaultPixelValue(0)
    f.SetOutputPixelType(image.GetPixelID())
    # One work unit: ITK splits the work dynamically, by load, and a voxel centre lying exactly halfway
    # between two source voxels can then round either way; a whole-image pass gives the same mask every run.
    f.SetNumberOfWorkUnits(1)
    return f.Execute(image)
