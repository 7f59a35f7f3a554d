"""The driver's side of ``Trainer.train()``: pick where the loop runs, and run it there.

- Local mode (``ScalingConfig(num_workers=0)``): Ray Train runs the worker function in this
  process, and the job hands it the user's own Trainer object: the model, datasets and callbacks
  the user passed are the ones trained, and the result comes back by reference.
- A Ray Tune trial's own process (an in-process trial of ``backend="ray"``): the loop runs right
  here; a nested local-mode ``TorchTrainer`` would not be allowed to report inside Tune.
- Ray Train workers: the Trainer's class and constructor arguments travel instead
  (``runtime.workers``).
Each is an ``ExecutionContext`` (``runtime.context``) for the same loop.
"""

from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from ..data.stream_shards import torch_trainer_data
from ..loop.run_state import TrainRequest
from ..loop.training import run_training as run_loop
from .context import ExecutionContext, TuneTrialContext
from .jobs import LocalJob, checkpoint_root, default_run_config
from .ray_session import quiet_datasets, quiet_ray, quiet_run_config
from .scaling import is_local_mode, resolve_scaling_config
from .worker_entry import local_train_loop


def run_training(trainer, request: TrainRequest):
    with quiet_ray(trainer.args):
        scaling_config = resolve_scaling_config(trainer.scaling_config)
        if not is_local_mode(scaling_config):
            from .workers import run_on_workers  # Ray's actor machinery: only for runs that need it

            return run_on_workers(trainer, scaling_config, request)
        root = checkpoint_root(trainer.args, request.trial)
        if getattr(request.trial, "in_tune_trial", False):
            return run_loop(trainer, TuneTrialContext(root), request)
        if trainer.args.fsdp or trainer.args.deepspeed:
            # a sharded model needs its one-rank process group after training too (evaluate, save_model),
            # and Ray's local mode destroys the group when its run ends: run the loop right here
            return run_loop(trainer, ExecutionContext(root), request)
        job = LocalJob(trainer, request, root)
        data = torch_trainer_data(trainer)
        with quiet_datasets(data.get("datasets", {}), trainer.args):
            run_config = quiet_run_config(trainer.run_config or default_run_config(trainer.args), trainer.args)
            TorchTrainer(local_train_loop, train_loop_config={"job": job}, scaling_config=ScalingConfig(num_workers=0),
                         run_config=run_config, **data).fit()
        return job.result["output"]
