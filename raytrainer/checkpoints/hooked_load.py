"""Loading weights into a model that customises its own loading.

A module may override ``_load_from_state_dict`` or register load hooks, e.g. to resize a buffer
to the saved length, rename old keys, or re-quantise. Such a model must go through
``load_state_dict`` so its code runs, and the checkpoint's tensor shapes cannot be judged against
the model's current ones beforehand. The guarantee of the fast path (a checkpoint that does not
fit leaves the model untouched) is kept another way: every parameter and buffer is snapshotted
(on the CPU) first, and put back, same objects, if loading fails or leaves tensors missing or
unexpected.
"""

import torch
import torch.nn as nn


def customises_loading(model: nn.Module) -> bool:
    if type(model).load_state_dict is not nn.Module.load_state_dict:
        return True
    return any(type(module)._load_from_state_dict is not nn.Module._load_from_state_dict
               or module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks
               for module in model.modules())


def load_through_model_code(model: nn.Module, state_dict: dict, describe_misfit) -> None:
    """``model.load_state_dict(state_dict)`` with all-or-nothing semantics. ``describe_misfit
    (missing, unexpected, error)`` returns the RuntimeError to raise; ``missing`` has already
    had tied aliases of loaded tensors removed."""
    tied = _tied_groups(model)
    snapshot = _snapshot(model)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except Exception as error:  # noqa: BLE001 - any failure inside the model's code rolls back
        _restore(snapshot)
        raise describe_misfit([], [], error) from None
    loaded = set(state_dict)
    missing = [name for name in result.missing_keys if not (tied.get(name, set()) & loaded)]
    if missing or result.unexpected_keys:
        _restore(snapshot)
        raise describe_misfit(missing, list(result.unexpected_keys), None)


def _tied_groups(model: nn.Module) -> dict:
    """name -> the other state-dict names sharing its storage (tied weights are saved once)."""
    by_pointer = {}
    for name, tensor in model.state_dict().items():
        if tensor.numel():
            by_pointer.setdefault(tensor.data_ptr(), set()).add(name)
    return {name: names - {name} for names in by_pointer.values() for name in names}


def _snapshot(model: nn.Module) -> list:
    """Per module: its parameter and buffer dicts (the objects) and a CPU copy of each tensor."""
    taken = []
    for module in model.modules():
        tensors = {**module._parameters, **module._buffers}
        copies = {name: t.detach().to("cpu", copy=True) for name, t in tensors.items() if t is not None}
        taken.append((module, dict(module._parameters), dict(module._buffers), copies))
    return taken


def _restore(snapshot: list) -> None:
    with torch.no_grad():
        for module, parameters, buffers, copies in snapshot:
            module._parameters.clear()
            module._parameters.update(parameters)
            module._buffers.clear()
            module._buffers.update(buffers)
            for name, tensor in {**parameters, **buffers}.items():
                if tensor is not None:
                    # .data, not copy_: a hook may have resized the tensor; the object stays the same
                    tensor.data = copies[name].to(tensor.device)
