"""Timing helpers shared by the benchmarks: quiet timed calls (wall and CPU), the two-length difference estimate
of the steady-state time per step, robust summaries and a plain-text table.

Shared CPUs are noisy, so every estimate here is built to cancel what does not scale with the
number of steps (set-up, first-call costs, teardown) and to be summarised by medians.
"""

import contextlib
import gc
import logging
import os
import statistics
import time
from typing import Callable, Sequence

# Loggers of the libraries under test that print a line per run (Ray's "Running in local mode",
# transformers' warnings about plain nn.Modules): muted, so the table stays readable.
_NOISY_LOGGERS = ("ray", "raytrainer", "transformers", "accelerate")


@contextlib.contextmanager
def quiet_library_logs():
    """Within the block, the noisy libraries' loggers are at WARNING (ERROR for transformers'
    hints); their levels are restored after it, so a caller's own logging set-up survives."""
    names = {name for name in list(logging.root.manager.loggerDict) + list(_NOISY_LOGGERS)
             if name.split(".")[0] in _NOISY_LOGGERS}
    saved = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR if name.startswith("transformers") else logging.WARNING)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def quiet_stdout():
    """Send stdout to /dev/null: both Trainers print their log dicts when tqdm is disabled, and a
    terminal write is not what the benchmark measures (it is applied to every implementation)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def timed(run: Callable[[], object]) -> dict:
    """Wall and process-CPU seconds one call of ``run`` takes, after a collection so garbage from
    the previous run is not collected inside this one.

    CPU time is the headline number: on a shared machine other processes steal wall time in bursts
    that can double a run, but they barely change the CPU time this process spends."""
    gc.collect()
    with quiet_stdout():
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def per_step_by_difference(short_seconds: float, long_seconds: float, short_steps: int, long_steps: int) -> float:
    """Steady-state seconds per step from two runs of different lengths: the fixed costs they
    share cancel in the difference, which only the extra steps pay."""
    if long_steps <= short_steps:
        raise ValueError(f"long_steps ({long_steps}) must be larger than short_steps ({short_steps}).")
    return (long_seconds - short_seconds) / (long_steps - short_steps)


def per_step_from_clock(step_end_times: Sequence[float], skip_steps: int) -> float:
    """Seconds per step between the end of step ``skip_steps`` and the end of the last step, from
    timestamps taken at every step end (the first steps are the warm-up and are left out)."""
    if len(step_end_times) <= skip_steps + 1 or skip_steps < 1:
        raise ValueError(f"need more than skip_steps + 1 timestamps (skip_steps={skip_steps}, got "
                         f"{len(step_end_times)}); make the run longer or skip fewer steps.")
    span = step_end_times[-1] - step_end_times[skip_steps - 1]
    return span / (len(step_end_times) - skip_steps)


def typical_step(step_end_times: Sequence[float], skip_steps: int, quantile: float = 0.25) -> float:
    """A low quantile of the single-step durations after the first ``skip_steps`` steps: what an
    undisturbed step costs. Bursts of load from other processes only lengthen steps, so they move
    the mean but barely this; rare periodic work (a log line every 50 steps) is left out too."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {quantile}.")
    if skip_steps < 1 or len(step_end_times) <= skip_steps:
        raise ValueError(f"need more than skip_steps + 1 timestamps (skip_steps={skip_steps}, got "
                         f"{len(step_end_times)}); make the run longer or skip fewer steps.")
    durations = sorted(b - a for a, b in zip(step_end_times[skip_steps - 1:], step_end_times[skip_steps:]))
    return durations[int(quantile * (len(durations) - 1))]


def summarise(values: Sequence[float]) -> dict:
    """Median (the reported number), min and max of one implementation's per-round estimates."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": list(values)}


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over rounds of numerator/denominator: each round's two numbers were measured minutes
    apart at most, so drifting machine load cancels better than in a ratio of medians."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns sized to their widest cell, with a rule under the header."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def publish(result: dict, report: str, json_path=None) -> dict:
    """Print the report and, when asked, write the result as JSON; every benchmark's last step."""
    import json

    print(report)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"\nresults written to {json_path}")
    return result
