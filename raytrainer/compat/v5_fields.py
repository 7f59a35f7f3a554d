"""The ``TrainingArguments`` fields transformers v5 added, their checks and what they mean here.

Each field either takes effect (``activation_checkpointing`` is ``gradient_checkpointing``,
``train_sampling_strategy`` picks the training sampler, ``enable_jit_checkpoint`` installs the
SIGTERM checkpoint, ``ddp_static_graph`` and the ``dataloader_*`` options reach torch) or, when it
cannot apply on this stack, is listed by ``ignored_settings`` for the one warning the arguments
print.
"""

from importlib import metadata

SAMPLING_STRATEGIES = ("random", "sequential", "group_by_length", "batch_rebalance")
TOKEN_COUNTS = ("all", "non_padding", "no")
MULTIPROCESSING_CONTEXTS = ("fork", "spawn", "forkserver")
TRACKIO_FIELDS = ("trackio_space_id", "trackio_bucket_id", "trackio_static_space_id")


def default_optimizer_name() -> str:
    """v5's default: the fused AdamW kernel from torch 2.8 on (it runs on CPU and CUDA), the plain
    one before. Read from the installed version so that building arguments never imports torch."""
    try:
        major, minor = (int(part) for part in metadata.version("torch").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return "adamw_torch"
    return "adamw_torch_fused" if (major, minor) >= (2, 8) else "adamw_torch"


def normalise(args) -> None:
    """Check the v5 fields and fold the ones that alias older fields into them."""
    from raytrainer._args_validation import _check_bool, _check_choice, _load_json_object

    for name in ("use_cache", "enable_jit_checkpoint", "dataloader_in_order"):
        _check_bool(args, name)
    for name in ("activation_checkpointing", "ddp_static_graph"):
        _check_bool(args, name, optional=True)
    if args.activation_checkpointing is not None:
        args.gradient_checkpointing = args.activation_checkpointing
    args.activation_checkpointing_kwargs = _load_json_object(
        args.activation_checkpointing_kwargs, "activation_checkpointing_kwargs", allow_path=False
    )
    if args.activation_checkpointing_kwargs is not None:
        args.gradient_checkpointing_kwargs = dict(args.activation_checkpointing_kwargs)
    args.include_num_input_tokens_seen = _token_count_mode(args.include_num_input_tokens_seen)
    _normalise_sampling(args, _check_choice)
    _check_loader_context(args)
    if args.use_cpu:
        args.dataloader_pin_memory = False  # pinned pages only speed up copies to a GPU
    if isinstance(args.parallelism_config, str):  # JSON text or a JSON file, from a command line
        args.parallelism_config = _load_json_object(args.parallelism_config, "parallelism_config", allow_path=True)
    if args.liger_kernel_config is not None and not isinstance(args.liger_kernel_config, dict):
        raise ValueError(f"liger_kernel_config must be a dict or None, got {args.liger_kernel_config!r}.")
    if not isinstance(args.project, str):
        raise ValueError(f"project must be a str, got {args.project!r}.")


def _token_count_mode(value) -> str:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        value = value.lower() in ("true", "1")  # from a command line or a YAML/JSON config
    if value is True:
        return "all"
    if value is False or value is None:
        return "no"
    if value not in TOKEN_COUNTS:
        raise ValueError(
            f"include_num_input_tokens_seen={value!r} is not supported; use 'all', 'non_padding', 'no' "
            "or a bool (True counts all tokens)."
        )
    return value


def _normalise_sampling(args, check_choice) -> None:
    """``group_by_length`` (v4) and ``train_sampling_strategy`` (v5) describe the same choice."""
    check_choice(args, "train_sampling_strategy", SAMPLING_STRATEGIES)
    strategy = args.train_sampling_strategy
    if args.group_by_length and strategy == "random":
        args.train_sampling_strategy = "group_by_length"
    elif args.group_by_length and strategy == "sequential":
        raise ValueError(
            "group_by_length=True and train_sampling_strategy='sequential' ask for two different orders; "
            "keep one (train_sampling_strategy='group_by_length' is the v5 spelling of group_by_length)."
        )
    elif strategy in ("group_by_length", "batch_rebalance"):
        args.group_by_length = True  # batch_rebalance falls back to length grouping (see the warning)


def _check_loader_context(args) -> None:
    context = args.dataloader_multiprocessing_context
    if context is None:
        return
    if context not in MULTIPROCESSING_CONTEXTS:
        raise ValueError(
            f"dataloader_multiprocessing_context={context!r} is not a start method; use one of "
            f"{', '.join(repr(c) for c in MULTIPROCESSING_CONTEXTS)} or None."
        )
    if args.dataloader_num_workers == 0:
        raise ValueError(
            f"dataloader_multiprocessing_context={context!r} starts loader processes, but "
            "dataloader_num_workers=0 starts none; set dataloader_num_workers > 0 or leave the context None."
        )


def ignored_settings(args, defaults: dict) -> list:
    """One line per v5 field set to something this stack cannot do, with what happens instead."""
    notes = []
    if args.liger_kernel_config is not None:
        notes.append("liger_kernel_config: Liger kernels are not integrated")
    if args.parallelism_config is not None:
        notes.append(
            "parallelism_config: accelerate's tensor/context/sequence parallelism and sharding are not "
            "used; Ray Train runs data parallelism over ScalingConfig(num_workers=...)"
        )
    if args.train_sampling_strategy == "batch_rebalance":
        notes.append(
            "train_sampling_strategy='batch_rebalance': not implemented; batches are grouped by length "
            "instead ('group_by_length'), which also cuts padding"
        )
    if args.project != defaults["project"]:
        notes.append("project: only the Trackio integration reads it, and raytrainer does not ship Trackio")
    notes += [f"{name}: raytrainer does not ship the Trackio integration"
              for name in TRACKIO_FIELDS if getattr(args, name) is not None]
    return notes


def plain_parallelism_config(config):
    """``parallelism_config`` as JSON-ready data: a dict stays, an accelerate object (a dataclass;
    its ``to_json`` returns nothing in accelerate 1.15) becomes the dict of its plain fields."""
    import dataclasses

    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                if isinstance(getattr(config, f.name), (bool, int, float, str, type(None)))}
    if callable(getattr(config, "to_dict", None)):
        return config.to_dict()
    return str(config)
