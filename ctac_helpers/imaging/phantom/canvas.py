"""The drawing surface of a phantom: its world grid, the arrays it is painted into, and the shapes painted.

Everything is placed in millimetres, so any grid can be rendered. Arrays follow SimpleITK's
``(z, y, x)`` order; the frame is LPS (x to the patient's left, y posterior, z superior), direction
identity, the heart's centre at z = 0. Besides the HU and label arrays, a :class:`Canvas` keeps a
bookkeeping map of tissue codes (``T_*``: epicardial fat, paracardial fat, sac wall, coronary artery,
calcified lesion, mediastinal fat) from which the truth is taken, the pericardium mask and the coronary
region. Every random choice of a phantom comes from one of the numbered streams of :func:`rng_stream`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ctac_helpers.core import manifest

# Tissue codes of the phantom's bookkeeping map (not part of the output labels).
T_OTHER, T_EAT, T_PARA, T_SAC, T_CORONARY, T_LESION, T_MEDIASTINUM = range(7)


def rng_stream(seed: int, stream: int) -> np.random.Generator:
    """The random stream number ``stream`` of the phantom drawn with ``seed``.

    Each step of the drawing (pose, textures, lesions, noise, ...) draws from a stream of its own, so
    that a change to one step leaves the others' draws as they were.

    Parameters
    ----------
    seed : int
        The phantom's seed.
    stream : int
        The step's stream number.

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), 7919, int(stream)]))


def unit_vector(v) -> np.ndarray:
    """``v`` scaled to length 1.

    Parameters
    ----------
    v : array_like of float
        A non-zero vector.

    Returns
    -------
    numpy.ndarray
    """
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


class Grid:
    """World <-> index bookkeeping of a ``(z, y, x)`` grid with identity direction.

    Parameters
    ----------
    shape : (int, int, int)
        ``(nz, ny, nx)``.
    spacing : (float, float, float)
        ``(x, y, z)`` voxel size in mm.
    origin : (float, float, float)
        World position ``(x, y, z)`` of voxel ``(0, 0, 0)`` in mm.

    Attributes
    ----------
    x, y, z : numpy.ndarray of float32
        World coordinates of the voxel centres along each axis.
    """

    def __init__(self, shape, spacing, origin):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        nz, ny, nx = self.shape
        sx, sy, sz = self.spacing
        self.x = (self.origin[0] + sx * np.arange(nx)).astype(np.float32)
        self.y = (self.origin[1] + sy * np.arange(ny)).astype(np.float32)
        self.z = (self.origin[2] + sz * np.arange(nz)).astype(np.float32)

    def _range(self, lo: float, hi: float, axis: int) -> slice:
        """Indices along world axis (0 x, 1 y, 2 z) whose centres lie in [lo, hi]."""
        n = self.shape[2 - axis]
        o, s = self.origin[axis], self.spacing[axis]
        a = max(0, int(math.ceil((lo - o) / s)))
        b = min(n, int(math.floor((hi - o) / s)) + 1)
        return slice(a, max(a, b))

    def box(self, lo, hi):
        """Array slices and broadcastable coordinates (Z, Y, X) of the world box [lo, hi]."""
        sx_, sy_, sz_ = (self._range(lo[a], hi[a], a) for a in range(3))
        sl = (sz_, sy_, sx_)
        Z = self.z[sz_][:, None, None]
        Y = self.y[sy_][None, :, None]
        X = self.x[sx_][None, None, :]
        return sl, Z, Y, X

    def index(self, p) -> tuple[int, int, int]:
        """Nearest voxel ``(k, j, i)`` of world point ``p`` (may lie outside the grid)."""
        return tuple(int(round((p[a] - self.origin[a]) / self.spacing[a])) for a in (2, 1, 0))


def empty_box(sl) -> bool:
    """Whether a tuple of array slices (as :meth:`Grid.box` gives) selects no voxel.

    Parameters
    ----------
    sl : tuple of slice
        Slices with explicit start and stop.

    Returns
    -------
    bool
    """
    return any(s.stop <= s.start for s in sl)


class Canvas:
    """Paints structures into the HU, label and bookkeeping arrays of one phantom.

    Parameters
    ----------
    grid : Grid
        The phantom's grid.
    p : dict
        The filled-in parameters (:func:`ctac_helpers.imaging.phantom.parameters.fill_defaults`).

    Attributes
    ----------
    hu : numpy.ndarray of float32
        Noise-free HU without the site offset (uninitialised until the body is painted).
    lab : numpy.ndarray of uint8
        TotalSegmentator ``total`` class ids.
    tis : numpy.ndarray of uint8
        Tissue codes (``T_*``) of the truth's bookkeeping.
    peri, creg : numpy.ndarray of bool
        The pericardium and the coronary region.
    ids : dict
        TotalSegmentator structure name -> class id.
    """

    def __init__(self, grid: Grid, p: dict):
        self.g = grid
        self.p = p
        shape = grid.shape
        self.hu = np.empty(shape, np.float32)
        self.lab = np.zeros(shape, np.uint8)
        self.tis = np.zeros(shape, np.uint8)
        self.peri = np.zeros(shape, bool)
        self.creg = np.zeros(shape, bool)
        self.ids = {v: k for k, v in manifest.class_map().items()}

    def paint(self, sl, mask, hu, label: int = 0, tissue: int = T_OTHER, clear_peri: bool = False):
        """Write ``hu`` (scalar or block array), ``label`` and ``tissue`` where ``mask`` holds."""
        if empty_box(sl):
            return
        mask = np.broadcast_to(mask, self.hu[sl].shape)
        if not mask.any():
            return
        h = self.hu[sl]
        if np.ndim(hu) == 0:
            h[mask] = hu
        else:
            h[mask] = np.broadcast_to(hu, h.shape)[mask]
        self.lab[sl][mask] = label
        self.tis[sl][mask] = tissue
        if clear_peri:
            self.peri[sl][mask] = False

    def tube_mask(self, points: np.ndarray, radii: np.ndarray):
        """Union of balls along a centreline: ``(slices, mask)`` on the tube's bounding box."""
        r_max = float(np.max(radii))
        lo = points.min(axis=0) - r_max
        hi = points.max(axis=0) + r_max
        sl, Z, Y, X = self.g.box(lo, hi)
        mask = np.zeros(tuple(s.stop - s.start for s in sl), bool)
        if mask.size == 0:
            return sl, mask
        z, y, x = Z.ravel(), Y.ravel(), X.ravel()
        for pt, r in zip(points, radii):
            k0, k1 = np.searchsorted(z, pt[2] - r), np.searchsorted(z, pt[2] + r, side="right")
            j0, j1 = np.searchsorted(y, pt[1] - r), np.searchsorted(y, pt[1] + r, side="right")
            i0, i1 = np.searchsorted(x, pt[0] - r), np.searchsorted(x, pt[0] + r, side="right")
            if k1 <= k0 or j1 <= j0 or i1 <= i0:
                continue
            d2 = ((z[k0:k1, None, None] - pt[2]) ** 2 + (y[None, j0:j1, None] - pt[1]) ** 2
                  + (x[None, None, i0:i1] - pt[0]) ** 2)
            mask[k0:k1, j0:j1, i0:i1] |= d2 <= r * r
        return sl, mask


def polyline(nodes, step: float = 1.0) -> np.ndarray:
    """Points every ``step`` mm along a smooth curve through ``nodes`` (Catmull-Rom).

    Parameters
    ----------
    nodes : array_like, shape (n, 3)
        World points in mm, at least two.
    step : float
        Spacing of the points in mm (about).

    Returns
    -------
    numpy.ndarray, shape (m, 3)
    """
    nodes = np.asarray(nodes, float)
    ext = np.vstack([2 * nodes[0] - nodes[1], nodes, 2 * nodes[-1] - nodes[-2]])
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        n = max(2, int(np.linalg.norm(p2 - p1) / step) + 1)
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(nodes[-1:])
    return np.vstack(out)


def smooth_field(rng, shape, sigma_vox: float, coarse: int = 4) -> np.ndarray:
    """A smooth random field of unit SD on ``shape``: coarse white noise, blurred, upsampled.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        The field's shape.
    sigma_vox : float
        Gaussian blur on the coarse grid, in coarse voxels.
    coarse : int
        Down-sampling factor of the coarse grid.

    Returns
    -------
    numpy.ndarray of float32
    """
    cshape = tuple(max(3, int(math.ceil(s / coarse)) + 2) for s in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(cshape).astype(np.float32), sigma_vox)
    f /= max(float(f.std()), 1e-6)
    out = ndimage.zoom(f, [s / c for s, c in zip(shape, cshape)], order=1, grid_mode=True, mode="nearest")
    # zoom rounds the output shape: pad (edge) or crop to exactly ``shape``.
    out = np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape)], mode="edge")
    return out[: shape[0], : shape[1], : shape[2]]


def ellipsoid(b: Canvas, centre, semi, cond=None):
    """Slices and mask of an axis-aligned ellipsoid (optionally AND a condition on the block).

    Parameters
    ----------
    b : Canvas
    centre, semi : array_like of 3 float
        Centre and semi-axes ``(x, y, z)`` in mm.
    cond : callable, optional
        ``cond(sl, Z, Y, X) -> bool array`` on the ellipsoid's bounding box.

    Returns
    -------
    sl : tuple of slice
        The bounding box in the arrays.
    mask : numpy.ndarray of bool or None
        The ellipsoid on that box; None when the box lies outside the grid.
    """
    c, s = np.asarray(centre, float), np.asarray(semi, float)
    sl, Z, Y, X = b.g.box(c - s, c + s)
    if empty_box(sl):
        return sl, None
    m = ((X - c[0]) / s[0]) ** 2 + ((Y - c[1]) / s[1]) ** 2 + ((Z - c[2]) / s[2]) ** 2 <= 1
    if cond is not None:
        m = m & cond(sl, Z, Y, X)
    return sl, m


def paint_slab_ellipse(b: Canvas, cx, cy, rx, ry, z0, z1, hu, label=0, tissue=T_OTHER):
    """Paint an elliptic cylinder along z: centre ``(cx, cy)``, semi-axes ``(rx, ry)``, from ``z0`` to ``z1``.

    Parameters
    ----------
    b : Canvas
    cx, cy, rx, ry, z0, z1 : float
        Geometry in mm.
    hu : float
        Noise-free HU (without the site offset).
    label, tissue : int
        Class id and tissue code written.
    """
    sl, Z, Y, X = b.g.box((cx - rx, cy - ry, z0), (cx + rx, cy + ry, z1))
    if empty_box(sl):
        return
    m = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1
    b.paint(sl, m, hu, label, tissue)


def paint_tube(b: Canvas, nodes, radius, hu, label=0, step=1.5, clear_peri=True, tissue=T_OTHER):
    """Paint a tube along a smooth curve through ``nodes`` (a vessel or an airway).

    Parameters
    ----------
    b : Canvas
    nodes : array_like, shape (n, 3)
        World points of the centreline in mm.
    radius : float or sequence of float
        Radius in mm, constant or interpolated along the curve between the given values.
    hu : float
        Noise-free HU (without the site offset).
    label : int
        Class id written.
    step : float
        Spacing of the centreline points in mm.
    clear_peri : bool
        Take the tube out of the pericardium mask.
    tissue : int
        Tissue code written.

    Returns
    -------
    pts : numpy.ndarray, shape (m, 3)
        The centreline points.
    radii : numpy.ndarray, shape (m,)
        The radius at each.
    """
    pts = polyline(nodes, step)
    radii = np.broadcast_to(np.asarray(radius, float), (len(pts),)) if np.ndim(radius) == 0 else \
        np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(radius)), radius)
    sl, m = b.tube_mask(pts, radii)
    b.paint(sl, m, hu, label, tissue, clear_peri=clear_peri)
    return pts, radii
