"""Collators: turn a list of examples into one batch.

``default_data_collator`` stacks examples that already have equal shapes;
``DataCollatorWithPadding`` pads variable-length token sequences through a tokenizer's ``pad``
method, or through :class:`SequencePadder` when there is no tokenizer. Both name the target
``labels``, the keyword HF-style models take, whatever the dataset called it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

_LABEL_KEYS = ("label", "label_ids")
_RETURN_TENSORS = ("pt", "np")


def _check_return_tensors(return_tensors) -> None:
    if return_tensors not in _RETURN_TENSORS:
        raise ValueError(
            f"return_tensors={return_tensors!r} is not supported; use 'pt' (torch tensors) or "
            f"'np' (numpy arrays)."
        )


def _as_mapping(feature) -> Mapping:
    if isinstance(feature, Mapping):
        return feature
    if hasattr(feature, "__dict__"):  # dataclasses and plain objects hold their fields there
        return vars(feature)
    raise TypeError(
        f"default_data_collator cannot read a feature of type {type(feature).__name__}; give "
        f"it dicts, dataclasses/objects with attributes, or tuples of tensors."
    )


def _is_integer_value(value) -> bool:
    if isinstance(value, torch.Tensor):
        return not (value.is_floating_point() or value.is_complex())
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_
    return isinstance(value, (numbers.Integral, np.bool_))


def _first_scalar(value):
    """A representative element of ``value`` (itself, or its first item) for dtype decisions."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def _stack(values: list, return_tensors: str, dtype=None):
    """Stack equal-shaped values of one kind (tensors, arrays or python numbers/lists)."""
    first = values[0]
    if return_tensors == "np":
        if isinstance(first, torch.Tensor):
            values = [v.detach().cpu().numpy() for v in values]
        array = np.stack(values) if isinstance(values[0], np.ndarray) else np.array(values)
        return array if dtype is None else array.astype(dtype)
    if isinstance(first, torch.Tensor):
        stacked = torch.stack(values)
    elif isinstance(first, np.ndarray):
        stacked = torch.from_numpy(np.stack(values))
    else:
        stacked = torch.tensor(values)
    return stacked if dtype is None else stacked.to(dtype)


def _label_dtype(value, return_tensors: str):
    integer = _is_integer_value(_first_scalar(value))
    if return_tensors == "np":
        return np.int64 if integer else np.float32
    return torch.long if integer else torch.float


def _collate_labels(features: list[Mapping], return_tensors: str):
    """Return the stacked labels from ``label`` (or else ``label_ids``), or None if absent."""
    for key in _LABEL_KEYS:
        first = features[0].get(key)
        if first is not None:
            values = [feature[key] for feature in features]
            return _stack(values, return_tensors, _label_dtype(first, return_tensors))
    return None


def default_data_collator(features: Sequence[Any], return_tensors: str = "pt"):
    """Stack a list of examples into a batch dict of tensors (or of numpy arrays).

    ``label``/``label_ids`` become ``labels`` (int64 for integer labels, float32 otherwise);
    other fields are stacked as they are; ``None`` and string fields are left out. Examples that
    are tuples/lists (rows of a ``TensorDataset``) go through torch's ``default_collate``.
    """
    _check_return_tensors(return_tensors)
    if not features:
        raise ValueError("features is empty; a batch needs at least one example.")
    if isinstance(features[0], (tuple, list)):
        batch = default_collate(list(features))
        if return_tensors == "np":
            return type(batch)(t.numpy() if isinstance(t, torch.Tensor) else t for t in batch)
        return batch
    features = [_as_mapping(feature) for feature in features]
    batch = {}
    labels = _collate_labels(features, return_tensors)
    if labels is not None:
        batch["labels"] = labels
    for key, value in features[0].items():
        if key in _LABEL_KEYS or value is None or isinstance(value, str):
            continue
        batch[key] = _stack_field(key, [feature[key] for feature in features], return_tensors)
    return batch


def _stack_field(key: str, values: list, return_tensors: str):
    try:
        return _stack(values, return_tensors)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"default_data_collator cannot stack field {key!r}: its values differ in shape or "
            f"type across the examples ({error}). Pad variable-length fields with "
            f"DataCollatorWithPadding, or drop the field from the dataset."
        ) from error


def pad_sequences(
    seqs: Sequence, padding_value, pad_to_multiple_of: int | None = None,
    padding_side: str = "right", max_length: int | None = None,
) -> torch.Tensor:
    """Pad 1-d sequences (lists or tensors) into one ``[len(seqs), length]`` tensor.

    ``length`` is the longest sequence (or ``max_length`` when given, which must not be shorter),
    rounded up to a multiple of ``pad_to_multiple_of`` (tensor cores like multiples of 8).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side={padding_side!r} is invalid; use 'right' or 'left'.")
    if pad_to_multiple_of is not None and (
        isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int)
        or pad_to_multiple_of < 1
    ):
        raise ValueError(
            f"pad_to_multiple_of={pad_to_multiple_of!r} must be a positive int or None."
        )
    tensors = [torch.as_tensor(seq) for seq in seqs]
    if not tensors or any(t.dim() != 1 for t in tensors):
        raise ValueError("seqs must be a non-empty list of 1-d sequences.")
    longest = max(t.numel() for t in tensors)
    length = longest if max_length is None else max_length
    if length < longest:
        raise ValueError(
            f"max_length={max_length} is shorter than the longest sequence ({longest}); "
            f"truncate the inputs or raise max_length."
        )
    if pad_to_multiple_of:
        length = math.ceil(length / pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(tensors), length), padding_value, dtype=tensors[0].dtype)
    for row, tensor in enumerate(tensors):
        if padding_side == "right":
            out[row, : tensor.numel()] = tensor
        else:
            out[row, length - tensor.numel() :] = tensor
    return out


_PADDING_STRATEGIES = {True: "longest", "longest": "longest", "max_length": "max_length",
                       False: "do_not_pad", "do_not_pad": "do_not_pad"}


@dataclasses.dataclass
class SequencePadder:
    """A tokenizer-free stand-in for ``tokenizer.pad``: pads every list-valued field.

    ``attention_mask`` and ``token_type_ids`` are padded with 0, ``special_tokens_mask`` with 1,
    label fields with ``label_pad_token_id`` (ignored by the loss) and everything else with
    ``pad_token_id``. A missing ``attention_mask`` is created when ``input_ids`` is present.
    """

    pad_token_id: int = 0
    label_pad_token_id: int = -100
    padding_side: str = "right"

    def _padding_value(self, key: str):
        fixed = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
        if key in fixed:
            return fixed[key]
        return self.label_pad_token_id if key in ("labels", *_LABEL_KEYS) else self.pad_token_id

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None,
            return_tensors="pt"):
        """Pad ``features`` (a list of dicts) into a batch dict, like ``tokenizer.pad``."""
        _check_return_tensors(return_tensors)
        strategy = _PADDING_STRATEGIES.get(padding) if isinstance(padding, (bool, str)) else None
        if strategy is None:
            raise ValueError(
                f"padding={padding!r} is invalid; use True/'longest', 'max_length' or "
                f"False/'do_not_pad'."
            )
        if strategy == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length; pass max_length=<int>.")
        features = [dict(feature) for feature in features]
        if "input_ids" in features[0] and "attention_mask" not in features[0]:
            for feature in features:
                feature["attention_mask"] = [1] * len(feature["input_ids"])
        batch = {}
        for key, value in features[0].items():
            if value is None or isinstance(value, str):
                continue
            values = [feature[key] for feature in features]
            if strategy != "do_not_pad" and _is_sequence(value):
                target = max_length if strategy == "max_length" else None
                batch[key] = pad_sequences(values, self._padding_value(key), pad_to_multiple_of,
                                           self.padding_side, target)
            else:
                batch[key] = _stack(values, "pt")
        if return_tensors == "np":
            batch = {key: tensor.numpy() for key, tensor in batch.items()}
        return batch


def _is_sequence(value) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 1
    return isinstance(value, (list, tuple))


@dataclasses.dataclass
class DataCollatorWithPadding:
    """Pad examples with ``tokenizer.pad`` and name the target ``labels``.

    ``tokenizer`` is anything with a ``pad(features, padding=..., max_length=...,
    pad_to_multiple_of=..., return_tensors=...)`` method: a Hugging Face tokenizer, or a
    :class:`SequencePadder` when the data is already tokenized.
    """

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self):
        if not callable(getattr(self.tokenizer, "pad", None)):
            raise TypeError(
                f"tokenizer must have a pad(...) method, got {type(self.tokenizer).__name__}; "
                f"pass a tokenizer or raytrainer's SequencePadder(pad_token_id=...)."
            )
        _check_return_tensors(self.return_tensors)

    def __call__(self, features):
        batch = self.tokenizer.pad(
            features, padding=self.padding, max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=self.return_tensors,
        )
        for key in _LABEL_KEYS:
            if key in batch:
                batch["labels"] = batch.pop(key)
        return batch


def default_collator_for(processing_class):
    """The Trainer's collator when none is given: padding when the processing class can pad (a
    tokenizer), else ``default_data_collator``."""
    if processing_class is not None and callable(getattr(processing_class, "pad", None)):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator
