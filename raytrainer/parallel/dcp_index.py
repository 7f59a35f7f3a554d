"""The index of a DCP checkpoint (its ``.metadata`` file), read without running code it could carry.

DCP pickles the index (which tensors and values a checkpoint holds, their shapes, dtypes and
chunks, and where each one's bytes sit) and its own reader loads it with ``pickle.load``, which
calls whatever the file names: a checkpoint folder from someone else could run code when a run
resumes from it. An index needs only DCP's metadata classes, a few of torch's (dtypes,
``torch.Size``, a layout by its name) and paths; any other name is refused before it is looked up,
and the error names the file and what it asked for.
"""

import pickle

import torch
import torch.distributed.checkpoint.metadata as dcp_metadata

_PLAIN_NAMES = frozenset({
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),  # where an entry's bytes sit
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a tensor layout looked up by its name
    ("collections", "OrderedDict"),
    *(("pathlib", name) for name in ("Path", "PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")),
})


def read_index(path) -> dcp_metadata.Metadata:
    """The ``Metadata`` pickled in the file ``path``; ``pickle.UnpicklingError`` for one that names
    anything an index does not hold."""
    with open(path, "rb") as file:
        index = _IndexUnpickler(file, path).load()
    if not isinstance(index, dcp_metadata.Metadata):
        raise pickle.UnpicklingError(f"{path} is not the index of a torch.distributed.checkpoint checkpoint: it holds "
                                     f"a {type(index).__name__}.")
    return index


class _IndexUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _PLAIN_NAMES or _is_dcp_class(module, name) or _is_dtype(module, name):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to load the checkpoint index {self._path}: it names {module}.{name}, which is not part of a "
            "torch.distributed.checkpoint index, and loading it could run code. Load only checkpoints you trust, "
            "or save this one again with raytrainer or torch.distributed.checkpoint.")


def _is_dcp_class(module: str, name: str) -> bool:
    """A class (dataclass or enum) defined in DCP's metadata module, not a name it imports."""
    value = getattr(dcp_metadata, name, None) if module == dcp_metadata.__name__ else None
    return isinstance(value, type) and value.__module__ == module


def _is_dtype(module: str, name: str) -> bool:
    return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
