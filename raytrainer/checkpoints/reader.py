"""Resuming: load everything a checkpoint holds back into the trainer, safely.

Every ``torch.load`` is ``weights_only=True``: a checkpoint file that carries pickled code is
refused with an error naming the file, never executed."""

import os
import pickle
import random
import warnings

import numpy as np
import torch

from ..run_summary import warn_if_arguments_differ
from ..state import TrainerState
from .callback_states import restore_callback_states
from .layout import SCALER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from .writer import rng_state_name

_RESTORED_STATE_FIELDS = ("global_step", "epoch", "log_history", "best_metric", "best_global_step",
                          "best_model_checkpoint", "total_flos", "num_input_tokens_seen", "stateful_callbacks")


def safe_load(path: str, map_location=None, allowed_globals=()):
    """``torch.load(weights_only=True)`` with errors that name the file. ``allowed_globals``: plain
    data classes the file's writer pickles (besides numpy's RNG state types), allowed by name."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file {path} is missing.")
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals() + list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f"Refusing to load {path}: it contains objects other than tensors and plain data, and loading "
            f"them could run code ({str(error).splitlines()[0]})."
        ) from None


def _numpy_rng_globals() -> list:
    """The numpy types inside ``np.random.get_state()``, allowed for weights-only loading."""
    from numpy.core.multiarray import _reconstruct

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct]


def restore_training_state(trainer, folder: str, plan, strategy):
    """Load model, optimizer (through the run's parallel ``strategy``), scheduler, scaler, RNG and
    trainer state from ``folder``; returns ``(epochs_trained, batches_to_skip_in_that_epoch)``."""
    args = trainer.args
    if not os.path.exists(os.path.join(folder, SCHEDULER_NAME)):
        raise FileNotFoundError(f"Checkpoint {folder} has no {SCHEDULER_NAME} (saved with save_only_model=True?): "
                                "its weights can be loaded into a model, but training cannot resume from it.")
    strategy.load_checkpoint(trainer, folder)
    trainer.lr_scheduler.load_state_dict(safe_load(os.path.join(folder, SCHEDULER_NAME)))
    if trainer.scaler is not None and os.path.exists(os.path.join(folder, SCALER_NAME)):
        trainer.scaler.load_state_dict(safe_load(os.path.join(folder, SCALER_NAME)))
    saved = TrainerState.load_from_json(os.path.join(folder, TRAINER_STATE_NAME))
    warn_if_arguments_differ(trainer.state, saved, folder)
    for field in _RESTORED_STATE_FIELDS:
        setattr(trainer.state, field, getattr(saved, field))
    if args.restore_callback_states_from_checkpoint:
        restore_callback_states(trainer, saved.stateful_callbacks or {})
    _restore_rng_state(folder, args.process_index)
    return _data_position(trainer, plan)


def _data_position(trainer, plan):
    steps_per_epoch = plan.num_update_steps_per_epoch
    global_step = trainer.state.global_step
    if steps_per_epoch is None:
        return 0, 0
    epochs_trained, steps_in_epoch = divmod(global_step, steps_per_epoch)
    if trainer.args.ignore_data_skip:
        return epochs_trained, 0
    return epochs_trained, steps_in_epoch * trainer.args.gradient_accumulation_steps


def _restore_rng_state(folder: str, rank: int) -> None:
    path = os.path.join(folder, rng_state_name(rank))
    if not os.path.exists(path):
        warnings.warn(f"Checkpoint {folder} has no {rng_state_name(rank)}; the resumed run's randomness will differ "
                      "from an uninterrupted one.")
        return
    states = safe_load(path)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if torch.cuda.is_available() and "cuda" in states:
        torch.cuda.random.set_rng_state_all(states["cuda"])
