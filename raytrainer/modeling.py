"""What the Trainer needs to know about a model, read once from its forward signature."""

import inspect
import weakref
from dataclasses import dataclass

import torch.nn as nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module under ``torch.compile`` (``_orig_mod``), PEFT (``get_base_model``) and
    DDP-style wrappers (a ``.module`` behind a forward that only passes everything on)."""
    while True:
        inner = _wrapped_model(model)
        if inner is None or inner is model:
            return model
        model = inner


def _wrapped_model(model):
    if isinstance(getattr(model, "_orig_mod", None), nn.Module):
        return model._orig_mod
    if callable(getattr(model, "get_base_model", None)):
        return model.get_base_model()
    module = getattr(model, "module", None)
    if isinstance(module, nn.Module) and _only_forwards_everything(model):
        return module
    return None


def _only_forwards_everything(module) -> bool:
    """True for wrappers whose forward is ``(*args, **kwargs)`` (DDP, DataParallel, FSDP...), so
    a user model that happens to own a sub-module called ``module`` is left alone."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


@dataclass(frozen=True)
class ModelSignature:
    parameters: tuple  # names of forward's named parameters
    accepts_var_kwargs: bool
    accepts_loss_kwargs: bool  # forward takes num_items_in_batch (explicitly or via **kwargs)
    can_return_loss: bool  # forward has return_loss=True (contrastive models)
    label_names: tuple  # default label names: forward parameters that look like labels
    shifts_labels: bool  # a causal LM loss: position 0 of the labels is never predicted


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
    return ModelSignature(named, var_kwargs, bool(accepts_loss_kwargs), can_return_loss, labels, _shifts_labels(core))


def _shifts_labels(model) -> bool:
    loss_type = getattr(model, "loss_type", None)
    causal = loss_type == "ForCausalLM" if loss_type is not None else type(model).__name__.endswith("ForCausalLM")
    return causal and not getattr(getattr(model, "config", None), "is_encoder_decoder", False)


def build_model_with(model_init, trial=None) -> nn.Module:
    """A fresh model from ``model_init``, which takes no argument or one: the trial."""
    params = list(inspect.signature(model_init).parameters.values())
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise ValueError("model_init must take no argument or a single argument (the trial).")
    # a single parameter is the trial; a class with several defaulted parameters gets none
    takes_trial = len(required) == 1 or (len(params) == 1 and params[0].kind != params[0].VAR_KEYWORD)
    model = model_init(trial) if takes_trial else model_init()
    if model is None:
        raise ValueError("model_init returned None; it must return an nn.Module.")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def estimate_training_flos(model: nn.Module, inputs) -> int:
    """FLOPs of a forward and backward pass over ``inputs``, estimated as transformers does for
    its models: 6 x (non-embedding parameters) x tokens. Tokens are the elements of the model's
    main input when it holds token ids (an integer tensor), else the examples of the batch (a
    dense network uses each parameter once per example)."""
    main = inputs.get(getattr(model, "main_input_name", "input_ids")) if isinstance(inputs, dict) else None
    if main is None and isinstance(inputs, dict):
        main = next((value for value in inputs.values() if hasattr(value, "shape") and value.ndim > 0), None)
    if main is None or not hasattr(main, "shape") or main.ndim == 0:
        return 0
    integer_ids = not (main.dtype.is_floating_point or main.dtype.is_complex)
    tokens = main.numel() if integer_ids else main.shape[0]
    return 6 * tokens * _dense_parameter_count(model)


_PARAMETER_COUNTS = weakref.WeakKeyDictionary()


def _dense_parameter_count(model: nn.Module) -> int:
    """Parameters outside embedding tables, counted once per model (the estimate runs per step)."""
    count = _PARAMETER_COUNTS.get(model)
    if count is None:
        embedding = {id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()}
        count = sum(p.numel() for p in model.parameters() if id(p) not in embedding)
        _PARAMETER_COUNTS[model] = count
    return count
