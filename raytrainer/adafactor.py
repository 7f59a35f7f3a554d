"""Adafactor: the memory-light adaptive optimizer of Shazeer & Stern (2018).

This is the optimizer ``optim="adafactor"`` selects, with the constructor arguments and semantics
of the Hugging Face ``Adafactor`` class:

* The second moment of a parameter with two or more dimensions is kept *factored*: one running
  average per row (mean of ``g**2 + eps1`` over the last dimension) and one per column (mean over
  the second-to-last dimension). Their outer product divided by the mean of the row statistic
  approximates the full per-element average at the cost of ``rows + columns`` numbers.
  Vectors and scalars keep the full per-element average.
* The averaging rate grows with the step count ``t``: ``beta2_t = 1 - t ** decay_rate``.
* The preconditioned update ``g / sqrt(v)`` is shrunk whenever its root-mean-square exceeds
  ``clip_threshold``, then multiplied by the step size.
* The step size is ``lr`` (``relative_step=False``) or ``min(1e-2, 1/sqrt(t))``
  (``relative_step=True``; with ``warmup_init=True`` the ``1e-2`` becomes ``1e-6 * t``), and with
  ``scale_parameter=True`` it is further multiplied by ``max(eps2, RMS(parameter))``.
* ``beta1`` (off by default) adds a running average of the clipped, scaled updates.
* Weight decay is decoupled: ``p -= p * weight_decay * step_size``.

Half-precision (fp16/bf16) parameters are updated through a float32 copy, and their optimizer
statistics stay in float32, including after ``load_state_dict``.
"""

from __future__ import annotations

import itertools
import math
import numbers

import torch
from torch.optim import Optimizer

_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Step-size constants of the paper's relative-step schedule.
_RELATIVE_STEP_CAP = 1e-2
_WARMUP_SLOPE = 1e-6


class Adafactor(Optimizer):
    """Adafactor optimizer (factored second moments, update clipping, optional relative steps).

    Args:
        params: parameters or parameter-group dicts, as for any torch optimizer.
        lr: fixed step size. Must be ``None`` when ``relative_step=True`` (the step size is then
            computed from the step count) and a number >= 0 otherwise.
        eps: ``(eps1, eps2)``: ``eps1`` is added to the squared gradient before averaging,
            ``eps2`` is the smallest parameter scale used when ``scale_parameter=True``.
        clip_threshold: largest root-mean-square an update may have before it is scaled down.
        decay_rate: exponent of the second-moment averaging rate ``1 - t ** decay_rate``; <= 0.
        beta1: rate of a running average of updates (momentum); ``None`` keeps no such average.
        weight_decay: decoupled weight decay, multiplied by the step size.
        scale_parameter: multiply the step size by the parameter's RMS (at least ``eps2``).
        relative_step: compute the step size from the step count instead of using ``lr``.
        warmup_init: start the relative step size at ``1e-6`` and grow it linearly; needs
            ``relative_step=True``.
    """

    def __init__(
        self,
        params,
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
    ):
        defaults = {
            "lr": lr,
            "eps": eps,
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
            "scale_parameter": scale_parameter,
            "relative_step": relative_step,
            "warmup_init": warmup_init,
        }
        _check_hyper_parameters(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a parameter group, refusing hyper-parameters (own or inherited) that do not fit."""
        _check_hyper_parameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; return ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update_parameter(param, group)
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict, keeping float32 statistics for half-precision parameters.

        torch casts every floating-point state tensor to its parameter's dtype on load, which
        would round the float32 statistics of fp16/bf16 parameters; they are restored here.
        """
        super().load_state_dict(state_dict)
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, param in zip(saved_ids, params):
            if param.dtype not in _HALF_DTYPES or saved_id not in state_dict["state"]:
                continue
            for key, value in state_dict["state"][saved_id].items():
                if torch.is_tensor(value) and value.is_floating_point():
                    self.state[param][key] = value.to(device=param.device, dtype=torch.float32)

    def _update_parameter(self, param: torch.Tensor, group: dict) -> None:
        if param.grad.is_sparse:
            raise RuntimeError(
                "Adafactor does not support sparse gradients; use dense gradients (e.g. "
                "nn.Embedding(sparse=False)) or an optimizer such as torch.optim.SparseAdam."
            )
        compute_dtype = torch.float32 if param.dtype in _HALF_DTYPES else param.dtype
        grad = param.grad.to(compute_dtype)
        weights = param if param.dtype == compute_dtype else param.to(compute_dtype)
        state = self._state_for(param, grad, group)
        state["step"] += 1
        step_size = _step_size(group, state["step"], weights)
        update = _preconditioned_gradient(grad, state, group)
        update.div_((_rms(update) / group["clip_threshold"]).clamp(min=1.0))
        update.mul_(step_size)
        if group["beta1"] is not None:
            state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1.0 - group["beta1"])
            update = state["exp_avg"]
        if group["weight_decay"] != 0:
            weights.add_(weights, alpha=-group["weight_decay"] * step_size)
        weights.sub_(update)
        if weights is not param:
            param.copy_(weights)

    def _state_for(self, param: torch.Tensor, grad: torch.Tensor, group: dict) -> dict:
        """Return the parameter's state, creating missing statistics and moving existing ones to
        the gradient's device and compute dtype (a loaded checkpoint may sit elsewhere)."""
        state = self.state[param]
        state.setdefault("step", 0)
        shape = grad.shape
        wanted = {}
        if len(shape) >= 2:
            wanted["exp_avg_sq_row"] = shape[:-1]
            wanted["exp_avg_sq_col"] = shape[:-2] + shape[-1:]
        else:
            wanted["exp_avg_sq"] = shape
        if group["beta1"] is not None:
            wanted["exp_avg"] = shape
        for key, key_shape in wanted.items():
            if key not in state:
                state[key] = torch.zeros(key_shape, dtype=grad.dtype, device=grad.device)
            else:
                state[key] = state[key].to(dtype=grad.dtype, device=grad.device)
        return state


def _preconditioned_gradient(grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
    """Fold ``grad`` into the second-moment averages and return ``grad / sqrt(v_hat)`` (new tensor)."""
    beta2 = 1.0 - math.pow(state["step"], group["decay_rate"])
    squared = grad.square().add_(group["eps"][0])
    if grad.dim() < 2:
        state["exp_avg_sq"].mul_(beta2).add_(squared, alpha=1.0 - beta2)
        return state["exp_avg_sq"].rsqrt().mul_(grad)
    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
    row.mul_(beta2).add_(squared.mean(dim=-1), alpha=1.0 - beta2)
    col.mul_(beta2).add_(squared.mean(dim=-2), alpha=1.0 - beta2)
    # v_hat = outer(row, col) / mean(row); its inverse square root is built from the two factors
    # so the full-size estimate is never stored.
    row_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
    col_factor = col.rsqrt().unsqueeze(-2)
    return (row_factor * col_factor).mul_(grad)


def _step_size(group: dict, step: int, weights: torch.Tensor) -> float:
    if group["relative_step"]:
        cap = _WARMUP_SLOPE * step if group["warmup_init"] else _RELATIVE_STEP_CAP
        size = min(cap, 1.0 / math.sqrt(step))
    else:
        size = group["lr"]
    if group["scale_parameter"]:
        size = size * max(group["eps"][1], _rms(weights).item())
    return size


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor) / math.sqrt(tensor.numel())


def _check_hyper_parameters(group: dict) -> None:
    """Raise ValueError for a parameter group whose settings cannot work together."""
    for flag in ("scale_parameter", "relative_step", "warmup_init"):
        if not isinstance(group[flag], bool):
            raise ValueError(f"Adafactor: {flag} must be True or False, got {group[flag]!r}.")
    _check_step_size_settings(group)
    _check_eps(group["eps"])
    if _finite_number(group["clip_threshold"]) is None or group["clip_threshold"] <= 0:
        raise ValueError(
            f"Adafactor: clip_threshold must be a number > 0 (the largest update RMS allowed), "
            f"got {group['clip_threshold']!r}."
        )
    if _finite_number(group["decay_rate"]) is None or group["decay_rate"] > 0:
        raise ValueError(
            "Adafactor: decay_rate must be a number <= 0, since the second-moment rate at step t "
            f"is 1 - t**decay_rate (the paper uses -0.8); got {group['decay_rate']!r}."
        )
    beta1 = group["beta1"]
    if beta1 is not None and (_finite_number(beta1) is None or not 0.0 <= beta1 < 1.0):
        raise ValueError(f"Adafactor: beta1 must be None or a number in [0, 1), got {beta1!r}.")
    if _finite_number(group["weight_decay"]) is None or group["weight_decay"] < 0:
        raise ValueError(f"Adafactor: weight_decay must be a number >= 0, got {group['weight_decay']!r}.")


def _check_step_size_settings(group: dict) -> None:
    lr = group["lr"]
    if group["relative_step"] and lr is not None:
        raise ValueError(
            f"Adafactor: lr={lr!r} cannot be combined with relative_step=True, which computes the "
            "step size itself; pass lr=None to keep relative steps, or relative_step=False to use lr."
        )
    if group["warmup_init"] and not group["relative_step"]:
        raise ValueError(
            "Adafactor: warmup_init=True needs relative_step=True (it warms up the relative step "
            "size); set relative_step=True with lr=None, or warmup_init=False."
        )
    if not group["relative_step"] and (_finite_number(lr) is None or lr < 0):
        raise ValueError(
            f"Adafactor: lr must be a number >= 0 when relative_step=False, got {lr!r}; pass lr=..., "
            "or relative_step=True to let Adafactor choose the step size."
        )


def _check_eps(eps) -> None:
    is_pair = isinstance(eps, (tuple, list)) and len(eps) == 2
    if not is_pair or any(_finite_number(e) is None or e < 0 for e in eps):
        raise ValueError(
            "Adafactor: eps must be a pair (eps1, eps2) of numbers >= 0 (eps1 is added to the "
            f"squared gradient, eps2 is the smallest parameter scale), got {eps!r}."
        )


def _finite_number(value) -> float | None:
    """``value`` when it is a finite real number (bools excluded), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return value
