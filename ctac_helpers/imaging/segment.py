"""Segmentation backends: TotalSegmentator's models, precomputed label maps and the phantoms' ground truth.

One entry point, :func:`get_segmenter` (or :func:`cached_segmenter` inside workers), returns a
backend whose ``segment(ct, label_path=None)`` gives ONE multilabel :class:`SimpleITK.Image` on the
CT's grid, in TotalSegmentator v2 ``total`` class ids (``ctac_helpers.core.manifest.class_map()``):

``totalsegmentator``
    :class:`TotalSegmentatorSegmenter` runs TotalSegmentator's nnU-Net models through nnU-Net's
    predictor, loaded once per segmenter object. It never downloads anything and never sends
    usage statistics; missing weights raise :class:`WeightsNotFound` when the segmenter is built.
``precomputed``
    :class:`PrecomputedSegmenter` reads an existing label map (``label_path``) and checks that it
    lies on the CT's grid and holds valid class ids.
``phantom``
    :class:`PhantomSegmenter`: the ground-truth label map written by the digital phantom, read like
    ``precomputed`` but recorded as its own source.

What the label maps hold (which structures are present, cut or absent, and how often) is
:mod:`ctac_helpers.imaging.presence`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import io
import json
import logging
import sys
import threading
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import SimpleITK as sitk

from ctac_helpers.core import manifest
from ctac_helpers.imaging.grid import grid_description, same_grid

log = logging.getLogger(__name__)

SEGMENTERS = ("totalsegmentator", "precomputed", "phantom")
DEVICES = ("auto", "cpu", "cuda", "cuda:<index>")
TASK = "total"  # the TotalSegmentator task whose classes the paper uses
# What TotalSegmentator passes to nnU-Net for its "total" family (nnunet.py: step_size 0.8 for
# total/total_v3/total_mr; python_api: tta=False, plans "nnUNetPlans", resampling_order=1).
TS_STEP_SIZE = 0.8
TS_PLANS = "nnUNetPlans"
TS_RESAMPLING_ORDER = 1
CHECKPOINT = "checkpoint_final.pth"

# Trainer modules tried before nnU-Net's own search. nnU-Net imports every trainer module until it
# finds the class; some of them (primus) pull in timm -> torchvision, which need not import.
_TRAINER_MODULES = (
    "nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring",
    "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring",
    "nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs",
    "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
)


class WeightsNotFound(RuntimeError):
    """TotalSegmentator's model weights are not installed where they are looked for.

    Attributes
    ----------
    weights_dir : Path
        The folder searched (TotalSegmentator's ``get_weights_dir()`` unless overridden).
    missing : tuple[int, ...]
        The nnU-Net dataset ids whose trained-model folders are absent.
    """

    def __init__(self, message: str, weights_dir: Path, missing: tuple[int, ...]):
        super().__init__(message)
        self.weights_dir = weights_dir
        self.missing = missing


# -- TotalSegmentator configuration as data -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One nnU-Net model of a TotalSegmentator task, as TotalSegmentator's tables describe it.

    Attributes
    ----------
    dataset_id : int
        nnU-Net dataset id (297 for ``total --fast``, 291-295 for the five parts of ``total``).
    folder : str
        The dataset folder name under the weights folder (``Dataset297_TotalSegmentator_...``).
    trainer, plans, configuration : str
        Name parts of the trained-model folder ``<trainer>__<plans>__<configuration>``.
    folds : tuple[int, ...]
        Folds used at inference.
    spacing : float
        Isotropic spacing (mm) the CT is resampled to before inference.
    label_map : tuple[tuple[int, str], ...]
        The model's label ids -> TotalSegmentator structure names.
    download : str | None
        Where TotalSegmentator downloads the zip from (for the offline-install hint).
    """

    dataset_id: int
    folder: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple[int, ...]
    spacing: float
    label_map: tuple[tuple[int, str], ...]
    download: str | None = None

    @property
    def model_dir_name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"


def totalsegmentator_models(fast: bool = True) -> tuple[ModelSpec, ...]:
    """The nnU-Net models TotalSegmentator runs for the ``total`` task.

    Read from the installed TotalSegmentator (``map_tasks_config.TASK_CONFIGS`` and
    ``TASK_ID_WEIGHTS_CONFIGS``, ``map_to_binary``), so the ids follow the installed version:
    for 2.18.0, ``fast=True`` is dataset 297 (3 mm, all 117 classes) and ``fast=False`` the five
    part models 291-295 (1.5 mm), whose labels map to ``total`` ids through ``class_map_5_parts``.
    """
    from totalsegmentator.map_tasks_config import (DEFAULT_CONFIG, TASK_CONFIGS,
                                                   TASK_ID_WEIGHTS_CONFIGS)
    from totalsegmentator.map_to_binary import (class_map, class_map_5_parts,
                                                map_taskid_to_partname_ct)

    mode = dict(DEFAULT_CONFIG, **TASK_CONFIGS[TASK]["sub_modes"]["fast" if fast else "default"])
    task_ids = mode["task_id"] if isinstance(mode["task_id"], list) else [mode["task_id"]]
    specs = []
    for tid in task_ids:
        weights = TASK_ID_WEIGHTS_CONFIGS[tid]
        folder = weights["foldername"]
        if weights.get("rel_path"):
            folder = str(Path(weights["rel_path"]) / folder)
        # A single model predicts total ids directly; part models have their own ids
        # (nnunet.py: multimodel branch with class_map_parts[map_taskid_to_partname[tid]]).
        labels = (class_map[TASK] if len(task_ids) == 1
                  else class_map_5_parts[map_taskid_to_partname_ct[tid]])
        download = None
        if weights.get("version") and not weights.get("commercial"):
            download = ("https://github.com/wasserth/TotalSegmentator/releases/download/"
                        f"{weights['version']}/{weights['foldername']}.zip")
        specs.append(ModelSpec(
            dataset_id=int(tid), folder=folder, trainer=mode["trainer"],
            plans=mode.get("plans") or TS_PLANS, configuration=mode["model"],
            folds=tuple(int(f) for f in mode["folds"]), spacing=float(mode["resample"]),
            label_map=tuple(sorted((int(k), v) for k, v in labels.items())), download=download))
    return tuple(specs)


def find_model_folder(weights_dir: str | Path, spec: ModelSpec) -> Path | None:
    """The trained-model folder of ``spec`` under ``weights_dir``, or None when incomplete.

    TotalSegmentator looks for ``<weights_dir>/<spec.folder>``; a folder of another name starting
    with ``Dataset<id>_`` (nnU-Net's own rule) is accepted when it is the only one. The folder must
    hold ``dataset.json``, ``plans.json`` and ``fold_<f>/checkpoint_final.pth`` for every fold.
    """
    weights_dir = Path(weights_dir)
    candidates = [weights_dir / spec.folder]
    if not candidates[0].is_dir() and weights_dir.is_dir():
        candidates = sorted(weights_dir.glob(f"Dataset{spec.dataset_id:03d}_*"))
        if len(candidates) > 1:
            log.warning("several folders for dataset %d in %s: %s; none used", spec.dataset_id,
                        weights_dir, [c.name for c in candidates])
            return None
    for dataset_dir in candidates:
        model_dir = dataset_dir / spec.model_dir_name
        needed = [model_dir / "dataset.json", model_dir / "plans.json"]
        needed += [model_dir / f"fold_{f}" / CHECKPOINT for f in spec.folds]
        if all(p.is_file() for p in needed):
            return model_dir
    return None


def usage_stats_setting() -> tuple[Path, bool | None]:
    """Where TotalSegmentator keeps its ``send_usage_stats`` switch, and its value (None: unset).

    TotalSegmentator has no environment variable for this: its own entry points
    (``totalsegmentator()`` in python_api and several ``totalseg_*`` commands) post statistics when
    ``<TOTALSEG_HOME_DIR or ~/.totalsegmentator>/config.json`` has ``"send_usage_stats": true``,
    which ``setup_totalseg()`` writes on first use. Read only; nothing is written.
    """
    from totalsegmentator.config import get_totalseg_dir

    path = get_totalseg_dir() / "config.json"
    try:
        value = json.loads(path.read_text()).get("send_usage_stats")
    except (OSError, ValueError):
        value = None
    return path, value


def _no_usage_stats(*args, **kwargs) -> None:
    log.debug("TotalSegmentator usage statistics suppressed")


def disable_usage_stats() -> None:
    """Turn TotalSegmentator's usage statistics off for this process, without writing any file.

    The adapter never calls the TotalSegmentator functions that send statistics (python_api's
    ``totalsegmentator()``, ``setup_totalseg()``, ``download_pretrained_weights()``); in addition,
    ``totalsegmentator.config.send_usage_stats`` and ``send_usage_stats_application`` (and the
    copies already imported by other TotalSegmentator modules) are replaced with no-ops, so that
    nothing else in this process sends them either. The switch in TotalSegmentator's
    ``config.json`` is left alone (see :func:`usage_stats_setting`).
    """
    import totalsegmentator.config as ts_config

    for module in [ts_config] + [m for name, m in list(sys.modules.items())
                                 if name.startswith("totalsegmentator") and m is not None]:
        for attr in ("send_usage_stats", "send_usage_stats_application"):
            if getattr(module, attr, None) not in (None, _no_usage_stats):
                setattr(module, attr, _no_usage_stats)


# -- image helpers --------------------------------------------------------------------------------
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _to_nifti(img: sitk.Image):
    """The SimpleITK image as the nibabel image TotalSegmentator builds from the same file.

    TotalSegmentator copies the input as ``Nifti1Image(img.get_fdata(), img.affine)``: float64 data
    in (x, y, z) order and a RAS affine; SimpleITK works in LPS with (z, y, x) arrays.
    """
    import nibabel as nib

    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(img.GetOrigin(), dtype=float)
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float64)
    return nib.Nifti1Image(data, affine)


def _check_volume(ct: sitk.Image) -> None:
    if not isinstance(ct, sitk.Image):
        raise TypeError(f"ct must be a SimpleITK.Image, got {type(ct).__name__}")
    if ct.GetDimension() != 3 or ct.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"ct must be a 3-D scalar image, got dimension {ct.GetDimension()} with "
                         f"{ct.GetNumberOfComponentsPerPixel()} component(s)")


@functools.lru_cache(maxsize=None)
def _valid_ids() -> frozenset[int]:
    return frozenset(manifest.class_map())


def _label_dtype(max_id: int):
    return np.uint8 if max_id <= np.iinfo(np.uint8).max else np.uint16


# -- backends -------------------------------------------------------------------------------------
class TotalSegmentatorSegmenter:
    """TotalSegmentator's ``total`` task, run with its own weights through nnU-Net's predictor.

    Parameters
    ----------
    fast : bool
        ``total --fast`` (one 3 mm model, dataset 297; the default, fit for CPUs) or the full
        ``total`` task (five 1.5 mm part models, datasets 291-295).
    device : str
        ``"auto"`` (CUDA when ``torch.cuda.is_available()``, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:<index>"``.
    weights_dir : str or Path, optional
        nnU-Net results folder holding the ``Dataset<id>_...`` folders. Default: TotalSegmentator's
        ``get_weights_dir()``, i.e. ``$TOTALSEG_WEIGHTS_PATH`` or
        ``$TOTALSEG_HOME_DIR/nnunet/results`` (``~/.totalsegmentator/nnunet/results``).

    Raises
    ------
    WeightsNotFound
        At construction (see :meth:`check`), before any scan is read, when a model folder is
        missing. Nothing is ever downloaded.

    Notes
    -----
    Per scan, the steps of TotalSegmentator 2.18's ``nnUNet_predict_image`` for ``total`` are
    followed: the CT as float64 (x, y, z) data with its RAS affine, ``as_closest_canonical``,
    ``change_spacing`` to the model spacing (order 1, cast to int32), nnU-Net prediction (step size
    0.8, Gaussian weighting, no mirroring), part labels mapped to ``total`` ids and combined in part
    order (a later part overwrites an earlier one where both are non-zero), ``change_spacing`` back
    with order 0 (nearest neighbour) to the canonical shape and affine, ``undo_canonical``.
    TotalSegmentator's own resampling, alignment and tables are used for these steps.

    Differences: the models are loaded once per segmenter and reused (TotalSegmentator reloads them
    on every call); the image goes to nnU-Net in memory (``predict_single_npy_array``) instead of
    through a temporary NIfTI file, which yields the same array and spacing; the optional
    3-way split of very large 1.5 mm volumes (>512x512x900 voxels, a memory measure) is not done;
    TotalSegmentator's side effects are left out (config.json, prediction counter, usage
    statistics, downloads, torch thread settings, and the ``nnUNet_*`` environment variables of
    ``setup_nnunet()``, not needed because model folders are passed to nnU-Net directly).
    """

    source = "totalsegmentator"

    def __init__(self, fast: bool = True, device: str = "auto",
                 weights_dir: str | Path | None = None):
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        self.device_name = _validate_device(device)
        disable_usage_stats()  # before anything of TotalSegmentator's runs
        import torch
        from totalsegmentator.config import get_weights_dir

        if self.device_name.startswith("cuda") and not torch.cuda.is_available():
            # TotalSegmentator silently falls back to the CPU; an explicit request should not
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device; "
                             f"allowed here: auto, cpu")
        path, send = usage_stats_setting()
        if send:
            log.info("usage statistics stay off in this process; TotalSegmentator's own commands "
                     "would send them (send_usage_stats is true in %s)", path)

        self.fast = fast
        self.weights_dir = Path(weights_dir) if weights_dir is not None else Path(get_weights_dir())
        self.models = totalsegmentator_models(fast)
        self.model_folders = self.check()
        self.n_model_loads = 0
        self._predictors: dict[int, object] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"TotalSegmentatorSegmenter(fast={self.fast}, device={self.device_name!r}, "
                f"weights_dir={str(self.weights_dir)!r})")

    # pickling (Dask) ships the configuration, not the loaded networks
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_predictors"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def check(self) -> dict[int, Path]:
        """Find every model folder; raise :class:`WeightsNotFound` naming what is missing.

        Only the file system is consulted (no network, no download).
        """
        found, missing = {}, []
        for spec in self.models:
            folder = find_model_folder(self.weights_dir, spec)
            if folder is None:
                missing.append(spec)
            else:
                found[spec.dataset_id] = folder
        if missing:
            ids = tuple(s.dataset_id for s in missing)
            task = "total --fast" if self.fast else "total"
            lines = [
                f"TotalSegmentator weights for task {task!r} not found in {self.weights_dir}: "
                f"missing dataset id(s) {', '.join(map(str, ids))}.",
                "Expected, for each id, <weights_dir>/<dataset folder>/"
                "<trainer>__<plans>__<config>/{dataset.json, plans.json, "
                "fold_0/checkpoint_final.pth}:",
            ]
            lines += [f"  {self.weights_dir / s.folder / s.model_dir_name}" for s in missing]
            lines += [
                "Install them offline (this adapter never downloads):",
                "  * on a machine with internet, run `totalseg_download_weights -t "
                f"{'total_fast' if self.fast else 'total'}` (or fetch the zip files below), then",
                "  * `totalseg_import_weights -i <zip>` for each zip (extracts into "
                "TotalSegmentator's weights folder), or copy the Dataset<id>_* folders of "
                "~/.totalsegmentator/nnunet/results into the folder above, or point "
                "TOTALSEG_HOME_DIR (weights in $TOTALSEG_HOME_DIR/nnunet/results) or "
                "TOTALSEG_WEIGHTS_PATH at a folder that has them, or pass weights_dir=.",
            ]
            lines += [f"  zip for {s.dataset_id}: {s.download}" for s in missing if s.download]
            raise WeightsNotFound("\n".join(lines), self.weights_dir, ids)
        return found

    @property
    def device(self):
        import torch

        name = self.device_name
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)

    def load(self) -> dict[int, object]:
        """Build one ``nnUNetPredictor`` per model folder, once per segmenter object."""
        with self._lock:
            if self._predictors is None:
                self._predictors = {spec.dataset_id: self._load_one(spec) for spec in self.models}
                self.n_model_loads += 1
            return self._predictors

    def _load_one(self, spec: ModelSpec):
        import torch
        from nnunetv2.inference import predict_from_raw_data as nnunet_predict
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        device = self.device
        folder = self.model_folders[spec.dataset_id]
        log.info("loading TotalSegmentator model %d from %s on %s", spec.dataset_id, folder, device)
        original_finder = nnunet_predict.recursive_find_trainer_class_by_name

        def find_trainer(name: str):
            for module in _TRAINER_MODULES:
                with contextlib.suppress(ImportError):
                    cls = getattr(importlib.import_module(module), name, None)
                    if cls is not None:
                        return cls
            return original_finder(name)

        captured = io.StringIO()  # nnU-Net prints; route it to the log instead
        nnunet_predict.recursive_find_trainer_class_by_name = find_trainer
        try:
            with contextlib.redirect_stdout(captured), warnings.catch_warnings():
                # TotalSegmentator's v2 weights use nnU-Net's old plans format; nnU-Net converts
                # them and warns each time (TotalSegmentator silences the same warning)
                warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
                predictor = nnUNetPredictor(
                    tile_step_size=TS_STEP_SIZE, use_gaussian=True, use_mirroring=False,
                    perform_everything_on_device=device.type == "cuda", device=device,
                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
                predictor.initialize_from_trained_model_folder(str(folder), use_folds=spec.folds,
                                                               checkpoint_name=CHECKPOINT)
        finally:
            nnunet_predict.recursive_find_trainer_class_by_name = original_finder
        if captured.getvalue().strip():
            log.debug("nnU-Net: %s", captured.getvalue().strip())
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model_labels = {v: k for k, v in predictor.dataset_json["labels"].items()
                        if isinstance(v, int)}
        expected = dict(spec.label_map)
        if any(model_labels.get(i) != name for i, name in expected.items()):
            log.warning("labels of %s differ from TotalSegmentator's class map; using "
                        "TotalSegmentator's map as TotalSegmentator does", folder)
        return predictor

    def _lookup(self, spec: ModelSpec) -> np.ndarray:
        """Model label id -> ``total`` class id (0 for anything unknown)."""
        ids = {name: i for i, name in manifest.class_map().items()}
        lut = np.zeros(max(i for i, _ in spec.label_map) + 1, dtype=np.uint8)
        for i, name in spec.label_map:
            lut[i] = ids[name]
        return lut

    def segment(self, ct: sitk.Image, label_path: str | Path | None = None) -> sitk.Image:
        """Segment one CT; ``label_path`` is ignored (accepted for a common signature).

        Returns
        -------
        SimpleITK.Image
            uint8 label map on the CT's grid in TotalSegmentator v2 ``total`` class ids.
        """
        import nibabel as nib
        from totalsegmentator.alignment import as_closest_canonical, undo_canonical
        from totalsegmentator.resampling import change_spacing

        _check_volume(ct)
        predictors = self.load()
        use_gpu = self.device.type == "cuda"
        img_in_orig = _to_nifti(ct)
        img_in = as_closest_canonical(img_in_orig)
        spacing = sorted({spec.spacing for spec in self.models})
        if len(spacing) != 1:
            raise RuntimeError(f"models of one task with several spacings: {spacing}")
        resample = [spacing[0]] * 3
        img_in_rsp = change_spacing(img_in, resample, order=TS_RESAMPLING_ORDER, dtype=np.int32,
                                    nr_cpus=1, use_gpu=use_gpu)
        # nnU-Net's image readers give (c, z, y, x) arrays with (z, y, x) spacing
        data = np.asanyarray(img_in_rsp.dataobj).astype(np.float32).transpose(2, 1, 0)[None]
        zooms = [float(z) for z in img_in_rsp.header.get_zooms()[:3]][::-1]

        combined = np.zeros(img_in_rsp.shape, dtype=np.uint8)
        for spec in self.models:
            with self._lock:  # one prediction at a time per loaded network
                seg = predictors[spec.dataset_id].predict_single_npy_array(
                    data.copy(), {"spacing": list(zooms)}, None, None, False)
            seg = np.asarray(seg).transpose(2, 1, 0)
            lut = self._lookup(spec)
            if seg.size and seg.max() >= len(lut):
                lut = np.pad(lut, (0, int(seg.max()) + 1 - len(lut)))
            mapped = lut[seg]
            np.copyto(combined, mapped, where=mapped != 0)

        img_pred = nib.Nifti1Image(combined, img_in_rsp.affine)
        img_pred = change_spacing(img_pred, resample, img_in.shape, order=0, dtype=np.uint8,
                                  nr_cpus=1, force_affine=img_in.affine, use_gpu=use_gpu)
        img_pred = undo_canonical(img_pred, img_in_orig)
        labels = np.asanyarray(img_pred.dataobj).astype(np.uint8)
        if labels.shape != tuple(ct.GetSize()):
            raise RuntimeError(f"prediction shape {labels.shape} differs from the CT's "
                               f"{ct.GetSize()}")
        out = sitk.GetImageFromArray(labels.transpose(2, 1, 0))
        out.CopyInformation(ct)
        return out


def _validate_device(device: str) -> str:
    if isinstance(device, str):
        if device in ("auto", "cpu", "cuda"):
            return device
        if device.startswith("cuda:") and device[5:].isdigit():
            return device
    raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")


class PrecomputedSegmenter:
    """A label map computed beforehand (for example by TotalSegmentator's command line).

    Parameters
    ----------
    tolerance : float
        Largest difference allowed between the label map's and the CT's spacing and origin (mm)
        and direction cosines. The returned image carries the CT's exact geometry.
    """

    source = "precomputed"

    def __init__(self, tolerance: float = 1e-3):
        if not (isinstance(tolerance, (int, float)) and tolerance > 0):
            raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
        self.tolerance = float(tolerance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tolerance={self.tolerance})"

    def segment(self, ct: sitk.Image, label_path: str | Path | None = None) -> sitk.Image:
        """Read ``label_path`` and check it against the CT.

        Raises
        ------
        ValueError
            No ``label_path``; the label map is not on the CT's grid (the message names the file and
            both grids); it is not a scalar integer image; or it holds values that are not
            TotalSegmentator v2 ``total`` class ids.
        FileNotFoundError
            The file does not exist.
        """
        _check_volume(ct)
        if label_path is None:
            raise ValueError(f"the {self.source!r} segmenter needs label_path (a label map file)")
        path = Path(label_path)
        if not path.is_file():
            raise FileNotFoundError(f"{self.source} label map {path} does not exist")
        labels = sitk.ReadImage(str(path))
        if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"label map {path} must be a 3-D scalar image")
        if not same_grid(labels, ct, self.tolerance):
            raise ValueError(f"label map {path} is not on the CT's grid (tolerance "
                             f"{self.tolerance}):\n  labels: {grid_description(labels)}"
                             f"\n  CT:     {grid_description(ct)}")
        arr = sitk.GetArrayFromImage(labels)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"label map {path} holds non-integer values ({arr.dtype})")
        values = np.unique(arr)
        invalid = [v for v in values.tolist() if v != 0 and int(v) not in _valid_ids()]
        if invalid:
            raise ValueError(f"label map {path} holds values that are not TotalSegmentator v2 "
                             f"'{TASK}' class ids ({min(_valid_ids())}-{max(_valid_ids())}, 0 = "
                             f"background): {invalid[:10]}{' ...' if len(invalid) > 10 else ''}")
        out = sitk.GetImageFromArray(arr.astype(_label_dtype(max(_valid_ids()))))
        out.CopyInformation(ct)
        return out


class PhantomSegmenter(PrecomputedSegmenter):
    """The ground-truth label map of a digital phantom (a file, read like ``precomputed``)."""

    source = "phantom"


_BACKENDS = {
    "totalsegmentator": TotalSegmentatorSegmenter,
    "precomputed": PrecomputedSegmenter,
    "phantom": PhantomSegmenter,
}


def _options(name: str, options: Mapping) -> dict:
    """``options`` checked against backend ``name`` and completed with its defaults."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown segmenter {name!r}; allowed: {', '.join(SEGMENTERS)}")
    params = {k: p for k, p in inspect.signature(_BACKENDS[name].__init__).parameters.items()
              if k != "self"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for segmenter {name!r}; "
                         f"allowed: {', '.join(params) or 'none'}")
    return {k: options.get(k, p.default) for k, p in params.items()}


def get_segmenter(name: str, **options):
    """The segmentation backend ``name`` built with ``options``.

    Parameters
    ----------
    name : str
        One of ``SEGMENTERS``: ``"totalsegmentator"`` (options ``fast``, ``device``,
        ``weights_dir``), ``"precomputed"`` or ``"phantom"`` (option ``tolerance``).

    Raises
    ------
    ValueError
        Unknown name or option (the message lists the allowed ones).
    WeightsNotFound
        ``"totalsegmentator"`` without its weights installed.
    """
    options = _options(name, options)
    return _BACKENDS[name](**options)


def _freeze(value):
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return value


@functools.lru_cache(maxsize=None)
def _cached(name: str, key: tuple):
    return get_segmenter(name, **{k: v for k, v in key})


def cached_segmenter(name: str, **options):
    """Like :func:`get_segmenter`, but one instance per process for the same effective options.

    A Dask worker calling this for every scan builds (and loads the model of) the segmenter once.
    Options are completed with their defaults before lookup, and for ``"totalsegmentator"`` the
    weights folder is resolved, so a changed ``TOTALSEG_HOME_DIR`` gives a new instance. A failed
    construction is not cached.
    """
    options = _options(name, options)
    if name == "totalsegmentator" and options.get("weights_dir") is None:
        from totalsegmentator.config import get_weights_dir

        options["weights_dir"] = get_weights_dir()
    return _cached(name, _freeze(options))


cached_segmenter.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]


__all__ = [
    "SEGMENTERS", "DEVICES", "WeightsNotFound", "ModelSpec", "totalsegmentator_models",
    "find_model_folder", "usage_stats_setting", "disable_usage_stats",
    "TotalSegmentatorSegmenter", "PrecomputedSegmenter", "PhantomSegmenter",
    "get_segmenter", "cached_segmenter",
]
