"""Adafactor: steps against a plain reference, hand-computed values, state_dict round trips,
half-precision parameters, constructor errors, and how optim="adafactor" builds it."""

import copy
import math
import types

import pytest
import torch
from torch import nn

from raytrainer.adafactor import Adafactor
from raytrainer.optim import create_optimizer, get_optimizer_cls_and_kwargs, validate_optimizer_choice

TRAINER_FLAGS = {"scale_parameter": False, "relative_step": False, "warmup_init": False}


def _rms(tensor):
    return math.sqrt(float((tensor * tensor).mean()))


def _reference_adafactor(initial, grads, *, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0,
                         decay_rate=-0.8, beta1=None, weight_decay=0.0, scale_parameter=True,
                         relative_step=True, warmup_init=False):
    """Adafactor written out step by step from the paper, building the full v_hat each step."""
    p = initial.clone()
    factored = p.dim() >= 2
    row = torch.zeros(p.shape[:-1], dtype=p.dtype) if factored else None
    col = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype) if factored else None
    v = torch.zeros_like(p)
    m = torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        beta2 = 1.0 - t ** decay_rate
        g2 = g * g + eps[0]
        if factored:
            row = beta2 * row + (1 - beta2) * g2.mean(-1)
            col = beta2 * col + (1 - beta2) * g2.mean(-2)
            v_hat = row[..., :, None] * col[..., None, :] / row.mean(-1)[..., None, None]
        else:
            v = beta2 * v + (1 - beta2) * g2
            v_hat = v
        u = g / v_hat.sqrt()
        u = u / max(1.0, _rms(u) / clip_threshold)
        if relative_step:
            alpha = min(1e-6 * t if warmup_init else 1e-2, 1.0 / math.sqrt(t))
        else:
            alpha = lr
        if scale_parameter:
            alpha = alpha * max(eps[1], _rms(p))
        u = alpha * u
        if beta1 is not None:
            m = beta1 * m + (1 - beta1) * u
            u = m
        p = p - weight_decay * alpha * p - u
    return p


def _random_grads(shape, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    # Per-step scales of very different size make the second-moment averaging visible.
    scales = [1.0, 0.01, 5.0, 0.3, 2.0, 0.05]
    return [scales[i % 6] * torch.randn(shape, generator=generator, dtype=torch.float64) for i in range(steps)]


def _run_adafactor(initial, grads, **kwargs):
    param = nn.Parameter(initial.clone())
    optimizer = Adafactor([param], **kwargs)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    return param.detach(), optimizer


CASES = {
    "vector-trainer": ((5,), {"lr": 0.01, **TRAINER_FLAGS}),
    "matrix-trainer": ((4, 3), {"lr": 0.01, **TRAINER_FLAGS}),
    "matrix-beta1-decay": ((4, 3), {"lr": 0.02, "beta1": 0.9, "weight_decay": 0.1, **TRAINER_FLAGS}),
    "vector-beta1-decay-clip": ((6,), {"lr": 0.02, "beta1": 0.9, "weight_decay": 0.1,
                                       "clip_threshold": 0.5, **TRAINER_FLAGS}),
    "matrix-clip": ((3, 5), {"lr": 0.05, "clip_threshold": 0.3, **TRAINER_FLAGS}),
    "3d-beta1": ((2, 3, 4), {"lr": 0.01, "beta1": 0.5, "weight_decay": 0.2, **TRAINER_FLAGS}),
    "scalar": ((), {"lr": 0.1, "weight_decay": 0.3, **TRAINER_FLAGS}),
    "decay-rate": ((4, 3), {"lr": 0.01, "decay_rate": -0.5, **TRAINER_FLAGS}),
    "hf-defaults-matrix": ((4, 3), {}),
    "hf-defaults-vector": ((5,), {"beta1": 0.8, "weight_decay": 0.01}),
    "warmup-init": ((4, 3), {"warmup_init": True, "beta1": 0.9, "weight_decay": 0.1}),
    "scaled-fixed-lr": ((5,), {"lr": 0.05, "scale_parameter": True, "relative_step": False}),
    "large-eps": ((4, 3), {"eps": (0.5, 2.0), "beta1": 0.3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_steps_match_the_reference(case):
    shape, kwargs = CASES[case]
    initial = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = _random_grads(shape, steps=6, seed=3)
    result, _ = _run_adafactor(initial, grads, **kwargs)
    expected = _reference_adafactor(initial, grads, **kwargs)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-13)
    assert not torch.allclose(result, initial, rtol=0, atol=1e-6)  # the steps really moved it


def test_vector_step_by_hand():
    # Step 1 has beta2 = 0, so v = g**2 and the update is sign(g), whose RMS is 1 (no clipping).
    initial, grad = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -2.0])
    result, _ = _run_adafactor(initial, [grad], lr=0.1, **TRAINER_FLAGS)
    torch.testing.assert_close(result, torch.tensor([0.9, 2.1]))
    # Decay uses the pre-step weights: p - p * 0.5 * 0.1 - update.
    result, _ = _run_adafactor(initial, [grad], lr=0.1, weight_decay=0.5, **TRAINER_FLAGS)
    torch.testing.assert_close(result, torch.tensor([0.85, 2.0]))


def test_factored_step_by_hand_and_clipping():
    # g**2 = [[1, 4], [9, 16]]: row means [2.5, 12.5], column means [5, 10], mean row 7.5, so
    # v_hat = [[5/3, 10/3], [25/3, 50/3]] and the update squared is [[0.6, 1.2], [1.08, 0.96]].
    grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    update = torch.tensor([[0.6, 1.2], [1.08, 0.96]]).sqrt()  # RMS(update) = sqrt(0.96) < 1
    result, _ = _run_adafactor(torch.zeros(2, 2), [grad], lr=1.0, **TRAINER_FLAGS)
    torch.testing.assert_close(result, -update)
    result, _ = _run_adafactor(torch.zeros(2, 2), [grad], lr=1.0, clip_threshold=0.5, **TRAINER_FLAGS)
    torch.testing.assert_close(result, -update * (0.5 / math.sqrt(0.96)))


def test_relative_step_falls_as_one_over_sqrt_t_after_step_10000():
    param = nn.Parameter(torch.tensor([2.0, 2.0]))
    optimizer = Adafactor([param])  # HF defaults: relative steps scaled by RMS(param) = 2
    optimizer.state[param]["step"] = 39_999
    param.grad = torch.tensor([1.0, -1.0])
    optimizer.step()
    # Step size min(1e-2, 1/sqrt(40000)) * 2 = 0.01; the clipped update is sign(grad).
    torch.testing.assert_close(param.detach(), torch.tensor([1.99, 2.01]))


def test_zero_gradients_leave_parameters_finite_and_unchanged():
    # eps1 keeps the second moments of all-zero gradients (a whole row here) away from 0.
    for initial in (torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])):
        grads = [torch.zeros_like(initial), torch.zeros_like(initial)]
        result, _ = _run_adafactor(initial, grads, lr=0.1, beta1=0.9, **TRAINER_FLAGS)
        assert torch.equal(result, initial)


def test_second_moment_state_and_decay_rate():
    g1, g2 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, -1.0])
    _, optimizer = _run_adafactor(torch.zeros(3), [g1, g2], lr=0.1, **TRAINER_FLAGS)
    state = next(iter(optimizer.state.values()))
    beta2 = 1.0 - 2.0 ** -0.8  # 0.42565...
    torch.testing.assert_close(state["exp_avg_sq"], beta2 * g1**2 + (1 - beta2) * g2**2)
    assert state["step"] == 2 and set(state) == {"step", "exp_avg_sq"}


@pytest.mark.parametrize(
    "shape, row_shape, col_shape", [((4, 3), (4,), (3,)), ((2, 3, 5), (2, 3), (2, 5))]
)
def test_factored_state_shapes(shape, row_shape, col_shape):
    grads = _random_grads(shape, steps=1, seed=0)
    _, optimizer = _run_adafactor(torch.zeros(shape, dtype=torch.float64), grads, lr=0.1, beta1=0.9, **TRAINER_FLAGS)
    state = next(iter(optimizer.state.values()))
    assert set(state) == {"step", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg"}
    assert state["exp_avg_sq_row"].shape == row_shape and state["exp_avg_sq_col"].shape == col_shape
    assert state["exp_avg"].shape == shape


def _two_group_optimizer(model):
    return Adafactor(
        [{"params": [model.weight], "weight_decay": 0.1}, {"params": [model.bias], "weight_decay": 0.0}],
        lr=0.05, beta1=0.9, **TRAINER_FLAGS,
    )


def _train_steps(model, optimizer, seeds):
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        model.weight.grad = torch.randn(model.weight.shape, generator=generator)
        model.bias.grad = torch.randn(model.bias.shape, generator=generator)
        optimizer.step()


def test_state_dict_round_trip_continues_identically(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = _two_group_optimizer(model)
    _train_steps(model, optimizer, seeds=[1, 2, 3])
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    resumed_model = copy.deepcopy(model)
    fresh_model = copy.deepcopy(model)

    saved = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    for state in saved["state"].values():
        assert all(torch.is_tensor(v) or type(v) is int for v in state.values()), state
    # Different hyper-parameters on purpose: loading must restore the saved ones.
    resumed = Adafactor([{"params": [resumed_model.weight]}, {"params": [resumed_model.bias]}],
                        lr=1.0, weight_decay=0.5, **TRAINER_FLAGS)
    resumed.load_state_dict(saved)
    assert [g["weight_decay"] for g in resumed.param_groups] == [0.1, 0.0]
    assert resumed.param_groups[0]["beta1"] == 0.9 and resumed.param_groups[0]["lr"] == 0.05

    _train_steps(model, optimizer, seeds=[4, 5])
    _train_steps(resumed_model, resumed, seeds=[4, 5])
    assert torch.equal(resumed_model.weight, model.weight) and torch.equal(resumed_model.bias, model.bias)
    assert resumed.state[resumed_model.weight]["step"] == 5
    # Without the saved statistics the same two steps land elsewhere, so the check above has teeth.
    _train_steps(fresh_model, _two_group_optimizer(fresh_model), seeds=[4, 5])
    assert not torch.allclose(fresh_model.weight, model.weight)


def test_half_precision_parameters_keep_float32_statistics(tmp_path):
    initial = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    grad = torch.tensor([[1.0, 2.0, -3.0], [0.5, -0.5, 4.0]])
    param = nn.Parameter(initial.to(torch.bfloat16))
    optimizer = Adafactor([param], lr=0.1, **TRAINER_FLAGS)
    param.grad = grad.to(torch.bfloat16)
    optimizer.step()
    expected = _reference_adafactor(initial.to(torch.bfloat16).float(), [grad.to(torch.bfloat16).float()],
                                    lr=0.1, **TRAINER_FLAGS)
    assert param.dtype == torch.bfloat16 and torch.equal(param.detach(), expected.to(torch.bfloat16))
    row = optimizer.state[param]["exp_avg_sq_row"]
    assert row.dtype == torch.float32

    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    resumed = Adafactor([nn.Parameter(param.detach().clone())], lr=0.1, **TRAINER_FLAGS)
    resumed.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    loaded_row = next(iter(resumed.state.values()))["exp_avg_sq_row"]
    assert loaded_row.dtype == torch.float32 and torch.equal(loaded_row, row)


def test_closure_and_parameters_without_grad():
    used, unused = nn.Parameter(torch.tensor([1.0, -1.0])), nn.Parameter(torch.tensor([3.0]))
    optimizer = Adafactor([used, unused], lr=0.1, **TRAINER_FLAGS)

    def closure():
        optimizer.zero_grad()
        loss = (used * torch.tensor([2.0, 1.0])).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == pytest.approx(1.0)
    torch.testing.assert_close(used.detach(), torch.tensor([0.9, -1.1]))
    assert unused.item() == 3.0 and unused not in optimizer.state


def test_lr_scheduler_drives_the_fixed_lr():
    param = nn.Parameter(torch.tensor([1.0, 1.0]))
    optimizer = Adafactor([param], lr=0.2, **TRAINER_FLAGS)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.25)
    param.grad = torch.tensor([1.0, -1.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([0.95, 1.05]))  # step size 0.2 * 0.25


def test_sparse_gradients_are_refused():
    param = nn.Parameter(torch.zeros(3))
    param.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="Adafactor does not support sparse gradients"):
        Adafactor([param], lr=0.1, **TRAINER_FLAGS).step()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.01}, r"Adafactor: lr=0.01 cannot be combined with relative_step=True"),
        ({"warmup_init": True, "relative_step": False, "lr": 0.1},
         r"Adafactor: warmup_init=True needs relative_step=True"),
        ({"relative_step": False}, r"Adafactor: lr must be a number >= 0 when relative_step=False, got None"),
        ({"relative_step": False, "lr": -0.1}, r"lr must be a number >= 0 when relative_step=False, got -0.1"),
        ({"eps": 1e-3}, r"Adafactor: eps must be a pair \(eps1, eps2\) of numbers >= 0 .* got 0.001"),
        ({"eps": (1e-30, -1.0)}, r"eps must be a pair .* got \(1e-30, -1.0\)"),
        ({"clip_threshold": 0.0}, r"Adafactor: clip_threshold must be a number > 0 .* got 0.0"),
        ({"decay_rate": 0.8}, r"Adafactor: decay_rate must be a number <= 0, .* got 0.8"),
        ({"beta1": 1.0}, r"Adafactor: beta1 must be None or a number in \[0, 1\), got 1.0"),
        ({"weight_decay": -0.1}, r"Adafactor: weight_decay must be a number >= 0, got -0.1"),
        ({"scale_parameter": "yes"}, r"Adafactor: scale_parameter must be True or False, got 'yes'"),
    ],
)
def test_bad_hyper_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Adafactor([nn.Parameter(torch.zeros(2))], **kwargs)


def test_param_group_overrides_are_checked():
    optimizer = Adafactor([nn.Parameter(torch.zeros(2))])  # relative steps, lr=None
    with pytest.raises(ValueError, match="Adafactor: lr=0.5 cannot be combined with relative_step=True"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "lr": 0.5})
    optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "lr": 0.5, "relative_step": False})
    assert [g["relative_step"] for g in optimizer.param_groups] == [True, False]


def _args(**overrides):
    values = dict(optim="adafactor", optim_args=None, learning_rate=0.01, weight_decay=0.1,
                  adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_optim_adafactor_is_built_like_the_hf_trainer():
    model = nn.Linear(3, 2)
    optimizer = create_optimizer(model, _args())
    assert type(optimizer) is Adafactor
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    group = optimizer.param_groups[0]
    assert (group["lr"], group["scale_parameter"], group["relative_step"], group["warmup_init"]) == (
        0.01, False, False, False
    )
    assert (group["eps"], group["clip_threshold"], group["decay_rate"], group["beta1"]) == (
        (1e-30, 1e-3), 1.0, -0.8, None
    )


def test_optim_args_override_adafactor_settings():
    args = _args(optim_args="beta1=0.9,clip_threshold=0.5,scale_parameter=true,lr=0.2")
    assert get_optimizer_cls_and_kwargs(args) == (
        Adafactor,
        {"lr": 0.2, "scale_parameter": True, "relative_step": False, "warmup_init": False,
         "beta1": 0.9, "clip_threshold": 0.5},
    )


@pytest.mark.parametrize("key", ["relative_step", "warmup_init"])
def test_optim_args_cannot_switch_on_relative_steps(key):
    with pytest.raises(ValueError, match=f"optim_args {key}=True is not supported with optim='adafactor'"):
        validate_optimizer_choice(_args(optim_args=f"{key}=true"))


@pytest.mark.parametrize(
    "optim_args, message",
    [
        ("clip_threshold=0", "optim='adafactor' with optim_args='clip_threshold=0': Adafactor: clip_threshold"),
        ("eps=0.1", r"optim='adafactor' with optim_args='eps=0.1': Adafactor: eps must be a pair"),
        ("beta1=1.5", r"optim_args='beta1=1.5': Adafactor: beta1 must be None or a number in \[0, 1\)"),
    ],
)
def test_bad_adafactor_optim_args_fail_in_validation(optim_args, message):
    with pytest.raises(ValueError, match=message):
        validate_optimizer_choice(_args(optim_args=optim_args))
