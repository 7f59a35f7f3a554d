"""hyperparameter_search side by side: the same 16-trial search space on the same regression task,
run by ``transformers.Trainer.hyperparameter_search(backend="optuna")`` (when installed) and by
raytrainer (Optuna with median pruning and ``n_jobs`` trials at a time: one in this process, the
others in trial processes; Ray Tune with ASHA and one trial process per CPU). Prints wall time,
best objective, per-trial overhead and ratios. Ray's start is not timed (it precedes the searches).

    python benchmarks/hpo.py            # 16 trials of about 0.5 s of bare-loop training each (about a minute)
    python benchmarks/hpo.py --quick    # 4 small trials per implementation: a smoke run
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import quiet_library_logs  # noqa: E402

SIZES = {  # quick: a smoke run; full: one trial trains about 0.5 s in a bare loop on 2 cores
    "quick": dict(n_trials=4, rows=512, width=32, max_steps=40, eval_every=10),
    "full": dict(n_trials=16, rows=8192, width=256, max_steps=600, eval_every=100),
}


class RegressionData(torch.utils.data.Dataset):
    def __init__(self, rows: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(rows, 32, generator=generator)
        weights = torch.randn(32, 1, generator=torch.Generator().manual_seed(99))
        self.y = torch.tanh(self.x @ weights) + 0.05 * torch.randn(rows, 1, generator=generator)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": F.mse_loss(out, labels), "logits": out} if labels is not None else {"logits": out}


def hp_space(trial) -> dict:
    """The searched space (the same function serves transformers and raytrainer)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-2, log=True),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [16, 32, 64]),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
    }


def common_arguments(size: dict, output_dir: str) -> dict:
    return dict(output_dir=output_dir, max_steps=size["max_steps"], eval_strategy="steps",
                eval_steps=size["eval_every"], save_strategy="no", logging_steps=10_000, report_to="none",
                disable_tqdm=True, seed=7, per_device_eval_batch_size=256)


def summarize(trials: list) -> dict:
    """Median per-trial overhead (trial wall time minus its training time) over trials that
    trained to the end, and how many trials ran and finished."""
    overheads = [t["wall"] - t["train"] for t in trials if t.get("train") is not None and t.get("complete")]
    return {"trials": len(trials), "complete": sum(bool(t.get("complete")) for t in trials),
            "overhead_median": statistics.median(overheads) if overheads else None}


def ratio(value, reference):
    return None if value is None or not reference else value / reference


# ---------------------------------------------------------------------- implementations
def run_transformers(size: dict, data: tuple, output_dir: str) -> dict:
    import optuna
    import transformers

    starts, ends_of_training = [], []

    class TrainClock(transformers.TrainerCallback):
        """transformers calls on_train_end for finished and for pruned trials (before it raises
        TrialPruned); a pruned trial stopped short of max_steps."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            ends_of_training.append((time.perf_counter() - self.begin, state.global_step))

    def model_init(trial=None):
        starts.append(time.perf_counter())
        torch.manual_seed(0)
        return MLP(size["width"])

    args = transformers.TrainingArguments(**common_arguments(size, output_dir))
    trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=data[0], eval_dataset=data[1],
                                   callbacks=[TrainClock()])
    starts.clear()  # the constructor's own model_init call is not a trial
    begin = time.perf_counter()
    best = trainer.hyperparameter_search(hp_space=hp_space, n_trials=size["n_trials"], direction="minimize",
                                         backend="optuna", sampler=optuna.samplers.TPESampler(seed=0),
                                         pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    wall = time.perf_counter() - begin
    ends = starts[1:] + [begin + wall]  # a trial lasts until the next one builds its model
    trials = [{"wall": end - start, "train": seconds, "complete": step == size["max_steps"]}
              for start, end, (seconds, step) in zip(starts, ends, ends_of_training)]
    return {"wall": wall, "best": best.objective, **summarize(trials)}


def run_raytrainer(size: dict, data: tuple, output_dir: str, backend: str) -> dict:
    import optuna

    from raytrainer import Trainer, TrainingArguments

    def model_init(trial=None):
        torch.manual_seed(0)
        return MLP(size["width"])

    trainer = Trainer(model_init=model_init, args=TrainingArguments(**common_arguments(size, output_dir)),
                      train_dataset=data[0], eval_dataset=data[1])
    if backend == "optuna":
        options = dict(sampler=optuna.samplers.TPESampler(seed=0), pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
                       n_jobs=int(os.environ.get("HPO_BENCH_JOBS", os.cpu_count() or 1)))
    else:
        from ray.tune.schedulers import ASHAScheduler

        # max_t above the number of evaluations: a trial that survives every rung trains to its end
        evaluations = size["max_steps"] // size["eval_every"]
        options = dict(seed=0, verbose=0, scheduler=ASHAScheduler(grace_period=2, reduction_factor=2,
                                                                  max_t=evaluations + 1))
    begin = time.perf_counter()
    best = trainer.hyperparameter_search(hp_space=hp_space, n_trials=size["n_trials"], direction="minimize",
                                         backend=backend, **options)
    wall = time.perf_counter() - begin
    with open(trainer.hp_search_results["json"]) as f:
        records = json.load(f)["trials"]
    trials = [{"wall": r["wall_time"], "train": r["train_runtime"], "complete": r["status"] == "complete"}
              for r in records]
    return {"wall": wall, "best": best.objective, **summarize(trials)}


def run_bare(size: dict, data: tuple) -> float:
    """Seconds one trial's training takes in a plain PyTorch loop (batch 32, evaluation included)."""
    torch.manual_seed(0)
    model, train, dev = MLP(size["width"]), data[0], data[1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    begin = time.perf_counter()
    order = torch.randperm(len(train))
    for step in range(size["max_steps"]):
        index = order[(step * 32) % len(train):(step * 32) % len(train) + 32]
        loss = model(train.x[index], train.y[index])["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % size["eval_every"] == 0:
            with torch.no_grad():
                model(dev.x, dev.y)
    return time.perf_counter() - begin


# ---------------------------------------------------------------------- main
def available_implementations() -> list:
    names = ["raytrainer-optuna", "raytrainer-ray"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        return names
    return ["transformers"] + names


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 small trials per implementation")
    parser.add_argument("--only", nargs="*", default=None, help=f"among {available_implementations()}")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args(argv)
    size = SIZES["quick" if options.quick else "full"]
    data = (RegressionData(size["rows"], seed=0), RegressionData(size["rows"] // 4, seed=1))
    names = options.only or available_implementations()
    results = {"size": size, "bare_trial_s": run_bare(size, data)}
    with quiet_library_logs(), tempfile.TemporaryDirectory() as scratch:
        for name in names:
            output_dir = os.path.join(scratch, name)
            if name == "transformers":
                results[name] = run_transformers(size, data, output_dir)
            else:
                _ensure_ray()
                results[name] = run_raytrainer(size, data, output_dir, name.split("-", 1)[1])
    print_table(results, names)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}})


def print_table(results: dict, names: list) -> None:
    reference = results.get("transformers", {}).get("wall")
    print(f"\n{results['size']['n_trials']} trials; one trial trains {results['bare_trial_s']:.1f} s in a bare loop")
    print(f"{'implementation':<20}{'wall s':>9}{'best objective':>16}{'complete':>10}{'overhead/trial s':>18}"
          f"{'wall vs HF':>12}")
    for name in names:
        row = results[name]
        overhead = "-" if row["overhead_median"] is None else f"{row['overhead_median']:.2f}"
        versus = ratio(row["wall"], reference)
        print(f"{name:<20}{row['wall']:>9.1f}{row['best']:>16.5f}{row['complete']:>5}/{row['trials']:<4}"
              f"{overhead:>18}{'-' if versus is None else f'{versus:.2f}x':>12}")


if __name__ == "__main__":
    main()
