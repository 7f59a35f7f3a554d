"""Choosing the best trial(s) from the records: by the objective at ``TrainingArguments.ray_scope``
for one objective, the Pareto front for several."""

import math

from .objective import is_better

ELIGIBLE = ("complete", "stopped")  # pruned (Optuna) and failed trials are never the best


def scope_value(history: list, scope: str, direction: str):
    """A trial's objective at ``scope``: ``"last"`` value, best over ``"all"``, or the mean of
    the last 5 or 10 (``"last-5-avg"``, ``"last-10-avg"``), as Ray Tune reads it."""
    values = [vals[0] for _, vals in history if vals and not math.isnan(vals[0])]
    if not values:
        return None
    if scope == "last":
        return values[-1]
    if scope == "all":
        return min(values) if direction == "minimize" else max(values)
    if scope.startswith("last-") and scope.endswith("-avg"):
        window = values[-int(scope[len("last-"):-len("-avg")]):]
        return sum(window) / len(window)
    raise ValueError(f"ray_scope={scope!r} is not valid; use 'last', 'all', 'last-5-avg' or 'last-10-avg'.")


def best_record(records: list, direction: str, scope: str = "last"):
    """The eligible trial with the best objective at ``scope``, or None."""
    best, best_value = None, None
    for record in records:
        if record.status not in ELIGIBLE:
            continue
        value = scope_value(_history_of(record), scope, direction)
        if value is not None and (best is None or is_better(value, best_value, direction)):
            best, best_value = record, value
    return best


def pareto_records(records: list, directions: list) -> list:
    """The complete trials no other complete trial dominates (at least as good on every
    objective and better on one), in trial order."""
    candidates = [r for r in records if r.status == "complete" and r.objective]
    return [r for r in candidates if not any(_dominates(other.objective, r.objective, directions)
                                             for other in candidates if other is not r)]


def _dominates(a: list, b: list, directions: list) -> bool:
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    no_worse = all(s * x <= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x < s * y for s, x, y in zip(signs, a, b))
    return no_worse and better


def _history_of(record) -> list:
    if record.history:
        return record.history
    return [(record.global_step, record.objective)] if record.objective else []
