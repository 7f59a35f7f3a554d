"""``TrainingArguments.fsdp`` / ``fsdp_config`` translated to FSDP2 (``torch.distributed.fsdp.fully_shard``).

The spec's options were written for FSDP1. Each is mapped to what FSDP2 does, or, where FSDP2 has
no such knob, accepted with a warning that says why it changes nothing; unknown keys are errors.
Both spellings are read: the Trainer's (``min_num_params``; a leading ``fsdp_`` is already stripped
by ``TrainingArguments``) and accelerate's config-file keys (``sharding_strategy``,
``offload_params``, ``auto_wrap_policy``, ``backward_prefetch_policy``, ``version``, ...).
"""

import warnings
from dataclasses import dataclass
from typing import Optional

from ..enums import FSDPOption

STATE_DICT_TYPES = ("SHARDED_STATE_DICT", "FULL_STATE_DICT", "LOCAL_STATE_DICT")
_SHARDING_NAMES = {1: "FULL_SHARD", 2: "SHARD_GRAD_OP", 3: "NO_SHARD", 4: "HYBRID_SHARD", 5: "HYBRID_SHARD_ZERO2"}
_KNOWN_KEYS = (
    "min_num_params", "transformer_layer_cls_to_wrap", "backward_prefetch", "backward_prefetch_policy",
    "forward_prefetch", "limit_all_gathers", "use_orig_params", "sync_module_states", "cpu_ram_efficient_loading",
    "activation_checkpointing", "state_dict_type", "xla", "xla_fsdp_settings", "xla_fsdp_grad_ckpt", "version",
    "reshard_after_forward", "offload_params", "sharding_strategy", "auto_wrap_policy",
)


@dataclass(frozen=True)
class FsdpSettings:
    reshard_after_forward: bool  # full_shard: free gathered parameters after forward; shard_grad_op: keep them
    hybrid: bool  # shard within a node, replicate across nodes (2-D device mesh)
    offload: bool  # parameters, gradients and optimizer state on the CPU (CPUOffloadPolicy)
    layer_classes: tuple  # class names that become their own FSDP unit
    min_num_params: int  # size-based units: a module with at least this many parameters of its own
    backward_prefetch: bool  # explicitly prefetch the previous unit during backward (BACKWARD_PRE)
    forward_prefetch: bool  # explicitly prefetch the next unit during forward
    sync_module_states: bool  # broadcast rank 0's weights before sharding
    cpu_ram_efficient_loading: bool  # only rank 0 keeps full weights; the others get their shards from it
    activation_checkpointing: bool  # recompute each unit's activations in backward
    full_state_dict: bool  # checkpoints also hold the consolidated model.safetensors (FULL_STATE_DICT)

    @property
    def auto_wrap(self) -> bool:
        return bool(self.layer_classes) or self.min_num_params > 0


def fsdp_settings(args, warn: bool = True) -> Optional[FsdpSettings]:
    """The FSDP2 plan for ``args`` (None for ``no_shard``: plain data parallelism), or a ValueError
    naming the option. With ``warn``, options FSDP2 has no use for are reported once."""
    options, config = list(args.fsdp or []), dict(args.fsdp_config or {})
    unknown = sorted(set(config) - set(_KNOWN_KEYS))
    if unknown:
        raise ValueError(f"fsdp_config: unknown key(s) {unknown}; raytrainer reads {sorted(_KNOWN_KEYS)} (with or "
                         "without the 'fsdp_' prefix).")
    notes = []
    sharding = _sharding(options, config, notes)
    if sharding == "NO_SHARD":
        _warn(warn, ["fsdp='no_shard' shards nothing: the run uses plain data parallelism (DDP), which is what "
                     "FSDP's NO_SHARD does"] + notes)
        return None
    if config.get("xla"):
        raise ValueError("fsdp_config: xla=True asks for PyTorch/XLA FSDP on TPUs; Ray workers run on CPUs and GPUs. "
                         "Remove 'xla' to use FSDP2.")
    settings = FsdpSettings(
        reshard_after_forward=_flag(config, "reshard_after_forward", sharding in ("FULL_SHARD", "HYBRID_SHARD")),
        hybrid=sharding.startswith("HYBRID"),
        offload=FSDPOption.OFFLOAD in options or _flag(config, "offload_params", False),
        layer_classes=_layer_classes(options, config),
        min_num_params=_min_num_params(options, config),
        backward_prefetch=_backward_prefetch(config, notes),
        forward_prefetch=_flag(config, "forward_prefetch", False),
        sync_module_states=_flag(config, "sync_module_states", True),
        cpu_ram_efficient_loading=_flag(config, "cpu_ram_efficient_loading", False),
        activation_checkpointing=_flag(config, "activation_checkpointing", False),
        full_state_dict=_state_dict_type(config, notes) == "FULL_STATE_DICT",
    )
    _check_combinations(settings, args, options, config)
    _ignored_keys(config, notes)
    _warn(warn, notes)
    return settings


def _sharding(options: list, config: dict, notes: list) -> str:
    by_option = {FSDPOption.FULL_SHARD: "FULL_SHARD", FSDPOption.SHARD_GRAD_OP: "SHARD_GRAD_OP",
                 FSDPOption.NO_SHARD: "NO_SHARD", FSDPOption.HYBRID_SHARD: "HYBRID_SHARD",
                 FSDPOption.HYBRID_SHARD_ZERO2: "HYBRID_SHARD_ZERO2"}
    chosen = [name for option, name in by_option.items() if option in options]
    if len(chosen) > 1:
        raise ValueError(f"fsdp: {' and '.join(c.lower() for c in chosen)} are different sharding strategies; keep one.")
    if "sharding_strategy" in config:
        value = config["sharding_strategy"]
        name = _SHARDING_NAMES.get(value) if isinstance(value, int) else str(value).upper()
        if name not in _SHARDING_NAMES.values():
            raise ValueError(f"fsdp_config: sharding_strategy={value!r}; use one of {list(_SHARDING_NAMES.values())} "
                             "or their numbers 1-5.")
        if chosen and chosen[0] != name:
            raise ValueError(f"fsdp={chosen[0].lower()!r} and fsdp_config sharding_strategy={value!r} disagree; "
                             "keep one of them.")
        return name
    return chosen[0] if chosen else "FULL_SHARD"  # 'offload' or 'auto_wrap' alone shard fully, as in HF


def _flag(config: dict, key: str, default: bool) -> bool:
    value = config.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"fsdp_config: {key} must be true or false, got {value!r}.")
    return value


def _layer_classes(options: list, config: dict) -> tuple:
    value = config.get("transformer_layer_cls_to_wrap")
    policy = str(config.get("auto_wrap_policy", "")).upper()
    if policy and policy not in ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP"):
        raise ValueError(f"fsdp_config: auto_wrap_policy={config['auto_wrap_policy']!r}; use TRANSFORMER_BASED_WRAP, "
                         "SIZE_BASED_WRAP or NO_WRAP.")
    if value is None:
        # auto_wrap without classes: the model's _no_split_modules, resolved when the model is wrapped
        wants = FSDPOption.AUTO_WRAP in options or policy == "TRANSFORMER_BASED_WRAP"
        return ("<no_split_modules>",) if wants and not config.get("min_num_params") else ()
    names = [value] if isinstance(value, str) else value
    if not (isinstance(names, (list, tuple)) and names and all(isinstance(n, str) and n for n in names)):
        raise ValueError("fsdp_config: transformer_layer_cls_to_wrap must be a class name or a list of class names "
                         f"(such as 'BertLayer'), got {value!r}.")
    return tuple(word for name in names for word in name.replace(",", " ").split())


def _min_num_params(options: list, config: dict) -> int:
    value = config.get("min_num_params", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
        raise ValueError(f"fsdp_config: min_num_params must be a whole number >= 0, got {value!r}.")
    if not value and str(config.get("auto_wrap_policy", "")).upper() == "SIZE_BASED_WRAP":
        return 100_000_000  # accelerate's default threshold for size-based wrapping
    return int(value)


def _backward_prefetch(config: dict, notes: list) -> bool:
    value = config.get("backward_prefetch", config.get("backward_prefetch_policy"))
    if value is None:
        return False
    name = str(value).upper()
    if name in ("BACKWARD_PRE",):
        return True
    if name in ("BACKWARD_POST", "NO_PREFETCH", "NONE"):
        if name == "BACKWARD_POST":
            notes.append("fsdp_config backward_prefetch='backward_post': FSDP2 has no post-gradient prefetch; it "
                         "prefetches the previous unit implicitly during backward, which is what runs")
        return False
    raise ValueError(f"fsdp_config: backward_prefetch={value!r}; use 'backward_pre', 'backward_post' or 'no_prefetch'.")


def _state_dict_type(config: dict, notes: list) -> str:
    value = str(config.get("state_dict_type", "SHARDED_STATE_DICT")).upper()
    if value not in STATE_DICT_TYPES:
        raise ValueError(f"fsdp_config: state_dict_type={config['state_dict_type']!r}; use one of {list(STATE_DICT_TYPES)}.")
    if value == "LOCAL_STATE_DICT":
        notes.append("fsdp_config state_dict_type='LOCAL_STATE_DICT': FSDP2 has no flat local shards; checkpoints "
                     "are written as SHARDED_STATE_DICT (torch.distributed.checkpoint), which also reshards on resume")
        return "SHARDED_STATE_DICT"
    return value


def _check_combinations(settings: FsdpSettings, args, options: list, config: dict) -> None:
    if settings.cpu_ram_efficient_loading and not settings.sync_module_states:
        raise ValueError("fsdp_config: cpu_ram_efficient_loading=True needs sync_module_states=True (the other ranks "
                         "would keep uninitialised weights); remove sync_module_states=False.")
    if settings.activation_checkpointing and args.gradient_checkpointing:
        raise ValueError("fsdp_config activation_checkpointing=True and TrainingArguments gradient_checkpointing=True "
                         "both recompute activations; keep one (activation_checkpointing is the FSDP-aware one).")
    if settings.activation_checkpointing and not settings.auto_wrap:
        raise ValueError("fsdp_config: activation_checkpointing=True checkpoints each wrapped layer, but no layers "
                         "are wrapped; set transformer_layer_cls_to_wrap (or min_num_params), or add 'auto_wrap' "
                         "to fsdp for a transformers model.")
    if settings.layer_classes and config.get("min_num_params"):
        raise ValueError("fsdp_config: 'min_num_params' and 'transformer_layer_cls_to_wrap' choose two different "
                         "wrapping policies; set only one of them.")
    if str(config.get("auto_wrap_policy", "")).upper() == "NO_WRAP" and settings.auto_wrap:
        raise ValueError("fsdp_config: auto_wrap_policy='NO_WRAP' contradicts the wrapping options given; remove one.")


def _ignored_keys(config: dict, notes: list) -> None:
    if "limit_all_gathers" in config:
        notes.append("fsdp_config limit_all_gathers: FSDP2 always bounds in-flight all-gathers (no CPU rate limiter "
                     "to turn on or off); the value changes nothing")
    if config.get("use_orig_params") is False or str(config.get("use_orig_params")).lower() == "false":
        notes.append("fsdp_config use_orig_params=False: FSDP2 always trains the original parameters (as DTensors), "
                     "so frozen and trainable parameters may mix; the value changes nothing")
    for key in ("xla_fsdp_settings", "xla_fsdp_grad_ckpt"):
        if key in config:
            notes.append(f"fsdp_config {key}: applies to PyTorch/XLA FSDP on TPUs only; not used")
    version = config.get("version")
    if version is not None and str(version) not in ("1", "2"):
        raise ValueError(f"fsdp_config: version={version!r}; FSDP versions are 1 and 2 (raytrainer runs FSDP2).")
    if version is not None and str(version) == "1":
        notes.append("fsdp_config version=1: raytrainer runs FSDP2 (torch.distributed.fsdp.fully_shard), which reads "
                     "the same options")


def _warn(enabled: bool, notes: list) -> None:
    if enabled:
        for note in notes:
            warnings.warn(note + ".", UserWarning, stacklevel=3)
