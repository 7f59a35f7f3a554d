"""``torch.save`` archives of one tensor, as DCP stores every tensor of a checkpoint: find where the
tensor's bytes sit without torch's reader, and write an archive without torch.save's per-call costs.

An archive is a zip file whose records (the pickled layout ``data.pkl``, the storage's bytes
``data/<key>``, a few small ones) are stored uncompressed. torch's own reader finds them through
many small reads of a Python file object (some 80 µs per archive); ``ArchiveRecords`` reads the
same directory with two or three ``pread``s. torch.save pickles the tensor and writes seven
records through Python calls (some 0.3 ms per tensor, where writing the bytes of a 1 MB tensor
into the page cache takes about as long); ``ArchiveWriter`` writes, for every tensor whose layout
it has seen, the bytes torch.save wrote for the first one around the new tensor's own bytes
(tensors up to 16 MiB: a larger one's per-call cost is lost in its bytes' writing).
Without a CRC-32 (DCP's writer here turns it off) torch.save's archive is the same for tensors of
one layout except for the tensor's bytes: its serialization id derives from the records' names and
CRC-32s. Anything unusual takes torch's own code.
"""

import collections
import io
import os
import pickle
import struct
from typing import Callable, NamedTuple, Optional

import torch

try:  # a private helper of torch: a torch without it finds every record through ArchiveRecords or not at all
    from torch.distributed.checkpoint.utils import _create_file_view
except ImportError:
    _create_file_view = None


class Layout(NamedTuple):
    key: str  # the storage's record: data/<key>
    dtype: torch.dtype
    numel: int  # elements in the stored storage
    storage_offset: int
    size: tuple
    stride: tuple


def tensor_layout(data_pkl: bytes) -> Layout:
    """The layout pickled in an archive's ``data.pkl`` of one plain tensor; raises for anything else."""
    layout = _LayoutUnpickler(data_pkl).load()
    if not isinstance(layout, Layout):
        raise pickle.UnpicklingError("the archive holds something else than one tensor")
    return layout


class _StorageType(NamedTuple):
    dtype: torch.dtype


def _layout_of(storage, storage_offset, size, stride, *unused) -> Layout:
    _, storage_type, key, _, numel = storage
    return Layout(str(key), storage_type.dtype, int(numel), int(storage_offset), tuple(size), tuple(stride))


class _LayoutUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of one plain tensor into its ``Layout``, without the data."""

    def __init__(self, data: bytes):
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


def torch_reader(file, begin: int, length: int):
    """torch's own reader of the archive at ``begin`` in ``file`` (same methods as ArchiveRecords)."""
    return torch._C.PyTorchFileReader(_create_file_view(file, begin, length))


class ArchiveRecords:
    """The records of one archive, found from its zip directory: the same answers as torch's
    reader for the archives torch writes (records stored uncompressed, sizes under 4 GiB, no
    archive comment). ``in_file``/``in_buffer`` return None for any other archive."""

    _PEEK = 4096  # the directory, the pickle and the small records sit in the archive's two ends

    def __init__(self, read: Callable[[int, int], bytes], length: int):
        self._read = read  # (offset in the archive, size) -> bytes
        self._head = read(0, min(length, self._PEEK))
        self._tail_start = max(0, length - self._PEEK)
        self._tail = self._head if self._tail_start == 0 else read(self._tail_start, length - self._tail_start)
        self._records = {}  # name without the archive's folder -> (its local header's offset, size)

    @classmethod
    def in_file(cls, fd: int, begin: int, length: int) -> Optional["ArchiveRecords"]:
        return cls._found(cls(lambda offset, size: os.pread(fd, size, begin + offset), length))

    @classmethod
    def in_buffer(cls, buffer) -> Optional["ArchiveRecords"]:
        view = memoryview(buffer)
        return cls._found(cls(lambda offset, size: bytes(view[offset:offset + size]), len(view)))

    @staticmethod
    def _found(archive: "ArchiveRecords") -> Optional["ArchiveRecords"]:
        try:
            return archive if archive._read_directory() else None
        except (struct.error, UnicodeDecodeError):
            return None

    def _bytes(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self._head):
            return self._head[offset:offset + size]
        if offset >= self._tail_start:
            return self._tail[offset - self._tail_start:offset - self._tail_start + size]
        return self._read(offset, size)

    def _read_directory(self) -> bool:
        end = len(self._tail) - 22  # the end-of-directory record
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

    def get_head(self, name: str) -> Optional["ArchiveHead"]:
        """What the archive holds before the record ``name``'s bytes, when its pickle and byte order
        are part of it (as torch.save writes them); None otherwise."""
        header = self._records[name][0]
        if any(self._records[other][0] > header for other in ("data.pkl", "byteorder") if other in self._records):
            return None
        return ArchiveHead(self._bytes(0, self.get_record_offset(name)))


class ArchiveHead(NamedTuple):
    """The bytes of an archive before its storage's bytes: the same for every archive torch.save
    writes of one tensor layout (the pickle, the byte order, the records' local headers, which
    leave sizes and CRC-32s to the directory after the data), so a second archive of the layout is
    known by one read of as many bytes instead of its directory and pickle."""

    data: bytes

    def begins(self, fd: int, offset: int) -> bool:
        """Whether the archive at ``offset`` in ``fd`` begins with this head."""
        return os.pread(fd, len(self.data), offset) == self.data


class ArchiveWriter:
    """Writes ``torch.save(tensor)`` into a stream: for a tensor of a layout seen before, the first
    one's archive around this tensor's bytes. Only while torch.save computes no CRC-32 (the caller
    turns it off): with one, every archive differs."""

    _MOST_LAYOUTS = 4096  # a model has a few dozen shapes; this only bounds a pathological case
    # the first archive of a layout is made in memory: a large tensor's goes straight to the stream
    # (its bytes take far longer to write than torch.save's per-call work)
    LARGEST = 16 << 20

    def __init__(self):
        self._around = {}  # layout key -> (archive bytes before the tensor's, archive bytes after)

    def write(self, stream, tensor: torch.Tensor) -> None:
        key = _layout_key(tensor) if tensor.nbytes <= self.LARGEST else None
        if key is None:
            torch.save(tensor, stream)
            return
        data = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        around = self._around.get(key)
        if around is None:
            archive = io.BytesIO()
            torch.save(tensor, archive)
            around = _around_data(archive.getbuffer(), data)
            if around is None:  # not the archive expected: written as torch.save wrote it
                stream.write(archive.getbuffer())
                return
            if len(self._around) >= self._MOST_LAYOUTS:
                self._around.clear()
            self._around[key] = around
        stream.write(around[0])
        stream.write(data)
        stream.write(around[1])


def _layout_key(tensor: torch.Tensor) -> Optional[tuple]:
    """What torch.save's archive of ``tensor`` depends on besides its bytes; None for a tensor that
    torch.save writes some other way (a subclass, a view of a larger storage, attributes, ...)."""
    if (type(tensor) is not torch.Tensor or tensor.device.type != "cpu" or tensor.layout != torch.strided
            or not tensor.is_contiguous() or tensor.storage_offset() != 0 or tensor.is_conj() or tensor.is_neg()
            or any(getattr(tensor, "names", None) or ()) or tensor.untyped_storage().nbytes() != tensor.nbytes
            or getattr(tensor, "__dict__", None)):
        return None
    alignment = getattr(getattr(getattr(torch.serialization, "config", None), "save", None), "storage_alignment", None)
    return tensor.dtype, tuple(tensor.shape), tensor.requires_grad, alignment


def _around_data(archive: memoryview, data: memoryview) -> Optional[tuple]:
    """The archive's bytes before and after the tensor's own, when it is the plain archive of one
    tensor whose bytes are ``data``; None otherwise."""
    records = ArchiveRecords.in_buffer(archive)
    try:
        layout = tensor_layout(records.get_record("data.pkl"))
        start = records.get_record_offset(f"data/{layout.key}")
    except Exception:  # noqa: BLE001 - anything unexpected: not a template
        return None
    if layout.storage_offset != 0 or archive[start:start + len(data)] != data:
        return None
    return bytes(archive[:start]), bytes(archive[start + len(data):])
