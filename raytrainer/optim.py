"""Optimizers by name: which parameters decay, how they are grouped, and which class builds them.

``TrainingArguments.optim`` names an optimizer; this module turns the name, the learning rate, the
Adam hyper-parameters and the ``optim_args`` string into an optimizer class and its keyword
arguments, the way the Hugging Face Trainer does. Names whose optimizer lives in a package that
raytrainer does not integrate are refused up front, with the package named, so the driver can fail
before any worker starts.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import re
from collections.abc import Mapping

import torch
from torch import nn

from raytrainer.adafactor import Adafactor
from raytrainer.enums import OptimizerNames

# Normalisation layers whose own parameters never get weight decay. ``_NormBase`` is torch's
# common base of every BatchNorm/InstanceNorm flavour (lazy and sync ones included), which no
# public class covers.
_NORM_LAYER_TYPES = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
)
# Norm modules from other libraries (LlamaRMSNorm, T5LayerNorm, ...) are recognised by class name.
_NORM_CLASS_NAME = re.compile(r"Norm(\d+d)?$")
# Same name rules as HF: biases, and anything named like a norm layer, are matched on the
# lower-cased dotted parameter name.
_NO_DECAY_NAME_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
)

_ADAM_FAMILY = frozenset(
    {
        OptimizerNames.ADAMW_TORCH,
        OptimizerNames.ADAMW_HF,
        OptimizerNames.ADAMW_TORCH_FUSED,
        OptimizerNames.ADAMW_TORCH_4BIT,
        OptimizerNames.ADAMW_TORCH_8BIT,
    }
)
_TORCH_CLASSES = {
    OptimizerNames.ADAMW_TORCH: torch.optim.AdamW,
    # adamw_hf named transformers' own AdamW, which is gone; torch's AdamW is its replacement.
    OptimizerNames.ADAMW_HF: torch.optim.AdamW,
    OptimizerNames.ADAMW_TORCH_FUSED: torch.optim.AdamW,
    OptimizerNames.SGD: torch.optim.SGD,
    OptimizerNames.ADAGRAD: torch.optim.Adagrad,
    OptimizerNames.RMSPROP: torch.optim.RMSprop,
    # Our own Adafactor with HF's semantics (torch.optim.Adafactor differs: other defaults, lr
    # scaling and weight decay).
    OptimizerNames.ADAFACTOR: Adafactor,
}
# What the HF Trainer passes for optim="adafactor": a plain lr that the lr scheduler drives.
_ADAFACTOR_TRAINER_KWARGS = {"scale_parameter": False, "relative_step": False, "warmup_init": False}
_TORCHAO_CLASSES = {
    OptimizerNames.ADAMW_TORCH_4BIT: "AdamW4bit",
    OptimizerNames.ADAMW_TORCH_8BIT: "AdamW8bit",
}
# torchao moved its low-bit optimizers out of ``prototype``; try the new home first.
_TORCHAO_MODULES = ("torchao.optim", "torchao.prototype.low_bit_optim")
SUPPORTED_OPTIMIZERS = tuple(_TORCH_CLASSES) + tuple(_TORCHAO_CLASSES)

_PACKAGE_BY_PREFIX = (
    ("adamw_torch_xla", "torch_xla"),
    ("adamw_torch_npu", "torch_npu"),
    ("adamw_apex", "apex"),
    ("adamw_anyprecision", "torchdistx"),
    ("galore_", "galore-torch"),
    ("lomo", "lomo-optim"),
    ("adalomo", "lomo-optim"),
    ("grokadamw", "grokadamw"),
    ("schedule_free_", "schedulefree"),
    ("apollo_", "apollo-torch"),
    ("stable_adamw", "torch-optimi"),
    # Every bitsandbytes name (adamw_8bit, lion_*, paged_*, ademamix*, rmsprop_bnb*) falls through
    # to this catch-all prefix, so it must stay last.
    ("", "bitsandbytes"),
)


def get_decay_parameter_names(model: nn.Module) -> list[str]:
    """Return the names (``named_parameters`` order) of the parameters that get weight decay.

    Excluded: every parameter owned directly by a normalisation layer (torch's norm layers, and
    any module whose class name ends in ``Norm``), every parameter whose name contains ``bias``,
    and every parameter named like a norm (``*.norm.*``, ``*layernorm*``, ``*rmsnorm*``,
    ``*_norm.*``).
    """
    _require_module(model)
    norm_param_ids = _ids_of_norm_layer_parameters(model)
    return [
        name
        for name, param in model.named_parameters()
        if id(param) not in norm_param_ids and not _named_like_no_decay(name)
    ]


def get_optimizer_param_groups(
    model: nn.Module, weight_decay: float, decay_parameter_names: list[str] | None = None
) -> list[dict]:
    """Split the trainable parameters into a decay group and a no-decay group.

    Each group keeps ``model.named_parameters()`` order so that an optimizer built from these
    groups steps exactly like one a hand-written loop builds. Empty groups are left out.
    """
    _require_module(model)
    weight_decay = _require_non_negative_number(weight_decay, "weight_decay")
    if decay_parameter_names is None:
        decay_parameter_names = get_decay_parameter_names(model)
    decay_names = set(decay_parameter_names)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for name, p in trainable if name in decay_names], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name not in decay_names], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError(
            f"model ({type(model).__name__}) has no parameter with requires_grad=True, so there is "
            "nothing to optimize; unfreeze at least one parameter before training."
        )
    return groups


def get_optimizer_cls_and_kwargs(args, model: nn.Module | None = None) -> tuple[type, dict]:
    """Return the optimizer class named by ``args.optim`` and the keyword arguments to build it.

    The keyword arguments hold ``lr`` (``args.learning_rate``), ``betas`` and ``eps`` for the Adam
    family, ``fused=True`` for ``adamw_torch_fused``, ``scale_parameter=False, relative_step=False,
    warmup_init=False`` for ``adafactor``, and then the entries of ``args.optim_args``.
    ``model`` is accepted for signature compatibility; no supported optimizer needs it.
    """
    name = OptimizerNames.parse(args.optim, "optim")
    optimizer_cls = _resolve_optimizer_class(name)
    kwargs = {"lr": _require_non_negative_number(args.learning_rate, "learning_rate")}
    if name in _ADAM_FAMILY:
        kwargs.update(_adam_kwargs(args))
    if name == OptimizerNames.ADAMW_TORCH_FUSED:
        kwargs["fused"] = True
    if name == OptimizerNames.ADAFACTOR:
        kwargs.update(_ADAFACTOR_TRAINER_KWARGS)
    user_kwargs = parse_optim_args(getattr(args, "optim_args", None))
    _check_optim_args_accepted(user_kwargs, optimizer_cls, name)
    kwargs.update(user_kwargs)
    if name == OptimizerNames.ADAFACTOR:
        _check_adafactor_kwargs(kwargs, args.optim_args)
    return optimizer_cls, kwargs


def validate_optimizer_choice(args) -> None:
    """Run every optimizer check that needs no model, so the driver fails before workers start.

    Raises ``ValueError`` for an unknown or unsupported ``optim``, a malformed ``optim_args``,
    bad Adam hyper-parameters, and ``adamw_torch_fused`` on a CPU run whose torch lacks the
    fused CPU kernel.
    """
    get_optimizer_cls_and_kwargs(args)
    fused = OptimizerNames.parse(args.optim, "optim") == OptimizerNames.ADAMW_TORCH_FUSED
    cpu_run = getattr(args, "use_cpu", False)
    if fused and cpu_run and not _fused_step_runs(torch.optim.AdamW, {}, torch.device("cpu"), torch.float32):
        raise ValueError(
            "optim='adamw_torch_fused' with use_cpu=True needs a torch build with the fused CPU "
            f"AdamW kernel, which torch {torch.__version__} lacks; use optim='adamw_torch'."
        )


def create_optimizer(
    model: nn.Module,
    args,
    optimizer_cls_and_kwargs: tuple[type, dict] | None = None,
    decay_parameter_names: list[str] | None = None,
) -> torch.optim.Optimizer:
    """Build the optimizer for ``model``: decay/no-decay groups from ``args.weight_decay`` and the
    class and keyword arguments from ``args`` or from the ``optimizer_cls_and_kwargs`` override.

    ``decay_parameter_names`` lets a caller substitute its own choice (a Trainer subclass that
    overrides ``get_decay_parameter_names``); by default it is ``get_decay_parameter_names(model)``.
    """
    groups = get_optimizer_param_groups(model, args.weight_decay, decay_parameter_names)
    if optimizer_cls_and_kwargs is None:
        optimizer_cls, kwargs = get_optimizer_cls_and_kwargs(args, model)
    else:
        optimizer_cls, kwargs = _check_override(optimizer_cls_and_kwargs)
    kwargs = dict(kwargs)
    # An override may carry its own groups (as HF allows); those win over the default split.
    groups = kwargs.pop("params", groups)
    if kwargs.get("fused"):
        _check_fused_supported(optimizer_cls, kwargs, model)
    return optimizer_cls(groups, **kwargs)


def parse_optim_args(optim_args: str | None) -> dict:
    """Parse ``"key=value,key=value"`` into a dict, casting values to int, float or bool when they
    read as one (``"0.9"`` -> 0.9, ``"true"`` -> True) and keeping other values as strings."""
    if optim_args is None:
        return {}
    if not isinstance(optim_args, str):
        raise TypeError(
            f"optim_args must be a string like 'momentum=0.9,nesterov=true', "
            f"got {type(optim_args).__name__}: {optim_args!r}."
        )
    parsed = {}
    for entry in optim_args.replace(" ", "").split(","):
        if not entry:
            continue  # tolerate a trailing or doubled comma
        key, separator, value = entry.partition("=")
        if not separator or not key or "=" in value:
            raise ValueError(
                f"optim_args entry {entry!r} is not of the form key=value; write optim_args as "
                "'key1=value1,key2=value2' (e.g. 'momentum=0.9,nesterov=true')."
            )
        if key in parsed:
            raise ValueError(f"optim_args sets {key!r} twice; keep one {key}=... entry.")
        parsed[key] = _cast_optim_value(value)
    return parsed


def _cast_optim_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _resolve_optimizer_class(name: OptimizerNames) -> type:
    if name in _TORCH_CLASSES:
        return _TORCH_CLASSES[name]
    if name in _TORCHAO_CLASSES:
        return _import_torchao_class(name)
    package = next(pkg for prefix, pkg in _PACKAGE_BY_PREFIX if name.value.startswith(prefix))
    supported = ", ".join(n.value for n in SUPPORTED_OPTIMIZERS)
    raise ValueError(
        f"optim='{name.value}' is not supported by raytrainer: it needs the {package} package, "
        f"which raytrainer does not integrate. Supported optim values: {supported} (the last two "
        "need torchao). Choose one of those, or pass optimizer_cls_and_kwargs=(cls, kwargs) to "
        "the Trainer to use any other optimizer class."
    )


def _import_torchao_class(name: OptimizerNames) -> type:
    class_name = _TORCHAO_CLASSES[name]
    for module_name in _TORCHAO_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, class_name):
            return getattr(module, class_name)
    raise ValueError(
        f"optim='{name.value}' needs the torchao package (for {class_name}), which is not "
        "installed or too old; run `pip install torchao`, or use optim='adamw_torch'."
    )


def _adam_kwargs(args) -> dict:
    beta1 = _require_number(args.adam_beta1, "adam_beta1")
    beta2 = _require_number(args.adam_beta2, "adam_beta2")
    for value, field in ((beta1, "adam_beta1"), (beta2, "adam_beta2")):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{field}={value} is outside [0, 1); Adam betas are decay rates.")
    eps = _require_non_negative_number(args.adam_epsilon, "adam_epsilon")
    return {"betas": (beta1, beta2), "eps": eps}


def _check_adafactor_kwargs(kwargs: dict, optim_args: str | None) -> None:
    # Relative steps ignore lr, which the Trainer always passes and its lr scheduler rescales.
    for key in ("relative_step", "warmup_init"):
        if kwargs[key] is True:
            raise ValueError(
                f"optim_args {key}=True is not supported with optim='adafactor': the Trainer gives "
                "Adafactor lr=learning_rate and drives it with its lr scheduler, while relative steps "
                f"replace lr. Remove {key} from optim_args, or build raytrainer.adafactor.Adafactor("
                "model.parameters(), lr=None, relative_step=True) yourself and pass it as "
                "Trainer(optimizers=(optimizer, lr_scheduler))."
            )
    # Building on a throw-away tensor runs Adafactor's own checks now, on the driver, instead of
    # when each worker creates its optimizer.
    try:
        Adafactor([torch.zeros(1)], **kwargs)
    except ValueError as error:
        raise ValueError(f"optim='adafactor' with optim_args={optim_args!r}: {error}") from None


def _check_optim_args_accepted(user_kwargs: dict, optimizer_cls: type, name: OptimizerNames):
    if not user_kwargs:
        return
    parameters = inspect.signature(optimizer_cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # the class takes arbitrary keywords; let it judge them itself
    accepted = [key for key in parameters if key not in ("self", "params")]
    for key in user_kwargs:
        if key not in accepted:
            raise ValueError(
                f"optim_args key {key!r} is not accepted by {optimizer_cls.__name__} "
                f"(optim='{name.value}'); accepted keys: {', '.join(accepted)}."
            )


def _check_override(optimizer_cls_and_kwargs) -> tuple[type, Mapping]:
    is_pair = isinstance(optimizer_cls_and_kwargs, (tuple, list)) and len(optimizer_cls_and_kwargs) == 2
    if not is_pair:
        raise TypeError(
            "optimizer_cls_and_kwargs must be a pair (optimizer_class, kwargs_dict), "
            f"got {optimizer_cls_and_kwargs!r}."
        )
    optimizer_cls, kwargs = optimizer_cls_and_kwargs
    if not callable(optimizer_cls):
        raise TypeError(
            f"optimizer_cls_and_kwargs[0] must be an optimizer class, got {optimizer_cls!r}."
        )
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"optimizer_cls_and_kwargs[1] must be a dict of keyword arguments, got {kwargs!r}."
        )
    return optimizer_cls, kwargs


def _check_fused_supported(optimizer_cls: type, kwargs: dict, model: nn.Module) -> None:
    # torch only checks a fused optimizer's devices and dtypes at the first step, deep inside the
    # loop; one probe step per (device, dtype) moves that failure to set-up time.
    for device, dtype in sorted({(p.device, p.dtype) for p in model.parameters()}, key=str):
        if not _fused_step_runs(optimizer_cls, kwargs, device, dtype):
            raise ValueError(
                f"{optimizer_cls.__name__}(fused=True) cannot step parameters of dtype {dtype} on "
                f"device {device}; use optim='adamw_torch', or move the model to a device and "
                "dtype with fused kernels (cpu/cuda floating point)."
            )


def _fused_step_runs(optimizer_cls: type, kwargs: dict, device: torch.device, dtype: torch.dtype) -> bool:
    if not dtype.is_floating_point:
        return False
    probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:
        optimizer_cls([probe], **{**kwargs, "fused": True}).step()
    except RuntimeError:
        return False
    return True


def _ids_of_norm_layer_parameters(model: nn.Module) -> set[int]:
    # Only a norm layer's own parameters are excluded: a Linear nested inside an adaptive norm is
    # a real weight matrix and still decays.
    ids = set()
    for module in model.modules():
        if isinstance(module, _NORM_LAYER_TYPES) or _NORM_CLASS_NAME.search(type(module).__name__):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def _named_like_no_decay(name: str) -> bool:
    lowered = name.lower()
    return any(pattern.search(lowered) for pattern in _NO_DECAY_NAME_PATTERNS)


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")


def _require_number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}.")
    return value


def _require_non_negative_number(value, field: str) -> float:
    value = _require_number(value, field)
    if value < 0:
        raise ValueError(f"{field}={value} is negative; use a value >= 0.")
    return value
