"""Running the loop on Ray Train workers and bringing the result back to the driver."""

import os
import pickle
import sys

import ray
from ray.train.torch import TorchTrainer

from ..data.stream_trainer import torch_trainer_data
from ..integrations import adopt_runs
from ..modeling import unwrap_model
from ..outputs import TrainOutput
from ..state import TrainerState
from .channel import DriverDisplay, RunChannel
from .driver import RemoteJob, default_run_config, new_run_id
from .payload import blueprint_of, put_blueprint
from .worker import remote_train_loop


def ensure_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (or the one already joined), else start a local
    Ray instance. A local instance gets this process's import path, so the modules a script
    imports its model and dataset classes from import on the workers too."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})


def run_on_workers(trainer, scaling_config, *, resume_from_checkpoint, trial, ignore_keys_for_eval) -> TrainOutput:
    ensure_ray()
    blueprint_ref = put_blueprint(blueprint_of(trainer))
    channel = RunChannel.remote()
    job = RemoteJob(blueprint_ref, channel, new_run_id(), resume_from_checkpoint, trial, ignore_keys_for_eval)
    torch_trainer = TorchTrainer(
        remote_train_loop,
        train_loop_config={"job": job},
        scaling_config=scaling_config,
        run_config=trainer.run_config or default_run_config(trainer.args),
        **torch_trainer_data(trainer, scaling_config),  # Ray Data streams: workers read get_dataset_shard(name)
    )
    try:
        with DriverDisplay(trainer, channel):
            torch_trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise _worker_exception(error) from error
    result = pickle.loads(ray.get(channel.result.remote()))  # rank 0 of this run's own workers
    ray.kill(channel)
    return _apply_result(trainer, result)


def _worker_exception(error):
    """The user's own exception from the lowest failing rank, marked with where it happened."""
    failures = getattr(error, "worker_failures", None) or {}
    if not failures:
        return error
    rank = min(failures)
    original = failures[rank]
    if isinstance(original, BaseException):
        original.add_note(f"(raised on Ray Train worker rank {rank})")
        return original
    return error


def _apply_result(trainer, result) -> TrainOutput:
    unwrap_model(trainer.model).load_state_dict(result["weights"])
    trainer.state = TrainerState(**result["state"])
    trainer.model_wrapped = trainer.model
    adopt_runs(trainer, result.get("tracking_runs"))
    return TrainOutput(*result["output"])
