"""Result containers returned by ``train``/``evaluate``/``predict`` and passed to ``compute_metrics``."""

import time
from typing import Any, NamedTuple, Optional, Union

import numpy as np


class EvalPrediction:
    """What ``compute_metrics`` receives: predictions, label ids and, when
    ``include_for_metrics`` asks for them, the inputs and the per-example losses.

    It unpacks like a tuple, ``preds, labels = eval_pred``, with the optional fields appended only
    when they are present, which is the shape older metric functions expect.
    """

    def __init__(self, predictions, label_ids, inputs=None, losses=None):
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs
        self.losses = losses
        self._fields = (predictions, label_ids) + tuple(
            extra for extra in (inputs, losses) if extra is not None
        )

    def __iter__(self):
        return iter(self._fields)

    def __getitem__(self, index):
        if index >= len(self._fields):
            raise IndexError("EvalPrediction index out of range")
        return self._fields[index]

    def __len__(self):
        return len(self._fields)


class EvalLoopOutput(NamedTuple):
    predictions: Union[np.ndarray, tuple, None]
    label_ids: Union[np.ndarray, tuple, None]
    metrics: Optional[dict]
    num_samples: Optional[int]


class PredictionOutput(NamedTuple):
    predictions: Union[np.ndarray, tuple]
    label_ids: Union[np.ndarray, tuple, None]
    metrics: Optional[dict]


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


def speed_metrics(split: str, start_time: float, num_samples=None, num_steps=None, num_tokens=None) -> dict:
    """``<split>_runtime`` and the throughputs derived from it, rounded as HF rounds them."""
    runtime = time.time() - start_time
    metrics: dict[str, Any] = {f"{split}_runtime": round(runtime, 4)}
    if runtime == 0:
        return metrics
    if num_samples is not None:
        metrics[f"{split}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        metrics[f"{split}_steps_per_second"] = round(num_steps / runtime, 3)
    if num_tokens is not None:
        metrics[f"{split}_tokens_per_second"] = round(num_tokens / runtime, 3)
    return metrics


def denumpify_detensorize(metrics):
    """Turn numpy scalars and one-element tensors into Python numbers so metrics serialise."""
    if isinstance(metrics, (list, tuple)):
        return type(metrics)(denumpify_detensorize(m) for m in metrics)
    if isinstance(metrics, dict):
        return type(metrics)({k: denumpify_detensorize(v) for k, v in metrics.items()})
    if isinstance(metrics, np.generic):
        return metrics.item()
    if hasattr(metrics, "numel") and metrics.numel() == 1:
        return metrics.item()
    return metrics
