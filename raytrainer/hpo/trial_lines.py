"""One line per finished trial of a search, for either backend: ``trial <id> <status> at step
<n>: objective=<value> (<sampled values>)``."""


def trial_line(trial_id, status: str, step, objectives: dict, values: dict) -> str:
    """``trial <id> <status> at step <n>: objective=<value> (<sampled values>)``, for either backend."""
    shown = ", ".join(f"{key}={_short(value)}" for key, value in objectives.items()) or "no objective"
    sampled = ", ".join(f"{key}={_short(value)}" for key, value in sorted(values.items()))
    return f"trial {trial_id} {status} at step {'?' if step is None else step}: {shown} ({sampled})"


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
