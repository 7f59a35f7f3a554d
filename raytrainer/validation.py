"""Every check that must fail before any work starts, on the driver (DESIGN.md §1: nothing
validates late). Each message names the argument, what is wrong and how to fix it.

The constructor runs ``validate_trainer_inputs``; ``train()`` runs ``check_output_locations``
before any Ray job starts. A Trainer rebuilt on a Ray worker (``checked_on_driver``) skips both:
the driver already did them, with the driver's view of the run (its ``ScalingConfig``).
"""

import contextlib
import contextvars
import inspect
import os
import tempfile

import torch
import torch.nn as nn

from . import optim as _optim
from . import schedules
from .args import TrainingArguments
from .callbacks import EarlyStoppingCallback, TrainerCallback
from .data import stream_shards, streaming
from .data.loaders import has_length
from .enums import IntervalStrategy
from .loop.precision import choose_precision
from .runtime.scaling import is_local_mode, num_workers

_REBUILT_ON_WORKER = contextvars.ContextVar("raytrainer_rebuilt_on_worker", default=False)


@contextlib.contextmanager
def checked_on_driver():
    """Trainers built inside this block (on a Ray worker, from the driver's blueprint) skip the
    driver's checks and the model probe."""
    token = _REBUILT_ON_WORKER.set(True)
    try:
        yield
    finally:
        _REBUILT_ON_WORKER.reset(token)


def rebuilt_on_worker() -> bool:
    return _REBUILT_ON_WORKER.get()


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
    if schedules.steps_on_metric(optimizers[1]) and args.eval_strategy == IntervalStrategy.NO:
        raise ValueError(f"Trainer: optimizers[1] is a {type(optimizers[1]).__name__}, which steps on an evaluation "
                         "metric, but eval_strategy='no' never evaluates; set eval_strategy to 'steps' or 'epoch'.")
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
    if trainer.scaling_config is not None or trainer.run_config is not None:
        # imported only then: without Ray configs the loop can run where Ray is absent (benchmarks/gpu_check.sh)
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
    check_dataset_type(trainer.train_dataset, "train_dataset")
    eval_sets = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {None: trainer.eval_dataset}
    for key, dataset in eval_sets.items():
        check_dataset_type(dataset, "eval_dataset" if key is None else f"eval_dataset[{key!r}]")
    stream_shards.adopt_ray_datasets(trainer)  # a ray.data.Dataset is streamed with the default options
    stream_shards.check_streams(trainer, num_workers(trainer.scaling_config))
    train = trainer.train_dataset
    if streaming.is_stream(train):
        return
    if train is not None and not has_length(train) and args.max_steps <= 0:
        raise ValueError("Trainer: train_dataset has no length, so epochs cannot be counted; set "
                         "TrainingArguments.max_steps to a positive number.")
    if train is not None and has_length(train) and len(train) == 0:
        raise ValueError("Trainer: train_dataset is empty.")
    for key, dataset in eval_sets.items():
        if dataset is not None and not streaming.is_stream(dataset) and has_length(dataset) and len(dataset) == 0:
            name = "eval_dataset" if key is None else f"eval_dataset[{key!r}]"
            raise ValueError(f"Trainer: {name} is empty; pass examples to evaluate on, or leave it out.")


def check_dataset_type(dataset, name: str) -> None:
    """A dataset is a map-style dataset (``__getitem__`` + ``__len__``), an iterable one, an HF
    ``datasets`` dataset or a Ray Data stream; anything else is named with what to pass instead."""
    if dataset is None or streaming.is_stream(dataset):
        return
    if isinstance(dataset, (str, os.PathLike)):
        raise TypeError(
            f"Trainer: {name} is the string {os.fspath(dataset)!r}, not a dataset (it would be read as a "
            f"sequence of characters). For a parquet file or folder pass {name}=raytrainer.stream({os.fspath(dataset)!r}); "
            "for other files load them first (e.g. datasets.load_dataset(...) or ray.data.read_csv(...)).")
    if isinstance(dataset, dict):
        raise TypeError(
            f"Trainer: {name} is a dict with keys {sorted(map(str, dataset))[:5]}, not a dataset. Pass one "
            f"dataset (for a DatasetDict, one split such as {name}=splits['train']); only eval_dataset takes a "
            "dict of named datasets.")
    if isinstance(dataset, (bytes, int, float, bool)):
        raise TypeError(
            f"Trainer: {name} is a {type(dataset).__name__} ({dataset!r}), not a dataset. Pass a torch Dataset "
            "(with __getitem__ and __len__), an IterableDataset, a datasets.Dataset, a list of example dicts, or "
            "raytrainer.stream(...).")
    map_style = hasattr(dataset, "__getitem__") and has_length(dataset)
    if not (map_style or isinstance(dataset, torch.utils.data.IterableDataset) or hasattr(dataset, "__iter__")):
        raise TypeError(
            f"Trainer: {name} ({type(dataset).__name__}) is not a dataset: it has neither __getitem__ with "
            "__len__ nor __iter__. Pass a torch Dataset, an IterableDataset, a datasets.Dataset or "
            "raytrainer.stream(...).")


def check_output_locations(args) -> None:
    """``output_dir`` can be created and written, and ``logging_dir`` could be: checked before any
    Ray job starts, so a typo does not surface at the first save, minutes into training."""
    output_dir = os.path.abspath(args.output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".raytrainer-write-check-"):
            pass
    except OSError as error:
        raise PermissionError(
            f"TrainingArguments.output_dir={args.output_dir!r} cannot be created or written ({error.strerror or error}); "
            "checkpoints and results go there. Choose a folder you can write to.") from None
    logging_dir = getattr(args, "logging_dir", None)
    if logging_dir:
        problem = _unwritable_reason(os.path.abspath(logging_dir))
        if problem:
            raise PermissionError(f"TrainingArguments.logging_dir={logging_dir!r} cannot be created: {problem}. "
                                  "Choose a folder you can write to, or leave logging_dir unset.")


def _unwritable_reason(path: str):
    """Why ``path`` could not be created or written (None if it could), without creating it."""
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def _check_training_features(trainer) -> None:
    args, model = trainer.args, trainer.model
    if args.gradient_checkpointing and not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError(f"TrainingArguments.gradient_checkpointing=True, but {type(model).__name__} has no "
                         "gradient_checkpointing_enable() method; remove the flag or add the method to the model.")
    if args.neftune_noise_alpha is not None and not callable(getattr(model, "get_input_embeddings", None)):
        raise ValueError(f"TrainingArguments.neftune_noise_alpha needs a model with get_input_embeddings(); "
                         f"{type(model).__name__} has none.")
    if args.fsdp or args.deepspeed:
        from .parallel.checks import check_sharding

        check_sharding(args, model, num_workers(trainer.scaling_config) or 1)  # option errors, FSDP2 notes, DeepSpeed installed: here, not on a worker
    if is_local_mode(trainer.scaling_config):
        choose_precision(args, args.device)  # fp16 on a machine without CUDA fails here, not mid-run
    elif (args.fp16 or args.fp16_full_eval) and trainer.scaling_config is not None and not trainer.scaling_config.use_gpu:
        raise ValueError("fp16=True needs GPU workers: set ScalingConfig(use_gpu=True), or use bf16=True on CPU.")


def _check_early_stopping(args, callbacks) -> None:
    if not any(isinstance(cb, EarlyStoppingCallback) or cb is EarlyStoppingCallback for cb in callbacks or []):
        return
    if args.metric_for_best_model is None:  # v5: load_best_model_at_end is no longer required
        raise ValueError("EarlyStoppingCallback needs TrainingArguments.metric_for_best_model (e.g. 'eval_loss'); "
                         "set it, with an eval_strategy of 'steps' or 'epoch'.")
    if args.eval_strategy == IntervalStrategy.NO:
        raise ValueError("EarlyStoppingCallback needs an eval_strategy of 'steps' or 'epoch'.")
