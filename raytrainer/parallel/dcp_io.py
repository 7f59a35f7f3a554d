"""Disk I/O of sharded checkpoints at the speed of the disk, in ``torch.distributed.checkpoint``'s
own file format (any DCP reader, accelerate's included, loads what is written here, and the reader
here loads what they write).

DCP's stock file-system storage costs more than the bytes on both sides: ``FileSystemWriter``
fsyncs every file, although the checkpoint folder's rename is what makes a checkpoint appear
complete or not at all (``checkpoints.sinks``), and ``FileSystemReader`` reads each tensor into a
new buffer (a ``torch.load`` per tensor) and then copies it into the model's or optimizer's tensor.
``DirectReader`` reads each stored tensor's bytes straight into the tensor that receives them.
DCP stores every tensor as a small ``torch.save`` archive (``torch_archives``); where its bytes
sit comes from the archive's directory and its pickled layout (dtype, shape, strides), read
without the data. A tensor it cannot place exactly (another dtype, a non-contiguous slice, a
stream transform, an archive it does not recognise) takes DCP's own path.
"""

import contextlib
import os
import sys
from typing import NamedTuple, Optional

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from ..checkpoints.file_reads import read_into
from .dcp_index import read_index
from .torch_archives import ArchiveHead, ArchiveRecords, ArchiveWriter, tensor_layout, torch_reader

try:  # private parts of torch: without them, every tensor is read through DCP's own reader
    from torch.distributed._shard._utils import narrow_tensor_by_index
except ImportError:
    narrow_tensor_by_index = None
try:  # ... and written through DCP's own writer
    from torch.distributed.checkpoint.filesystem import (
        DEFAULT_SUFFIX,
        _item_size,
        _OverlappingCpuLoader,
        _SerialCpuLoader,
        _StorageInfo,
    )
except ImportError:
    _SerialCpuLoader = None


class CheckpointWriter(FileSystemWriter):
    """DCP's writer, writing the same files (one per rank: the byte items, then every tensor as a
    ``torch.save`` archive) faster:

    - without the per-file fsync: the files are written into a staging folder that is renamed
      into place once every file is closed, so a crashed save leaves no checkpoint;
    - without a CRC-32 of every tensor's bytes in its archive: ``torch.load`` does not need it,
      and computing it costs about as much CPU time as writing the bytes (2.4 GB/s measured here).
      The setting is torch's, for the process: a ``torch.save`` on another thread meanwhile also
      skips it, which is as harmless;
    - each tensor's archive from ``ArchiveWriter`` (torch.save's bytes, without its per-call costs).
    """

    def __init__(self, path: str):
        super().__init__(path, sync_files=False)

    def write_data(self, plan, planner):
        with _without_crc32():
            if _SerialCpuLoader is None or self.thread_count != 1 or not self.single_file_per_rank:
                return super().write_data(plan, planner)  # writes before it returns (no threads)
            done = Future()
            done.set_result(self._write_file(plan, planner))
            return done

    def _write_file(self, plan, planner) -> list:
        """The rank's items into its one file, in the order DCP's writer writes them."""
        name = f"{plan.storage_data.prefix}0{DEFAULT_SUFFIX}"
        loader = self._tensor_loader(planner)  # copies tensors off an accelerator ahead of writing
        for item in plan.items:
            if item.type != WriteItemType.BYTE_IO:
                loader.add(_item_size(item), item)
        loader.start_loading()
        results = []
        with self.fs.create_stream(self.fs.concat_path(self.path, name), "wb") as stream:

            def record(item, write) -> None:
                offset = stream.tell()
                write()
                length = stream.tell() - offset
                results.append(WriteResult(index=item.index, size_in_bytes=length,
                                           storage_data=_StorageInfo(name, offset, length)))

            for item in plan.items:
                if item.type == WriteItemType.BYTE_IO:
                    record(item, lambda item=item: stream.write(planner.resolve_data(item).getbuffer()))
            for tensor, item in loader.values():
                record(item, lambda tensor=tensor: _ARCHIVES.write(stream, tensor))
        return results

    def _tensor_loader(self, planner):
        backend = getattr(torch, torch._C._get_privateuse1_backend_name(), None)
        accelerator = torch.cuda.is_available() or bool(backend and backend.is_available())
        if accelerator and self.per_thread_copy_ahead > 0:
            return _OverlappingCpuLoader(planner.resolve_data, inflight_threshhold=self.per_thread_copy_ahead)
        return _SerialCpuLoader(planner.resolve_data)


_ARCHIVES = ArchiveWriter()


@contextlib.contextmanager
def _without_crc32():
    from torch.serialization import get_crc32_options, set_crc32_options

    previous = get_crc32_options()
    set_crc32_options(False)
    try:
        yield
    finally:
        set_crc32_options(previous)


class DirectReader(FileSystemReader):
    """``FileSystemReader`` that reads each tensor's bytes straight into its destination, and the
    index without running code it could carry (``dcp_index``)."""

    def read_metadata(self, *args, **kwargs):
        rank = kwargs.get("rank")  # DCP asks for a rank's own index when the ranks wrote one each
        index = read_index(os.path.join(self.path, ".metadata" if rank is None else f"__{rank}.metadata"))
        if getattr(index, "storage_meta", None) is None:
            index.storage_meta = StorageMeta()
        index.storage_meta.load_id = self.load_id
        return index

    def read_data(self, plan, planner):
        per_file = {}
        for request in plan.items:
            per_file.setdefault(self.storage_data[request.storage_index].relative_path, []).append(request)
        for relative_path, requests in per_file.items():
            path = os.path.join(self.path, relative_path)
            requests.sort(key=lambda request: self.storage_data[request.storage_index].offset)
            with open(path, "rb", buffering=0) as file:
                first, last = (self.storage_data[requests[i].storage_index] for i in (0, -1))
                read_soon(file, first.offset, last.offset + last.length - first.offset)
                pending = [request for request in requests if not self._read_in_place(file, request, planner)]
            if pending:  # DCP's own path for what could not be placed
                super().read_data(_PlanOf(pending), planner).wait()
        done = Future()
        done.set_result(None)
        return done

    def _read_in_place(self, file, request, planner) -> bool:
        """Read one tensor request straight into its destination; False when it cannot be."""
        info = self.storage_data[request.storage_index]
        if request.type == LoadItemType.BYTE_IO or info.transform_descriptors or narrow_tensor_by_index is None:
            return False
        target = planner.resolve_tensor(request).detach()
        if target.device.type != "cpu" or not target.is_contiguous():
            return False
        place = stored_slice(file, info.offset, info.length, request.storage_offsets, request.lengths)
        if place is None or place.dtype != target.dtype or place.shape != tuple(target.shape):
            return False
        read_tensor(file, place.offset, target, request.storage_index.fqn)
        planner.commit_tensor(request, target)
        return True


def read_tensor(file, offset: int, target: torch.Tensor, fqn: str) -> None:
    """Fill the contiguous CPU tensor ``target`` with ``file``'s bytes at ``offset``; a file that
    ends first is an error naming the tensor, never a partial load."""
    nbytes = target.numel() * target.element_size()
    if nbytes and read_into(file.fileno(), offset, memoryview(target.view(-1).view(torch.uint8).numpy())) != nbytes:
        raise ValueError(f"{file.name} is truncated: {fqn} needs {nbytes} bytes at offset {offset}.")


def read_soon(file, offset: int, length: int) -> None:
    """Tell the kernel these bytes are read next: from a cold page cache it reads them ahead in
    large requests while the archives' small directory reads come in between. Only the requested
    range: a rank that loads a slice of a larger world's file does not read the rest."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(file.fileno(), offset, length, os.POSIX_FADV_WILLNEED)


class Placement(NamedTuple):
    offset: int  # absolute byte offset of the slice in the file
    dtype: torch.dtype
    shape: tuple
    head: Optional[ArchiveHead] = None  # the archive before the storage's bytes, when read by ArchiveRecords


def stored_slice(file, begin: int, length: int, offsets, lengths) -> Optional[Placement]:
    """Where the slice ``offsets``/``lengths`` of the tensor ``torch.save`` wrote at ``begin`` lies
    in ``file``, when it is one contiguous run of bytes; None otherwise (or for an archive that
    holds something else than one plain tensor)."""
    if narrow_tensor_by_index is None:
        return None
    try:
        archive = ArchiveRecords.in_file(file.fileno(), begin, length) or torch_reader(file, begin, length)
        if archive.has_record("byteorder") and archive.get_record("byteorder").decode() != sys.byteorder:
            return None  # torch.load swaps the bytes of an archive from a machine of the other byte order
        layout = tensor_layout(archive.get_record("data.pkl"))
        record_offset = archive.get_record_offset(f"data/{layout.key}")
        head = archive.get_head(f"data/{layout.key}") if isinstance(archive, ArchiveRecords) else None
    except Exception:  # noqa: BLE001 - anything unexpected is read by DCP's own reader instead
        return None
    tensor = torch.empty_strided(layout.size, layout.stride, dtype=layout.dtype, device="meta")
    wanted = narrow_tensor_by_index(tensor, offsets, lengths)
    if not wanted.is_contiguous() or layout.storage_offset + _extent(tensor) > layout.numel:
        return None
    element = (layout.storage_offset + wanted.storage_offset()) * tensor.element_size()
    return Placement(begin + record_offset + element, layout.dtype, tuple(wanted.shape), head)


def _extent(tensor) -> int:
    """Elements of storage a strided tensor spans (0 when it is empty)."""
    if tensor.numel() == 0:
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))


class _PlanOf:
    """The part of a load plan that DCP's own reader handles (it only reads ``items``)."""

    def __init__(self, items):
        self.items = items
