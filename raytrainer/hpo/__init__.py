"""``Trainer.hyperparameter_search`` on Optuna and Ray Tune: spaces, objective, results.

Each trial is a raytrainer training run with its own TrainingArguments (the sampled fields set)
and a model built by ``model_init(trial)``; its checkpoints go to ``output_dir/run-<trial id>/``.

The names below import their modules on first use: the command line's ``results`` and
``--help`` read a results table without importing torch and the search machinery.
"""

from .._lazy import lazy_names

_MODULE_OF = {
    name: module
    for module, names in {
        ".objective": ["default_compute_objective"],
        ".presets": ["available_presets", "load_search_space"],
        ".results": ["BestRun", "TrialRecord"],
        ".search": ["run_hyperparameter_search"],
        ".spaces": ["ParamSpec", "SearchSpace", "default_hp_space_optuna", "default_hp_space_ray"],
    }.items()
    for name in names
}

__all__ = sorted(_MODULE_OF)


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
