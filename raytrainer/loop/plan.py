"""How long a training run is: update steps per epoch, total steps, epochs. Pure arithmetic."""

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class TrainingPlan:
    num_update_steps_per_epoch: Optional[int]  # None when the dataloader has no length
    max_steps: int
    num_train_epochs: int  # whole epochs the loop will iterate over
    batches_per_epoch: Optional[int]
    total_train_batch_size: int
    num_train_samples: int  # samples the run will consume, for the speed metrics


def plan_training(
    *,
    batches_per_epoch: Optional[int],
    gradient_accumulation_steps: int,
    max_steps: int,
    num_train_epochs: float,
    total_train_batch_size: int,
    dataset_size: Optional[int] = None,
) -> TrainingPlan:
    """Derive the run length the way the HF Trainer does.

    A partial accumulation window at the end of an epoch still makes an optimizer step, so an epoch
    of ``b`` batches has ``ceil(b / accumulation)`` updates. ``max_steps > 0`` wins over epochs;
    fractional ``num_train_epochs`` gives ``ceil(epochs * updates_per_epoch)`` steps.
    """
    if batches_per_epoch is None:
        if max_steps <= 0:
            raise ValueError(
                "The training dataset has no length, so the number of steps per epoch is unknown: "
                "set TrainingArguments.max_steps to a positive number."
            )
        return TrainingPlan(
            num_update_steps_per_epoch=None,
            max_steps=max_steps,
            # an unsized dataset is re-iterated until max_steps; sys.maxsize epochs, as HF does
            num_train_epochs=2**62,
            batches_per_epoch=None,
            total_train_batch_size=total_train_batch_size,
            num_train_samples=max_steps * total_train_batch_size,
        )
    updates_per_epoch = max(math.ceil(batches_per_epoch / gradient_accumulation_steps), 1)
    if max_steps > 0:
        steps = max_steps
        epochs = math.ceil(max_steps / updates_per_epoch)
        samples = max_steps * total_train_batch_size
    else:
        steps = math.ceil(num_train_epochs * updates_per_epoch)
        epochs = math.ceil(num_train_epochs)
        per_epoch = dataset_size if dataset_size is not None else updates_per_epoch * total_train_batch_size
        samples = int(per_epoch * num_train_epochs)
    return TrainingPlan(updates_per_epoch, steps, epochs, batches_per_epoch, total_train_batch_size, samples)


def accumulation_windows(batches_in_epoch: int, gradient_accumulation_steps: int) -> list[int]:
    """The number of micro-batches in each optimizer step of one epoch, e.g. 10 batches with
    accumulation 4 -> [4, 4, 2]."""
    full, rest = divmod(batches_in_epoch, gradient_accumulation_steps)
    return [gradient_accumulation_steps] * full + ([rest] if rest else [])
