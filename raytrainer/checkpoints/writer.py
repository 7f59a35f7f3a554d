"""Writing a checkpoint: everything a resume needs, in HF's layout, renamed into place at the end."""

import os
import random
import shutil

import numpy as np
import torch

from ..state import ExportableState
from .best import record_best_checkpoint
from .layout import (
    SCALER_NAME,
    SCHEDULER_NAME,
    TRAINER_STATE_NAME,
    rotate_checkpoints,
    sorted_checkpoints,
)
from .training_args_files import write_training_args
from .weights import save_weights


def save_model_folder(trainer, output_dir: str, strategy=None) -> None:
    """``Trainer.save_model``: weights, the processing class and ``training_args.json``. With the
    ``strategy`` of a sharded model every rank calls this, to gather the weights; rank 0 writes."""
    if strategy is not None:
        strategy.save_model(trainer, output_dir)
    if not trainer.is_world_process_zero():
        return
    if strategy is None:
        save_weights(trainer.model, output_dir, trainer.args.save_safetensors)
    _save_extras(trainer, output_dir)


def _save_extras(trainer, output_dir: str) -> None:
    processing_class = trainer.processing_class
    if processing_class is not None and callable(getattr(processing_class, "save_pretrained", None)):
        processing_class.save_pretrained(output_dir)
    write_training_args(trainer.args, output_dir)


def copy_model_folder(trainer, source: str, output_dir: str) -> None:
    """``Trainer.save_model`` on the driver of a sharded run: the weights the workers consolidated in
    ``source`` (copied, not loaded), the processing class and ``training_args.json``."""
    os.makedirs(output_dir, exist_ok=True)
    if os.path.abspath(source) != os.path.abspath(output_dir):
        for name in os.listdir(source):
            if not name.startswith("."):
                shutil.copy2(os.path.join(source, name), os.path.join(output_dir, name))
    _save_extras(trainer, output_dir)


def save_checkpoint(trainer, model, run) -> str:
    """Write ``checkpoint-<global_step>`` through ``run.sink`` and rotate older ones; returns its path.

    Processes that save (rank 0, or each node's first with ``save_on_each_node``) write the
    replicated state: scheduler, scaler, trainer state; the run's parallel strategy writes model and
    optimizer (all of it from those processes, or each rank its shard). Every rank writes its own
    RNG state. The folder appears under its final name only once complete."""
    args, state = trainer.args, trainer.state
    sink = run.sink
    writes_shared = args.should_save
    staging = sink.stage(state.global_step, writes_shared)
    _save_rng_state(staging, args.process_index)
    run.strategy.save_checkpoint(trainer, model, staging, writes_shared)  # sharded: every rank writes its part
    if writes_shared:
        if not args.save_only_model:
            _save_training_objects(trainer, run.scaler, staging)
        record_best_checkpoint(trainer, sink.root)
        state.stateful_callbacks = callback_states(trainer)
        state.save_to_json(os.path.join(staging, TRAINER_STATE_NAME))
        write_training_args(args, staging)
    final = sink.commit(staging, state.global_step, {"step": state.global_step, "epoch": state.epoch}, writes_shared)
    if writes_shared:
        rotate_checkpoints(sink.root, args.save_total_limit, state.best_model_checkpoint)
    return final


def _save_training_objects(trainer, scaler, folder: str) -> None:
    """What every rank holds alike: the scheduler and the fp16 scaler (the optimizer's state is
    the strategy's, as it may be sharded)."""
    torch.save(trainer.lr_scheduler.state_dict(), os.path.join(folder, SCHEDULER_NAME))
    if scaler is not None:
        torch.save(scaler.state_dict(), os.path.join(folder, SCALER_NAME))


def rng_state_name(rank: int) -> str:
    return "rng_state.pth" if rank == 0 else f"rng_state_{rank}.pth"


def _save_rng_state(folder: str, rank: int) -> None:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    torch.save(states, os.path.join(folder, rng_state_name(rank)))


def callback_states(trainer) -> dict:
    """HF's ``stateful_callbacks``: ``{class name: state}`` for every ExportableState callback and
    the TrainerControl (a list when several callbacks share a class)."""
    states = {}
    for callback in list(trainer.callback_handler.callbacks) + [trainer.control]:
        if not isinstance(callback, ExportableState):
            continue
        name = type(callback).__name__
        if name in states:
            previous = states[name]
            states[name] = (previous if isinstance(previous, list) else [previous]) + [callback.state()]
        else:
            states[name] = callback.state()
    return states


def finalize_checkpoints(args, best, root: str) -> None:
    """At the end of training with ``save_total_limit=1``, the latest checkpoint was only kept
    beside the best one (``best``) so that training could resume; now only the best one stays
    under ``root`` (HF)."""
    if not (args.should_save and best is not None and args.save_total_limit == 1):
        return
    for path in sorted_checkpoints(root):
        if os.path.abspath(path) != os.path.abspath(best):
            shutil.rmtree(path, ignore_errors=True)
