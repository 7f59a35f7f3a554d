"""Hyperparameters are ``TrainingArguments`` fields: each sampled value is cast to its field's type
and the arguments are rebuilt (and so re-validated) with it. An unknown name is an error."""

import dataclasses
import difflib
import enum
import typing
import warnings


def training_argument_fields(args) -> dict:
    """``{name: dataclasses.Field}`` of the (Seq2Seq)TrainingArguments class of ``args``."""
    return {field.name: field for field in dataclasses.fields(args) if field.init}


def check_parameter_names(names, args, source: str = "hp_space") -> None:
    """Fail on the first name that is not a field of ``args``, suggesting the closest one."""
    fields = training_argument_fields(args)
    for name in names:
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"{source}: {name!r} is not a field of {type(args).__name__}; hyperparameters set "
                f"TrainingArguments fields.{hint} Sample model settings inside model_init(trial) instead."
            )


def apply_hyperparameters(args, params: dict):
    """A copy of ``args`` with ``params`` set, each value cast to its field's type (a float seed
    becomes an int, an int epoch count a float), validated like any TrainingArguments."""
    check_parameter_names(params, args)
    fields = training_argument_fields(args)
    changes = {name: _cast(name, value, fields[name].type, getattr(args, name)) for name, value in params.items()}
    with warnings.catch_warnings():
        # "this setting has no effect" was said once when the arguments were built; not per trial
        warnings.simplefilter("ignore", UserWarning)
        try:
            return dataclasses.replace(args, **changes)
        except (ValueError, TypeError) as error:
            error.add_note(f"(while applying the trial's hyperparameters {changes})")
            raise


def _cast(name: str, value, declared, current):
    target = _plain_type(declared, current)
    if value is None or target is None:
        return value
    if target is str:
        return str(value)
    if isinstance(value, target) and not isinstance(value, bool):
        return value
    try:
        if target is bool:
            return _as_bool(value)
        if target is int and isinstance(value, str):
            return int(float(value))
        return target(value)  # int(3.7) == 3, as HF casts a float-sampled seed
    except (TypeError, ValueError):
        raise ValueError(f"hp_space: {name!r} got {value!r}, which is not a valid {target.__name__}.") from None


def _plain_type(declared, current):
    """The scalar type to cast to: the field's declared int/float/bool/str (through Optional), or
    None to pass the value as is (enums and str unions are parsed by TrainingArguments itself)."""
    candidates = typing.get_args(declared) or (declared,)
    scalars = [t for t in candidates if t in (bool, int, float, str)]
    if any(isinstance(t, type) and issubclass(t, enum.Enum) for t in candidates):
        return None
    if len(scalars) == 1:
        return scalars[0]
    if current is not None and type(current) in (bool, int, float):
        return type(current)
    return None


def _as_bool(value) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(value)
    if value in (0, 1):
        return bool(value)
    raise ValueError(value)
