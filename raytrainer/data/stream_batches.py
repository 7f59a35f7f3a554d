"""Per-rank batch iterables over a Ray Data stream, and the collate step that turns Ray's
Arrow batches into model inputs.

This module imports Ray Data, so :mod:`raytrainer.data.stream_shards` imports it only once a
stream is actually read. The iterables look like a DataLoader to the loops: iteration yields dict
batches already on the worker's device, ``len()`` (when the row count is known) is the number of
batches this rank will yield, and ``set_epoch`` picks the epoch's shuffle seed.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from ..nested import move_to_device
from .collators import default_data_collator
from .columns import _no_column_left_error

_LABEL_COLUMNS = ("label", "label_ids")


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The local-shuffle seed of one rank in one epoch: a pure function of the three, so a
    resumed run reshuffles exactly as the uninterrupted run did."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _is_numeric(arrow_type) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def _is_list(arrow_type) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def _list_values(key: str, column: pa.Array) -> np.ndarray:
    """A list column of equal-length numeric lists as one ``[rows, length, ...]`` array."""
    rows = len(column)
    if pa.types.is_fixed_size_list(column.type):
        length = column.type.list_size
    else:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        length = int(lengths[0]) if rows else 0
        if rows and (lengths != length).any():
            raise ValueError(
                f"Column {key!r} holds sequences of different lengths ({int(lengths.min())} to "
                f"{int(lengths.max())}), so it cannot be stacked into one tensor. Pass a padding data_collator "
                f"(e.g. DataCollatorWithPadding) to the Trainer, or pad the column when preparing the data.")
    values = column.flatten()  # respects the slice a batch is; .values would not
    inner = _list_values(key, values) if _is_list(values.type) else values.to_numpy(zero_copy_only=False)
    return inner.reshape(rows, length, *inner.shape[1:])


def _innermost(arrow_type):
    while _is_list(arrow_type):
        arrow_type = arrow_type.value_type
    return arrow_type


def _column_array(key: str, column: pa.Array) -> Optional[np.ndarray]:
    """One column as a numpy array; None for text and other columns no model takes as a tensor."""
    kind = column.type
    if hasattr(column, "to_numpy_ndarray"):  # Arrow's fixed-shape tensor extension
        return column.to_numpy_ndarray()
    if isinstance(kind, pa.BaseExtensionType):  # Ray's tensor extension: its to_numpy stacks the rows
        values = column.to_numpy(zero_copy_only=False)
        return np.stack(values) if values.dtype == object else values
    if _is_numeric(kind):
        return column.to_numpy(zero_copy_only=False)
    if _is_list(kind) and _is_numeric(_innermost(kind)):
        return _list_values(key, column)
    return None


def _as_tensor(values: np.ndarray) -> torch.Tensor:
    """The tensor ``default_data_collator`` would build from the same values as Python numbers:
    int64 for integers, float32 for floats (float16 stays), bool for booleans."""
    if values.dtype.kind in "iu" and values.dtype != np.int64:
        values = values.astype(np.int64)
    elif values.dtype.kind == "f" and values.dtype.itemsize > 4:
        values = values.astype(np.float32)
    elif not values.flags.writeable:  # zero-copy views of Arrow memory; torch wants memory it may write
        values = values.copy()
    return torch.from_numpy(np.ascontiguousarray(values))


def columns_to_tensors(table: pa.Table) -> dict:
    """The default collate, column by column: what ``default_data_collator`` makes of the same
    rows as Python values (``label``/``label_ids`` become ``labels``, integers int64 and floats
    float32; text columns are left out), without building one dict per example."""
    label_key = next((key for key in _LABEL_COLUMNS if key in table.column_names), None)
    tensors = {}
    for key, column in zip(table.column_names, table.columns):
        if key in _LABEL_COLUMNS and key != label_key:
            continue
        values = _column_array(key, column.combine_chunks())
        if values is None:
            continue
        tensor = _as_tensor(values)
        if key == label_key:
            integer = not (tensor.is_floating_point() or tensor.is_complex())
            tensors["labels"] = tensor.to(torch.long if integer else torch.float32)
        else:
            tensors[key] = tensor
    return tensors


class StreamCollate(ArrowBatchCollateFn):
    """Collate one Ray batch (an Arrow table): keep the model's columns (``remove_unused_columns``),
    then apply the user's ``data_collator`` to the rows (plain Python values, as a ``datasets``
    Dataset gives them), or the columnar default when it is the default collator. Ray runs this
    in its prefetch threads, off the training thread."""

    def __init__(self, data_collator: Callable, columns: Optional[Sequence[str]] = None,
                 description: str = "training"):
        super().__init__()
        self.data_collator = data_collator
        self.columns = None if columns is None else frozenset(columns)
        self.columnar = data_collator is default_data_collator
        self.description = description

    def __call__(self, batch: pa.Table):
        if self.columns is not None:
            kept = [name for name in batch.column_names if name in self.columns]
            if not kept:
                raise _no_column_left_error(batch.column_names, sorted(self.columns), self.description)
            if len(kept) != batch.num_columns:
                batch = batch.select(kept)
        if self.columnar:
            return columns_to_tensors(batch)
        return self.data_collator(batch.to_pylist())


class _KnownLength:
    """Mixed in when the row count is known: ``len()`` is the number of batches of this rank."""

    def __len__(self) -> int:
        return self.num_batches


def _batch_count(num_rows: int, batch_size: int, drop_last: bool) -> int:
    return num_rows // batch_size if drop_last else math.ceil(num_rows / batch_size)


class StreamBatches:
    """One rank's training batches from a Ray Data shard (a ``DataIterator`` from
    ``ray.train.get_dataset_shard``, or a ``Dataset`` read in this process).

    With a shuffle buffer, rows are reshuffled every epoch by Ray's local shuffle, seeded from
    ``(seed, epoch, rank)``; the block order itself is fixed for the run, which keeps each
    epoch's order a pure function of the seed (what an exact mid-epoch resume needs).
    """

    def __init__(self, source, *, batch_size: int, collate_fn: StreamCollate, device,
                 num_rows: Optional[int] = None, drop_last: bool = False,
                 shuffle_buffer: Optional[int] = None, seed: int = 0, rank: int = 0,
                 prefetch_batches: int = 1, pin_memory: bool = False):
        self.source, self.batch_size, self.collate_fn = source, batch_size, collate_fn
        self.device, self.drop_last, self.shuffle_buffer = torch.device(device), drop_last, shuffle_buffer
        self.seed, self.rank, self.epoch = seed, rank, 0
        self.prefetch_batches, self.pin_memory = prefetch_batches, pin_memory
        self.num_rows = num_rows
        self.num_batches = None if num_rows is None else _batch_count(num_rows, batch_size, drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        seed = epoch_seed(self.seed, self.epoch, self.rank) if self.shuffle_buffer else None
        batches = self.source.iter_torch_batches(
            batch_size=self.batch_size, collate_fn=self.collate_fn, device=self.device,
            drop_last=self.drop_last, local_shuffle_buffer_size=self.shuffle_buffer,
            local_shuffle_seed=seed, prefetch_batches=self.prefetch_batches, pin_memory=self.pin_memory,
        )
        if self.prefetch_batches == 0:
            return iter(batches)
        # Ray's local shuffle buffer and batch assembly run in the thread that iterates: a thread
        # of their own keeps them off the training step (the order is the same: one producer)
        return read_ahead(batches, depth=max(2, self.prefetch_batches))


class SizedStreamBatches(_KnownLength, StreamBatches):
    pass


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(iterable: Iterable, depth: int) -> Iterator:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead of the consumer.

    Items come out in the producer's order; an exception of the producer is raised here, at the
    item where it happened. Closing the iterator (or dropping it, as a loop that stops mid-epoch
    does) stops the producer at its next item."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not hand_over(item):
                    return
            hand_over(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            hand_over(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def consume():
        producer = threading.Thread(target=produce, name="raytrainer-read-ahead", daemon=True)
        producer.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()

    return consume()


def row_range_batches(batches: Iterable[pa.Table], start: int, stop: Optional[int],
                      batch_size: int) -> Iterator[pa.Table]:
    """Re-cut a stream of Arrow batches into ``batch_size``-row batches of rows ``[start, stop)``
    (``stop=None``: to the end); reading stops once ``stop`` is reached. Slices are zero-copy."""
    position, pending = 0, []
    for batch in batches:
        low = max(start - position, 0)
        high = batch.num_rows if stop is None else min(stop - position, batch.num_rows)
        position += batch.num_rows
        if high > low:
            pending.append(batch.slice(low, high - low))
        pending_rows = sum(part.num_rows for part in pending)
        if pending_rows >= batch_size:
            merged = pa.concat_tables(pending)
            for offset in range(0, pending_rows - batch_size + 1, batch_size):
                yield merged.slice(offset, batch_size)
            rest = pending_rows % batch_size
            pending = [merged.slice(pending_rows - rest, rest)] if rest else []
        if stop is not None and position >= stop:
            break
    if pending:
        yield pa.concat_tables(pending)


class EvalStreamBatches:
    """One rank's evaluation batches: rows ``[start, stop)`` of the whole stream, in order, so
    the ranks' contiguous shards, gathered in rank order, give back the dataset order and every
    row exactly once. Batches start at ``start`` as a map-style shard's would."""

    def __init__(self, source, *, batch_size: int, collate_fn: StreamCollate, device,
                 start: int = 0, stop: Optional[int] = None, prefetch_batches: int = 1):
        self.source, self.batch_size, self.collate_fn = source, batch_size, collate_fn
        self.device, self.start, self.stop = torch.device(device), start, stop
        self.prefetch_batches = prefetch_batches
        self.num_batches = None if stop is None else math.ceil((stop - start) / batch_size)

    def __iter__(self) -> Iterator:
        if self.stop is not None and self.stop <= self.start:
            return  # this rank's shard is empty (fewer rows than ranks)
        tables = self.source.iter_batches(batch_size=self.batch_size, batch_format="pyarrow",
                                          prefetch_batches=self.prefetch_batches)
        for batch in row_range_batches(tables, self.start, self.stop, self.batch_size):
            inputs = self.collate_fn(batch)
            yield inputs if self.device.type == "cpu" else move_to_device(inputs, self.device)


class SizedEvalStreamBatches(_KnownLength, EvalStreamBatches):
    pass
