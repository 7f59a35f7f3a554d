"""Per-rank DataLoaders for training and evaluation, built from plain values.

Map-style datasets get a seeded, rank-aware sampler from :mod:`raytrainer.data.samplers`; the
DataLoader only batches what the sampler yields, so its own ``drop_last`` stays off (the
sampler already decided which examples belong to the epoch). Iterable datasets are read in
stream order; with several ranks each one keeps its slice of every global batch.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from raytrainer.data.samplers import (
    EpochShuffleSampler,
    LengthGroupedSampler,
    ShardedEvalSampler,
    _check_int,
    _check_rank,
    split_last_global_batch,
)


def has_length(dataset) -> bool:
    """True when ``len(dataset)`` works (a stream without ``__len__`` raises ``TypeError``)."""
    try:
        len(dataset)
    except (TypeError, NotImplementedError, AttributeError):
        return False
    return True


def _is_stream(dataset) -> bool:
    return isinstance(dataset, IterableDataset) or not has_length(dataset)


class IterableDatasetShard(IterableDataset):
    """A rank's view of a stream: the ``rank``-th ``batch_size`` slice of every global batch.

    A trailing partial global batch is dropped (``drop_last``), shared with wrap-around padding
    from the first items of the stream (``pad_last``, for training: every rank steps the same
    number of times) or split exactly (evaluation: every item is seen exactly once).
    """

    def __init__(self, dataset, batch_size: int, world_size: int = 1, rank: int = 0,
                 drop_last: bool = False, pad_last: bool = True):
        _check_int(batch_size, "batch_size", 1)
        _check_rank(world_size, rank)
        self.dataset, self.batch_size = dataset, batch_size
        self.world_size, self.rank = world_size, rank
        self.drop_last, self.pad_last = bool(drop_last), bool(pad_last)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped stream when it reshuffles per epoch."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        global_batch = self.batch_size * self.world_size
        start = self.rank * self.batch_size
        first_batch, buffer = None, []
        for item in self.dataset:
            buffer.append(item)
            if len(buffer) == global_batch:
                first_batch = first_batch or buffer
                yield from buffer[start : start + self.batch_size]
                buffer = []
        if buffer and not self.drop_last:
            wrap_source = first_batch or buffer
            yield from split_last_global_batch(
                buffer, wrap_source, self.world_size, self.rank, self.pad_last
            )


def _seed_worker_libraries(worker_id: int) -> None:
    """Seed ``random`` and numpy in a DataLoader worker from the seed torch gave that worker.

    torch seeds each worker's own generator; without this, augmentations written with
    ``random`` or numpy would repeat across workers and runs.
    """
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def _loader_options(num_workers, pin_memory, persistent_workers, prefetch_factor,
                    multiprocessing_context=None, in_order=True) -> dict:
    _check_int(num_workers, "num_workers", 0)
    if persistent_workers and num_workers == 0:
        raise ValueError(
            "persistent_workers=True needs worker processes; set num_workers "
            "(dataloader_num_workers) > 0 or turn persistent_workers off."
        )
    if prefetch_factor is not None:
        _check_int(prefetch_factor, "prefetch_factor", 1)
        if num_workers == 0:
            raise ValueError(
                f"prefetch_factor={prefetch_factor} needs worker processes; set num_workers "
                f"(dataloader_num_workers) > 0 or leave prefetch_factor as None."
            )
    # A generator of its own keeps iter(dataloader) from drawing on the global torch RNG, which
    # would shift dropout masks between a resumed run and an uninterrupted one.
    options = {"num_workers": num_workers, "pin_memory": bool(pin_memory), "generator": torch.Generator().manual_seed(0)}
    if num_workers > 0:
        options.update(persistent_workers=bool(persistent_workers),
                       worker_init_fn=_seed_worker_libraries)
        if prefetch_factor is not None:
            options["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            options["multiprocessing_context"] = multiprocessing_context
        if not in_order:  # torch >= 2.6: yield batches as loader processes finish them
            options["in_order"] = False
    return options


def lengths_from_dataset(dataset, model_input_name: str = "input_ids") -> list[int]:
    """Measure ``len(example[model_input_name])`` for every example (reads the whole dataset)."""
    lengths = []
    for position in range(len(dataset)):
        example = dataset[position]
        if not hasattr(example, "keys") or model_input_name not in example:
            raise ValueError(
                f"group_by_length needs example lengths, but example {position} has no "
                f"{model_input_name!r} field; pass lengths=[...] (e.g. a 'length' column) or "
                f"set model_input_name to the field holding the sequence."
            )
        lengths.append(len(example[model_input_name]))
    return lengths


def build_train_dataloader(
    dataset, collate_fn: Callable | None, batch_size: int, *, seed: int, world_size: int = 1,
    rank: int = 0, drop_last: bool = False, num_workers: int = 0, pin_memory: bool = False,
    persistent_workers: bool = False, prefetch_factor: int | None = None,
    group_by_length: bool = False, lengths: Sequence[int] | None = None,
    model_input_name: str = "input_ids", shuffle: bool = True,
    multiprocessing_context: str | None = None, in_order: bool = True,
) -> DataLoader:
    """Build this rank's training DataLoader (call :func:`set_dataloader_epoch` every epoch);
    ``shuffle=False`` keeps the dataset order (``train_sampling_strategy="sequential"``)."""
    _check_int(batch_size, "batch_size", 1)
    options = _loader_options(num_workers, pin_memory, persistent_workers, prefetch_factor,
                              multiprocessing_context, in_order)
    if _is_stream(dataset):
        if group_by_length:
            raise ValueError(
                "group_by_length=True needs a dataset with a length (map-style); it cannot "
                "group a stream. Turn group_by_length off for this dataset."
            )
        if world_size > 1:
            dataset = IterableDatasetShard(dataset, batch_size, world_size, rank, drop_last)
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn,
                          drop_last=drop_last, **options)
    if group_by_length:
        if lengths is None:
            lengths = lengths_from_dataset(dataset, model_input_name)
        if len(lengths) != len(dataset):
            raise ValueError(
                f"lengths has {len(lengths)} entries but the dataset has {len(dataset)} "
                f"examples; pass one length per example."
            )
        sampler = LengthGroupedSampler(lengths, batch_size, seed=seed, world_size=world_size,
                                       rank=rank, drop_last=drop_last)
    else:
        sampler = EpochShuffleSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle,
                                      world_size=world_size, rank=rank, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                      drop_last=False, **options)


def build_eval_dataloader(
    dataset, collate_fn: Callable | None, batch_size: int, *, world_size: int = 1, rank: int = 0,
    drop_last: bool = False, num_workers: int = 0, pin_memory: bool = False,
    persistent_workers: bool = False, prefetch_factor: int | None = None,
    multiprocessing_context: str | None = None, in_order: bool = True,
) -> DataLoader:
    """Build this rank's evaluation DataLoader: sequential, each example read by one rank only."""
    _check_int(batch_size, "batch_size", 1)
    options = _loader_options(num_workers, pin_memory, persistent_workers, prefetch_factor,
                              multiprocessing_context, in_order)
    if _is_stream(dataset):
        if world_size > 1:
            dataset = IterableDatasetShard(dataset, batch_size, world_size, rank, drop_last,
                                           pad_last=False)
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn,
                          drop_last=drop_last, **options)
    sampler = ShardedEvalSampler(len(dataset), world_size=world_size, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                      drop_last=drop_last, **options)


def set_dataloader_epoch(dataloader: DataLoader, epoch: int) -> None:
    """Tell the sampler and/or the dataset of ``dataloader`` (or a Ray Data stream's batches,
    which reshuffle per epoch themselves) which epoch starts next."""
    _check_int(epoch, "epoch", 0)
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    sampler = getattr(dataloader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    dataset = getattr(dataloader, "dataset", None)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
