"""Optuna searches with ``n_jobs`` > 1 train trials in processes of their own (``hpo.trial_processes``):
the mailbox between a trial and the driver, then real searches on a local Ray instance."""

import json
import os
import threading

import optuna
import pytest
import torch
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainingArguments
from raytrainer.hpo import trial_processes
from raytrainer.hpo.relay import Mailbox


def test_mailbox_answers_each_question_its_own_ticket_and_wakes_the_driver_at_the_end():
    mailbox, answers = Mailbox(), {}

    def trial():
        answers["report"] = mailbox.ask(("report", 10, [0.5]))
        answers["suggest"] = mailbox.ask(("suggest", "suggest_int", "depth", (1, 4), {}))
        mailbox.close()

    thread = threading.Thread(target=trial)
    thread.start()
    served = []
    while True:
        questions, closed = mailbox.take(timeout=5.0)
        for ticket, question in questions:
            served.append(question[0])
            mailbox.answer(ticket, True if question[0] == "report" else 3)
        if closed:
            break
    thread.join(timeout=5.0)
    assert served == ["report", "suggest"]
    assert answers == {"report": True, "suggest": 3}
    assert mailbox.take(timeout=0.0) == ([], True)  # a closed mailbox answers at once


def test_mailbox_take_waits_no_longer_than_its_timeout():
    assert Mailbox().take(timeout=0.05) == ([], False)


def test_a_question_nobody_answers_gets_the_unanswered_value_at_its_timeout_or_when_the_mailbox_closes():
    mailbox = Mailbox()
    assert mailbox.ask(("report", 10, [0.5]), timeout=0.05, unanswered=False) is False
    answers = []
    asking = threading.Thread(target=lambda: answers.append(mailbox.ask(("report", 20, [0.4]), unanswered=False)))
    asking.start()
    questions, _ = mailbox.take(timeout=5.0)
    assert [question for _, question in questions] == [("report", 10, [0.5]), ("report", 20, [0.4])]
    mailbox.close()  # the driver stopped serving: the waiting worker goes on, unpruned
    asking.join(timeout=5.0)
    assert answers == [False]


class PruneNumbers(optuna.pruners.BasePruner):
    """Prunes the trials with the given numbers at their first report."""

    def __init__(self, numbers):
        self.numbers = set(numbers)

    def prune(self, study, trial) -> bool:
        return trial.number in self.numbers


def _search(tmp_path, name, n_jobs, model_init, pruner=None, n_trials=4, study_params=None):
    rates = [0.01, 0.03, 0.01, 0.03]
    args = TrainingArguments(output_dir=str(tmp_path / name), max_steps=20, eval_strategy="steps", eval_steps=10,
                             save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1000,
                             per_device_train_batch_size=8)
    trainer = Trainer(model_init=model_init, args=args, train_dataset=RegressionDataset(64),
                      eval_dataset=RegressionDataset(16, seed=5))
    trainer.hyperparameter_search(hp_space=lambda trial: {"learning_rate": rates[trial.number]}, n_trials=n_trials,
                                  backend="optuna", n_jobs=n_jobs, direction="minimize",
                                  pruner=pruner or optuna.pruners.NopPruner(),
                                  compute_objective=lambda metrics: metrics["eval_loss"],
                                  callbacks=[] if study_params is None else
                                  [lambda study, trial: study_params.update({trial.number: trial.params})])
    with open(trainer.hp_search_results["json"]) as f:
        return {int(r["run_id"]): r for r in json.load(f)["trials"]}


def model_init_noting_its_process(pid_dir):
    """A model_init that writes which process built trial N's model and asks the trial for one
    more value; trial 3's fails."""

    def model_init(trial):
        if trial is None:  # the Trainer's own call when it is built
            return RegressionModel()
        trial.suggest_int("width_hint", 1, 3)
        with open(os.path.join(pid_dir, f"{trial.number}"), "w") as f:
            f.write(str(os.getpid()))
        if trial.number == 3:
            raise ValueError("model_init refuses trial 3")
        torch.manual_seed(0)
        return RegressionModel()

    return model_init


@pytest.mark.slow
def test_trials_in_processes_report_prune_suggest_and_fail_like_trials_here(tmp_path, ray_instance, monkeypatch):
    monkeypatch.setattr(trial_processes.TrialSlots, "train_here", False)  # every trial in a trial process
    threads = torch.get_num_threads()
    # the same trials in this process, one after another (no Ray)
    model_init = model_init_noting_its_process(str(tmp_path))
    here = _search(tmp_path, "here", 1, model_init, PruneNumbers({2}))
    pids_here = {int(open(tmp_path / f"{n}").read()) for n in range(4)}
    study_params = {}
    away = _search(tmp_path, "away", 2, model_init, PruneNumbers({2}), study_params=study_params)
    pids_away = {int(open(tmp_path / f"{n}").read()) for n in range(4)}

    assert pids_here == {os.getpid()}
    assert os.getpid() not in pids_away and 1 <= len(pids_away) <= 2  # one process per slot
    assert [away[n]["status"] for n in range(4)] == [here[n]["status"] for n in range(4)] == \
        ["complete", "complete", "pruned", "failed"]
    for n in (0, 1):  # the same objectives: each trial alone with torch's generator
        assert away[n]["objective"] == pytest.approx(here[n]["objective"], rel=1e-6)
        # model_init's suggestion went through the driver's trial: the study knows it
        assert away[n]["hyperparameters"]["width_hint"] == study_params[n]["width_hint"]
    assert away[2]["global_step"] == here[2]["global_step"] == 10  # pruned at its first evaluation
    assert "model_init refuses trial 3" in away[3]["error"]
    assert torch.get_num_threads() == threads  # the search gave this process its threads back
