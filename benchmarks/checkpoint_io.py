"""Checkpoint save/load throughput against raw disk I/O, side by side in one run.

    python benchmarks/checkpoint_io.py [--size-mb 200] [--rounds 5] [--json out.json]

Contestants write (and read back) the same ~200 MB model of float32 weights:
raw ``write``/``readinto`` of the tensors' bytes (the limit), raytrainer's ``save_weights`` /
``load_weights``, the ``safetensors`` library (``save_file`` / ``load_file`` + ``load_state_dict``)
and ``torch.save`` / ``torch.load``. Rounds are interleaved and the median is reported; the
figures are ratios of throughput to raw disk I/O (target: raytrainer >= 0.7x for both).
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import torch

from raytrainer.checkpoints import load_weights, save_weights


def build_model(size_mb: int) -> torch.nn.Module:
    width = 1024
    layers = max(1, round(size_mb * 1e6 / (4 * (width * width + width))))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def _contestants(model, folder):
    from safetensors.torch import load_file, save_file

    tensors = {name: t.detach() for name, t in model.state_dict().items()}
    raw_path = os.path.join(folder, "raw.bin")

    def raw_write():
        with open(raw_path, "wb") as f:
            for t in tensors.values():
                f.write(memoryview(t.numpy()))

    def raw_read():
        with open(raw_path, "rb") as f:
            for t in tensors.values():
                f.readinto(memoryview(t.numpy()).cast("B"))

    return {
        "raw": (raw_write, raw_read),
        "raytrainer": (lambda: save_weights(model, os.path.join(folder, "rt")),
                       lambda: load_weights(model, os.path.join(folder, "rt"))),
        "safetensors": (lambda: save_file(tensors, os.path.join(folder, "st.safetensors")),
                        lambda: model.load_state_dict(load_file(os.path.join(folder, "st.safetensors")))),
        "torch.save": (lambda: torch.save(tensors, os.path.join(folder, "pt.bin")),
                       lambda: model.load_state_dict(torch.load(os.path.join(folder, "pt.bin"), weights_only=True))),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(size_mb: int = 200, rounds: int = 5, folder: str = None) -> dict:
    torch.manual_seed(0)
    model = build_model(size_mb)
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    folder = tempfile.mkdtemp(prefix="ckpt-bench-", dir=folder)
    try:
        contestants = _contestants(model, folder)
        times = {name: {"save": [], "load": []} for name in contestants}
        for _ in range(rounds):
            for name, (save, load) in contestants.items():
                times[name]["save"].append(_timed(save))
                times[name]["load"].append(_timed(load))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"bytes": nbytes, "rounds": rounds, "contestants": {}}
    for name, measured in times.items():
        entry = {op: statistics.median(values) for op, values in measured.items()}
        entry.update({f"{op}_gb_per_s": nbytes / entry[op] / 1e9 for op in ("save", "load")})
        entry.update({f"{op}_vs_raw": times_ratio(times["raw"][op], measured[op]) for op in ("save", "load")})
        result["contestants"][name] = entry
    return result


def times_ratio(raw_times, times) -> float:
    """Throughput relative to raw I/O: median raw time / median time (1.0 = disk speed)."""
    return statistics.median(raw_times) / statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    options = parser.parse_args()
    result = run(options.size_mb, options.rounds)
    print(f"checkpoint I/O, {result['bytes'] / 1e6:.0f} MB of float32 weights, median of {options.rounds} rounds")
    print(f"{'':12} {'save GB/s':>10} {'vs raw':>7} {'load GB/s':>10} {'vs raw':>7}")
    for name, entry in result["contestants"].items():
        print(f"{name:12} {entry['save_gb_per_s']:10.2f} {entry['save_vs_raw']:7.2f} "
              f"{entry['load_gb_per_s']:10.2f} {entry['load_vs_raw']:7.2f}")
    ours = result["contestants"]["raytrainer"]
    verdict = "meets" if min(ours["save_vs_raw"], ours["load_vs_raw"]) >= 0.7 else "MISSES"
    print(f"target: raytrainer >= 0.70x raw for save and load -> {verdict}")
    if options.json:
        with open(options.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
