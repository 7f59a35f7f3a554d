"""``TrainingArguments`` fields that transformers v4 had and v5 renamed or removed.

A v4 script passes ``evaluation_strategy="steps"`` or ``no_cuda=True``; here the value moves to
the v5 field with a ``FutureWarning`` naming the new spelling. A value equal to the v4 default
counts as "not given" (a v4 ``training_args.json`` lists every field), so replaying an old config
warns only about what it really sets. Giving both spellings with different values is an error.
After the move the v4 field is ``None`` again, so copies (``dataclasses.replace``, the ``set_*``
helpers) neither warn twice nor see a conflict.
"""

import dataclasses
import warnings
from enum import Enum
from typing import Any, Callable, NamedTuple


class _Rename(NamedTuple):
    new_spelling: str  # what the warning tells the user to write
    v4_default: Any  # the v4 default value: passing it changes nothing
    move: Callable  # move(args, value, old_name) puts the value where v5 reads it


def _into_field(field: str) -> Callable:
    def move(args, value, old_name):
        _set_unless_conflicting(args, field, value, old_name)

    return move


def _into_config(field: str, key: str, wrap=lambda v: v) -> Callable:
    def move(args, value, old_name):
        from raytrainer._args_validation import _load_json_object

        config = _load_json_object(getattr(args, field), field, allow_path=True) or {}
        if key in config and config[key] != wrap(value):
            raise ValueError(
                f"{old_name}={value!r} (the transformers v4 spelling) conflicts with "
                f"{field}[{key!r}]={config[key]!r}; keep only {field}[{key!r}]."
            )
        config[key] = wrap(value)
        setattr(args, field, config)

    return move


def _adafactor(args, value, old_name):
    if value:
        _set_unless_conflicting(args, "optim", "adafactor", old_name)


def _hub_model_id(args, value, old_name):
    organization = args.push_to_hub_organization
    name = args.push_to_hub_model_id or args.hub_model_id
    if name is None:
        raise ValueError(
            "push_to_hub_organization needs a repository name: set hub_model_id='<organization>/<name>' "
            "(push_to_hub_organization is the transformers v4 spelling)."
        )
    if organization is not None and "/" not in name:
        name = f"{organization}/{name}"
    _set_unless_conflicting(args, "hub_model_id", name, old_name)


def _no_effect(args, value, old_name):
    """Settings v5 dropped without a successor: the warning says so, nothing moves."""


DEPRECATED_FIELDS = {
    "evaluation_strategy": _Rename("eval_strategy", "no", _into_field("eval_strategy")),
    "per_gpu_train_batch_size": _Rename(
        "per_device_train_batch_size", None, _into_field("per_device_train_batch_size")
    ),
    "per_gpu_eval_batch_size": _Rename(
        "per_device_eval_batch_size", None, _into_field("per_device_eval_batch_size")
    ),
    "no_cuda": _Rename("use_cpu", False, _into_field("use_cpu")),
    "adafactor": _Rename("optim='adafactor'", False, _adafactor),
    "fsdp_min_num_params": _Rename(
        "fsdp_config={'min_num_params': ...}", 0, _into_config("fsdp_config", "min_num_params")
    ),
    "fsdp_transformer_layer_cls_to_wrap": _Rename(
        "fsdp_config={'transformer_layer_cls_to_wrap': [...]}", None,
        _into_config("fsdp_config", "transformer_layer_cls_to_wrap",
                     wrap=lambda v: [v] if isinstance(v, str) else list(v)),
    ),
    "dispatch_batches": _Rename(
        "accelerator_config={'dispatch_batches': ...}", None,
        _into_config("accelerator_config", "dispatch_batches"),
    ),
    "push_to_hub_model_id": _Rename("hub_model_id", None, _hub_model_id),
    "push_to_hub_organization": _Rename("hub_model_id='<organization>/<name>'", None, _hub_model_id),
    "push_to_hub_token": _Rename("hub_token", None, _into_field("hub_token")),
    "use_legacy_prediction_loop": _Rename(
        "nothing (evaluate() and predict() always run evaluation_loop)", False, _no_effect
    ),
    "mp_parameters": _Rename("nothing (SageMaker model parallelism does not run on Ray)", "", _no_effect),
}


def move_deprecated_values(args, stacklevel: int) -> None:
    """Move every v4 spelling that ``args`` was given to its v5 place, warning once per name."""
    given = [name for name, rename in DEPRECATED_FIELDS.items()
             if getattr(args, name) is not None and _plain(getattr(args, name)) != rename.v4_default]
    moved_hub_id = False
    for name in given:
        rename = DEPRECATED_FIELDS[name]
        shown = "<hidden>" if name.endswith("_token") else repr(_plain(getattr(args, name)))
        warnings.warn(
            f"TrainingArguments: {name}={shown} is the transformers v4 spelling; "
            f"write {rename.new_spelling} instead. The value is applied for now.",
            FutureWarning, stacklevel=stacklevel,
        )
        if rename.move is _hub_model_id:
            if moved_hub_id:
                continue  # model id and organization make one hub_model_id
            moved_hub_id = True
        rename.move(args, getattr(args, name), name)
    for name in DEPRECATED_FIELDS:
        setattr(args, name, None)


def _set_unless_conflicting(args, field: str, value, old_name: str) -> None:
    current, default = _plain(getattr(args, field)), _field_default(args, field)
    if current != default and current != _plain(value):
        shown = "<hidden>" if field.endswith("_token") else f"{current!r}"
        raise ValueError(
            f"TrainingArguments: {old_name} (the transformers v4 spelling of {field}) and {field}={shown} "
            f"disagree; keep only {field}."
        )
    setattr(args, field, value)


def _field_default(args, name: str):
    for item in dataclasses.fields(args):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return _plain(item.default)
            return item.default_factory()
    raise AttributeError(name)


def _plain(value):
    return value.value if isinstance(value, Enum) else value
