"""Seeded, rank-aware index samplers for training and evaluation.

The training samplers build one *global* order per epoch from ``seed + epoch`` alone (never from
the global RNG), so a resumed run reproduces the order of the run it continues. The order is cut
into global batches of ``batch_size * world_size`` indices and rank ``r`` takes the ``r``-th
``batch_size`` slice of each, which makes N ranks with batch ``b`` see, step by step, the same
examples as one rank with batch ``N * b``.
"""

from __future__ import annotations

import math
import operator
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r}).")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}; pick a non-negative seed.")
    return seed


def _check_rank(world_size: int, rank: int) -> None:
    _check_int(world_size, "world_size", 1)
    _check_int(rank, "rank", 0)
    if rank >= world_size:
        raise ValueError(
            f"rank={rank} is out of range for world_size={world_size}; "
            f"use a rank between 0 and {world_size - 1}."
        )


def even_shard_bounds(length: int, world_size: int, rank: int) -> tuple[int, int]:
    """Return ``(start, stop)`` of ``rank``'s contiguous share of ``length`` items.

    Shares differ by at most one item; the first ``length % world_size`` ranks get the extra one.
    """
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def split_last_global_batch(
    remainder: list, wrap_source: Sequence, world_size: int, rank: int, pad: bool
) -> list:
    """Return ``rank``'s part of a partial global batch ``remainder``.

    With ``pad`` the batch is first completed to a multiple of ``world_size`` with items taken,
    cyclically, from the start of ``wrap_source`` (as ``DistributedSampler`` pads), so every rank
    gets a batch of the same size; without it the split is exact and sizes may differ by one.
    """
    items = list(remainder)
    if pad and world_size > 1 and items:
        missing = (-len(items)) % world_size
        items += [wrap_source[i % len(wrap_source)] for i in range(missing)]
    start, stop = even_shard_bounds(len(items), world_size, rank)
    return items[start:stop]


def num_batches_per_rank(
    num_examples: int, batch_size: int, world_size: int = 1, drop_last: bool = False
) -> int:
    """Number of batches each rank draws per epoch from an :class:`EpochShuffleSampler`."""
    global_batch = batch_size * world_size
    if drop_last:
        return num_examples // global_batch
    return math.ceil(num_examples / global_batch)


def shard_order(
    order: Sequence[int] | torch.Tensor,
    batch_size: int,
    world_size: int = 1,
    rank: int = 0,
    drop_last: bool = False,
) -> list[int]:
    """Cut ``order`` into global batches and return ``rank``'s indices, batch after batch."""
    _check_int(batch_size, "batch_size", 1)
    _check_rank(world_size, rank)
    order = torch.as_tensor(order, dtype=torch.long)
    global_batch = batch_size * world_size
    full_batches = order.numel() // global_batch
    full = order[: full_batches * global_batch].view(full_batches, world_size, batch_size)
    indices = full[:, rank, :].reshape(-1).tolist()
    remainder = order[full_batches * global_batch :].tolist()
    if remainder and not drop_last:
        # padding needs fewer than world_size items, so only the head of the order is copied
        head = order[:world_size].tolist()
        indices += split_last_global_batch(remainder, head, world_size, rank, pad=True)
    return indices


class _EpochSampler(Sampler[int]):
    """Shared machinery: epoch seeding, rank sharding and resuming mid-epoch."""

    def __init__(self, num_examples, batch_size, *, seed, world_size, rank, drop_last):
        self.num_examples = _check_int(num_examples, "num_examples", 0)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = _check_seed(seed)
        _check_rank(world_size, rank)
        self.world_size, self.rank, self.drop_last = world_size, rank, bool(drop_last)
        self.epoch = 0
        self._batches_to_skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = _check_int(epoch, "epoch", 0)

    def skip_batches(self, num_batches: int) -> None:
        """Make the next iteration start after its first ``num_batches`` batches.

        The skip applies once (to resume an interrupted epoch) and reads no data. ``len`` keeps
        reporting the whole epoch, as the step maths of a resumed run expects.
        """
        _check_int(num_batches, "num_batches", 0)
        available = self.num_batches()
        if num_batches > available:
            raise ValueError(
                f"num_batches={num_batches} exceeds the {available} batches this rank draws per "
                f"epoch; pass the number of steps already taken in the current epoch."
            )
        self._batches_to_skip = num_batches

    def num_batches(self) -> int:
        """Batches of at most ``batch_size`` indices this rank yields per epoch."""
        return num_batches_per_rank(
            self.num_examples, self.batch_size, self.world_size, self.drop_last
        )

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def _global_order(self) -> torch.Tensor:
        """The epoch's order over all ranks; each subclass defines how it is drawn."""
        raise NotImplementedError(f"{type(self).__name__} must define _global_order")

    def __iter__(self) -> Iterator[int]:
        indices = shard_order(
            self._global_order(), self.batch_size, self.world_size, self.rank, self.drop_last
        )
        start = self._batches_to_skip * self.batch_size
        self._batches_to_skip = 0
        return iter(indices[start:])

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        full_batches, remainder = divmod(self.num_examples, global_batch)
        length = full_batches * self.batch_size
        if remainder and not self.drop_last:
            length += math.ceil(remainder / self.world_size)
        return length


class EpochShuffleSampler(_EpochSampler):
    """Per-rank training sampler whose epoch order is ``randperm(n)`` seeded with ``seed + epoch``.

    ``shuffle=False`` keeps the dataset order. Without ``drop_last`` the last partial global
    batch is shared evenly between the ranks, padded by wrapping to the start of the order so
    every rank draws the same number of batches (a single rank is never padded).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        world_size: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        super().__init__(
            num_examples, batch_size, seed=seed, world_size=world_size, rank=rank,
            drop_last=drop_last,
        )
        self.shuffle = bool(shuffle)

    def _global_order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        return torch.randperm(self.num_examples, generator=self._generator())


def length_grouped_order(
    lengths: Sequence[int], group_batch_size: int, generator: torch.Generator,
    mega_batch_mult: int | None = None,
) -> list[int]:
    """Shuffle, then sort each megabatch by decreasing length; the longest example goes first.

    A megabatch holds ``mega_batch_mult`` batches (default: ``n // (4 * batch)`` capped at 50,
    at least 1). Putting the longest example in the very first batch makes an out-of-memory
    error surface at step one rather than hours later.
    """
    if mega_batch_mult is None:
        mega_batch_mult = max(1, min(len(lengths) // (group_batch_size * 4), 50))
    megabatch_size = mega_batch_mult * group_batch_size
    shuffled = torch.randperm(len(lengths), generator=generator).tolist()
    megabatches = [
        sorted(shuffled[i : i + megabatch_size], key=lambda idx: lengths[idx], reverse=True)
        for i in range(0, len(shuffled), megabatch_size)
    ]
    if not megabatches:
        return []
    longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
    first, other = megabatches[0], megabatches[longest]
    first[0], other[0] = other[0], first[0]
    return [idx for megabatch in megabatches for idx in megabatch]


class LengthGroupedSampler(_EpochSampler):
    """Training sampler that groups examples of similar length (``group_by_length``).

    Megabatches are formed over the *global* batch (``batch_size * world_size``), so the
    grouping, like the shuffle, does not depend on how the batch is split between ranks.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        mega_batch_mult: int | None = None,
    ):
        self.lengths = _as_length_list(lengths)
        super().__init__(
            len(self.lengths), batch_size, seed=seed, world_size=world_size, rank=rank,
            drop_last=drop_last,
        )
        if mega_batch_mult is not None:
            _check_int(mega_batch_mult, "mega_batch_mult", 1)
        self.mega_batch_mult = mega_batch_mult

    def _global_order(self) -> torch.Tensor:
        order = length_grouped_order(
            self.lengths, self.batch_size * self.world_size, self._generator(),
            self.mega_batch_mult,
        )
        return torch.tensor(order, dtype=torch.long)


def _as_length_list(lengths) -> list[int]:
    if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__len__"):
        raise TypeError(
            f"lengths must be a sequence of ints (one per example), got {type(lengths).__name__}."
        )
    values = []
    for position, value in enumerate(lengths):
        try:
            # operator.index accepts ints, numpy integers and integer 0-d tensors, not floats.
            length = -1 if isinstance(value, bool) else operator.index(value)
        except TypeError:
            length = -1
        if length < 0:
            raise ValueError(
                f"lengths[{position}]={value!r} is not a non-negative int; pass one integer "
                f"length per example (e.g. len(example['input_ids']))."
            )
        values.append(length)
    return values


class ShardedEvalSampler(Sampler[int]):
    """Evaluation sampler: a contiguous shard per rank, every example exactly once, no padding.

    Shards differ in size by at most one, and concatenating them in rank order gives back the
    dataset order, so gathered predictions line up with the labels.
    """

    def __init__(self, num_examples: int, world_size: int = 1, rank: int = 0):
        self.num_examples = _check_int(num_examples, "num_examples", 0)
        _check_rank(world_size, rank)
        self.world_size, self.rank = world_size, rank
        self.start, self.stop = even_shard_bounds(num_examples, world_size, rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
