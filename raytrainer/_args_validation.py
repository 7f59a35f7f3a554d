"""Normalisation and validation behind ``TrainingArguments.__post_init__``.

Everything here runs on the driver, before any Ray worker starts, so a bad value is reported where
the user wrote it. Nothing here looks at the hardware: the driver may have no GPU while the Ray
workers do, so device checks belong to the workers.

Each function takes the arguments object, fixes up values that have one obvious spelling (strings
to enums, ``500.0`` to ``500``, JSON strings to dicts) and raises ``ValueError`` naming the field,
what is wrong with it and how to fix it.
"""

import dataclasses
import json
import logging
import math
import numbers
import os
import socket
from datetime import datetime

from raytrainer.enums import (
    DebugOption,
    FSDPOption,
    METRIC_SCHEDULER_TYPES,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    SaveStrategy,
    SchedulerType,
)

# "passive" leaves the level alone; -1 is how get_process_log_level() recognises it.
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "passive": -1,
}
RAY_SCOPES = ("last", "all", "last-5-avg", "last-10-avg")
HALF_PRECISION_BACKENDS = ("auto", "apex", "cpu_amp")
FP16_OPT_LEVELS = ("O0", "O1", "O2", "O3")
METRIC_INCLUDES = ("inputs", "loss")
# Ray Train's TorchConfig only sets up these two process-group backends.
RAY_DDP_BACKENDS = ("gloo", "nccl")
# Every integration name the spec documents (English and v5 pages); anything else is a typo.
KNOWN_INTEGRATIONS = frozenset(
    {
        "azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte",
        "mlflow", "neptune", "swanlab", "tensorboard", "trackio", "wandb",
    }
)
# Integrations raytrainer implements (raytrainer.integrations); the others are accepted and
# reported as ignored.
SHIPPED_INTEGRATIONS = frozenset({"mlflow", "tensorboard", "wandb"})


def normalise_and_validate(args) -> None:
    """Fix up and check every field of ``args`` in place; ``ValueError`` on the first bad one."""
    _normalise_run_identity(args)
    _normalise_enums(args)
    _validate_batching(args)
    _validate_optimisation(args)
    _normalise_step_intervals(args)
    _resolve_best_model(args)
    _validate_precision(args)
    _validate_dataloader(args)
    _validate_choices(args)
    _normalise_configs(args)
    _normalise_lists(args)
    _validate_distributed(args)
    _resolve_compile(args)


# --------------------------------------------------------------------------- small checkers


def _is_int(value) -> bool:
    # bool is an int subclass, but per_device_train_batch_size=True is always a mistake.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(args, name: str, minimum: int, *, optional: bool = False) -> None:
    value = getattr(args, name)
    if value is None and optional:
        return
    if not _is_int(value) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}; set {name} accordingly.")
    setattr(args, name, int(value))


def _check_number(args, name: str, low: float, high: float = math.inf, *, high_open=False) -> None:
    value = getattr(args, name)
    in_range = _is_number(value) and value >= low and (value < high if high_open else value <= high)
    if not in_range:
        closing = ")" if high_open else "]"
        span = f"in [{low}, {high}{closing}" if high != math.inf else f">= {low}"
        raise ValueError(f"{name} must be a number {span}, got {value!r}.")


def _check_bool(args, name: str, *, optional: bool = False) -> None:
    value = getattr(args, name)
    if not isinstance(value, bool) and not (optional and value is None):
        expected = "True, False or None" if optional else "True or False"
        raise ValueError(f"{name} must be {expected}, got {value!r}.")


def _check_choice(args, name: str, choices) -> None:
    value = getattr(args, name)
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; choose one of: {options}.")


def _as_int_if_whole(value):
    """``500.0`` -> ``500``: step counts parsed from floats (CLI, YAML) are stored as ints."""
    if _is_number(value) and value >= 1 and float(value).is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------- groups of fields


def _normalise_run_identity(args) -> None:
    if args.output_dir is None:
        args.output_dir = "trainer_output"  # the v5 default; v4 made output_dir required
    if not isinstance(args.output_dir, (str, os.PathLike)):
        raise ValueError(f"output_dir must be a path string, got {args.output_dir!r}.")
    args.output_dir = os.path.expanduser(os.fspath(args.output_dir))
    if args.run_name is None:
        args.run_name = args.output_dir
    if args.logging_dir is None:
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        args.logging_dir = os.path.join(args.output_dir, "runs", f"{stamp}_{socket.gethostname()}")
    else:
        args.logging_dir = os.path.expanduser(os.fspath(args.logging_dir))
    if args.disable_tqdm is None:
        # Progress bars stay on unless the user silenced raytrainer below WARNING.
        args.disable_tqdm = logging.getLogger("raytrainer").getEffectiveLevel() > logging.WARNING
    _check_bool(args, "disable_tqdm")


def _normalise_enums(args) -> None:
    args.eval_strategy = IntervalStrategy.parse(args.eval_strategy, "eval_strategy")
    args.logging_strategy = IntervalStrategy.parse(args.logging_strategy, "logging_strategy")
    args.save_strategy = SaveStrategy.parse(args.save_strategy, "save_strategy")
    args.hub_strategy = HubStrategy.parse(args.hub_strategy, "hub_strategy")
    args.lr_scheduler_type = SchedulerType.parse(args.lr_scheduler_type, "lr_scheduler_type")
    args.optim = OptimizerNames.parse(args.optim, "optim")
    if args.eval_strategy != IntervalStrategy.NO:
        args.do_eval = True


def _validate_batching(args) -> None:
    _check_int(args, "per_device_train_batch_size", 1)
    _check_int(args, "per_device_eval_batch_size", 1)
    _check_int(args, "gradient_accumulation_steps", 1)
    _check_int(args, "eval_accumulation_steps", 1, optional=True)
    _check_int(args, "torch_empty_cache_steps", 1, optional=True)
    _check_int(args, "save_total_limit", 0, optional=True)
    _check_number(args, "num_train_epochs", 0)
    if not _is_int(args.max_steps) or (args.max_steps != -1 and args.max_steps <= 0):
        raise ValueError(
            f"max_steps must be -1 (train for num_train_epochs) or a positive integer, "
            f"got {args.max_steps!r}."
        )
    args.max_steps = int(args.max_steps)
    _check_int(args, "past_index", -1)
    if args.eval_delay is None:
        args.eval_delay = 0
    _check_number(args, "eval_delay", 0)


def _validate_optimisation(args) -> None:
    for name in ("learning_rate", "max_grad_norm", "weight_decay", "adam_epsilon"):
        _check_number(args, name, 0)
    _check_number(args, "adam_beta1", 0, 1, high_open=True)
    _check_number(args, "adam_beta2", 0, 1, high_open=True)
    _check_number(args, "label_smoothing_factor", 0, 1, high_open=True)
    _check_number(args, "warmup_ratio", 0, 1)
    _normalise_warmup_steps(args)
    if args.neftune_noise_alpha is not None and (
        not _is_number(args.neftune_noise_alpha) or args.neftune_noise_alpha <= 0
    ):
        raise ValueError(
            f"neftune_noise_alpha must be None (off) or a positive number such as 5.0, "
            f"got {args.neftune_noise_alpha!r}."
        )
    if not _is_int(args.seed):
        raise ValueError(f"seed must be an integer, got {args.seed!r}.")
    if args.data_seed is not None and not _is_int(args.data_seed):
        raise ValueError(
            f"data_seed must be an integer or None (reuse seed), got {args.data_seed!r}."
        )
    _validate_optim_args(args.optim_args)


def _normalise_warmup_steps(args) -> None:
    value = args.warmup_steps
    if not _is_number(value) or value < 0:
        raise ValueError(
            f"warmup_steps must be a step count >= 0 or a ratio in [0, 1), got {value!r}."
        )
    if value >= 1 and not float(value).is_integer():
        raise ValueError(
            f"warmup_steps={value!r}: values of 1 or more count steps and must be whole; "
            f"use {math.ceil(value)} or a ratio below 1."
        )
    args.warmup_steps = _as_int_if_whole(value) if value >= 1 else value


def _validate_optim_args(optim_args) -> None:
    if optim_args is None:
        return
    if not isinstance(optim_args, str):
        raise ValueError(f"optim_args must be a 'key=value,key=value' string, got {optim_args!r}.")
    for pair in optim_args.split(","):
        key, sep, _ = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"optim_args={optim_args!r} is malformed at {pair!r}; "
                "write it as 'key=value,key=value', e.g. 'betas=0.9,weight_decouple=True'."
            )


def _normalise_step_intervals(args) -> None:
    _normalise_interval(args, "logging_steps", args.logging_strategy, "logging_strategy")
    _normalise_interval(args, "save_steps", args.save_strategy, "save_strategy")
    if args.eval_strategy == IntervalStrategy.STEPS and args.eval_steps is None:
        if not _is_number(args.logging_steps) or args.logging_steps <= 0:
            raise ValueError(
                "eval_strategy='steps' needs a positive eval_steps; it was not set and "
                f"logging_steps={args.logging_steps!r} cannot stand in for it. Set eval_steps."
            )
        args.eval_steps = args.logging_steps
    _normalise_interval(args, "eval_steps", args.eval_strategy, "eval_strategy")


def _normalise_interval(args, name: str, strategy, strategy_name: str) -> None:
    """Steps are a positive whole count, or a float in (0, 1) the loop scales by total steps."""
    value = getattr(args, name)
    if strategy != IntervalStrategy.STEPS:
        setattr(args, name, _as_int_if_whole(value))
        return
    if not _is_number(value) or value <= 0:
        raise ValueError(
            f"{name}={value!r} is invalid with {strategy_name}='steps': give a positive step count "
            "(e.g. 500) or a ratio of the total training steps in (0, 1)."
        )
    if value >= 1 and not float(value).is_integer():
        raise ValueError(
            f"{name}={value!r}: values of 1 or more count steps and must be whole; "
            f"use {round(value)} or a ratio below 1."
        )
    setattr(args, name, _as_int_if_whole(value))


def _resolve_best_model(args) -> None:
    evaluates = args.eval_strategy != IntervalStrategy.NO
    if args.save_strategy == SaveStrategy.BEST and not evaluates:
        raise ValueError(
            "save_strategy='best' saves when the evaluation metric improves, so it needs "
            "evaluation: set eval_strategy to 'steps' or 'epoch'."
        )
    if args.lr_scheduler_type in METRIC_SCHEDULER_TYPES and not evaluates:
        raise ValueError(
            f"lr_scheduler_type='{args.lr_scheduler_type.value}' steps on an evaluation metric: "
            "set eval_strategy to 'steps' or 'epoch'."
        )
    if args.load_best_model_at_end:
        _check_load_best_model(args)
    wants_metric = (
        args.load_best_model_at_end
        or args.save_strategy == SaveStrategy.BEST
        or args.lr_scheduler_type in METRIC_SCHEDULER_TYPES
    )
    if args.metric_for_best_model is None and wants_metric:
        args.metric_for_best_model = "loss"
    if args.metric_for_best_model is not None:
        if not isinstance(args.metric_for_best_model, str):
            raise ValueError(
                f"metric_for_best_model must be a metric name such as 'loss' or 'eval_accuracy', "
                f"got {args.metric_for_best_model!r}."
            )
        if args.greater_is_better is None:
            args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    _check_bool(args, "greater_is_better", optional=True)


def _check_load_best_model(args) -> None:
    if args.eval_strategy == IntervalStrategy.NO:
        raise ValueError(
            "load_best_model_at_end=True needs evaluations to pick the best checkpoint: "
            "set eval_strategy to 'steps' or 'epoch' (it is 'no')."
        )
    if args.save_strategy == SaveStrategy.BEST:
        return
    if args.save_strategy.value != args.eval_strategy.value:
        raise ValueError(
            "load_best_model_at_end=True requires save_strategy to match eval_strategy, got "
            f"save_strategy='{args.save_strategy.value}' and "
            f"eval_strategy='{args.eval_strategy.value}'; set both to the same value "
            "(or use save_strategy='best')."
        )
    if args.eval_strategy == IntervalStrategy.STEPS:
        _check_save_is_multiple_of_eval(args.save_steps, args.eval_steps)


def _check_save_is_multiple_of_eval(save_steps, eval_steps) -> None:
    if (save_steps < 1) != (eval_steps < 1):
        raise ValueError(
            "load_best_model_at_end=True needs save_steps and eval_steps to be both ratios (< 1) "
            f"or both step counts, got save_steps={save_steps} and eval_steps={eval_steps}."
        )
    quotient = save_steps / eval_steps
    if not math.isclose(quotient, round(quotient), rel_tol=0.0, abs_tol=1e-9) or quotient < 1:
        suggestion = round(eval_steps * max(1, math.ceil(quotient)), 10)
        raise ValueError(
            "load_best_model_at_end=True requires save_steps to be a round multiple of "
            f"eval_steps, got save_steps={save_steps} and eval_steps={eval_steps}; "
            f"use e.g. save_steps={suggestion}."
        )


def _validate_precision(args) -> None:
    for name in ("fp16", "bf16", "fp16_full_eval", "bf16_full_eval"):
        _check_bool(args, name)
    _check_bool(args, "tf32", optional=True)
    if args.fp16 and args.bf16:
        raise ValueError("fp16=True and bf16=True cannot both be set; choose one precision.")
    if args.fp16_full_eval and args.bf16_full_eval:
        raise ValueError(
            "fp16_full_eval=True and bf16_full_eval=True cannot both be set; choose one."
        )
    _check_choice(args, "half_precision_backend", HALF_PRECISION_BACKENDS)
    _check_choice(args, "fp16_backend", HALF_PRECISION_BACKENDS)
    _check_choice(args, "fp16_opt_level", FP16_OPT_LEVELS)
    # fp16_backend is the deprecated spelling of half_precision_backend.
    if args.fp16_backend != "auto" and args.half_precision_backend == "auto":
        args.half_precision_backend = args.fp16_backend


def _validate_dataloader(args) -> None:
    _check_int(args, "dataloader_num_workers", 0)
    _check_int(args, "dataloader_prefetch_factor", 1, optional=True)
    in_process = args.dataloader_num_workers == 0
    if in_process and args.dataloader_prefetch_factor is not None:
        raise ValueError(
            f"dataloader_prefetch_factor={args.dataloader_prefetch_factor} only applies when "
            "batches are loaded by worker processes; set dataloader_num_workers > 0 or leave "
            "dataloader_prefetch_factor=None."
        )
    if in_process and args.dataloader_persistent_workers:
        raise ValueError(
            "dataloader_persistent_workers=True keeps loader processes alive, but "
            "dataloader_num_workers=0 starts none; set dataloader_num_workers > 0."
        )


def _validate_choices(args) -> None:
    _check_choice(args, "log_level", tuple(LOG_LEVELS))
    _check_choice(args, "log_level_replica", tuple(LOG_LEVELS))
    _check_choice(args, "ray_scope", RAY_SCOPES)
    if not isinstance(args.length_column_name, str):
        raise ValueError(f"length_column_name must be a str, got {args.length_column_name!r}.")
    if args.ddp_backend is not None and args.ddp_backend not in RAY_DDP_BACKENDS:
        raise ValueError(
            f"ddp_backend={args.ddp_backend!r} is not supported: Ray Train sets up the process "
            "group with 'gloo' or 'nccl'; pass one of those or leave ddp_backend=None."
        )


def _load_json_object(value, name: str, *, allow_path: bool):
    """A dict stays a (copied) dict; a string is JSON text or, where allowed, a JSON file path."""
    if value is None or isinstance(value, dict):
        return None if value is None else dict(value)
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a dict or a JSON string, got {type(value).__name__}.")
    text = os.fspath(value)
    if allow_path and os.path.isfile(text):
        with open(text, encoding="utf-8") as handle:
            text = handle.read()
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        where = "a path to an existing JSON file or " if allow_path else ""
        raise ValueError(f"{name}={value!r} is not {where}valid JSON object text.") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{name} must hold a JSON object ({{...}}), got {loaded!r}.")
    return loaded


def _normalise_configs(args) -> None:
    args.lr_scheduler_kwargs = _load_json_object(
        args.lr_scheduler_kwargs, "lr_scheduler_kwargs", allow_path=False
    ) or {}
    args.gradient_checkpointing_kwargs = _load_json_object(
        args.gradient_checkpointing_kwargs, "gradient_checkpointing_kwargs", allow_path=False
    )
    fsdp_config = _load_json_object(args.fsdp_config, "fsdp_config", allow_path=True) or {}
    # Config files often spell keys "fsdp_min_num_params"; the loop reads the short names.
    args.fsdp_config = {k[5:] if k.startswith("fsdp_") else k: v for k, v in fsdp_config.items()}
    args.deepspeed = _load_json_object(args.deepspeed, "deepspeed", allow_path=True)
    args.accelerator_config = _load_json_object(
        args.accelerator_config, "accelerator_config", allow_path=True
    )


def _split_options(value, name: str, enum_cls) -> list:
    """Accepts ``"a b"``, ``["a b"]`` or ``["a", "b"]``; returns enum members, deduplicated."""
    if value is None or value is False:
        return []
    if isinstance(value, str):
        words = value.split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        words = [word for item in value for word in str(item).split()]
    else:
        raise ValueError(
            f"{name} must be a space-separated string or a list of str, got {value!r}."
        )
    parsed = []
    for word in words:
        option = enum_cls.parse(word, name)
        if option not in parsed:
            parsed.append(option)
    return parsed


def _normalise_lists(args) -> None:
    if args.fsdp is True:
        args.fsdp = [FSDPOption.FULL_SHARD]
    args.fsdp = _split_options(args.fsdp, "fsdp", FSDPOption)
    args.debug = _split_options(args.debug, "debug", DebugOption)
    args.report_to = _normalise_report_to(args.report_to)
    args.label_names = _optional_str_list(args.label_names, "label_names", "['labels']")
    args.optim_target_modules = _optional_str_list(
        args.optim_target_modules, "optim_target_modules", "['attn', 'mlp']", allow_str=True
    )
    args.include_for_metrics = _normalise_metric_includes(args)


def _optional_str_list(value, name: str, example: str, *, allow_str: bool = False):
    if value is None or (allow_str and isinstance(value, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{name} must be None or a list of str such as {example}, got {value!r}.")


def _normalise_report_to(value) -> list:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"report_to must be a str or a list of str, got {value!r}.")
    if "none" in names:
        return []
    if "all" in names:  # every shipped integration whose library is installed, as HF resolves it
        from raytrainer.integrations import installed_integrations

        return installed_integrations()
    unknown = [n for n in names if n not in KNOWN_INTEGRATIONS]
    if unknown:
        choices = ", ".join(sorted(KNOWN_INTEGRATIONS))
        raise ValueError(
            f"report_to has unknown integration(s) {unknown}; "
            f"use 'none', 'all' or any of: {choices}."
        )
    return list(dict.fromkeys(names))


def _normalise_metric_includes(args) -> list:
    value = args.include_for_metrics
    if value is None:
        value = []
    if not isinstance(value, (list, tuple)) or any(v not in METRIC_INCLUDES for v in value):
        raise ValueError(
            f"include_for_metrics must be a list drawn from {list(METRIC_INCLUDES)}, got {value!r}."
        )
    includes = list(dict.fromkeys(value))
    # include_inputs_for_metrics is the deprecated spelling of include_for_metrics=["inputs"].
    if args.include_inputs_for_metrics and "inputs" not in includes:
        includes.append("inputs")
    return includes


def _validate_distributed(args) -> None:
    _check_int(args, "ddp_timeout", 1)
    _check_int(args, "ddp_bucket_cap_mb", 1, optional=True)
    _check_int(args, "tpu_num_cores", 1, optional=True)
    if not _is_int(args.local_rank):
        raise ValueError(f"local_rank must be an integer, got {args.local_rank!r}.")
    if args.fsdp and args.deepspeed:
        raise ValueError(
            "fsdp and deepspeed cannot be used together; both shard the model. Keep one of them."
        )
    _check_fsdp_options(args.fsdp, args.fsdp_config)


def _check_fsdp_options(options: list, config: dict) -> None:
    if FSDPOption.FULL_SHARD in options and FSDPOption.SHARD_GRAD_OP in options:
        raise ValueError("fsdp: 'full_shard' and 'shard_grad_op' exclude each other; keep one.")
    sharding = {FSDPOption.FULL_SHARD, FSDPOption.SHARD_GRAD_OP}
    if FSDPOption.OFFLOAD in options and not sharding.intersection(options):
        raise ValueError(
            "fsdp: 'offload' needs a sharding mode; use 'full_shard offload' or "
            "'shard_grad_op offload'."
        )
    if config.get("min_num_params", 0) and config.get("transformer_layer_cls_to_wrap"):
        raise ValueError(
            "fsdp_config: 'min_num_params' and 'transformer_layer_cls_to_wrap' choose two "
            "different wrapping policies; set only one of them."
        )


def _resolve_compile(args) -> None:
    if args.torch_compile_backend is not None or args.torch_compile_mode is not None:
        args.torch_compile = True
    if args.torch_compile and args.torch_compile_backend is None:
        args.torch_compile_backend = "inductor"  # torch.compile's own default backend


def validate_generation_settings(args) -> None:
    """The fields ``Seq2SeqTrainingArguments`` adds; a path-like config becomes a ``str``."""
    _check_int(args, "generation_max_length", 1, optional=True)
    _check_int(args, "generation_num_beams", 1, optional=True)
    _check_bool(args, "sortish_sampler")
    _check_bool(args, "predict_with_generate")
    if args.sortish_sampler:
        # a "sortish" order (shuffle, then sort chunks of ~50 batches by length, longest first) is
        # exactly what the length-grouped sampler draws
        if args.train_sampling_strategy == "sequential":
            raise ValueError("sortish_sampler=True and train_sampling_strategy='sequential' ask for two different "
                             "orders; keep one.")
        args.group_by_length = True
    config = args.generation_config
    if isinstance(config, os.PathLike):
        args.generation_config = os.fspath(config)
    elif not (config is None or isinstance(config, (str, dict)) or hasattr(config, "to_dict")):
        raise ValueError(
            "generation_config must be None, a path or name, a dict, or an object with to_dict() "
            f"(such as a GenerationConfig), got {type(config).__name__}."
        )


# --------------------------------------------------------------------------- ignored settings


def list_ignored_settings(args) -> list:
    """One line per field set to a non-default value that cannot take effect on this stack."""
    defaults = {f.name: f.default for f in _init_fields(args)}
    apex = "Apex is not used; mixed precision runs on torch.amp"
    checks = [
        (args.tpu_num_cores is not None,
         "tpu_num_cores: TPUs are not supported; Ray workers run on CPUs/GPUs"),
        (args.tpu_metrics_debug or DebugOption.TPU_METRICS_DEBUG in args.debug,
         "tpu_metrics_debug / debug='tpu_metrics_debug': there are no TPU metrics without TPUs"),
        (args.use_ipex, "use_ipex: Intel Extension for PyTorch is not integrated"),
        (args.jit_mode_eval,
         "jit_mode_eval: TorchScript tracing is not used; try torch_compile=True"),
        (args.half_precision_backend == "apex", f"half_precision_backend='apex': {apex}"),
        (args.fp16_backend == "apex", f"fp16_backend='apex': {apex}"),
        (args.fp16_opt_level != defaults["fp16_opt_level"],
         "fp16_opt_level: only Apex AMP reads it, and Apex is not used"),
        (args.use_mps_device,
         "use_mps_device: deprecated; the device is chosen on each Ray worker"),
        (args.torchdynamo is not None,
         "torchdynamo: deprecated and not read; use torch_compile_backend instead"),
        (args.use_liger_kernel, "use_liger_kernel: Liger kernels are not integrated"),
        (args.local_rank != -1,
         "local_rank: Ray Train assigns ranks to its workers; this value is not read"),
        (DebugOption.UNDERFLOW_OVERFLOW in args.debug,
         "debug='underflow_overflow': the underflow/overflow detector is not implemented"),
        (args.optim_target_modules is not None,
         "optim_target_modules: only GaLore/APOLLO optimizers read it, and raytrainer ships neither"),
        (args.split_batches is not None or bool(args.accelerator_config),
         "split_batches / accelerator_config: accelerate's data dispatch is not used; Ray shards the data"),
        (bool(args.fsdp_config) and not args.fsdp,
         "fsdp_config: has no effect while fsdp is empty; set fsdp (e.g. 'full_shard') to use it"),
    ]
    notes = [text for applies, text in checks if applies]
    for integration in args.report_to:
        if integration not in SHIPPED_INTEGRATIONS:
            notes.append(
                f"report_to={integration!r}: no such integration ships with raytrainer; "
                "log through a TrainerCallback instead"
            )
    return notes


def _init_fields(args):
    return [f for f in dataclasses.fields(args) if f.init]
