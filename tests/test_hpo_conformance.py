"""One sweep, every way it can run: both search backends x both kinds of trial (in the trial's
own process, on two Ray Train workers). The same space gives the same best trial, its
objective equals a plain training run with the best value, and its checkpoint holds that model."""


import optuna
import pytest
import torch
from conftest import RegressionDataset, RegressionModel
from ray.train import ScalingConfig

from raytrainer import Trainer, TrainingArguments
from raytrainer.checkpoints import load_weights

GOOD_LR, BAD_LR = 0.05, 1e-6
# per-device batch for each kind of trial: two workers x 4 is one process x 8
KINDS = {"in_process": (None, 8), "workers": (ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}), 4)}
CASES = [pytest.param(backend, kind, id=f"{backend}-{kind}",
                      marks=() if (backend, kind) == ("optuna", "in_process") else pytest.mark.slow)
         for backend in ("optuna", "ray") for kind in KINDS]


def model_init(trial=None):
    torch.manual_seed(0)
    return RegressionModel()


def space(trial):
    return {"learning_rate": trial.suggest_categorical("learning_rate", [GOOD_LR, BAD_LR])}


def _args(out, batch, **overrides):
    options = dict(output_dir=str(out), eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                   max_steps=8, per_device_train_batch_size=batch, logging_steps=4, report_to="none",
                   disable_tqdm=True, seed=3)
    options.update(overrides)
    return TrainingArguments(**options)


def _trainer(out, batch, **overrides):
    return Trainer(model_init=model_init, args=_args(out, batch, **overrides), train_dataset=RegressionDataset(64),
                   eval_dataset=RegressionDataset(32, seed=3))


@pytest.mark.parametrize("backend, kind", CASES)
def test_every_backend_and_trial_kind_finds_the_same_best_trial(request, tmp_path, backend, kind):
    scaling, batch = KINDS[kind]
    if backend == "ray" or scaling is not None:
        request.getfixturevalue("ray_instance")
    options = {"max_concurrent_trials": 1} if backend == "ray" else {}
    sweep = _trainer(tmp_path / "sweep", batch)
    best = sweep.hyperparameter_search(
        hp_space=space, n_trials=2, backend=backend, scaling_config=scaling,
        sampler=optuna.samplers.GridSampler({"learning_rate": [GOOD_LR, BAD_LR]}, seed=0), **options)

    reference = _trainer(tmp_path / "plain", 8, learning_rate=GOOD_LR, save_strategy="no")
    reference.train()
    assert best.hyperparameters == {"learning_rate": GOOD_LR}
    assert best.objective == pytest.approx(reference.state.log_history[-2]["eval_loss"], rel=1e-4)
    rows = open(tmp_path / "sweep" / "hp_search_results.csv").read().splitlines()[1:]
    assert len(rows) == 2 and all(row.split(",")[2] == "complete" for row in rows)
    assert best.checkpoint.endswith("checkpoint-8")
    model = model_init()
    load_weights(model, best.checkpoint)
    reference.model = reference.model_wrapped = model
    assert reference.evaluate()["eval_loss"] == pytest.approx(best.objective, rel=1e-5)
