"""What the driver hands to the function Ray Train runs, and the storage a run uses."""

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..loop.run_state import TrainRequest


@dataclass
class LocalJob:
    """Local mode: everything the in-process worker function needs; never pickled."""

    trainer: Any
    request: TrainRequest
    checkpoint_root: str
    result: dict = field(default_factory=dict)


@dataclass
class RemoteJob:
    """What every Ray Train worker receives (small: the Trainer itself is behind ``blueprint_ref``)."""

    blueprint_ref: Any
    channel: Any  # runtime.channel.RunLink of this run
    run_id: str  # tells a restart of this train() from checkpoints an earlier run left in storage
    request: TrainRequest


def new_run_id() -> str:
    return uuid.uuid4().hex


def default_run_config(args):
    """Ray's storage for this run is ``output_dir`` itself: ``storage_path`` is its parent and
    ``name`` its last component, so Ray Train's ``checkpoint-<step>`` folders are exactly where
    HF users look for them, and a restarted run finds them again."""
    from ray.train import RunConfig

    output_dir = os.path.abspath(args.output_dir)
    return RunConfig(name=os.path.basename(output_dir), storage_path=os.path.dirname(output_dir))


def checkpoint_root(args, trial=None) -> str:
    """Where a run in this process puts its checkpoints: ``output_dir``, or
    ``output_dir/<run name>`` for a trial of ``hyperparameter_search``."""
    run_name = getattr(trial, "run_name", None)
    return os.path.join(args.output_dir, run_name) if run_name else args.output_dir
