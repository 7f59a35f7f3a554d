"""Start-up of a local run: ``import raytrainer`` and a plain local ``train()`` import nothing of
Ray (Ray Train's local mode only wraps runs that use it: streams, a user's RunConfig), and the
start-up benchmark measures what it claims."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import startup  # noqa: E402

LOCAL_RUN = """
import json, os, sys, tempfile
import torch
import raytrainer
after_import = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        return {"loss": ((self.a * x - labels) ** 2).mean(), "logits": self.a * x}

class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.tensor(1.0), "labels": torch.tensor(2.0)}

folder = tempfile.mkdtemp()
args = raytrainer.TrainingArguments(output_dir=folder, max_steps=4, save_steps=2, learning_rate=0.1,
                                    per_device_train_batch_size=4, optim="sgd", lr_scheduler_type="constant",
                                    report_to="none", disable_tqdm=True, use_cpu=True)
trainer = raytrainer.Trainer(model=Model(), args=args, train_dataset=Rows(), eval_dataset=Rows())
trainer.train()
metrics = trainer.evaluate()
print(json.dumps({"after_import": after_import,
                  "after_train": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")),
                  "a": trainer.model.a.item(), "eval_loss": metrics["eval_loss"],
                  "folders": sorted(os.listdir(folder)), "step": trainer.state.global_step}))
"""


OPTUNA_SEARCH = LOCAL_RUN.split("folder = tempfile.mkdtemp()")[0] + """
args = raytrainer.TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=4, optim="sgd", learning_rate=0.1,
                                    per_device_train_batch_size=4, lr_scheduler_type="constant", report_to="none",
                                    disable_tqdm=True, save_strategy="no", use_cpu=True)
trainer = raytrainer.Trainer(model_init=lambda trial=None: Model(), args=args, train_dataset=Rows(), eval_dataset=Rows())
best = trainer.hyperparameter_search(n_trials=2, backend="optuna",
                                     hp_space=lambda t: {"max_steps": t.suggest_categorical("max_steps", [4])})
print(json.dumps({"ray": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")),
                  "objective": best.objective}))
"""


HELPER_PROCESS = """
import sys
import raytrainer.runtime.ray_session, raytrainer.runtime.channel  # what Ray helper processes load
helper = "torch" in sys.modules
from raytrainer import Trainer  # a public name brings its module, and torch, when used
import raytrainer
subpackage = raytrainer.callbacks.TrainerCallback.__name__  # subpackages are attributes, as before
print(helper, "torch" in sys.modules, Trainer.__module__, subpackage)
"""


def test_ray_helper_processes_load_raytrainer_modules_without_torch(tmp_path):
    """Every worker process of a local instance runs the set-up hook, and the run channel's actor
    imports its module: the package's lazy names keep torch (about 2 s here) out of both."""
    done = subprocess.run([sys.executable, "-c", HELPER_PROCESS], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "True", "raytrainer.trainer", "TrainerCallback"]


COMMAND_LINE = """
import json, sys
from raytrainer.cli import main
folder = sys.argv[1]
with open(folder + "/trainer_state.json", "w") as f:
    json.dump({"global_step": 3, "log_history": [{"loss": 0.5, "step": 3}]}, f)
status = main(["results", folder])
print("LOADED", sorted(name for name in ("torch", "ray", "optuna", "matplotlib") if name in sys.modules), status)
"""


def test_the_command_line_shows_results_without_importing_torch_or_ray(tmp_path):
    """``raytrainer --help`` and ``raytrainer results`` took 1.5 s to import torch through the search
    package; they need neither torch nor Ray."""
    done = subprocess.run([sys.executable, "-c", COMMAND_LINE, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "LOADED [] 0"
    assert "0.5" in done.stdout  # the run's log history was shown


def test_import_and_a_plain_local_run_never_import_ray(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", LOCAL_RUN], capture_output=True, text=True, env=env, timeout=300,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["after_import"] == [] and result["after_train"] == []
    # d/da (a - 2)^2 = 2 (a - 2), clipped to norm 1 (max_grad_norm's default): four steps of lr from 0
    assert result["a"] == pytest.approx(4 * 0.1, rel=1e-6)
    assert result["eval_loss"] == pytest.approx((2 - result["a"]) ** 2, rel=1e-5)
    assert result["folders"] == ["checkpoint-2", "checkpoint-4"] and result["step"] == 4


def test_an_optuna_search_of_trials_in_this_process_never_imports_ray(tmp_path):
    """No Ray in the search either (checking its options once imported Ray Train: 0.5 s before the
    first trial)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", OPTUNA_SEARCH], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ray"] == []
    # every trial: a = 0.4 after four clipped SGD steps (as above); the objective is the eval loss
    assert result["objective"] == pytest.approx((2 - 0.4) ** 2, rel=1e-5)


def test_fixed_cost_is_what_the_steps_do_not_explain():
    # 1 s of set-up and 20 ms a step: 10 steps take 1.2 s, 210 steps 5.2 s
    assert startup.fixed_cost(1.2, 5.2) == pytest.approx(1.0)
    results = {"raytrainer": {"construct": [0.3, 0.5], "fixed": [0.1, 0.1]}, "bare": {"fixed": [0.2, 0.6]}}
    assert startup.over_bare(results, "raytrainer") == pytest.approx(0.4 + 0.1 - 0.4)


@pytest.mark.parametrize("library", ["raytrainer", "bare"])
def test_a_benchmark_child_trains_and_times_each_phase(library):
    figures = startup.child(library, 3)
    assert set(figures) == {"import", "construct", "train"}
    assert figures["train"] > 0 and all(value >= 0 for value in figures.values())
