"""Where the training loop runs: the one seam between the loop and the runtime.

The loop receives an ``ExecutionContext`` and never asks where it runs. The driver
(``runtime.launch``) picks one of three implementations:

- ``LocalContext``: Ray Train local mode (``ScalingConfig(num_workers=0)``), in the caller's process
  on the very objects the user passed; checkpoints are renamed into place (Ray does not persist
  them in local mode); the final metrics become Ray's ``Result.metrics``.
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
        import ray
        import ray.train

        if self.rank == 0:
            # as bytes: the channel actor never imports torch (unpickling tensors there would make
            # it import torch while both workers wait)
            result = pickle.dumps(final_result(trainer, output), protocol=5)
            ray.get(self.job.channel.set_result.remote(result))
        ray.train.report({**output.metrics, "step": output.global_step})


def _ray_train_dataset_shard(name: str):
    import ray.train

    try:
        return ray.train.get_dataset_shard(name)
    except (KeyError, AssertionError, AttributeError):
        return None  # not handed to this run (workers raise KeyError, local mode asserts)


def final_result(trainer, output) -> dict:
    """What rank 0 sends home: the trained weights, the final state and ``TrainOutput``."""
    import dataclasses

    from ..modeling import unwrap_model

    from ..integrations import hand_off_runs

    weights = {name: t.detach().to("cpu") for name, t in unwrap_model(trainer.model).state_dict().items()}
    return {"weights": weights, "state": dataclasses.asdict(trainer.state), "output": tuple(output),
            "tracking_runs": hand_off_runs(trainer)}  # the driver's evaluate() logs into the same runs
