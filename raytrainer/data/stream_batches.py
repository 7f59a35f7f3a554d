"""Per-rank batch iterables over a Ray Data stream, and the collate step that turns Ray's
columnar numpy batches into model inputs.

This module imports Ray Data, so :mod:`raytrainer.data.streaming` imports it only once a stream
is actually read. The iterables look like a DataLoader to the loops: iteration yields dict
batches already on the worker's device, ``len()`` (when the row count is known) is the number of
batches this rank will yield, and ``set_epoch`` picks the epoch's shuffle seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from ..loop.nested import move_to_device
from .collators import default_data_collator
from .columns import _no_column_left_error

_LABEL_COLUMNS = ("label", "label_ids")


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The local-shuffle seed of one rank in one epoch: a pure function of the three, so a
    resumed run reshuffles exactly as the uninterrupted run did."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def rows_of(batch: Mapping) -> list[dict]:
    """A columnar batch as a list of per-example dicts (what HF data collators take)."""
    keys = list(batch)
    return [dict(zip(keys, values)) for values in zip(*(batch[key] for key in keys))]


def _column_tensor(key: str, values: np.ndarray) -> Optional[torch.Tensor]:
    """One column as a tensor; None for text and empty columns, which no model takes as a tensor."""
    if values.dtype.kind in "US":
        return None
    if values.dtype == object:
        first = values[0] if len(values) else None
        if first is None or isinstance(first, (str, bytes)):
            return None
        try:  # Ray hands list columns over as an object array of per-row arrays
            values = np.stack([np.asarray(value) for value in values])
        except ValueError as error:
            raise ValueError(
                f"Column {key!r} holds sequences of different lengths ({error}), so it cannot be "
                f"stacked into one tensor. Pass a padding data_collator (e.g. DataCollatorWithPadding) "
                f"to the Trainer, or pad the column when preparing the dataset."
            ) from error
    if not values.flags.writeable:  # torch warns on read-only memory (Arrow-backed numpy views)
        values = values.copy()
    return torch.from_numpy(np.ascontiguousarray(values))


def columns_to_tensors(batch: Mapping) -> dict:
    """The default collate, column by column: what ``default_data_collator`` makes of the same
    rows (``label``/``label_ids`` become ``labels``, int64 for integers and float32 otherwise;
    text columns are left out), without building one dict per example."""
    label_key = next((key for key in _LABEL_COLUMNS if key in batch), None)
    tensors = {}
    for key, values in batch.items():
        if key in _LABEL_COLUMNS and key != label_key:
            continue
        tensor = _column_tensor(key, values)
        if tensor is None:
            continue
        if key == label_key:
            integer = not (tensor.is_floating_point() or tensor.is_complex())
            tensors["labels"] = tensor.to(torch.long if integer else torch.float32)
        else:
            tensors[key] = tensor
    return tensors


class StreamCollate(NumpyBatchCollateFn):
    """Collate one Ray batch: keep the model's columns (``remove_unused_columns``), then apply the
    user's ``data_collator`` to the rows, or the columnar default when it is the default collator.
    Ray runs this in its prefetch threads, off the training thread."""

    def __init__(self, data_collator: Callable, columns: Optional[Sequence[str]] = None,
                 description: str = "training"):
        super().__init__()
        self.data_collator = data_collator
        self.columns = None if columns is None else frozenset(columns)
        self.columnar = data_collator is default_data_collator
        self.description = description

    def __call__(self, batch: dict):
        if self.columns is not None:
            kept = {key: values for key, values in batch.items() if key in self.columns}
            if not kept:
                raise _no_column_left_error(list(batch), sorted(self.columns), self.description)
            batch = kept
        if self.columnar:
            return columns_to_tensors(batch)
        return self.data_collator(rows_of(batch))


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
        return iter(batches)


class SizedStreamBatches(_KnownLength, StreamBatches):
    pass


def _slice(batch: Mapping, start: int, stop: int) -> dict:
    return {key: values[start:stop] for key, values in batch.items()}


def _concat(parts: list) -> dict:
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def row_range_batches(batches: Iterable[Mapping], start: int, stop: Optional[int],
                      batch_size: int) -> Iterator[dict]:
    """Re-cut a stream of columnar batches into ``batch_size``-row batches of rows
    ``[start, stop)`` (``stop=None``: to the end); reading stops once ``stop`` is reached."""
    position, pending, pending_rows = 0, [], 0
    for batch in batches:
        rows = len(next(iter(batch.values()))) if batch else 0
        low = max(start - position, 0)
        high = rows if stop is None else min(stop - position, rows)
        position += rows
        if high > low:
            pending.append(_slice(batch, low, high))
            pending_rows += high - low
        while pending_rows >= batch_size:
            merged = _concat(pending)
            yield _slice(merged, 0, batch_size)
            pending = [_slice(merged, batch_size, pending_rows)]
            pending_rows -= batch_size
        if stop is not None and position >= stop:
            break
    if pending_rows:
        yield _concat(pending)


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
        columnar = self.source.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                                            prefetch_batches=self.prefetch_batches)
        for batch in row_range_batches(columnar, self.start, self.stop, self.batch_size):
            inputs = self.collate_fn(batch)
            yield inputs if self.device.type == "cpu" else move_to_device(inputs, self.device)


class SizedEvalStreamBatches(_KnownLength, EvalStreamBatches):
    pass
