"""Per-structure PyRadiomics features of a CT and its TotalSegmentator label map, in one pass.

The paper measures every TotalSegmentator structure of the CT attenuation-correction scan with
PyRadiomics: the 18 first-order and 14 3D shape features listed in ``data_manifest/
radiomics_features.yaml``. The straightforward way (and TotalSegmentator's ``--radiomics``) runs one
``RadiomicsFeatureExtractor.execute()`` per structure on the whole image: each call casts the whole
label map, scans it for the label, crops, and computes the maximum diameters by comparing every pair
of surface-mesh vertices, which is quadratic in the surface size and dominates on large structures
such as the lungs.

:func:`structure_features` returns the same values in one pass over the scan:

* the arrays are read once and every structure's bounding box comes from one
  :func:`scipy.ndimage.find_objects` call;
* first-order features are computed with numpy on each structure's voxels, with PyRadiomics'
  own definitions and operation order (binning by :func:`radiomics.imageoperations.getBinEdges`,
  ``voxelArrayShift``, linear-interpolation percentiles, non-excess kurtosis, ``eps`` in entropy,
  flat-region handling);
* shape features use the crop padded by one voxel, as PyRadiomics does. Mesh surface area and volume
  are sums over the marching-cubes cells, so they are computed from a histogram of the 256 cell
  configurations with per-configuration areas, volumes and normals obtained once per spacing from
  PyRadiomics' own C routine (``radiomics._cshape.calculate_coefficients``) on single cells. The
  maximum diameters are the largest distances between mesh vertices (the midpoints of the edges that
  cross the boundary); they are reached between vertices of the convex hull, so only the hull
  vertices of each plane (for the 2D diameters) and of the whole mesh (for the 3D diameter) are
  compared, with PyRadiomics' arithmetic. Axis lengths reproduce PyRadiomics' PCA.

Values agree with PyRadiomics to floating-point rounding (relative differences around 1e-12 or
smaller; most features are bit-identical). :func:`pyradiomics_features` is the reference
implementation, one extractor call per structure.

References
----------
van Griethuysen JJM, Fedorov A, Parmar C, et al. Computational radiomics system to decode the
radiographic phenotype. Cancer Res. 2017;77(21):e104-e107. doi:10.1158/0008-5472.CAN-17-0339.
PyRadiomics documentation, "Radiomic Features": https://pyradiomics.readthedocs.io/en/latest/features.html
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from radiomics import cShape, featureextractor, imageoperations
from radiomics.firstorder import RadiomicsFirstOrder
from radiomics.shape import RadiomicsShape

from ctac_helpers.core import manifest
from ctac_helpers.imaging.grid import fmt, grid_differences

logger = logging.getLogger(__name__)

# PyRadiomics logs every extraction step at INFO; keep its logger to warnings and errors (its own
# stderr handler and the root logger are left alone).
logging.getLogger("radiomics").setLevel(logging.WARNING)

# The manifest's 32 features, split by PyRadiomics feature class.
FIRSTORDER = tuple(f for f in manifest.radiomics_features("all") if f in RadiomicsFirstOrder.getFeatureNames())
SHAPE = tuple(f for f in manifest.radiomics_features("all") if f in RadiomicsShape.getFeatureNames())

# Settings that change the values and that the one-pass path does not reproduce: they must keep
# PyRadiomics' defaults (resample or normalise the image before calling instead).
_FIXED_SETTINGS = {"resampledPixelSpacing": None, "normalize": False, "resegmentRange": None,
                   "voxelBased": False}
# Settings that do not change first-order or 3D shape values on an image and mask of the same grid.
_INERT_SETTINGS = {"label", "force2D", "force2Ddimension", "interpolator", "padDistance", "preCrop",
                   "additionalInfo", "label_channel", "distances", "normalizeScale", "removeOutliers",
                   "resegmentMode", "resegmentShape", "correctMask", "symmetricalGLCM", "gldm_a",
                   "weightingNorm", "geometryTolerance"}
_VALUE_SETTINGS = {"binWidth", "binCount", "voxelArrayShift", "minimumROIDimensions", "minimumROISize"}

# Corners of a marching-cubes cell (z, y, x offsets), in the bit order of PyRadiomics' cshape.c.
_CELL_CORNERS = ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0))
# Above this many 3D diameter candidates, Qhull's hull vertices are compared instead of all pairs.
_HULL_MIN_POINTS = 2000


# -- inputs -----------------------------------------------------------------------------------------
def _settings(settings: Mapping | None) -> dict:
    """The manifest's settings updated with ``settings``, checked against what is reproduced."""
    merged = manifest.radiomics_settings()
    merged.update(dict(settings or {}))
    unknown = sorted(set(merged) - _INERT_SETTINGS - _VALUE_SETTINGS - set(_FIXED_SETTINGS))
    if unknown:
        raise ValueError(f"unsupported PyRadiomics setting(s) {unknown}; supported: "
                         f"{sorted(_VALUE_SETTINGS | _INERT_SETTINGS | set(_FIXED_SETTINGS))}")
    for key, default in _FIXED_SETTINGS.items():
        if merged.get(key, default) != default:
            raise ValueError(f"setting {key}={merged[key]!r} is not supported: it changes the image or mask "
                             f"before extraction; prepare them beforehand and keep {key}={default!r}")
    if merged.get("binCount") is None and not merged.get("binWidth", 25) > 0:
        raise ValueError(f"binWidth must be positive, got {merged.get('binWidth')!r}")
    return merged


def _features(features) -> list[str]:
    allowed = list(FIRSTORDER + SHAPE)
    if features is None:
        return allowed
    if isinstance(features, str):
        features = [features]
    features = list(features)
    bad = [f for f in features if f not in allowed]
    if bad:
        raise ValueError(f"unknown radiomics feature(s) {bad}; allowed: {', '.join(allowed)}")
    if len(set(features)) != len(features):
        raise ValueError(f"features are repeated in {features}")
    return features


def _check_images(ct: sitk.Image, labels: sitk.Image, tolerance: float) -> None:
    for what, img in (("ct", ct), ("labels", labels)):
        if not isinstance(img, sitk.Image):
            raise TypeError(f"{what} must be a SimpleITK.Image, got {type(img).__name__}")
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"{what} must be a scalar 3D image, got a {img.GetDimension()}D image with "
                             f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    # tolerances as SimpleITK applies them: coordinates relative to the voxel size
    sp = np.array(ct.GetSpacing())
    differ = list(grid_differences(ct, labels, tolerance * sp, tolerance * sp.min(), tolerance))
    if differ:
        raise ValueError(
            f"ct and labels are not on the same grid ({', '.join(differ)} differ; resample the label map onto "
            f"the CT first): size {ct.GetSize()} vs {labels.GetSize()}, spacing {fmt(ct.GetSpacing())} vs "
            f"{fmt(labels.GetSpacing())}, origin {fmt(ct.GetOrigin())} vs {fmt(labels.GetOrigin())}, direction "
            f"{fmt(ct.GetDirection())} vs {fmt(labels.GetDirection())} (tolerance {tolerance:g})")
    pixel = labels.GetPixelID()
    if pixel not in (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
                     sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64):
        raise ValueError(f"labels must have an integer pixel type, got {labels.GetPixelIDTypeAsString()}")


def _structures(structures, present: Sequence[int]) -> dict[int, str]:
    """Requested structures as ``{label id: name}`` (default: every label present)."""
    cmap = manifest.class_map()
    if structures is None:
        return {int(k): cmap.get(int(k), f"label_{int(k)}") for k in present}
    if isinstance(structures, Mapping):
        out = {int(k): str(v) for k, v in structures.items()}
    else:
        if isinstance(structures, (str, int, np.integer)):
            structures = [structures]
        by_name = {v: k for k, v in cmap.items()}
        out = {}
        for s in structures:
            if isinstance(s, (int, np.integer)):
                out[int(s)] = cmap.get(int(s), f"label_{int(s)}")
            elif s in by_name:
                out[by_name[s]] = s
            else:
                raise ValueError(f"unknown TotalSegmentator v2 structure {s!r}; pass a mapping "
                                 "{label id: name} for other label maps")
    bad = [k for k in out if k <= 0]
    if bad:
        raise ValueError(f"label ids must be positive integers, got {bad}")
    names = list(out.values())
    if len(set(names)) != len(names):
        raise ValueError(f"structure names are repeated in {names}")
    return out


def _empty_table(names: Sequence[str], features: Sequence[str]) -> pd.DataFrame:
    table = pd.DataFrame(np.nan, index=pd.Index(list(names), name="structure"), columns=list(features))
    return table.astype(float)


def _roi_problem(bbox_shape, n_voxels: int, settings: Mapping) -> str | None:
    """PyRadiomics' ``checkMask`` rules (why it would refuse the ROI), or None when it passes."""
    ndims = sum(s > 1 for s in bbox_shape)
    min_dims = settings.get("minimumROIDimensions", 2)
    min_size = settings.get("minimumROISize")
    if ndims == 0:
        return "a single voxel"
    if ndims < min_dims:
        return f"{ndims} dimension(s), fewer than minimumROIDimensions={min_dims}"
    if min_size is not None and n_voxels <= min_size:
        return f"{n_voxels} voxels, not more than minimumROISize={min_size}"
    return None


# -- first order ------------------------------------------------------------------------------------
def _first_order(values: np.ndarray, spacing_xyz, settings: Mapping) -> dict[str, float]:
    """PyRadiomics' first-order features of one ROI's voxel values (in the image's own dtype).

    Mirrors ``radiomics.firstorder.RadiomicsFirstOrder`` operation by operation, so that results are
    equal to the last bit or within a few ulps (see the module docstring).
    """
    x = values.astype(float)
    n = x.size
    shift = settings.get("voxelArrayShift", 0)

    # discretisation on the original values, with PyRadiomics' own bin edges (which depend on the
    # minimum and maximum only)
    extremes = np.array([values.min(), values.max()], dtype=values.dtype)
    edges = imageoperations.getBinEdges(extremes, **settings)
    counts = np.bincount(np.digitize(values, edges))
    counts = counts[counts > 0].reshape(1, -1)
    p_i = counts.astype(float) / np.sum(counts, 1, keepdims=True).astype(float)

    mean = np.mean(x)
    q10, q25, q75, q90 = np.percentile(x, [10, 25, 75, 90])
    energy = np.sum((x + shift) ** 2)
    dev = x - mean
    m2 = np.mean(np.power(dev, 2))
    m3 = np.mean(np.power(dev, 3))
    m4 = np.mean(np.power(dev, 4))
    # PyRadiomics sets m2 to 1 for flat regions before its (then inert) m3/m4 reset
    m2_safe = 1.0 if m2 == 0 else m2
    # rMAD: PyRadiomics sets the voxels outside [P10, P90] to NaN and takes nanmeans, which sum
    # zeros in their place; doing the same keeps the summation order. Like PyRadiomics, it is NaN
    # when no voxel lies in [P10, P90] (a two-voxel ROI, for example).
    inside = (x >= q10) & (x <= q90)
    n_in = np.count_nonzero(inside)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.sum(np.where(inside, x, 0.0)) / n_in
        rmad = np.sum(np.where(inside, np.abs(x - mean_in), 0.0)) / n_in
    # Variance is nanstd ** 2 in PyRadiomics: square root first, then square
    var = np.sqrt(np.sum(dev * dev) / n) ** 2
    return {
        "Energy": energy,
        "TotalEnergy": energy * np.multiply.reduce(spacing_xyz),
        "Entropy": -1.0 * np.sum(p_i * np.log2(p_i + np.spacing(1)), 1)[0],
        "Minimum": x.min(),
        "10Percentile": q10,
        "90Percentile": q90,
        "Maximum": x.max(),
        "Mean": mean,
        "Median": np.median(x),
        "InterquartileRange": q75 - q25,
        "Range": x.max() - x.min(),
        "MeanAbsoluteDeviation": np.mean(np.abs(dev)),
        "RobustMeanAbsoluteDeviation": rmad,
        "RootMeanSquared": np.sqrt(energy / float(n)),
        "Skewness": m3 / m2_safe ** 1.5,
        "Kurtosis": m4 / m2_safe ** 2.0,
        "Variance": var,
        "Uniformity": np.sum(p_i ** 2, 1)[0],
    }


# -- shape ------------------------------------------------------------------------------------------
def _cell_index(cube: np.ndarray) -> int:
    return sum(int(cube[c]) << k for k, c in enumerate(_CELL_CORNERS))


@functools.lru_cache(maxsize=32)
def _cell_tables(spacing_zyx: tuple[float, float, float]):
    """Per-configuration surface area, volume term and normal sum of PyRadiomics' marching cubes.

    For a cell with configuration ``c`` whose origin is at ``t`` (mm), PyRadiomics adds to 6 x the
    mesh volume ``sum(sign * a . (b x c))`` over its triangles, which equals ``W[c] + t . N[c]`` with
    ``W[c]`` the same sum for the cell at the origin and ``N[c]`` the sum of ``sign * (b - a) x (c - a)``.
    ``A[c]`` and ``W[c]`` come from PyRadiomics' C routine on the single cell; ``N[c]`` from a second
    cell placed one step further along each axis.
    """
    sp = np.asarray(spacing_zyx, dtype=float)
    area, w, normal = np.zeros(256), np.zeros(256), np.zeros((256, 3))
    cubes = []
    for c in range(256):
        cube = np.zeros((2, 2, 2), bool)
        for k, corner in enumerate(_CELL_CORNERS):
            cube[corner] = bool(c >> k & 1)
        cubes.append(cube)
        sa, vol, _ = cShape.calculate_coefficients(cube, sp)
        area[c], w[c] = sa, 6.0 * vol
    for c, cube in enumerate(cubes):
        for axis in range(3):
            face = np.take(cube, [0], axis=axis)
            lead = np.concatenate([face, face], axis=axis)  # the cell before: constant along the axis
            probe = np.ascontiguousarray(np.concatenate([face, cube], axis=axis))
            _, vol, _ = cShape.calculate_coefficients(probe, sp)
            normal[c, axis] = (6.0 * vol - w[_cell_index(lead)] - w[c]) / sp[axis]
    return area, w, normal


def _mesh_area_volume(mask: np.ndarray, spacing_zyx: np.ndarray) -> tuple[float, float]:
    """PyRadiomics' mesh surface area and volume of a padded boolean mask (see :func:`_cell_tables`)."""
    area, w, normal = _cell_tables(tuple(float(s) for s in spacing_zyx))
    nz, ny, nx = mask.shape
    m8 = mask.view(np.uint8)
    cfg = np.zeros((nz - 1, ny - 1, nx - 1), np.uint8)
    for k, (dz, dy, dx) in enumerate(_CELL_CORNERS):
        cfg |= m8[dz:nz - 1 + dz, dy:ny - 1 + dy, dx:nx - 1 + dx] << np.uint8(k)
    flat = cfg.ravel()
    edge = np.flatnonzero((flat != 0) & (flat != 255))
    c = flat[edge]
    counts = np.bincount(c, minlength=256).astype(float)
    iz, iy, ix = np.unravel_index(edge, cfg.shape)
    six_v = counts @ w
    for axis, idx in enumerate((iz, iy, ix)):
        position_sum = np.bincount(c, weights=idx.astype(float), minlength=256)
        six_v += spacing_zyx[axis] * (position_sum @ normal[:, axis])
    return float(counts @ area), float(six_v / 6.0)


def _line_ends(edges: np.ndarray, axis: int):
    """First and last True index along ``axis`` of every line that has one, with the line's indices."""
    has = edges.any(axis=axis)
    first = edges.argmax(axis=axis)
    last = edges.shape[axis] - 1 - np.flip(edges, axis=axis).argmax(axis=axis)
    where = np.nonzero(has)
    return where, first[where], last[where]


def _envelope(group: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the vertices of the upper convex envelope of ``v(u)`` within each group.

    Points must be sorted by (group, u) with one point per (group, u). All points lying on or below
    the chord of their neighbours are dropped at once (none of them can be an envelope vertex) until
    none is left; integer arithmetic keeps the test exact.
    """
    keep = np.arange(group.size)
    while keep.size > 2:
        g, uu, vv = group[keep], u[keep], v[keep]
        inner = (g[1:-1] == g[:-2]) & (g[1:-1] == g[2:])
        above = ((vv[1:-1] - vv[:-2]) * (uu[2:] - uu[:-2])) > ((vv[2:] - vv[:-2]) * (uu[1:-1] - uu[:-2]))
        drop = inner & ~above
        if not drop.any():
            break
        keep = keep[np.concatenate(([True], ~drop, [True]))]
    return keep


def _plane_hull_points(plane: np.ndarray, u: np.ndarray, vmin: np.ndarray, vmax: np.ndarray):
    """Candidate extreme points of each plane from its line ends: ``(plane, u, v)`` arrays.

    In each plane the convex hull vertices lie on the upper envelope of the line maxima or on the
    lower envelope of the line minima.
    """
    order = np.lexsort((u, plane))
    plane, u, vmin, vmax = plane[order], u[order], vmin[order], vmax[order]
    hi = _envelope(plane, u, vmax)
    lo = _envelope(plane, u, -vmin)
    return (np.concatenate([plane[hi], plane[lo]]), np.concatenate([u[hi], u[lo]]),
            np.concatenate([vmax[hi], vmin[lo]]))


def _sq_dist_max_within(group: np.ndarray, pts: np.ndarray) -> float:
    """Largest squared distance between two points of the same group (PyRadiomics' arithmetic)."""
    if group.size < 2:
        return 0.0
    order = np.argsort(group, kind="stable")
    group, pts = group[order], pts[order]
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    sizes = np.diff(np.append(starts, group.size))
    rank = np.arange(group.size) - np.repeat(starts, sizes)
    remaining = np.repeat(sizes, sizes) - rank - 1  # points after this one in its group
    best = 0.0
    for d in range(1, int(sizes.max())):
        i = np.flatnonzero(remaining >= d)
        if i.size == 0:
            break
        a, b = pts[i], pts[i + d]
        ab = a - b
        ab *= ab
        best = max(best, float(np.max(ab[:, 0] + ab[:, 1] + ab[:, 2])))
    return best


def _sq_dist_max(pts: np.ndarray, block: int = 512) -> float:
    """Largest squared distance between any two points (PyRadiomics' arithmetic), in blocks."""
    best = 0.0
    for start in range(0, len(pts), block):
        a = pts[start:start + block]
        b = pts[start:]
        d = (a[:, None, 0] - b[None, :, 0]) ** 2
        d += (a[:, None, 1] - b[None, :, 1]) ** 2
        d += (a[:, None, 2] - b[None, :, 2]) ** 2
        best = max(best, float(d.max()))
    return best


def _mesh_diameters(mask: np.ndarray, spacing_zyx: np.ndarray) -> tuple[float, float, float, float]:
    """PyRadiomics' maximum 2D (slice, column, row) and 3D diameters of a padded boolean mask.

    The mesh vertices are the midpoints of the voxel edges that cross the ROI boundary; in doubled
    index units (``2 * index + 1`` for a midpoint) they are integers. A farthest pair is always made
    of convex-hull vertices, and a hull vertex is an end of its line along x and along y; the hull
    vertices of every plane (and, for 3D, the points that are hull candidates in all three plane
    families) are compared with each other only.
    """
    # boundary edges along x, y and z and the doubled-coordinate offset of their midpoints
    crossings = ((mask[:, :, :-1] ^ mask[:, :, 1:], (0, 0, 1)),
                 (mask[:, :-1, :] ^ mask[:, 1:, :], (0, 1, 0)),
                 (mask[:-1] ^ mask[1:], (1, 0, 0)))
    x_lines, y_lines = [], []  # (z2, y2, x2min, x2max) and (z2, x2, y2min, y2max)
    for edges, (oz, oy, ox) in crossings:
        (z, y), first, last = _line_ends(edges, axis=2)
        x_lines.append((2 * z + oz, 2 * y + oy, 2 * first + ox, 2 * last + ox))
        (z, x), first, last = _line_ends(edges, axis=1)
        y_lines.append((2 * z + oz, 2 * x + ox, 2 * first + oy, 2 * last + oy))
    z2, y2, x2lo, x2hi = (np.concatenate(a).astype(np.int64) for a in zip(*x_lines))
    z2b, x2b, y2lo, y2hi = (np.concatenate(a).astype(np.int64) for a in zip(*y_lines))

    shape2 = np.array(mask.shape, np.int64) * 2
    half_sp = np.asarray(spacing_zyx, float)

    def physical(zz, yy, xx):
        # the vertex coordinate as PyRadiomics computes it: (index + 0.0 or 0.5) * spacing
        return np.stack([(zz * 0.5) * half_sp[0], (yy * 0.5) * half_sp[1], (xx * 0.5) * half_sp[2]], axis=1)

    # slice planes (same z): lines along x indexed by y; column planes (same y): lines along x
    # indexed by z; row planes (same x): lines along y indexed by z
    pz, pu, pv = _plane_hull_points(z2, y2, x2lo, x2hi)
    slice_pts = (pz, pu, pv)
    py, pu2, pv2 = _plane_hull_points(y2, z2, x2lo, x2hi)
    column_pts = (pu2, py, pv2)
    px, pu3, pv3 = _plane_hull_points(x2b, z2b, y2lo, y2hi)
    row_pts = (pu3, pv3, px)

    d_slice = _sq_dist_max_within(slice_pts[0], physical(*slice_pts))
    d_column = _sq_dist_max_within(column_pts[1], physical(*column_pts))
    d_row = _sq_dist_max_within(row_pts[2], physical(*row_pts))

    def code(zz, yy, xx):
        return (zz * shape2[1] + yy) * shape2[2] + xx

    common = np.intersect1d(np.intersect1d(code(*slice_pts), code(*column_pts)), code(*row_pts))
    cz, rest = np.divmod(common, shape2[1] * shape2[2])
    cy, cx = np.divmod(rest, shape2[2])
    candidates = physical(cz, cy, cx)
    if len(candidates) > _HULL_MIN_POINTS:
        candidates = _hull_vertices(candidates)
    d_3d = _sq_dist_max(candidates)
    return tuple(float(np.sqrt(d)) for d in (d_slice, d_column, d_row, d_3d))


def _hull_vertices(pts: np.ndarray) -> np.ndarray:
    """Vertices of the 3D convex hull (all points when Qhull cannot build one, e.g. flat sets)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return pts[ConvexHull(pts).vertices]
    except QhullError:
        return pts


def _shape(mask: np.ndarray, spacing_zyx: np.ndarray) -> dict[str, float]:
    """PyRadiomics' 3D shape features of a cropped boolean mask (``radiomics.shape.RadiomicsShape``)."""
    padded = np.pad(mask, 1)
    surface, volume = _mesh_area_volume(padded, spacing_zyx)
    diameters = _mesh_diameters(padded, spacing_zyx)

    # principal axes: the same computation as RadiomicsShape, on the padded voxel indices
    coordinates = np.array(np.nonzero(mask), dtype="int").transpose((1, 0)) + 1
    n = len(coordinates)
    physical = coordinates * spacing_zyx[None, :]
    physical -= np.mean(physical, axis=0)
    physical /= np.sqrt(n)
    covariance = np.dot(physical.T.copy(), physical)
    # eigvalsh, not PyRadiomics' eigvals: the covariance is symmetric, and eigvals returns complex values
    # (imaginary parts ~1e-17) when two axes are equal, which float() then truncated with a warning
    eig = np.linalg.eigvalsh(covariance)
    eig[(eig < 0) & (eig > -1e-10)] = 0  # machine-precision negatives of flat ROIs, as PyRadiomics
    eig.sort()

    z, y, x = spacing_zyx
    # degenerate ROIs divide by zero exactly where PyRadiomics does; its values (inf, NaN) are kept
    with np.errstate(divide="ignore", invalid="ignore"):
        return _shape_values(volume, surface, diameters, eig, n * (z * x * y))


def _shape_values(volume, surface, diameters, eig, voxel_volume) -> dict[str, float]:
    """The 14 shape features from the mesh, diameter and PCA results (RadiomicsShape's formulas)."""
    def axis_length(lam):
        return np.sqrt(lam) * 4 if lam >= 0 else np.nan

    return {
        "MeshVolume": volume,
        "VoxelVolume": voxel_volume,
        "SurfaceArea": surface,
        "SurfaceVolumeRatio": surface / volume if volume != 0 else np.nan,
        "Sphericity": (36 * np.pi * volume ** 2) ** (1.0 / 3.0) / surface,
        "Maximum3DDiameter": diameters[3],
        "Maximum2DDiameterSlice": diameters[0],
        "Maximum2DDiameterColumn": diameters[1],
        "Maximum2DDiameterRow": diameters[2],
        "MajorAxisLength": axis_length(eig[2]),
        "MinorAxisLength": axis_length(eig[1]),
        "LeastAxisLength": axis_length(eig[0]),
        "Elongation": np.sqrt(eig[1] / eig[2]) if eig[1] >= 0 and eig[2] >= 0 else np.nan,
        "Flatness": np.sqrt(eig[0] / eig[2]) if eig[0] >= 0 and eig[2] >= 0 else np.nan,
    }


# -- public API -------------------------------------------------------------------------------------
def structure_features(ct: sitk.Image, labels: sitk.Image, structures=None, features=None,
                       settings: Mapping | None = None) -> pd.DataFrame:
    """PyRadiomics first-order and 3D shape features of every structure of a label map, in one pass.

    Parameters
    ----------
    ct : SimpleITK.Image
        The CT (Hounsfield units), scalar 3D.
    labels : SimpleITK.Image
        Multilabel map on the same grid (TotalSegmentator v2 class ids for names to resolve).
    structures : mapping or sequence, optional
        ``{label id: name}``, or TotalSegmentator v2 names (or ids) resolved with
        :func:`ctac_helpers.core.manifest.class_map`. Default: every label present, named by the class map.
    features : sequence of str, optional
        PyRadiomics feature names (``'Mean'``, ``'MeshVolume'``, ...); default all 32 of
        :func:`ctac_helpers.core.manifest.radiomics_features`.
    settings : mapping, optional
        PyRadiomics settings updating :func:`ctac_helpers.core.manifest.radiomics_settings` (``binWidth``,
        ``binCount``, ``voxelArrayShift``, ``minimumROIDimensions``, ``minimumROISize``; settings that
        resample, normalise or resegment are refused).

    Returns
    -------
    pandas.DataFrame
        One row per requested structure (index ``structure``), one float column per feature, equal to
        :func:`pyradiomics_features` to floating-point rounding. Structures without voxels, or that
        PyRadiomics' mask checks refuse (a single voxel, fewer than ``minimumROIDimensions``
        dimensions), have NaN rows.

    Raises
    ------
    ValueError
        Unknown feature or structure names, unsupported settings, or images not on the same grid.

    References
    ----------
    van Griethuysen JJM, et al. Computational radiomics system to decode the radiographic phenotype.
    Cancer Res. 2017;77(21):e104-e107. PyRadiomics documentation, "Radiomic Features".
    """
    feats = _features(features)
    cfg = _settings(settings)
    _check_images(ct, labels, cfg.get("geometryTolerance") or 1e-6)
    lab = sitk.GetArrayViewFromImage(labels)
    img = sitk.GetArrayViewFromImage(ct)
    if np.issubdtype(lab.dtype, np.signedinteger) and lab.size and lab.min() < 0:
        raise ValueError("labels contain negative values; label ids must be positive")
    top = int(lab.max()) if lab.size else 0

    if structures is None:
        boxes = ndimage.find_objects(lab, max_label=top) if top > 0 else []
        wanted = _structures(None, [k + 1 for k, b in enumerate(boxes) if b is not None])
    else:
        wanted = _structures(structures, [])
        reach = min(max(wanted, default=0), top)
        boxes = ndimage.find_objects(lab, max_label=reach) if reach > 0 else []

    table = _empty_table(list(wanted.values()), feats)
    want_fo = [f for f in feats if f in FIRSTORDER]
    want_shape = [f for f in feats if f in SHAPE]
    spacing_xyz = ct.GetSpacing()
    spacing_zyx = np.array(spacing_xyz[::-1], dtype=float)
    for label, name in wanted.items():
        box = boxes[label - 1] if label <= len(boxes) else None
        if box is None:
            logger.debug("%s (label %d): no voxels", name, label)
            continue
        mask = lab[box] == label
        n = int(np.count_nonzero(mask))
        problem = _roi_problem(mask.shape, n, cfg)
        if problem:
            logger.warning("%s (label %d): PyRadiomics would refuse this ROI (%s); features are NaN",
                           name, label, problem)
            continue
        row = {}
        if want_fo:
            row.update(_first_order(img[box][mask], spacing_xyz, cfg))
        if want_shape:
            row.update(_shape(mask, spacing_zyx))
        table.loc[name] = [float(row[f]) for f in feats]
    return table


def pyradiomics_features(ct: sitk.Image, labels: sitk.Image, structures=None, features=None,
                         settings: Mapping | None = None) -> pd.DataFrame:
    """The same table as :func:`structure_features`, with one PyRadiomics extraction per structure.

    This is the straightforward reference (and what TotalSegmentator's ``--radiomics`` does): a
    ``radiomics.featureextractor.RadiomicsFeatureExtractor`` with the given settings (diagnostic
    ``additionalInfo`` off) runs ``execute(ct, labels, label=id)`` on the whole image for every
    structure. Structures that are absent or that PyRadiomics refuses get NaN rows. Parameters,
    return value and errors are those of :func:`structure_features`.

    References
    ----------
    van Griethuysen JJM, et al. Cancer Res. 2017;77(21):e104-e107. PyRadiomics documentation,
    "Customizing the Extraction".
    """
    feats = _features(features)
    cfg = _settings(settings)
    _check_images(ct, labels, cfg.get("geometryTolerance") or 1e-6)
    present = [int(k) for k in np.unique(sitk.GetArrayViewFromImage(labels)) if k > 0]
    wanted = _structures(structures, present)
    table = _empty_table(list(wanted.values()), feats)

    extractor_settings = {k: v for k, v in cfg.items() if k not in ("label",)}
    extractor_settings["additionalInfo"] = False
    logging.getLogger("radiomics").setLevel(logging.WARNING)
    extractor = featureextractor.RadiomicsFeatureExtractor(**extractor_settings)
    extractor.disableAllFeatures()
    enabled = {cls: [f for f in feats if f in names] for cls, names in (("firstorder", FIRSTORDER), ("shape", SHAPE))}
    extractor.enableFeaturesByName(**{cls: names for cls, names in enabled.items() if names})
    for label, name in wanted.items():
        if label not in present:
            logger.debug("%s (label %d): no voxels", name, label)
            continue
        try:
            result = extractor.execute(ct, labels, label=int(label))
        except ValueError as exc:  # ROI refused by PyRadiomics' checkMask
            logger.warning("%s (label %d): PyRadiomics refused this ROI (%s); features are NaN", name, label, exc)
            continue
        # PyRadiomics' axis lengths come from eigvals and are complex (imaginary part ~1e-17) when two
        # axes are equal: the real part is the value
        table.loc[name] = [float(np.real(result[f"original_{'firstorder' if f in FIRSTORDER else 'shape'}_{f}"]))
                           for f in feats]
    return table


def wide_features(table: pd.DataFrame) -> pd.Series:
    """Flatten a per-structure feature table into the shared ``ct__<structure>__<feature>`` columns.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`structure_features` (index: structure names, columns: feature names).

    Returns
    -------
    pandas.Series
        One value per (structure, feature) pair, named with :func:`ctac_helpers.core.manifest.feature_column`,
        structures in table order and features in column order: one scan's row of the cohort table.
    """
    names = [manifest.feature_column(str(s), str(f)) for s in table.index for f in table.columns]
    return pd.Series(table.to_numpy(float).ravel(), index=names, dtype=float)
