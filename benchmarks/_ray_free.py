"""raytrainer's training loop in a process that has no Ray (the GPU check's machine).

``import raytrainer`` loads the whole public API, ``hyperparameter_search`` and its Ray Tune
backend included. The loop does not need Ray: ``Trainer`` (without Ray configs) and
``raytrainer.loop.training.run_training(trainer, context, request)`` with the plain
``ExecutionContext`` (checkpoints renamed into ``output_dir``, no dataset shards, nothing at the end)
run in this process, the way a local run of a sharded model runs. So the package is registered
without executing its ``__init__``, and importing Ray is refused, here and on a CPU test machine
where Ray is installed, so that both take the same path.
"""

import importlib.abc
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"{name} is not used by this check (the machine it runs on has no Ray)")
        return None


def load():
    """Returns ``(Trainer, TrainingArguments, TrainerCallback, train)`` where ``train(trainer)`` runs
    raytrainer's loop in this process and returns its ``TrainOutput``."""
    sys.meta_path.insert(0, _NoRay())
    if "raytrainer" not in sys.modules:
        package = types.ModuleType("raytrainer")
        package.__path__ = [os.path.join(ROOT, "raytrainer")]
        sys.modules["raytrainer"] = package
    from raytrainer.args import TrainingArguments
    from raytrainer.callbacks import TrainerCallback
    from raytrainer.loop.run_state import TrainRequest
    from raytrainer.loop.training import run_training
    from raytrainer.runtime.context import ExecutionContext
    from raytrainer.trainer import Trainer

    def train(trainer, resume_from_checkpoint=None):
        request = TrainRequest(resume_from_checkpoint=resume_from_checkpoint)
        return run_training(trainer, ExecutionContext(trainer.args.output_dir), request)

    return Trainer, TrainingArguments, TrainerCallback, train
