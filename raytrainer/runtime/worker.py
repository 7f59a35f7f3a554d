"""Worker side: the function Ray Train runs on every worker (in-process in local mode)."""

import ray.train
from accelerate.utils import find_executable_batch_size

from ..loop.training import TrainingLoop


def train_loop_per_worker(config: dict) -> None:
    job = config["job"]
    trainer = job.trainer

    def run_loop(batch_size: int):
        trainer._train_batch_size = batch_size
        # a retry after an out-of-memory error starts from the optimizer the user gave (if any):
        # the schedule length depends on the batch size
        trainer.optimizer, trainer.lr_scheduler = trainer._given_optimizers
        return TrainingLoop(trainer, job.resume_from_checkpoint, job.trial, job.ignore_keys_for_eval).run()

    if trainer.args.auto_find_batch_size:
        # accelerate's search: retry with a smaller batch (x0.9) after each out-of-memory error
        output = find_executable_batch_size(run_loop, starting_batch_size=trainer._train_batch_size)()
    else:
        output = run_loop(trainer._train_batch_size)
    job.result["output"] = output
    # Rank 0's final metrics become Ray's Result.metrics; every rank must call report once.
    ray.train.report({**output.metrics, "step": output.global_step})
