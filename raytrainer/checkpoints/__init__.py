"""Checkpoints in the HF layout (``output_dir/checkpoint-<step>/``): writing, rotation, the best
model, and resuming. See ``layout`` for the on-disk names.

The names below import their modules on first use: ``layout`` (names, listing, rotation) needs
no torch, and the command line lists a run's checkpoints without importing it."""

from .._lazy import lazy_names

_MODULE_OF = {
    name: module
    for module, names in {
        ".best": ["best_metric_name", "load_best_model", "read_metric", "update_best_metric"],
        ".layout": ["PREFIX_CHECKPOINT_DIR", "latest_complete_checkpoint", "resolve_resume_checkpoint",
                    "rotate_checkpoints", "sorted_checkpoints"],
        ".reader": ["restore_training_state", "safe_load"],
        ".weights": ["load_weights", "save_weights"],
        ".writer": ["copy_model_folder", "finalize_checkpoints", "save_checkpoint", "save_model_folder"],
    }.items()
    for name in names
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
