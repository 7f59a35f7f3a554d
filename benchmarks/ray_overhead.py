"""What raytrainer adds on top of a raw Ray Train ``TorchTrainer`` when it trains on Ray workers:
the same 2-worker CPU job, side by side, in one driver process on one shared Ray instance.

    python benchmarks/ray_overhead.py [--quick] [--json results.json] [--rounds 4] [--steps 400]

Two implementations of one job (``_ray_job.py``: an MLP of 0.33 M parameters, batch 64 per
worker, AdamW with decay groups, a linear schedule, clipping at 1.0, ``max_steps`` steps):

- ``raw``: a hand-written loop in a ``TorchTrainer`` (``prepare_model``, ``prepare_data_loader``),
  the reference;
- ``raytrainer``: ``Trainer(..., scaling_config=ScalingConfig(num_workers=2))`` with the same
  settings, ``disable_tqdm=True``, ``save_strategy="no"``, no logging before the end.

Three numbers per run, each a median over interleaved rounds, with the target raytrainer <= 1.05x
raw: the wall time of the whole ``fit()`` / ``train()`` call on the driver, the time from that
call to the end of the first optimizer step on rank 0, and the steady-state time per step on rank
0 (from step ``skip_steps`` to the last one). Rank 0 stamps wall-clock times (``time.time``, the
same clock as the driver's) into a file, because Ray Train V2 drops metrics reported without a
checkpoint. The stamps also split each run into phases, printed side by side.
"""

import argparse
import copy
import gc
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS)
if BENCHMARKS not in sys.path:  # the job modules must be imported by the same name the workers use
    sys.path.insert(0, BENCHMARKS)

import _ray_job
from _common import (
    format_table,
    paired_ratio,
    per_step_from_clock,
    publish,
    quiet_library_logs,
    quiet_stdout,
    summarise,
    typical_step,
)

IMPLEMENTATIONS = ("raw", "raytrainer")
TARGET_RATIO = 1.05
# (key, label, unit scale, unit): the three numbers that carry the target
METRICS = (("fit_wall", "fit() / train() wall", 1.0, "s"),
           ("first_step", "driver call -> first step end", 1.0, "s"),
           ("per_step", "steady-state step", 1e3, "ms"))
# cross-checks without a target: the 25th-percentile single step and rank 0's CPU time per step
# (both less sensitive to other processes' load), and the driver's CPU time in the call
EXTRA_METRICS = (("typical_step", "typical step (p25)", 1e3, "ms"),
                 ("per_step_cpu", "steady-state step, rank 0 CPU", 1e3, "ms"),
                 ("driver_cpu", "driver CPU time in the call", 1.0, "s"))
# (key, label): consecutive phases of one run; they add up to the fit's wall time
PHASES = (("to_worker_start", "driver call -> worker function start"),
          ("worker_setup", "worker function start -> loop start"),
          ("to_first_step", "loop start -> first step end"),
          ("steps", "first step end -> last step end"),
          ("after_last_step", "last step end -> loop end (worker)"),
          ("to_return", "loop end -> fit returns (driver)"))


@dataclass(frozen=True)
class Plan:
    rounds: int  # interleaved rounds, each one fit of every implementation
    max_steps: int  # optimizer steps per fit
    skip_steps: int  # steps left out of the steady-state estimate (warm-up)
    warmup_steps: int  # an untimed first fit of each implementation with this many steps; 0: none


PLANS = {"full": Plan(rounds=4, max_steps=400, skip_steps=50, warmup_steps=40),
         "quick": Plan(rounds=1, max_steps=120, skip_steps=20, warmup_steps=0)}


def validate_plan(plan: Plan) -> Plan:
    for name in ("rounds", "max_steps", "skip_steps"):
        value = getattr(plan, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(plan.warmup_steps, int) or plan.warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {plan.warmup_steps!r}.")
    if plan.max_steps < plan.skip_steps + 10:
        raise ValueError(f"max_steps ({plan.max_steps}) must be at least skip_steps + 10 ({plan.skip_steps + 10}) "
                         "so the steady-state estimate spans enough steps; raise --steps.")
    return plan


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 120 steps, no warm-up fit (~1.5 min)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 4, or 1 with --quick)")
    parser.add_argument("--steps", type=int, help="optimizer steps per fit (default: 400, or 120 with --quick)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers, one CPU each (default: 2)")
    return parser.parse_args(argv)


def plan_from(options: argparse.Namespace) -> Plan:
    """The mode's plan with the command line's overrides, checked."""
    plan = PLANS["quick" if options.quick else "full"]
    if options.rounds is not None:
        plan = replace(plan, rounds=options.rounds)
    if options.steps is not None:
        plan = replace(plan, max_steps=options.steps)
    if not isinstance(options.workers, int) or options.workers < 2:
        raise ValueError(f"--workers must be at least 2 (a distributed run), got {options.workers!r}.")
    return validate_plan(plan)


# ---------------------------------------------------------------------------------- pure arithmetic
def run_metrics(driver: dict, clock: dict, skip_steps: int) -> dict:
    """One run's numbers from the driver's call/return times and rank 0's stamps (seconds)."""
    ends = clock["step_ends"]
    return {"fit_wall": driver["return"] - driver["call"], "first_step": ends[0] - driver["call"],
            "per_step": per_step_from_clock(ends, skip_steps), "typical_step": typical_step(ends, skip_steps),
            "per_step_cpu": per_step_from_clock(clock["step_cpu"], skip_steps), "driver_cpu": driver["cpu"]}


def phase_breakdown(driver: dict, clock: dict) -> dict:
    """The run cut at each stamp, in order; the phases add up to the fit's wall time."""
    marks, ends = clock["marks"], clock["step_ends"]
    cuts = [driver["call"], marks["worker_start"], marks["loop_start"], ends[0], ends[-1], marks["worker_end"],
            driver["return"]]
    return {key: later - earlier for (key, _), earlier, later in zip(PHASES, cuts, cuts[1:])}


def summarise_runs(runs: list) -> dict:
    """Medians per implementation, paired ratios raytrainer/raw and the verdict per metric."""
    by_impl = {impl: [run for run in runs if run["implementation"] == impl] for impl in IMPLEMENTATIONS}
    if any(len(impl_runs) == 0 for impl_runs in by_impl.values()):
        raise ValueError(f"runs must hold at least one run of each of {IMPLEMENTATIONS}.")
    keys = [key for key, *_ in METRICS + EXTRA_METRICS]
    metrics = {impl: {key: summarise([run["metrics"][key] for run in impl_runs]) for key in keys}
               for impl, impl_runs in by_impl.items()}
    phases = {impl: {key: summarise([run["phases"][key] for run in impl_runs])["median"] for key, _ in PHASES}
              for impl, impl_runs in by_impl.items()}
    ratios = {key: paired_ratio([run["metrics"][key] for run in by_impl["raytrainer"]],
                                [run["metrics"][key] for run in by_impl["raw"]]) for key in keys}
    targets = {key: {"at_most": TARGET_RATIO, "met": ratios[key] <= TARGET_RATIO} for key, *_ in METRICS}
    return {"metrics": metrics, "phases": phases, "ratios": ratios, "targets": targets,
            "all_targets_met": all(target["met"] for target in targets.values())}


# ---------------------------------------------------------------------------------- report
def format_report(result: dict) -> str:
    """The metric table (medians, spread, ratio, verdict) and the phase table."""
    config, summary = result["config"], result["summary"]
    plan, versions = config["plan"], ", ".join(f"{k} {v}" for k, v in config["versions"].items())
    lines = [
        (f"ray overhead: {config['workers']} Ray Train workers on ray.init(num_cpus={config['workers']}), "
         f"{config['job']}, {plan['max_steps']} steps per fit, {plan['rounds']} round(s); versions: {versions}"),
        (f"medians over rounds; ratio = median of per-round raytrainer/raw; steady-state step = rank 0's "
         f"mean from step {plan['skip_steps']} to the last"),
        "",
        format_table(["metric", "raw median (min..max)", "raytrainer median (min..max)", "ratio", "target",
                      "verdict"], _metric_rows(summary)),
        "",
        "phases (median seconds; worker stamps are rank 0's)",
        format_table(["phase", "raw", "raytrainer", "difference"], _phase_rows(summary)),
    ]
    missed = [key for key, target in summary["targets"].items() if not target["met"]]
    lines += ["", "verdict: " + ("target MISSED on: " + ", ".join(missed) if missed else "all targets met")]
    return "\n".join(lines)


def _metric_rows(summary: dict) -> list:
    rows = []
    for key, label, scale, unit in METRICS + EXTRA_METRICS:
        raw, ours = summary["metrics"]["raw"][key], summary["metrics"]["raytrainer"][key]
        target = summary["targets"].get(key)
        target_text = f"<= {target['at_most']:.2f}" if target else ""
        verdict = ("met" if target["met"] else "MISSED") if target else ""
        rows.append([f"{label} ({unit})", _spread(raw, scale), _spread(ours, scale),
                     f"{summary['ratios'][key]:.3f}x", target_text, verdict])
    return rows


def _phase_rows(summary: dict) -> list:
    raw, ours = summary["phases"]["raw"], summary["phases"]["raytrainer"]
    return [[label, f"{raw[key]:.3f}", f"{ours[key]:.3f}", f"{ours[key] - raw[key]:+.3f}"] for key, label in PHASES]


def _spread(values: dict, scale: float) -> str:
    return f"{values['median'] * scale:.3f} ({values['min'] * scale:.3f}..{values['max'] * scale:.3f})"


# ---------------------------------------------------------------------------------- running on Ray
def _start_ray(workers: int) -> None:
    """One Ray instance for every fit; its workers import the job modules and raytrainer from here."""
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; run the benchmark in a fresh process, "
                           "so both implementations share one Ray instance that it starts itself.")
    paths = [BENCHMARKS, REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})


def _prepare_raw(model, dataset, max_steps: int, clock_path: str, run_dir: str, workers: int):
    """The call to time: building and fitting the ``TorchTrainer`` (raytrainer's ``train()`` builds
    its own inside the call too)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def fit():
        TorchTrainer(_ray_job.raw_train_loop,
                     train_loop_config={"model": model, "dataset": dataset, "max_steps": max_steps,
                                        "clock_path": clock_path},
                     scaling_config=ScalingConfig(num_workers=workers),
                     run_config=RunConfig(name=os.path.basename(run_dir), storage_path=os.path.dirname(run_dir))).fit()

    return fit


def _prepare_raytrainer(model, dataset, max_steps: int, clock_path: str, run_dir: str, workers: int):
    """raytrainer's Trainer, built here (untimed, like the raw side's model and data)."""
    from _ray_job_callback import RankZeroClockCallback
    from ray.train import ScalingConfig

    import raytrainer

    args = raytrainer.TrainingArguments(
        output_dir=run_dir, max_steps=max_steps, per_device_train_batch_size=_ray_job.BATCH_SIZE,
        learning_rate=_ray_job.LEARNING_RATE, weight_decay=_ray_job.WEIGHT_DECAY,
        max_grad_norm=_ray_job.MAX_GRAD_NORM, lr_scheduler_type="linear", warmup_steps=0, optim="adamw_torch",
        seed=_ray_job.SEED, logging_steps=10 * max_steps, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True,
        # the raw side's DDP (Ray's prepare_model) does not search for unused parameters; HF's default
        # does for a model that is not a transformers one, and that search costs some 20% of this
        # job's step: the same DDP on both sides, so the ratio is what raytrainer adds
        ddp_find_unused_parameters=False)
    trainer = raytrainer.Trainer(model=model, args=args, train_dataset=dataset,
                                 callbacks=[RankZeroClockCallback(clock_path)],
                                 scaling_config=ScalingConfig(num_workers=workers))
    return trainer.train


PREPARERS = {"raw": _prepare_raw, "raytrainer": _prepare_raytrainer}


def _one_fit(impl: str, template, dataset, max_steps: int, workdir: str, tag: str, workers: int) -> tuple:
    """Fit once; returns the driver's call/return wall times and CPU time, and rank 0's stamps."""
    run_dir = os.path.join(workdir, f"{impl}-{tag}")
    clock_path = os.path.join(workdir, f"{impl}-{tag}.clock.json")
    fit = PREPARERS[impl](copy.deepcopy(template), dataset, max_steps, clock_path, run_dir, workers)
    gc.collect()
    with quiet_stdout():
        cpu, call = time.process_time(), time.time()
        fit()
        driver = {"call": call, "return": time.time(), "cpu": time.process_time() - cpu,
                  "load_1min": os.getloadavg()[0]}  # other processes' share of the 2 CPUs, to judge a run
    clock = _ray_job.read_clock(clock_path)
    if len(clock["step_ends"]) != max_steps:
        raise RuntimeError(f"{impl} ran {len(clock['step_ends'])} optimizer steps on rank 0, expected "
                           f"max_steps={max_steps}; the timings would not be comparable.")
    return driver, clock


def _measured_run(impl: str, round_index: int, template, dataset, plan: Plan, workdir: str, workers: int) -> dict:
    driver, clock = _one_fit(impl, template, dataset, plan.max_steps, workdir, f"r{round_index}", workers)
    return {"implementation": impl, "round": round_index, "driver": driver, "clock": clock,
            "metrics": run_metrics(driver, clock, plan.skip_steps), "phases": phase_breakdown(driver, clock)}


def run_benchmark(plan: Plan, workers: int = 2) -> dict:
    """Warm-up fits, then ``plan.rounds`` rounds of one fit per implementation (the order flips every
    round); returns the JSON-ready result."""
    import ray

    validate_plan(plan)
    torch.manual_seed(_ray_job.SEED)
    template, dataset = _ray_job.WideMLP(), _ray_job.WideRegression()
    with quiet_library_logs(), tempfile.TemporaryDirectory(prefix="ray_overhead_") as workdir:
        _start_ray(workers)
        try:
            for impl in IMPLEMENTATIONS if plan.warmup_steps else ():
                _one_fit(impl, template, dataset, plan.warmup_steps, workdir, "warmup", workers)
            runs = [_measured_run(impl, round_index, template, dataset, plan, workdir, workers)
                    for round_index in range(plan.rounds)
                    for impl in (IMPLEMENTATIONS if round_index % 2 == 0 else IMPLEMENTATIONS[::-1])]
        finally:
            ray.shutdown()
    return {"config": _environment(plan, workers, template), "summary": summarise_runs(runs), "runs": runs}


def _environment(plan: Plan, workers: int, model) -> dict:
    import ray

    import raytrainer

    parameters = sum(p.numel() for p in model.parameters())
    return {"workers": workers, "plan": asdict(plan), "target_ratio": TARGET_RATIO,
            "job": f"MLP {_ray_job.FEATURES}->{_ray_job.HIDDEN}->{_ray_job.HIDDEN}->1 ({parameters / 1e6:.2f} M "
                   f"parameters), batch {_ray_job.BATCH_SIZE} per worker",
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                         "raytrainer": raytrainer.__version__}}


def main(argv=None) -> dict:
    options = parse_args(argv)
    result = run_benchmark(plan_from(options), workers=options.workers)
    return publish(result, format_report(result), options.json)


if __name__ == "__main__":
    main(sys.argv[1:])
