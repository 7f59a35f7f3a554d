"""The loop's mutable state: ``TrainerState`` (what happened) and ``TrainerControl`` (what to do next).

``TrainerState`` is saved as ``trainer_state.json`` in every checkpoint with the same keys and
layout as Hugging Face's, so a checkpoint written by one library can be resumed or inspected by
the other. ``TrainerControl`` carries the flags the callbacks raise for the loop to act on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional, Union

logger = logging.getLogger(__name__)

# The per-interval step counts that ``compute_steps`` copies from the arguments.
_INTERVAL_KINDS = ("logging", "eval", "save")


class ExportableState:
    """Mixin for objects whose settings and progress are stored in a checkpoint.

    ``state()`` returns ``{"args": ..., "attributes": ...}``: ``args`` are the constructor keyword
    arguments, ``attributes`` the values that change while training (counters, flags).
    ``from_state`` rebuilds an equal object from that dictionary.
    """

    def state(self) -> dict:
        raise NotImplementedError(
            f"{type(self).__name__} inherits ExportableState but does not define state(); "
            'implement it to return {"args": {...}, "attributes": {...}}.'
        )

    @classmethod
    def from_state(cls, state: dict):
        """Build an instance from ``state()``'s output: construct with ``args``, then set ``attributes``."""
        if not isinstance(state, dict) or "args" not in state or "attributes" not in state:
            raise ValueError(
                f"state={state!r} cannot rebuild {cls.__name__}: expected a dict with the keys "
                "'args' and 'attributes', as returned by state()."
            )
        instance = cls(**state["args"])
        for name, value in state["attributes"].items():
            setattr(instance, name, value)
        return instance


@dataclass
class TrainerState:
    """Everything the loop knows about its progress, saved with each checkpoint.

    ``epoch`` is fractional while an epoch is running (1.5 = halfway through the second epoch).
    ``log_history`` holds every dict passed to ``log``; ``best_metric`` / ``best_global_step`` /
    ``best_model_checkpoint`` track the best evaluation so far when ``metric_for_best_model`` is
    used. ``stateful_callbacks`` maps a callback class name to its ``state()`` (a list of states
    when several callbacks share a class); a list of callbacks given here is converted to that form.
    """

    epoch: Optional[float] = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: Optional[int] = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: Optional[list] = None
    best_metric: Optional[float] = None
    best_global_step: Optional[int] = None
    best_model_checkpoint: Optional[str] = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: Optional[str] = None
    trial_params: Optional[dict] = None
    stateful_callbacks: Optional[Union[dict, list]] = None

    def __post_init__(self):
        if self.log_history is None:
            self.log_history = []
        if self.stateful_callbacks is None:
            self.stateful_callbacks = {}
        elif not isinstance(self.stateful_callbacks, dict):
            self.stateful_callbacks = _export_callback_states(self.stateful_callbacks)

    def save_to_json(self, json_path: Union[str, os.PathLike]) -> None:
        """Write the state as indented, key-sorted JSON; readers never see a half-written file."""
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=_to_json_scalar)
        _write_atomically(os.fspath(json_path), text + "\n")

    @classmethod
    def load_from_json(cls, json_path: Union[str, os.PathLike]) -> "TrainerState":
        """Read a ``trainer_state.json``; keys this version does not know are skipped."""
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(
                f"json_path={os.fspath(json_path)!r} holds a {type(data).__name__}, not a JSON "
                "object; pass the trainer_state.json written by save_to_json."
            )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # A file from a newer library version may carry extra keys; they do not affect us.
            logger.info("Ignoring unknown keys in %s: %s", os.fspath(json_path), unknown)
        return cls(**{key: value for key, value in data.items() if key in known})

    def compute_steps(self, args: Any, max_steps: int) -> None:
        """Copy ``logging_steps``, ``eval_steps`` and ``save_steps`` from ``args``.

        A value below 1 is a fraction of the run: it becomes ``ceil(max_steps * value)``. A value
        of ``None`` keeps the current one (``eval_steps`` falls back that way in the arguments).
        """
        for kind in _INTERVAL_KINDS:
            name = f"{kind}_steps"
            steps = getattr(args, name)
            if steps is None:
                continue
            if steps < 1:
                steps = _steps_from_ratio(name, steps, max_steps)
            setattr(self, name, steps)


def _steps_from_ratio(name: str, ratio: float, max_steps: int) -> int:
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(
            f"{name}={ratio} is a fraction of max_steps, but max_steps={max_steps!r}; the total "
            f"number of steps must be a positive int (set max_steps or give {name} as an int >= 1)."
        )
    return math.ceil(max_steps * ratio)


def _export_callback_states(callbacks: list) -> dict:
    """Map class name -> state(); a second callback of the same class turns the entry into a list."""
    exported: dict = {}
    for callback in callbacks:
        if not isinstance(callback, ExportableState):
            raise TypeError(
                f"stateful_callbacks contains a {type(callback).__name__}, which does not inherit "
                "ExportableState; only callbacks with state()/from_state() can be saved."
            )
        name = type(callback).__name__
        if name not in exported:
            exported[name] = callback.state()
        elif isinstance(exported[name], list):
            exported[name].append(callback.state())
        else:
            exported[name] = [exported[name], callback.state()]
    return exported


def _to_json_scalar(value: Any) -> Any:
    # Logged metrics are often numpy or torch scalars; ``item()`` turns them into Python numbers.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(
        f"TrainerState holds a value of type {type(value).__name__} ({value!r}) that JSON cannot "
        "store; log Python numbers or strings instead."
    )


def _write_atomically(path: str, text: str) -> None:
    # A sibling temporary name (same filesystem, so os.replace is atomic) that is unique per
    # process and thread; plain open() keeps the user's umask, unlike tempfile.mkstemp's 0600.
    tmp_path = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


@dataclass
class TrainerControl(ExportableState):
    """Flags raised by callbacks during an event and acted on by the loop right after it.

    The loop clears ``should_training_stop`` when training starts, ``should_epoch_stop`` when an
    epoch starts, and ``should_log`` / ``should_evaluate`` / ``should_save`` when a step starts;
    each of the last three is also cleared once the loop has logged, evaluated or saved.
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def state(self) -> dict:
        flags = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"args": flags, "attributes": {}}
