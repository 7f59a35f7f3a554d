"""One line per finished trial while a sweep runs, the same for both backends."""

import sys
import time

from ._table import cell

_COLUMNS = (("trial", 14), ("status", 9), ("objective", 12))


class TrialLines:
    """Prints a header before the first trial, then one aligned line per finished trial."""

    def __init__(self, stream=None):
        self.stream = stream
        self.started = time.time()
        self.count = 0

    def line(self, trial: str, status: str, objective, params: dict) -> None:
        stream = self.stream or sys.stdout
        if self.count == 0:
            header = "  ".join(name.ljust(width) for name, width in _COLUMNS)
            print(f"{header}  elapsed  hyperparameters", file=stream)
        self.count += 1
        cells = (trial, status, cell(objective))
        text = "  ".join(value.ljust(width) for value, (_, width) in zip(cells, _COLUMNS))
        chosen = ", ".join(f"{name}={cell(value)}" for name, value in sorted(params.items()))
        print(f"{text}  {time.time() - self.started:6.0f}s  {chosen}", file=stream, flush=True)


def optuna_trial_lines(lines: TrialLines = None):
    """An Optuna study callback (``study.optimize(callbacks=[...])``)."""
    lines = lines or TrialLines()

    def on_trial_finished(study, trial):
        objective = trial.values if trial.values and len(trial.values) > 1 else trial.value
        if objective is None and trial.intermediate_values:
            objective = trial.intermediate_values[max(trial.intermediate_values)]
        lines.line(str(trial.number), trial.state.name.lower(), objective, trial.params)

    return on_trial_finished


def tune_trial_lines(lines: TrialLines = None):
    """A Ray Tune ``Callback`` printing each trial as it completes, stops or fails."""
    from ray.tune import Callback

    from ..hpo.backends.ray import ARGS_KEY

    class TuneTrialLines(Callback):
        def __init__(self):
            self.lines = lines or TrialLines()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "finished")  # at its end, or stopped by a scheduler

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "failed")

        def _line(self, trial, status):
            result = trial.last_result or {}
            objective = result.get("objective")
            if objective is None:
                objective = [value for key, value in sorted(result.items()) if key.startswith("objective_")] or None
            config = {key: value for key, value in (trial.config or {}).items() if not isinstance(value, dict)}
            config.update((trial.config or {}).get(ARGS_KEY, {}))
            self.lines.line(trial.trial_id, status, objective, config)

    return TuneTrialLines()
