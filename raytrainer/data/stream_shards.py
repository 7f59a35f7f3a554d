"""How the Trainer uses Ray Data streams: adoption and checks when it is built, the datasets it
hands to Ray Train (driver), and the batches of each rank (where the loop runs).

Names: the train stream is registered with Ray Train as ``"train"`` and split equally between the
workers; an eval stream as ``"eval"`` (``"eval_<key>"`` for a dict of eval sets), unsplit, each
worker reading its contiguous share.
"""

from __future__ import annotations

import logging
from typing import Optional

from .streaming import StreamingDataset, _is_ray_dataset, as_stream, is_stream

logger = logging.getLogger("raytrainer")

TRAIN_NAME, EVAL_NAME = "train", "eval"


def adopt_ray_datasets(trainer) -> None:
    """Wrap each ``ray.data.Dataset`` given to the Trainer in a stream, so Ray workers rebuild the
    Trainer with the stream (its row count settled once, here; the blueprint takes the Trainer's
    datasets) and never receive the Ray dataset itself."""
    adopted = {}

    def adopt(value):
        if isinstance(value, dict) and any(_is_ray_dataset(item) for item in value.values()):
            return {key: adopt(item) for key, item in value.items()}
        if not _is_ray_dataset(value):
            return value
        return adopted.setdefault(id(value), StreamingDataset(value))

    trainer.train_dataset = adopt(trainer.train_dataset)
    trainer.eval_dataset = adopt(trainer.eval_dataset)


def _eval_streams(eval_dataset) -> dict:
    if isinstance(eval_dataset, dict):
        return {f"{EVAL_NAME}_{key}": value for key, value in eval_dataset.items() if is_stream(value)}
    return {EVAL_NAME: eval_dataset} if is_stream(eval_dataset) else {}


def check_streams(trainer, num_workers: Optional[int]) -> None:
    """Constructor-time checks of the streams; ``num_workers`` is None in local mode."""
    args, train = trainer.args, trainer.train_dataset
    if isinstance(train, StreamingDataset):
        if args.group_by_length:
            raise ValueError("Trainer: group_by_length=True needs a map-style train_dataset; a Ray Data stream "
                             "cannot be grouped by length. Turn group_by_length off.")
        rows = train.num_rows
        if rows is None and args.max_steps <= 0:
            raise ValueError(
                "Trainer: the train_dataset stream has an unknown number of rows, so epochs cannot be counted. "
                "Set TrainingArguments.max_steps to a positive number, or give the count with "
                "raytrainer.stream(source, num_rows=N) (or let it be counted: count_rows=True).")
        if rows == 0:
            raise ValueError("Trainer: the train_dataset stream has no rows.")
        if rows is not None and isinstance(num_workers, int) and rows < num_workers:
            raise ValueError(f"Trainer: the train_dataset stream has {rows} rows for {num_workers} workers; "
                             "each worker needs at least one row. Use fewer workers or more data.")
        buffer = train.local_shuffle_buffer_size
        if train.shuffle and buffer is not None and buffer < args.per_device_train_batch_size:
            raise ValueError(
                f"stream(local_shuffle_buffer_size={buffer}) is smaller than per_device_train_batch_size="
                f"{args.per_device_train_batch_size}; Ray's local shuffle needs at least one batch of rows.")
    for name, stream in _eval_streams(trainer.eval_dataset).items():
        if num_workers is not None and stream.known_rows is None and not stream.count_rows:
            raise ValueError(
                f"Trainer: the eval stream {name!r} has an unknown number of rows, but Ray Train workers each "
                "evaluate a contiguous share of it. Pass num_rows=N (or count_rows=True) to raytrainer.stream.")


def registered_streams(trainer) -> dict:
    """``{name: (stream, is_training)}``: the streams handed to Ray Train under these names."""
    streams = {TRAIN_NAME: (trainer.train_dataset, True)} if is_stream(trainer.train_dataset) else {}
    streams.update({name: (stream, False) for name, stream in _eval_streams(trainer.eval_dataset).items()})
    return streams


def _data_seed(args) -> int:
    return args.data_seed if args.data_seed is not None else args.seed


def kept_columns(trainer, stream: StreamingDataset, description: str) -> Optional[list]:
    """``remove_unused_columns``: the stream's columns that forward accepts (None: keep all)."""
    from .columns import _log_ignored, _no_column_left_error, signature_columns

    if not trainer.args.remove_unused_columns:
        return None
    accepted = signature_columns(trainer.model, trainer.label_names)
    names = stream.column_names
    if accepted is None or names is None:
        return accepted  # unknown schema: the collate step keeps the accepted keys
    kept = [name for name in names if name in accepted]
    if not kept:
        raise _no_column_left_error(names, accepted, description)
    ignored = [name for name in names if name not in accepted]
    if ignored:
        _log_ignored(ignored, description, type(trainer.model).__name__)
    return kept


def _prepared(trainer, stream: StreamingDataset, training: bool, description: str):
    seed = _data_seed(trainer.args) if training and stream.shuffle else None
    return stream.ray_dataset(columns=kept_columns(trainer, stream, description), shuffle_seed=seed)


def _warn_if_no_cpu_is_left_for_reading(scaling_config) -> None:
    """Ray Data reads with tasks that need a CPU; when the workers hold every CPU of the cluster
    those tasks wait for ever (unless the cluster adds nodes). Said once, before the run starts."""
    import ray

    cluster_cpus = ray.cluster_resources().get("CPU", 0)
    worker_cpus = scaling_config.total_resources.get("CPU", 0)
    if cluster_cpus - worker_cpus < 1:
        logger.warning(
            "The Ray Train workers take %s of the cluster's %s CPUs, which leaves no CPU for Ray Data to read "
            "the streams: the run waits until one frees up (an autoscaling cluster adds a node). Give each worker "
            "fewer CPUs (ScalingConfig(resources_per_worker={'CPU': ...})), use fewer workers, or add nodes.",
            worker_cpus, cluster_cpus)


def torch_trainer_data(trainer, scaling_config=None) -> dict:
    """The ``datasets=``/``dataset_config=`` arguments of the ``TorchTrainer`` ({} without streams):
    training streams split equally across workers, evaluation streams unsplit (each worker reads
    its contiguous share), ordered execution for deterministic streams. ``scaling_config``: the
    workers', to warn when they leave no CPU for reading (None in local mode)."""
    streams = registered_streams(trainer)
    if not streams:
        return {}
    if scaling_config is not None:
        _warn_if_no_cpu_is_left_for_reading(scaling_config)
    import copy

    from ray.data import DataContext
    from ray.train import DataConfig

    datasets, options = {}, {}
    for name, (stream, training) in streams.items():
        stream = as_stream(stream)
        datasets[name] = _prepared(trainer, stream, training, "training" if training else "evaluation")
        # the driver's options, as Ray Train's default would take them (without its deprecated fields)
        option = copy.deepcopy(DataContext.get_current().execution_options)
        option.preserve_order = option.preserve_order or stream.deterministic
        options[name] = option
    split = [name for name, (_, training) in streams.items() if training]
    return {"datasets": datasets, "dataset_config": DataConfig(datasets_to_split=split, execution_options=options)}


def _read_source(trainer, stream: StreamingDataset, training: bool, description: str, shard_of):
    """Where this process reads the stream: its Ray Train shard in a run on Ray Train (training, or
    evaluate/predict on workers: ``shard_of(name)`` for the name it was registered under), else the
    driver's own dataset (evaluate/predict in this process)."""
    name = next((name for name, (registered, is_training) in registered_streams(trainer).items()
                 if registered is stream and is_training == training), None)
    shard = shard_of(name) if name is not None else None  # None outside a run on Ray Train (driver, local)
    if shard is not None:
        return shard
    if stream.on_driver and trainer.args.world_size == 1:
        return _prepared(trainer, stream, training, description)
    raise RuntimeError(
        f"The {description} stream is not available on this Ray Train worker: streams reach workers only as "
        f"the Trainer's own train_dataset/eval_dataset. Evaluate or predict on other streams on the driver.")


def _collate(trainer, stream, description):
    from .stream_batches import StreamCollate

    return StreamCollate(trainer.data_collator, kept_columns(trainer, stream, description), description)


def train_batches(trainer, dataset, batch_size: int, shard_of):
    """This rank's training batches (``len()`` = batches per epoch when the row count is known);
    ``shard_of(name)``: the run's Ray Train dataset shard of that name, or None."""
    from .stream_batches import SizedStreamBatches, StreamBatches

    stream, args = as_stream(dataset), trainer.args
    source = _read_source(trainer, stream, True, "training", shard_of)
    rows = stream.num_rows
    rows_per_rank = None if rows is None else rows // args.world_size  # Ray's equal split drops the rest
    batches_class = StreamBatches if rows_per_rank is None else SizedStreamBatches
    return batches_class(
        source, batch_size=batch_size, collate_fn=_collate(trainer, stream, "training"), device=args.device,
        num_rows=rows_per_rank, drop_last=args.dataloader_drop_last,
        shuffle_buffer=stream.shuffle_buffer_rows(batch_size), seed=_data_seed(args), rank=args.process_index,
        prefetch_batches=stream.prefetch_batches,
        pin_memory=args.dataloader_pin_memory and args.device.type == "cuda",
    )


def eval_batches(trainer, dataset, description: str, shard_of):
    """This rank's evaluation batches: a contiguous share of the rows, every row once overall."""
    from .samplers import even_shard_bounds
    from .stream_batches import EvalStreamBatches, SizedEvalStreamBatches

    stream, args = as_stream(dataset), trainer.args
    source = _read_source(trainer, stream, False, description, shard_of)
    start, stop = 0, stream.known_rows  # one rank: no count needed, the stream is read to its end
    if args.world_size > 1:
        if stream.num_rows is None:
            raise ValueError(f"The {description} stream has an unknown number of rows, so it cannot be shared "
                             "exactly between Ray Train workers; pass num_rows=N to raytrainer.stream.")
        start, stop = even_shard_bounds(stream.num_rows, args.world_size, args.process_index)
    batches_class = EvalStreamBatches if stop is None else SizedEvalStreamBatches
    return batches_class(source, batch_size=args.eval_batch_size, collate_fn=_collate(trainer, stream, description),
                         device=args.device, start=start, stop=stop, prefetch_batches=stream.prefetch_batches)
