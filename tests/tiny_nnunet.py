"""Build tiny but valid nnU-Net v2 trained-model folders laid out like TotalSegmentator's weights.

TotalSegmentator's weights cannot be downloaded on the test machines, so the adapter in
:mod:`ctac_helpers.imaging.segment` is tested on stand-in models with the same folder layout, the same
dataset ids, trainers and label sets as the real ones, but a network with a few thousand random
weights::

    <TOTALSEG_HOME_DIR>/nnunet/results/
        Dataset297_TotalSegmentator_total_3mm_1559subj/
            nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres/
                dataset.json
                plans.json
                fold_0/checkpoint_final.pth

The files follow what nnU-Net itself reads at inference
(``nnUNetPredictor.initialize_from_trained_model_folder``) and writes at training
(``nnUNetTrainer.save_checkpoint``). ``plans.json`` uses the pre-2.3 plans format
(``UNet_class_name``, ``n_conv_per_stage_encoder``, ...) that TotalSegmentator's v2 weights were
trained with; nnU-Net converts it on load, so the conversion path is exercised too.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"


def _plans(dataset_name: str, spacing: float) -> dict:
    """A tiny 3d_fullres configuration: 3 stages of 4-16 features on a 16x32x32 patch."""
    return {
        "dataset_name": dataset_name,
        "plans_name": PLANS,
        "original_median_spacing_after_transp": [spacing] * 3,
        "original_median_shape_after_transp": [100, 100, 100],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": f"{PLANS}_{CONFIGURATION}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [16, 32, 32],
                "median_image_size_in_voxels": [100, 100, 100],
                "spacing": [spacing] * 3,
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "UNet_class_name": "PlainConvUNet",
                "UNet_base_num_features": 4,
                "n_conv_per_stage_encoder": [1, 1, 1],
                "n_conv_per_stage_decoder": [1, 1],
                "num_pool_per_axis": [2, 2, 2],
                "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                "conv_kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
                "unet_max_num_features": 16,
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                              "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                             "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None},
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3000.0, "mean": 100.0, "median": 60.0, "min": -1024.0,
                  "percentile_00_5": -1000.0, "percentile_99_5": 1500.0, "std": 300.0}
        },
    }


def make_model_folder(results_dir: Path, dataset_folder: str, trainer: str,
                      labels: dict[int, str], spacing: float, *, constant_label: int | None = None,
                      seed: int = 0) -> Path:
    """Write one trained-model folder and return its path.

    Parameters
    ----------
    results_dir : Path
        The nnU-Net results folder (TotalSegmentator's ``get_weights_dir()``).
    dataset_folder : str
        ``DatasetXXX_name`` as TotalSegmentator names it.
    trainer : str
        The trainer class name recorded in the checkpoint and in the folder name.
    labels : dict[int, str]
        The model's label ids -> names (background is added).
    spacing : float
        The configuration's isotropic target spacing in mm.
    constant_label : int, optional
        When given, the last segmentation layer is set so that the network predicts this label
        everywhere (lets a test check how predictions are mapped and combined); otherwise all
        weights are random.
    seed : int
        Seed of the random weights.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    plans = _plans(dataset_folder, spacing)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: int(i) for i, name in sorted(labels.items())}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
        "name": dataset_folder,
    }
    folder = Path(results_dir) / dataset_folder / f"{trainer}__{PLANS}__{CONFIGURATION}"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))

    # Build the network exactly as the trainer does (deep supervision on, as during training),
    # from the converted architecture of the old-format plans.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
        cm = ConfigurationManager(copy.deepcopy(plans["configurations"][CONFIGURATION]))
    torch.manual_seed(seed)
    network = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, 1,
                                     len(dataset_json["labels"]), allow_init=True,
                                     deep_supervision=True)
    state = network.state_dict()
    if constant_label is not None:
        last = max(int(k.split(".")[2]) for k in state if k.startswith("decoder.seg_layers."))
        w, b = f"decoder.seg_layers.{last}.weight", f"decoder.seg_layers.{last}.bias"
        state[w] = torch.zeros_like(state[w])
        state[b] = torch.zeros_like(state[b])
        state[b][constant_label] = 10.0

    checkpoint = {
        "network_weights": state,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": 0,
                      "dataset_json": dataset_json, "device": torch.device("cpu")},
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": None,  # the NoMirroring trainers set None
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def make_totalsegmentator_weights(results_dir: Path, fast: bool = True, *,
                                  constant_labels: dict[int, int] | None = None) -> list[Path]:
    """Write stand-in weights for TotalSegmentator's ``total`` task.

    Dataset ids, folder names, trainers and spacings are read from the installed
    TotalSegmentator (``map_tasks_config``), label sets from ``map_to_binary``: the fast model
    (297) predicts the 117 ``total`` classes at 3 mm; the full task's five part models (291-295)
    each predict their part's classes at 1.5 mm.

    Parameters
    ----------
    results_dir : Path
        Folder to write into (TotalSegmentator's ``get_weights_dir()``).
    fast : bool
        Write the fast model (True) or the five part models (False).
    constant_labels : dict[int, int], optional
        Dataset id -> label that model predicts everywhere (see :func:`make_model_folder`).
    """
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.map_to_binary import (class_map, class_map_5_parts,
                                                map_taskid_to_partname_ct)

    mode = TASK_CONFIGS["total"]["sub_modes"]["fast" if fast else "default"]
    task_ids = mode["task_id"] if isinstance(mode["task_id"], list) else [mode["task_id"]]
    constant_labels = constant_labels or {}
    folders = []
    for tid in task_ids:
        labels = (class_map["total"] if len(task_ids) == 1
                  else class_map_5_parts[map_taskid_to_partname_ct[tid]])
        folders.append(make_model_folder(results_dir, TASK_ID_WEIGHTS_CONFIGS[tid]["foldername"],
                                         mode["trainer"], labels, float(mode["resample"]),
                                         constant_label=constant_labels.get(tid), seed=tid))
    return folders
