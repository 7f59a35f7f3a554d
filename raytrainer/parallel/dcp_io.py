"""Disk I/O of sharded checkpoints at the speed of the disk, in ``torch.distributed.checkpoint``'s
own file format (any DCP reader, accelerate's included, loads what is written here, and the reader
here loads what they write).

DCP's stock file-system storage costs more than the bytes on both sides: ``FileSystemWriter``
fsyncs every file, although the checkpoint folder's rename is what makes a checkpoint appear
complete or not at all (``checkpoints.sinks``), and ``FileSystemReader`` reads each tensor into a
new buffer (a ``torch.load`` per tensor) and then copies it into the model's or optimizer's tensor.
``DirectReader`` reads each stored tensor's bytes straight into the tensor that receives them.
DCP stores every tensor as a small ``torch.save`` archive; where its bytes sit comes from the
archive's zip directory (two or three ``pread``s per archive; torch's own reader, whose many small
reads take twice as long, for an archive it does not recognise) and its pickled layout (dtype, shape,
strides), read without the data. A
tensor it cannot place exactly (another dtype, a non-contiguous slice, a stream transform, an
archive it does not recognise) takes DCP's own path.
"""

import collections
import contextlib
import os
import pickle
import struct
import sys
from typing import NamedTuple, Optional

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.planner import LoadItemType

try:  # private helpers of torch: a torch without them reads every tensor through DCP's own reader
    from torch.distributed._shard._utils import narrow_tensor_by_index
    from torch.distributed.checkpoint.utils import _create_file_view
except ImportError:
    narrow_tensor_by_index = _create_file_view = None
from torch.futures import Future


class CheckpointWriter(FileSystemWriter):
    """DCP's writer without the per-file fsync (the files are written into a staging folder that
    is renamed into place once every file is closed, so a crashed save leaves no checkpoint) and
    without a CRC-32 of every tensor's bytes in its archive: ``torch.load`` does not need it, and
    computing it costs about as much CPU time as writing the bytes (2.4 GB/s measured here). The
    setting is torch's, for the process: a ``torch.save`` on another thread meanwhile also skips
    it, which is as harmless."""

    def __init__(self, path: str):
        super().__init__(path, sync_files=False)

    def write_data(self, plan, planner):
        with _without_crc32():
            return super().write_data(plan, planner)  # writes before it returns (no threads)


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
    """``FileSystemReader`` that reads each tensor into its destination with one ``readinto``."""

    def read_data(self, plan, planner):
        per_file = {}
        for request in plan.items:
            per_file.setdefault(self.storage_data[request.storage_index].relative_path, []).append(request)
        for relative_path, requests in per_file.items():
            path = os.path.join(self.path, relative_path)
            requests.sort(key=lambda request: self.storage_data[request.storage_index].offset)
            with open(path, "rb", buffering=0) as file:
                first, last = (self.storage_data[requests[i].storage_index] for i in (0, -1))
                _read_soon(file, first.offset, last.offset + last.length - first.offset)
                pending = [request for request in requests if not self._read_in_place(file, request, planner)]
            if pending:  # DCP's own path for what could not be placed
                super().read_data(_PlanOf(pending), planner).wait()
        done = Future()
        done.set_result(None)
        return done

    def _read_in_place(self, file, request, planner) -> bool:
        """Read one tensor request straight into its destination; False when it cannot be."""
        info = self.storage_data[request.storage_index]
        if request.type == LoadItemType.BYTE_IO or info.transform_descriptors or _create_file_view is None:
            return False
        target = planner.resolve_tensor(request).detach()
        if target.device.type != "cpu" or not target.is_contiguous():
            return False
        place = stored_slice(file, info.offset, info.length, request.storage_offsets, request.lengths)
        if place is None or place.dtype != target.dtype or place.shape != tuple(target.shape):
            return False
        nbytes = target.numel() * target.element_size()
        if nbytes:
            file.seek(place.offset)
            if file.readinto(memoryview(target.view(-1).view(torch.uint8).numpy())) != nbytes:
                raise ValueError(f"{file.name} is truncated: {request.storage_index.fqn} needs {nbytes} bytes at "
                                 f"offset {place.offset}.")
        planner.commit_tensor(request, target)
        return True


def _read_soon(file, offset: int, length: int) -> None:
    """Tell the kernel these bytes are read next: from a cold page cache it reads them ahead in
    large requests while the archives' small directory reads come in between. Only the requested
    range: a rank that loads a slice of a larger world's file does not read the rest."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(file.fileno(), offset, length, os.POSIX_FADV_WILLNEED)


class Placement(NamedTuple):
    offset: int  # absolute byte offset of the slice in the file
    dtype: torch.dtype
    shape: tuple


def stored_slice(file, begin: int, length: int, offsets, lengths) -> Optional[Placement]:
    """Where the slice ``offsets``/``lengths`` of the tensor ``torch.save`` wrote at ``begin`` lies
    in ``file``, when it is one contiguous run of bytes; None otherwise (or for an archive that
    holds something else than one plain tensor)."""
    try:
        archive = _StoredRecords.of(file.fileno(), begin, length) or _torch_archive(file, begin, length)
        if archive.has_record("byteorder") and archive.get_record("byteorder").decode() != sys.byteorder:
            return None  # torch.load swaps the bytes of an archive from a machine of the other byte order
        layout = _TensorLayout(archive.get_record("data.pkl")).load()
        record_offset = archive.get_record_offset(f"data/{layout.key}")
    except Exception:  # noqa: BLE001 - anything unexpected is read by DCP's own reader instead
        return None
    if not isinstance(layout, _Layout):
        return None
    tensor = torch.empty_strided(layout.size, layout.stride, dtype=layout.dtype, device="meta")
    wanted = narrow_tensor_by_index(tensor, offsets, lengths)
    if not wanted.is_contiguous() or layout.storage_offset + _extent(tensor) > layout.numel:
        return None
    element = (layout.storage_offset + wanted.storage_offset()) * tensor.element_size()
    return Placement(begin + record_offset + element, layout.dtype, tuple(wanted.shape))


def _torch_archive(file, begin: int, length: int):
    """torch's own reader of the archive (through Python reads of the file: some 0.1 ms each)."""
    return torch._C.PyTorchFileReader(_create_file_view(file, begin, length))


class _StoredRecords:
    """The records of one ``torch.save`` archive found from its zip directory, read with two or three
    ``pread``s: the same answers as torch's reader for the archives torch writes (every record
    stored uncompressed, sizes under 4 GiB); ``of`` returns None for any other archive."""

    _PEEK = 4096  # the directory, the pickle and the small records sit in the archive's two ends

    def __init__(self, fd: int, begin: int, length: int):
        self._fd, self._begin = fd, begin
        self._head = os.pread(fd, min(length, self._PEEK), begin)
        self._tail_start = max(0, length - self._PEEK)
        self._tail = self._head if self._tail_start == 0 else os.pread(fd, length - self._tail_start,
                                                                       begin + self._tail_start)
        self._records = {}  # name without the archive's folder -> (its local header's offset, size)

    @classmethod
    def of(cls, fd: int, begin: int, length: int) -> Optional["_StoredRecords"]:
        archive = cls(fd, begin, length)
        return archive if archive._read_directory() else None

    def _bytes(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self._head):
            return self._head[offset:offset + size]
        if offset >= self._tail_start:
            return self._tail[offset - self._tail_start:offset - self._tail_start + size]
        return os.pread(self._fd, size, self._begin + offset)

    def _read_directory(self) -> bool:
        end = len(self._tail) - 22  # the end-of-directory record (torch writes no archive comment)
        if end < 0 or self._tail[end:end + 4] != b"PK\x05\x06":
            return False
        entries, size, start = struct.unpack_from("<6xHLL", self._tail, end + 4)
        if entries == 0xFFFF or 0xFFFFFFFF in (size, start):
            return False  # zip64 sizes: torch's reader
        directory, position = self._bytes(start, size), 0
        for _ in range(entries):
            if directory[position:position + 4] != b"PK\x01\x02":
                return False
            (method, stored, record_size, name_length, extra_length, comment_length,
             header) = struct.unpack_from("<6xH8xLLHHH8xL", directory, position + 4)
            if method != 0 or stored != record_size or 0xFFFFFFFF in (record_size, header):
                return False
            name = directory[position + 46:position + 46 + name_length].decode()
            self._records[name.partition("/")[2]] = (header, record_size)
            position += 46 + name_length + extra_length + comment_length
        return True

    def has_record(self, name: str) -> bool:
        return name in self._records

    def get_record(self, name: str) -> bytes:
        return self._bytes(self.get_record_offset(name), self._records[name][1])

    def get_record_offset(self, name: str) -> int:
        """Where the record's bytes start: after its local header, whose name and padding vary."""
        header = self._records[name][0]
        local = self._bytes(header, 30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"no local header at {header} for {name}")
        return header + 30 + sum(struct.unpack_from("<HH", local, 26))


def _extent(tensor) -> int:
    """Elements of storage a strided tensor spans (0 when it is empty)."""
    if tensor.numel() == 0:
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))


class _Layout(NamedTuple):
    key: str
    dtype: torch.dtype
    numel: int  # elements in the stored storage
    storage_offset: int
    size: tuple
    stride: tuple


class _StorageType(NamedTuple):
    dtype: torch.dtype


def _layout_of(storage, storage_offset, size, stride, *unused) -> _Layout:
    _, storage_type, key, _, numel = storage
    return _Layout(str(key), storage_type.dtype, int(numel), int(storage_offset), tuple(size), tuple(stride))


class _TensorLayout(pickle.Unpickler):
    """Unpickles a ``torch.save`` archive's ``data.pkl`` of one plain tensor into its ``_Layout``;
    anything else fails (and the tensor is read the usual way)."""

    def __init__(self, data: bytes):
        import io

        super().__init__(io.BytesIO(data))

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _layout_of
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            from torch.serialization import _get_dtype_from_pickle_storage_type

            return _StorageType(_get_dtype_from_pickle_storage_type(name))
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain tensor")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return pid


class _PlanOf:
    """The part of a load plan that DCP's own reader handles (it only reads ``items``)."""

    def __init__(self, items):
        self.items = items
