"""Population-based training on the Ray backend really exploits: trials hand Tune a checkpoint with
every score, a cloned trial starts from its donor's weights and schedule position with its own
learning rate, and its folder holds one consistent lineage. Plus the checks made before any trial."""

import glob
import json
import os
import uuid

import pytest
import ray
import torch
from conftest import RegressionDataset, RegressionModel
from ray import tune
from ray.train import ScalingConfig
from ray.tune.schedulers import PopulationBasedTraining
from safetensors.torch import load_file

from raytrainer import Trainer, TrainerCallback, TrainingArguments
from raytrainer.hpo.pbt import ExploredHyperparameters, read_exploits

GOOD_LR, BAD_LR = 0.05, 1e-5


def model_init(trial=None):
    torch.manual_seed(0)
    return RegressionModel()


class FirstWeights(TrainerCallback):
    """Records, for every (re)start of a trial, its step and weights, and the learning rate of its
    first step (when it has one left to take); and every evaluation of every trial."""

    def __init__(self, folder):
        self.folder = folder
        self.record = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.record = {"trial_id": ray.tune.get_context().get_trial_id(), "step": state.global_step,
                       "learning_rate": args.learning_rate,
                       "weights": {name: value.tolist() for name, value in model.state_dict().items()},
                       "file": os.path.join(self.folder, f"start-{uuid.uuid4().hex}.json")}
        self._write()

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.record is not None and "lr" not in self.record:
            self.record["lr"] = optimizer.param_groups[0]["lr"]
            self._write()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        trial_id = ray.tune.get_context().get_trial_id()
        with open(os.path.join(self.folder, f"evaluations-{trial_id}.jsonl"), "a") as f:
            f.write(json.dumps({"step": state.global_step, "eval_loss": metrics["eval_loss"]}) + "\n")

    def _write(self):
        with open(self.record["file"], "w") as f:
            json.dump(self.record, f)


def make_trainer(out, callbacks=(), **overrides):
    options = dict(output_dir=str(out), eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                   max_steps=12, per_device_train_batch_size=8, logging_steps=4, report_to="none", disable_tqdm=True,
                   lr_scheduler_type="constant", seed=3)
    options.update(overrides)
    return Trainer(model_init=model_init, args=TrainingArguments(**options), train_dataset=RegressionDataset(64),
                   eval_dataset=RegressionDataset(32, seed=3), callbacks=list(callbacks))


def pbt(**overrides):
    options = dict(time_attr="training_iteration", perturbation_interval=1, quantile_fraction=0.5,
                   hyperparam_mutations={"learning_rate": [GOOD_LR, BAD_LR]}, resample_probability=1.0, synch=True)
    options.update(overrides)
    return PopulationBasedTraining(**options)


def test_pbt_errors_before_any_trial(tmp_path):
    trainer = make_trainer(tmp_path, save_steps=8)
    with pytest.raises(ValueError, match=r"every evaluation must have a checkpoint.*save_steps to eval_steps \(4\)"):
        trainer.hyperparameter_search(hp_space={"learning_rate": tune.choice([GOOD_LR])}, backend="ray",
                                      n_trials=1, scheduler=pbt())
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"remove the per-trial scaling_config"):
        trainer.hyperparameter_search(hp_space={"learning_rate": tune.choice([GOOD_LR])}, backend="ray", n_trials=1,
                                      scheduler=pbt(), scaling_config=ScalingConfig(num_workers=2))
    with pytest.raises(ValueError, match=r"cannot run a define-by-run one"):
        trainer.hyperparameter_search(hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 0.01, 0.1)},
                                      backend="ray", n_trials=1, scheduler=pbt())
    assert not os.path.exists(os.path.join(tmp_path, "hp_search"))  # no trial started


def test_explored_learning_rate_replaces_the_donors_in_optimizer_and_schedule(tmp_path, make_args):
    donor = tmp_path / "donor"
    donor.mkdir()
    (donor / "training_args.json").write_text(json.dumps({"learning_rate": 0.1, "weight_decay": 0.01}))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW([{"params": [model.weight], "weight_decay": 0.01},
                                   {"params": [model.bias], "weight_decay": 0.0}], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 10)
    for _ in range(4):  # the donor's schedule position: lr = 0.1 * 0.6
        optimizer.step()
        scheduler.step()
    args = make_args(learning_rate=0.02, weight_decay=0.05)
    ExploredHyperparameters(str(donor)).on_train_begin(args, None, None, optimizer=optimizer, lr_scheduler=scheduler)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.02 * 0.6] * 2)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 0.5)  # the schedule goes on at the new rate


@pytest.mark.slow
def test_a_cloned_trial_starts_from_its_donors_checkpoint(tmp_path, ray_instance):
    starts = tmp_path / "starts"
    starts.mkdir()
    trainer = make_trainer(tmp_path / "out", callbacks=[FirstWeights(str(starts))])
    trainer.hyperparameter_search(hp_space={"learning_rate": tune.grid_search([GOOD_LR, BAD_LR])}, backend="ray",
                                  n_trials=1, scheduler=pbt(), max_concurrent_trials=2)
    records = [json.load(open(path)) for path in glob.glob(str(starts / "*.json"))]
    clones = [(run_dir, exploit) for run_dir in glob.glob(str(tmp_path / "out" / "run-*"))
              for exploit in read_exploits(run_dir)]
    assert clones, f"no trial was cloned; trial starts: {[(r['trial_id'], r['step']) for r in records]}"
    for run_dir, exploit in clones:
        trial_id = os.path.basename(run_dir)[len("run-"):]
        step = exploit["step"]
        donor = load_file(os.path.join(exploit["donor_checkpoint"], "model.safetensors"))
        first = [r for r in records if r["trial_id"] == trial_id and r["step"] == step]
        assert first, f"trial {trial_id} never started at step {step}"
        weights = {name: torch.tensor(value) for name, value in first[0]["weights"].items()}
        assert set(weights) == set(donor)
        for name in donor:
            assert torch.equal(weights[name], donor[name]), name
        # the clone trains with its own (explored) learning rate from the donor's position
        if step < 12:
            assert first[0]["lr"] == pytest.approx(first[0]["learning_rate"])
        # its folder now holds the donor's weights at that step, and it trained on to the end
        own = load_file(os.path.join(run_dir, f"checkpoint-{step}", "model.safetensors"))
        assert all(torch.equal(own[name], donor[name]) for name in donor)
        assert json.load(open(os.path.join(run_dir, "trial_result.json")))["global_step"] == 12
    # the first exploit: the trial that started with the useless rate took the good trial's weights
    # and position, although it had reached a much worse objective of its own at that step
    run_dir, exploit = min(clones, key=lambda clone: clone[1]["time"])
    trial_id = os.path.basename(run_dir)[len("run-"):]
    assert exploit["donor_hyperparameters"]["learning_rate"] == GOOD_LR
    assert [r["learning_rate"] for r in records if r["trial_id"] == trial_id and r["step"] == 0] == [BAD_LR]
    evaluations = {path: [json.loads(line) for line in open(path)]
                   for path in glob.glob(str(starts / "evaluations-*.jsonl"))}
    own_losses = [e["eval_loss"] for path, rows in evaluations.items() if trial_id in path for e in rows
                  if e["step"] == exploit["step"]]
    donor_losses = [e["eval_loss"] for path, rows in evaluations.items() if trial_id not in path for e in rows
                    if e["step"] == exploit["step"]]
    assert own_losses[0] > 1.2 * donor_losses[0]  # its own first evaluation of that step, before the exploit
