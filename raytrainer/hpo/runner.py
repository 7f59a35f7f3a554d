"""One trial, the same for both backends: a fresh Trainer built from the user's constructor call
with the trial's TrainingArguments, trained with ``model_init(trial)``, its objective, its best
checkpoint, and a ``trial_result.json`` beside its checkpoints in ``output_dir/<run name>/``."""

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..checkpoints.layout import latest_complete_checkpoint, sorted_checkpoints, step_of
from ..integrations import RebuiltCallbacks
from .objective import is_better, objective_values
from .params import apply_hyperparameters
from .results import TrialRecord

logger = logging.getLogger("raytrainer")
RESULT_FILE = "trial_result.json"
_DISPLAY_CALLBACKS = ("ProgressCallback", "PrinterCallback", "NotebookProgressCallback")


@dataclass
class TrialSetup:
    """What every trial needs, shipped once per search (to Tune trials through the object store)."""

    blueprint: Any  # runtime.payload.TrainerBlueprint of the user's Trainer, model_init kept
    output_dir: str
    compute_objective: Callable
    directions: list
    scaling_config: Any = None  # per-trial ray.train.ScalingConfig (None: in the trial's process)
    failure_config: Any = None  # ray.train.FailureConfig of each multi-worker trial

    @property
    def base_args(self):
        return self.blueprint.arguments["args"]

    def run_dir(self, run_name: str) -> str:
        return os.path.join(self.output_dir, run_name)


def build_trial_trainer(setup: TrialSetup, params: dict, run_config=None, extra_callbacks=()):
    """A Trainer of the user's class for one trial: same constructor call, trial arguments, its
    own copies of the callbacks (trials may run side by side), no progress display."""
    arguments = dict(setup.blueprint.arguments)
    arguments.update(args=apply_hyperparameters(setup.base_args, params), scaling_config=setup.scaling_config,
                     run_config=run_config,
                     callbacks=RebuiltCallbacks(_own_copy(cb) for cb in arguments.get("callbacks") or []))
    trainer = setup.blueprint.trainer_cls(**arguments)
    for callback in [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ in _DISPLAY_CALLBACKS]:
        trainer.remove_callback(callback)
    for callback in extra_callbacks:
        trainer.add_callback(callback)
    return trainer


def _own_copy(callback):
    try:
        return copy.deepcopy(callback)
    except Exception:  # noqa: BLE001 - a callback holding a lock or a handle is shared as it is
        return callback


def run_trial(setup: TrialSetup, trial, *, run_config=None, resume: bool = False, resume_from: Optional[str] = None,
              on_final_evaluation: Optional[Callable] = None, extra_callbacks=()) -> TrialRecord:
    """Train one trial and return its record (also written to ``<run dir>/trial_result.json``).

    ``resume_from``: a checkpoint folder to continue from (one Tune handed the trial); else with
    ``resume``, the latest complete checkpoint in the trial's folder (a retried or restored Tune
    trial). Without an evaluation during training, the trial is evaluated at the end and
    ``on_final_evaluation(step, values, metrics)`` reports it."""
    start = time.time()
    run_dir = setup.run_dir(trial.run_name)
    checkpoint = resume_from
    if checkpoint is None and resume and os.path.isdir(run_dir):
        checkpoint = latest_complete_checkpoint(run_dir)
    trainer = None
    try:
        trainer = build_trial_trainer(setup, trial.params, run_config, extra_callbacks)
        output = trainer.train(resume_from_checkpoint=checkpoint, trial=trial)
        points = evaluation_points(trainer.state.log_history)
        if not points:
            metrics = trainer.evaluate()
            points = [(trainer.state.global_step, metrics)]
            if on_final_evaluation is not None:
                values = objective_values(setup.compute_objective(dict(metrics)), len(setup.directions))
                on_final_evaluation(trainer.state.global_step, values, metrics)
    except Exception as error:
        status = "pruned" if type(error).__name__ == "TrialPruned" else "failed"
        record = _record(setup, trial, status, trainer, start, error=f"{type(error).__name__}: {error}")
        write_record(run_dir, record)
        raise
    record = _record(setup, trial, "complete", trainer, start, points=points, train_metrics=output.metrics)
    write_record(run_dir, record)
    return record


def _record(setup, trial, status, trainer, start, points=None, train_metrics=None, error=None) -> TrialRecord:
    count = len(setup.directions)
    history = [(step, objective_values(setup.compute_objective(dict(m)), count)) for step, m in points or []]
    history = history or list(trial.history)
    checkpoint, checkpoint_metrics = None, None
    if trainer is not None and points:
        checkpoint, checkpoint_metrics = trial_checkpoint(setup.run_dir(trial.run_name),
                                                          trainer.state.best_model_checkpoint, points, history,
                                                          setup.directions[0])
    return TrialRecord(
        run_id=trial.trial_id, run_name=trial.run_name, status=status,
        objective=history[-1][1] if history and status == "complete" else None,
        hyperparameters=trial.sampled_hyperparameters(), history=history, checkpoint=checkpoint,
        checkpoint_metrics=checkpoint_metrics, global_step=_last_step(trainer, history),
        train_runtime=(train_metrics or {}).get("train_runtime"), wall_time=time.time() - start, error=error,
    )


def _last_step(trainer, history: list) -> Optional[int]:
    """The last training step: the trainer's (in-process), or the last report's (a multi-worker
    trial stopped before its state came back)."""
    steps = [step for step, _ in history if step is not None]
    if trainer is not None:
        steps.append(trainer.state.global_step)
    return max(steps) if steps else None


def evaluation_points(log_history: list) -> list:
    """``[(step, metrics)]`` of every evaluation in a run's log history (several entries of one
    step, e.g. one per eval dataset, are merged), in step order."""
    points = {}
    for entry in log_history:
        if any(key.startswith("eval_") for key in entry):
            merged = points.setdefault(entry.get("step"), {})
            merged.update({key: value for key, value in entry.items() if key != "step"})
    return sorted(points.items(), key=lambda item: item[0])


def trial_checkpoint(run_dir: str, best_model_checkpoint: Optional[str], points: list, history: list,
                     direction: str):
    """The trial's best checkpoint and the evaluation metrics at its step: the Trainer's own
    ``best_model_checkpoint`` when ``metric_for_best_model`` is set, else the saved checkpoint
    whose step had the best (first) objective, else the latest one."""
    metrics_at = dict(points)
    if best_model_checkpoint and os.path.isdir(best_model_checkpoint):
        return os.path.abspath(best_model_checkpoint), metrics_at.get(step_of(best_model_checkpoint))
    saved = {step_of(path): path for path in sorted_checkpoints(run_dir)}
    if not saved:
        return None, None
    chosen = None
    for step, values in history:
        if step in saved and (chosen is None or is_better(values[0], chosen[1], direction)):
            chosen = (step, values[0])
    step = chosen[0] if chosen else max(saved)
    return os.path.abspath(saved[step]), metrics_at.get(step)


def saved_best_model_checkpoint(run_dir: str) -> Optional[str]:
    """``best_model_checkpoint`` as the latest checkpoint's ``trainer_state.json`` recorded it
    (for a trial whose process was stopped before it could say)."""
    checkpoints = sorted_checkpoints(run_dir) if os.path.isdir(run_dir) else []
    if not checkpoints:
        return None
    try:
        with open(os.path.join(checkpoints[-1], "trainer_state.json")) as f:
            return json.load(f).get("best_model_checkpoint")
    except (OSError, ValueError):
        return None


def write_record(run_dir: str, record: TrialRecord) -> None:
    os.makedirs(run_dir, exist_ok=True)
    temporary = os.path.join(run_dir, f".{RESULT_FILE}.tmp")
    with open(temporary, "w") as f:
        json.dump(record.to_dict(), f, indent=2, default=_json_default)
    os.replace(temporary, os.path.join(run_dir, RESULT_FILE))


def read_record(run_dir: str) -> Optional[TrialRecord]:
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return TrialRecord.from_dict(json.load(f))


def clear_stale_run_dir(run_dir: str) -> None:
    """A new trial's folder that already exists belongs to an earlier search: its checkpoints
    must not be mistaken for this trial's."""
    if os.path.isdir(run_dir):
        logger.warning("hyperparameter_search: removing %s, left by an earlier search with the same run name.",
                       run_dir)
        shutil.rmtree(run_dir)


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)
