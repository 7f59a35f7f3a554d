"""Seeding every RNG a training run touches, and the stricter full-determinism mode."""

import os
import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). ``deterministic`` also asks torch for
    deterministic kernels (see ``enable_full_determinism``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def enable_full_determinism(seed: int) -> None:
    """Seed everything and force deterministic algorithms, at some cost in speed.

    cuBLAS needs its workspace size pinned for deterministic matmuls, and cuDNN's autotuner has to
    be off, or two runs may pick different kernels."""
    os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    set_seed(seed, deterministic=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def seed_from_args(args) -> None:
    """Seed before a model is built (its initial weights come from the seed): with full
    determinism when ``args.full_determinism``, else a plain ``set_seed(args.seed)``."""
    if args.full_determinism:
        enable_full_determinism(args.seed)
    else:
        set_seed(args.seed)
