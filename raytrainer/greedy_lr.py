"""The ``greedy`` schedule of transformers v5 (``lr_scheduler_type="greedy"``): a learning rate that
follows the evaluation metric in both directions.

After more than ``patience`` evaluations in a row that improve on the best value so far, the rate
is divided by ``factor`` (raised, up to ``max_lr``); after more than ``patience`` without
improvement it is multiplied by ``factor`` (lowered, down to ``min_lr``). ``warmup`` evaluations
follow a raise and ``cooldown`` evaluations a cut, during which nothing is counted. Once every
group sits at ``min_lr``, ``reset_start`` further cuts send the rates back to their initial values
and start over. ``smooth`` judges the mean of the last ``window_size`` values instead of each
value. Like ``ReduceLROnPlateau`` it is stepped with the metric after each evaluation, not after
each optimizer step.
"""

import logging

from torch.optim import Optimizer

logger = logging.getLogger("raytrainer")


class GreedyLR:
    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.95, patience: int = 10,
                 threshold: float = 1e-6, threshold_mode: str = "abs", cooldown: int = 0, warmup: int = 0,
                 min_lr=1e-3, max_lr=1.0, eps: float = 1e-8, verbose: bool = False, smooth: bool = False,
                 window_size: int = 50, reset_start: int = 500):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GreedyLR needs a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if not factor < 1.0:
            raise ValueError(f"GreedyLR: factor={factor} must be < 1.0 (rates are multiplied or divided by it).")
        if mode not in ("min", "max"):
            raise ValueError(f"GreedyLR: mode={mode!r} must be 'min' or 'max'.")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"GreedyLR: threshold_mode={threshold_mode!r} must be 'rel' or 'abs'.")
        self.optimizer = optimizer
        groups = len(optimizer.param_groups)
        self.min_lrs = _per_group(min_lr, groups, "min_lr")
        self.max_lrs = _per_group(max_lr, groups, "max_lr")
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.warmup, self.eps, self.verbose = cooldown, warmup, eps, verbose
        self.smooth, self.window_size = smooth, window_size
        self.reset_start = self.reset_start_original = reset_start
        self._init_lrs = [group["lr"] for group in optimizer.param_groups]
        self._last_lr = list(self._init_lrs)
        self.last_epoch = 0
        self._start_over()

    def _start_over(self) -> None:
        self.best = float("inf") if self.mode == "min" else float("-inf")
        self.num_bad_epochs = self.num_good_epochs = 0
        self.cooldown_counter = self.warmup_counter = 0
        self._recent = []  # the smoothing window

    def step(self, metrics, epoch=None) -> None:
        """Judge one evaluation's metric and move the learning rates if a run of them says so."""
        value = float(metrics)
        if self.smooth:
            self._recent = (self._recent + [value])[-self.window_size:]
            value = sum(self._recent) / len(self._recent)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.cooldown_counter > 0:  # resting after a cut: nothing counts
            self.cooldown_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        elif self.warmup_counter > 0:  # resting after a raise
            self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            self._count(value)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _count(self, value: float) -> None:
        if self.is_better(value, self.best):
            self.best, self.num_bad_epochs, self.num_good_epochs = value, 0, self.num_good_epochs + 1
        else:
            self.num_bad_epochs, self.num_good_epochs = self.num_bad_epochs + 1, 0
        if self.num_good_epochs > self.patience:
            self._raise_rates()
            self.warmup_counter, self.num_good_epochs = self.warmup, 0
        elif self.num_bad_epochs > self.patience:
            self._cut_rates()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def is_better(self, value: float, best: float) -> bool:
        """Beyond ``threshold`` of the best: an absolute margin, or (``"rel"``) a relative one
        measured as ReduceLROnPlateau does, ``best * (1 -/+ threshold)``."""
        sign = -1 if self.mode == "min" else 1
        bound = best * (1 + sign * self.threshold) if self.threshold_mode == "rel" else best + sign * self.threshold
        return value < bound if self.mode == "min" else value > bound

    def _cut_rates(self) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            lowered = max(float(group["lr"]) * self.factor, self.min_lrs[index])
            if float(group["lr"]) - lowered > self.eps:
                group["lr"] = lowered
                self._report("lowering", index, lowered)
        if all(group["lr"] <= self.min_lrs[i] for i, group in enumerate(self.optimizer.param_groups)):
            self.reset_start -= 1
            if self.reset_start <= 0:
                for group, initial in zip(self.optimizer.param_groups, self._init_lrs):
                    group["lr"] = initial
                self._start_over()
                self.reset_start = self.reset_start_original
                self._report("resetting", None, None)

    def _raise_rates(self) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            raised = min(float(group["lr"]) / self.factor, self.max_lrs[index])
            if raised - float(group["lr"]) > self.eps:
                group["lr"] = raised
                self._report("raising", index, raised)
        self.reset_start = self.reset_start_original

    def _report(self, action: str, index, rate) -> None:
        if self.verbose:
            where = "" if index is None else f" of group {index} to {rate:.4e}"
            logger.info("GreedyLR, evaluation %d: %s the learning rate%s.", self.last_epoch, action, where)

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Plain numbers and lists only, so a checkpoint loads with ``weights_only=True``."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({key: value for key, value in state_dict.items() if key != "optimizer"})
        for group, rate in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = rate


def _per_group(value, groups: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(f"GreedyLR: {name} has {len(value)} values for {groups} parameter groups.")
        return list(value)
    return [value] * groups


def get_greedy_schedule(optimizer: Optimizer, **kwargs) -> GreedyLR:
    """``lr_scheduler_type="greedy"``: a ``GreedyLR`` with ``lr_scheduler_kwargs``."""
    return GreedyLR(optimizer, **kwargs)
