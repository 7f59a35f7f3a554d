"""The training job that ``ray_overhead.py`` runs on Ray Train workers, in a module the workers can
import (the benchmark puts this folder on their ``PYTHONPATH``).

It holds the model, the dataset, the hand-written reference loop and the rank-0 clock, and imports
only torch and (inside the loop) Ray: a raytrainer import here would slow the reference's workers.
raytrainer's own clock callback lives in ``_ray_job_callback.py`` for that reason.
"""

import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

SEED = 42
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
BATCH_SIZE = 64  # per worker
FEATURES = 128
HIDDEN = 512


class WideRegression(Dataset):
    """Random vectors with a noisy linear target, as dicts ``{"x", "labels"}`` (map-style)."""

    def __init__(self, size: int = 8192, features: int = FEATURES, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, features, generator=generator)
        weights = torch.randn(features, 1, generator=generator) / features**0.5
        self.labels = self.x @ weights + 0.1 * torch.randn(size, 1, generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.labels[index]}


class WideMLP(nn.Module):
    """features -> hidden -> hidden -> 1: about 0.33 M parameters, so a step with batch 64 on one
    CPU thread (plus DDP's gradient all-reduce) takes some 5-20 ms, long enough to time."""

    def __init__(self, features: int = FEATURES, hidden: int = HIDDEN):
        super().__init__()
        self.inner = nn.Linear(features, hidden)
        self.middle = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x, labels=None):
        prediction = self.out(torch.relu(self.middle(torch.relu(self.inner(x)))))
        if labels is None:
            return {"logits": prediction}
        return {"loss": F.mse_loss(prediction, labels), "logits": prediction}


class RankZeroClock:
    """Wall-clock stamps (``time.time``, comparable with the driver's) of one run, kept on every
    rank but written only by rank 0, as JSON. Ray Train V2 drops metrics reported without a
    checkpoint, so the driver reads this file instead. Step ends also get the worker process's
    CPU time: other processes on a shared machine stretch wall time, much less this."""

    def __init__(self, path: str):
        self.path = path
        self.marks = {}
        self.step_ends = []
        self.step_cpu = []

    def mark(self, name: str) -> None:
        self.marks[name] = time.time()

    def step_end(self) -> None:
        self.step_ends.append(time.time())
        self.step_cpu.append(time.process_time())

    def write(self) -> None:
        record = {"marks": self.marks, "step_ends": self.step_ends, "step_cpu": self.step_cpu, "pid": os.getpid(),
                  "torch_threads": torch.get_num_threads()}
        with open(self.path, "w") as handle:
            json.dump(record, handle)


def read_clock(path: str) -> dict:
    """What rank 0 wrote; a missing file means the run never reached its end on rank 0."""
    if not os.path.exists(path):
        raise RuntimeError(f"rank 0 wrote no timestamps to {path}: the run did not finish its loop there.")
    with open(path) as handle:
        return json.load(handle)


def decay_groups(model: nn.Module) -> list:
    """HF's AdamW grouping written out: no weight decay on biases and LayerNorm weights."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or id(param) in norm_ids else decay).append(param)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def raw_train_loop(config: dict) -> None:
    """The reference: what a user writes for a raw ``TorchTrainer`` (``prepare_model``,
    ``prepare_data_loader``), with the Trainer's maths: AdamW with decay groups, a linear
    schedule without warm-up, clipping at ``MAX_GRAD_NORM``, ``max_steps`` optimizer steps."""
    clock = RankZeroClock(config["clock_path"])
    clock.mark("worker_start")
    import ray.train
    import ray.train.torch

    is_rank_zero = ray.train.get_context().get_world_rank() == 0
    max_steps = config["max_steps"]
    torch.manual_seed(SEED)
    model = ray.train.torch.prepare_model(config["model"])
    optimizer = torch.optim.AdamW(decay_groups(model), lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (max_steps - step) / max_steps))
    loader = DataLoader(config["dataset"], batch_size=BATCH_SIZE, shuffle=True,
                        generator=torch.Generator().manual_seed(SEED))
    loader = ray.train.torch.prepare_data_loader(loader)
    model.train()
    loss_sum, step, epoch = torch.zeros(()), 0, 0
    clock.mark("loop_start")
    while step < max_steps:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # DistributedSampler: a new shuffle every epoch
        for batch in loader:
            loss = model(**batch)["loss"]
            loss.backward()
            loss_sum += loss.detach()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            model.zero_grad(set_to_none=True)
            step += 1
            clock.step_end()
            if step == max_steps:
                break
        epoch += 1
    torch.distributed.all_reduce(loss_sum)  # the mean loss over ranks, as the Trainer reports it
    clock.mark("worker_end")
    if is_rank_zero:
        clock.write()
    ray.train.report({"train_loss": loss_sum.item() / (max_steps * ray.train.get_context().get_world_size())})
