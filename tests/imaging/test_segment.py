"""Segmentation backends (ctac_helpers.imaging.segment).

The TotalSegmentator adapter is tested offline on stand-in models (tests/tiny_nnunet.py) with the
real dataset ids, folder layout, trainers and label sets, and compared voxel for voxel with
TotalSegmentator's own ``nnUNet_predict_image`` on the same weights. Real CT samples come from
``../shared/ct-samples`` (or ``$CTAC_CT_SAMPLES``); tests that need them skip when absent.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging import presence, segment
from ctac_helpers.imaging.grid import same_grid

import tiny_nnunet

ROOT = Path(__file__).resolve().parents[2]
CT_SAMPLES = Path(os.environ.get("CTAC_CT_SAMPLES", ROOT.parent / "shared" / "ct-samples"))
IDS = manifest.class_map()
NAME_TO_ID = {v: k for k, v in IDS.items()}


def sample(rel: str) -> Path:
    path = CT_SAMPLES / rel
    if not path.exists():
        pytest.skip(f"real CT sample {path} not available (set CTAC_CT_SAMPLES or provide "
                    f"../shared/ct-samples, see its README)")
    return path


def synthetic_ct(size=(60, 50, 16), spacing=(3.0, 3.0, 3.0)) -> sitk.Image:
    """A body-like ellipsoid of soft tissue with a 'spine' in air, LPS-flipped like many CTs."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in size], indexing="ij")
    cx, cy = size[0] / 2, size[1] / 2
    body = ((x - cx) / (0.4 * size[0])) ** 2 + ((y - cy) / (0.4 * size[1])) ** 2 < 1
    arr = np.where(body, 40, -1000).astype(np.int16)
    arr[(np.abs(x - cx) < 3) & (np.abs(y - 0.7 * size[1]) < 3)] = 700
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    img.SetSpacing(spacing)
    img.SetOrigin((120.0, -30.0, 80.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return img


@pytest.fixture()
def ct_path(tmp_path) -> Path:
    """The short real abdominal CT, or a synthetic stand-in when the samples are absent."""
    real = CT_SAMPLES / "abdomen-3mm-short" / "ct.nii.gz"
    if real.exists():
        return real
    path = tmp_path / "synthetic_ct.nii.gz"
    sitk.WriteImage(synthetic_ct(), str(path))
    return path


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to resolve a host or open an internet connection fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", connect)
    import requests

    monkeypatch.setattr(requests, "post", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    return attempts


@pytest.fixture(scope="module")
def fast_home(tmp_path_factory) -> Path:
    """A TOTALSEG_HOME_DIR holding stand-in weights for ``total --fast`` (dataset 297)."""
    home = tmp_path_factory.mktemp("totalseg_fast")
    tiny_nnunet.make_totalsegmentator_weights(home / "nnunet" / "results", fast=True)
    return home


@pytest.fixture()
def ts_env(monkeypatch):
    """Point TotalSegmentator at a home folder; forget cached segmenters."""
    def use(home: Path):
        monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
        monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
        return home

    segment.cached_segmenter.cache_clear()
    yield use
    segment.cached_segmenter.cache_clear()


def run_totalsegmentator_reference(ct_file: Path, results: Path, task_id, trainer, spacing,
                                   monkeypatch):
    """TotalSegmentator's own nnUNet_predict_image on the same weights, as (z, y, x) array.

    Two test-only changes: nnU-Net's multiprocess file predictor is swapped for its sequential
    twin (same preprocessing, prediction and export, without spawning workers), and trainers are
    looked up directly (nnU-Net's search imports modules that need torchvision).
    """
    import torch
    import totalsegmentator.nnunet as tsn
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation import \
        nnUNetTrainerNoMirroring as m1
    from nnunetv2.training.nnUNetTrainer.variants.training_length import \
        nnUNetTrainer_Xepochs_NoMirroring as m2

    def sequential(self, dir_in, dir_out, save_probabilities=False, overwrite=True,
                   num_processes_preprocessing=1, num_processes_segmentation_export=1,
                   folder_with_segs_from_prev_stage=None, num_parts=1, part_id=0, **kwargs):
        return self.predict_from_files_sequential(dir_in, dir_out, save_probabilities, overwrite,
                                                  folder_with_segs_from_prev_stage)

    monkeypatch.setattr(nnUNetPredictor, "predict_from_files", sequential)
    monkeypatch.setattr(tsn, "recursive_find_trainer_class_by_name",
                        lambda name: getattr(m2, name, None) or getattr(m1, name))
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(results))
    threads = torch.get_num_threads()
    try:
        img, _, _ = tsn.nnUNet_predict_image(
            ct_file, None, task_id, model="3d_fullres", folds=[0], trainer=trainer, tta=False,
            multilabel_image=True, resample=spacing, task_name="total", quiet=True, device="cpu",
            plans="nnUNetPlans", resampling_order=1)
    finally:
        torch.set_num_threads(threads)
    return np.asanyarray(img.dataobj).transpose(2, 1, 0)


# -- TotalSegmentator adapter ---------------------------------------------------------------------
def test_totalsegmentator_models_follow_installed_tables():
    fast = segment.totalsegmentator_models(fast=True)
    full = segment.totalsegmentator_models(fast=False)
    assert [m.dataset_id for m in fast] == [297]
    assert [m.dataset_id for m in full] == [291, 292, 293, 294, 295]
    assert fast[0].spacing == 3.0 and {m.spacing for m in full} == {1.5}
    assert fast[0].model_dir_name == "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
    assert dict(fast[0].label_map) == IDS  # the fast model predicts total ids directly
    part_names = [name for m in full for _, name in m.label_map]
    assert sorted(part_names) == sorted(IDS.values())  # the five parts cover the 117 classes


def test_totalsegmentator_end_to_end_offline(fast_home, ts_env, ct_path, no_network, monkeypatch):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    home = ts_env(fast_home)
    loads = []
    original = nnUNetPredictor.initialize_from_trained_model_folder

    def counting(self, *args, **kwargs):
        loads.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", counting)
    seg = segment.cached_segmenter("totalsegmentator")
    assert seg is segment.cached_segmenter("totalsegmentator", fast=True, device="auto")
    assert seg.weights_dir == home / "nnunet" / "results"
    assert loads == []  # construction checks the weights; the model loads on first use

    ct = sitk.ReadImage(str(ct_path))
    second = ct[5:-5, 8:-3, 2:]  # another scan on another grid
    for scan in (ct, second):
        labels = segment.cached_segmenter("totalsegmentator").segment(scan)
        assert labels.GetSize() == scan.GetSize()
        assert labels.GetSpacing() == scan.GetSpacing()
        assert labels.GetOrigin() == scan.GetOrigin()
        assert labels.GetDirection() == scan.GetDirection()
        assert labels.GetPixelID() == sitk.sitkUInt8
        values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
        assert values <= {0, *IDS}
        assert len(values) > 1  # random weights still predict something
    assert len(loads) == 1 and seg.n_model_loads == 1

    # usage statistics: TotalSegmentator's senders are no-ops now, its config.json was not created
    import totalsegmentator.config as ts_config

    ts_config.send_usage_stats({"send_usage_stats": True, "totalseg_id": "x",
                                "prediction_counter": 0},
                               {"task": "total", "fast": True, "preview": False, "multilabel": True,
                                "roi_subset": None, "statistics": False, "radiomics": False})
    ts_config.send_usage_stats_application("test")
    assert not (home / "config.json").exists()
    assert sorted(p.name for p in home.iterdir()) == ["nnunet"]
    assert no_network == []

    # pickling (Dask) ships configuration only; the copy loads its own model once
    clone = pickle.loads(pickle.dumps(seg))
    assert clone._predictors is None and clone.model_folders == seg.model_folders


@pytest.mark.filterwarnings("ignore:Detected old nnU-Net plans format")
def test_totalsegmentator_matches_totalsegmentator_pipeline(fast_home, ts_env, ct_path, tmp_path,
                                                            no_network, monkeypatch):
    """Same weights, same scan: the adapter's labels equal TotalSegmentator's, voxel for voxel."""
    ts_env(fast_home)
    seg = segment.get_segmenter("totalsegmentator", fast=True, device="cpu")
    # the scan as is (3 mm, x and y flipped: reorientation) and at 1.5 mm in-plane (resampling to
    # the model's 3 mm and back)
    ct = sitk.ReadImage(str(ct_path))
    size15 = [2 * ct.GetSize()[0], 2 * ct.GetSize()[1], ct.GetSize()[2]]
    ct15 = sitk.Resample(ct, size15, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(),
                         [1.5, 1.5, 3.0], ct.GetDirection(), -1024, sitk.sitkInt16)
    for i, scan in enumerate((ct, ct15)):
        path = tmp_path / f"scan{i}.nii.gz"
        sitk.WriteImage(scan, str(path))
        ours = sitk.GetArrayFromImage(seg.segment(sitk.ReadImage(str(path))))
        theirs = run_totalsegmentator_reference(path, fast_home / "nnunet" / "results", 297,
                                                "nnUNetTrainer_4000epochs_NoMirroring", 3.0,
                                                monkeypatch)
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.filterwarnings("ignore:Detected old nnU-Net plans format")
def test_totalsegmentator_full_task_combines_parts(tmp_path, ts_env, ct_path, no_network,
                                                   monkeypatch):
    """The five 1.5 mm part models: labels mapped to total ids, later parts overwrite earlier."""
    ct = sitk.ReadImage(str(ct_path))
    small = ct[20:44, 20:44, 4:12]
    path = tmp_path / "small.nii.gz"
    sitk.WriteImage(small, str(path))

    # organs (291) predict label 5 (liver) everywhere, the others background: all liver
    home = ts_env(tmp_path / "constant")
    results = home / "nnunet" / "results"
    tiny_nnunet.make_totalsegmentator_weights(
        results, fast=False, constant_labels={291: 5, 292: 0, 293: 0, 294: 0, 295: 0})
    seg = segment.get_segmenter("totalsegmentator", fast=False)
    labels = sitk.GetArrayFromImage(seg.segment(small))
    assert set(np.unique(labels).tolist()) == {NAME_TO_ID["liver"]}

    # ribs (295, the last part) predict label 1 (rib_left_1) everywhere: it overwrites the liver
    tiny_nnunet.make_totalsegmentator_weights(results, fast=False, constant_labels={291: 5, 295: 1})
    seg = segment.get_segmenter("totalsegmentator", fast=False)
    labels = sitk.GetArrayFromImage(seg.segment(small))
    assert set(np.unique(labels).tolist()) == {NAME_TO_ID["rib_left_1"]}

    # random part models: identical to TotalSegmentator's multi-model pipeline
    home = ts_env(tmp_path / "random")
    results = home / "nnunet" / "results"
    tiny_nnunet.make_totalsegmentator_weights(results, fast=False)
    ours = sitk.GetArrayFromImage(segment.get_segmenter("totalsegmentator", fast=False)
                                  .segment(sitk.ReadImage(str(path))))
    theirs = run_totalsegmentator_reference(path, results, [291, 292, 293, 294, 295],
                                            "nnUNetTrainerNoMirroring", 1.5, monkeypatch)
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours)) > 1


@pytest.mark.parametrize("fast, ids", [(True, "297"), (False, "291, 292, 293, 294, 295")])
def test_weights_absent_raise_before_any_scan(tmp_path, ts_env, no_network, fast, ids):
    home = ts_env(tmp_path / "empty_home")
    start = time.perf_counter()
    with pytest.raises(segment.WeightsNotFound) as err:
        segment.get_segmenter("totalsegmentator", fast=fast)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert str(home / "nnunet" / "results") in message
    assert f"missing dataset id(s) {ids}" in message
    assert "totalseg_import_weights -i <zip>" in message and "TOTALSEG_HOME_DIR" in message
    assert err.value.missing == tuple(int(i) for i in ids.split(", "))
    assert isinstance(err.value, RuntimeError)
    assert not home.exists()  # nothing created, nothing downloaded
    assert no_network == []


def test_weights_dir_option_and_incomplete_folder(tmp_path, fast_home, ts_env):
    ts_env(tmp_path / "elsewhere")
    seg = segment.TotalSegmentatorSegmenter(weights_dir=fast_home / "nnunet" / "results")
    assert seg.check()[297].name == "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
    # a model folder without its checkpoint does not count as installed
    results = tmp_path / "partial"
    folder = tiny_nnunet.make_totalsegmentator_weights(results, fast=True)[0]
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(segment.WeightsNotFound, match="297"):
        segment.TotalSegmentatorSegmenter(weights_dir=results)


def test_get_segmenter_validates_names_and_options(tmp_path):
    with pytest.raises(ValueError, match="allowed: totalsegmentator, precomputed, phantom"):
        segment.get_segmenter("nnunet")
    with pytest.raises(ValueError, match="allowed: tolerance"):
        segment.get_segmenter("precomputed", fast=True)
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda"):
        segment.get_segmenter("totalsegmentator", device="tpu", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="tolerance"):
        segment.get_segmenter("phantom", tolerance=0)
    a = segment.cached_segmenter("precomputed", tolerance=0.01)
    assert a is segment.cached_segmenter("precomputed", tolerance=0.01)
    assert a is not segment.cached_segmenter("precomputed")


# -- precomputed and phantom ----------------------------------------------------------------------
@pytest.mark.parametrize("folder, label", [
    ("abdomen-3mm-short", "seg-total.nii.gz"),
    ("abdomen-3mm-short", "seg-total-fast.nii.gz"),
    ("abdomen-3mm", "seg-total-fast.nii.gz"),
    ("chest-cta-pulmonary", "pulmonary_artery.nii.gz"),
])
def test_precomputed_real_label_maps(folder, label):
    ct = sitk.ReadImage(str(sample(f"{folder}/ct.nii.gz")))
    path = sample(f"{folder}/{label}")
    labels = segment.get_segmenter("precomputed").segment(ct, label_path=path)
    assert same_grid(labels, ct, tolerance=1e-9)
    assert labels.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def test_precomputed_rejects_other_grid():
    ct = sitk.ReadImage(str(sample("chest-cta-pulmonary/ct.nii.gz")))
    heart = sample("chest-cta-pulmonary/heart.nii.gz")  # larger grid, other origin
    with pytest.raises(ValueError) as err:
        segment.get_segmenter("precomputed").segment(ct, str(heart))
    message = str(err.value)
    assert str(heart) in message
    assert "size=(233, 167, 191)" in message and "size=(122, 102, 112)" in message


def test_precomputed_and_phantom_checks(tmp_path):
    ct = synthetic_ct()
    arr = np.zeros(sitk.GetArrayViewFromImage(ct).shape, dtype=np.uint8)
    arr[5:8, 10:20, 10:20] = NAME_TO_ID["heart"]
    good = sitk.GetImageFromArray(arr)
    good.CopyInformation(ct)
    good.SetOrigin(tuple(o + 1e-5 for o in ct.GetOrigin()))  # float noise is tolerated
    sitk.WriteImage(good, str(tmp_path / "good.nii.gz"))

    phantom = segment.get_segmenter("phantom")
    assert phantom.source == "phantom" and segment.PrecomputedSegmenter.source == "precomputed"
    labels = phantom.segment(ct, tmp_path / "good.nii.gz")
    assert labels.GetOrigin() == ct.GetOrigin()  # the CT's exact geometry
    assert presence.structure_status(labels, ["heart"]) == {"heart": "present"}

    bad = sitk.GetImageFromArray(np.where(arr > 0, 200, 0).astype(np.uint8))
    bad.CopyInformation(ct)
    sitk.WriteImage(bad, str(tmp_path / "bad.nii.gz"))
    with pytest.raises(ValueError, match=r"bad\.nii\.gz.*\[200\]"):
        phantom.segment(ct, tmp_path / "bad.nii.gz")

    shifted = sitk.Image(good)
    shifted.SetOrigin(tuple(o + 0.5 for o in ct.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(ValueError, match="shifted.nii.gz is not on the CT's grid"):
        segment.get_segmenter("precomputed").segment(ct, tmp_path / "shifted.nii.gz")
    with pytest.raises(ValueError, match="needs label_path"):
        segment.get_segmenter("precomputed").segment(ct)
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        segment.get_segmenter("precomputed").segment(ct, tmp_path / "missing.nii.gz")
