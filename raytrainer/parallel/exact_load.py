"""Loading a sharded checkpoint into the sharding it was saved from, without DCP's load planner.

DCP plans every load as a resharding: it intersects each tensor's local shard with every stored
chunk and builds a read request per overlap, then finds each request's bytes, some 0.3 ms per
tensor in all (a 605 MB model + AdamW checkpoint of 384 tensors: 150 ms of Python around 140 ms
of reads). When a checkpoint is loaded with the sharding it was saved with (every resume of a
run on the same number of workers), each tensor's local shard *is* one stored chunk, and the
plan is a dictionary lookup: ``load_exact`` reads each chunk's bytes straight into the local
shard and sets the few pickled values (the optimizer's lr, betas, ...) where DCP would.

Anything else answers False, and the caller loads through DCP, which loads every entry again:
another world size or mesh (a chunk that is not a local shard), a key the checkpoint lacks (DCP's
error names it), another dtype or global shape, a tensor off the CPU or non-contiguous, a file
shorter than its index says, a pickled value that is not plain data (which DCP's path refuses,
naming it): all found before anything is read into the state; an archive that is not one plain
tensor in its layout's memory order: found when its turn comes, since the archives are read front
to back as they are stored (a first pass over every archive's head made cold loads slower than
DCP's path: the heads' reads ran ahead of the kernel's read-ahead). The pickled values are set
once every tensor is read.
"""

import io
import os
from typing import NamedTuple, Optional

import torch
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex, TensorStorageMetadata
from torch.distributed.tensor import DTensor

from .dcp_index import read_index
from .dcp_io import read_soon, read_tensor, stored_slice

try:  # private parts of torch: without them every load takes DCP's path
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.checkpoint._traverse import set_element
except ImportError:
    flatten_state_dict = None


class _TensorRead(NamedTuple):
    fqn: str
    relative_path: str
    offset: int  # where the chunk's archive starts in the file
    length: int
    target: torch.Tensor  # the local shard, read into in place


class _ValueRead(NamedTuple):
    path: tuple  # where the value goes in the nested state dict
    relative_path: str
    offset: int
    length: int


def load_exact(state: dict, path: str) -> bool:
    """Fill ``state`` (nested, as passed to ``dcp.load``) from the DCP checkpoint at ``path`` when
    every entry maps onto one stored chunk exactly; False otherwise, and DCP's path loads every entry
    again (an archive that cannot be placed, found midway, leaves the tensors before it read)."""
    if flatten_state_dict is None:
        return False
    try:
        metadata = read_index(os.path.join(path, ".metadata"))
    except Exception:  # noqa: BLE001 - a missing, damaged or refused index: DCP's path reports it
        return False
    flat, paths = flatten_state_dict(state)
    reads = _plan(flat, paths, metadata)
    if reads is None:
        return False
    reads.sort(key=lambda read: (read.relative_path, read.offset))  # each file front to back
    files = {}
    try:
        for relative_path, first, end in _spans(reads):
            file = files[relative_path] = open(os.path.join(path, relative_path), "rb", buffering=0)
            if os.fstat(file.fileno()).st_size < end:
                return False  # a truncated file: DCP's path names what it misses
            read_soon(file, first, end - first)
        values = _unpickled(reads, files)
        if values is None or not _read_tensors(reads, files):
            return False
    finally:
        for file in files.values():
            file.close()
    for where, value in values:
        set_element(state, where, value)
    return True


def _spans(reads: list):
    """``(file, first byte, end)`` of the archives ``reads`` read in each file."""
    spans = {}
    for read in reads:
        first, end = spans.get(read.relative_path, (read.offset, 0))
        spans[read.relative_path] = (min(first, read.offset), max(end, read.offset + read.length))
    return [(relative_path, first, end) for relative_path, (first, end) in spans.items()]


def _plan(flat: dict, paths: dict, metadata) -> Optional[list]:
    reads, chunk_of = [], {}
    for fqn, value in flat.items():
        stored = metadata.state_dict_metadata.get(fqn)
        if isinstance(value, torch.Tensor):
            if not isinstance(stored, TensorStorageMetadata):
                return None
            read = _tensor_read(fqn, value, stored, metadata.storage_data, chunk_of)
        elif isinstance(stored, BytesStorageMetadata):
            info = metadata.storage_data.get(MetadataIndex(fqn))
            read = info and _ValueRead(paths[fqn], info.relative_path, info.offset, info.length)
        else:
            return None
        if read is None:
            return None
        reads.append(read)
    return reads


def _tensor_read(fqn: str, value: torch.Tensor, stored, storage_data, chunk_of: dict) -> Optional[_TensorRead]:
    """The read of ``value``'s local shard, when it is exactly one stored chunk of the same dtype."""
    if isinstance(value, DTensor):
        target = local_shard(value)
        chunks = shard_chunks(value, chunk_of)
        if len(chunks) != 1:
            return None
        offsets, sizes = tuple(chunks[0].offsets), tuple(chunks[0].sizes)
    elif type(value) in (torch.Tensor, torch.nn.Parameter):
        target, offsets, sizes = value, (0,) * value.dim(), tuple(value.shape)
    else:  # a ShardedTensor or another subclass: DCP knows how to lay it out
        return None
    target = target.detach()
    if (tuple(stored.size) != tuple(value.shape) or stored.properties.dtype != target.dtype
            or target.device.type != "cpu" or not target.is_contiguous() or tuple(target.shape) != sizes):
        return None
    for index, chunk in enumerate(stored.chunks):
        if tuple(chunk.offsets) == offsets and tuple(chunk.sizes) == sizes:
            info = storage_data.get(MetadataIndex(fqn, offsets, index))
            if info is None or info.transform_descriptors:
                return None
            return _TensorRead(fqn, info.relative_path, info.offset, info.length, target)
    return None


def shard_chunks(value: DTensor, known: dict) -> list:
    """``value.__create_chunk_list__()``: where this rank's part of the DTensor lies in the whole.
    It depends on the global shape, mesh and placements alone, and a model has few of them, so
    each is computed once per ``known`` (a dict the caller keeps for one save or load)."""
    key = (value.shape, value.device_mesh, tuple(value.placements))
    chunks = known.get(key)
    if chunks is None:
        chunks = known[key] = value.__create_chunk_list__()
    return chunks


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (``to_local()``'s tensor, without an autograd function's call per
    tensor), any other tensor itself."""
    if not isinstance(tensor, DTensor):
        return tensor
    local = getattr(tensor, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else tensor.to_local()


def _read_tensors(reads: list, files: dict) -> bool:
    """Read every tensor of ``reads`` in turn; False at the first archive that cannot be placed.
    The archives of one tensor layout hold their bytes at the same place: after the first archive
    of a layout, each is checked by its head instead of its directory and pickle being read."""
    known = {}  # (archive length, dtype, shape) -> (head, bytes' offset in the archive)
    for read in reads:
        if not isinstance(read, _TensorRead):
            continue
        file, shape = files[read.relative_path], tuple(read.target.shape)
        key = (read.length, read.target.dtype, shape)
        if key in known and known[key][0].begins(file.fileno(), read.offset):
            read_tensor(file, read.offset + known[key][1], read.target, read.fqn)
            continue
        where = stored_slice(file, read.offset, read.length, [0] * len(shape), list(shape))
        if where is None or where.dtype != read.target.dtype or where.shape != shape:
            return False
        if where.head is not None:
            known[key] = (where.head, where.offset - read.offset)
        read_tensor(file, where.offset, read.target, read.fqn)
    return True


def _unpickled(reads: list, files: dict) -> Optional[list]:
    """``(path, value)`` of the pickled values, loaded as plain data only."""
    values = []
    for read in reads:
        if isinstance(read, _ValueRead):
            data = os.pread(files[read.relative_path].fileno(), read.length, read.offset)
            try:
                values.append((read.path, torch.load(io.BytesIO(data), weights_only=True)))
            except Exception:  # noqa: BLE001 - not plain data (or unreadable): DCP's path decides
                return None
    return values

