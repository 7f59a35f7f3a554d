"""What the Trainer needs to know about a model, read once from its forward signature."""

import inspect
from dataclasses import dataclass

import torch.nn as nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@dataclass(frozen=True)
class ModelSignature:
    parameters: tuple  # names of forward's named parameters
    accepts_var_kwargs: bool
    accepts_loss_kwargs: bool  # forward takes num_items_in_batch (explicitly or via **kwargs)
    can_return_loss: bool  # forward has return_loss=True (contrastive models)
    label_names: tuple  # default label names: forward parameters that look like labels


def inspect_model(model: nn.Module) -> ModelSignature:
    core = unwrap_model(model)
    params = inspect.signature(core.forward).parameters
    named = tuple(n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    var_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    declared = getattr(core, "accepts_loss_kwargs", None)  # HF models may say so explicitly
    accepts_loss_kwargs = declared if declared is not None else (var_kwargs or "num_items_in_batch" in named)
    return_loss = params.get("return_loss")
    can_return_loss = return_loss is not None and return_loss.default is True
    if "QuestionAnswering" in type(core).__name__:
        labels = tuple(n for n in named if "label" in n or n in ("start_positions", "end_positions"))
    else:
        labels = tuple(n for n in named if "label" in n)
    return ModelSignature(named, var_kwargs, bool(accepts_loss_kwargs), can_return_loss, labels)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
