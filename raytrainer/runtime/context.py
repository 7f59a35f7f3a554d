"""Where the training loop runs: the one seam between the loop and the runtime.

The loop receives an ``ExecutionContext`` and never asks where it runs. The driver
(``runtime.launch``) picks one:

- ``ExecutionContext`` itself: a local run (``ScalingConfig(num_workers=0)``) in the caller's
  process, on the very objects the user passed, without Ray; checkpoints are renamed into place.
- ``LocalContext``: the same inside Ray Train's local mode, for local runs that stream Ray Data
  (their shards come through Ray Train) or have a user's ``RunConfig``; the final metrics become
  Ray's ``Result.metrics``.
- ``TuneTrialContext``: a Ray Tune trial's own process (``hyperparameter_search(backend="ray")``
  without workers); the trial's reporter talks to Tune, the run only trains and checkpoints.
- ``WorkerContext``: one of N Ray Train workers; checkpoints go through ``ray.train.report`` into
  Ray's storage, rank 0 streams progress to the driver and sends the result home, Ray's preemption
  notices and SIGTERM save a checkpoint, and a restarted worker resumes from Ray's checkpoint.

Ranks and world size come from the environment Ray Train sets (``TrainingArguments.process_index``
and ``world_size``), identical in every implementation.
"""

import contextlib
import os
import pickle
from typing import Optional

from ..checkpoints.sinks import RUN_ID_NAME, LocalSink, RayStorageSink

FINAL_MODEL_DIR = "final_model"  # a sharded run's consolidated weights, beside its checkpoints


class ExecutionContext:
    """The default behaviour: checkpoints renamed into ``checkpoint_root``, no dataset shards, no
    extra callbacks, the requested resume point, nothing to do at the end."""

    in_tune_trial = False

    def __init__(self, checkpoint_root: str):
        self.checkpoint_root = checkpoint_root

    def checkpoint_sink(self):
        return LocalSink(self.checkpoint_root)

    def dataset_shard(self, name: str):
        """This process's part of the Ray Data stream registered as ``name``, or None when the run
        has no Ray Train dataset of that name (the stream is then read here in full)."""
        return None

    def loop_callbacks(self, trainer) -> list:
        """Callbacks this kind of run adds to the Trainer for the duration of training."""
        return []

    @contextlib.contextmanager
    def resume_point(self, requested: Optional[str]):
        yield requested

    def finish(self, trainer, output) -> None:
        """Called on every rank once training ended."""


class LocalContext(ExecutionContext):
    """Ray Train local mode, inside the in-process ``TorchTrainer`` run."""

    def dataset_shard(self, name: str):
        return _ray_train_dataset_shard(name)

    def finish(self, trainer, output) -> None:
        import ray.train

        ray.train.report({**output.metrics, "step": output.global_step})  # becomes Result.metrics


class TuneTrialContext(ExecutionContext):
    """The process of a Ray Tune trial: no TorchTrainer around the loop (its ``ray.train.report``
    is refused inside Tune); the trial's reporter sends results through ``ray.tune``."""

    in_tune_trial = True


class WorkerContext(ExecutionContext):
    """One Ray Train worker of a run started by ``runtime.workers.run_on_workers``."""

    def __init__(self, job):
        import ray.train

        storage = ray.train.get_context().get_storage()
        super().__init__(storage.experiment_fs_path)
        self.job = job
        self.rank = ray.train.get_context().get_world_rank()

    def checkpoint_sink(self):
        return RayStorageSink(self.checkpoint_root, self.job.run_id)

    def dataset_shard(self, name: str):
        return _ray_train_dataset_shard(name)

    def loop_callbacks(self, trainer) -> list:
        from .channel import LogStreamCallback
        from .preemption import PreemptionCallback

        preemption = PreemptionCallback()
        preemption.install_sigterm_handler()
        return ([LogStreamCallback(self.job.channel)] if self.rank == 0 else []) + [preemption]

    @contextlib.contextmanager
    def resume_point(self, requested: Optional[str]):
        """Ray's latest checkpoint when this very ``train()`` call wrote it (a restarted worker),
        else what the user asked for: a checkpoint an earlier run left in storage is not resumed
        silently."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield requested
            return
        with checkpoint.as_directory() as folder:
            marker = os.path.join(folder, RUN_ID_NAME)
            written_by_this_run = os.path.exists(marker) and open(marker).read() == self.job.run_id
            yield folder if written_by_this_run else requested

    def finish(self, trainer, output) -> None:
        import ray.train

        metrics = {**output.metrics, "step": output.global_step}
        strategy = trainer._model_strategy
        if strategy is None:  # a replicated model: rank 0 sends the trained weights home
            self.send_home(final_result(trainer, output))
            ray.train.report(metrics)
            return
        # a sharded model never travels to the driver: its consolidated weights go to storage
        final_dir = report_final_model(trainer, strategy, self.checkpoint_root, metrics)
        self.send_home({**final_result(trainer, output, weights=False), "final_model": final_dir})

    def send_home(self, result) -> None:
        """Rank 0's result to the driver, as bytes: the channel actor never imports torch
        (unpickling tensors there would make it import torch while the workers wait)."""
        if self.rank == 0:
            self.job.channel.set_result(pickle.dumps(result, protocol=5))


def _ray_train_dataset_shard(name: str):
    import ray.train

    try:
        return ray.train.get_dataset_shard(name)
    except (KeyError, AssertionError, AttributeError):
        return None  # not handed to this run (workers raise KeyError, local mode asserts)


def final_result(trainer, output, weights: bool = True) -> dict:
    """What rank 0 sends home: the final state, ``TrainOutput`` and (a replicated model) the weights."""
    import dataclasses

    from ..modeling import unwrap_model

    from ..integrations import hand_off_runs

    result = {"state": dataclasses.asdict(trainer.state), "output": tuple(output),
              "tracking_runs": hand_off_runs(trainer)}  # the driver's evaluate() logs into the same runs
    if weights:
        result["weights"] = {name: t.detach().to("cpu") for name, t in unwrap_model(trainer.model).state_dict().items()}
    return result


def report_final_model(trainer, strategy, root: str, metrics: dict) -> str:
    """Every rank: gather the sharded model into one consolidated ``final_model/`` (rank 0 writes
    it, ``model.safetensors`` sharded above 5 GB), reported through Ray's storage like a
    checkpoint; returns its path under ``root``."""
    import shutil
    import tempfile

    import ray.train
    import torch.distributed as dist

    from ..checkpoints.writer import save_model_folder

    staging = tempfile.mkdtemp(prefix="raytrainer-final-model-")
    final = os.path.join(root, FINAL_MODEL_DIR)
    try:
        save_model_folder(trainer, staging, strategy)
        if trainer.is_world_process_zero() and os.path.isdir(final):
            shutil.rmtree(final)  # an earlier run's final model must not mix with this one
        if dist.is_initialized():
            dist.barrier()
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging),
                         checkpoint_dir_name=FINAL_MODEL_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
