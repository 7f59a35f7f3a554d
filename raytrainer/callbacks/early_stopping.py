"""Stop training when the evaluation metric stops improving."""

from __future__ import annotations

import logging

from raytrainer.callbacks.base import TrainerCallback
from raytrainer.state import ExportableState

logger = logging.getLogger(__name__)


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stops training after ``early_stopping_patience`` evaluations in a row without improvement.

    An evaluation improves when its ``metric_for_best_model`` beats ``state.best_metric`` (the best
    value before this evaluation; the loop updates it after ``on_evaluate``) in the direction of
    ``greater_is_better`` by strictly more than ``early_stopping_threshold``. The first evaluation
    always counts as an improvement. Requires ``metric_for_best_model`` and an ``eval_strategy``
    other than ``"no"``; without ``load_best_model_at_end`` (allowed since v5) training stops with
    the last weights, not the best ones, and a warning says so. ``check_metric_value`` is the
    override point for another notion of improvement.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        if (
            not isinstance(early_stopping_patience, int)
            or isinstance(early_stopping_patience, bool)
            or early_stopping_patience < 1
        ):
            raise ValueError(
                f"early_stopping_patience={early_stopping_patience!r} must be an int >= 1 (the "
                "number of evaluations without improvement to tolerate before stopping)."
            )
        if not isinstance(early_stopping_threshold, (int, float)) or early_stopping_threshold < 0:
            raise ValueError(
                f"early_stopping_threshold={early_stopping_threshold!r} must be a number >= 0 "
                "(the margin by which the metric must improve; use 0.0 for any improvement)."
            )
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0
        self._warned_missing_metric = False

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.load_best_model_at_end:
            logger.warning(
                "Using EarlyStoppingCallback without load_best_model_at_end=True: once training stops, "
                "the model keeps its last weights, not those of the best evaluation."
            )
        if args.metric_for_best_model is None:
            raise ValueError(
                "EarlyStoppingCallback needs metric_for_best_model to know what to watch; set "
                "metric_for_best_model (e.g. 'eval_loss')."
            )
        if args.eval_strategy == "no":
            raise ValueError(
                "EarlyStoppingCallback needs evaluations, but eval_strategy='no'; set "
                "eval_strategy to 'steps' or 'epoch'."
            )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metric_name = _eval_metric_name(args.metric_for_best_model)
        value = (metrics or {}).get(metric_name)
        if value is None:
            self._warn_missing_metric(metric_name, metrics)
            return
        self.check_metric_value(args, state, control, value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def check_metric_value(self, args, state, control, metric_value) -> None:
        """Reset ``early_stopping_patience_counter`` when ``metric_value`` improves on
        ``state.best_metric`` by more than the threshold, else count one more evaluation without
        improvement. Override to judge improvement differently; ``on_evaluate`` stops training
        once the counter reaches the patience."""
        best = state.best_metric
        gain = None if best is None else (metric_value - best if _greater_is_better(args) else best - metric_value)
        if gain is None or (gain > 0 and gain > self.early_stopping_threshold):
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1

    def _warn_missing_metric(self, metric_name: str, metrics) -> None:
        # Warn once: the same metric will be missing from every later evaluation too.
        if not self._warned_missing_metric:
            logger.warning(
                "Early stopping is skipped while metric_for_best_model is missing: it resolves to "
                "%r, which is not among the evaluation metrics %s. Check metric_for_best_model "
                "against the keys returned by compute_metrics.",
                metric_name,
                sorted(metrics or {}),
            )
            self._warned_missing_metric = True

    def state(self) -> dict:
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }


def _eval_metric_name(metric: str) -> str:
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def _greater_is_better(args) -> bool:
    # TrainingArguments fills greater_is_better from the metric name; a bare namespace may not.
    if args.greater_is_better is not None:
        return bool(args.greater_is_better)
    return not args.metric_for_best_model.endswith("loss")
