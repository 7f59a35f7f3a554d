"""Worker side: the function Ray Train runs on every worker (in-process in local mode)."""

import contextlib
import logging
import os
import pickle

import ray.train
from accelerate.utils import find_executable_batch_size

from ..checkpoints.sinks import RUN_ID_NAME, RayStorageSink
from ..loop.training import TrainingLoop


def run_loop(trainer, resume_from_checkpoint, trial, ignore_keys_for_eval):
    """One training run, retried with smaller batches after out-of-memory errors when
    ``auto_find_batch_size`` is set (accelerate's search: x0.9 per retry)."""

    def attempt(batch_size: int):
        trainer._train_batch_size = batch_size
        # a retry starts from the optimizer the user gave (if any): the schedule depends on the batch size
        trainer.optimizer, trainer.lr_scheduler = trainer._given_optimizers
        return TrainingLoop(trainer, resume_from_checkpoint, trial, ignore_keys_for_eval).run()

    if trainer.args.auto_find_batch_size:
        return find_executable_batch_size(attempt, starting_batch_size=trainer._train_batch_size)()
    return attempt(trainer._train_batch_size)


def local_train_loop(config: dict) -> None:
    """Local mode: the job holds the user's own Trainer object."""
    job = config["job"]
    output = run_loop(job.trainer, job.resume_from_checkpoint, job.trial, job.ignore_keys_for_eval)
    job.result["output"] = output
    # the final metrics become Ray's Result.metrics
    ray.train.report({**output.metrics, "step": output.global_step})


def remote_train_loop(config: dict) -> None:
    """A Ray Train worker: rebuild the Trainer from its blueprint, train, send the result home."""
    from .channel import LogStreamCallback
    from .preemption import PreemptionCallback

    # Ray's per-report INFO lines would reach the driver as a flood of prefixed log lines
    logging.getLogger("ray.train").setLevel(logging.WARNING)

    job = config["job"]
    context = ray.train.get_context()
    trainer = _load_blueprint(job.blueprint_ref).build()
    for display in ("ProgressCallback", "PrinterCallback", "NotebookProgressCallback"):
        for callback in [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == display]:
            trainer.callback_handler.remove_callback(callback)
    is_rank_zero = context.get_world_rank() == 0
    if is_rank_zero:
        trainer.add_callback(LogStreamCallback(job.channel))
    preemption = PreemptionCallback()
    preemption.install_sigterm_handler()
    trainer.add_callback(preemption)
    trainer._checkpoint_sink = RayStorageSink(experiment_folder(), job.run_id)
    with _resume_point(job) as resume_from_checkpoint:
        output = run_loop(trainer, resume_from_checkpoint, job.trial, job.ignore_keys_for_eval)
    if is_rank_zero:
        # as bytes: the channel actor never imports torch (unpickling tensors there would make it
        # import torch while both workers wait)
        ray.get(job.channel.set_result.remote(pickle.dumps(final_result(trainer, output), protocol=5)))
    ray.train.report({**output.metrics, "step": output.global_step})


def _load_blueprint(ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RaySystemError as error:
        raise RuntimeError(
            f"The Trainer and its arguments could not be rebuilt on this Ray worker ({error}). The modules "
            "that define your model, dataset and Trainer classes must be importable on every worker: install "
            "them there, or ship them with ray.init(runtime_env={'working_dir': ...} or {'py_modules': [...]})."
        ) from None


def experiment_folder() -> str:
    """Ray Train's storage folder for this run (``{storage_path}/{name}``)."""
    return ray.train.get_context().get_storage().experiment_fs_path


@contextlib.contextmanager
def _resume_point(job):
    """Where this worker resumes from: Ray's latest checkpoint when it was written by this very
    ``train()`` call (a worker restart), else what the user asked for (``resume_from_checkpoint``).
    A checkpoint left in storage by an earlier run is not resumed silently."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield job.resume_from_checkpoint
        return
    with checkpoint.as_directory() as folder:
        marker = os.path.join(folder, RUN_ID_NAME)
        written_by_this_run = os.path.exists(marker) and open(marker).read() == job.run_id
        yield folder if written_by_this_run else job.resume_from_checkpoint


def final_result(trainer, output) -> dict:
    import dataclasses

    from ..modeling import unwrap_model

    from ..integrations import hand_off_runs

    weights = {name: t.detach().to("cpu") for name, t in unwrap_model(trainer.model).state_dict().items()}
    return {"weights": weights, "state": dataclasses.asdict(trainer.state), "output": tuple(output),
            "tracking_runs": hand_off_runs(trainer)}  # the driver's evaluate() logs into the same runs
