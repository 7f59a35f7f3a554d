"""A DeepSpeed config from ``TrainingArguments.deepspeed`` with HF's ``"auto"`` values filled in.

As in the HF Trainer, ``"auto"`` takes the value of the matching TrainingArguments field, and an
explicit value that contradicts TrainingArguments is an error that names both. Values that depend
on the run's length (the scheduler's step counts) are filled when the run is planned. Pure Python:
DeepSpeed itself is imported only where the model trains.
"""

import copy

_BUCKET_DEFAULTS = {"reduce_bucket_size": 5e8, "stage3_prefetch_bucket_size": 5e7,
                    "stage3_param_persistence_threshold": 1e5}  # DeepSpeed's own, for models without hidden_size


def build_config(args, model, world_size: int = None, num_training_steps: int = None) -> dict:
    """The config for a run of ``world_size`` ranks (default: this process's) and, once known, of
    ``num_training_steps`` optimizer steps; a ValueError for a bad or contradicting value."""
    config = copy.deepcopy(args.deepspeed)
    if not isinstance(config, dict):
        raise ValueError(f"TrainingArguments.deepspeed must be a dict or a JSON file path, got {type(config).__name__}.")
    world_size = world_size or args.world_size
    mismatches = []

    def fill(section: dict, key: str, value, name: str, path: str):
        if section.get(key) == "auto":
            section[key] = value
        elif key in section and value is not None and section[key] != value:
            mismatches.append(f"{path}={section[key]!r} but TrainingArguments {name}={value!r}")

    micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    fill(config, "train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size", "train_micro_batch_size_per_gpu")
    fill(config, "gradient_accumulation_steps", accumulation, "gradient_accumulation_steps", "gradient_accumulation_steps")
    fill(config, "train_batch_size", micro * accumulation * world_size,
         f"per_device_train_batch_size x gradient_accumulation_steps x {world_size} workers", "train_batch_size")
    fill(config, "gradient_clipping", args.max_grad_norm, "max_grad_norm", "gradient_clipping")
    config.setdefault("train_micro_batch_size_per_gpu", micro)
    config.setdefault("gradient_accumulation_steps", accumulation)
    config.setdefault("gradient_clipping", args.max_grad_norm)
    _fill_precision(config, args, fill)
    _fill_optimizer(config.get("optimizer"), args, fill)
    _fill_scheduler(config.get("scheduler"), args, fill, num_training_steps)
    _fill_zero(config.setdefault("zero_optimization", {}), model)
    if mismatches:
        raise ValueError("deepspeed config contradicts TrainingArguments: " + "; ".join(mismatches)
                         + ". Set these config values to \"auto\" or make both agree.")
    return config


def _fill_precision(config: dict, args, fill) -> None:
    for name in ("fp16", "bf16"):
        section = config.get(name)
        if isinstance(section, dict):
            fill(section, "enabled", bool(getattr(args, name)), name, f"{name}.enabled")
        elif getattr(args, name):
            config[name] = {"enabled": True}
    if config.get("fp16", {}).get("enabled") and config.get("bf16", {}).get("enabled"):
        raise ValueError("deepspeed config enables both fp16 and bf16; keep one.")


def _fill_optimizer(optimizer, args, fill) -> None:
    if optimizer is None:
        return
    params = optimizer.setdefault("params", {})
    fill(params, "lr", args.learning_rate, "learning_rate", "optimizer.params.lr")
    fill(params, "betas", [args.adam_beta1, args.adam_beta2], "adam_beta1/adam_beta2", "optimizer.params.betas")
    fill(params, "eps", args.adam_epsilon, "adam_epsilon", "optimizer.params.eps")
    fill(params, "weight_decay", args.weight_decay, "weight_decay", "optimizer.params.weight_decay")


def _fill_scheduler(scheduler, args, fill, num_training_steps) -> None:
    if scheduler is None:
        return
    params = scheduler.setdefault("params", {})
    fill(params, "warmup_min_lr", 0, "(no warmup floor)", "scheduler.params.warmup_min_lr")
    fill(params, "warmup_max_lr", args.learning_rate, "learning_rate", "scheduler.params.warmup_max_lr")
    if num_training_steps is None:
        return  # known once the run is planned
    fill(params, "warmup_num_steps", args.get_warmup_steps(num_training_steps), "warmup_steps/warmup_ratio",
         "scheduler.params.warmup_num_steps")
    if "total_num_steps" in params:
        fill(params, "total_num_steps", num_training_steps, "the run's optimizer steps", "scheduler.params.total_num_steps")


def _fill_zero(zero: dict, model) -> None:
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    hidden = hidden or max(getattr(getattr(model, "config", None), "hidden_sizes", None) or [0]) or None
    values = ({"reduce_bucket_size": hidden * hidden, "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
               "stage3_param_persistence_threshold": 10 * hidden} if hidden else _BUCKET_DEFAULTS)
    for key, value in values.items():
        if zero.get(key) == "auto":
            zero[key] = int(value)
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"deepspeed config zero_optimization.stage={stage!r}; ZeRO stages are 0, 1, 2 and 3.")


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))
