"""Driver side of a run on Ray Train workers: ship the Trainer, run the ``TorchTrainer``, show the
workers' progress live, and bring the trained state back (with the weights of a replicated model;
a sharded model's consolidated weights stay in storage, see ``final_model_dir``)."""

import contextlib
import pickle

import ray
from ray.train.torch import TorchTrainer

from ..data.stream_shards import torch_trainer_data
from ..integrations import adopt_runs
from ..modeling import unwrap_model
from ..outputs import TrainOutput
from ..state import TrainerState
from .channel import DriverDisplay, open_run_link
from .controller_polls import prompt_worker_polls
from .jobs import RemoteJob, default_run_config, new_run_id
from .payload import blueprint_of, put_blueprint
from .ray_session import ensure_ray, quiet_datasets, quiet_ray, quiet_run_config
from .run_snapshot import forget_earlier_runs
from .worker_entry import remote_train_loop


def run_on_workers(trainer, scaling_config, request) -> TrainOutput:
    ensure_ray()
    blueprint_ref = put_blueprint(blueprint_of(trainer))
    channel = open_run_link()
    job = RemoteJob(blueprint_ref, channel, new_run_id(), request)
    run_config = quiet_run_config(trainer.run_config or default_run_config(trainer.args), trainer.args)
    forget_earlier_runs(run_config)
    data = torch_trainer_data(trainer, scaling_config)  # Ray Data streams: workers read get_dataset_shard(name)
    torch_trainer = TorchTrainer(remote_train_loop, train_loop_config={"job": job}, scaling_config=scaling_config,
                                 run_config=run_config, **data)
    return _apply_result(trainer, fit_for_result(trainer, torch_trainer, channel, data.get("datasets", {})))


def fit_for_result(trainer, torch_trainer, channel, datasets: dict):
    """Fit, showing the run's progress from ``channel``; returns what rank 0 of this run's own
    workers sent home. A failed run raises the user's exception (``worker_exception``) and its
    leftovers on the channel are dropped (also when the run is interrupted: Ctrl-C in a notebook)."""
    try:
        with DriverDisplay(trainer, channel), quiet_ray(trainer.args), quiet_datasets(datasets, trainer.args), \
                prompt_worker_polls():
            torch_trainer.fit()
    except BaseException as error:
        with contextlib.suppress(Exception):  # the run's own error is the one the user must see
            channel.forget()
        if isinstance(error, ray.train.TrainingFailedError):
            raise worker_exception(error) from error
        raise
    return pickle.loads(channel.take_result())


def worker_exception(error):
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
    """A replicated model's trained weights go into the driver's model; a sharded one's stay in
    storage (``final_model_dir``), where evaluation and ``save_model`` on the workers find them."""
    if "weights" in result:
        unwrap_model(trainer.model).load_state_dict(result["weights"])
        trainer.final_model_dir = None
    else:
        trainer.final_model_dir = result["final_model"]
    trainer.state = TrainerState(**result["state"])
    trainer.model_wrapped = trainer.model
    adopt_runs(trainer, result.get("tracking_runs"))
    return TrainOutput(*result["output"])
