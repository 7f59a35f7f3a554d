"""Streaming safetensors I/O: tensors go between their own memory and the file with no
intermediate buffer, so saving and loading run at disk speed.

The format (https://github.com/huggingface/safetensors): 8 bytes little-endian header length,
a JSON header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``
padded with spaces to a multiple of 8, then the tensors' bytes back to back. Files written here
load with the ``safetensors`` library and the other way round.
"""

import json
import struct

import torch

from .file_reads import read_into

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
_NAME_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
# dtypes whose tensors numpy views directly (bfloat16 and the float8s it has no type for)
_NUMPY_VIEWABLE = frozenset(_DTYPE_NAMES) - {torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2}
_PAGE = 4096


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (any dtype, bfloat16 included). Through
    numpy's own view where it has the dtype: a third of the time, which shows at memory speed."""
    if tensor.numel() == 0:
        return memoryview(b"")
    if (tensor.dtype in _NUMPY_VIEWABLE and tensor.dim() > 0 and not tensor.requires_grad
            and tensor.is_contiguous()):
        return memoryview(tensor.numpy()).cast("B")
    return memoryview(tensor.detach().reshape(-1).view(torch.uint8).numpy())


def write_safetensors(path: str, tensors: dict, metadata: dict = None) -> None:
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    header, offset = {}, 0
    for name, tensor in cpu.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise TypeError(f"safetensors cannot store {name} of dtype {tensor.dtype}.")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    # pad with spaces (allowed by the format) so the data starts on a page boundary: page-aligned
    # copies out of the page cache are measurably faster on load
    encoded += b" " * (-(8 + len(encoded)) % _PAGE)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for tensor in cpu.values():
            f.write(_as_bytes(tensor))


def read_header(f) -> tuple:
    """``(header dict, byte position where the data starts)`` of an open safetensors file."""
    (length,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def read_safetensors(path: str, into: dict = None) -> dict:
    """Read every tensor of ``path``. A tensor whose name, dtype and shape match a contiguous CPU
    tensor in ``into`` is read straight into that tensor's memory; the others are new tensors.
    Returns ``{name: tensor}`` for everything read."""
    into = into or {}
    result = {}
    with open(path, "rb", buffering=0) as f:  # unbuffered: large reads go straight to the tensors
        header, start = read_header(f)
        fd = f.fileno()
        # per tensor only what a read needs: at memory speed (a hot page cache), a few microseconds
        # of Python per tensor are a measurable part of a load
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            dtype, shape = _NAME_DTYPES[entry["dtype"]], tuple(entry["shape"])
            target = into.get(name)
            if (target is None or target.dtype != dtype or target.shape != shape or not target.is_cpu
                    or not target.is_contiguous()):
                target = torch.empty(shape, dtype=dtype)
            if end > begin and read_into(fd, start + begin, _as_bytes(target)) != end - begin:
                raise ValueError(f"{path} is truncated: tensor {name} needs bytes {begin}-{end} of the data section.")
            result[name] = target
    return result
