"""What a trial optimises: the objective computed from evaluation metrics, and the directions.

HF's default objective is the evaluation loss when the evaluation returned no other metric, and
the sum of the other metrics otherwise (speed figures and the epoch never count).
"""

import math
from typing import Callable, Union

_SPEED_SUFFIXES = ("_runtime", "_per_second", "_compilation_time")
DIRECTIONS = ("minimize", "maximize")


def default_compute_objective(metrics: dict) -> float:
    """The evaluation loss if it is the only metric, else the sum of the non-speed metrics."""
    remaining = dict(metrics)
    loss = remaining.pop("eval_loss", None)
    remaining.pop("epoch", None)
    for name in [name for name in remaining if name.endswith(_SPEED_SUFFIXES)]:
        remaining.pop(name)
    if not remaining:
        return loss
    return sum(remaining.values())


def parse_direction(direction) -> list:
    """``direction`` as a list of ``"minimize"``/``"maximize"`` (one entry per objective).

    Accepts a string, a list/tuple of strings, or optuna's ``StudyDirection`` values."""
    values = [direction] if isinstance(direction, str) or not isinstance(direction, (list, tuple)) else list(direction)
    if not values:
        raise ValueError("hyperparameter_search: direction is an empty list; give 'minimize', 'maximize' or a "
                         "list of them (one per objective).")
    parsed = []
    for value in values:
        name = getattr(value, "name", value)  # optuna.study.StudyDirection.MINIMIZE -> "MINIMIZE"
        name = name.lower() if isinstance(name, str) else name
        if name not in DIRECTIONS:
            raise ValueError(f"hyperparameter_search: direction {value!r} is not valid; use 'minimize' or "
                             "'maximize' (or a list of them for several objectives).")
        parsed.append(name)
    return parsed


def objective_values(objective, count: int) -> list:
    """The objective as a list of ``count`` finite-or-not floats, or a clear error naming
    ``compute_objective`` when it returned the wrong shape."""
    values = list(objective) if isinstance(objective, (list, tuple)) else [objective]
    if len(values) != count:
        raise ValueError(
            f"compute_objective returned {len(values)} value(s) ({objective!r}) but direction has {count} "
            "entries; return one number per direction."
        )
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        raise TypeError(f"compute_objective must return numbers, got {objective!r}.") from None


def is_better(candidate: float, incumbent: float, direction: str) -> bool:
    if incumbent is None or math.isnan(incumbent):
        return not math.isnan(candidate)
    return candidate < incumbent if direction == "minimize" else candidate > incumbent


def checked_compute_objective(compute_objective: Union[Callable, None]) -> Callable:
    if compute_objective is None:
        return default_compute_objective
    if not callable(compute_objective):
        raise TypeError("hyperparameter_search: compute_objective must be a function of the metrics dict, got "
                        f"{type(compute_objective).__name__}.")
    return compute_objective
