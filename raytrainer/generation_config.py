"""``Seq2SeqTrainingArguments.generation_config``: load it, check it, and hand it to ``generate()``.

As in HF, a given config wins over the model's own: it becomes ``model.generation_config``, which
a transformers model's ``generate()`` reads. A model with its own ``generate`` that names a
``generation_config`` parameter receives the config there; one that only names plain parameters
(``max_length``, ``num_beams``, ...) receives the config's values for them. Keyword arguments of
``evaluate``/``predict`` and ``generation_max_length``/``generation_num_beams`` override the
config's values, as they override a transformers model's config.
"""

import copy
import inspect
import json
import os


def load_generation_config(value):
    """A ``transformers.GenerationConfig`` when transformers is installed, else a plain dict, from
    a config object, a dict, a JSON file, a folder holding ``generation_config.json``, or (with
    transformers) a model name on the Hub. An invalid config is refused here, before training."""
    try:
        from transformers import GenerationConfig
    except ImportError:
        GenerationConfig = None
    if isinstance(value, dict):
        config = GenerationConfig(**value) if GenerationConfig is not None else dict(value)
    elif isinstance(value, (str, os.PathLike)):
        config = _from_path(os.fspath(value), GenerationConfig)
    else:
        config = copy.deepcopy(value)
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate(strict=True)
        except ValueError as error:
            raise ValueError(f"Seq2SeqTrainingArguments.generation_config is invalid: {error}") from None
    return config


def _from_path(path: str, GenerationConfig):
    if os.path.isdir(path) or os.path.isfile(path):
        folder, name = (path, None) if os.path.isdir(path) else os.path.split(path)
        if GenerationConfig is not None:
            return GenerationConfig.from_pretrained(folder, name)
        with open(os.path.join(folder, name or "generation_config.json"), encoding="utf-8") as f:
            return json.load(f)
    if GenerationConfig is None:
        raise ValueError(f"generation_config={path!r} is neither a file nor a folder; a model name on the Hub "
                         "needs transformers installed (pip install transformers).")
    return GenerationConfig.from_pretrained(path)


def generate_kwargs(generate, config, gen_kwargs: dict) -> dict:
    """The keyword arguments for ``generate``: ``gen_kwargs`` plus the config, in the form
    ``generate`` accepts (see the module docstring)."""
    if config is None:
        return dict(gen_kwargs)
    parameters = inspect.signature(generate).parameters
    if "generation_config" in parameters:
        return {"generation_config": config, **gen_kwargs}
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    named = {key: values[key] for key in parameters if key in values and values[key] is not None}
    return {**named, **gen_kwargs}
