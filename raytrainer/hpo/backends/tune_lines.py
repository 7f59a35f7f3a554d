"""Ray Tune's quiet console: one line per finished trial (``hpo.trial_lines``), in place of Tune's
boxed tables (which come back with ``RAYTRAINER_RAY_LOGS=1`` or an explicit ``verbose=``)."""

from ray.tune import ProgressReporter
from ray.tune.experiment import Trial

from ..trial import OBJECTIVE
from ..trial_lines import trial_line


class TrialLines(ProgressReporter):
    """Prints ``trial <id> <status>: objective=<value> <sampled values>`` as each trial ends.

    A progress reporter, which Tune asks after every step of its loop, rather than a Tune callback:
    any callback makes Tune's usage statistics import its logging integrations to classify it
    (MLflow's and W&B's, when those libraries are installed: 1.7 s of the driver's CPU time at the
    start of a process's first search, while the trials' processes start)."""

    def __init__(self, sampled_values):
        self.sampled_values = sampled_values  # config -> {name: value}, every sampled value once
        self._shown = None  # trial ids already printed (or ended before this run: a restored search's)

    def should_report(self, trials, done: bool = False) -> bool:
        if self._shown is None:  # Tune's first look, before any trial of this run can have ended
            self._shown = {trial.trial_id for trial in trials if trial.status in (Trial.TERMINATED, Trial.ERROR)}
        return any(self._ended(trial) for trial in trials)

    def report(self, trials, done: bool, *sys_info: str) -> None:
        for trial in trials:
            if self._ended(trial):
                self._shown.add(trial.trial_id)
                self._line(trial, "failed" if trial.status == Trial.ERROR else "complete")

    def _ended(self, trial) -> bool:
        return trial.status in (Trial.TERMINATED, Trial.ERROR) and trial.trial_id not in self._shown

    def _line(self, trial, status: str) -> None:
        result = trial.last_result or {}
        objectives = {key: value for key, value in result.items() if key.startswith(OBJECTIVE)}
        print(trial_line(trial.trial_id, status, result.get("step"), objectives, self.sampled_values(trial.config)),
              flush=True)
