"""Model weights on disk: safetensors (sharded with an index above ``MAX_SHARD_BYTES``) or a
``torch.save`` state dict when ``save_safetensors=False``. Loading never unpickles code."""

import json
import os

import torch

from ..modeling import unwrap_model
from .hooked_load import customises_loading, load_through_model_code
from .layout import TORCH_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from .safetensors_io import read_header, read_safetensors, write_safetensors

MAX_SHARD_BYTES = 5 * 10**9  # the HF default max_shard_size ("5GB")


def save_weights(model, folder: str, safe_serialization: bool = True, state_dict: dict = None) -> None:
    """``model``'s weights into ``folder``; ``state_dict``, when given, holds them instead of the
    model (a sharded model's gathered weights)."""
    model = unwrap_model(model)
    os.makedirs(folder, exist_ok=True)
    if callable(getattr(model, "save_pretrained", None)):  # transformers models add config.json
        extra = {} if state_dict is None else {"state_dict": state_dict}
        model.save_pretrained(folder, safe_serialization=safe_serialization, **extra)
        return
    state_dict = _deduplicated(model.state_dict() if state_dict is None else state_dict)
    if not safe_serialization:
        torch.save(state_dict, os.path.join(folder, TORCH_WEIGHTS_NAME))
        return
    shards = _plan_shards(state_dict, MAX_SHARD_BYTES)
    if len(shards) == 1:
        write_safetensors(os.path.join(folder, WEIGHTS_NAME), state_dict, metadata={"format": "pt"})
        return
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(folder, filename), {n: state_dict[n] for n in names}, metadata={"format": "pt"})
        weight_map.update({name: filename for name in names})
    index = {"metadata": {"total_size": sum(_nbytes(t) for t in state_dict.values())}, "weight_map": weight_map}
    with open(os.path.join(folder, WEIGHTS_INDEX_NAME), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _deduplicated(state_dict: dict) -> dict:
    """The state dict with tied weights stored once (safetensors refuses shared storage); the
    dropped names are restored by ``load_state_dict`` through the tie itself."""
    seen, result = set(), {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        result[name] = tensor.detach()
    return result


def _plan_shards(state_dict: dict, max_bytes: int) -> list:
    shards, current, size = [], [], 0
    for name, tensor in state_dict.items():
        nbytes = _nbytes(tensor)
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    return shards + [current] if current else shards or [[]]


def _weight_files(folder: str) -> list:
    """The safetensors files of a checkpoint (one, or the shards of an index); [] when it holds
    a torch state dict instead."""
    index_path = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            return [os.path.join(folder, name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    if os.path.exists(os.path.join(folder, WEIGHTS_NAME)):
        return [os.path.join(folder, WEIGHTS_NAME)]
    if os.path.exists(os.path.join(folder, TORCH_WEIGHTS_NAME)):
        return []
    raise FileNotFoundError(f"Checkpoint {folder} has no {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {TORCH_WEIGHTS_NAME}.")


def _saved_shapes(folder: str, files: list) -> dict:
    if not files:
        return {name: tuple(t.shape) for name, t in _torch_state_dict(folder).items()}
    shapes = {}
    for path in files:
        with open(path, "rb") as f:
            header, _ = read_header(f)
        shapes.update({name: tuple(entry["shape"]) for name, entry in header.items()})
    return shapes


def _torch_state_dict(folder: str) -> dict:
    return torch.load(os.path.join(folder, TORCH_WEIGHTS_NAME), map_location="cpu", weights_only=True)


def read_state_dict(folder: str, into: dict = None) -> dict:
    """All tensors of a checkpoint's weights; those matching a tensor of ``into`` are read
    straight into its memory."""
    files = _weight_files(folder)
    if not files:
        return _torch_state_dict(folder)
    state_dict = {}
    for path in files:
        state_dict.update(read_safetensors(path, into))
    return state_dict


def load_weights(model, folder: str) -> None:
    """Load the weights in ``folder`` into ``model``. Names and shapes are checked against the
    file headers before any byte is read, so a mismatch leaves the model untouched and the error
    names the checkpoint and the tensors."""
    model = unwrap_model(model)
    if customises_loading(model):  # its own load code runs, with the same all-or-nothing guarantee
        load_through_model_code(model, read_state_dict(folder), lambda missing, unexpected, error: _misfit(
            folder, model, [], unexpected, missing, error))
        return
    expected = model.state_dict()
    saved = _saved_shapes(folder, _weight_files(folder))
    wrong_shape = [f"{name}: checkpoint {shape} vs model {tuple(expected[name].shape)}"
                   for name, shape in sorted(saved.items()) if name in expected and shape != tuple(expected[name].shape)]
    unexpected = sorted(set(saved) - set(expected))
    missing = [name for name in expected if name not in saved and not _is_tied_alias(expected, name, saved)]
    if wrong_shape or unexpected or missing:
        raise _misfit(folder, model, wrong_shape, unexpected, missing)
    state_dict = read_state_dict(folder, into=expected)
    # tensors read in place are done; the rest (other dtype or device) are copied by torch
    pending = {name: t for name, t in state_dict.items() if t.data_ptr() != expected[name].data_ptr()}
    if pending:
        model.load_state_dict(pending, strict=False)


def _misfit(folder: str, model, wrong_shape: list, unexpected: list, missing: list, error=None) -> RuntimeError:
    details = wrong_shape + [f"unexpected tensor {n}" for n in unexpected] + [f"missing tensor {n}" for n in missing]
    if error is not None:
        details.append(str(error).strip())
    return RuntimeError(f"Checkpoint {folder} does not fit {type(model).__name__}: {'; '.join(details)}.")


def _is_tied_alias(tensors: dict, name: str, saved) -> bool:
    """True when ``name`` shares storage with a tensor the checkpoint holds (a tied weight)."""
    pointer = tensors[name].data_ptr()
    return any(other != name and other in saved and tensors[other].data_ptr() == pointer for other in tensors)
