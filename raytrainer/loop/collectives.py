"""Collectives the loop needs across Ray Train workers, all no-ops in a single process."""

import torch.distributed as dist

from ..nested import nested_concat_all


def is_distributed(args) -> bool:
    return args.world_size > 1 and dist.is_available() and dist.is_initialized()


def gather_objects(obj, args) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed(args):
        return [obj]
    gathered = [None] * args.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_rank_zero(obj, args):
    """Rank 0's ``obj`` on every rank, so decisions taken from it agree everywhere."""
    if not is_distributed(args):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def merge_rank_outputs(parts: list, padding_index: int = -100):
    """Join the ranks' evaluation outputs in rank order. Each rank evaluated a contiguous shard,
    so rank order is dataset order. Parts are arrays (or trees of them), lists of per-batch
    arrays (``eval_do_concat_batches=False``), or None."""
    present = [part for part in parts if part is not None]
    if not present:
        return None
    if isinstance(present[0], list):
        return [batch for part in present for batch in part]
    return nested_concat_all(present, padding_index)


def sum_over_ranks(tensor):
    """The sum of ``tensor`` over every rank, in place (unchanged in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
