"""The config file of ``raytrainer train`` and ``raytrainer tune`` (YAML or JSON): reading it and every
check that needs neither the user's code nor Ray: section names and types, the names of the
``args:``, ``scaling:`` and ``run:`` fields, and the form of every reference and data source.

Every problem is a ``ConfigError`` naming the file (and line), the key, what is wrong and what
to write instead.
"""

import dataclasses
import difflib
import json
import os
import re
from typing import Optional

import yaml

# key -> what it holds (also the text of ``raytrainer train --help``)
TOP_KEYS = {
    "model": "'module:function' building the model (a class works too); a sweep's model_init",
    "train_dataset": "'module:function' returning the dataset, or a parquet file/folder/URI (Ray Data)",
    "eval_dataset": "like train_dataset; or a mapping name -> source for several evaluation sets",
    "data_collator": "'module:attribute': the collator (a class is instantiated without arguments)",
    "compute_metrics": "'module:function': compute_metrics(eval_pred) -> dict",
    "compute_objective": "'module:function' (sweeps): the objective from the evaluation metrics",
    "processing_class": "'module:function' returning the tokenizer or processor",
    "trainer": "'module:Class': a raytrainer.Trainer subclass (default: Trainer)",
    "callbacks": "a list of 'module:Class' TrainerCallback classes or instances",
    "args": "TrainingArguments fields (command-line flags after the file override them)",
    "scaling": "ray.train.ScalingConfig fields: num_workers, use_gpu, resources_per_worker, ...",
    "run": "ray.train.RunConfig fields: storage_path, name, failure_config: {max_failures: N}",
}
REFERENCE_KEYS = ("model", "data_collator", "compute_metrics", "compute_objective", "processing_class", "trainer")
DATASET_KEYS = ("train_dataset", "eval_dataset")
STREAM_OPTIONS = {"path", "shuffle", "local_shuffle_buffer_size", "num_rows", "count_rows", "deterministic",
                  "prefetch_batches"}
REMOVED_SCALING = {"trainer_resources": "Ray Train V2 removed it; the driver needs no resources of its own"}
RUN_KEYS = ("name", "storage_path", "failure_config", "worker_runtime_env")
REMOVED_FAILURE = {"fail_fast": "Ray Train V2 removed it; use max_failures"}
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_REFERENCE = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|[^:]+\.py):(?P<attribute>[A-Za-z_][\w.]*)$")


class ConfigError(ValueError):
    """A problem in a config file: where it is, what is wrong, and what to write instead."""

    def __init__(self, path: str, key: str, problem: str, fix: str = "", line: Optional[int] = None):
        self.path, self.key, self.problem, self.fix, self.line = path, key, problem, fix, line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {problem}" + (f" {fix}" if fix else ""))


@dataclasses.dataclass
class ConfigFile:
    path: str
    data: dict
    lines: dict  # ("args", "learning_rate") -> line number, where the format tells

    def error(self, key: str, problem: str, fix: str = "") -> ConfigError:
        parts = tuple(key.split("."))
        line = self.lines.get(parts) or self.lines.get(parts[:1])
        return ConfigError(self.path, key, problem, fix, line)

    def section(self, name: str) -> dict:
        return dict(self.data.get(name) or {})


def load_config(path: str) -> ConfigFile:
    """Read and check a config file (no user code is imported, Ray is not started)."""
    if not os.path.isfile(path):
        raise ConfigError(path, "file", "no such file.", "Give the path of a YAML or JSON config "
                          "(relative paths start at the current directory).")
    with open(path) as f:
        text = f.read()
    data = _parse(path, text)
    config = ConfigFile(path, data, _line_numbers(text))
    check_config(config)
    return config


def _parse(path: str, text: str) -> dict:
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigError(path, "JSON", error.msg + ".", "Fix the syntax.", error.lineno) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(path, "YAML", f"{getattr(error, 'problem', None) or error}.", "Fix the syntax.",
                          mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise ConfigError(path, "file", f"the top level is a {type(data).__name__}, not a mapping.",
                          "Write 'model: my_module:build_model', 'train_dataset: ...', 'args: {...}' at the top level.")
    return data


def _line_numbers(text: str) -> dict:
    """``{key path: line}`` of every mapping key (YAML, and JSON as YAML understands it)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = prefix + (str(key.value),)
                lines[path] = key.start_mark.line + 1
                walk(value, path)

    walk(root, ())
    return lines


def check_config(config: ConfigFile) -> None:
    _check_top_level(config)
    for key in REFERENCE_KEYS:
        if key in config.data:
            check_reference(config, key, config.data[key])
    for key in DATASET_KEYS:
        if config.data.get(key) is not None:
            check_dataset(config, key, config.data[key])
    callbacks = config.data.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise config.error("callbacks", f"must be a list, got {type(callbacks).__name__}.",
                           "Write 'callbacks: [my_module:MyCallback]'.")
    for index, reference in enumerate(callbacks):
        check_reference(config, f"callbacks[{index}]", reference)
    check_argument_names(config)
    check_scaling(config)
    check_run(config)


def _check_top_level(config: ConfigFile) -> None:
    for key in config.data:
        if key not in TOP_KEYS:
            raise config.error(str(key), "unknown key.", _suggest(str(key), TOP_KEYS, "Keys are"))
    if "model" not in config.data:
        raise config.error("model", "missing.", "Add 'model: my_module:build_model' (a function or class that "
                           "returns the model, importable from the current directory).")
    for key in ("args", "scaling", "run"):
        value = config.data.get(key)
        if value is not None and not isinstance(value, dict):
            raise config.error(key, f"must be a mapping of field names to values, got {type(value).__name__}.",
                               f"Write it as '{key}:' followed by indented 'name: value' lines.")


def check_reference(config: ConfigFile, key: str, value) -> None:
    if not isinstance(value, str) or not _REFERENCE.match(value.strip()):
        raise config.error(key, f"{value!r} is not a reference.", "Write 'module:function' (or 'path/to/file.py:"
                           "function'), with the module importable from the current directory.")


def is_reference(value) -> bool:
    return isinstance(value, str) and "://" not in value and bool(_REFERENCE.match(value.strip())) \
        and not value.strip().endswith(PARQUET_SUFFIXES)


def check_dataset(config: ConfigFile, key: str, value) -> None:
    """A dataset is a reference, a parquet path/URI, a mapping of stream options with ``path``, or
    (eval_dataset) a mapping of names to any of these."""
    if isinstance(value, dict) and "path" not in value:
        if key != "eval_dataset" or not value:
            raise config.error(key, "a mapping here needs a 'path'.", f"Write '{key}: {{path: data/train.parquet, "
                               "shuffle: true}}' or a 'module:function' reference.")
        for name, source in value.items():
            if isinstance(source, dict) and "path" not in source:
                raise config.error(f"{key}.{name}", "a mapping here needs a 'path'.", "Give 'path: ...'.")
            check_dataset(config, f"{key}.{name}", source)
        return
    if isinstance(value, dict):
        unknown = sorted(set(value) - STREAM_OPTIONS)
        if unknown:
            raise config.error(f"{key}.{unknown[0]}", "not an option of raytrainer.stream.",
                               _suggest(unknown[0], STREAM_OPTIONS, "Options are"))
        value = value["path"]
    if is_reference(value):
        return
    check_parquet_source(config, key, value)


def check_parquet_source(config: ConfigFile, key: str, value) -> None:
    if not isinstance(value, str):
        raise config.error(key, f"{value!r} is not a dataset source.", "Write 'module:function' or a parquet path.")
    if "://" in value:
        return  # a URI (s3://, gs://, ...): Ray Data reads it on the cluster
    if not os.path.exists(value):
        raise config.error(key, f"{value!r} is neither 'module:function' nor an existing parquet file or folder.",
                           "Fix the path (relative to the current directory) or write 'module:function'.")
    if os.path.isfile(value) and not value.endswith(PARQUET_SUFFIXES):
        raise config.error(key, f"{value!r} is not a parquet file.", "Only parquet is read from a path; for other "
                           "formats write a 'module:function' that returns a dataset.")
    if os.path.isdir(value) and not _has_parquet_files(value):
        raise config.error(key, f"the folder {value!r} holds no parquet files.", "Point it at a folder of "
                           "*.parquet files.")


def _has_parquet_files(folder: str) -> bool:
    return any(name.endswith(PARQUET_SUFFIXES) for _, _, names in os.walk(folder) for name in names)


def check_argument_names(config: ConfigFile, args_class=None) -> None:
    if args_class is None:
        from ..args import TrainingArguments as args_class
    fields = {field.name for field in dataclasses.fields(args_class) if field.init}
    for name in config.section("args"):
        if name not in fields:
            raise config.error(f"args.{name}", f"not a field of {args_class.__name__}.",
                               _suggest(str(name), fields, fallback="'raytrainer train --help-args' lists them."))


def check_scaling(config: ConfigFile) -> None:
    from ray.train import ScalingConfig

    fields = {field.name for field in dataclasses.fields(ScalingConfig)} - set(REMOVED_SCALING)
    for name, value in config.section("scaling").items():
        if name in REMOVED_SCALING:
            raise config.error(f"scaling.{name}", f"not supported: {REMOVED_SCALING[name]}.", "Remove it.")
        if name not in fields:
            raise config.error(f"scaling.{name}", "not a field of ray.train.ScalingConfig.",
                               _suggest(str(name), fields, "Fields are"))
    workers = config.section("scaling").get("num_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise config.error("scaling.num_workers", f"{workers!r} is not a number of workers.",
                           "Write 0 (train in this process) or N >= 1 (N Ray Train workers).")


def check_run(config: ConfigFile) -> None:
    from ray.train import FailureConfig

    for name, value in config.section("run").items():
        if name not in RUN_KEYS:
            fix = _suggest(str(name), RUN_KEYS, "Keys are")
            if name == "checkpoint_config":
                fix = "Checkpoints follow TrainingArguments: use args.save_strategy and args.save_total_limit."
            raise config.error(f"run.{name}", "not supported here.", fix)
    failure = config.section("run").get("failure_config")
    if failure is None:
        return
    if not isinstance(failure, dict):
        raise config.error("run.failure_config", f"must be a mapping, got {failure!r}.",
                           "Write 'failure_config: {max_failures: 2}'.")
    fields = {field.name for field in dataclasses.fields(FailureConfig)} - set(REMOVED_FAILURE)
    for name in failure:
        if name in REMOVED_FAILURE:
            raise config.error(f"run.failure_config.{name}", f"not supported: {REMOVED_FAILURE[name]}.", "Remove it.")
        if name not in fields:
            raise config.error(f"run.failure_config.{name}", "not a field of ray.train.FailureConfig.",
                               _suggest(str(name), fields, "Fields are"))


def _suggest(name: str, known, intro: str = "", fallback: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"Did you mean {close[0]!r}?"
    return fallback or f"{intro} {', '.join(sorted(known))}."
