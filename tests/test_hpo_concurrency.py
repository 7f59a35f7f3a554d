"""Why Optuna trials side by side (``n_jobs`` > 1) train in processes of their own.

Root cause, measured: every trial seeds torch's default generator (``set_seed(args.seed)``) and then
draws from it (``model_init``'s initial weights, dropout masks, random augmentations). That
generator is one per process, not per thread, so two trials in two threads of one process
interleave their draws: each trial's numbers depend on the other's timing, and the same
hyperparameters give another objective than they do alone. A model without any random draw gives
the same objectives either way (checked by hand while pinning this down). So at most one trial
trains in the search's process, the others in trial processes (``hpo.trial_processes``).
"""

import threading

import optuna
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import RegressionDataset

from raytrainer import Trainer, TrainingArguments
from raytrainer.seeding import set_seed


def test_two_threads_seeding_the_same_seed_still_draw_each_others_numbers():
    set_seed(7)
    alone = [torch.rand(3) for _ in range(3)]  # what one trial draws alone
    drawn, turn = {}, threading.Barrier(2)

    def trial(name):  # a seeds and draws; b seeds and draws twice; a draws again
        if name == "a":
            set_seed(7)
            first = torch.rand(3)
            turn.wait()
            turn.wait()
            drawn[name] = (first, torch.rand(3))
        else:
            turn.wait()
            set_seed(7)
            drawn[name] = (torch.rand(3), torch.rand(3))
            turn.wait()

    threads = [threading.Thread(target=trial, args=(name,)) for name in "ab"]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert torch.equal(drawn["a"][0], alone[0]) and torch.equal(drawn["b"][0], alone[0])
    # a's second draw is a lone trial's third: b's seeding and draws moved a's stream
    assert torch.equal(drawn["a"][1], alone[2]) and not torch.equal(drawn["a"][1], alone[1])


class DropoutModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.drop, self.out = nn.Linear(4, 32), nn.Dropout(0.3), nn.Linear(32, 1)

    def forward(self, x, labels=None):
        prediction = self.out(self.drop(torch.relu(self.hidden(x))))
        return {"loss": F.mse_loss(prediction, labels), "logits": prediction}


def _objectives(tmp_path, n_jobs: int) -> dict:
    rates = [0.01, 0.03, 0.01, 0.03]
    args = TrainingArguments(output_dir=str(tmp_path / f"jobs{n_jobs}"), max_steps=40, eval_strategy="steps",
                             eval_steps=20, save_strategy="no", report_to="none", disable_tqdm=True,
                             logging_steps=1000, per_device_train_batch_size=8)
    trainer = Trainer(model_init=DropoutModel, args=args, train_dataset=RegressionDataset(128),
                      eval_dataset=RegressionDataset(32, seed=5))
    seen = {}

    def hp_space(trial):
        return {"learning_rate": rates[trial.number]}

    def objective(metrics):
        return metrics["eval_loss"]

    class Record:
        def __call__(self, study, trial):
            seen[trial.number] = (rates[trial.number], trial.value)

    trainer.hyperparameter_search(hp_space=hp_space, compute_objective=objective, n_trials=4, backend="optuna",
                                  n_jobs=n_jobs, direction="minimize", pruner=optuna.pruners.NopPruner(),
                                  callbacks=[Record()])
    return seen


@pytest.mark.slow
def test_trials_with_n_jobs_give_the_objectives_they_give_alone(tmp_path, ray_instance):
    alone = _objectives(tmp_path, n_jobs=1)
    side_by_side = _objectives(tmp_path, n_jobs=2)
    assert alone[0] == alone[2] and alone[1] == alone[3]  # same hyperparameters, same seed: same objective
    assert alone[0][1] != alone[1][1]
    assert side_by_side == alone  # would differ if two trials drew from torch's generator at once
