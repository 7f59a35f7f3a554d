"""Model weights on disk: safetensors (sharded with an index above ``MAX_SHARD_BYTES``) or a
``torch.save`` state dict when ``save_safetensors=False``. Loading never unpickles code."""

import json
import os

import torch
from safetensors.torch import load_file, save_file

from ..modeling import unwrap_model
from .layout import TORCH_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

MAX_SHARD_BYTES = 5 * 10**9  # the HF default max_shard_size ("5GB")


def save_weights(model, folder: str, safe_serialization: bool = True) -> None:
    model = unwrap_model(model)
    os.makedirs(folder, exist_ok=True)
    if callable(getattr(model, "save_pretrained", None)):  # transformers models add config.json
        model.save_pretrained(folder, safe_serialization=safe_serialization)
        return
    state_dict = _deduplicated_state_dict(model)
    if not safe_serialization:
        torch.save(state_dict, os.path.join(folder, TORCH_WEIGHTS_NAME))
        return
    shards = _plan_shards(state_dict, MAX_SHARD_BYTES)
    if len(shards) == 1:
        save_file(state_dict, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
        return
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        filename = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: state_dict[name] for name in names}, os.path.join(folder, filename), metadata={"format": "pt"})
        weight_map.update({name: filename for name in names})
    index = {"metadata": {"total_size": sum(_nbytes(t) for t in state_dict.values())}, "weight_map": weight_map}
    with open(os.path.join(folder, WEIGHTS_INDEX_NAME), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _deduplicated_state_dict(model) -> dict:
    """The state dict with tied weights stored once (safetensors refuses shared storage); the
    dropped names are restored by ``load_state_dict`` through the tie itself."""
    seen, result = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        result[name] = tensor.detach().contiguous()
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


def read_state_dict(folder: str) -> dict:
    index_path = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        state_dict = {}
        for filename in files:
            state_dict.update(load_file(os.path.join(folder, filename)))
        return state_dict
    if os.path.exists(os.path.join(folder, WEIGHTS_NAME)):
        return load_file(os.path.join(folder, WEIGHTS_NAME))
    if os.path.exists(os.path.join(folder, TORCH_WEIGHTS_NAME)):
        return torch.load(os.path.join(folder, TORCH_WEIGHTS_NAME), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"Checkpoint {folder} has no {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or {TORCH_WEIGHTS_NAME}.")


def load_weights(model, folder: str) -> None:
    """Load the weights in ``folder`` into ``model``; any missing, unexpected or mis-shaped tensor
    is an error that names the checkpoint and the tensors."""
    model = unwrap_model(model)
    state_dict = read_state_dict(folder)
    expected = model.state_dict()
    wrong_shape = [f"{name}: checkpoint {tuple(t.shape)} vs model {tuple(expected[name].shape)}"
                   for name, t in state_dict.items() if name in expected and t.shape != expected[name].shape]
    unexpected = sorted(set(state_dict) - set(expected))
    if wrong_shape or unexpected:
        details = "; ".join(wrong_shape + [f"unexpected tensor {name}" for name in unexpected])
        raise RuntimeError(f"Checkpoint {folder} does not fit {type(model).__name__}: {details}.")
    result = model.load_state_dict(state_dict, strict=False)
    missing = [name for name in result.missing_keys if not _is_tied_alias(model, name, state_dict)]
    if missing:
        raise RuntimeError(f"Checkpoint {folder} lacks tensors of {type(model).__name__}: {', '.join(missing)}.")


def _is_tied_alias(model, name: str, loaded: dict) -> bool:
    """True when ``name`` shares storage with a tensor that was loaded (a tied weight)."""
    tensors = model.state_dict()
    target = tensors[name]
    return any(other != name and other in loaded and tensors[other].data_ptr() == target.data_ptr()
               for other in tensors)
