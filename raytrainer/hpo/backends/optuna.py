"""``backend="optuna"``: an Optuna study in the driver; each trial a raytrainer training run, in
this process (``num_workers=0``) or on Ray Train workers (``scaling_config``).

Evaluations are reported to the trial, so the study's pruner (Optuna's default: median) stops
bad trials early. Without a ``sampler``, Optuna's default one is seeded with
``TrainingArguments.seed``, so a sweep repeats exactly. With ``storage=`` (an RDB URL or ``optuna.storages.JournalStorage``) plus
``study_name=`` and ``load_if_exists=True``, a restarted driver continues the study: ``n_trials``
is the study's total, so only the trials still missing run.

``n_jobs`` runs trials side by side: multi-worker trials each as its own Ray Train run; trials
without workers one in this process and the others in trial processes of their own (``hpo.trial_processes``:
trials in threads of one process would share torch's random generator).
"""

import contextlib
import os

from ...runtime.scaling import is_local_mode
from ..results import TrialRecord
from ..runner import clear_stale_run_dir, read_record, run_trial
from ..trial import OptunaReporter, RelayReporter, SearchTrial

STUDY_OPTIONS = ("storage", "sampler", "pruner", "study_name", "load_if_exists")
OPTIMIZE_OPTIONS = ("timeout", "n_jobs", "gc_after_trial", "catch", "callbacks", "show_progress_bar")
OPTIONS = STUDY_OPTIONS + OPTIMIZE_OPTIONS


def run_optuna_search(setup, space, n_trials: int, hp_name, options: dict):
    """Run (or continue) the study; returns ``(records, study)``."""
    import optuna

    study_options = {k: v for k, v in options.items() if k in STUDY_OPTIONS}
    optimize_options = {k: v for k, v in options.items() if k in OPTIMIZE_OPTIONS}
    optimize_options.setdefault("catch", (Exception,))  # a failing trial is recorded, the sweep goes on
    directions = setup.directions
    if study_options.get("sampler") is None:  # seeded, so the same command samples the same trials
        seed = setup.base_args.seed
        sampler = optuna.samplers.TPESampler if len(directions) == 1 else optuna.samplers.NSGAIISampler
        study_options["sampler"] = sampler(seed=seed)
    if len(directions) == 1:
        study = optuna.create_study(direction=directions[0], **study_options)
    else:
        study = optuna.create_study(directions=directions, **study_options)
    finished = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    remaining = max(0, n_trials - finished)
    if remaining:
        with _trial_slots(setup, optimize_options.get("n_jobs", 1), remaining) as slots:
            study.optimize(_Objective(setup, space, hp_name, slots), n_trials=remaining, **optimize_options)
    return [_record_of(setup, trial) for trial in study.trials], study


@contextlib.contextmanager
def _trial_slots(setup, n_jobs: int, n_trials: int):
    """The trial processes of a search whose trials train without workers, ``n_jobs`` at a time
    (None when trials run one by one here, or each on its own workers)."""
    slots = min((os.cpu_count() or 1) if n_jobs == -1 else n_jobs, n_trials)
    if slots <= 1 or not is_local_mode(setup.scaling_config):
        yield None
        return
    from ...runtime.ray_session import ensure_ray
    from ..trial_processes import TrialSlots  # defines a Ray actor class: imports Ray

    ensure_ray()
    trial_slots = TrialSlots(setup, slots)
    try:
        yield trial_slots
    finally:
        trial_slots.close()


class _Objective:
    def __init__(self, setup, space, hp_name, slots=None):
        self.setup, self.space, self.hp_name, self.slots = setup, space, hp_name, slots

    def __call__(self, optuna_trial):
        setup = self.setup
        params = dict(self.space(optuna_trial) or {})
        run_name = self.hp_name(optuna_trial) if self.hp_name is not None else f"run-{optuna_trial.number}"
        optuna_trial.set_user_attr("run_name", run_name)
        trial = SearchTrial(trial_id=str(optuna_trial.number), run_name=run_name, params=params,
                            compute_objective=setup.compute_objective, num_objectives=len(setup.directions),
                            reporter=OptunaReporter(optuna_trial), hyperparameters=dict(optuna_trial.params),
                            user_trial=optuna_trial)
        clear_stale_run_dir(setup.run_dir(run_name))
        if self.slots is not None:
            record = self.slots.run(setup, trial, optuna_trial)
        elif is_local_mode(setup.scaling_config):
            record = run_trial(setup, trial)
        else:
            record = _run_on_workers(setup, trial, optuna_trial)
        return record.objective[0] if len(record.objective) == 1 else record.objective


def _run_on_workers(setup, trial, optuna_trial):
    from ray.train import RunConfig

    from ..relay import RelayServer  # a Ray actor class: defining it imports Ray

    server = RelayServer(optuna_trial, trial)
    trial.reporter = RelayReporter(server.relay)
    run_config = RunConfig(name=trial.run_name, storage_path=os.path.abspath(setup.output_dir),
                           failure_config=setup.failure_config)
    with server:
        return run_trial(setup, trial, run_config=run_config)


def _record_of(setup, optuna_trial) -> TrialRecord:
    """The trial's record: its ``trial_result.json`` when it got that far, else what the study
    knows (a trial still running, or one whose driver was killed)."""
    import optuna

    run_name = optuna_trial.user_attrs.get("run_name", f"run-{optuna_trial.number}")
    record = read_record(setup.run_dir(run_name))
    if record is not None and record.run_id == str(optuna_trial.number):
        return record
    states = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
              optuna.trial.TrialState.FAIL: "failed"}
    values = optuna_trial.values
    return TrialRecord(run_id=str(optuna_trial.number), run_name=run_name,
                       status=states.get(optuna_trial.state, "running"),
                       objective=list(values) if values else None, hyperparameters=dict(optuna_trial.params),
                       history=sorted((step, [value]) for step, value in optuna_trial.intermediate_values.items()))
