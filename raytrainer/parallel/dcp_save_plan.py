"""The save plan of a sharded checkpoint: DCP's own, made with less work per tensor.

DCP's ``DefaultSavePlanner`` asks every DTensor for its write item and, when writing, for its
local shard again: each ask goes through ``to_local()`` (an autograd call) and recomputes where
the rank's shard lies in the whole tensor, although a model's layers repeat a few shapes and
shardings. Here the shard's place is computed once per (shape, mesh, placements), as the exact
load does (``exact_load.shard_chunks``), and the local tensor is taken directly, for DTensors
whose local part is a plain tensor; anything else (other tensor subclasses, ShardedTensors, plain
values) goes through DCP's own code. The plan is the one DCP makes (the tests compare them item
by item), so the files and the index are the same.
"""

import dataclasses

import torch
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

from .exact_load import shard_chunks

try:  # private parts of torch: without them, DCP's own planner makes the whole plan
    from torch.distributed.checkpoint.planner_helpers import _create_write_items
    from torch.distributed.tensor import DTensor
except ImportError:
    _create_write_items = None


class LocalShardsPlanner(DefaultSavePlanner):
    """``DefaultSavePlanner`` (flattened state dict, no plan caching) with a shorter path for
    DTensors holding a plain local tensor."""

    def __init__(self):
        super().__init__()
        self._chunks = {}  # (shape, mesh, placements) -> this rank's chunks (shard_chunks)

    def create_local_plan(self) -> SavePlan:
        if _create_write_items is None:
            return super().create_local_plan()
        grad_enabled = torch.is_grad_enabled()
        items = []
        for fqn, value in self.state_dict.items():
            if not _is_plain_shard(value):
                items += _create_write_items(fqn, value)
            elif value.device_mesh.get_coordinate() is not None:  # a rank outside the mesh writes nothing
                items.append(self._shard_item(fqn, value, grad_enabled))
        plan = SavePlan(items)
        if self.flatten_state_dict:
            plan = dataclasses.replace(plan, planner_data=self.mappings)
        self.plan = plan
        return plan

    def _shard_item(self, fqn: str, value, grad_enabled: bool) -> WriteItem:
        chunk = shard_chunks(value, self._chunks)[0]  # a plain local tensor is one chunk
        offsets, sizes = chunk.offsets, chunk.sizes
        local = value._local_tensor
        # what DCP records is the properties of to_local()'s result: with grad enabled, an autograd
        # output that requires grad when the DTensor does; without, the local tensor itself
        requires_grad = value.requires_grad if grad_enabled else local.requires_grad
        properties = TensorProperties(dtype=local.dtype, layout=local.layout, requires_grad=requires_grad,
                                      memory_format=torch.contiguous_format, pin_memory=local.is_pinned())
        return WriteItem(index=MetadataIndex(fqn, offsets), type=WriteItemType.SHARD,
                         tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(offsets=offsets, sizes=sizes),
                                                     properties=properties, size=value.size()))

    def lookup_object(self, index: MetadataIndex):
        value = self.state_dict.get(index.fqn)
        if _create_write_items is not None and _is_plain_shard(value):
            return value._local_tensor  # the bytes to_local() would give, without the autograd call
        return super().lookup_object(index)


def _is_plain_shard(value) -> bool:
    """A DTensor whose rank-local part is a plain tensor (one shard or replica per rank) and that
    DCP can save (no pending reduction)."""
    return (type(value) is DTensor and type(value._local_tensor) is torch.Tensor
            and not any(placement.is_partial() for placement in value.placements))
