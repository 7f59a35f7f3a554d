"""Reading the loss out of a model's output, and label smoothing.

Models follow the HF conventions: the output is a mapping (``ModelOutput`` is an ordered dict)
with a ``"loss"`` key when labels were given, or a tuple whose first element is the loss.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def loss_from_outputs(outputs, model=None):
    """The loss a model returned, or a clear error saying what it returned instead."""
    if isinstance(outputs, Mapping):
        if outputs.get("loss") is None:
            raise ValueError(
                f"{_name(model)} did not return a loss: its output has only the keys {sorted(outputs)}. "
                "Make forward() compute a loss when labels are passed (HF convention), pass "
                "compute_loss_func= to the Trainer, or check label_names / remove_unused_columns so "
                "the labels reach forward()."
            )
        return outputs["loss"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    if getattr(outputs, "loss", None) is not None:
        return outputs.loss
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 0:
        return outputs
    raise ValueError(
        f"{_name(model)} returned {type(outputs).__name__}, from which no loss can be read. Return a "
        "dict with a 'loss' key or a tuple whose first element is the loss."
    )


def _name(model) -> str:
    """The model's class name, for error messages only (unwrapping costs attribute look-ups)."""
    if model is None:
        return "the model"
    from ..modeling import unwrap_model

    return type(unwrap_model(model)).__name__


def logits_from_outputs(outputs):
    """The logits of an output: the ``"logits"`` key of a mapping, else the first tuple element."""
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    return getattr(outputs, "logits", outputs)


class LabelSmoother:
    """Cross-entropy with label smoothing computed from the model's logits.

    ``epsilon`` of the target mass is spread uniformly over the vocabulary; positions whose label
    equals ``ignore_index`` do not count. ``shift_labels`` aligns logits at position t with the
    label at t+1, as causal language models need.
    """

    def __init__(self, epsilon: float = 0.1, ignore_index: int = -100):
        self.epsilon = epsilon
        self.ignore_index = ignore_index

    def __call__(self, model_output, labels, shift_labels: bool = False):
        logits = logits_from_outputs(model_output)
        if shift_labels:
            logits = logits[..., :-1, :].contiguous()
            labels = labels[..., 1:].contiguous()
        log_probs = F.log_softmax(logits, dim=-1)
        if labels.dim() == log_probs.dim() - 1:
            labels = labels.unsqueeze(-1)
        ignored = labels.eq(self.ignore_index)
        safe_labels = labels.clamp(min=0)  # gather cannot take -100; those rows are masked below
        nll = -log_probs.gather(dim=-1, index=safe_labels).masked_fill(ignored, 0.0)
        uniform = -log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32).masked_fill(ignored, 0.0)
        active = ignored.numel() - ignored.sum()
        nll = nll.sum() / active
        uniform = uniform.sum() / (active * log_probs.shape[-1])
        return (1 - self.epsilon) * nll + self.epsilon * uniform
