"""``backend="ray"``: a Ray Tune experiment whose trainable is a per-trial driver function.

A trial with ``num_workers=0`` (the default) runs the training loop in the Tune trial's own
process and reports each evaluation through ``ray.tune.report``; a trial with a multi-worker
``scaling_config`` builds its own ``TorchTrainer`` (Ray Train V2's pattern) whose rank-0 reports
reach Tune through a ``TuneReportCallback``. Optuna's TPE (``OptunaSearch``) proposes the trials
unless ``search_alg`` is given; any Tune ``scheduler`` (ASHA, median stopping, ...) can stop them,
and population-based training clones trials from each other's checkpoints (``hpo.pbt``).
"""

import contextlib
import math
import os

from ...runtime.scaling import is_local_mode
from ..pbt import (
    TUNE_CHECKPOINTS_KEPT,
    CheckpointedReportCallback,
    ExploredHyperparameters,
    check_pbt,
    is_pbt,
    tune_resume_point,
)
from ..results import TrialRecord
from ..runner import read_record, run_trial, saved_best_model_checkpoint, trial_checkpoint
from ..trial import (
    ReportFlushCallback,
    SearchTrial,
    TrainReporter,
    TuneReporter,
    objective_metric_names,
    tune_metrics,
)

OPTIONS = ("search_alg", "scheduler", "resources_per_trial", "max_concurrent_trials", "time_budget_s",
           "timeout", "max_failures", "resume", "name", "storage_path", "reuse_actors", "callbacks",
           "sampler", "seed", "points_to_evaluate", "verbose", "progress_reporter", "stop")
ARGS_KEY = "training_args"  # where a define-by-run space's returned values sit in a Tune config


def run_ray_search(setup, space, n_trials: int, hp_name, options: dict):
    """Run (or, with ``resume=True``, continue) the experiment; returns ``(records, ResultGrid)``."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from ...runtime.ray_session import ensure_ray, quiet_ray, ray_logs_wanted
    from .tune_lines import TrialLines

    population_based = is_pbt(options.get("scheduler"))
    if population_based:
        check_pbt(setup, options, space)
    ensure_ray()
    metrics = objective_metric_names(len(setup.directions))
    modes = [direction[:3] for direction in setup.directions]
    resources = trial_resources(setup, options.get("resources_per_trial"))
    concurrency = options.get("max_concurrent_trials") or free_trial_slots(setup, resources)
    if population_based:
        # PBT proposes the later configurations itself; a plain generator gives the first ones
        options = {**options, "search_alg": BasicVariantGenerator(max_concurrent=concurrency)}
        concurrency = None
    param_space, search_alg = _search(space, options, metrics, modes, default_seed=setup.base_args.seed)
    trainable = tune.with_resources(tune.with_parameters(tune_trial, setup=setup, hp_name=hp_name,
                                                         checkpoints_to_tune=population_based), resources)
    single = len(metrics) == 1
    tune_config = tune.TuneConfig(
        metric=metrics[0] if single else None, mode=modes[0] if single else None, search_alg=search_alg,
        scheduler=options.get("scheduler"), num_samples=n_trials, max_concurrent_trials=concurrency,
        time_budget_s=options.get("time_budget_s", options.get("timeout")),
        reuse_actors=options.get("reuse_actors", is_local_mode(setup.scaling_config)),
        trial_dirname_creator=trial_dirname,
    )
    storage_path = os.path.abspath(options.get("storage_path") or setup.output_dir)
    name = options.get("name") or "hp_search"
    quiet = "verbose" not in options and not ray_logs_wanted(setup.base_args)
    # quiet: Tune's classic console (see _tune_console) at its lowest level that still asks the
    # progress reporter, which prints one line per finished trial
    reporter = options.get("progress_reporter") or (TrialLines(sampled_values) if quiet else None)
    run_config = tune.RunConfig(
        name=name, storage_path=storage_path, failure_config=tune.FailureConfig(max_failures=options.get("max_failures", 0)),
        callbacks=options.get("callbacks"), verbose=1 if quiet else options.get("verbose"), stop=options.get("stop"),
        progress_reporter=reporter,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=TUNE_CHECKPOINTS_KEPT if population_based else None),
    )
    path = os.path.join(storage_path, name)
    with quiet_ray(setup.base_args), _tune_console(quiet):
        if options.get("resume") and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=param_space or None)
        else:
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
        grid = tuner.fit()
    return [_record_of(setup, result, hp_name) for result in grid], grid


@contextlib.contextmanager
def _tune_console(quiet: bool):
    """Tune's newer console output prints an experiment table and result paths at any verbosity
    and ignores a progress reporter; its classic console, at ``verbose=1``, prints only what the
    progress reporter prints. ``RAY_AIR_NEW_OUTPUT=0`` (Ray's own switch) picks the classic one
    while the search runs."""
    if not quiet:
        yield
        return
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def sampled_values(config: dict) -> dict:
    """Every value sampled for a trial, once: what model_init suggested and the TrainingArguments
    values (a define-by-run space's returned values sit under ``ARGS_KEY``)."""
    return {**{k: v for k, v in config.items() if k != ARGS_KEY}, **config.get(ARGS_KEY, {})}


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: ``run-<trial id>`` (like the trial's checkpoint folder) and each
    sampled value once (Tune's own name would repeat those under ``ARGS_KEY``)."""
    values = ",".join(f"{name}={_short(value)}" for name, value in sorted(sampled_values(trial.config).items()))
    return f"run-{trial.trial_id}_{values}"[:120]


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _search(space, options: dict, metrics: list, modes: list, default_seed: int):
    """``(param_space, search_alg)``: a Tune dict goes to any search algorithm; a define-by-run
    function needs Optuna's, which runs it per trial and puts its values under ``ARGS_KEY``."""
    from ray.tune.search.optuna import OptunaSearch

    search_alg = options.get("search_alg")
    single = len(metrics) == 1
    optuna_options = dict(metric=metrics[0] if single else metrics, mode=modes[0] if single else modes,
                          sampler=options.get("sampler"),
                          seed=options.get("seed", default_seed if options.get("sampler") is None else None),
                          points_to_evaluate=options.get("points_to_evaluate"))
    if isinstance(space, dict):
        if search_alg is None:
            search_alg = OptunaSearch(**optuna_options)
        return space, search_alg
    if search_alg is not None:
        raise ValueError("hyperparameter_search(backend='ray'): a define-by-run hp_space works with the default "
                         "search (Optuna's TPE through OptunaSearch) only; pass a Ray Tune dict space (or a preset "
                         "name) to use another search_alg.")
    return {}, OptunaSearch(space=_ReturnedValuesUnderArgsKey(space), **optuna_options)


class _ReturnedValuesUnderArgsKey:
    """The user's define-by-run function for OptunaSearch: what it returns are the TrainingArguments
    values (under ``ARGS_KEY``); everything it suggests is also in the config, for ``model_init``.
    OptunaSearch saves itself with plain pickle, so the function travels cloudpickled (a lambda
    or a closure is fine)."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial) -> dict:
        return {ARGS_KEY: dict(self.space(trial) or {})}

    def __getstate__(self):
        from ray import cloudpickle

        return {"space": cloudpickle.dumps(self.space)}

    def __setstate__(self, state):
        from ray import cloudpickle

        self.space = cloudpickle.loads(state["space"])


def trial_resources(setup, resources_per_trial) -> dict:
    """What one trial reserves: the trial's own process needs 1 CPU (and a GPU if the cluster has
    one) when it trains, a sliver when its TorchTrainer's workers do (they reserve their own)."""
    import ray

    if resources_per_trial is not None:
        return dict(resources_per_trial)
    if not is_local_mode(setup.scaling_config):
        return {"cpu": 0.1}  # Tune refuses 0 CPUs; the worker group has its own placement group
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return {"cpu": 1, "gpu": 1} if has_gpu else {"cpu": 1}


def free_trial_slots(setup, resources: dict) -> int:
    """How many trials fit in the cluster's free resources at once (at least 1)."""
    import ray

    need = {key.upper(): value for key, value in resources.items() if value}
    if not is_local_mode(setup.scaling_config):
        for key, value in setup.scaling_config.total_resources.items():
            need[key.upper()] = need.get(key.upper(), 0) + value
    free = ray.available_resources()
    slots = [math.floor(free.get(key, 0) / value + 1e-9) for key, value in need.items() if value > 0]
    return max(1, min(slots)) if slots else 1


def tune_trial(config: dict, setup=None, hp_name=None, checkpoints_to_tune: bool = False) -> None:
    """The Tune trainable: one trial, run by this trial's process. ``checkpoints_to_tune``: every
    evaluation report carries its step's checkpoint (population-based training)."""
    import ray.tune
    from ray.train import RunConfig

    trial_id = ray.tune.get_context().get_trial_id()
    params = dict(config[ARGS_KEY]) if ARGS_KEY in config else dict(config)
    sampled = sampled_values(config)
    run_name = hp_name(config) if hp_name is not None else f"run-{trial_id}"
    in_process = is_local_mode(setup.scaling_config)
    trial = SearchTrial(trial_id=trial_id, run_name=run_name, params=params, compute_objective=setup.compute_objective,
                        num_objectives=len(setup.directions), reporter=TuneReporter() if in_process else TrainReporter(),
                        hyperparameters=sampled, user_trial=config, in_tune_trial=in_process)
    run_config = None
    if not in_process:
        run_config = RunConfig(name=run_name, storage_path=os.path.abspath(setup.output_dir),
                               failure_config=setup.failure_config, callbacks=[_objective_forwarder()])

    def report_final(step, values, metrics):
        ray.tune.report(tune_metrics(step, values, metrics))

    run_dir = setup.run_dir(run_name)
    flush = CheckpointedReportCallback(run_dir) if checkpoints_to_tune else ReportFlushCallback()
    # a paused, retried or PBT-cloned trial resumes from the checkpoint Tune hands it; a trial of a
    # restored experiment (resume=True) from its own latest one
    with tune_resume_point(run_dir) as resume_from:
        run_trial(setup, trial, run_config=run_config, resume=True, resume_from=resume_from,
                  on_final_evaluation=report_final, extra_callbacks=[flush, ExploredHyperparameters(resume_from)])


def _objective_forwarder():
    """Ray's ``TuneReportCallback``, forwarding only the reports that carry the objective (the
    checkpoint reports of the workers do not, and Tune rejects a result without its metric)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ObjectiveForwarder(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and any(name.startswith("objective") for name in metrics[0]):
                super().after_report(run_context, metrics, checkpoint)

    return ObjectiveForwarder()


def _record_of(setup, result, hp_name) -> TrialRecord:
    """A finished trial's own record; for a trial a scheduler stopped (or that failed), one built
    from Tune's results and the checkpoints in its folder."""
    config = result.config or {}
    trial_id = (result.metrics or {}).get("trial_id") or os.path.basename(result.path or "")
    run_name = hp_name(config) if hp_name is not None else f"run-{trial_id}"
    record = read_record(setup.run_dir(run_name))
    if record is not None and record.status == "complete" and result.error is None:
        return record
    points, history = _evaluations(result, len(setup.directions))
    run_dir = setup.run_dir(run_name)
    checkpoint, checkpoint_metrics = trial_checkpoint(run_dir, saved_best_model_checkpoint(run_dir), points,
                                                      history, setup.directions[0])
    sampled = sampled_values(config)
    return TrialRecord(
        run_id=trial_id, run_name=run_name, status="failed" if result.error is not None else "stopped",
        objective=history[-1][1] if history else None, hyperparameters=sampled, history=history, checkpoint=checkpoint, checkpoint_metrics=checkpoint_metrics,
        global_step=history[-1][0] if history else None,
        error=None if result.error is None else f"{type(result.error).__name__}: {result.error}",
    )


def _evaluations(result, count: int):
    """``(points, history)`` from Tune's per-report rows: the eval metrics and the objective(s)
    of every report, keyed by training step."""
    frame = result.metrics_dataframe
    names = objective_metric_names(count)
    if frame is None or any(name not in frame.columns for name in names):
        return [], []
    points, history = [], []
    for _, row in frame.iterrows():
        step = int(row["step"])
        points.append((step, {k: row[k] for k in frame.columns if k.startswith("eval_") or k == "epoch"}))
        history.append((step, [float(row[name]) for name in names]))
    return points, history
