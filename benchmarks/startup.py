"""Start-up of a local-mode run: what the first ``train()`` in a fresh process costs beyond its steps.

    python benchmarks/startup.py [--rounds 5] [--json out.json]

For raytrainer, ``transformers.Trainer`` when installed, and a bare PyTorch loop (DataLoader,
AdamW, the same steps): every measurement is a fresh Python process that imports torch, imports the
library, builds a Trainer on a tiny MLP and trains it for a short (S) or a long (L) number of steps,
so each ``train()`` is the first one of its process.

- ``import``: seconds to import the library once torch is imported (all need torch).
- ``Trainer()``: seconds to build the Trainer (argument checks, the model probe, callbacks).
- ``train() fixed``: the part of the first ``train()`` that does not grow with the steps,
  ``T(S) - S * (T(L) - T(S)) / (L - S)``: the loop's own set-up (and Ray's, where a run needs it).
- ``over bare``: ``Trainer()`` + ``train() fixed`` minus the bare loop's fixed cost. PyTorch's own
  first-use costs (the first optimizer imports ``torch._dynamo``, about 0.5 s) are paid by every
  contestant, in ``Trainer()`` or in ``train()``; this column is what the library adds.

Rounds alternate the contestants and the two lengths; the table shows medians (and min-max) of wall
seconds. Target: raytrainer's ``over bare`` at most 0.5 s.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import per_step_by_difference, publish  # noqa: E402

SHORT_STEPS, LONG_STEPS = 10, 210
TARGET_FIXED_S = 0.5


def child(library: str, steps: int) -> dict:
    """One measurement, in this (fresh) process."""
    import tempfile

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    begin = time.perf_counter()
    module = __import__(library) if library != "bare" else None
    imported = time.perf_counter()

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))

        def forward(self, x, labels=None):
            out = self.net(x)
            return {"loss": F.mse_loss(out, labels), "logits": out}

    class Rows(torch.utils.data.Dataset):
        def __init__(self):
            generator = torch.Generator().manual_seed(0)
            self.x = torch.randn(256, 16, generator=generator)
            self.y = self.x.sum(dim=1, keepdim=True)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, index):
            return {"x": self.x[index], "labels": self.y[index]}

    torch.manual_seed(0)
    if module is None:
        started = time.perf_counter()
        bare_loop(MLP(), Rows(), steps)
        return {"import": 0.0, "construct": 0.0, "train": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as folder:
        args = module.TrainingArguments(output_dir=folder, max_steps=steps, per_device_train_batch_size=8,
                                        logging_steps=10_000, save_strategy="no", report_to="none",
                                        disable_tqdm=True, use_cpu=True)
        trainer = module.Trainer(model=MLP(), args=args, train_dataset=Rows())
        built = time.perf_counter()
        trainer.train()
        trained = time.perf_counter()
    return {"import": imported - begin, "construct": built - imported, "train": trained - built}


def bare_loop(model, rows, steps: int) -> None:
    """What the Trainers do per step, by hand: shuffled batches of 8, AdamW, a linear decay."""
    import torch

    loader = torch.utils.data.DataLoader(rows, batch_size=8, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(**batch)["loss"]
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                return


def measure(library: str, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYTRAINER_RAY_LOGS": "0"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", library, str(steps)],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{library} with {steps} steps failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fixed_cost(short: float, long: float) -> float:
    return short - SHORT_STEPS * per_step_by_difference(short, long, SHORT_STEPS, LONG_STEPS)


def libraries() -> list:
    names = ["raytrainer", "bare"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        return names
    return names + ["transformers"]


def run(rounds: int) -> dict:
    names = libraries()
    results = {name: {"import": [], "construct": [], "fixed": []} for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            short, long = measure(name, SHORT_STEPS), measure(name, LONG_STEPS)
            results[name]["import"] += [short["import"], long["import"]]
            results[name]["construct"] += [short["construct"], long["construct"]]
            results[name]["fixed"].append(fixed_cost(short["train"], long["train"]))
    return results


def over_bare(results: dict, name: str) -> float:
    figures = results[name]
    return (statistics.median(figures["construct"]) + statistics.median(figures["fixed"])
            - statistics.median(results["bare"]["fixed"]))


def report(results: dict) -> str:
    lines = [f"{'library':<14}{'import s':>20}{'Trainer() s':>20}{'train() fixed s':>20}{'over bare s':>14}"]
    for name, figures in results.items():
        cells = [f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})" for v in
                 (figures["import"], figures["construct"], figures["fixed"])]
        extra = f"{over_bare(results, name):>14.3f}" if name != "bare" else f"{'':>14}"
        lines.append(f"{name:<14}" + "".join(f"{cell:>20}" for cell in cells) + extra)
    added = over_bare(results, "raytrainer")
    verdict = "met" if added <= TARGET_FIXED_S else "missed"
    lines.append(f"raytrainer's set-up over a bare loop {added:.3f} s: target <= {TARGET_FIXED_S} s {verdict}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "STEPS"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        print(json.dumps(child(options.child[0], int(options.child[1]))))
        return {}
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    results = run(options.rounds)
    return publish(results, report(results), options.json)


if __name__ == "__main__":
    main()
