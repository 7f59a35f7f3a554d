"""Search spaces: HF's default spaces, a small backend-neutral ``SearchSpace`` (what presets load
into), and the conversions each backend needs.

A space reaches ``hyperparameter_search`` as one of:

- an Optuna define-by-run function ``hp_space(trial) -> {name: value}`` (works with both backends;
  the Ray backend runs it through Tune's ``OptunaSearch``);
- a Ray Tune dict ``{name: tune.loguniform(...), ...}`` (Ray backend; the Optuna backend translates
  it into ``trial.suggest_*`` calls), or an HF-style function returning such a dict;
- a preset name or YAML path (see ``searchspaces/README.md``), loaded into a ``SearchSpace``.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

PARAM_KINDS = ("float", "int", "categorical", "fixed")


def default_hp_space_optuna(trial) -> dict:
    """HF's default Optuna space: learning rate, epochs, seed and batch size."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-6, 1e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 5),
        "seed": trial.suggest_int("seed", 1, 40),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [4, 8, 16, 32, 64]),
    }


def default_hp_space_ray(trial=None) -> dict:
    """HF's default Ray Tune space (the seed is sampled uniformly and truncated to an int)."""
    from ray import tune

    return {
        "learning_rate": tune.loguniform(1e-6, 1e-4),
        "num_train_epochs": tune.choice(list(range(1, 6))),
        "seed": tune.uniform(1, 40),
        "per_device_train_batch_size": tune.choice([4, 8, 16, 32, 64]),
    }


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: a float or int range (optionally log-scaled or stepped), a list of
    choices, or a fixed value."""

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()
    value: Any = None

    def suggest(self, trial):
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def to_tune(self):
        from ray import tune

        if self.kind == "float":
            if self.step is not None:
                return (tune.qloguniform if self.log else tune.quniform)(self.low, self.high, self.step)
            return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)
        if self.kind == "int":
            low, high, step = int(self.low), int(self.high), int(self.step or 1)
            if self.log:
                return tune.lograndint(low, high + 1)  # Tune's upper bound is exclusive here
            return tune.qrandint(low, high, step) if step > 1 else tune.randint(low, high + 1)
        if self.kind == "categorical":
            return tune.choice(list(self.choices))
        return self.value


@dataclass(frozen=True)
class SearchSpace:
    """A backend-neutral space. Calling it with an Optuna trial samples it (so it is a valid
    define-by-run ``hp_space``); ``to_tune()`` gives the Ray Tune dict."""

    parameters: tuple
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def names(self) -> list:
        return [p.name for p in self.parameters]

    def __call__(self, trial) -> dict:
        return {p.name: p.suggest(trial) for p in self.parameters}

    def to_tune(self) -> dict:
        return {p.name: p.to_tune() for p in self.parameters}


def is_tune_domain(value) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(value, Domain)


def tune_dict_as_define_by_run(space: dict):
    """A Ray Tune dict space as an Optuna define-by-run function (for ``backend="optuna"``)."""
    from ray.tune.search.optuna import OptunaSearch

    from ray import tune

    # a grid is a set of choices to Optuna (use a GridSampler to walk it exhaustively)
    space = {name: tune.choice(list(value["grid_search"])) if _is_grid(value) else value for name, value in space.items()}
    constants = {name: value for name, value in space.items() if not is_tune_domain(value)}
    domains = {name: value for name, value in space.items() if is_tune_domain(value)}
    distributions = OptunaSearch.convert_search_space(domains) if domains else {}

    def sample(trial) -> dict:
        values = {name: _suggest_distribution(trial, name, dist) for name, dist in distributions.items()}
        return {**values, **constants}

    return sample


def _is_grid(value) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _suggest_distribution(trial, name: str, distribution):
    import optuna.distributions as od

    if isinstance(distribution, od.FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log,
                                   step=distribution.step)
    if isinstance(distribution, od.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_categorical(name, list(distribution.choices))
