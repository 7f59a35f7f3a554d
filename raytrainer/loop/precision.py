"""Mixed precision: the autocast context for forward passes and the fp16 gradient scaler."""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Precision:
    """Chosen once per run; ``autocast()`` is entered around every forward pass."""

    device_type: str
    dtype: Optional[torch.dtype]  # None: full precision
    scaler: Optional["torch.amp.GradScaler"] = None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def choose_precision(args, device: torch.device, training: bool = True) -> Precision:
    """bf16 autocast works on CPU and GPU; fp16 needs a GPU and a gradient scaler, since small
    fp16 gradients underflow to zero without loss scaling."""
    if args.bf16 or (not training and args.bf16_full_eval):
        return Precision(device.type, torch.bfloat16)
    if args.fp16 or (not training and args.fp16_full_eval):
        if device.type != "cuda":
            raise ValueError(
                f"fp16=True needs a CUDA device, but this worker runs on {device}. Use bf16=True on "
                "CPU, or give the workers GPUs (ScalingConfig(use_gpu=True))."
            )
        scaler = torch.amp.GradScaler("cuda") if training else None
        return Precision(device.type, torch.float16, scaler)
    return Precision(device.type, None)
