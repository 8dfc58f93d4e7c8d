"""ctac_helpers.imaging.radiomics: the one-pass features equal PyRadiomics' own, on real and synthetic scans."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ctac_helpers.core import manifest
from ctac_helpers.imaging import radiomics as rad

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "ct-samples"
# PyRadiomics sums mesh areas triangle by triangle, we sum them per cell configuration: the only
# differences are rounding (about 1e-12 at most); everything else is bit-identical.
RTOL = 1e-9
ALL = manifest.radiomics_features("all")


def _sample(*parts) -> Path:
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real CT samples not available: {path} is missing (see ../shared/ct-samples/README.md)")
    return path


def _assert_same(fast: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(fast.index) == list(ref.index)
    assert list(fast.columns) == list(ref.columns)
    np.testing.assert_allclose(fast.to_numpy(float), ref.to_numpy(float), rtol=RTOL, atol=0, equal_nan=True)


def _image(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


@pytest.fixture(scope="module")
def abdomen():
    folder = _sample("abdomen-3mm")
    return sitk.ReadImage(str(folder / "ct.nii.gz")), sitk.ReadImage(str(folder / "seg-total-fast.nii.gz"))


# -- equality with PyRadiomics on real scans --------------------------------------------------------
def test_equals_pyradiomics_on_abdomen_structures(abdomen):
    ct, seg = abdomen
    # large, medium, tiny (83 and 68 voxels) and edge-touching structures, plus one that is absent
    names = ["liver", "spleen", "aorta", "vertebrae_T11", "rib_right_7", "prostate", "hip_left", "heart"]
    lab = sitk.GetArrayViewFromImage(seg)
    boxes = ndimage.find_objects(lab)
    ids = {v: k for k, v in manifest.class_map().items()}
    touching = [n for n in names if boxes[ids[n] - 1] is not None
                and any(s.start == 0 or s.stop == size for s, size in zip(boxes[ids[n] - 1], lab.shape))]
    assert {"vertebrae_T11", "rib_right_7", "prostate", "aorta"} <= set(touching)

    fast = rad.structure_features(ct, seg, structures=names)
    ref = rad.pyradiomics_features(ct, seg, structures=names)
    assert list(fast.columns) == ALL
    _assert_same(fast, ref)
    assert fast.loc["heart"].isna().all()
    assert fast.drop(index="heart").notna().all().all()


def test_equals_pyradiomics_on_dicom_series():
    folder = _sample("dicom-series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder / "dicom")))
    ct = reader.Execute()
    # the label map was written in RAS-like orientation: same voxels, flipped y axis
    seg = sitk.DICOMOrient(sitk.ReadImage(str(folder / "seg-total.nii.gz")), "LPS")
    names = ["pancreas", "aorta", "vertebrae_T12", "rib_left_12", "costal_cartilages"]
    fast = rad.structure_features(ct, seg, structures=names)
    ref = rad.pyradiomics_features(ct, seg, structures=names)
    _assert_same(fast, ref)
    assert fast.notna().all().all()


def test_equals_pyradiomics_on_binary_mask_with_mapping():
    folder = _sample("chest-cta-aorta")
    ct = sitk.ReadImage(str(folder / "ct.nii.gz"))
    mask = sitk.ReadImage(str(folder / "brachiocephalic_trunk.nii.gz"))
    structures = {1: "brachiocephalic_trunk"}
    subset = manifest.radiomics_features("subset15")
    fast = rad.structure_features(ct, mask, structures=structures, features=subset)
    _assert_same(fast, rad.pyradiomics_features(ct, mask, structures=structures, features=subset))
    assert list(fast.columns) == subset


def test_default_structures_are_every_label_present(abdomen):
    ct, seg = abdomen
    fast = rad.structure_features(ct, seg, features=["Mean", "VoxelVolume"])
    present = [int(k) for k in np.unique(sitk.GetArrayViewFromImage(seg)) if k > 0]
    assert list(fast.index) == [manifest.class_map()[k] for k in present]
    assert fast.index.name == "structure"
    counts = np.bincount(sitk.GetArrayViewFromImage(seg).ravel())
    np.testing.assert_array_equal(fast["VoxelVolume"], counts[present] * 27.0)  # 3 mm isotropic


# -- hand-checkable synthetic case ------------------------------------------------------------------
def test_cube_of_known_values():
    img = np.full((8, 8, 8), -1000, np.int16)
    lab = np.zeros((8, 8, 8), np.uint8)
    img[2:6, 2:6, 2:6] = 10 * np.arange(64).reshape(4, 4, 4)  # 0, 10, ..., 630 HU
    lab[2:6, 2:6, 2:6] = 1
    ct = _image(img, spacing=(0.5, 1.0, 2.0))  # x, y, z in mm
    seg = _image(lab, spacing=(0.5, 1.0, 2.0))
    row = rad.structure_features(ct, seg, structures={1: "cube"}).loc["cube"]
    assert row["Mean"] == 315.0
    assert row["Median"] == 315.0
    assert row["Minimum"] == 0.0 and row["Maximum"] == 630.0 and row["Range"] == 630.0
    assert row["Variance"] == pytest.approx(100 * (64 ** 2 - 1) / 12)  # discrete uniform, population variance
    assert row["Skewness"] == pytest.approx(0.0, abs=1e-12)
    assert row["Kurtosis"] == pytest.approx(3 * (3 * 64 ** 2 - 7) / (5 * (64 ** 2 - 1)))  # not excess kurtosis
    assert row["10Percentile"] == pytest.approx(63.0)  # linear interpolation at rank 0.1 * 63
    assert row["Energy"] == pytest.approx(100 * sum(i * i for i in range(64)))
    assert row["TotalEnergy"] == pytest.approx(row["Energy"] * 1.0)  # voxel of 0.5 x 1 x 2 = 1 mm3
    assert row["VoxelVolume"] == 64.0
    # marching cubes through edge midpoints: the box loses 1/8 mm3 per mm of edge and 5/48 per corner
    assert row["MeshVolume"] == pytest.approx(64 - 12 * 3 / 8 - 8 * 5 / 48)
    # farthest vertices: midpoints of z-edges at opposite corners (8 mm in z, 3 mm in y, 1.5 mm in x)
    assert row["Maximum3DDiameter"] == pytest.approx(np.sqrt(8 ** 2 + 3 ** 2 + 1.5 ** 2))
    # principal axes of a uniform 4-voxel grid: variance 1.25 spacing^2 per axis, length 4 sqrt(var)
    assert row["MajorAxisLength"] == pytest.approx(4 * np.sqrt(1.25 * 2.0 ** 2))
    assert row["LeastAxisLength"] == pytest.approx(4 * np.sqrt(1.25 * 0.5 ** 2))
    assert row["Flatness"] == pytest.approx(0.25)


# -- absent, refused and malformed inputs -----------------------------------------------------------
def _small_scan():
    rng = np.random.default_rng(0)
    lab = np.zeros((6, 7, 8), np.uint8)
    lab[1:4, 1:5, 2:6] = 1  # spleen
    lab[4, 5, 6] = 2  # kidney_right: a single voxel, refused by PyRadiomics
    img = rng.integers(-100, 200, lab.shape).astype(np.int16)
    return _image(img, spacing=(0.8, 0.8, 2.5)), _image(lab, spacing=(0.8, 0.8, 2.5))


# The spleen of the small scan has two equal axes: eigvals gave complex axis lengths, truncated with a warning.
@pytest.mark.filterwarnings("error::numpy.exceptions.ComplexWarning")
def test_absent_and_refused_structures_give_nan_rows():
    ct, seg = _small_scan()
    names = ["spleen", "kidney_right", "liver"]
    fast = rad.structure_features(ct, seg, structures=names)
    ref = rad.pyradiomics_features(ct, seg, structures=names)
    _assert_same(fast, ref)
    assert fast.loc["spleen"].notna().all()
    assert fast.loc[["kidney_right", "liver"]].isna().all().all()  # NaN, never zeros


def test_grid_mismatch_names_the_problem():
    ct, seg = _small_scan()
    moved = sitk.Image(seg)
    moved.SetOrigin((0.0, 0.0, 5.0))
    with pytest.raises(ValueError, match=r"not on the same grid \(origin differ.*origin \(0, 0, 0\) vs \(0, 0, 5\)"):
        rad.structure_features(ct, moved)
    cropped = seg[:, :, :5]
    with pytest.raises(ValueError, match=r"size \(8, 7, 6\) vs \(8, 7, 5\)"):
        rad.structure_features(ct, cropped)
    with pytest.raises(ValueError, match="same grid"):
        rad.pyradiomics_features(ct, cropped)


def test_unknown_feature_lists_allowed_names():
    ct, seg = _small_scan()
    allowed = r"unknown radiomics feature.*'StandardDeviation'.*allowed: Energy, TotalEnergy, Entropy"
    with pytest.raises(ValueError, match=allowed):
        rad.structure_features(ct, seg, features=["Mean", "StandardDeviation"])


def test_bad_structures_and_settings_are_refused():
    ct, seg = _small_scan()
    with pytest.raises(ValueError, match="unknown TotalSegmentator v2 structure 'spleeen'"):
        rad.structure_features(ct, seg, structures=["spleeen"])
    with pytest.raises(ValueError, match="resampledPixelSpacing"):
        rad.structure_features(ct, seg, settings={"resampledPixelSpacing": [1, 1, 1]})
    with pytest.raises(ValueError, match="unsupported PyRadiomics setting"):
        rad.structure_features(ct, seg, settings={"binwidth": 10})
    with pytest.raises(ValueError, match="integer pixel type"):
        rad.structure_features(ct, sitk.Cast(seg, sitk.sitkFloat32))


@pytest.mark.parametrize("settings", [
    {"binCount": 16},
    {"binWidth": 10, "voxelArrayShift": 1000},
    {"binWidth": 0.5, "minimumROIDimensions": 1},
])
def test_settings_and_float_images_match_pyradiomics(settings):
    rng = np.random.default_rng(len(settings))
    lab = rng.integers(0, 4, (7, 9, 11)).astype(np.uint8)
    lab[0, 0, :4] = 5  # a line: refused unless minimumROIDimensions is 1
    img = rng.normal(20, 300, lab.shape).astype(np.float32)
    img[lab == 3] = 7.0  # a flat region (Skewness, Kurtosis and Entropy edge cases)
    ct = _image(img, spacing=(0.7, 1.3, 2.1), origin=(-10.0, 4.0, 33.0))
    seg = _image(lab, spacing=(0.7, 1.3, 2.1), origin=(-10.0, 4.0, 33.0))
    structures = {1: "a", 2: "b", 3: "flat", 5: "line"}
    fast = rad.structure_features(ct, seg, structures, settings=settings)
    _assert_same(fast, rad.pyradiomics_features(ct, seg, structures, settings=settings))
    assert fast.loc["line"].notna().any() == (settings.get("minimumROIDimensions") == 1)


# -- the shape internals against PyRadiomics' C routine ---------------------------------------------
def test_mesh_and_diameters_match_pyradiomics_c_on_random_masks():
    from radiomics import cShape

    rng = np.random.default_rng(7)
    for trial in range(150):
        shape = tuple(int(s) for s in rng.integers(1, 12, 3))
        if trial % 3 == 0:
            mask = rng.random(shape) < rng.uniform(0.1, 0.9)  # scattered voxels, several components
        elif trial % 3 == 1:
            z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
            radii = [max(s / 2 * rng.uniform(0.6, 1.2), 0.6) for s in shape]
            mask = sum(((c - s / 2) / r) ** 2 for c, s, r in zip((z, y, x), shape, radii)) <= 1
        else:
            mask = np.zeros(shape, bool)  # flat: one slice
            mask[rng.integers(0, shape[0])] = rng.random(shape[1:]) < 0.8
        if not mask.any():
            continue
        spacing = np.array([3.0, 0.98, 0.98]) if trial % 2 else np.array([1.5, 0.7, 1.1])
        padded = np.pad(mask, 1)
        area, volume, diameters = cShape.calculate_coefficients(padded, spacing)
        assert rad._mesh_diameters(padded, spacing) == tuple(diameters)
        np.testing.assert_allclose(rad._mesh_area_volume(padded, spacing), (area, volume), rtol=1e-12, atol=1e-12)


def test_hull_path_matches_pyradiomics_c(monkeypatch):
    from radiomics import cShape

    monkeypatch.setattr(rad, "_HULL_MIN_POINTS", 0)  # force Qhull even on a small candidate set
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.random((14, 30, 26)), 3)
    padded = np.pad(field > np.median(field), 1)
    spacing = np.array([3.0, 0.98, 0.98])
    assert rad._mesh_diameters(padded, spacing) == tuple(cShape.calculate_coefficients(padded, spacing)[2])


# -- wide layout ------------------------------------------------------------------------------------
def test_wide_features_uses_shared_column_names():
    ct, seg = _small_scan()
    table = rad.structure_features(ct, seg, structures=["spleen", "liver"], features=["Mean", "MeshVolume"])
    wide = rad.wide_features(table)
    assert list(wide.index) == ["ct__spleen__Mean", "ct__spleen__MeshVolume", "ct__liver__Mean",
                                "ct__liver__MeshVolume"]
    assert wide["ct__spleen__Mean"] == table.loc["spleen", "Mean"]
    assert np.isnan(wide["ct__liver__MeshVolume"])
    assert manifest.parse_feature_column(wide.index[1]) == ("spleen", "MeshVolume")
