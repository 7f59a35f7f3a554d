"""Checkpoints in the HF layout: ``output_dir/checkpoint-<step>/``.

A checkpoint is written under a temporary name and renamed into place, so a folder called
``checkpoint-<step>`` is always complete. Tensors go through safetensors; the other files are
loaded with ``torch.load(weights_only=True)``, so loading never runs pickled code.
"""

import json
import os
import random
import re
import shutil
import warnings

import numpy as np
import torch

from .modeling import unwrap_model

PREFIX_CHECKPOINT_DIR = "checkpoint"
WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


# ---------------------------------------------------------------------- the model folder
def save_model_weights(model, folder: str, safe_serialization: bool = True) -> None:
    model = unwrap_model(model)
    os.makedirs(folder, exist_ok=True)
    if callable(getattr(model, "save_pretrained", None)):  # transformers models also write config.json
        model.save_pretrained(folder, safe_serialization=safe_serialization)
    elif safe_serialization:
        from safetensors.torch import save_model

        save_model(model, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
    else:
        torch.save(model.state_dict(), os.path.join(folder, TORCH_WEIGHTS_NAME))


def load_model_weights(model, folder: str) -> None:
    """Load weights saved by ``save_model_weights`` into ``model``; a shape or key mismatch is an
    error naming the file."""
    model = unwrap_model(model)
    safetensors_path = os.path.join(folder, WEIGHTS_NAME)
    torch_path = os.path.join(folder, TORCH_WEIGHTS_NAME)
    try:
        if os.path.exists(safetensors_path):
            from safetensors.torch import load_model

            load_model(model, safetensors_path, device=str(next(model.parameters()).device))
        elif os.path.exists(torch_path):
            model.load_state_dict(torch.load(torch_path, map_location="cpu", weights_only=True))
        else:
            raise FileNotFoundError(f"No {WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME} in checkpoint {folder}.")
    except RuntimeError as error:
        raise RuntimeError(f"Checkpoint {folder} does not match the model {type(model).__name__}: {error}") from None


def save_model_folder(trainer, output_dir: str) -> None:
    """``Trainer.save_model``: weights, processing class and ``training_args.json``."""
    save_model_weights(trainer.model, output_dir, trainer.args.save_safetensors)
    if trainer.processing_class is not None and callable(getattr(trainer.processing_class, "save_pretrained", None)):
        trainer.processing_class.save_pretrained(output_dir)
    with open(os.path.join(output_dir, TRAINING_ARGS_NAME), "w") as f:
        f.write(trainer.args.to_json_string())


# ---------------------------------------------------------------------- checkpoints
def checkpoint_root(trainer, trial=None) -> str:
    run_name = getattr(trainer, "_trial_run_name", None)
    return os.path.join(trainer.args.output_dir, run_name) if (trial is not None and run_name) else trainer.args.output_dir


def save_checkpoint(trainer, model, trial=None) -> str:
    """Write ``checkpoint-<global_step>`` atomically, record the best checkpoint, rotate old ones."""
    args, state = trainer.args, trainer.state
    root = checkpoint_root(trainer, trial)
    final = os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
    if trainer.is_world_process_zero():
        tmp = os.path.join(root, f".tmp-{PREFIX_CHECKPOINT_DIR}-{state.global_step}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model_weights(model, tmp, args.save_safetensors)
        if not args.save_only_model:
            torch.save(trainer.optimizer.state_dict(), os.path.join(tmp, OPTIMIZER_NAME))
            torch.save(trainer.lr_scheduler.state_dict(), os.path.join(tmp, SCHEDULER_NAME))
            if trainer.scaler is not None:
                torch.save(trainer.scaler.state_dict(), os.path.join(tmp, SCALER_NAME))
        _save_rng_state(tmp, args.process_index)
        _record_best_checkpoint(trainer, root)
        state.stateful_callbacks = _callback_states(trainer)
        state.save_to_json(os.path.join(tmp, TRAINER_STATE_NAME))
        with open(os.path.join(tmp, TRAINING_ARGS_NAME), "w") as f:
            f.write(args.to_json_string())
        if os.path.exists(final):  # an older run's folder of the same step: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        rotate_checkpoints(root, args.save_total_limit, state.best_model_checkpoint)
    return final


def _save_rng_state(folder: str, rank: int) -> None:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    name = "rng_state.pth" if rank == 0 else f"rng_state_{rank}.pth"
    torch.save(states, os.path.join(folder, name))


def _callback_states(trainer) -> dict:
    states = {}
    for callback in trainer.callback_handler.callbacks:
        if callable(getattr(callback, "state", None)):
            states[type(callback).__name__] = callback.state()
    return states


def sorted_checkpoints(root: str) -> list:
    """Complete checkpoint folders under ``root``, oldest step first (by step number, not mtime)."""
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(root, name)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def rotate_checkpoints(root: str, save_total_limit, best_model_checkpoint=None) -> None:
    """Keep the newest ``save_total_limit`` checkpoints, never deleting the best one."""
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = sorted_checkpoints(root)
    limit = save_total_limit
    best = os.path.abspath(best_model_checkpoint) if best_model_checkpoint else None
    if best is not None:
        paths = [os.path.abspath(p) for p in checkpoints]
        if best in paths:
            # move the best one to the "keep" end, just before the newest
            index = paths.index(best)
            checkpoints.append(checkpoints.pop(index))
            if index != len(paths) - 1:
                checkpoints[-1], checkpoints[-2] = checkpoints[-2], checkpoints[-1]
            if limit == 1 and paths[-1] != best:
                limit = 2  # keep the best and the latest, so training can still resume
    for path in checkpoints[: max(0, len(checkpoints) - limit)]:
        shutil.rmtree(path, ignore_errors=True)


def rotate_after_training(trainer) -> None:
    if trainer.is_world_process_zero() and trainer.args.save_total_limit:
        rotate_checkpoints(checkpoint_root(trainer), trainer.args.save_total_limit, trainer.state.best_model_checkpoint)


# ---------------------------------------------------------------------- best model
def read_metric(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(
            f"metric_for_best_model: the evaluation returned no metric {name!r}; available: {sorted(metrics)}. "
            "Set TrainingArguments.metric_for_best_model to one of these (with or without the 'eval_' prefix)."
        )
    return metrics[name]


def update_best_metric(trainer, metrics: dict) -> bool:
    """Compare this evaluation with the best so far; returns True for a new best."""
    args, state = trainer.args, trainer.state
    if args.metric_for_best_model is None:
        return False
    name = args.metric_for_best_model
    name = name if name.startswith("eval_") else f"eval_{name}"
    value = read_metric(metrics, name)
    greater = args.greater_is_better
    if state.best_metric is None:
        state.best_metric = float("-inf") if greater else float("inf")
    if (value > state.best_metric) if greater else (value < state.best_metric):
        state.best_metric = value
        state.best_global_step = state.global_step
        return True
    return False


def _record_best_checkpoint(trainer, root: str) -> None:
    state = trainer.state
    if trainer.args.metric_for_best_model is not None and state.best_global_step:
        candidate = os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}")
        if state.best_global_step == state.global_step or os.path.isdir(candidate):
            state.best_model_checkpoint = candidate


def load_best_model(trainer) -> None:
    path = trainer.state.best_model_checkpoint
    if not os.path.isdir(path):
        warnings.warn(f"load_best_model_at_end: the best checkpoint {path} is gone; keeping the last weights.")
        return
    load_model_weights(trainer.model, path)


# ---------------------------------------------------------------------- resume
def resolve_resume_checkpoint(output_dir: str, resume_from_checkpoint) -> str:
    """``True`` -> the latest complete checkpoint in ``output_dir``; a path -> that folder."""
    if resume_from_checkpoint is True:
        checkpoints = sorted_checkpoints(output_dir)
        if not checkpoints:
            raise ValueError(f"resume_from_checkpoint=True, but {output_dir} holds no checkpoint-<step> folder.")
        return checkpoints[-1]
    path = str(resume_from_checkpoint)
    if not os.path.isdir(path):
        raise ValueError(f"resume_from_checkpoint={path!r} is not a folder.")
    if not os.path.exists(os.path.join(path, TRAINER_STATE_NAME)):
        raise ValueError(f"resume_from_checkpoint={path!r} has no {TRAINER_STATE_NAME}; it is not a Trainer checkpoint.")
    return path


def restore_training_state(trainer, folder: str, plan):
    """Load model, optimizer, scheduler, scaler, RNG and trainer state; returns
    ``(epochs_trained, batches_to_skip_in_that_epoch)``."""
    from .state import TrainerState

    load_model_weights(trainer.model, folder)
    saved = TrainerState.load_from_json(os.path.join(folder, TRAINER_STATE_NAME))
    for name in (OPTIMIZER_NAME, SCHEDULER_NAME):
        if not os.path.exists(os.path.join(folder, name)):
            raise FileNotFoundError(f"Checkpoint {folder} has no {name} (saved with save_only_model=True?); "
                                    "it can be loaded as weights but not resumed.")
    device = trainer.args.device
    trainer.optimizer.load_state_dict(torch.load(os.path.join(folder, OPTIMIZER_NAME), map_location=device, weights_only=True))
    trainer.lr_scheduler.load_state_dict(torch.load(os.path.join(folder, SCHEDULER_NAME), weights_only=True))
    if trainer.scaler is not None and os.path.exists(os.path.join(folder, SCALER_NAME)):
        trainer.scaler.load_state_dict(torch.load(os.path.join(folder, SCALER_NAME), weights_only=True))
    state = trainer.state
    for key in ("global_step", "epoch", "log_history", "best_metric", "best_global_step",
                "best_model_checkpoint", "total_flos", "num_input_tokens_seen", "stateful_callbacks"):
        setattr(state, key, getattr(saved, key))
    _restore_rng_state(folder, trainer.args.process_index)
    if trainer.args.ignore_data_skip or plan.num_update_steps_per_epoch is None:
        return (0 if plan.num_update_steps_per_epoch is None else state.global_step // plan.num_update_steps_per_epoch), 0
    epochs_trained, steps_in_epoch = divmod(state.global_step, plan.num_update_steps_per_epoch)
    return epochs_trained, steps_in_epoch * trainer.args.gradient_accumulation_steps


def _restore_rng_state(folder: str, rank: int) -> None:
    name = "rng_state.pth" if rank == 0 else f"rng_state_{rank}.pth"
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        warnings.warn(f"Checkpoint {folder} has no {name}; the resumed run's randomness will differ.")
        return
    with torch.serialization.safe_globals(_numpy_rng_globals()):
        states = torch.load(path, weights_only=True)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if torch.cuda.is_available() and "cuda" in states:
        torch.cuda.random.set_rng_state_all(states["cuda"])


def _numpy_rng_globals() -> list:
    """The numpy types inside ``np.random.get_state()``, allowed for weights-only loading."""
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np.core.multiarray._reconstruct]


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
