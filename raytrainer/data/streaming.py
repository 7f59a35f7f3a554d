"""Ray Data streaming: datasets larger than memory, read by every worker as its own shard.

``stream(source, ...)`` asks for streaming; a ``ray.data.Dataset`` given straight to the Trainer
is streamed with the defaults. A :class:`StreamingDataset` lives on the driver: the Trainer hands
its Ray dataset to Ray Train (``TorchTrainer(datasets=...)``), and the workers read
``ray.train.get_dataset_shard(name)``. Pickled, a stream keeps only its options, row count and
column names, never the Ray dataset itself.

Training shards are cut by Ray's ``streaming_split(equal=True)``: every rank gets ``rows //
world_size`` rows, so all ranks step together. Evaluation shards are contiguous row ranges of
the unsplit stream, so every row is evaluated exactly once, in dataset order across ranks.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

logger = logging.getLogger("raytrainer")

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_MIN_SHUFFLE_BUFFER_ROWS = 1024


def _is_ray_dataset(value) -> bool:
    data = sys.modules.get("ray.data")  # nothing can be a Ray dataset before Ray Data is imported
    return data is not None and isinstance(value, data.Dataset)


def is_stream(value) -> bool:
    """True for what the Trainer reads through Ray Data: a stream or a ``ray.data.Dataset``."""
    return isinstance(value, StreamingDataset) or _is_ray_dataset(value)


def as_stream(value) -> "StreamingDataset":
    return value if isinstance(value, StreamingDataset) else StreamingDataset(value)


def _is_hf_dataset(value) -> bool:
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(value, datasets.Dataset)


def _parquet_paths(source) -> Optional[list]:
    """The paths/URIs of a parquet source, or None when ``source`` is not a path."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items or not all(isinstance(item, (str, os.PathLike)) for item in items):
        return None
    paths = [os.fspath(item) for item in items]
    for path in paths:
        suffix = os.path.splitext(path.rstrip("/"))[1].lower()
        if suffix and suffix not in _PARQUET_SUFFIXES:
            raise ValueError(
                f"stream(source={path!r}): only parquet files and folders are read from a path. For "
                f"other formats build a Ray dataset (e.g. ray.data.read_csv(...)) and pass that instead."
            )
        if "://" not in path and not os.path.exists(path):
            raise ValueError(f"stream(source={path!r}): no such file or folder; pass an existing parquet "
                             f"path or a URI such as 's3://bucket/prefix'.")
    return paths


def to_ray_dataset(source):
    """``source`` as a ``ray.data.Dataset``: a Ray dataset as it is, a pyarrow ``Table``, a parquet
    path or URI (or a list of them), or a ``datasets.Dataset``."""
    import pyarrow as pa
    import ray.data

    if _is_ray_dataset(source):
        return source
    if isinstance(source, pa.Table):
        return ray.data.from_arrow(source)
    if _is_hf_dataset(source):
        # its rows as one Arrow table (selections and shuffles applied); from_huggingface would
        # first look the dataset up on the Hugging Face Hub
        return ray.data.from_arrow(source.with_format("arrow")[:])
    paths = _parquet_paths(source)
    if paths is not None:
        return ray.data.read_parquet(paths)
    raise TypeError(
        f"stream(source=...): cannot stream a {type(source).__name__}. Pass a ray.data.Dataset, a "
        f"pyarrow.Table, a parquet path or URI, or a datasets.Dataset; a torch Dataset is given to "
        f"the Trainer directly."
    )


def _check_options(shuffle, local_shuffle_buffer_size, num_rows, count_rows, deterministic,
                   prefetch_batches) -> None:
    for name, value in (("shuffle", shuffle), ("count_rows", count_rows), ("deterministic", deterministic)):
        if not isinstance(value, bool):
            raise TypeError(f"stream({name}=...) must be True or False, got {value!r}.")
    for name, value, minimum in (("local_shuffle_buffer_size", local_shuffle_buffer_size, 1),
                                 ("num_rows", num_rows, 0), ("prefetch_batches", prefetch_batches, 0)):
        if value is None and name != "prefetch_batches":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"stream({name}={value!r}) must be an int >= {minimum}"
                             f"{'' if name == 'prefetch_batches' else ' or None'}.")


class StreamingDataset:
    """A dataset the Trainer reads through Ray Data instead of a torch DataLoader.

    Build it with :func:`stream`. ``num_rows`` is the row count: given, counted with Ray's
    ``Dataset.count()`` when first needed (``count_rows=True``: parquet footers for a parquet
    read, a full pass for a pipeline with transforms), or None (unknown: training then needs
    ``max_steps``). A stream has no ``len()``: it is not a map-style dataset.
    """

    def __init__(self, source, *, shuffle: bool = True, local_shuffle_buffer_size: Optional[int] = None,
                 num_rows: Optional[int] = None, count_rows: bool = True, deterministic: bool = True,
                 prefetch_batches: int = 1):
        _check_options(shuffle, local_shuffle_buffer_size, num_rows, count_rows, deterministic, prefetch_batches)
        self.shuffle, self.local_shuffle_buffer_size = shuffle, local_shuffle_buffer_size
        self.count_rows, self.deterministic, self.prefetch_batches = count_rows, deterministic, prefetch_batches
        self._parquet = None if _is_ray_dataset(source) else _parquet_paths(source)
        self._dataset = to_ray_dataset(source)
        self._num_rows = num_rows if num_rows is not None else _known_row_count(source)
        self._column_names = None

    # ------------------------------------------------------------------ what the driver knows
    @property
    def num_rows(self) -> Optional[int]:
        if self._num_rows is None and self.count_rows and self._dataset is not None:
            self._num_rows = self._dataset.count()
        return self._num_rows

    @property
    def column_names(self) -> Optional[list]:
        """The stream's columns when Ray Data knows them without reading data, else None."""
        if self._column_names is None and self._dataset is not None:
            schema = self._dataset.schema(fetch_if_missing=False)
            self._column_names = None if schema is None else list(schema.names)
        return self._column_names

    @property
    def on_driver(self) -> bool:
        """False on a Ray Train worker, where only ``get_dataset_shard`` gives the data."""
        return self._dataset is not None

    def shuffle_buffer_rows(self, batch_size: int) -> Optional[int]:
        if not self.shuffle:
            return None
        return self.local_shuffle_buffer_size or max(_MIN_SHUFFLE_BUFFER_ROWS, 4 * batch_size)

    def ray_dataset(self, *, columns: Optional[list] = None, shuffle_seed: Optional[int] = None):
        """The Ray dataset to read: the file order of a parquet source shuffled with
        ``shuffle_seed`` (the same order every epoch, so that a resumed epoch is the same), only
        ``columns``, and an ordered execution when the stream is deterministic."""
        if self._dataset is None:
            raise RuntimeError("This stream's Ray dataset stays on the driver; a Ray Train worker reads "
                               "its shard with ray.train.get_dataset_shard.")
        dataset = self._dataset
        if self._parquet is not None and shuffle_seed is not None:
            import ray.data

            shuffle = ray.data.FileShuffleConfig(seed=shuffle_seed % 2**32, reseed_after_execution=False)
            dataset = ray.data.read_parquet(self._parquet, shuffle=shuffle)
        if columns is not None and self.column_names is not None and list(columns) != self.column_names:
            dataset = dataset.select_columns(list(columns))
        if self.deterministic:
            # Ray hands blocks out as they finish unless told to keep their order; a shared context
            # (a user's dataset) gets the setting too: it is what this stream was asked for
            dataset.context.execution_options.preserve_order = True
        return dataset

    def __getstate__(self):
        # settle what the workers need to know (counting needs the dataset), then leave it behind
        state = dict(self.__dict__, _num_rows=self.num_rows, _column_names=self.column_names)
        state["_dataset"] = None
        return state

    def __repr__(self) -> str:
        rows = "unknown" if self._num_rows is None else self._num_rows
        return f"StreamingDataset(num_rows={rows}, shuffle={self.shuffle})"


def _known_row_count(source) -> Optional[int]:
    """The row count a source states without reading data (tables, HF datasets)."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        return source.num_rows
    if _is_hf_dataset(source):
        return len(source)
    return None


def stream(source, *, shuffle: bool = True, local_shuffle_buffer_size: Optional[int] = None,
           num_rows: Optional[int] = None, count_rows: bool = True, deterministic: bool = True,
           prefetch_batches: int = 1) -> StreamingDataset:
    """Ask the Trainer to stream ``source`` through Ray Data, sharded across its workers.

    ``source``: a ``ray.data.Dataset``, a pyarrow ``Table``, a parquet path/URI (or a list), or a
    ``datasets.Dataset``. Training reads it with a seeded shuffle: ``shuffle=True`` shuffles a
    parquet source's file order once per run (seeded from ``data_seed``/``seed``) and the rows of
    every epoch in a local buffer of ``local_shuffle_buffer_size`` rows (default ``max(1024, 4 x
    batch size)``), seeded from the seed, the epoch and the rank. Evaluation never shuffles.

    ``num_rows`` gives the row count (else it is counted with ``Dataset.count()``, unless
    ``count_rows=False``); with it, epochs work as with a map-style dataset. ``deterministic=True``
    keeps Ray's block order fixed, so runs and resumed runs see the same rows in the same order.
    ``prefetch_batches`` is Ray's read-ahead per rank.
    """
    return StreamingDataset(source, shuffle=shuffle, local_shuffle_buffer_size=local_shuffle_buffer_size,
                            num_rows=num_rows, count_rows=count_rows, deterministic=deterministic,
                            prefetch_batches=prefetch_batches)


# ---------------------------------------------------------------------------------------------
# The Trainer's streams: adoption and checks (constructor), Ray Train datasets (driver), batches
# (where the loop runs)
# ---------------------------------------------------------------------------------------------
TRAIN_NAME, EVAL_NAME = "train", "eval"


def adopt_ray_datasets(trainer) -> None:
    """Wrap each ``ray.data.Dataset`` given to the Trainer in a stream, on the Trainer and in its
    recorded constructor call, so Ray workers rebuild the Trainer with the stream (its row count
    settled once, here) and never receive the Ray dataset itself."""
    adopted = {}

    def adopt(value):
        if isinstance(value, dict) and any(_is_ray_dataset(item) for item in value.values()):
            return {key: adopt(item) for key, item in value.items()}
        if not _is_ray_dataset(value):
            return value
        return adopted.setdefault(id(value), StreamingDataset(value))

    trainer.train_dataset = adopt(trainer.train_dataset)
    trainer.eval_dataset = adopt(trainer.eval_dataset)
    call = getattr(trainer, "_constructor_call", None)
    if adopted and call is not None:
        args, kwargs = call
        trainer._constructor_call = (tuple(adopt(a) for a in args), {k: adopt(v) for k, v in kwargs.items()})


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
        if num_workers is not None and stream._num_rows is None and not stream.count_rows:
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


def torch_trainer_data(trainer) -> dict:
    """The ``datasets=``/``dataset_config=`` arguments of the ``TorchTrainer`` ({} without streams):
    training streams split equally across workers, evaluation streams unsplit (each worker reads
    its contiguous share), ordered execution for deterministic streams."""
    streams = registered_streams(trainer)
    if not streams:
        return {}
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


def _in_train_run() -> bool:
    import ray.train

    try:
        ray.train.get_context()
    except RuntimeError:
        return False
    return True


def _read_source(trainer, stream: StreamingDataset, training: bool, description: str):
    """Where this process reads the stream: its Ray Train shard while training (the name it was
    registered under), else the driver's own dataset (evaluate/predict in this process)."""
    name = next((name for name, (registered, is_training) in registered_streams(trainer).items()
                 if registered is stream and is_training == training), None)
    if name is not None and trainer.is_in_train and _in_train_run():
        import ray.train

        try:
            return ray.train.get_dataset_shard(name)
        except (KeyError, AssertionError, AttributeError):
            pass  # not handed to this run (workers raise KeyError, local mode asserts)
    if stream.on_driver and trainer.args.world_size == 1:
        return _prepared(trainer, stream, training, description)
    raise RuntimeError(
        f"The {description} stream is not available on this Ray Train worker: streams reach workers only as "
        f"the Trainer's own train_dataset/eval_dataset. Evaluate or predict on other streams on the driver.")


def _collate(trainer, stream, description):
    from .stream_batches import StreamCollate

    return StreamCollate(trainer.data_collator, kept_columns(trainer, stream, description), description)


def train_batches(trainer, dataset):
    """This rank's training batches (``len()`` = batches per epoch when the row count is known)."""
    from .stream_batches import SizedStreamBatches, StreamBatches

    stream, args = as_stream(dataset), trainer.args
    batch_size = trainer._train_batch_size
    source = _read_source(trainer, stream, True, "training")
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


def eval_batches(trainer, dataset, description: str):
    """This rank's evaluation batches: a contiguous share of the rows, every row once overall."""
    from .samplers import even_shard_bounds
    from .stream_batches import EvalStreamBatches, SizedEvalStreamBatches

    stream, args = as_stream(dataset), trainer.args
    source = _read_source(trainer, stream, False, description)
    start, stop = 0, stream._num_rows  # one rank: no count needed, the stream is read to its end
    if args.world_size > 1:
        if stream.num_rows is None:
            raise ValueError(f"The {description} stream has an unknown number of rows, so it cannot be shared "
                             "exactly between Ray Train workers; pass num_rows=N to raytrainer.stream.")
        start, stop = even_shard_bounds(stream.num_rows, args.world_size, args.process_index)
    batches_class = EvalStreamBatches if stop is None else SizedEvalStreamBatches
    return batches_class(source, batch_size=args.eval_batch_size, collate_fn=_collate(trainer, stream, description),
                         device=args.device, start=start, stop=stop, prefetch_batches=stream.prefetch_batches)
