"""``Trainer.hyperparameter_search``: check everything, run the backend, write the results, pick
the best trial(s). Every argument problem is reported here, before the first trial starts."""

import contextlib
import os

from .backends import optuna as optuna_backend
from .backends import ray as ray_backend
from .objective import checked_compute_objective, parse_direction
from .params import apply_hyperparameters, check_parameter_names
from .presets import load_search_space
from .results import BestRun, write_results
from .runner import TrialSetup
from .selection import best_record, pareto_records
from .spaces import SearchSpace, default_hp_space_optuna, default_hp_space_ray, is_tune_domain, tune_dict_as_define_by_run

BACKENDS = ("optuna", "ray")
_COMMON_OPTIONS = ("scaling_config", "failure_config", "load_best_model")


def run_hyperparameter_search(trainer, hp_space=None, compute_objective=None, n_trials: int = 20,
                              direction="minimize", backend=None, hp_name=None, **kwargs):
    directions = parse_direction(direction)
    backend = resolve_backend(backend)
    _check_trainer(trainer)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"hyperparameter_search: n_trials must be a positive int, got {n_trials!r}.")
    if hp_name is not None and not callable(hp_name):
        raise TypeError("hyperparameter_search: hp_name must be a function of the trial returning the run name.")
    compute_objective = checked_compute_objective(compute_objective)
    options = _checked_options(backend, kwargs, directions, trainer.args)
    space = resolve_space(hp_space, backend, trainer.args)
    check_space(space, trainer.args)
    setup = TrialSetup(_trial_blueprint(trainer), trainer.args.output_dir, compute_objective, directions,
                       scaling_config=options.pop("scaling_config", trainer.scaling_config),
                       failure_config=options.pop("failure_config", None))
    load_best = options.pop("load_best_model", False)
    trainer.hp_search_backend, trainer.hp_name, trainer.compute_objective = backend, hp_name, compute_objective
    try:
        run = optuna_backend.run_optuna_search if backend == "optuna" else ray_backend.run_ray_search
        records, summary = run(setup, space, n_trials, hp_name, options)
    finally:
        trainer.hp_search_backend = None
    trainer.hp_search_results = write_results(trainer.args.output_dir, records, directions)
    best = best_runs(records, directions, trainer.args.ray_scope, summary)
    if load_best:
        load_best_model(trainer, best if isinstance(best, BestRun) else best[0], backend)
    return best


def resolve_backend(backend) -> str:
    """``None`` is Optuna (HF's choice when both are installed); names are case-insensitive and
    transformers' ``HPSearchBackend`` values are accepted."""
    if backend is None:
        return "optuna"
    name = getattr(backend, "value", backend)
    name = name.lower() if isinstance(name, str) else name
    if name not in BACKENDS:
        raise ValueError(f"hyperparameter_search: backend {backend!r} is not supported; use 'optuna' or 'ray' "
                         "(sigopt and wandb are not available in raytrainer).")
    return name


def _check_trainer(trainer) -> None:
    if trainer.model_init is None:
        raise RuntimeError("hyperparameter_search: pass a model_init to the Trainer (Trainer(model_init=...)); "
                           "every trial trains a fresh model built by it.")
    if trainer.eval_dataset is None:
        raise ValueError("hyperparameter_search: the Trainer needs an eval_dataset; each trial's objective is "
                         "computed from its evaluation metrics.")


def _checked_options(backend: str, kwargs: dict, directions: list, args) -> dict:
    known = _COMMON_OPTIONS + (optuna_backend.OPTIONS if backend == "optuna" else ray_backend.OPTIONS)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise TypeError(f"hyperparameter_search(backend={backend!r}) got unknown keyword arguments {unknown}; "
                        f"accepted: {', '.join(sorted(known))}.")
    for name in ("scaling_config", "failure_config"):
        _check_ray_train_option(kwargs, name)
    if len(directions) > 1 and kwargs.get("scheduler") is not None:
        raise ValueError("hyperparameter_search: a Tune scheduler compares one metric; it cannot be used with "
                         f"several objectives (direction={directions}).")
    if kwargs.get("load_best_model") and args.save_strategy == "no":
        raise ValueError("hyperparameter_search: load_best_model=True needs checkpoints; set "
                         "TrainingArguments.save_strategy to 'steps', 'epoch' or 'best'.")
    return dict(kwargs)


def _check_ray_train_option(kwargs: dict, name: str) -> None:
    """``scaling_config``/``failure_config`` must be Ray Train's classes. ray.train is imported only
    to check one that was passed (then it is loaded already): a search whose trials train in
    processes of this machine never needs it, and importing it took 0.5 s before the first trial."""
    value = kwargs.get(name)
    if value is None:
        return
    import ray.train

    expected = {"scaling_config": ray.train.ScalingConfig, "failure_config": ray.train.FailureConfig}[name]
    if not isinstance(value, expected):
        raise TypeError(f"hyperparameter_search: {name} must be a ray.train.{expected.__name__}, got "
                        f"{type(value).__name__}.")


def resolve_space(hp_space, backend: str, args):
    """The space in the form the backend runs: a define-by-run function (Optuna; also the Ray
    backend through OptunaSearch) or a Ray Tune dict (Ray backend)."""
    if hp_space is None:
        return default_hp_space_optuna if backend == "optuna" else default_hp_space_ray()
    if isinstance(hp_space, (str, os.PathLike)):
        hp_space = load_search_space(os.fspath(hp_space), type(args))
    if isinstance(hp_space, SearchSpace):
        return hp_space if backend == "optuna" else hp_space.to_tune()
    if isinstance(hp_space, dict):
        return tune_dict_as_define_by_run(hp_space) if backend == "optuna" else hp_space
    if not callable(hp_space):
        raise TypeError("hyperparameter_search: hp_space must be a function of the trial, a Ray Tune dict, a "
                        f"SearchSpace or a preset name/path; got {type(hp_space).__name__}.")
    if backend == "ray":
        returned = _sample_define_by_run(hp_space)[0]
        if isinstance(returned, dict) and any(is_tune_domain(v) for v in returned.values()):
            return returned  # HF's Ray style: a function returning a Tune dict
    return hp_space


def check_space(space, args) -> None:
    """Sample the space once and build TrainingArguments from the sample, so an unknown name or a
    value the arguments reject fails now, not in the first trial."""
    if isinstance(space, dict):
        check_parameter_names(space, args)
        sample = {name: _one_value(value) for name, value in space.items()}
    else:
        sample, _ = _sample_define_by_run(space)
        if sample is not None and not isinstance(sample, dict):
            raise TypeError(f"hp_space must return a dict of hyperparameters, got {type(sample).__name__}.")
    apply_hyperparameters(args, sample or {})


def _one_value(value):
    """A value a Tune dict entry can take: a sample of a domain, a grid's first point, a constant."""
    if is_tune_domain(value):
        return value.sample()
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])[0]
    return value


def _sample_define_by_run(space):
    import optuna

    with _quiet_optuna():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trial = study.ask()
        return space(trial), trial


@contextlib.contextmanager
def _quiet_optuna():
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _trial_blueprint(trainer):
    from ..runtime.payload import blueprint_of

    blueprint = blueprint_of(trainer)
    blueprint.arguments["model_init"] = trainer.model_init  # each trial builds its own model
    return blueprint


def best_runs(records: list, directions: list, scope: str, summary):
    """``BestRun`` of the best trial (one objective), or the Pareto front (several)."""
    if len(directions) > 1:
        front = pareto_records(records, directions)
        if not front:
            raise RuntimeError(_no_trial_message(records))
        return [BestRun(r.run_id, r.objective, r.hyperparameters, summary, r.checkpoint, r.checkpoint_metrics)
                for r in front]
    record = best_record(records, directions[0], scope)
    if record is None:
        raise RuntimeError(_no_trial_message(records))
    objective = record.objective[0] if record.objective else record.history[-1][1][0]
    return BestRun(record.run_id, objective, record.hyperparameters, summary, record.checkpoint,
                   record.checkpoint_metrics)


def _no_trial_message(records: list) -> str:
    failed = [r for r in records if r.error]
    detail = f" The first failure ({failed[0].run_name}): {failed[0].error}" if failed else ""
    return f"hyperparameter_search: none of the {len(records)} trials finished with an objective.{detail}"


def load_best_model(trainer, best: BestRun, backend: str) -> None:
    """Build the best trial's model with ``model_init`` and load its best checkpoint into
    ``trainer.model``."""
    from ..checkpoints import load_weights

    if best.checkpoint is None:
        raise RuntimeError(f"hyperparameter_search: trial {best.run_id} saved no checkpoint, so there is nothing "
                           "to load; check save_strategy and save_total_limit.")
    if backend == "optuna":
        import optuna

        user_trial = optuna.trial.FixedTrial(dict(best.hyperparameters))
    else:
        user_trial = dict(best.hyperparameters)
    model = trainer.call_model_init(user_trial)
    load_weights(model, best.checkpoint)
    trainer.model = trainer.model_wrapped = model
