"""Driver side of a training run: build the Ray Train ``TorchTrainer`` and run the loop through it.

Local mode (``ScalingConfig(num_workers=0)``) runs the worker function in this process, so the
job hands the worker the user's own Trainer object: the model, datasets and callbacks the user
passed are the ones trained, and the result comes back by reference. With Ray Train workers the
Trainer's class and constructor arguments travel instead (``payload``), progress streams back
through a ``RunChannel`` actor, and the trained weights and state are loaded here at the end.
"""

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ..data.stream_trainer import torch_trainer_data
from .worker import local_train_loop, run_loop


@dataclass
class LocalJob:
    """Everything the in-process worker needs; never pickled."""

    trainer: Any
    resume_from_checkpoint: Optional[str]
    trial: Any
    ignore_keys_for_eval: Optional[list]
    result: dict = field(default_factory=dict)


@dataclass
class RemoteJob:
    """What every Ray Train worker receives (small: the Trainer itself is behind ``blueprint_ref``)."""

    blueprint_ref: Any
    channel: Any
    run_id: str
    resume_from_checkpoint: Optional[str]
    trial: Any
    ignore_keys_for_eval: Optional[list]


def default_run_config(args) -> RunConfig:
    """Ray's storage for this run is ``output_dir`` itself: ``storage_path`` is its parent and
    ``name`` its last component, so Ray Train's ``checkpoint-<step>`` folders are exactly where
    HF users look for them, and a restarted run finds them again."""
    output_dir = os.path.abspath(args.output_dir)
    return RunConfig(name=os.path.basename(output_dir), storage_path=os.path.dirname(output_dir))


def run_training(trainer, *, resume_from_checkpoint, trial, ignore_keys_for_eval):
    from .._trainer_setup import is_local_mode, resolve_scaling_config

    scaling_config = resolve_scaling_config(trainer.scaling_config)
    if is_local_mode(scaling_config) and getattr(trial, "in_tune_trial", False):
        # a Ray Tune trial's own process: the loop reports through ray.tune, which a nested
        # local-mode TorchTrainer would not allow (its ray.train.report is refused inside Tune)
        return run_loop(trainer, resume_from_checkpoint, trial, ignore_keys_for_eval)
    if is_local_mode(scaling_config):
        job = LocalJob(trainer, resume_from_checkpoint, trial, ignore_keys_for_eval)
        TorchTrainer(local_train_loop, train_loop_config={"job": job},
                     scaling_config=ScalingConfig(num_workers=0),
                     run_config=trainer.run_config or default_run_config(trainer.args),
                     **torch_trainer_data(trainer)).fit()
        return job.result["output"]
    from .distributed import run_on_workers

    return run_on_workers(trainer, scaling_config, resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                          ignore_keys_for_eval=ignore_keys_for_eval)


def new_run_id() -> str:
    return uuid.uuid4().hex
