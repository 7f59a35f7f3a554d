"""The trial object a search hands to ``Trainer.train(trial=...)``, and how it reports.

The training loop calls ``Trainer._report_to_hp_search(trial, step, metrics)`` after each
evaluation; for a ``SearchTrial`` that computes the objective and passes it to the trial's
reporter, which is what differs between backends and between in-process and multi-worker trials:

- ``OptunaReporter``: Optuna backend, loop in this process: ``trial.report`` + pruning.
- ``TuneReporter``: Ray backend, loop in the Tune trial's process: ``ray.tune.report``.
- ``TrainReporter``: Ray backend, loop on Ray Train workers: ``ray.train.report`` on every rank
  (a barrier); the trial's ``TorchTrainer`` forwards rank 0's report to Tune.
- ``RelayReporter``: Optuna backend, loop on Ray Train workers: rank 0 asks the driver (through
  a ``PruningRelay`` actor) whether to prune, and every rank gets the answer.
"""

from dataclasses import dataclass, field
from typing import Any, Callable

from ..callbacks import TrainerCallback
from .objective import objective_values

OBJECTIVE = "objective"


def objective_metric_names(num_objectives: int) -> list:
    """The names the objective is reported to Ray Tune under."""
    return [OBJECTIVE] if num_objectives == 1 else [f"{OBJECTIVE}_{i}" for i in range(num_objectives)]


def tune_metrics(step: int, values: list, metrics: dict) -> dict:
    """A flat, numbers-only report for Tune: the objective(s), the evaluation metrics, the step."""
    report = {name: value for name, value in metrics.items() if isinstance(value, (int, float))}
    report.update(zip(objective_metric_names(len(values)), values))
    report["step"] = step
    return report


@dataclass
class SearchTrial:
    """One trial of a search, as the training loop sees it.

    ``user_trial`` (the ``optuna.Trial``, or the Tune config dict) is what ``model_init(trial)``
    receives; it stays in the process that built the trial (it does not pickle)."""

    trial_id: str
    run_name: str
    params: dict
    compute_objective: Callable
    num_objectives: int
    reporter: Any
    hyperparameters: dict = field(default_factory=dict)  # everything sampled (params + model_init's)
    user_trial: Any = None
    in_tune_trial: bool = False  # run the loop right here and report through ray.tune
    history: list = field(default_factory=list)  # [(step, [objective values])] seen in this process

    def report(self, trainer, step: int, metrics: dict) -> None:
        values = objective_values(self.compute_objective(dict(metrics)), self.num_objectives)
        self.history.append((step, values))
        trainer.objective = values[0] if self.num_objectives == 1 else values  # HF's attribute
        self.reporter.report(trainer, step, values, metrics)

    def report_from_elsewhere(self, optuna_trial, step: int, values: list) -> bool:
        """An evaluation of this trial made in another process (Ray Train workers, a trial process),
        received by the driver: kept in this trial's history and reported to its Optuna trial; True
        when the pruner stops the trial."""
        self.history.append((step, values))
        return report_to_optuna(optuna_trial, step, values)

    def sampled_hyperparameters(self) -> dict:
        """Everything sampled so far: the space's values, plus what ``model_init(trial)`` itself
        suggested on an Optuna trial."""
        live = getattr(self.user_trial, "params", None)
        return {**self.hyperparameters, **(live if isinstance(live, dict) else {})}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["user_trial"] = None
        return state


def model_init_trial(trial):
    """What ``model_init`` receives for ``train(trial=...)``: the Optuna trial or Tune config behind
    a search's trial, or the trial itself when a user passed one."""
    return trial.user_trial if isinstance(trial, SearchTrial) else trial


def report_to_optuna(optuna_trial, step: int, values: list) -> bool:
    """Report one evaluation to the Optuna trial; True when its pruner stops the trial. Optuna
    neither reports nor prunes multi-objective trials."""
    if len(values) > 1:
        return False
    optuna_trial.report(values[0], step)
    return optuna_trial.should_prune()


class OptunaReporter:
    def __init__(self, optuna_trial):
        self.optuna_trial = optuna_trial

    def report(self, trainer, step, values, metrics):
        import optuna

        if report_to_optuna(self.optuna_trial, step, values):
            raise optuna.TrialPruned(f"pruned at step {step} with objective {values[0]:.6g}")


# The Tune reporters hold an evaluation's report back until the checkpoint of that step is saved
# (or training moves on): a Tune scheduler may stop the trial at any report, and the trial's
# process is gone right after, so its checkpoint must already be on disk. The report waits here,
# one per process (a Tune trial, or a Ray Train worker, runs one trial at a time), and
# ``ReportFlushCallback``, added to the trial's Trainer, sends it.
_PENDING = {}


class TuneReporter:
    def report(self, trainer, step, values, metrics):
        _PENDING["report"] = (_tune_report, tune_metrics(step, values, metrics))


class TrainReporter:
    def report(self, trainer, step, values, metrics):
        _PENDING["report"] = (_train_report, tune_metrics(step, values, metrics))


def _tune_report(metrics: dict) -> None:
    import ray.tune

    ray.tune.report(metrics)


def _train_report(metrics: dict) -> None:
    import ray.train

    ray.train.report(metrics)  # every rank, the same number of times: it is a barrier


def take_pending_report():
    """The held-back ``(send, metrics)`` report, removed (None when there is none)."""
    return _PENDING.pop("report", None)


def flush_pending_report() -> None:
    pending = take_pending_report()
    if pending is not None:
        send, metrics = pending
        send(metrics)


class ReportFlushCallback(TrainerCallback):
    """Sends the held-back evaluation report after the save of its step, at the next step, or at
    the end of the epoch or of training, whichever comes first."""

    def on_train_begin(self, args, state, control, **kwargs):
        take_pending_report()  # a reused Tune actor: nothing left from its previous trial

    def on_save(self, args, state, control, **kwargs):
        flush_pending_report()

    on_step_end = on_epoch_end = on_train_end = on_save


class RelayReporter:
    """Rank 0 asks the driver whether to prune; the answer is broadcast so every rank stops."""

    def __init__(self, relay):
        self.relay = relay

    def report(self, trainer, step, values, metrics):
        import optuna
        import ray

        prune = False
        if trainer.is_world_process_zero():
            prune = ray.get(self.relay.ask.remote(step, values))
        if _any_rank_true(prune, trainer.args):
            raise optuna.TrialPruned(f"pruned at step {step} with objective {values}")


def _any_rank_true(flag: bool, args) -> bool:
    import torch
    import torch.distributed as dist

    if args.world_size > 1 and dist.is_initialized():
        tensor = torch.tensor([int(flag)], device=args.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())
    return flag
