"""Evaluation batches in lockstep across ranks, for models whose forward pass is a collective.

A sharded model gathers its parameters from every rank on each forward pass, so every rank must
run the same number of them. Evaluation shards differ in length (every example is seen exactly
once), so a rank that runs out keeps running forward passes on a batch it already saw, and throws
the outputs away, until every rank is done. One small all-reduce per batch decides.
"""

import torch
import torch.distributed as dist

_DONE = object()


def lockstep_batches(dataloader, forward, device):
    """Yield this rank's batches; after the last one, call ``forward(batch)`` on a spare batch as
    long as another rank still has batches. The consumer must run one forward per batch it takes."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield from dataloader
        return
    iterator, spare, first = iter(dataloader), None, True
    while True:
        batch = next(iterator, _DONE)
        has_batch = batch is not _DONE
        any_left, all_left = _agree(has_batch, device)
        if not any_left:
            return
        if first and not all_left:
            spare = _batch_of_rank_zero(batch if has_batch else None)  # a rank with an empty shard needs one
        first = False
        if has_batch:
            spare = batch
            yield batch
        else:
            forward(spare)


def _agree(has_batch: bool, device):
    """(some rank has a batch, every rank has one)."""
    flags = torch.tensor([int(has_batch), int(not has_batch)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0].item()), not bool(flags[1].item())


def _batch_of_rank_zero(batch):
    holder = [batch]
    dist.broadcast_object_list(holder, src=0)
    return batch if batch is not None else holder[0]
