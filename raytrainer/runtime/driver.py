"""Driver side of a training run: build the Ray Train ``TorchTrainer`` and run the loop through it.

Local mode (``ScalingConfig(num_workers=0)``) runs the worker function in this process, so the
job hands the worker the user's own Trainer object: the model, datasets and callbacks the user
passed are the ones trained, and the result comes back by reference. Multi-worker runs will ship
the Trainer class and constructor arguments instead (DESIGN.md §1).
"""

import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from .worker import train_loop_per_worker


@dataclass
class LocalJob:
    """Everything the in-process worker needs; never pickled."""

    trainer: Any
    resume_from_checkpoint: Optional[str]
    trial: Any
    ignore_keys_for_eval: Optional[list]
    result: dict = field(default_factory=dict)


def default_run_config(args) -> RunConfig:
    """Ray's experiment name and storage derived from TrainingArguments: the run is named after
    ``run_name`` and stored beside the HF checkpoints, under ``output_dir``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(str(args.run_name)))) or "raytrainer"
    return RunConfig(name=name, storage_path=os.path.abspath(args.output_dir))


def run_training(trainer, *, resume_from_checkpoint, trial, ignore_keys_for_eval):
    job = LocalJob(trainer, resume_from_checkpoint, trial, ignore_keys_for_eval)
    torch_trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=trainer.scaling_config or ScalingConfig(num_workers=0),
        run_config=trainer.run_config or default_run_config(trainer.args),
    )
    torch_trainer.fit()
    return job.result["output"]
