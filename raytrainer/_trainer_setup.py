"""Constructor-time work of the Trainer: default collator and callbacks, and every check that must
fail before training starts (DESIGN.md §1: nothing validates late)."""

import inspect
from collections.abc import Mapping

import torch
import torch.nn as nn

from . import optim as _optim
from . import schedules
from .args import TrainingArguments
from .callbacks import (
    DEFAULT_CALLBACKS,
    CallbackHandler,
    EarlyStoppingCallback,
    TrainerCallback,
    progress_callback_class,
)
from .data import stream_trainer, streaming
from .data.collators import DataCollatorWithPadding, default_data_collator
from .data.loaders import has_length
from .enums import IntervalStrategy, SchedulerType
from .loop.precision import choose_precision

# A model above this size is not probed with a trial forward pass in the constructor; its
# "no loss returned" error comes from the first training step instead.
_PROBE_MAX_PARAMETERS = 50_000_000


def default_collator(processing_class):
    """Padding collator when the processing class can pad (a tokenizer), else the default one."""
    if processing_class is not None and callable(getattr(processing_class, "pad", None)):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator


def build_callback_handler(trainer, callbacks) -> CallbackHandler:
    from .integrations import added_callbacks

    progress = progress_callback_class(trainer.args)
    # report_to's integrations come after the user's callbacks, as in HF (a missing library fails here)
    all_callbacks = list(DEFAULT_CALLBACKS) + list(callbacks or []) + added_callbacks(trainer, callbacks) + [progress]
    return CallbackHandler(all_callbacks, trainer.model, trainer.processing_class,
                           trainer.optimizer, trainer.lr_scheduler)


def resolve_scaling_config(scaling_config):
    """The ScalingConfig a run uses. Without one: a script or notebook attached to a Ray cluster
    (``RAY_ADDRESS`` set, e.g. a job submitted to the cluster) trains on one Ray worker, with a GPU
    when the cluster has one; anything else (a laptop, tests, a Ray Tune trial) uses Ray Train's
    local mode in this process."""
    from ray.train import ScalingConfig

    if scaling_config is not None:
        return scaling_config
    if not _attached_to_cluster():
        return ScalingConfig(num_workers=0)
    import ray

    if not ray.is_initialized():
        ray.init()
    return ScalingConfig(num_workers=1, use_gpu=ray.cluster_resources().get("GPU", 0) > 0)


def _attached_to_cluster() -> bool:
    import os

    if not os.environ.get("RAY_ADDRESS"):
        return False
    import ray

    # inside a Ray task or actor (a Tune trial, a Train worker) the run stays where it is
    return not (ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None)


def is_local_mode(scaling_config) -> bool:
    """Whether the loop runs in this process. ``None`` counts as local unless this driver is
    attached to a cluster (see ``resolve_scaling_config``)."""
    if scaling_config is None:
        return not _attached_to_cluster()
    return scaling_config.num_workers in (0, None)


def validate_trainer_inputs(trainer, optimizers, callbacks) -> None:
    args = trainer.args
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"Trainer: args must be a TrainingArguments, got {type(args).__name__}.")
    _check_model(trainer)
    _check_optimizers(trainer, optimizers)
    _check_callables(trainer, callbacks)
    _check_ray_configs(trainer)
    _check_datasets(trainer)
    _check_training_features(trainer)
    _optim.validate_optimizer_choice(args)
    schedules.validate_scheduler_kwargs(args.lr_scheduler_type, args.lr_scheduler_kwargs)
    if args.lr_scheduler_type == SchedulerType.REDUCE_ON_PLATEAU and args.eval_strategy == IntervalStrategy.NO:
        raise ValueError("TrainingArguments: lr_scheduler_type='reduce_lr_on_plateau' steps on an evaluation "
                         "metric; set eval_strategy to 'steps' or 'epoch'.")
    _check_early_stopping(args, callbacks)


def _check_model(trainer) -> None:
    if trainer.model is None:
        raise ValueError("Trainer: pass a model or a model_init function.")
    if not isinstance(trainer.model, nn.Module):
        raise TypeError(f"Trainer: model must be a torch.nn.Module, got {type(trainer.model).__name__}.")
    if trainer.model_init is not None and not callable(trainer.model_init):
        raise TypeError("Trainer: model_init must be a callable returning an nn.Module.")


def _check_optimizers(trainer, optimizers) -> None:
    if not (isinstance(optimizers, tuple) and len(optimizers) == 2):
        raise ValueError("Trainer: optimizers must be a tuple (optimizer, lr_scheduler); use (None, None) for defaults.")
    optimizer, scheduler = optimizers
    if trainer.model_init is not None and (optimizer is not None or scheduler is not None):
        raise RuntimeError(
            "Trainer: optimizers= cannot be combined with model_init=, because each model_init call builds "
            "new parameters the given optimizer does not hold. Subclass Trainer and override "
            "create_optimizer_and_scheduler instead."
        )
    if trainer.optimizer_cls_and_kwargs is not None:
        if optimizer is not None:
            raise RuntimeError("Trainer: pass either optimizers= or optimizer_cls_and_kwargs=, not both.")
        cls_and_kwargs = trainer.optimizer_cls_and_kwargs
        if not (isinstance(cls_and_kwargs, tuple) and len(cls_and_kwargs) == 2 and isinstance(cls_and_kwargs[1], dict)):
            raise ValueError("Trainer: optimizer_cls_and_kwargs must be a tuple (optimizer_class, kwargs_dict).")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Trainer: optimizers[0] must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")


def _check_callables(trainer, callbacks) -> None:
    for cb in callbacks or []:
        is_callback = isinstance(cb, TrainerCallback) or (isinstance(cb, type) and issubclass(cb, TrainerCallback))
        if not is_callback:
            raise TypeError(f"Trainer: callbacks must be TrainerCallback instances or classes, got {cb!r}.")
    for name in ("compute_metrics", "compute_loss_func", "preprocess_logits_for_metrics", "data_collator"):
        value = getattr(trainer, name)
        if value is not None and not callable(value):
            raise TypeError(f"Trainer: {name} must be callable, got {type(value).__name__}.")
    if trainer.args.batch_eval_metrics and trainer.compute_metrics is not None:
        if "compute_result" not in inspect.signature(trainer.compute_metrics).parameters:
            raise ValueError("Trainer: with batch_eval_metrics=True, compute_metrics must take a compute_result "
                             "argument (True on the last batch, when it should return the final metrics).")


def _check_ray_configs(trainer) -> None:
    from ray.train import RunConfig, ScalingConfig

    if trainer.scaling_config is not None and not isinstance(trainer.scaling_config, ScalingConfig):
        raise TypeError("Trainer: scaling_config must be a ray.train.ScalingConfig, got "
                        f"{type(trainer.scaling_config).__name__}.")
    if trainer.run_config is not None and not isinstance(trainer.run_config, RunConfig):
        raise TypeError(f"Trainer: run_config must be a ray.train.RunConfig, got {type(trainer.run_config).__name__}.")
    if not is_local_mode(trainer.scaling_config) and trainer.args.batch_eval_metrics:
        raise ValueError(
            "TrainingArguments.batch_eval_metrics=True is not supported with Ray Train workers (each worker "
            "evaluates a shard of a different length); compute metrics on the whole set instead."
        )


def _check_datasets(trainer) -> None:
    args = trainer.args
    if args.eval_strategy != IntervalStrategy.NO and trainer.eval_dataset is None:
        raise ValueError(f"Trainer: eval_strategy='{args.eval_strategy}' needs an eval_dataset; pass one or set "
                         "eval_strategy='no'.")
    stream_trainer.adopt_ray_datasets(trainer)  # a ray.data.Dataset is streamed with the default options
    config = trainer.scaling_config
    stream_trainer.check_streams(trainer, None if is_local_mode(config) else (config.num_workers if config else 1))
    train = trainer.train_dataset
    if streaming.is_stream(train):
        return
    if train is not None and not has_length(train) and args.max_steps <= 0:
        raise ValueError("Trainer: train_dataset has no length, so epochs cannot be counted; set "
                         "TrainingArguments.max_steps to a positive number.")
    if train is not None and has_length(train) and len(train) == 0:
        raise ValueError("Trainer: train_dataset is empty.")


def _check_training_features(trainer) -> None:
    args, model = trainer.args, trainer.model
    if args.gradient_checkpointing and not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError(f"TrainingArguments.gradient_checkpointing=True, but {type(model).__name__} has no "
                         "gradient_checkpointing_enable() method; remove the flag or add the method to the model.")
    if args.neftune_noise_alpha is not None and not callable(getattr(model, "get_input_embeddings", None)):
        raise ValueError(f"TrainingArguments.neftune_noise_alpha needs a model with get_input_embeddings(); "
                         f"{type(model).__name__} has none.")
    if args.fsdp or args.deepspeed:
        raise ValueError("TrainingArguments.fsdp/deepspeed: raytrainer does not run FSDP or DeepSpeed yet; "
                         "remove the setting to train with plain data parallelism.")
    if is_local_mode(trainer.scaling_config):
        choose_precision(args, args.device)  # fp16 on a machine without CUDA fails here, not mid-run
    elif (args.fp16 or args.fp16_full_eval) and trainer.scaling_config is not None and not trainer.scaling_config.use_gpu:
        raise ValueError("fp16=True needs GPU workers: set ScalingConfig(use_gpu=True), or use bf16=True on CPU.")


def _check_early_stopping(args, callbacks) -> None:
    if not any(isinstance(cb, EarlyStoppingCallback) or cb is EarlyStoppingCallback for cb in callbacks or []):
        return
    if not args.load_best_model_at_end:
        raise ValueError("EarlyStoppingCallback needs TrainingArguments.load_best_model_at_end=True.")
    if args.metric_for_best_model is None:
        raise ValueError("EarlyStoppingCallback needs TrainingArguments.metric_for_best_model.")
    if args.eval_strategy == IntervalStrategy.NO:
        raise ValueError("EarlyStoppingCallback needs an eval_strategy of 'steps' or 'epoch'.")


def probe_model_returns_loss(trainer) -> None:
    """Run one example through the model so a model that returns no loss fails here, not mid-run.

    Skipped for large models and for subclasses that compute the loss themselves. The probe runs in
    eval mode with gradients off and restores the RNG, so training is unaffected."""
    from .trainer import Trainer

    dataset = trainer.train_dataset
    if (dataset is None or not has_length(dataset)
            or type(trainer).compute_loss is not Trainer.compute_loss
            or sum(p.numel() for p in trainer.model.parameters()) > _PROBE_MAX_PARAMETERS
            or not is_local_mode(trainer.scaling_config)):
        return
    loader = trainer.get_train_dataloader()
    example = loader.dataset[0]
    if not isinstance(example, Mapping):
        raise TypeError(
            f"Trainer: train_dataset items must be dicts of model inputs, got {type(example).__name__}. Return "
            "dicts such as {'input': x, 'labels': y}, or pass a data_collator that builds them."
        )
    batch = trainer._prepare_inputs(loader.collate_fn([example]))
    model = trainer.model.to(trainer.args.device)
    was_training = model.training
    rng = torch.random.get_rng_state()
    try:
        model.eval()
        with torch.no_grad():
            trainer.compute_loss(model, batch)
    finally:
        torch.random.set_rng_state(rng)
        model.train(was_training)

