"""The driver's side of ``Trainer.train()``: pick where the loop runs, and run it there.

- Local mode (``ScalingConfig(num_workers=0)``, or no ScalingConfig off a cluster): the loop runs
  in this process on the user's own Trainer object: the model, datasets and callbacks the user
  passed are the ones trained. Ray Train's local-mode ``TorchTrainer`` wraps it only when it brings
  something the run uses: Ray Data streams (their shards come through Ray Train) or a ``RunConfig``
  the user passed. Otherwise nothing Ray-side is imported or set up: the first ``train()`` of a
  notebook starts as fast as its steps.
- A Ray Tune trial's own process (an in-process trial of ``backend="ray"``): the loop runs right
  here; a nested local-mode ``TorchTrainer`` would not be allowed to report inside Tune.
- Ray Train workers: the Trainer's class and constructor arguments travel instead
  (``runtime.workers``).
Each is an ``ExecutionContext`` (``runtime.context``) for the same loop.
"""

from ..callbacks.jit_checkpoint import jit_checkpointing
from ..data.stream_shards import registered_streams
from ..loop.run_state import TrainRequest
from ..loop.training import run_training as run_loop
from .context import ExecutionContext, TuneTrialContext
from .jobs import checkpoint_root
from .ray_session import quiet_ray
from .scaling import is_local_mode, resolve_scaling_config


def run_training(trainer, request: TrainRequest):
    with quiet_ray(trainer.args):
        if not is_local_mode(trainer.scaling_config):
            from .workers import run_on_workers  # Ray's actor machinery: only for runs that need it

            return run_on_workers(trainer, resolve_scaling_config(trainer.scaling_config), request)
        root = checkpoint_root(trainer.args, request.trial)
        if getattr(request.trial, "in_tune_trial", False):
            return run_loop(trainer, TuneTrialContext(root), request)
        if wants_ray_train_local_mode(trainer):
            return run_in_ray_train_local_mode(trainer, request, root)
        with jit_checkpointing(trainer):  # SIGTERM -> checkpoint and stop, when enable_jit_checkpoint
            return run_loop(trainer, ExecutionContext(root), request)


def wants_ray_train_local_mode(trainer) -> bool:
    """Whether a local run needs Ray Train around it: streams to shard, or the user's RunConfig.
    A sharded model never does: it needs its one-rank process group after training too (evaluate,
    save_model), and Ray's local mode destroys the group when its run ends."""
    if trainer.args.fsdp or trainer.args.deepspeed:
        return False
    return bool(registered_streams(trainer)) or trainer.run_config is not None


def run_in_ray_train_local_mode(trainer, request: TrainRequest, root: str):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..data.stream_shards import torch_trainer_data
    from .jobs import LocalJob, default_run_config
    from .ray_session import quiet_datasets, quiet_run_config
    from .worker_entry import local_train_loop

    job = LocalJob(trainer, request, root)
    data = torch_trainer_data(trainer)
    with quiet_datasets(data.get("datasets", {}), trainer.args):
        run_config = quiet_run_config(trainer.run_config or default_run_config(trainer.args), trainer.args)
        TorchTrainer(local_train_loop, train_loop_config={"job": job}, scaling_config=ScalingConfig(num_workers=0),
                     run_config=run_config, **data).fit()
    return job.result["output"]
