"""``raytrainer tune CONFIG --space NAME|FILE --n-trials N [...] [--field value ...]``: a sweep.

``Trainer.hyperparameter_search`` with the config's model as ``model_init``: a line per finished
trial while it runs, then the trial table, the best run, its checkpoint and the results files.
"""

import argparse

from .build import UsageError, arguments_class, build_trainer, failure_config, reference_or_none, trainer_class
from .config import load_config
from .live import optuna_trial_lines

SCHEDULERS = ("asha", "median", "pbt")
EPILOG = """Schedulers: with --backend ray, Tune's ASHA, median stopping or population-based training
(pbt: trials clone the checkpoints of better ones; every evaluation must be a save step);
with --backend optuna, asha and median are Optuna's successive-halving and median pruners.
The objective is --metric (e.g. eval_accuracy), or the config's compute_objective, or HF's
default (eval_loss alone, else the sum of the other metrics). Flags after the options set
TrainingArguments fields, as for 'raytrainer train'."""


def add_parser(subparsers):
    parser = subparsers.add_parser("tune", help="search hyperparameters (Optuna or Ray Tune)", epilog=EPILOG,
                                   description="Run a hyperparameter sweep of the model a config file describes.",
                                   allow_abbrev=False)
    parser.add_argument("config", help="the YAML or JSON config file (as for 'raytrainer train')")
    parser.add_argument("--space", required=True, metavar="NAME|FILE",
                        help="a search-space preset (hf_default, finetune_small, from_scratch) or a preset YAML file")
    parser.add_argument("--n-trials", type=_positive, required=True, metavar="N", help="number of trials")
    parser.add_argument("--backend", choices=("optuna", "ray"), default="optuna")
    parser.add_argument("--direction", nargs="+", choices=("minimize", "maximize"), default=["minimize"],
                        help="one per objective (default: minimize)")
    parser.add_argument("--metric", nargs="+", metavar="NAME", help="the evaluation metric(s) to optimise")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help="stop or clone trials early (see below)")
    parser.add_argument("--max-concurrent", type=_positive, metavar="K", help="trials at once (default: what fits)")
    parser.add_argument("--sampler-seed", type=int, metavar="S", help="seed of the search algorithm")
    parser.add_argument("--storage", metavar="URL", help="optuna: study storage (e.g. sqlite:///sweep.db); a rerun "
                        "continues the study")
    parser.add_argument("--resume", action="store_true", help="ray: continue the interrupted sweep in output_dir")
    parser.set_defaults(run=run, accepts_overrides=True)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def check_options(namespace) -> None:
    """Combinations of flags that cannot work, before anything is built."""
    ray_only = [flag for flag, used in (("--scheduler pbt", namespace.scheduler == "pbt"),
                                        ("--resume", namespace.resume)) if used]
    if namespace.backend != "ray" and ray_only:
        raise UsageError(f"{ray_only[0]} needs --backend ray.")
    if namespace.backend == "ray" and namespace.storage:
        raise UsageError("--storage is an Optuna study storage; with --backend ray the sweep is stored in "
                         "output_dir (continue it with --resume).")
    if namespace.metric and len(namespace.metric) != len(namespace.direction):
        raise UsageError(f"--metric names {len(namespace.metric)} metric(s) but --direction gives "
                         f"{len(namespace.direction)}; give one direction per metric.")
    if len(namespace.direction) > 1 and namespace.scheduler:
        raise UsageError("--scheduler compares one objective; it cannot be used with several --direction values.")


def load_space(name_or_path: str, args_class=None):
    from ..hpo.presets import load_search_space

    try:
        return load_search_space(name_or_path, args_class)
    except ValueError as error:
        raise UsageError(f"--space: {error}") from None


def run(namespace, overrides: list) -> int:
    check_options(namespace)
    config = load_config(namespace.config)
    space = load_space(namespace.space, arguments_class(trainer_class(config)))  # before any data or Ray
    trainer = build_trainer(config, overrides, "raytrainer tune", sweep=True)
    objective = reference_or_none(config, "compute_objective")
    if namespace.metric:
        objective = MetricObjective(namespace.metric)
    if objective is None and len(namespace.direction) > 1:
        raise UsageError("several --direction values need --metric (one per direction) or a compute_objective "
                         "in the config that returns one value per direction.")
    options = backend_options(namespace, space, failure_config(config))
    best = trainer.hyperparameter_search(hp_space=space, compute_objective=objective, n_trials=namespace.n_trials,
                                         direction=namespace.direction if len(namespace.direction) > 1
                                         else namespace.direction[0], backend=namespace.backend, **options)
    report(trainer, best)
    return 0


def backend_options(namespace, space, failure) -> dict:
    options = {"failure_config": failure} if failure is not None else {}
    if namespace.backend == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is printed instead
        options["callbacks"] = [optuna_trial_lines()]
        if namespace.sampler_seed is not None:
            options["sampler"] = optuna.samplers.TPESampler(seed=namespace.sampler_seed)
        if namespace.scheduler:
            options["pruner"] = (optuna.pruners.SuccessiveHalvingPruner() if namespace.scheduler == "asha"
                                 else optuna.pruners.MedianPruner(n_startup_trials=2))
        if namespace.max_concurrent:
            options["n_jobs"] = namespace.max_concurrent
        if namespace.storage:
            options.update(storage=namespace.storage, study_name="raytrainer", load_if_exists=True)
        return options
    options["resume"] = namespace.resume  # the backend prints a line per trial itself
    if namespace.scheduler:
        options["scheduler"] = tune_scheduler(namespace.scheduler, space)
    if namespace.max_concurrent:
        options["max_concurrent_trials"] = namespace.max_concurrent
    if namespace.sampler_seed is not None:
        options["seed"] = namespace.sampler_seed
    return options


def tune_scheduler(name: str, space):
    """Tune's scheduler for ``name``; time is counted in evaluations (Tune reports)."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, PopulationBasedTraining

    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2)
    if name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=1, min_samples_required=2)
    from ..hpo.pbt import mutations_of

    mutations = mutations_of(space.to_tune())
    if not mutations:
        raise UsageError(f"--scheduler pbt: the space {space.source} has no range or choice to perturb.")
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=1,
                                   hyperparam_mutations=mutations)


class MetricObjective:
    """``--metric``: the objective is the named evaluation metric(s) (``accuracy`` also finds
    ``eval_accuracy``)."""

    def __init__(self, names: list):
        self.names = list(names)

    def __call__(self, metrics: dict):
        values = [self._value(metrics, name) for name in self.names]
        return values[0] if len(values) == 1 else values

    @staticmethod
    def _value(metrics: dict, name: str) -> float:
        for candidate in (name, f"eval_{name}"):
            if candidate in metrics:
                return metrics[candidate]
        raise KeyError(f"--metric {name!r} is not among the evaluation metrics ({', '.join(sorted(metrics))}).")


def report(trainer, best) -> None:
    from .results import print_sweep, read_results

    print()
    print_sweep(read_results(trainer.args.output_dir)[1])
    runs = best if isinstance(best, list) else [best]
    for run in runs:
        print(f"\nbest trial {run.run_id}: objective {run.objective}")
        print("  hyperparameters: " + ", ".join(f"{k}={v}" for k, v in sorted(run.hyperparameters.items())))
        print(f"  checkpoint: {run.checkpoint or '(none saved; set save_strategy)'}")
    files = [path for path in (trainer.hp_search_results or {}).values() if path]
    print("results: " + ", ".join(files))
