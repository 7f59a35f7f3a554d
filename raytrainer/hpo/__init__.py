"""``Trainer.hyperparameter_search`` on Optuna and Ray Tune: spaces, objective, results.

Each trial is a raytrainer training run with its own TrainingArguments (the sampled fields set)
and a model built by ``model_init(trial)``; its checkpoints go to ``output_dir/run-<trial id>/``.
"""

from .objective import default_compute_objective
from .presets import available_presets, load_search_space
from .results import BestRun, TrialRecord
from .search import run_hyperparameter_search
from .spaces import ParamSpec, SearchSpace, default_hp_space_optuna, default_hp_space_ray

__all__ = [
    "BestRun",
    "ParamSpec",
    "SearchSpace",
    "TrialRecord",
    "available_presets",
    "default_compute_objective",
    "default_hp_space_optuna",
    "default_hp_space_ray",
    "load_search_space",
    "run_hyperparameter_search",
]
