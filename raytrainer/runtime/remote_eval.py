"""``evaluate()`` and ``predict()`` of a Trainer whose model lives on Ray Train workers.

A Trainer with a multi-worker ``ScalingConfig`` evaluates where it trains: the same kind of
workers (its ScalingConfig) rebuild it from its blueprint, prepare the model as training did
(sharded under FSDP/DeepSpeed, with the weights of ``final_model_dir`` after a sharded run), and
run the evaluation loop, each worker on its share of the data. The driver receives rank 0's
metrics (or predictions) and state; it never holds a sharded model. The log line streams to the
driver's display; callbacks other than the display ones fire on the workers, as in training.
"""

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

import ray

from ..data import streaming
from ..data.stream_shards import torch_trainer_data
from ..state import TrainerState
from .channel import open_run_link
from .payload import blueprint_of, put_blueprint
from .ray_session import ensure_ray, quiet_run_config


@dataclass
class EvalJob:
    blueprint_ref: Any
    channel: Any
    method: str  # "evaluate" or "predict"
    kwargs_ref: Any  # the call's arguments (datasets included), through the object store
    state: dict  # the driver's TrainerState: logs carry its step and epoch
    weights: Optional[str]  # final_model_dir of a sharded run, else None (the blueprint's model is trained)


def evaluate_on_workers(trainer, method: str, kwargs: dict):
    """Run ``trainer.<method>(**kwargs)`` on Ray Train workers; returns its result."""
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from .worker_entry import remote_eval_loop
    from .workers import fit_for_result

    for value in kwargs.values():
        if streaming.is_stream(value):
            raise ValueError(f"{method}(): a Ray Data stream passed here cannot be split across the workers; pass it "
                             "to the Trainer as eval_dataset (streams given there are sharded), or evaluate in this "
                             "process with ScalingConfig(num_workers=0).")
    ensure_ray()
    channel = open_run_link()
    job = EvalJob(put_blueprint(blueprint_of(trainer)), channel, method, ray.put(kwargs),
                  dataclasses.asdict(trainer.state), trainer.final_model_dir)
    storage = tempfile.mkdtemp(prefix="raytrainer-eval-")  # Ray Train's run folder; nothing is kept there
    run_config = quiet_run_config(RunConfig(name="eval", storage_path=storage), trainer.args)
    data = torch_trainer_data(trainer, trainer.scaling_config)
    try:
        torch_trainer = TorchTrainer(remote_eval_loop, train_loop_config={"job": job},
                                     scaling_config=trainer.scaling_config, run_config=run_config, **data)
        result = fit_for_result(trainer, torch_trainer, channel, data.get("datasets", {}))
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    logged_before = len(trainer.state.log_history)
    trainer.state = TrainerState(**result["state"])  # the evaluation's log entry included
    _report_to_tracking(trainer, trainer.state.log_history[logged_before:])
    return result["output"]


def _report_to_tracking(trainer, entries: list) -> None:
    """The evaluation's log lines into the driver's tracking runs (TensorBoard, MLflow, W&B), which
    continue the runs training handed back; the workers' copies of those callbacks were removed."""
    from ..integrations.base import ReportingCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ReportingCallback):
            for entry in entries:
                logs = {key: value for key, value in entry.items() if key != "step"}
                callback.on_log(trainer.args, trainer.state, trainer.control, logs=logs)
