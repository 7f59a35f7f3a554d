"""Calling the Trainer's override points with the arguments each one takes.

transformers added keywords over the years (``num_items_in_batch`` to ``compute_loss`` and
``training_step``, ``device`` to ``get_batch_samples``). A subclass written for an older release
overrides the method with the old signature; the loop must keep calling it as it was written.
Each signature is inspected once per run, never per step.
"""

import inspect
from typing import Callable


def accepts_argument(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with ``name`` as a keyword (named, or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True  # a builtin or C function: assume the current signature
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class OverrideCalls:
    """The loop's way to call ``training_step``, ``get_batch_samples`` and ``prediction_step`` of
    one Trainer (``compute_loss`` is adapted inside the Trainer, which calls it)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self._step_takes_num_items = accepts_argument(trainer.training_step, "num_items_in_batch")
        self._samples_take_device = accepts_argument(trainer.get_batch_samples, "device")
        self._prediction_takes_ignore_keys = accepts_argument(trainer.prediction_step, "ignore_keys")

    def training_step(self, model, inputs, num_items_in_batch):
        if self._step_takes_num_items:
            return self.trainer.training_step(model, inputs, num_items_in_batch)
        return self.trainer.training_step(model, inputs)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device):
        if self._samples_take_device:
            return self.trainer.get_batch_samples(epoch_iterator, num_batches, device)
        return self.trainer.get_batch_samples(epoch_iterator, num_batches)

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        if self._prediction_takes_ignore_keys:
            return self.trainer.prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return self.trainer.prediction_step(model, inputs, prediction_loss_only)
