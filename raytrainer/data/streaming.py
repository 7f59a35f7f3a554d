"""Ray Data streaming: datasets larger than memory, read by every worker as its own shard.

``stream(source, ...)`` asks for streaming; a ``ray.data.Dataset`` given straight to the Trainer
is streamed with the defaults. A :class:`StreamingDataset` lives on the driver: the Trainer hands
its Ray dataset to Ray Train (``TorchTrainer(datasets=...)``), and the workers read
``ray.train.get_dataset_shard(name)``. Pickled, a stream keeps only its options, row count and
column names, never the Ray dataset itself.

Training shards are cut by Ray's ``streaming_split(equal=True)``: every rank gets ``rows //
world_size`` rows, so all ranks step together. Evaluation shards are contiguous row ranges of
the unsplit stream, so every row is evaluated exactly once, in dataset order across ranks. How
the Trainer wires this up is in :mod:`raytrainer.data.stream_trainer`.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Optional

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_MIN_SHUFFLE_BUFFER_ROWS = 1024


def _is_ray_dataset(value) -> bool:
    data = sys.modules.get("ray.data")  # nothing can be a Ray dataset before Ray Data is imported
    return data is not None and isinstance(value, data.Dataset)


def is_stream(value) -> bool:
    """True for what the Trainer reads through Ray Data: a stream or a ``ray.data.Dataset``."""
    return isinstance(value, StreamingDataset) or _is_ray_dataset(value)


def as_stream(value) -> "StreamingDataset":
    """``value`` itself when it is a stream, else a stream over it with the default options."""
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
    from ..runtime.ray_session import ensure_ray

    ensure_ray()  # before Ray Data would start Ray itself, without this process's import path
    if isinstance(source, pa.Table):
        return ray.data.from_arrow(source)
    if _is_hf_dataset(source):
        # its rows as one Arrow table (selections and shuffles applied); from_huggingface would
        # first look the dataset up on the Hugging Face Hub
        return ray.data.from_arrow(source.with_format("arrow")[:])
    paths = _parquet_paths(source)
    if paths is not None:
        return read_parquet(paths)
    raise TypeError(
        f"stream(source=...): cannot stream a {type(source).__name__}. Pass a ray.data.Dataset, a "
        f"pyarrow.Table, a parquet path or URI, or a datasets.Dataset; a torch Dataset is given to "
        f"the Trainer directly."
    )


def read_parquet(paths: list, **options):
    """``ray.data.read_parquet`` of local files through Ray Data's file-per-task reader, in blocks
    of at most ``_block_bytes()`` on disk; remote paths go to Ray's default reader.

    Why not Ray 2.60's default (``DataContext.use_datasource_v2``): it lists the files in one task
    that took 1.0-1.3 s here before the first block (the first batch came after 1.2-1.6 s, against
    0.2-0.5 s). Why blocks sized from the files: the older reader's own split made 48 blocks of a
    35 MB folder, and while blocks are still to come Ray Data's executor schedules in the training
    process (batches came 4-6x slower)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    if any("://" in path for path in paths) or not getattr(context, "use_datasource_v2", False):
        return ray.data.read_parquet(paths, **options)
    context.use_datasource_v2 = False
    try:
        listed = ray.data.read_parquet(paths, **options)  # lists the files (no data is read)
        files = listed.input_files()
        size = sum(os.path.getsize(path) for path in files if os.path.isfile(path))
        blocks = min(len(files), max(1, math.ceil(size / _block_bytes(context))))
        return ray.data.read_parquet(files, override_num_blocks=blocks, **options)
    finally:
        context.use_datasource_v2 = True


def _block_bytes(context) -> int:
    """Bytes on disk per block: Ray Data's target block size, and at most an eighth of the object
    store, so that the blocks in flight fit in it."""
    import ray

    store = ray.cluster_resources().get("object_store_memory") or context.target_max_block_size * 8
    return int(max(1, min(context.target_max_block_size, store / 8)))


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"stream({name}=...) must be True or False, got {value!r}.")


def _check_count(name: str, value, minimum: int, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alternative = " or None" if optional else ""
        raise ValueError(f"stream({name}={value!r}) must be an int >= {minimum}{alternative}.")


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
        for name, flag in (("shuffle", shuffle), ("count_rows", count_rows), ("deterministic", deterministic)):
            _check_flag(name, flag)
        _check_count("local_shuffle_buffer_size", local_shuffle_buffer_size, 1)
        _check_count("num_rows", num_rows, 0)
        _check_count("prefetch_batches", prefetch_batches, 0, optional=False)
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
            if self._parquet is not None:
                self._num_rows = _footer_row_count(self._dataset.input_files())
            if self._num_rows is None:
                self._num_rows = self._dataset.count()
        return self._num_rows

    @property
    def known_rows(self) -> Optional[int]:
        """The row count if it is already known, without counting."""
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
            dataset = read_parquet(self._parquet, shuffle=shuffle)
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


def _footer_row_count(files: list) -> Optional[int]:
    """The rows of local parquet files, from their footers (milliseconds; Ray's ``count()`` of the
    file-per-task reader runs read tasks, 0.4-1.1 s for 16 files here). None for remote files or
    footers that do not read."""
    import pyarrow.parquet as pq

    if not files or any("://" in path or not os.path.isfile(path) for path in files):
        return None
    try:
        return sum(pq.read_metadata(path).num_rows for path in files)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None


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
