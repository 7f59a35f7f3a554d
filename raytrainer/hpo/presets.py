"""Search-space presets: small YAML files (format in ``searchspaces/README.md``), loaded by name or
path. Every problem in a file is reported with the file, the line and the field it concerns."""

import dataclasses
import math
import os
from typing import Optional

import yaml

from .spaces import PARAM_KINDS, ParamSpec, SearchSpace

PRESET_PATH_ENV = "RAYTRAINER_SEARCHSPACES"  # extra folders of presets, os.pathsep-separated
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INSTALLED_PRESETS = os.path.join(_PACKAGE, "searchspaces")  # a built wheel carries them here (setup.py)
_REPO_PRESETS = os.path.join(os.path.dirname(_PACKAGE), "searchspaces")  # a checkout (editable install)
_TOP_KEYS = {"description", "parameters"}
_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
    "fixed": {"type", "value"},
}


class _Problem(ValueError):
    """A problem at one place of a preset file; ``locate`` turns it into the user's message."""

    def __init__(self, line: Optional[int], where: str, message: str):
        super().__init__(message)
        self.line, self.where, self.message = line, where, message


def preset_folders() -> list:
    extra = [p for p in os.environ.get(PRESET_PATH_ENV, "").split(os.pathsep) if p]
    folders = extra + [os.path.join(os.getcwd(), "searchspaces"), _INSTALLED_PRESETS, _REPO_PRESETS]
    return list(dict.fromkeys(os.path.abspath(folder) for folder in folders))


def available_presets() -> list:
    names = set()
    for folder in preset_folders():
        if os.path.isdir(folder):
            names.update(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))
    return sorted(names)


def find_preset(name_or_path: str) -> str:
    """The file a preset name or path refers to; a clear error listing the presets otherwise."""
    candidates = [name_or_path]
    if not name_or_path.endswith((".yaml", ".yml")) and os.sep not in name_or_path:
        candidates += [os.path.join(folder, f"{name_or_path}.yaml") for folder in preset_folders()]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"hp_space: no search-space preset or file {name_or_path!r}. Presets: {', '.join(available_presets())} "
        f"(folders searched: {', '.join(preset_folders())}; add yours with ${PRESET_PATH_ENV})."
    )


def load_search_space(name_or_path: str, args_class=None) -> SearchSpace:
    """Load and validate a preset (by name, e.g. ``"hf_default"``, or by path) into a ``SearchSpace``.

    ``args_class`` (default ``TrainingArguments``) gives the valid parameter names."""
    if args_class is None:
        from ..args import TrainingArguments as args_class
    path = find_preset(name_or_path)
    with open(path) as f:
        text = f.read()
    try:
        return _parse(text, path, args_class)
    except _Problem as problem:
        line = f":{problem.line}" if problem.line is not None else ""
        raise ValueError(f"{path}{line}: {problem.where}: {problem.message}") from None


def _parse(text: str, path: str, args_class) -> SearchSpace:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise _Problem(mark.line + 1 if mark else None, "YAML", str(getattr(error, "problem", error))) from None
    if not isinstance(root, yaml.MappingNode):
        raise _Problem(_line(root), "file", "a preset is a mapping with 'description' and 'parameters'.")
    top = _mapping(root, "file")
    for key, (key_node, _) in top.items():
        if key not in _TOP_KEYS:
            raise _Problem(_line(key_node), key, f"unknown key; a preset has only {sorted(_TOP_KEYS)}.")
    if "parameters" not in top:
        raise _Problem(_line(root), "parameters", "missing; list the hyperparameters under 'parameters:'.")
    params_node = top["parameters"][1]
    if not isinstance(params_node, yaml.MappingNode) or not params_node.value:
        raise _Problem(_line(params_node), "parameters", "must be a non-empty mapping of name -> specification.")
    fields = {f.name for f in dataclasses.fields(args_class)}
    specs = []
    for name, (key_node, spec_node) in _mapping(params_node, "parameters").items():
        if name not in fields:
            raise _Problem(_line(key_node), f"parameters.{name}",
                           f"not a field of {args_class.__name__}; hyperparameters set TrainingArguments fields.")
        specs.append(_param(name, spec_node))
    description = _scalar(top["description"][1]) if "description" in top else ""
    return SearchSpace(tuple(specs), description=str(description or ""), source=path)


def _param(name: str, node) -> ParamSpec:
    where = f"parameters.{name}"
    if not isinstance(node, yaml.MappingNode):
        raise _Problem(_line(node), where, "must be a mapping with a 'type' (one of "
                                          f"{', '.join(PARAM_KINDS)}) and its fields.")
    entries = _mapping(node, where)
    if "type" not in entries:
        raise _Problem(_line(node), f"{where}.type", f"missing; one of {', '.join(PARAM_KINDS)}.")
    kind = _scalar(entries["type"][1])
    if kind not in PARAM_KINDS:
        raise _Problem(_line(entries["type"][1]), f"{where}.type", f"{kind!r} is not one of {', '.join(PARAM_KINDS)}.")
    for key, (key_node, _) in entries.items():
        if key not in _KEYS[kind]:
            raise _Problem(_line(key_node), f"{where}.{key}",
                           f"not a field of a {kind!r} parameter; allowed: {', '.join(sorted(_KEYS[kind]))}.")
    if kind == "categorical":
        return _categorical(name, entries, node)
    if kind == "fixed":
        if "value" not in entries:
            raise _Problem(_line(node), f"{where}.value", "missing; a fixed parameter needs its value.")
        return ParamSpec(name, "fixed", value=_plain(entries["value"][1]))
    return _range(name, kind, entries, node)


def _range(name: str, kind: str, entries: dict, node) -> ParamSpec:
    where = f"parameters.{name}"
    bounds = {}
    for key in ("low", "high"):
        if key not in entries:
            raise _Problem(_line(node), f"{where}.{key}", f"missing; a {kind} range needs 'low' and 'high'.")
        bounds[key] = _number(entries[key][1], f"{where}.{key}", integer=kind == "int")
    log = _boolean(entries["log"][1], f"{where}.log") if "log" in entries else False
    step = _number(entries["step"][1], f"{where}.step", integer=kind == "int") if "step" in entries else None
    low, high = bounds["low"], bounds["high"]
    if not low < high if kind == "float" else not low <= high:
        raise _Problem(_line(entries["high"][1]), f"{where}.high", f"must be above low ({low}), got {high}.")
    if log and low <= 0:
        raise _Problem(_line(entries["low"][1]), f"{where}.low", f"a log-scaled range needs low > 0, got {low}.")
    if step is not None and (step <= 0 or (log and kind == "float")):
        raise _Problem(_line(entries["step"][1]), f"{where}.step",
                       "must be positive, and cannot be combined with log: true for floats.")
    return ParamSpec(name, kind, low=low, high=high, log=log, step=step)


def _categorical(name: str, entries: dict, node) -> ParamSpec:
    where = f"parameters.{name}.choices"
    if "choices" not in entries:
        raise _Problem(_line(node), where, "missing; a categorical parameter needs a list of choices.")
    choices_node = entries["choices"][1]
    if not isinstance(choices_node, yaml.SequenceNode) or not choices_node.value:
        raise _Problem(_line(choices_node), where, "must be a non-empty list, e.g. [8, 16, 32].")
    choices = [_plain(item) for item in choices_node.value]
    for item, value in zip(choices_node.value, choices):
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise _Problem(_line(item), where, f"choices must be numbers, strings or booleans, got {value!r}.")
    return ParamSpec(name, "categorical", choices=tuple(choices))


# ---------------------------------------------------------------------- YAML node helpers
def _line(node) -> Optional[int]:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else None


def _mapping(node, where: str) -> dict:
    entries = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key in entries:
            raise _Problem(_line(key_node), f"{where}.{key}", "appears twice.")
        entries[key] = (key_node, value_node)
    return entries


def _plain(node):
    """The Python value of a node, built by PyYAML's safe constructor."""
    return yaml.SafeLoader("").construct_document(node) if node is not None else None


def _scalar(node):
    if not isinstance(node, yaml.ScalarNode):
        raise _Problem(_line(node), "value", "expected a single value here, not a list or mapping.")
    return _plain(node)


def _number(node, where: str, integer: bool):
    value = _scalar(node)
    if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise _Problem(_line(node), where, f"expected a number, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Problem(_line(node), where, f"expected a finite number, got {value!r}.")
    if integer:
        if float(value) != int(value):
            raise _Problem(_line(node), where, f"expected an integer, got {value!r}.")
        return int(value)
    return float(value)


def _boolean(node, where: str) -> bool:
    value = _scalar(node)
    if not isinstance(value, bool):
        raise _Problem(_line(node), where, f"expected true or false, got {value!r}.")
    return value
