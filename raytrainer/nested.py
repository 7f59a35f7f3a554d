"""Helpers for evaluation outputs: tensors, arrays, or lists/tuples/dicts nesting them.

Batches of predictions may differ in sequence length (dynamic padding), so concatenation pads
every dimension after the first with ``padding_index`` (-100, the value losses and metrics
ignore) before stacking along the batch dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch


def _rebuild(container, items: list):
    """A container of the same type as ``container`` holding ``items`` (namedtuples included)."""
    if isinstance(container, tuple) and hasattr(container, "_fields"):
        return type(container)(*items)
    return type(container)(items)


def _rebuild_mapping(mapping: Mapping, items: dict):
    try:
        return type(mapping)(items)
    except TypeError:  # a Mapping type that cannot be built from a dict
        return dict(items)


def _map_leaves(tree, leaf_fn: Callable):
    if isinstance(tree, (list, tuple)):
        return _rebuild(tree, [_map_leaves(item, leaf_fn) for item in tree])
    if isinstance(tree, Mapping):
        return _rebuild_mapping(tree, {key: _map_leaves(v, leaf_fn) for key, v in tree.items()})
    return leaf_fn(tree)


def nested_detach(tensors):
    """Detach every tensor of ``tensors`` from the autograd graph; other leaves are kept."""
    return _map_leaves(tensors, lambda t: t.detach() if isinstance(t, torch.Tensor) else t)


def _to_numpy(leaf):
    if isinstance(leaf, torch.Tensor):
        leaf = leaf.detach().cpu()
        if leaf.dtype == torch.bfloat16:  # numpy has no bfloat16
            leaf = leaf.to(torch.float32)
        return leaf.numpy()
    if leaf is None or isinstance(leaf, np.ndarray):
        return leaf
    raise TypeError(
        f"nested_numpify expects tensors, arrays or None as leaves, got {type(leaf).__name__}."
    )


def nested_numpify(tensors):
    """Move every tensor of ``tensors`` to the CPU as a numpy array (bfloat16 as float32)."""
    return _map_leaves(tensors, _to_numpy)


def _pad_and_concat(leaves: list, padding_index):
    """Concatenate tensors or arrays on dim 0, padding the other dims to the largest size."""
    is_torch = isinstance(leaves[0], torch.Tensor)
    leaves = [torch.atleast_1d(x) if is_torch else np.atleast_1d(x) for x in leaves]
    ndims = {leaf.ndim for leaf in leaves}
    if len(ndims) > 1:
        shapes = [tuple(leaf.shape) for leaf in leaves]
        raise ValueError(
            f"cannot concatenate outputs with different numbers of dimensions: {shapes}; "
            f"return predictions with a consistent rank from the model."
        )
    trailing = [max(leaf.shape[d] for leaf in leaves) for d in range(1, leaves[0].ndim)]
    if all(tuple(leaf.shape[1:]) == tuple(trailing) for leaf in leaves):
        return torch.cat(leaves, dim=0) if is_torch else np.concatenate(leaves, axis=0)
    shape = (sum(leaf.shape[0] for leaf in leaves), *trailing)
    if is_torch:
        result = leaves[0].new_full(shape, padding_index)
    else:
        result = np.full(shape, padding_index, dtype=leaves[0].dtype)
    row = 0
    for leaf in leaves:
        rows = slice(row, row + leaf.shape[0])
        region = (rows, *(slice(0, size) for size in leaf.shape[1:]))
        result[region] = leaf
        row += leaf.shape[0]
    return result


def _check_same_kind(items: list) -> None:
    kinds = {torch.Tensor if isinstance(x, torch.Tensor) else type(x) for x in items}
    if len(kinds) > 1:
        names = sorted(kind.__name__ for kind in kinds)
        raise TypeError(f"cannot concatenate outputs of different types: {names}.")


def nested_concat_all(items: list, padding_index=-100):
    """Concatenate a list of same-structured trees leaf by leaf (see :func:`nested_concat`).

    One pass over all batches copies each value once, unlike concatenating pairwise.
    """
    _check_same_kind(items)
    first = items[0]
    if isinstance(first, (list, tuple)):
        if len({len(item) for item in items}) > 1:
            raise ValueError("cannot concatenate lists/tuples of different lengths.")
        return _rebuild(first, [nested_concat_all(list(group), padding_index)
                                for group in zip(*items)])
    if isinstance(first, Mapping):
        return _rebuild_mapping(first, {
            key: nested_concat_all([item[key] for item in items], padding_index) for key in first
        })
    if first is None:
        return None
    if isinstance(first, (torch.Tensor, np.ndarray)):
        return _pad_and_concat(items, padding_index)
    raise TypeError(f"unsupported type for concatenation: {type(first).__name__}.")


def nested_concat(tensors, new_tensors, padding_index=-100):
    """Concatenate two trees of tensors (or of numpy arrays) along the first dimension.

    When other dimensions differ (e.g. sequence length), the result is padded with
    ``padding_index``; 0-d values (a scalar loss) become length-1 vectors first.
    """
    return nested_concat_all([tensors, new_tensors], padding_index)


def nested_truncate(tensors, limit: int):
    """Keep the first ``limit`` rows of every tensor/array (drops padding added by sharding)."""
    def truncate(leaf):
        if isinstance(leaf, (torch.Tensor, np.ndarray)) and leaf.ndim > 0:
            return leaf[:limit]
        return leaf

    return _map_leaves(tensors, truncate)


def find_batch_size(inputs) -> int | None:
    """The first dimension of the first non-scalar tensor/array found in ``inputs``, or None."""
    if isinstance(inputs, Mapping):
        inputs = list(inputs.values())
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            found = find_batch_size(item)
            if found is not None:
                return found
        return None
    if isinstance(inputs, (torch.Tensor, np.ndarray)) and inputs.ndim > 0:
        return int(inputs.shape[0])
    return None


def cast_floating(data: Any, dtype: torch.dtype):
    """Every floating-point tensor in ``data`` as ``dtype``; integer and boolean tensors (token ids,
    masks) and other leaves stay as they are."""
    return _map_leaves(data, lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t)


def move_to_device(data: Any, device, non_blocking: bool = False):
    """Move every tensor in ``data`` to ``device``; objects with a ``.to`` method move too."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if isinstance(data, Mapping):
        return _rebuild_mapping(
            data, {key: move_to_device(v, device, non_blocking) for key, v in data.items()}
        )
    if isinstance(data, (list, tuple)):
        return _rebuild(data, [move_to_device(item, device, non_blocking) for item in data])
    if callable(getattr(data, "to", None)):
        return data.to(device)
    return data


class EvalLoopContainer:
    """Accumulates per-batch evaluation outputs, on device first, then as numpy arrays.

    ``add`` keeps device tensors as they come; ``to_cpu_and_numpy`` (called every
    ``eval_accumulation_steps`` and at the end) concatenates the pending batches once, pads
    them with ``padding_index`` and moves them to numpy. With ``do_nested_concat=False`` the
    batches stay separate and ``get_arrays`` returns one entry per batch.
    """

    def __init__(self, do_nested_concat: bool = True, padding_index=-100):
        self.do_nested_concat = bool(do_nested_concat)
        self.padding_index = padding_index
        self._pending: list = []
        self._arrays: list = []

    def add(self, tensors) -> None:
        """Queue one batch of outputs; ``None`` (nothing computed) is ignored."""
        if tensors is not None:
            self._pending.append(tensors)

    def to_cpu_and_numpy(self) -> None:
        """Move the queued batches to host memory as numpy arrays, freeing device memory."""
        if not self._pending:
            return
        if self.do_nested_concat:
            merged = nested_concat_all(self._pending, self.padding_index)
            self._arrays.append(nested_numpify(merged))
        else:
            self._arrays.extend(nested_numpify(batch) for batch in self._pending)
        self._pending = []

    def clear(self) -> None:
        """Forget everything added so far (``batch_eval_metrics`` keeps nothing)."""
        self._pending, self._arrays = [], []

    def get_arrays(self):
        """Everything added so far as numpy (one tree, or a list per batch); None if empty."""
        self.to_cpu_and_numpy()
        if not self._arrays:
            return None
        if not self.do_nested_concat:
            return list(self._arrays)
        if len(self._arrays) > 1:  # merge the flushed chunks once, and keep the merged result
            self._arrays = [nested_concat_all(self._arrays, self.padding_index)]
        return self._arrays[0]
