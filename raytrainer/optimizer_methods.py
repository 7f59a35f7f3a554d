"""The optimizer and scheduler methods of ``Trainer``, with HF's names and signatures.

They stay methods (mixed into ``Trainer``) because subclasses override ``create_optimizer`` and
friends, and the parallel strategies ask the Trainer for them. The choices themselves (optimizer
by name, parameter groups, schedules) are the plain functions of ``optim`` and ``schedules``.
"""

import torch

from . import optim as _optim
from . import schedules
from .modeling import count_parameters


class OptimizerMethods:
    """Mixed into ``Trainer``: ``create_optimizer``, ``create_scheduler``, the learning rates and
    parameter groups."""

    def create_optimizer(self):
        if self.optimizer is None:
            self.optimizer = _optim.create_optimizer(
                self.model, self.args,
                optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs or self.get_optimizer_cls_and_kwargs(self.args, self.model),
                decay_parameter_names=self.get_decay_parameter_names(self.model),
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = schedules.get_scheduler(
                self.args.lr_scheduler_type,
                optimizer=optimizer if optimizer is not None else self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int):
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps, optimizer=self.optimizer)

    def get_decay_parameter_names(self, model) -> list:
        return _optim.get_decay_parameter_names(model)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None):
        return _optim.get_optimizer_cls_and_kwargs(args, model)

    def get_learning_rates(self) -> list:
        if self.lr_scheduler is None:
            raise ValueError("Trainer: the scheduler is not created yet; call create_optimizer_and_scheduler first.")
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_optimizer_group(self, param=None):
        if self.optimizer is None:
            raise ValueError("Trainer: the optimizer is not created yet; call create_optimizer first.")
        if param is None:
            return [group["params"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return None

    def get_num_trainable_parameters(self) -> int:
        return count_parameters(self.model, trainable_only=True)

    def _get_learning_rate(self) -> float:
        """The current learning rate: the scheduler's last one, or the optimizer's for a scheduler
        stepped on a metric; before the scheduler exists, the optimizer's (or ``args``') rate."""
        if self.lr_scheduler is None or schedules.steps_on_metric(self.lr_scheduler):
            return self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.args.learning_rate
        rate = self.lr_scheduler.get_last_lr()[0]
        return rate.item() if torch.is_tensor(rate) else rate

    def _reset_given_optimizers(self) -> None:
        """Back to the optimizer and scheduler passed to the constructor (None: build new ones)."""
        self.optimizer, self.lr_scheduler = self._given_optimizers
