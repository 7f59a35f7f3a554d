"""Checkpoint save/load throughput against raw disk I/O, side by side in one run.

    python benchmarks/checkpoint_io.py [--size-mb 200] [--rounds 9] [--json out.json]
    python benchmarks/checkpoint_io.py --quick      # 20 MB, 2 rounds: a smoke run

Two families of contestants, each with its own raw reference writing the same bytes:

- a whole model (~``--size-mb`` MB of float32 weights): raw ``write``/``readinto`` of the tensors'
  bytes (the limit), raytrainer's ``save_weights``/``load_weights`` (``model.safetensors``), the
  ``safetensors`` library (``save_file``/``load_file`` + ``load_state_dict``), ``torch.save``/
  ``torch.load``;
- a sharded checkpoint: the same model under FSDP2 (``fully_shard`` in a one-process gloo group)
  with its AdamW state, raytrainer's ``save_sharded``/``load_sharded_model`` +
  ``load_sharded_optimizer`` (torch.distributed.checkpoint files, as in ``checkpoint-<step>/``),
  against raw I/O of the rank's shards and optimizer state.

Every save writes a new folder, as a checkpoint does (``checkpoint-<step>/`` never overwrites a
file); the machine's dirty pages are flushed (``os.sync``, untimed) before each save, so no save
pays for the writeback of the one before it, and the round's folders are deleted when the round
ends, so none pays for freeing another's blocks either. Each folder is then loaded twice: "cold",
after its pages were dropped from the page cache (``fsync`` + ``POSIX_FADV_DONTNEED``, untimed):
what a resume in a new process reads; and "hot", from the page cache: memory speed, where fixed
costs show (the fastest of 3 loads in a row, since on a shared machine a few milliseconds lent to
another process are as long as those fixed costs). Rounds are interleaved, the order rotates every
round, medians are reported; the figures are ratios of throughput to the raw reference (target:
raytrainer >= 0.95x).
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

TARGET = 0.95
OPERATIONS = ("save", "load_cold", "load_hot")
HOT_REPEATS = 3  # a hot load takes tens of ms: the fastest of 3 drops another process's time slices


def build_model(size_mb: int) -> torch.nn.Module:
    width = 1024
    layers = max(1, round(size_mb * 1e6 / (4 * (width * width + width))))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])


def _raw(tensors: list):
    """Raw I/O of ``tensors``' bytes into one file per folder: the limit."""

    def save(folder):
        with open(os.path.join(folder, "raw.bin"), "wb") as f:
            for t in tensors:
                f.write(memoryview(t.numpy()).cast("B"))

    def load(folder):
        with open(os.path.join(folder, "raw.bin"), "rb") as f:
            for t in tensors:
                f.readinto(memoryview(t.numpy()).cast("B"))

    return save, load


def whole_model_contestants(model) -> dict:
    from safetensors.torch import load_file, save_file

    tensors = {name: t.detach() for name, t in model.state_dict().items()}
    return {
        "raw": _raw(list(tensors.values())),
        "raytrainer": (lambda d: save_weights(model, d), lambda d: load_weights(model, d)),
        "safetensors": (lambda d: save_file(tensors, os.path.join(d, "st.safetensors")),
                        lambda d: model.load_state_dict(load_file(os.path.join(d, "st.safetensors")))),
        "torch.save": (lambda d: torch.save(tensors, os.path.join(d, "pt.bin")),
                       lambda d: model.load_state_dict(torch.load(os.path.join(d, "pt.bin"), weights_only=True))),
    }


def sharded_contestants(size_mb: int) -> dict:
    """The FSDP2 model (one rank) and its optimizer state; raw I/O of the same local tensors."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    from torch.distributed.fsdp import fully_shard

    from raytrainer.parallel import sharded_checkpoints as sharded

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    torch.manual_seed(0)
    model = build_model(size_mb)
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1024)).sum().backward()  # one step, so the optimizer has its state
    optimizer.step()
    optimizer.zero_grad()
    local = [t.to_local() for t in get_model_state_dict(model).values()]
    for state in get_optimizer_state_dict(model, optimizer)["state"].values():
        local += [getattr(t, "to_local", lambda t=t: t)() for t in state.values()]

    def load(folder):
        sharded.load_sharded_model(model, folder)
        sharded.load_sharded_optimizer(model, optimizer, folder)

    return {"raw-sharded": _raw(local),
            "raytrainer-fsdp": (lambda d: sharded.save_sharded(model, optimizer, d), load)}, local


def _drop_from_page_cache(folder: str) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _timed(fn, folder) -> float:
    start = time.perf_counter()
    fn(folder)
    return time.perf_counter() - start


def measure_round(contestants: dict, order: list, scratch: str, times: dict) -> None:
    folders = []
    for name in order:
        save, load = contestants[name]
        folders.append(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
        os.sync()
        times[name]["save"].append(_timed(save, folders[-1]))
        _drop_from_page_cache(folders[-1])
        times[name]["load_cold"].append(_timed(load, folders[-1]))
        times[name]["load_hot"].append(min(_timed(load, folders[-1]) for _ in range(HOT_REPEATS)))
    # deleted at the end of the round: the file system's work of freeing a folder's blocks goes on
    # after rmtree returns, and would slow the next save (always the same neighbour's otherwise)
    for folder in folders:
        shutil.rmtree(folder)


def run(size_mb: int = 200, rounds: int = 9, folder: str = None) -> dict:
    torch.manual_seed(0)
    model = build_model(size_mb)
    contestants = whole_model_contestants(model)
    sharded, local = sharded_contestants(size_mb)
    contestants.update(sharded)
    sizes = {name: sum(t.numel() * t.element_size() for t in model.state_dict().values()) for name in contestants}
    sizes.update({name: sum(t.numel() * t.element_size() for t in local) for name in sharded})
    scratch = tempfile.mkdtemp(prefix="ckpt-bench-", dir=folder)
    names = list(contestants)
    times = {name: {op: [] for op in OPERATIONS} for name in names}
    try:
        for index in range(rounds):
            shift = index % len(names)
            measure_round(contestants, names[shift:] + names[:shift], scratch, times)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summarize(times, sizes, rounds)


def reference_of(name: str) -> str:
    return "raw-sharded" if name in ("raw-sharded", "raytrainer-fsdp") else "raw"


def summarize(times: dict, sizes: dict, rounds: int) -> dict:
    result = {"rounds": rounds, "contestants": {}}
    for name, measured in times.items():
        raw = times[reference_of(name)]
        entry = {"bytes": sizes[name], "reference": reference_of(name)}
        for op in OPERATIONS:
            entry[op] = statistics.median(measured[op])
            entry[f"{op}_gb_per_s"] = sizes[name] / entry[op] / 1e9
            entry[f"{op}_vs_raw"] = times_ratio(raw[op], measured[op])
        result["contestants"][name] = entry
    return result


def times_ratio(raw_times, times) -> float:
    """Throughput relative to raw I/O: median raw time / median time (1.0 = disk speed)."""
    return statistics.median(raw_times) / statistics.median(times)


def print_report(result: dict) -> None:
    print(f"checkpoint I/O, median of {result['rounds']} rounds; GB/s and ratio to the raw reference")
    print(f"{'':16} {'MB':>6} " + " ".join(f"{op + ' GB/s':>15} {'vs raw':>6}" for op in OPERATIONS))
    for name, entry in result["contestants"].items():
        cells = " ".join(f"{entry[f'{op}_gb_per_s']:15.2f} {entry[f'{op}_vs_raw']:6.2f}" for op in OPERATIONS)
        print(f"{name:16} {entry['bytes'] / 1e6:6.0f} {cells}")
    for name in ("raytrainer", "raytrainer-fsdp"):
        entry = result["contestants"][name]
        misses = [op for op in OPERATIONS if entry[f"{op}_vs_raw"] < TARGET]
        verdict = "meets" if not misses else f"MISSES ({', '.join(misses)})"
        print(f"target: {name} >= {TARGET:.2f}x {entry['reference']} for every operation -> {verdict}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="20 MB, 2 rounds: a smoke run")
    parser.add_argument("--json", default=None)
    options = parser.parse_args(argv)
    if options.quick:
        options.size_mb, options.rounds = 20, 2
    result = run(options.size_mb, options.rounds)
    print_report(result)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
