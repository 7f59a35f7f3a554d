"""Learning-rate schedules by name, with the Hugging Face names, arguments and formulas.

Each ``get_*`` function returns a ``LambdaLR`` whose multiplier is a ``functools.partial`` of a
module-level function: the scheduler (and its ``state_dict``) then pickles, which a checkpoint
and a Ray worker boundary both need. The multiplier functions take the step count LambdaLR
passes and return the factor applied to each parameter group's initial learning rate.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Mapping
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from raytrainer.enums import SchedulerType
from raytrainer.greedy_lr import GreedyLR, get_greedy_schedule

_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def _warmup_factor(step: int, num_warmup_steps: int) -> float:
    return float(step) / float(max(1, num_warmup_steps))


def _decay_progress(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    return float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))


def _constant_factor(_step: int) -> float:
    return 1.0


def _constant_with_warmup_factor(step: int, *, num_warmup_steps: int) -> float:
    return _warmup_factor(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def _linear_factor(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return _warmup_factor(step, num_warmup_steps)
    remaining = float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, remaining)


def _cosine_factor(
    step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float, min_lr_rate: float = 0.0
) -> float:
    if step < num_warmup_steps:
        return _warmup_factor(step, num_warmup_steps)
    progress = _decay_progress(step, num_warmup_steps, num_training_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0.0, cosine * (1.0 - min_lr_rate) + min_lr_rate)


def _hard_restarts_factor(
    step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: int
) -> float:
    if step < num_warmup_steps:
        return _warmup_factor(step, num_warmup_steps)
    progress = _decay_progress(step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial_factor(
    step: int, *, num_warmup_steps: int, num_training_steps: int, lr_end: float, power: float, lr_init: float
) -> float:
    # LambdaLR multiplies by the initial lr, so the absolute lr is divided by lr_init here.
    if step < num_warmup_steps:
        return _warmup_factor(step, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init
    fraction_left = 1.0 - (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * fraction_left**power + lr_end) / lr_init


def _inverse_sqrt_factor(step: int, *, num_warmup_steps: int, timescale: int) -> float:
    if step < num_warmup_steps:
        return _warmup_factor(step, num_warmup_steps)
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


def _cosine_warmup_min_lr_factor(
    step: int,
    *,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float,
    warmup_lr_rate: float | None,
) -> float:
    # This variant counts one step ahead, so the first optimizer step already uses a non-zero lr
    # and the last one reaches min_lr exactly.
    if step < num_warmup_steps:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, float(num_warmup_steps))
        warmup_lr_rate = float(warmup_lr_rate)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * step / max(1, num_warmup_steps - 1)
    progress = (step - num_warmup_steps + 1.0) / max(1.0, float(num_training_steps - num_warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, cosine * (1.0 - min_lr_rate) + min_lr_rate)


def _wsd_shape(progress: float, shape: str, num_cycles: float, rising: bool) -> float:
    if shape == "linear":
        return progress if rising else 1.0 - progress
    if shape == "cosine":
        if rising:
            return 0.5 * (1.0 - math.cos(math.pi * progress))
        return 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return 1.0 - math.sqrt(1.0 - progress) if rising else 1.0 - math.sqrt(progress)


def _wsd_factor(
    step: int,
    *,
    num_warmup_steps: int,
    num_stable_steps: int,
    num_decay_steps: int,
    warmup_type: str,
    decay_type: str,
    min_lr_ratio: float,
    num_cycles: float,
) -> float:
    if step < num_warmup_steps:
        shape = _wsd_shape(_warmup_factor(step, num_warmup_steps), warmup_type, num_cycles, True)
        return max(0.0, shape * (1.0 - min_lr_ratio) + min_lr_ratio)
    decay_start = num_warmup_steps + num_stable_steps
    if step < decay_start:
        return 1.0
    if step < decay_start + num_decay_steps:
        progress = float(step - decay_start) / float(max(1, num_decay_steps))
        shape = _wsd_shape(progress, decay_type, num_cycles, False)
        return max(0.0, shape * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    """Keep every group at its initial learning rate."""
    return LambdaLR(optimizer, _constant_factor, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Rise linearly from 0 to the initial lr over ``num_warmup_steps``, then stay there."""
    _require_step_count(num_warmup_steps, "num_warmup_steps")
    factor = partial(_constant_with_warmup_factor, num_warmup_steps=num_warmup_steps)
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    factor = partial(_linear_factor, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup from 0, then a cosine decay; ``num_cycles=0.5`` is one half-wave down to 0."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    _require_real(num_cycles, "num_cycles")
    factor = partial(
        _cosine_factor,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: int = 1,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``num_cycles`` cosine decays to 0, each restarting at the initial lr."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    _require_real(num_cycles, "num_cycles")
    factor = partial(
        _hard_restarts_factor,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup, then ``(lr_init - lr_end) * (fraction of decay left) ** power + lr_end``,
    holding ``lr_end`` after ``num_training_steps``. ``lr_init`` is ``optimizer.defaults["lr"]``."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    _require_real(lr_end, "lr_end")
    _require_real(power, "power")
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ValueError(
            f"lr_end ({lr_end}) must be smaller than the optimizer's initial lr ({lr_init}); "
            "lower lr_end in lr_scheduler_kwargs or raise learning_rate."
        )
    factor = partial(
        _polynomial_factor,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        lr_end=lr_end,
        power=power,
        lr_init=lr_init,
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_inverse_sqrt_schedule(
    optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
) -> LambdaLR:
    """Linear warmup, then ``1 / sqrt((step + timescale - num_warmup_steps) / timescale)``;
    ``timescale`` defaults to ``num_warmup_steps`` (10 000 when that is 0)."""
    _require_step_count(num_warmup_steps, "num_warmup_steps")
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    _require_step_count(timescale, "timescale")
    if timescale == 0:
        raise ValueError(
            "timescale must be > 0 (it divides the step count); pass timescale=None for the default."
        )
    factor = partial(_inverse_sqrt_factor, num_warmup_steps=num_warmup_steps, timescale=timescale)
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_reduce_on_plateau_schedule(optimizer: Optimizer, **kwargs) -> ReduceLROnPlateau:
    """Torch's ``ReduceLROnPlateau``: lower the lr when the watched metric stops improving."""
    return ReduceLROnPlateau(optimizer, **kwargs)


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> LambdaLR:
    """Like the cosine schedule, but decaying to ``min_lr`` (absolute) or ``min_lr_rate`` (a
    fraction of the initial lr) instead of 0. Exactly one of the two must be given."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    _require_real(num_cycles, "num_cycles")
    factor = partial(
        _cosine_factor,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        min_lr_rate=_resolve_min_lr_rate(optimizer, min_lr, min_lr_rate),
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> LambdaLR:
    """The ``cosine_warmup_with_min_lr`` schedule: warmup starts at ``warmup_lr_rate`` times the
    initial lr (``1 / num_warmup_steps`` when unset) instead of 0, then a cosine decay to
    ``min_lr`` / ``min_lr_rate`` that reaches the floor on the last training step."""
    _require_step_counts(num_warmup_steps, num_training_steps)
    _require_real(num_cycles, "num_cycles")
    if warmup_lr_rate is not None:
        _require_real(warmup_lr_rate, "warmup_lr_rate")
    factor = partial(
        _cosine_warmup_min_lr_factor,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        min_lr_rate=_resolve_min_lr_rate(optimizer, min_lr, min_lr_rate),
        warmup_lr_rate=warmup_lr_rate,
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_wsd_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warmup-stable-decay: rise from ``min_lr_ratio`` to 1 (``warmup_type``), hold 1 for
    ``num_stable_steps``, fall back to ``min_lr_ratio`` over ``num_decay_steps`` (``decay_type``),
    then stay there. Without ``num_stable_steps`` the stable phase fills ``num_training_steps``."""
    _require_step_count(num_warmup_steps, "num_warmup_steps")
    _require_step_count(num_decay_steps, "num_decay_steps")
    _check_wsd_shapes(warmup_type, decay_type)
    _require_real(min_lr_ratio, "min_lr_ratio")
    _require_real(num_cycles, "num_cycles")
    if num_stable_steps is None:
        if num_training_steps is None:
            raise ValueError(
                "warmup_stable_decay requires num_training_steps or num_stable_steps; "
                "pass one of them (num_stable_steps goes in lr_scheduler_kwargs)."
            )
        _require_step_count(num_training_steps, "num_training_steps")
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    else:
        _require_step_count(num_stable_steps, "num_stable_steps")
        if num_training_steps is not None:
            warnings.warn(
                "warmup_stable_decay got both num_training_steps and num_stable_steps; "
                "num_stable_steps wins."
            )
    factor = partial(
        _wsd_factor,
        num_warmup_steps=num_warmup_steps,
        num_stable_steps=num_stable_steps,
        num_decay_steps=num_decay_steps,
        warmup_type=warmup_type,
        decay_type=decay_type,
        min_lr_ratio=min_lr_ratio,
        num_cycles=num_cycles,
    )
    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


TYPE_TO_SCHEDULER_FUNCTION = {
    SchedulerType.LINEAR: get_linear_schedule_with_warmup,
    SchedulerType.COSINE: get_cosine_schedule_with_warmup,
    SchedulerType.COSINE_WITH_RESTARTS: get_cosine_with_hard_restarts_schedule_with_warmup,
    SchedulerType.POLYNOMIAL: get_polynomial_decay_schedule_with_warmup,
    SchedulerType.CONSTANT: get_constant_schedule,
    SchedulerType.CONSTANT_WITH_WARMUP: get_constant_schedule_with_warmup,
    SchedulerType.INVERSE_SQRT: get_inverse_sqrt_schedule,
    SchedulerType.REDUCE_ON_PLATEAU: get_reduce_on_plateau_schedule,
    SchedulerType.COSINE_WITH_MIN_LR: get_cosine_with_min_lr_schedule_with_warmup,
    SchedulerType.COSINE_WARMUP_WITH_MIN_LR: get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    SchedulerType.WARMUP_STABLE_DECAY: get_wsd_schedule,
    SchedulerType.GREEDY: get_greedy_schedule,
}
# Schedules built from the optimizer alone, and those that need a warmup length but no total.
_NO_STEP_COUNTS = (SchedulerType.CONSTANT, SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY)
_WARMUP_ONLY = (SchedulerType.CONSTANT_WITH_WARMUP, SchedulerType.INVERSE_SQRT)
# Passed by the dispatcher itself, so never accepted from lr_scheduler_kwargs.
_DISPATCHER_ARGUMENTS = ("optimizer", "num_warmup_steps", "num_training_steps", "last_epoch")


def get_scheduler(
    name: str | SchedulerType,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict | None = None,
):
    """Build the schedule called ``name`` (a ``SchedulerType`` value) for ``optimizer``.

    ``scheduler_specific_kwargs`` (``TrainingArguments.lr_scheduler_kwargs``) go to the schedule
    function; a key that schedule does not take is refused. ``warmup_stable_decay`` reads
    ``num_decay_steps`` (and optionally ``num_stable_steps``) from them.
    """
    name = SchedulerType.parse(name, "lr_scheduler_type")
    kwargs = dict(scheduler_specific_kwargs or {})
    validate_scheduler_kwargs(name, kwargs)
    schedule_func = TYPE_TO_SCHEDULER_FUNCTION[name]
    if name in _NO_STEP_COUNTS:
        return schedule_func(optimizer, **kwargs)
    if num_warmup_steps is None:
        raise ValueError(f"{name.value} requires num_warmup_steps: pass num_warmup_steps=0 for no warmup.")
    if name in _WARMUP_ONLY:
        return schedule_func(optimizer, num_warmup_steps=num_warmup_steps, **kwargs)
    if name == SchedulerType.WARMUP_STABLE_DECAY:
        return schedule_func(
            optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs
        )
    if num_training_steps is None:
        raise ValueError(
            f"{name.value} requires num_training_steps: pass the total number of optimizer steps "
            "(the Trainer derives it from max_steps or num_train_epochs)."
        )
    return schedule_func(
        optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs
    )


def steps_on_metric(scheduler) -> bool:
    """Whether ``scheduler`` is stepped with an evaluation metric after each evaluation
    (``ReduceLROnPlateau``, ``GreedyLR``: ours or transformers') instead of once per optimizer step;
    decided by the object, so one passed through ``Trainer(optimizers=(opt, scheduler))`` counts."""
    return isinstance(scheduler, (ReduceLROnPlateau, GreedyLR)) or type(scheduler).__name__ == "GreedyLR"


def validate_scheduler_kwargs(name: str | SchedulerType, kwargs: Mapping | None) -> None:
    """Check ``lr_scheduler_kwargs`` against the schedule ``name`` without an optimizer, so the
    driver can refuse unknown keys and missing required ones before any worker starts."""
    name = SchedulerType.parse(name, "lr_scheduler_type")
    if kwargs is None:
        return
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"lr_scheduler_kwargs must be a dict, got {type(kwargs).__name__}: {kwargs!r}.")
    accepted = _accepted_scheduler_kwargs(name)
    for key in kwargs:
        if key in accepted:
            continue
        if key in _DISPATCHER_ARGUMENTS:
            raise ValueError(
                f"lr_scheduler_kwargs for lr_scheduler_type='{name.value}' must not set {key!r}: "
                "the Trainer passes it (from warmup_steps/warmup_ratio and max_steps/num_train_epochs)."
            )
        hint = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"lr_scheduler_kwargs for lr_scheduler_type='{name.value}' has unknown key {key!r}; "
            f"accepted keys: {hint}."
        )
    _check_required_scheduler_kwargs(name, kwargs)


def _accepted_scheduler_kwargs(name: SchedulerType) -> list[str]:
    # Read from the signatures, so the accepted keys can never drift from what the functions take.
    if name == SchedulerType.REDUCE_ON_PLATEAU:
        target = ReduceLROnPlateau.__init__
    elif name == SchedulerType.GREEDY:
        target = GreedyLR.__init__
    else:
        target = TYPE_TO_SCHEDULER_FUNCTION[name]
    parameters = inspect.signature(target).parameters
    return [key for key in parameters if key not in _DISPATCHER_ARGUMENTS and key != "self"]


def _check_required_scheduler_kwargs(name: SchedulerType, kwargs: Mapping) -> None:
    if name in (SchedulerType.COSINE_WITH_MIN_LR, SchedulerType.COSINE_WARMUP_WITH_MIN_LR):
        if (kwargs.get("min_lr") is None) == (kwargs.get("min_lr_rate") is None):
            raise ValueError(
                f"lr_scheduler_type='{name.value}' needs exactly one of min_lr or min_lr_rate in "
                f"lr_scheduler_kwargs, got {dict(kwargs)!r}; e.g. lr_scheduler_kwargs={{'min_lr_rate': 0.1}}."
            )
    if name == SchedulerType.WARMUP_STABLE_DECAY:
        if kwargs.get("num_decay_steps") is None:
            raise ValueError(
                "lr_scheduler_type='warmup_stable_decay' needs num_decay_steps in lr_scheduler_kwargs, "
                "e.g. lr_scheduler_kwargs={'num_decay_steps': 100}."
            )
        _check_wsd_shapes(kwargs.get("warmup_type", "linear"), kwargs.get("decay_type", "cosine"))


def _check_wsd_shapes(warmup_type: str, decay_type: str) -> None:
    for value, field in ((warmup_type, "warmup_type"), (decay_type, "decay_type")):
        if value not in _WSD_SHAPES:
            shapes = ", ".join(_WSD_SHAPES)
            raise ValueError(f"{field}={value!r} is not a known shape; choose one of {shapes}.")


def _resolve_min_lr_rate(optimizer: Optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate may be set; drop one from lr_scheduler_kwargs.")
    if min_lr_rate is not None:
        return _require_real(min_lr_rate, "min_lr_rate")
    if min_lr is None:
        raise ValueError("One of min_lr or min_lr_rate must be set through lr_scheduler_kwargs.")
    initial_lr = optimizer.defaults["lr"]
    if not initial_lr:
        raise ValueError("min_lr needs a non-zero initial learning rate to become a ratio; use min_lr_rate.")
    return _require_real(min_lr, "min_lr") / initial_lr


def _require_step_count(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{field} must be an int number of steps, got {type(value).__name__}: {value!r}.")
    if value < 0:
        raise ValueError(f"{field}={value} is negative; a number of steps must be >= 0.")
    return value


def _require_step_counts(num_warmup_steps, num_training_steps) -> None:
    _require_step_count(num_warmup_steps, "num_warmup_steps")
    _require_step_count(num_training_steps, "num_training_steps")


def _require_real(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field} must be a number, got {type(value).__name__}: {value!r}.")
    if math.isnan(value):
        raise ValueError(f"{field} is NaN; pass a real number.")
    return value
