"""Every learning-rate schedule, stepped with a real optimizer and checked against its closed form."""

import functools
import io
import math
import pickle

import pytest
import torch

from raytrainer.enums import SchedulerType
from raytrainer.schedules import (
    TYPE_TO_SCHEDULER_FUNCTION,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_reduce_on_plateau_schedule,
    get_scheduler,
    get_wsd_schedule,
    validate_scheduler_kwargs,
)

BASE_LR = 0.5


def _optimizer(lr=BASE_LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(scheduler, optimizer, steps):
    """The lr in force at step 0, 1, ..., steps (the value each optimizer step would use)."""
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def _half_cosine(progress):
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def test_constant_keeps_the_initial_lr():
    opt = _optimizer()
    assert _lrs(get_constant_schedule(opt), opt, 5) == [BASE_LR] * 6


def test_constant_with_warmup_ramps_then_holds():
    opt = _optimizer()
    lrs = _lrs(get_constant_schedule_with_warmup(opt, num_warmup_steps=4), opt, 6)
    assert lrs == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5], abs=1e-15)
    assert lrs[4] == BASE_LR  # warmup boundary is exact


def test_linear_warmup_then_linear_decay_to_zero():
    opt = _optimizer()
    lrs = _lrs(get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6), opt, 8)
    factors = [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    assert lrs == pytest.approx([BASE_LR * f for f in factors], abs=1e-15)
    assert lrs[2] == BASE_LR


def test_linear_without_warmup_starts_at_full_lr():
    opt = _optimizer()
    lrs = _lrs(get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=4), opt, 4)
    assert lrs == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0], abs=1e-15)


def test_cosine_half_wave_after_warmup():
    opt = _optimizer()
    lrs = _lrs(get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6), opt, 7)
    expected = [0.0, 0.25] + [BASE_LR * _half_cosine(k / 4) for k in range(5)] + [BASE_LR * _half_cosine(1.25)]
    assert lrs == pytest.approx(expected, abs=1e-15)
    assert lrs[2] == BASE_LR
    assert lrs[4] == pytest.approx(0.25, abs=1e-15)  # halfway down
    assert lrs[7] > 0.0  # past the end the half-cosine rises again, as in HF


def test_cosine_full_cycle_returns_to_the_initial_lr():
    opt = _optimizer()
    lrs = _lrs(get_cosine_schedule_with_warmup(opt, 0, 4, num_cycles=1.0), opt, 4)
    assert lrs == pytest.approx([0.5, 0.25, 0.0, 0.25, 0.5], abs=1e-15)


def test_cosine_with_hard_restarts_restarts_each_cycle_and_ends_at_zero():
    opt = _optimizer()
    sched = get_cosine_with_hard_restarts_schedule_with_warmup(opt, 0, 8, num_cycles=2)
    lrs = _lrs(sched, opt, 9)
    in_cycle = [_half_cosine(p) for p in (0.0, 0.25, 0.5, 0.75)]
    expected = [BASE_LR * f for f in in_cycle + in_cycle] + [0.0, 0.0]
    assert lrs == pytest.approx(expected, abs=1e-15)


def test_hard_restarts_with_warmup():
    opt = _optimizer()
    lrs = _lrs(get_cosine_with_hard_restarts_schedule_with_warmup(opt, 2, 6), opt, 6)
    expected = [0.0, 0.25] + [BASE_LR * _half_cosine(k / 4) for k in range(4)] + [0.0]
    assert lrs == pytest.approx(expected, abs=1e-15)


def test_polynomial_decay_squares_the_remaining_fraction():
    opt = _optimizer()
    sched = get_polynomial_decay_schedule_with_warmup(opt, 2, 6, lr_end=0.1, power=2.0)
    # (0.5 - 0.1) * remaining**2 + 0.1 for remaining = 1, .75, .5, .25, 0, then lr_end.
    assert _lrs(sched, opt, 7) == pytest.approx([0.0, 0.25, 0.5, 0.325, 0.2, 0.125, 0.1, 0.1], abs=1e-15)


def test_polynomial_defaults_are_linear_to_1e_7():
    opt = _optimizer()
    lrs = _lrs(get_polynomial_decay_schedule_with_warmup(opt, 0, 2), opt, 3)
    assert lrs == pytest.approx([0.5, (0.5 - 1e-7) * 0.5 + 1e-7, 1e-7, 1e-7], rel=1e-12)


@pytest.mark.parametrize("lr_end", [0.5, 0.7])
def test_polynomial_rejects_lr_end_not_below_initial_lr(lr_end):
    expected = rf"lr_end \({lr_end}\) must be smaller than the optimizer's initial lr \(0.5\)"
    with pytest.raises(ValueError, match=expected):
        get_polynomial_decay_schedule_with_warmup(_optimizer(), 0, 10, lr_end=lr_end)


def test_inverse_sqrt_default_timescale_is_the_warmup():
    opt = _optimizer()
    lrs = _lrs(get_inverse_sqrt_schedule(opt, num_warmup_steps=4), opt, 16)
    assert lrs[:5] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5], abs=1e-15)
    # After warmup: 1 / sqrt(step / 4) = 2 / sqrt(step).
    assert lrs[4:] == pytest.approx([BASE_LR * 2 / math.sqrt(s) for s in range(4, 17)], rel=1e-14)
    assert lrs[9] == pytest.approx(BASE_LR * 2 / 3, rel=1e-14)
    assert lrs[16] == pytest.approx(BASE_LR / 2, rel=1e-14)


def test_inverse_sqrt_explicit_and_default_timescale_without_warmup():
    opt = _optimizer()
    lrs = _lrs(get_inverse_sqrt_schedule(opt, 0, timescale=10), opt, 5)
    assert lrs == pytest.approx([BASE_LR / math.sqrt((s + 10) / 10) for s in range(6)], rel=1e-14)
    opt = _optimizer()
    lrs = _lrs(get_inverse_sqrt_schedule(opt, 0), opt, 2)
    assert lrs == pytest.approx([BASE_LR / math.sqrt((s + 10_000) / 10_000) for s in range(3)], rel=1e-14)


def test_reduce_on_plateau_halves_the_lr_after_a_bad_epoch():
    opt = _optimizer()
    sched = get_reduce_on_plateau_schedule(opt, factor=0.5, patience=0)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] == 0.5
    sched.step(2.0)
    assert opt.param_groups[0]["lr"] == 0.25


@pytest.mark.parametrize("floor", [{"min_lr_rate": 0.2}, {"min_lr": 0.1}])
def test_cosine_with_min_lr_decays_to_the_floor(floor):
    opt = _optimizer()
    lrs = _lrs(get_cosine_with_min_lr_schedule_with_warmup(opt, 2, 6, **floor), opt, 6)
    expected = [0.0, 0.25] + [BASE_LR * (_half_cosine(k / 4) * 0.8 + 0.2) for k in range(5)]
    assert lrs == pytest.approx(expected, abs=1e-15)
    assert lrs[6] == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize(
    "floor, message",
    [
        ({"min_lr": 0.1, "min_lr_rate": 0.2}, "Only one of min_lr or min_lr_rate"),
        ({}, "One of min_lr or min_lr_rate must be set"),
    ],
)
def test_cosine_with_min_lr_needs_exactly_one_floor(floor, message):
    with pytest.raises(ValueError, match=message):
        get_cosine_with_min_lr_schedule_with_warmup(_optimizer(), 0, 10, **floor)


def test_cosine_warmup_with_min_lr_counts_one_step_ahead():
    opt = _optimizer()
    lrs = _lrs(get_cosine_with_min_lr_schedule_with_warmup_lr_rate(opt, 4, 10, min_lr_rate=0.1), opt, 9)
    warmup = [BASE_LR * (s + 1) / 4 for s in range(4)]
    decay = [BASE_LR * (_half_cosine((s - 3) / 6) * 0.9 + 0.1) for s in range(4, 10)]
    assert lrs == pytest.approx(warmup + decay, abs=1e-15)
    assert lrs[0] == 0.125  # first step already trains
    assert lrs[9] == pytest.approx(0.05, abs=1e-15)  # last step sits on the floor


def test_cosine_warmup_with_min_lr_explicit_warmup_rate():
    opt = _optimizer()
    sched = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(opt, 4, 10, min_lr=0.05, warmup_lr_rate=0.1)
    lrs = _lrs(sched, opt, 4)
    assert lrs[:4] == pytest.approx([0.05, 0.2, 0.35, 0.5], abs=1e-15)  # 0.1 -> 1.0 over 3 steps


def test_wsd_linear_warmup_stable_cosine_decay_with_floor():
    opt = _optimizer()
    sched = get_wsd_schedule(opt, num_warmup_steps=2, num_decay_steps=4, num_training_steps=9, min_lr_ratio=0.1)
    factors = [0.1, 0.55, 1.0, 1.0, 1.0] + [_half_cosine(k / 4) * 0.9 + 0.1 for k in range(4)] + [0.1, 0.1]
    assert _lrs(sched, opt, 10) == pytest.approx([BASE_LR * f for f in factors], abs=1e-15)


@pytest.mark.parametrize(
    "warmup_type, decay_type, warmup_factors, decay_factors",
    [
        ("cosine", "linear", [0.0, 0.5 * (1 - math.cos(math.pi / 2))], [1.0, 0.5]),
        ("1-sqrt", "1-sqrt", [0.0, 1 - math.sqrt(0.5)], [1.0, 1 - math.sqrt(0.5)]),
        ("linear", "cosine", [0.0, 0.5], [1.0, 0.0]),
    ],
)
def test_wsd_shapes(warmup_type, decay_type, warmup_factors, decay_factors):
    opt = _optimizer()
    sched = get_wsd_schedule(
        opt, 2, 2, num_stable_steps=1, warmup_type=warmup_type, decay_type=decay_type, num_cycles=1.0
    )
    expected = warmup_factors + [1.0] + decay_factors + [0.0]
    assert _lrs(sched, opt, 5) == pytest.approx([BASE_LR * f for f in expected], abs=1e-15)


def test_wsd_argument_errors():
    with pytest.raises(ValueError, match="warmup_stable_decay requires num_training_steps or num_stable_steps"):
        get_wsd_schedule(_optimizer(), 1, 1)
    expected = "decay_type='square' is not a known shape; choose one of linear, cosine, 1-sqrt"
    with pytest.raises(ValueError, match=expected):
        get_wsd_schedule(_optimizer(), 1, 1, num_training_steps=5, decay_type="square")
    with pytest.warns(UserWarning, match="num_stable_steps wins"):
        sched = get_wsd_schedule(_optimizer(), 0, 1, num_training_steps=100, num_stable_steps=1)
    assert sched.lr_lambdas[0].keywords["num_stable_steps"] == 1


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda o: get_linear_schedule_with_warmup(o, -1, 10), ValueError, "num_warmup_steps=-1 is negative"),
        (lambda o: get_linear_schedule_with_warmup(o, 0, 2.5), TypeError, "num_training_steps must be an int"),
        (lambda o: get_cosine_schedule_with_warmup(o, 0, 5, num_cycles="1"), TypeError, "num_cycles must be a number"),
        (lambda o: get_inverse_sqrt_schedule(o, 0, timescale=0), ValueError, "timescale must be > 0"),
        (lambda o: get_constant_schedule_with_warmup(o, True), TypeError, "num_warmup_steps must be an int"),
    ],
)
def test_bad_schedule_arguments_fail_early(call, error, message):
    with pytest.raises(error, match=message):
        call(_optimizer())


def test_every_scheduler_type_has_a_function():
    assert set(TYPE_TO_SCHEDULER_FUNCTION) == set(SchedulerType)


# One working (warmup, total, kwargs) per schedule, used by the dispatcher and pickling tests.
_CASES = {
    "linear": (2, 8, {}),
    "cosine": (2, 8, {"num_cycles": 0.75}),
    "cosine_with_restarts": (2, 8, {"num_cycles": 2}),
    "polynomial": (2, 8, {"lr_end": 0.01, "power": 3.0}),
    "constant": (None, None, {}),
    "constant_with_warmup": (2, None, {}),
    "inverse_sqrt": (2, None, {"timescale": 5}),
    "cosine_with_min_lr": (2, 8, {"min_lr_rate": 0.1}),
    "cosine_warmup_with_min_lr": (2, 8, {"min_lr": 0.01, "warmup_lr_rate": 0.2}),
    "warmup_stable_decay": (2, 8, {"num_decay_steps": 3, "decay_type": "linear"}),
}
_DIRECT = {
    "linear": lambda o: get_linear_schedule_with_warmup(o, 2, 8),
    "cosine": lambda o: get_cosine_schedule_with_warmup(o, 2, 8, num_cycles=0.75),
    "cosine_with_restarts": lambda o: get_cosine_with_hard_restarts_schedule_with_warmup(o, 2, 8, num_cycles=2),
    "polynomial": lambda o: get_polynomial_decay_schedule_with_warmup(o, 2, 8, lr_end=0.01, power=3.0),
    "constant": get_constant_schedule,
    "constant_with_warmup": lambda o: get_constant_schedule_with_warmup(o, 2),
    "inverse_sqrt": lambda o: get_inverse_sqrt_schedule(o, 2, timescale=5),
    "cosine_with_min_lr": lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, 2, 8, min_lr_rate=0.1),
    "cosine_warmup_with_min_lr": lambda o: get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        o, 2, 8, min_lr=0.01, warmup_lr_rate=0.2
    ),
    "warmup_stable_decay": lambda o: get_wsd_schedule(o, 2, 3, num_training_steps=8, decay_type="linear"),
}


def _dispatched(name, optimizer):
    warmup, total, kwargs = _CASES[name]
    return get_scheduler(name, optimizer, warmup, total, dict(kwargs))


@pytest.mark.parametrize("name", sorted(_CASES))
def test_dispatcher_matches_the_direct_function(name):
    via_name, direct = _optimizer(), _optimizer()
    expected = _lrs(_DIRECT[name](direct), direct, 10)
    assert _lrs(_dispatched(name, via_name), via_name, 10) == expected
    assert len(set(expected)) > 1 or name == "constant"  # the case really moves the lr


@pytest.mark.parametrize("name", sorted(set(_CASES) - {"constant"}))
def test_schedule_multiplier_is_a_partial_of_a_module_function(name):
    factor = _dispatched(name, _optimizer()).lr_lambdas[0]
    assert isinstance(factor, functools.partial)
    assert factor.func.__module__ == "raytrainer.schedules"
    assert "<locals>" not in factor.func.__qualname__


@pytest.mark.parametrize("name", sorted(_CASES))
def test_state_dict_saves_and_resumes_to_the_same_lr_sequence(name):
    straight = _optimizer()
    expected = _lrs(_dispatched(name, straight), straight, 9)

    first_opt = _optimizer()
    first = _dispatched(name, first_opt)
    head = _lrs(first, first_opt, 4)
    buffer = io.BytesIO()
    torch.save({"scheduler": first.state_dict(), "optimizer": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_opt = _optimizer()
    resumed = _dispatched(name, resumed_opt)
    resumed_opt.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert head + _lrs(resumed, resumed_opt, 5)[1:] == expected


@pytest.mark.parametrize("name", sorted(_CASES))
def test_whole_scheduler_pickles(name):
    opt = _optimizer()
    sched = _dispatched(name, opt)
    head = _lrs(sched, opt, 3)
    copy = pickle.loads(pickle.dumps(sched))
    tail = _lrs(copy, copy.optimizer, 3)
    straight = _optimizer()
    assert head + tail[1:] == _lrs(_dispatched(name, straight), straight, 6)


def test_dispatcher_builds_reduce_on_plateau_with_its_kwargs():
    sched = get_scheduler("reduce_lr_on_plateau", _optimizer(), scheduler_specific_kwargs={"patience": 7})
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert sched.patience == 7


@pytest.mark.parametrize(
    "name, warmup, total, message",
    [
        ("linear", 0, None, "linear requires num_training_steps"),
        ("cosine_with_min_lr", 0, None, "cosine_with_min_lr requires num_training_steps"),
        ("cosine", None, 10, "cosine requires num_warmup_steps"),
        ("inverse_sqrt", None, None, "inverse_sqrt requires num_warmup_steps"),
    ],
)
def test_dispatcher_names_the_missing_step_count(name, warmup, total, message):
    kwargs = {"min_lr_rate": 0.1} if "min_lr" in name else None
    with pytest.raises(ValueError, match=message):
        get_scheduler(name, _optimizer(), warmup, total, kwargs)


def test_dispatcher_accepts_the_enum_and_rejects_unknown_names():
    sched = get_scheduler(SchedulerType.CONSTANT_WITH_WARMUP, _optimizer(), num_warmup_steps=3)
    assert sched.lr_lambdas[0].keywords == {"num_warmup_steps": 3}
    with pytest.raises(ValueError, match="lr_scheduler_type='cosin' is not a valid SchedulerType"):
        get_scheduler("cosin", _optimizer(), 0, 10)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("cosine", {"num_cycle": 1}, "'cosine' has unknown key 'num_cycle'; accepted keys: num_cycles."),
        ("linear", {"power": 2}, "lr_scheduler_type='linear' has unknown key 'power'; accepted keys: none."),
        ("constant", {"num_cycles": 1}, "'constant' has unknown key 'num_cycles'; accepted keys: none."),
        ("polynomial", {"end_lr": 0.0}, "unknown key 'end_lr'; accepted keys: lr_end, power."),
        ("reduce_lr_on_plateau", {"patienc": 1}, "lr_scheduler_type='reduce_lr_on_plateau' has unknown key 'patienc'"),
        ("linear", {"num_training_steps": 5}, "lr_scheduler_type='linear' must not set 'num_training_steps'"),
        ("cosine_with_min_lr", {}, "needs exactly one of min_lr or min_lr_rate"),
        ("cosine_warmup_with_min_lr", {"min_lr": 0.1, "min_lr_rate": 0.1}, "needs exactly one of min_lr or min_lr_rate"),
        ("warmup_stable_decay", {"num_stable_steps": 3}, "warmup_stable_decay' needs num_decay_steps"),
        ("warmup_stable_decay", {"num_decay_steps": 3, "warmup_type": "exp"}, "warmup_type='exp' is not a known shape"),
    ],
)
def test_validate_scheduler_kwargs_messages(name, kwargs, message):
    with pytest.raises(ValueError) as caught:
        validate_scheduler_kwargs(name, kwargs)
    assert message in str(caught.value)
    with pytest.raises(ValueError) as caught_again:  # the dispatcher runs the same check
        get_scheduler(name, _optimizer(), 0, 10, kwargs)
    assert message in str(caught_again.value)


def test_validate_scheduler_kwargs_accepts_good_input_and_rejects_non_dicts():
    assert validate_scheduler_kwargs("cosine_with_restarts", {"num_cycles": 3}) is None
    assert validate_scheduler_kwargs("linear", None) is None
    assert validate_scheduler_kwargs("reduce_lr_on_plateau", {"mode": "max", "factor": 0.3}) is None
    with pytest.raises(TypeError, match="lr_scheduler_kwargs must be a dict, got list"):
        validate_scheduler_kwargs("linear", [("power", 1)])
