"""Worker side: the function Ray Train runs on every worker (in-process in local mode)."""

import ray.train

from ..loop.training import TrainingLoop


def train_loop_per_worker(config: dict) -> None:
    job = config["job"]
    loop = TrainingLoop(job.trainer, job.resume_from_checkpoint, job.trial, job.ignore_keys_for_eval)
    output = loop.run()
    job.result["output"] = output
    # Rank 0's final metrics become Ray's Result.metrics; every rank must call report once.
    ray.train.report({**output.metrics, "step": output.global_step})
