"""Population-based training (Ray Tune's ``PopulationBasedTraining``, and ``PB2``) on the Ray backend.

PBT only works when trials hand Tune a checkpoint with every score: at a perturbation Tune copies
the weights of a trial in the top quantile (the donor) into one of the bottom quantile (the
clone), changes the clone's hyperparameters, and restarts it. Here:

- each evaluation report of a trial carries the checkpoint saved at that step
  (``CheckpointedReportCallback``); the evaluations must therefore fall on save steps
  (``check_pbt``, before any trial starts);
- a (re)started trial resumes from ``ray.tune.get_checkpoint()`` (``tune_resume_point``): its own
  latest checkpoint after a pause or a retry, the donor's after an exploit. The donor's
  checkpoint replaces the clone's own checkpoints from that step on, so the trial folder holds
  one consistent lineage, and the exploit is logged in ``<run dir>/pbt_exploits.jsonl``;
- the clone keeps the donor's optimizer moments and its position in the schedule, but trains
  with its *own* (perturbed) learning rate and weight decay (``ExploredHyperparameters``).
"""

import contextlib
import json
import logging
import os
import shutil
import time

from ..callbacks import TrainerCallback
from ..checkpoints.layout import TRAINING_ARGS_NAME, checkpoint_dir, sorted_checkpoints, step_of
from ..enums import IntervalStrategy
from .trial import ReportFlushCallback, take_pending_report

logger = logging.getLogger("raytrainer")
EXPLOITS_FILE = "pbt_exploits.jsonl"
TUNE_CHECKPOINTS_KEPT = 4  # Tune's copies per trial; PBT warns about restore problems at <= 2


def is_pbt(scheduler) -> bool:
    """Whether ``scheduler`` is Tune's population-based training (PB2 derives from it)."""
    if scheduler is None:
        return False
    from ray.tune.schedulers import PopulationBasedTraining

    return isinstance(scheduler, PopulationBasedTraining)


def check_pbt(setup, options: dict, space) -> None:
    """PBT's requirements, checked before the first trial: a Tune dict space, trials that train in
    their own process, full checkpoints, and a checkpoint at every evaluation."""
    from ..runtime.scaling import is_local_mode

    args = setup.base_args
    where = "hyperparameter_search(scheduler=PopulationBasedTraining)"
    if not is_local_mode(setup.scaling_config):
        raise ValueError(f"{where}: population-based training runs each trial in its Tune process; remove the "
                         "per-trial scaling_config (multi-worker trials cannot hand their checkpoints to Tune).")
    if options.get("search_alg") is not None:
        raise ValueError(f"{where}: PBT chooses the hyperparameters itself (hyperparam_mutations); remove search_alg.")
    if not isinstance(space, dict):
        raise ValueError(f"{where}: give a Ray Tune dict space or a preset name; PBT perturbs the values of a dict "
                         "space and cannot run a define-by-run one.")
    if args.eval_strategy == IntervalStrategy.NO:
        raise ValueError(f"{where}: PBT compares trials at their evaluations; set eval_strategy to 'steps' or 'epoch'.")
    if args.save_only_model:
        raise ValueError(f"{where}: a cloned trial resumes its donor's optimizer and schedule; set "
                         "save_only_model=False.")
    if not _every_evaluation_saves(args):
        raise ValueError(
            f"{where}: every evaluation must have a checkpoint for Tune to copy into other trials; set "
            f"save_strategy='{args.eval_strategy}' and save_steps to eval_steps ({args.eval_steps}) or a divisor "
            f"of it (now save_strategy='{args.save_strategy}', save_steps={args.save_steps})."
        )


def _every_evaluation_saves(args) -> bool:
    if args.save_strategy != args.eval_strategy:
        return False
    if args.eval_strategy != IntervalStrategy.STEPS:
        return True
    quotient = args.eval_steps / args.save_steps
    return abs(quotient - round(quotient)) < 1e-9 and round(quotient) >= 1


def mutations_of(space) -> dict:
    """A Tune dict space as PBT's ``hyperparam_mutations``: the sampled entries (fixed values and
    grid searches are not perturbed)."""
    from ray.tune.search.sample import Domain

    return {name: value for name, value in space.items() if isinstance(value, Domain)}


class CheckpointedReportCallback(ReportFlushCallback):
    """Sends a trial's held-back evaluation report to Tune together with the checkpoint saved at
    the same step (the report waits for that save; see ``hpo.trial``)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kwargs):
        pending = take_pending_report()
        if pending is None:
            return
        import ray.tune

        _, metrics = pending
        folder = checkpoint_dir(self.run_dir, state.global_step)
        checkpoint = None
        if metrics.get("step") == state.global_step and os.path.isdir(folder):
            checkpoint = ray.tune.Checkpoint.from_directory(folder)
        ray.tune.report(metrics, checkpoint=checkpoint)


@contextlib.contextmanager
def tune_resume_point(run_dir: str):
    """The folder a (re)started Tune trial resumes from: the checkpoint Tune hands it (its own
    after a pause or a retry, a donor's after a PBT exploit), or None (then ``run_trial`` looks
    for the trial's latest own checkpoint)."""
    import ray.tune

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    trial_dir = os.path.basename(os.path.normpath(ray.tune.get_context().get_trial_dir()))
    own = trial_dir in checkpoint.path.replace(os.sep, "/").split("/")
    with checkpoint.as_directory() as folder:
        step = _checkpoint_step(folder)
        if own or step is None:
            mine = checkpoint_dir(run_dir, step) if step is not None else None
            yield mine if mine and os.path.isdir(mine) else folder
        else:
            yield adopt_donor_checkpoint(run_dir, folder, step)


def adopt_donor_checkpoint(run_dir: str, folder: str, step: int) -> str:
    """Copy a donor's checkpoint into the trial folder as ``checkpoint-<step>``, replacing the
    trial's own checkpoints of that step and later ones (the branch PBT abandoned; Tune keeps
    its copies of them), log the exploit, and return the copy."""
    for path in sorted_checkpoints(run_dir):
        if step_of(path) >= step:
            shutil.rmtree(path)
    os.makedirs(run_dir, exist_ok=True)
    target = checkpoint_dir(run_dir, step)
    staging = os.path.join(run_dir, f".tmp-pbt-{step}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    os.replace(staging, target)
    _log_exploit(run_dir, folder, step)
    return target


def _checkpoint_step(folder: str):
    try:
        with open(os.path.join(folder, "trainer_state.json")) as f:
            return int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _log_exploit(run_dir: str, donor_folder: str, step: int) -> None:
    entry = {"time": time.time(), "step": step, "donor_checkpoint": os.path.abspath(donor_folder),
             "donor_hyperparameters": _saved_hyperparameters(donor_folder)}
    logger.info("PBT: trial %s continues from the checkpoint of step %d of %s", os.path.basename(run_dir), step,
                donor_folder)
    with open(os.path.join(run_dir, EXPLOITS_FILE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_exploits(run_dir: str) -> list:
    """The PBT exploits of a trial, oldest first (an empty list when it was never cloned)."""
    path = os.path.join(run_dir, EXPLOITS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _saved_hyperparameters(folder: str) -> dict:
    try:
        with open(os.path.join(folder, TRAINING_ARGS_NAME)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return {name: saved.get(name) for name in ("learning_rate", "weight_decay")}


class ExploredHyperparameters(TrainerCallback):
    """After resuming from a checkpoint written with another learning rate or weight decay (a
    PBT donor's), put this trial's own values into the restored optimizer and schedule: the
    schedule's position and the optimizer's moments are the donor's, the rates are the trial's."""

    def __init__(self, resumed_from):
        self.resumed_from = resumed_from

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self.resumed_from is None or optimizer is None:
            return
        saved = _saved_hyperparameters(self.resumed_from)
        old_lr, old_decay = saved.get("learning_rate"), saved.get("weight_decay")
        if old_lr and args.learning_rate != old_lr:
            ratio = args.learning_rate / old_lr
            for group in optimizer.param_groups:
                group["lr"] *= ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
            if hasattr(lr_scheduler, "base_lrs"):
                lr_scheduler.base_lrs = [base * ratio for base in lr_scheduler.base_lrs]
            if hasattr(lr_scheduler, "_last_lr"):
                lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        if old_decay is not None and args.weight_decay != old_decay:
            for group in optimizer.param_groups:
                if group.get("weight_decay") == old_decay and old_decay != 0:
                    group["weight_decay"] = args.weight_decay
