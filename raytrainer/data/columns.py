"""``remove_unused_columns``: keep only the dataset columns that ``model.forward`` accepts.

The accepted names are read once from the forward signature (:func:`signature_columns`); the
pruning then happens either on the dataset itself (HF ``datasets.Dataset``) or inside the
collator, per example (:class:`RemoveColumnsCollator`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Callable, Sequence


from ..modeling import unwrap_model

logger = logging.getLogger("raytrainer")

_LABEL_COLUMNS = ("label", "label_ids")


def signature_columns(model, label_names: Sequence[str] | None = None) -> list[str] | None:
    """Names ``model.forward`` accepts plus the label columns; None if it names no input at all.

    A forward with named inputs and ``**kwargs`` (every transformers model) still has its
    unnamed columns removed, as HF does; only a forward that is nothing but ``**kwargs`` keeps all.

    ``label``/``label_ids`` are always kept because the collators rename them to ``labels``.
    None means every column may reach the model, so nothing should be removed.
    """
    forward = getattr(unwrap_model(model), "forward", None)
    if not callable(forward):
        raise TypeError(
            f"model must have a callable forward method to select columns, got "
            f"{type(model).__name__}; pass an nn.Module or set remove_unused_columns=False."
        )
    parameters = inspect.signature(forward).parameters.values()
    columns = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not columns:
        return None  # forward(**inputs) names nothing, so it takes everything
    for name in (*_LABEL_COLUMNS, *(label_names or ())):
        if name not in columns:
            columns.append(name)
    return columns


def _no_column_left_error(dataset_columns, accepted, description) -> ValueError:
    where = f"the {description} dataset" if description else "the dataset"
    return ValueError(
        f"No column of {where} matches the model's forward parameters: the dataset has "
        f"{list(dataset_columns)}, forward accepts {list(accepted)}. Rename the dataset "
        f"columns to the forward parameter names, or set remove_unused_columns=False if a "
        f"custom collator builds the inputs."
    )


def _log_ignored(ignored, description, model_name) -> None:
    where = f" in the {description} set" if description else ""
    owner = f"{model_name}.forward" if model_name else "the model's forward"
    logger.info(
        "The following columns%s have no matching argument in %s and have been ignored: %s. "
        "If they are expected, rename them or set remove_unused_columns=False.",
        where, owner, ", ".join(ignored),
    )


class RemoveColumnsCollator:
    """Wrap ``data_collator`` so each dict example loses the columns forward does not accept.

    The kept keys are worked out once per distinct set of keys (normally once per dataset),
    and the ignored columns are logged once.
    """

    def __init__(self, data_collator: Callable, signature_columns: Sequence[str] | None,
                 description: str | None = None, model_name: str | None = None):
        if not callable(data_collator):
            raise TypeError(
                f"data_collator must be callable, got {type(data_collator).__name__}."
            )
        self.data_collator = data_collator
        self.signature_columns = None if signature_columns is None else list(signature_columns)
        self.description, self.model_name = description, model_name
        self._message_logged = False
        self._keys_cache: tuple[tuple, tuple] | None = None

    def _kept_keys(self, keys: tuple) -> tuple:
        if self._keys_cache is not None and self._keys_cache[0] == keys:
            return self._keys_cache[1]
        accepted = set(self.signature_columns)
        kept = tuple(key for key in keys if key in accepted)
        if not kept:
            raise _no_column_left_error(keys, self.signature_columns, self.description)
        ignored = [key for key in keys if key not in accepted]
        if ignored and not self._message_logged:
            _log_ignored(ignored, self.description, self.model_name)
            self._message_logged = True
        self._keys_cache = (keys, kept)
        return kept

    def _remove_columns(self, feature):
        # the exact-type test first: isinstance(x, Mapping) is an ABC check, slow per example
        if type(feature) is not dict and not isinstance(feature, Mapping):
            return feature  # tuples and tensors carry no column names to prune
        keys = tuple(feature)
        kept = self._kept_keys(keys)
        if len(kept) == len(keys):
            return feature  # nothing to drop: no copy
        return {key: feature[key] for key in kept}

    def __call__(self, features):
        if self.signature_columns is not None:
            features = [self._remove_columns(feature) for feature in features]
        return self.data_collator(features)


def remove_unused_hf_columns(dataset, signature_columns: Sequence[str] | None,
                             description: str | None = None, model_name: str | None = None):
    """Return a ``datasets.Dataset`` without the columns forward does not accept.

    Datasets without known column names (streams, torch datasets) are returned unchanged; their
    examples are pruned by :class:`RemoveColumnsCollator` instead.
    """
    column_names = getattr(dataset, "column_names", None)
    if (signature_columns is None or not isinstance(column_names, (list, tuple))
            or not column_names or not hasattr(dataset, "remove_columns")):
        return dataset
    accepted = set(signature_columns)
    if not any(column in accepted for column in column_names):
        raise _no_column_left_error(column_names, signature_columns, description)
    ignored = [column for column in column_names if column not in accepted]
    if not ignored:
        return dataset
    _log_ignored(ignored, description, model_name)
    return dataset.remove_columns(ignored)
