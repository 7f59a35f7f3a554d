"""When to log, evaluate, save and stop: pure functions of ``(args, state)`` and the callback using them.

The decisions read only the arguments (strategies, ``logging_first_step``, ``eval_delay``) and
the state (``global_step``, ``epoch``, the interval step counts resolved by
``TrainerState.compute_steps``, ``max_steps``). ``save_strategy="best"`` is not decided here: the
loop saves after an evaluation that improved the best metric.
"""

from __future__ import annotations

from typing import NamedTuple

from raytrainer.callbacks.base import TrainerCallback


class StepDecisions(NamedTuple):
    """What the loop should do after an optimizer step."""

    log: bool
    evaluate: bool
    save: bool
    stop: bool


class EpochDecisions(NamedTuple):
    """What the loop should do after an epoch."""

    log: bool
    evaluate: bool
    save: bool


def _every(step: int, interval: int) -> bool:
    # An interval of 0 (or less) never fires; it would otherwise divide by zero.
    return interval > 0 and step % interval == 0


def step_end_decisions(args, state) -> StepDecisions:
    """Decide log / evaluate / save / stop for the step that just made ``state.global_step``."""
    step = state.global_step
    log = (step == 1 and bool(args.logging_first_step)) or (
        args.logging_strategy == "steps" and _every(step, state.logging_steps)
    )
    evaluate = (
        args.eval_strategy == "steps"
        and _every(step, state.eval_steps)
        and _eval_delay(args) <= step
    )
    save = args.save_strategy == "steps" and _every(step, state.save_steps)
    stop = step >= state.max_steps
    if stop and args.eval_strategy == "steps" and _eval_delay(args) <= step:
        evaluate = True  # HF v5: the final model is evaluated even off the eval_steps grid
    if stop and args.save_strategy == "steps":
        save = True  # the run always ends with a checkpoint when saving by steps
    return StepDecisions(log=log, evaluate=evaluate, save=save, stop=stop)


def epoch_end_decisions(args, state) -> EpochDecisions:
    """Decide log / evaluate / save at the end of an epoch (``state.epoch`` is the epoch count so far)."""
    log = args.logging_strategy == "epoch"
    evaluate = args.eval_strategy == "epoch" and _eval_delay(args) <= (state.epoch or 0)
    save = args.save_strategy == "epoch"
    return EpochDecisions(log=log, evaluate=evaluate, save=save)


def _eval_delay(args) -> float:
    # TrainingArguments defaults eval_delay to 0; None means the same.
    return args.eval_delay or 0


class DefaultFlowCallback(TrainerCallback):
    """Raises the ``control`` flags the loop acts on, following the logging/eval/save strategies.

    Flags are only ever raised here, never cleared: the handler clears them at the start of each
    step and after the loop has acted, so another callback's request is not overwritten.
    """

    def on_step_end(self, args, state, control, **kwargs):
        decisions = step_end_decisions(args, state)
        _raise_flags(control, decisions)
        if decisions.stop:
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        _raise_flags(control, epoch_end_decisions(args, state))
        return control


def _raise_flags(control, decisions) -> None:
    if decisions.log:
        control.should_log = True
    if decisions.evaluate:
        control.should_evaluate = True
    if decisions.save:
        control.should_save = True
