"""Per-step overhead of raytrainer's training loop, side by side with a bare PyTorch loop (the limit)
and with ``transformers.Trainer``, all in one process on the same CPU threads.

    python benchmarks/loop_overhead.py [--quick] [--json results.json] [--threads 1] [--rounds 5]

Two workloads: a tiny MLP, where the loop's own per-step Python work dominates, and a small
transformer encoder, where the model's compute dominates. Every implementation trains the same
model copy on the same data with the same maths (AdamW with decay/no-decay groups, linear
schedule, clipping at 1.0, loss / gradient_accumulation_steps, a seeded shuffle and
``raytrainer.default_data_collator``).

Method: the steady-state time per step of a run is ``(T(long) - T(short)) / (long - short)``, with
T the time of ``train()`` for two ``max_steps``, so start-up and teardown cancel. T is the
process's CPU time (other processes on a shared machine steal wall time in bursts, not CPU time;
with one torch thread and no DataLoader workers the two agree on a quiet machine); the wall-clock
estimate is printed beside it. Rounds interleave the implementations (in a rotating order) and the
median over rounds is reported; ratios are medians of per-round ratios. Two cross-checks come from
CPU timestamps taken at every step end inside the long run: the mean time per step ("in-loop",
free of set-up noise) and the 25th-percentile single step ("typical", nearly free of load bursts).
"""

import argparse
import copy
import importlib.util
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

if __package__:
    from ._common import (
        format_table,
        paired_ratio,
        per_step_by_difference,
        per_step_from_clock,
        publish,
        quiet_library_logs,
        summarise,
        timed,
        typical_step,
    )
else:  # run as a script: benchmarks/ is on sys.path
    from _common import (
        format_table,
        paired_ratio,
        per_step_by_difference,
        per_step_from_clock,
        publish,
        quiet_library_logs,
        summarise,
        timed,
        typical_step,
    )

from ray.train import ScalingConfig

import raytrainer
from raytrainer import default_data_collator

SEED = 42
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
GRADIENT_ACCUMULATION_STEPS = 1
LOGGING_STEPS = 50

# Per mode and workload: (short max_steps, long max_steps, rounds). Many short rounds beat a few long
# ones on a shared machine: the implementations of one round run seconds apart, under the same load.
PLANS = {
    "full": {"mlp": (50, 450, 12), "transformer": (2, 16, 9)},
    "quick": {"mlp": (20, 220, 3), "transformer": (1, 5, 2)},
    "smoke": {"mlp": (2, 12, 1), "transformer": (1, 3, 1)},
}
# cpu: the headline (CPU-time difference); wall: the same with wall-clock time; in_loop: mean CPU
# time per step inside the long run; typical: the 25th percentile of its single-step CPU times.
METHODS = ("cpu", "wall", "in_loop", "typical")
RATIOS = (("raytrainer", "bare"), ("transformers", "bare"), ("raytrainer", "transformers"))


# ---------------------------------------------------------------------------------- workloads
class VectorRegression(Dataset):
    """Random 32-d vectors with a noisy linear target, as dicts ``{"x", "labels"}``."""

    def __init__(self, size: int = 4096, features: int = 32, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, features, generator=generator)
        weights = torch.randn(features, 1, generator=generator)
        self.labels = self.x @ weights + 0.1 * torch.randn(size, 1, generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.labels[index]}


class MLPRegressor(nn.Module):
    def __init__(self, features: int = 32, hidden: int = 64):
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x, labels=None):
        prediction = self.out(torch.relu(self.hidden(x)))
        if labels is None:
            return {"logits": prediction}
        return {"loss": F.mse_loss(prediction, labels), "logits": prediction}


class TokenSequences(Dataset):
    """Random token sequences labelled by the parity of their first token (learnable, cheap)."""

    def __init__(self, size: int = 512, seq_len: int = 64, vocab: int = 1000, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(0, vocab, (size, seq_len), generator=generator)
        self.labels = self.input_ids[:, 0] % 2

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


class EncoderClassifier(nn.Module):
    """Embeddings + ``nn.TransformerEncoder`` + mean pooling + a linear head."""

    def __init__(self, vocab: int = 1000, seq_len: int = 64, d_model: int = 128, layers: int = 2,
                 heads: int = 4, num_labels: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_labels)

    def forward(self, input_ids, labels=None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.encoder(self.embed(input_ids) + self.position(positions))
        logits = self.head(self.norm(hidden).mean(dim=1))
        if labels is None:
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    build_dataset: Callable[[], Dataset]
    build_model: Callable[[], nn.Module]
    batch_size: int
    max_ratio_vs_bare: float  # raytrainer's target: at most this many times the bare loop's time


WORKLOADS = {
    "mlp": Workload("mlp", "MLP 32->64->1, batch 32 (loop overhead dominates)",
                    VectorRegression, MLPRegressor, 32, 1.10),
    "transformer": Workload("transformer", "TransformerEncoder d128 x2 layers, 4 heads, seq 64, batch 16 "
                            "(compute dominates)", TokenSequences, EncoderClassifier, 16, 1.03),
}


# ---------------------------------------------------------------------------------- implementations
def _decay_groups(model: nn.Module) -> list:
    """HF's grouping written out: no weight decay on biases and LayerNorm parameters."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or id(param) in norm_ids else decay).append(param)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def prepare_bare(model, dataset, batch_size: int, max_steps: int, step_clock: list, output_dir: str):
    """The limit: the Trainer's maths as a hand-written loop; returns the call to time."""

    def train() -> float:
        torch.manual_seed(SEED)
        optimizer = torch.optim.AdamW(_decay_groups(model), lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (max_steps - step) / max_steps))
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(SEED))
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=default_data_collator)
        model.train()
        loss_sum, micro_steps, step = torch.zeros(()), 0, 0
        while step < max_steps:
            for batch in loader:
                loss = model(**batch)["loss"] / GRADIENT_ACCUMULATION_STEPS
                loss.backward()
                loss_sum += loss.detach()
                micro_steps += 1
                if micro_steps % GRADIENT_ACCUMULATION_STEPS:
                    continue
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                model.zero_grad(set_to_none=True)
                step += 1
                step_clock.append(time.process_time())
                if step == max_steps:
                    break
        return loss_sum.item() / max_steps

    return train


def _trainer_settings(output_dir: str, batch_size: int, max_steps: int) -> dict:
    """TrainingArguments fields shared, name for name, by raytrainer and transformers."""
    return dict(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
                learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM,
                gradient_accumulation_steps=GRADIENT_ACCUMULATION_STEPS, lr_scheduler_type="linear",
                warmup_steps=0, optim="adamw_torch", seed=SEED, logging_steps=LOGGING_STEPS,
                save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True)


def _step_clock_callback(base: type, step_clock: list):
    """A callback of the given library that stamps every optimizer step's end (process CPU time)."""

    class StepClock(base):
        def on_step_end(self, args, state, control, **kwargs):
            step_clock.append(time.process_time())

    return StepClock()


def prepare_raytrainer(model, dataset, batch_size: int, max_steps: int, step_clock: list, output_dir: str):
    """raytrainer in Ray Train local mode; the constructor runs here, untimed."""
    args = raytrainer.TrainingArguments(**_trainer_settings(output_dir, batch_size, max_steps))
    trainer = raytrainer.Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator,
                                 callbacks=[_step_clock_callback(raytrainer.TrainerCallback, step_clock)],
                                 scaling_config=ScalingConfig(num_workers=0))
    return trainer.train


def prepare_transformers(model, dataset, batch_size: int, max_steps: int, step_clock: list, output_dir: str):
    """``transformers.Trainer`` with the same arguments; the constructor runs here, untimed."""
    import transformers

    args = transformers.TrainingArguments(**_trainer_settings(output_dir, batch_size, max_steps))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator,
                                   callbacks=[_step_clock_callback(transformers.TrainerCallback, step_clock)])
    return trainer.train


PREPARERS = {"bare": prepare_bare, "raytrainer": prepare_raytrainer, "transformers": prepare_transformers}


def available_implementations() -> tuple:
    """bare and raytrainer always; transformers when it imports."""
    if importlib.util.find_spec("transformers") is None:
        return ("bare", "raytrainer")
    try:
        import transformers  # noqa: F401  (its Trainer needs accelerate; a broken install is skipped)

        transformers.Trainer  # noqa: B018  (lazy attribute: this is the import that can fail)
    except Exception as error:  # noqa: BLE001
        print(f"note: transformers is installed but its Trainer does not import ({error}); skipping it.")
        return ("bare", "raytrainer")
    return ("bare", "raytrainer", "transformers")


# ---------------------------------------------------------------------------------- measuring
def _measure_round(impl: str, workload: Workload, template, dataset, steps: tuple, output_dir: str) -> dict:
    """One implementation's short and long run, each on a fresh copy of the same initial model."""
    seconds, step_clock = {}, []
    for max_steps in steps:
        step_clock = []
        run = PREPARERS[impl](copy.deepcopy(template), dataset, workload.batch_size, max_steps, step_clock, output_dir)
        seconds[max_steps] = timed(run)
        if len(step_clock) != max_steps:
            raise RuntimeError(f"{impl} ran {len(step_clock)} optimizer steps on {workload.name}, "
                               f"expected max_steps={max_steps}; the timings would not be comparable.")
    short, long = steps
    return {clock: per_step_by_difference(seconds[short][clock], seconds[long][clock], short, long)
            for clock in ("cpu", "wall")} | {"in_loop": per_step_from_clock(step_clock, skip_steps=short),
                                             "typical": typical_step(step_clock, skip_steps=short)}


def _benchmark_workload(workload: Workload, implementations: tuple, rounds: int, steps: tuple,
                        output_dir: str) -> dict:
    torch.manual_seed(SEED)
    template, dataset = workload.build_model(), workload.build_dataset()
    for impl in implementations:  # warm-up: Ray's start-up, lazy imports, allocator growth
        timed(PREPARERS[impl](copy.deepcopy(template), dataset, workload.batch_size, steps[0], [], output_dir))
    estimates = {impl: {method: [] for method in METHODS} for impl in implementations}
    for round_index in range(rounds):
        shift = round_index % len(implementations)  # rotate so no implementation always goes first
        for impl in implementations[shift:] + implementations[:shift]:
            for method, value in _measure_round(impl, workload, template, dataset, steps, output_dir).items():
                estimates[impl][method].append(value)
    return _workload_result(workload, estimates, rounds, steps)


def _workload_result(workload: Workload, estimates: dict, rounds: int, steps: tuple) -> dict:
    implementations = {
        impl: {"seconds_per_step": summarise(values["cpu"])["median"],
               **{method: summarise(values[method]) for method in METHODS}}
        for impl, values in estimates.items()
    }
    ratios = {method: {} for method in METHODS}
    for top, bottom in RATIOS:
        if top in estimates and bottom in estimates:
            for method, table in ratios.items():
                table[f"{top}/{bottom}"] = paired_ratio(estimates[top][method], estimates[bottom][method])
    targets = {}
    if "raytrainer/bare" in ratios["cpu"]:
        value = ratios["cpu"]["raytrainer/bare"]
        targets["raytrainer/bare"] = {"at_most": workload.max_ratio_vs_bare, "met": value <= workload.max_ratio_vs_bare}
    if "raytrainer/transformers" in ratios["cpu"]:
        targets["raytrainer/transformers"] = {"below": 1.0, "met": ratios["cpu"]["raytrainer/transformers"] < 1.0}
    return {"description": workload.description, "batch_size": workload.batch_size, "rounds": rounds,
            "steps": {"short": steps[0], "long": steps[1]}, "implementations": implementations,
            "ratios": ratios["cpu"], "wall_ratios": ratios["wall"], "in_loop_ratios": ratios["in_loop"],
            "typical_ratios": ratios["typical"], "targets": targets}


def run_benchmark(mode: str = "full", workloads: tuple = ("mlp", "transformer"), rounds=None, threads: int = 1,
                  implementations=None) -> dict:
    """Measure every implementation on every workload; returns the JSON-ready result dict.

    ``mode`` picks the step counts and rounds ("full", "quick" or "smoke", see ``PLANS``);
    ``rounds`` overrides the plan's; ``implementations`` defaults to all that import here."""
    if mode not in PLANS:
        raise ValueError(f"mode={mode!r} is not one of {sorted(PLANS)}.")
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:
        raise ValueError(f"workloads {unknown} are unknown; choose from {sorted(WORKLOADS)}.")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}.")
    if rounds is not None and (not isinstance(rounds, int) or rounds < 1):
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
    implementations = tuple(implementations or available_implementations())
    result = {"config": _environment(mode, threads, implementations), "workloads": {}}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with quiet_library_logs(), tempfile.TemporaryDirectory(prefix="loop_overhead_") as output_dir:
            for name in workloads:
                short, long, plan_rounds = PLANS[mode][name]
                result["workloads"][name] = _benchmark_workload(
                    WORKLOADS[name], implementations, rounds or plan_rounds, (short, long), output_dir)
    finally:
        torch.set_num_threads(threads_before)  # a caller (a test session) keeps its own setting
    return result


def _environment(mode: str, threads: int, implementations: tuple) -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "raytrainer": raytrainer.__version__}
    if "transformers" in implementations:
        import transformers

        versions["transformers"] = transformers.__version__
    return {"mode": mode, "threads": threads, "implementations": list(implementations),
            "machine": platform.machine(), "processor": platform.processor() or None, "versions": versions,
            "settings": {"learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
                         "gradient_accumulation_steps": GRADIENT_ACCUMULATION_STEPS, "logging_steps": LOGGING_STEPS,
                         "seed": SEED}}


# ---------------------------------------------------------------------------------- report
def _target_text(target: dict) -> tuple:
    text = f"<= {target['at_most']:.2f}" if "at_most" in target else f"< {target['below']:.2f}"
    return text, "met" if target["met"] else "MISSED"


def format_report(result: dict) -> str:
    """The tables for every workload: times per step, then the ratios with their targets."""
    config = result["config"]
    blocks = [f"loop overhead, mode={config['mode']}, torch threads={config['threads']}, "
              f"versions: {', '.join(f'{k} {v}' for k, v in config['versions'].items())}"]
    for name, workload in result["workloads"].items():
        steps = workload["steps"]
        header = (f"\n[{name}] {workload['description']}\n  ms/step = process CPU time of (T({steps['long']} steps) "
                  f"- T({steps['short']} steps)) / {steps['long'] - steps['short']}, median of {workload['rounds']} "
                  "rounds;\n  wall: the same in wall-clock time; in-loop: mean CPU time per step inside the long run; "
                  "typical: its 25th-percentile single step (robust to load bursts)")
        times = [[impl, f"{v['cpu']['median'] * 1e3:.3f}", f"{v['cpu']['min'] * 1e3:.3f}..{v['cpu']['max'] * 1e3:.3f}",
                  f"{v['wall']['median'] * 1e3:.3f}", f"{v['in_loop']['median'] * 1e3:.3f}",
                  f"{v['typical']['median'] * 1e3:.3f}"]
                 for impl, v in workload["implementations"].items()]
        ratios = []
        for ratio_name, value in workload["ratios"].items():
            target = workload["targets"].get(ratio_name)
            target_text, verdict = _target_text(target) if target else ("", "")
            ratios.append([ratio_name, f"{value:.3f}x", f"{workload['wall_ratios'][ratio_name]:.3f}x",
                           f"{workload['in_loop_ratios'][ratio_name]:.3f}x",
                           f"{workload['typical_ratios'][ratio_name]:.3f}x", target_text, verdict])
        blocks += [header, format_table(["implementation", "ms/step", "min..max", "wall", "in-loop", "typical"],
                                        times), "",
                   format_table(["ratio", "value", "wall", "in-loop", "typical", "target", "verdict"], ratios)]
    if "transformers" not in config["implementations"]:
        blocks.append("\nnote: transformers is not importable here; its column and ratios are skipped.")
    return "\n".join(blocks)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and 2 rounds: a ~30 s smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every implementation")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: 12 for mlp, 9 for transformer; fewer with --quick)")
    parser.add_argument("--workloads", default="mlp,transformer", help="comma-separated: mlp, transformer")
    options = parser.parse_args(argv)
    result = run_benchmark("quick" if options.quick else "full", tuple(options.workloads.split(",")),
                           rounds=options.rounds, threads=options.threads)
    return publish(result, format_report(result), options.json)


if __name__ == "__main__":
    main(sys.argv[1:])
