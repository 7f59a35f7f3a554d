"""Ray Data streaming (parquet on disk) against an in-memory torch DataLoader, feeding the same small
model through ``raytrainer.Trainer``, side by side in one process.

    python benchmarks/streaming.py [--quick] [--json results.json] [--rounds 3] [--rows 262144]

Implementations (the same rows, the same MLP, raytrainer in Ray Train local mode):

- ``in_memory``: a map-style torch Dataset of tensors; raytrainer builds its DataLoader (seeded
  per-epoch shuffle, ``default_data_collator``, no worker processes).
- ``ray_stream``: ``raytrainer.stream(<parquet folder>)``: Ray Data reads the files from disk,
  shuffled file order plus a local shuffle buffer (the defaults).
- ``ray_stream_ordered``: the same stream with ``shuffle=False``.

Per run: the time to first batch (from ``get_train_dataloader()`` to the first batch out of it: for
a stream that is Ray Data's start, file listing and first read) and the steady-state rows per second
(wall clock between the end of step ``skip`` and the last step end, stamped by a callback; wall, not
CPU, time because Ray Data reads in other processes). Rounds interleave the implementations in a
rotating order; the table shows medians, each ratio is the median of per-round ratios.
Target: ``ray_stream`` steady-state rows/s at least 0.9x ``in_memory``.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from ._common import (
        format_table,
        paired_ratio,
        publish,
        quiet_library_logs,
        quiet_stdout,
        summarise,
    )
else:  # run as a script: benchmarks/ is on sys.path
    from _common import (
        format_table,
        paired_ratio,
        publish,
        quiet_library_logs,
        quiet_stdout,
        summarise,
    )

SEED = 42
TARGET_RATIO = 0.9
IMPLEMENTATIONS = ("in_memory", "ray_stream", "ray_stream_ordered")


@dataclass(frozen=True)
class Plan:
    rows: int
    features: int
    files: int
    batch_size: int
    max_steps: int
    skip_steps: int
    rounds: int


PLANS = {
    "full": Plan(rows=262144, features=32, files=16, batch_size=256, max_steps=600, skip_steps=100, rounds=3),
    "quick": Plan(rows=32768, features=32, files=8, batch_size=256, max_steps=120, skip_steps=20, rounds=1),
}


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small data set and one round: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 with --quick)")
    parser.add_argument("--rows", type=int, help="rows in the data set (default 262144, 32768 with --quick)")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 600, 120 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every implementation")
    return parser.parse_args(argv)


def plan_from(options: argparse.Namespace) -> Plan:
    """The plan of ``--quick`` or the full run, with the command line's overrides, checked."""
    plan = PLANS["quick" if options.quick else "full"]
    overrides = {"rounds": options.rounds, "rows": options.rows, "max_steps": options.steps}
    for name, value in overrides.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    plan = Plan(**{**asdict(plan), **{k: v for k, v in overrides.items() if v is not None}})
    if plan.max_steps <= plan.skip_steps + 1:
        raise ValueError(f"steps must be larger than {plan.skip_steps + 1}: the first {plan.skip_steps} are the "
                         f"warm-up, left out of the steady state.")
    if plan.rows < plan.files * plan.batch_size:
        raise ValueError(f"rows must be at least {plan.files * plan.batch_size} ({plan.files} files of at least "
                         f"one batch of {plan.batch_size}), got {plan.rows}.")
    return plan


# ---------------------------------------------------------------------------------- data and model
def make_rows(rows: int, features: int, seed: int = SEED) -> tuple:
    """Features and a noisy linear target, float32, fixed by the seed."""
    generator = np.random.default_rng(seed)
    x = generator.standard_normal((rows, features), dtype=np.float32)
    weights = generator.standard_normal((features, 1), dtype=np.float32)
    y = x @ weights + np.float32(0.1) * generator.standard_normal((rows, 1), dtype=np.float32)
    return x, y


def write_parquet(folder: str, x: np.ndarray, y: np.ndarray, files: int) -> list:
    """The rows as ``files`` parquet files (features as a fixed-size list column); returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    paths = []
    for number, part in enumerate(np.array_split(np.arange(len(x)), files)):
        table = pa.table({
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x[part].ravel()), x.shape[1]),
            "labels": pa.FixedSizeListArray.from_arrays(pa.array(y[part].ravel()), y.shape[1]),
        })
        paths.append(os.path.join(folder, f"part-{number:03d}.parquet"))
        pq.write_table(table, paths[-1])
    return paths


class TensorRows(torch.utils.data.Dataset):
    """The in-memory side: the same rows as dicts of tensors."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


class MLPRegressor(nn.Module):
    def __init__(self, features: int, hidden: int = 64):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x, labels=None):
        prediction = self.out(torch.relu(self.hidden(x)))
        if labels is None:
            return {"logits": prediction}
        return {"loss": F.mse_loss(prediction, labels), "logits": prediction}


# ---------------------------------------------------------------------------------- measuring
def steady_rows_per_second(step_ends: list, batch_size: int, skip_steps: int) -> float:
    """Rows per second between the end of step ``skip_steps`` and the last step end."""
    if skip_steps < 1 or len(step_ends) <= skip_steps:
        raise ValueError(f"need more than {skip_steps} step ends, got {len(step_ends)}; make the run longer.")
    span = step_ends[-1] - step_ends[skip_steps - 1]
    return batch_size * (len(step_ends) - skip_steps) / span


def first_batch_seconds(loader) -> float:
    """Seconds from asking ``loader`` for batches to holding the first one (the iterator is then closed)."""
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    elapsed = time.perf_counter() - start
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return elapsed


def _train_source(impl: str, data: dict):
    import raytrainer

    if impl == "in_memory":
        return data["tensors"]
    return raytrainer.stream(data["folder"], shuffle=impl == "ray_stream")


def run_once(impl: str, plan: Plan, data: dict, output_dir: str) -> dict:
    """One implementation's run: time to first batch, then ``max_steps`` steps with a clock."""
    import raytrainer

    step_ends = []

    class WallClock(raytrainer.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    args = raytrainer.TrainingArguments(
        output_dir=output_dir, max_steps=plan.max_steps, per_device_train_batch_size=plan.batch_size,
        learning_rate=1e-3, seed=SEED, logging_steps=plan.max_steps, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True)
    torch.manual_seed(SEED)
    trainer = raytrainer.Trainer(model=MLPRegressor(plan.features), args=args, train_dataset=_train_source(impl, data),
                                 callbacks=[WallClock()])
    first = first_batch_seconds(trainer.get_train_dataloader())
    with quiet_stdout():
        trainer.train()
    if len(step_ends) != plan.max_steps:
        raise RuntimeError(f"{impl} ran {len(step_ends)} steps, expected {plan.max_steps}.")
    return {"first_batch_s": first, "rows_per_s": steady_rows_per_second(step_ends, plan.batch_size, plan.skip_steps)}


def run_benchmark(plan: Plan, implementations=IMPLEMENTATIONS) -> dict:
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    x, y = make_rows(plan.rows, plan.features)
    runs = {impl: [] for impl in implementations}
    try:
        with quiet_library_logs(), tempfile.TemporaryDirectory(prefix="streaming_bench_") as folder:
            data = {"tensors": TensorRows(x, y), "folder": os.path.join(folder, "rows")}
            write_parquet(data["folder"], x, y, plan.files)
            for impl in implementations:  # warm-up: imports, Ray Data's first start, the page cache
                run_once(impl, Plan(**{**asdict(plan), "max_steps": plan.skip_steps + 2}), data, folder)
            for round_index in range(plan.rounds):
                shift = round_index % len(implementations)
                for impl in implementations[shift:] + implementations[:shift]:
                    runs[impl].append(run_once(impl, plan, data, folder))
    finally:
        if started_ray:
            ray.shutdown()
    return summarise_runs(plan, runs)


def summarise_runs(plan: Plan, runs: dict) -> dict:
    """Medians per implementation and the ratios to ``in_memory`` (median of per-round ratios)."""
    implementations = {impl: {key: summarise([run[key] for run in values]) for key in ("first_batch_s", "rows_per_s")}
                       for impl, values in runs.items()}
    ratios = {}
    if "in_memory" in runs:
        base = [run["rows_per_s"] for run in runs["in_memory"]]
        ratios = {f"{impl}/in_memory": paired_ratio([run["rows_per_s"] for run in values], base)
                  for impl, values in runs.items() if impl != "in_memory"}
    target = ratios.get("ray_stream/in_memory")
    return {"plan": asdict(plan), "implementations": implementations, "throughput_ratios": ratios,
            "target": {"ray_stream/in_memory": {"at_least": TARGET_RATIO,
                                                "met": None if target is None else target >= TARGET_RATIO}},
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}}


def format_report(result: dict) -> str:
    plan = result["plan"]
    lines = [f"streaming vs in-memory: {plan['rows']} rows x {plan['features']} features in {plan['files']} parquet "
             f"files, batch {plan['batch_size']}, {plan['max_steps']} steps (first {plan['skip_steps']} left out), "
             f"median of {plan['rounds']} rounds, {result['environment']['cpus']} CPUs", ""]
    rows = [[impl, f"{v['rows_per_s']['median']:,.0f}",
             f"{v['rows_per_s']['min']:,.0f}..{v['rows_per_s']['max']:,.0f}", f"{v['first_batch_s']['median']:.3f}"]
            for impl, v in result["implementations"].items()]
    lines.append(format_table(["implementation", "rows/s (steady)", "min..max", "first batch (s)"], rows))
    if result["throughput_ratios"]:
        lines.append("")
        met = result["target"]["ray_stream/in_memory"]["met"]
        ratio_rows = [[name, f"{value:.3f}x", f">= {TARGET_RATIO}" if name == "ray_stream/in_memory" else "",
                       ("met" if met else "MISSED") if name == "ray_stream/in_memory" and met is not None else ""]
                      for name, value in result["throughput_ratios"].items()]
        lines.append(format_table(["throughput ratio", "value", "target", "verdict"], ratio_rows))
    return "\n".join(lines)


def main(argv=None) -> dict:
    options = parse_args(argv)
    plan = plan_from(options)
    if options.threads < 1:
        raise ValueError(f"threads must be a positive integer, got {options.threads}.")
    torch.set_num_threads(options.threads)
    result = run_benchmark(plan)
    return publish(result, format_report(result), options.json)


if __name__ == "__main__":
    main(sys.argv[1:])
