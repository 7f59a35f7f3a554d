"""``HfArgumentParser``: command lines, dicts, JSON and YAML files into dataclass instances.

It follows the Hugging Face convention so that existing training scripts keep working: one
``--option`` per dataclass field (``--learning_rate`` and ``--learning-rate``), booleans as
``--fp16`` or ``--fp16 false`` plus ``--no_<name>`` for those that default to True, enums and
``Literal`` restricted to their values, ``list[...]`` fields taking several values, dict fields
taking JSON. Each field's ``metadata["help"]`` becomes its ``--help`` text.
"""

import argparse
import dataclasses
import enum
import json
import shlex
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path

_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
_UNION_ORIGINS = (typing.Union, types.UnionType)


def _parse_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(
        f"expected a boolean (true/false, yes/no, 1/0), got {text!r}"
    )


class _ChoiceConverter:
    """Maps the command-line spelling of an enum member or ``Literal`` value back to the value."""

    def __init__(self, values: Iterable):
        self.by_text = {_choice_text(v): v for v in values}
        self.__name__ = "choice"  # argparse names the converter in some messages

    def __call__(self, text):
        if not isinstance(text, str):
            return text  # a default value, already the right object
        if text in self.by_text:
            return self.by_text[text]
        choices = ", ".join(self.by_text)
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {choices})")

    @property
    def metavar(self) -> str:
        return "{" + ",".join(self.by_text) + "}"


def _choice_text(value) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def _json_object(text):
    if isinstance(text, dict):
        return text
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({error})")
    if not isinstance(loaded, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return loaded


def _split_optional(annotation) -> tuple:
    """``Optional[X]`` -> ``([X], True)``; ``Union[A, B]`` -> ``([A, B], False)``."""
    if typing.get_origin(annotation) in _UNION_ORIGINS:
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        return members, len(members) != len(typing.get_args(annotation))
    return [annotation], False


def _is_list_type(annotation) -> bool:
    return annotation is list or typing.get_origin(annotation) is list


def _is_enum_type(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _pick_cli_type(members: list):
    """Choose the one type a union is typed as on the command line.

    An enum wins (its values become the choices; its str partner only exists for Python callers).
    A list comes next, as free strings when the union also takes ``str``, so that
    ``--fsdp full_shard auto_wrap`` and ``--fsdp "full_shard auto_wrap"`` both reach the
    dataclass, which splits them. ``str`` comes before ``dict``: such fields parse JSON themselves.
    """
    if len(members) == 1:
        return members[0]
    for member in members:
        if _is_enum_type(member):
            return member
    lists = [m for m in members if _is_list_type(m)]
    if lists:
        return list[str] if str in members else lists[0]
    for preferred in (str, dict, bool):
        if preferred in members:
            return preferred
    return members[0]


def _scalar_converter(annotation):
    """The argparse ``type=`` callable for one (non-list) value of ``annotation``."""
    if annotation is bool:
        return _parse_bool
    if _is_enum_type(annotation):
        return _ChoiceConverter(list(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return _ChoiceConverter(typing.get_args(annotation))
    if annotation is dict or typing.get_origin(annotation) is dict:
        return _json_object
    if annotation in (int, float, str) or annotation is Path:
        return annotation
    return str  # Any, custom classes: hand the text to the dataclass, which validates it


def _field_default(item: dataclasses.Field):
    if item.default is not dataclasses.MISSING:
        return item.default, False
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory(), False
    return None, True


def _option_strings(name: str, aliases=()) -> list:
    options = [f"--{name}"]
    if "_" in name:
        options.append(f"--{name.replace('_', '-')}")
    options.extend(aliases)
    return options


class HfArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose options are the fields of one or more dataclasses.

    ``HfArgumentParser(TrainingArguments)`` or ``HfArgumentParser([ModelArgs, TrainingArguments])``;
    every ``parse_*`` method returns a tuple with one instance per dataclass, in that order.
    Extra ``argparse`` keyword arguments go to ``ArgumentParser``.
    """

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)
        self.dataclass_types = _as_dataclass_list(dataclass_types)
        self._converters = {}  # field name -> converter, reused by parse_dict for str values
        owners = {}
        for dtype in self.dataclass_types:
            for item in _init_fields(dtype):
                if item.name in owners:
                    raise ValueError(
                        f"field {item.name!r} is defined by both {owners[item.name].__name__} and "
                        f"{dtype.__name__}; rename one so each option maps to one dataclass."
                    )
                owners[item.name] = dtype
            self._add_dataclass_arguments(dtype)

    # ------------------------------------------------------------------ building the options

    def _add_dataclass_arguments(self, dtype) -> None:
        group_name = getattr(dtype, "_argument_group_name", None)
        target = self.add_argument_group(group_name) if group_name else self
        try:
            hints = typing.get_type_hints(dtype)
        except NameError as error:
            raise TypeError(f"cannot resolve the type annotations of {dtype.__name__}: {error}")
        for item in _init_fields(dtype):
            self._add_field_argument(target, item, hints[item.name])

    def _add_field_argument(self, target, item: dataclasses.Field, annotation) -> None:
        members, optional = _split_optional(annotation)
        cli_type = _pick_cli_type(members)
        default, required = _field_default(item)
        options = _option_strings(item.name, item.metadata.get("aliases", ()))
        kwargs = {
            "dest": item.name,
            "help": str(item.metadata.get("help", "")).replace("%", "%%"),
            "default": default,
            "required": required,
        }
        if cli_type is bool:
            self._add_bool_argument(target, item.name, options, kwargs)
            return
        if _is_list_type(cli_type):
            element_args = typing.get_args(cli_type)
            converter = _scalar_converter(element_args[0] if element_args else str)
            kwargs["nargs"] = "+"
        else:
            converter = _scalar_converter(cli_type)
            self._converters[item.name] = converter  # lists are left to the dataclass
        kwargs["type"] = converter
        if cli_type is str and bool in members:
            # str-or-bool fields (include_num_input_tokens_seen): a bare "--flag" means True
            kwargs.update(nargs="?", const=True)
        if isinstance(converter, _ChoiceConverter):
            kwargs["metavar"] = converter.metavar
        target.add_argument(*options, **kwargs)

    def _add_bool_argument(self, target, name: str, options: list, kwargs: dict) -> None:
        # "--flag" alone means True; "--flag false" is accepted too, as scripts write both.
        target.add_argument(
            *options, type=_parse_bool, nargs="?", const=True, metavar="{true,false}", **kwargs
        )
        self._converters[name] = _parse_bool
        if kwargs["default"] is True:
            target.add_argument(
                *_option_strings(f"no_{name}"), dest=name, action="store_false", default=True,
                help=f"Set {name} to False.",
            )

    # ------------------------------------------------------------------ parsing

    def parse_args_into_dataclasses(
        self,
        args=None,
        return_remaining_strings: bool = False,
        look_for_args_file: bool = True,
        args_filename=None,
        args_file_flag=None,
    ) -> tuple:
        """Parse a command line (``sys.argv[1:]`` by default) into one instance per dataclass.

        Options may also come from files of whitespace-separated arguments, read before the
        command line so the command line wins: ``args_filename``, else ``<script>.args`` next to
        the script when ``look_for_args_file``, plus each file named with ``args_file_flag``
        (e.g. ``"--args_file"``). Unknown options raise ``ValueError`` unless
        ``return_remaining_strings``, which appends them as a list to the result.
        """
        argv = list(sys.argv[1:] if args is None else args)
        files = []
        if args_filename is not None:
            files.append(_existing_file(args_filename, "args_filename"))
        elif look_for_args_file and sys.argv and sys.argv[0]:
            implicit = Path(sys.argv[0]).with_suffix(".args")
            files.extend([implicit] if implicit.is_file() else [])
        if args_file_flag:
            flagged, argv = self._pop_args_file_flag(argv, args_file_flag)
            files.extend(_existing_file(path, args_file_flag) for path in flagged)
        file_args = [
            word for path in files for word in shlex.split(path.read_text(), comments=True)
        ]
        namespace, remaining = self.parse_known_args(file_args + argv)
        outputs = self._instantiate(vars(namespace))
        if return_remaining_strings:
            return (*outputs, remaining)
        if remaining:
            raise ValueError(
                f"unrecognised arguments {remaining}: no field of "
                f"{[d.__name__ for d in self.dataclass_types]} has these names; check the spelling."
            )
        return tuple(outputs)

    @staticmethod
    def _pop_args_file_flag(argv: list, flag: str) -> tuple:
        # No abbreviations: "--args" must not be mistaken for a prefix of the flag.
        flag_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        flag_parser.add_argument(flag, dest="files", action="append", default=[])
        found, rest = flag_parser.parse_known_args(argv)
        return found.files, rest

    def _instantiate(self, values: dict) -> list:
        outputs = []
        for dtype in self.dataclass_types:
            names = {item.name for item in _init_fields(dtype)}
            kwargs = {name: values.pop(name) for name in list(values) if name in names}
            outputs.append(dtype(**kwargs))
        if values:
            # Options that user code added with add_argument() come back as a Namespace.
            outputs.append(argparse.Namespace(**values))
        return outputs

    def parse_dict(self, args: Mapping, allow_extra_keys: bool = False) -> tuple:
        """Build one instance per dataclass from a mapping of field names to values.

        String values of bool/int/float/enum fields are converted as on the command line (so a
        YAML ``5e-5``, which YAML reads as text, still works). Keys that no dataclass has are an
        error naming them, unless ``allow_extra_keys``.
        """
        if not isinstance(args, Mapping):
            raise TypeError(
                f"parse_dict expects a dict of field values, got {type(args).__name__}."
            )
        known = {item.name for dtype in self.dataclass_types for item in _init_fields(dtype)}
        unknown = sorted(set(args) - known)
        if unknown and not allow_extra_keys:
            raise ValueError(
                f"unknown keys {unknown}: no field of {[d.__name__ for d in self.dataclass_types]} "
                "has these names; fix the spelling or pass allow_extra_keys=True."
            )
        outputs = []
        for dtype in self.dataclass_types:
            names = [item.name for item in _init_fields(dtype)]
            kwargs = {name: self._convert_text(name, args[name]) for name in names if name in args}
            outputs.append(dtype(**kwargs))
        return tuple(outputs)

    def _convert_text(self, name: str, value):
        converter = self._converters.get(name)
        if not isinstance(value, str) or converter in (None, str, Path, _json_object):
            return value  # str-typed and JSON fields keep their text; the dataclass parses it
        try:
            return converter(value)
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise ValueError(f"{name}={value!r} cannot be converted: {error}.") from None

    def parse_json_file(self, json_file, allow_extra_keys: bool = False) -> tuple:
        """``parse_dict`` on the JSON object stored in ``json_file``."""
        path = _existing_file(json_file, "json_file")
        return self.parse_dict(_mapping_from(json.loads(path.read_text()), path), allow_extra_keys)

    def parse_yaml_file(self, yaml_file, allow_extra_keys: bool = False) -> tuple:
        """``parse_dict`` on the YAML mapping stored in ``yaml_file``."""
        import yaml  # only needed here; keeps the parser importable without PyYAML

        path = _existing_file(yaml_file, "yaml_file")
        loaded = yaml.safe_load(path.read_text())
        return self.parse_dict(_mapping_from(loaded, path), allow_extra_keys)


def _as_dataclass_list(dataclass_types) -> list:
    if dataclass_types is None:
        return []
    single = isinstance(dataclass_types, type) or not isinstance(dataclass_types, Iterable)
    candidates = [dataclass_types] if single else list(dataclass_types)
    for candidate in candidates:
        if not (isinstance(candidate, type) and dataclasses.is_dataclass(candidate)):
            raise TypeError(
                "dataclass_types must be dataclass types (classes, not instances), "
                f"got {candidate!r}."
            )
    return candidates


def _init_fields(dtype) -> list:
    return [item for item in dataclasses.fields(dtype) if item.init]


def _existing_file(path, argument: str) -> Path:
    resolved = Path(path)
    if not resolved.is_file():
        raise ValueError(f"{argument}: file {str(resolved)!r} does not exist.")
    return resolved


def _mapping_from(loaded, path: Path) -> Mapping:
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"{path} must contain a mapping of field names to values at the top level, "
            f"got {type(loaded).__name__}."
        )
    return loaded
