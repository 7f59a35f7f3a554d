"""One line per finished trial of a Ray Tune search, in place of Tune's boxed tables (which come
back with ``RAYTRAINER_RAY_LOGS=1`` or an explicit ``verbose=``)."""

from ray import tune

from .trial import OBJECTIVE


class TrialLines(tune.Callback):
    """Prints ``trial <id> <status>: objective=<value> <sampled values>`` as each trial ends."""

    def __init__(self, sampled_values):
        self.sampled_values = sampled_values  # config -> {name: value}, every sampled value once

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "complete")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "failed")

    def _line(self, trial, status: str) -> None:
        result = trial.last_result or {}
        objectives = {key: value for key, value in result.items() if key.startswith(OBJECTIVE)}
        print(trial_line(trial.trial_id, status, result.get("step"), objectives, self.sampled_values(trial.config)),
              flush=True)


def trial_line(trial_id, status: str, step, objectives: dict, values: dict) -> str:
    """``trial <id> <status> at step <n>: objective=<value> (<sampled values>)``, for either backend."""
    shown = ", ".join(f"{key}={_short(value)}" for key, value in objectives.items()) or "no objective"
    sampled = ", ".join(f"{key}={_short(value)}" for key, value in sorted(values.items()))
    return f"trial {trial_id} {status} at step {'?' if step is None else step}: {shown} ({sampled})"


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
