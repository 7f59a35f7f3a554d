"""Checkpoints in the HF layout (``output_dir/checkpoint-<step>/``): writing, rotation, the best
model, and resuming. See ``layout`` for the on-disk names."""

from .best import best_metric_name, load_best_model, read_metric, update_best_metric
from .layout import (
    PREFIX_CHECKPOINT_DIR,
    latest_complete_checkpoint,
    resolve_resume_checkpoint,
    rotate_checkpoints,
    sorted_checkpoints,
)
from .reader import restore_training_state, safe_load
from .weights import load_weights, save_weights
from .writer import copy_model_folder, finalize_checkpoints, save_checkpoint, save_model_folder

__all__ = [
    "PREFIX_CHECKPOINT_DIR",
    "copy_model_folder",
    "best_metric_name",
    "finalize_checkpoints",
    "latest_complete_checkpoint",
    "load_best_model",
    "load_weights",
    "read_metric",
    "resolve_resume_checkpoint",
    "restore_training_state",
    "rotate_checkpoints",
    "safe_load",
    "save_checkpoint",
    "save_model_folder",
    "save_weights",
    "sorted_checkpoints",
    "update_best_metric",
]
