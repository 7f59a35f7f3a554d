"""From a checked config file to a Trainer: import the user's references (from the current
directory), parse ``args:`` with the command-line overrides, and build Ray's configs and the
datasets. Parquet sources are opened last, because Ray Data starts Ray."""

import argparse
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import sys

from .config import ConfigError, ConfigFile, check_argument_names, is_reference

USAGE_ERRORS = (argparse.ArgumentError, argparse.ArgumentTypeError)


class UsageError(ValueError):
    """A bad command line (an unknown flag, a value that does not parse)."""


def import_reference(config: ConfigFile, key: str, text: str):
    """The object ``module:attribute`` names, imported with the current directory on the path."""
    module_name, attribute = text.strip().rsplit(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import_module(config, key, module_name)
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = [name for name in dir(value) if not name.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            raise config.error(key, f"{module_name} has no attribute {attribute!r}.",
                               f"Did you mean '{module_name}:{close[0]}'?" if close else
                               "Define it there, or fix the name after ':'.")
        value = getattr(value, part)
    return value


def _import_module(config: ConfigFile, key: str, module_name: str):
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise config.error(key, f"no file {module_name!r}.", "Give a path relative to the current directory.")
        name = os.path.splitext(os.path.basename(module_name))[0]
        spec = importlib.util.spec_from_file_location(name, os.path.abspath(module_name))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # so its functions pickle by reference, like an imported module's
        _run_module(config, key, module_name, lambda: spec.loader.exec_module(module))
        return module
    return _run_module(config, key, module_name, lambda: importlib.import_module(module_name))


def _run_module(config, key, module_name, load):
    try:
        return load()
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise config.error(key, f"cannot import {module_name!r} (looked in {os.getcwd()} and the installed "
                               "packages).", "Run from the folder that holds the module, or install it.") from None
        raise config.error(key, f"importing {module_name!r} failed: {error}.", "Install what it imports.") from None
    except Exception as error:  # noqa: BLE001 - the user's module raised while importing
        raise config.error(key, f"importing {module_name!r} raised {type(error).__name__}: {error}.",
                           "Fix the module.") from error


def call_if_factory(value, key: str = "", config: ConfigFile = None):
    """Call a function or class (with ``None`` when it takes a trial argument); other objects are
    returned as they are. An error raised by the user's function says which config key built it."""
    if not (inspect.isroutine(value) or inspect.isclass(value)):
        return value
    try:
        parameters = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):
        parameters = ()
    required = [p for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        return value(None) if required else value()
    except Exception as error:
        if config is not None:
            error.add_note(f"(raised while building {key} of {config.path}: {config.data.get(key, '')})")
        raise


def trainer_class(config: ConfigFile):
    from ..trainer import Trainer

    if "trainer" not in config.data:
        return Trainer
    cls = import_reference(config, "trainer", config.data["trainer"])
    if not (inspect.isclass(cls) and issubclass(cls, Trainer)):
        raise config.error("trainer", f"{config.data['trainer']} is not a subclass of raytrainer.Trainer.",
                           "Subclass raytrainer.Trainer (or Seq2SeqTrainer) and override its methods.")
    return cls


def arguments_class(cls):
    from ..seq2seq import Seq2SeqTrainer

    if issubclass(cls, Seq2SeqTrainer):
        from ..args import Seq2SeqTrainingArguments

        return Seq2SeqTrainingArguments
    from ..args import TrainingArguments

    return TrainingArguments


def argument_parser(args_class, prog: str):
    from ..argparser import HfArgumentParser

    return HfArgumentParser(args_class, prog=prog, usage=f"{prog} CONFIG [--field value ...]", exit_on_error=False)


def training_arguments(config: ConfigFile, overrides: list, args_class, prog: str):
    """``args:`` of the file as defaults, the command-line flags on top, validated together."""
    check_argument_names(config, args_class)
    parser = argument_parser(args_class, prog)
    parser.set_defaults(**_converted_file_values(config, parser))
    try:
        args, remaining = parser.parse_args_into_dataclasses(overrides, return_remaining_strings=True,
                                                             look_for_args_file=False)
    except USAGE_ERRORS as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError) as error:
        raise config.error("args", f"{error}", "Fix the value in the file or on the command line.") from None
    if remaining:
        raise UsageError(_unknown_flags_message(remaining, args_class))
    return args


def _converted_file_values(config: ConfigFile, parser) -> dict:
    """The file's ``args:`` values converted as the command line converts text (YAML leaves
    ``1e-5`` and enum names as strings), so that a bad one is reported at its line in the file."""
    values = {}
    for name, value in config.section("args").items():
        try:
            values[name] = parser._convert_text(name, value)
        except ValueError as error:
            raise config.error(f"args.{name}", str(error), "Fix the value in the file.") from None
    return values


def _unknown_flags_message(remaining: list, args_class) -> str:
    flag = next((word for word in remaining if word.startswith("-")), remaining[0])
    fields = [field.name for field in dataclasses.fields(args_class) if field.init]
    close = difflib.get_close_matches(flag.lstrip("-").replace("-", "_"), fields, n=1)
    hint = f" Did you mean --{close[0]}?" if close else " 'raytrainer train --help-args' lists the fields."
    return f"unknown option {flag!r}: not a field of {args_class.__name__}.{hint}"


def scaling_config(config: ConfigFile):
    from ray.train import ScalingConfig

    section = config.section("scaling")
    if not section:
        return None
    try:
        return ScalingConfig(**section)
    except (ValueError, TypeError) as error:
        raise config.error("scaling", str(error), "Fix the ScalingConfig fields.") from None


def run_config(config: ConfigFile, args):
    """``run:`` as a RunConfig; its storage defaults to ``output_dir`` as the Trainer's own does."""
    from ray.train import FailureConfig, RunConfig

    section = config.section("run")
    if not section:
        return None
    output_dir = os.path.abspath(args.output_dir)
    section.setdefault("name", os.path.basename(output_dir))
    section.setdefault("storage_path", os.path.dirname(output_dir))
    try:
        if section.get("failure_config") is not None:
            section["failure_config"] = FailureConfig(**section["failure_config"])
        return RunConfig(**section)
    except (ValueError, TypeError) as error:
        raise config.error("run", str(error), "Fix the RunConfig fields.") from None


def failure_config(config: ConfigFile):
    from ray.train import FailureConfig

    failure = config.section("run").get("failure_config")
    return None if failure is None else FailureConfig(**failure)


def reference_or_none(config: ConfigFile, key: str, call: bool = False):
    if config.data.get(key) is None:
        return None
    value = import_reference(config, key, config.data[key])
    return call_if_factory(value, key, config) if call else value


def collator(config: ConfigFile):
    value = reference_or_none(config, "data_collator")
    if not inspect.isclass(value):
        return value
    try:
        return value()
    except TypeError as error:
        raise config.error("data_collator", f"{config.data['data_collator']} cannot be built without arguments "
                           f"({error}).", "Name an instance instead: define e.g. 'collator = "
                           "DataCollatorWithPadding(tokenizer)' in the module and write 'module:collator'.") from None


def callbacks(config: ConfigFile) -> list:
    return [import_reference(config, f"callbacks[{i}]", text) for i, text in enumerate(config.data.get("callbacks") or [])]


def model_factory(config: ConfigFile):
    factory = import_reference(config, "model", config.data["model"])
    if not callable(factory) or not (inspect.isroutine(factory) or inspect.isclass(factory)):
        raise config.error("model", f"{config.data['model']} is a {type(factory).__name__}, not a function or class.",
                           "Name a function (or class) that builds the model: sweeps call it once per trial.")
    return factory


def datasets(config: ConfigFile) -> dict:
    """The train and eval datasets: references first (no Ray), then parquet streams."""
    built = {}
    for key in ("train_dataset", "eval_dataset"):
        if config.data.get(key) is not None:
            built[key] = _dataset(config, key, config.data[key], streams=False)
    if any(_streams(config.data.get(key)) for key in built):
        for key in built:
            built[key] = _dataset(config, key, config.data[key], streams=True, done=built[key])
    return built


def _streams(value) -> bool:
    if isinstance(value, dict) and "path" not in value:
        return any(_streams(source) for source in value.values())
    return not is_reference(value["path"] if isinstance(value, dict) else value)


def _dataset(config: ConfigFile, key: str, value, streams: bool, done=None):
    if isinstance(value, dict) and "path" not in value:
        return {name: _dataset(config, f"{key}.{name}", source, streams, (done or {}).get(name))
                for name, source in value.items()}
    options = dict(value) if isinstance(value, dict) else {"path": value}
    path = options.pop("path")
    if is_reference(path):
        return done if done is not None else call_if_factory(import_reference(config, key, path), key, config)
    if not streams:
        return None
    from ..data.streaming import stream

    try:
        return stream(path, **options)
    except (ValueError, TypeError) as error:
        raise config.error(key, str(error), "Fix the source or its options.") from None


def build_trainer(config: ConfigFile, overrides: list, prog: str, sweep: bool = False):
    """The Trainer the config describes. ``sweep``: the model factory becomes ``model_init``,
    ``output_dir`` is made absolute (Tune runs trials in their own folders) and ``run:`` only
    gives the trials' failure handling."""
    from ..seeding import set_seed

    cls = trainer_class(config)
    args = training_arguments(config, overrides, arguments_class(cls), prog)
    if sweep:
        args.output_dir = os.path.abspath(args.output_dir)
        unused = sorted(set(config.section("run")) - {"failure_config"})
        if unused:
            raise config.error(f"run.{unused[0]}", "does not apply to a sweep: its trials are stored under "
                               "args.output_dir.", "Remove it (run.failure_config applies to every trial).")
    factory = model_factory(config)
    pieces = dict(scaling_config=scaling_config(config), run_config=None if sweep else run_config(config, args),
                  data_collator=collator(config), compute_metrics=reference_or_none(config, "compute_metrics"),
                  processing_class=reference_or_none(config, "processing_class", call=True),
                  callbacks=callbacks(config))
    set_seed(args.seed)
    model = None if sweep else call_if_factory(factory, "model", config)
    data = datasets(config)
    try:
        return cls(model=model, model_init=factory if sweep else None, args=args,
                   train_dataset=data.get("train_dataset"), eval_dataset=data.get("eval_dataset"), **pieces)
    except (ValueError, TypeError) as error:
        raise ConfigError(config.path, cls.__name__, str(error)) from None
