"""Tracking the best evaluation (``metric_for_best_model``) and loading its checkpoint."""

import os
import warnings

from .layout import checkpoint_dir


def read_metric(metrics: dict, name: str) -> float:
    if name not in metrics:
        raise KeyError(
            f"metric_for_best_model: the evaluation returned no metric {name!r}; available: {sorted(metrics)}. "
            "Set TrainingArguments.metric_for_best_model to one of these (with or without the 'eval_' prefix)."
        )
    return metrics[name]


def best_metric_name(args) -> str:
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


def update_best_metric(trainer, metrics: dict) -> bool:
    """Compare this evaluation with the best so far; True when it is a new best."""
    args, state = trainer.args, trainer.state
    if args.metric_for_best_model is None:
        return False
    value = read_metric(metrics, best_metric_name(args))
    greater = args.greater_is_better
    if state.best_metric is None:
        state.best_metric = float("-inf") if greater else float("inf")
    if (value > state.best_metric) if greater else (value < state.best_metric):
        state.best_metric = value
        state.best_global_step = state.global_step
        return True
    return False


def record_best_checkpoint(trainer, root: str) -> None:
    """Point ``state.best_model_checkpoint`` at the checkpoint of the best step, once it exists."""
    state = trainer.state
    if trainer.args.metric_for_best_model is None or not state.best_global_step:
        return
    candidate = checkpoint_dir(root, state.best_global_step)
    if state.best_global_step == state.global_step or os.path.isdir(candidate):
        state.best_model_checkpoint = candidate


def load_best_model(trainer, path: str, strategy) -> None:
    """``load_best_model_at_end``: the weights of the best checkpoint at ``path`` into the
    trainer's model, the way the run's parallel strategy holds it (every rank calls this)."""
    if not os.path.isdir(path):
        warnings.warn(f"load_best_model_at_end: the best checkpoint {path} is gone; keeping the last weights.")
        return
    strategy.load_weights(trainer, path)
