"""Trainer.hyperparameter_search on Optuna and Ray Tune with a tiny regression model: in-process
trials (seconds each), pruning and ASHA, multi-objective, best checkpoints, restarts, early
errors, and one sweep of 2-worker trials. One Ray instance (2 CPUs) serves the module."""

import os

import optuna
import pytest
import torch
from conftest import RegressionDataset, RegressionModel
from ray import tune
from ray.train import ScalingConfig
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from raytrainer import Trainer, TrainingArguments
from raytrainer.checkpoints import load_weights

optuna.logging.set_verbosity(optuna.logging.WARNING)
GOOD_LR, SLOW_LR, BAD_LR = 0.05, 0.01, 1e-6


def model_init(trial=None):
    torch.manual_seed(0)  # every trial starts from the same weights: objectives depend on the lr only
    return RegressionModel()


def lr_space(trial):
    return {"learning_rate": trial.suggest_categorical("learning_rate", [GOOD_LR, SLOW_LR, BAD_LR])}


class PruneTinyLearningRates(optuna.pruners.BasePruner):
    """Deterministic pruning: a trial with the useless learning rate is pruned at its first report."""

    def prune(self, study, trial):
        return trial.params["learning_rate"] < 1e-3 and bool(trial.intermediate_values)


def make_trainer(out, **overrides):
    options = dict(output_dir=str(out), eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                   max_steps=12, per_device_train_batch_size=8, logging_steps=4, report_to="none", disable_tqdm=True,
                   seed=3)
    options.update(overrides)
    return Trainer(model_init=model_init, args=TrainingArguments(**options), train_dataset=RegressionDataset(64),
                   eval_dataset=RegressionDataset(32, seed=3))


def eval_loss_of(trainer, model):
    trainer.model = trainer.model_wrapped = model
    return trainer.evaluate()["eval_loss"]


def grid():
    return optuna.samplers.GridSampler({"learning_rate": [GOOD_LR, SLOW_LR, BAD_LR]}, seed=0)


# ---------------------------------------------------------------------- errors before any trial
def test_errors_before_any_trial(tmp_path):
    plain = Trainer(model=RegressionModel(), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"),
                    train_dataset=RegressionDataset(16), eval_dataset=RegressionDataset(8))
    with pytest.raises(RuntimeError, match=r"pass a model_init to the Trainer"):
        plain.hyperparameter_search(n_trials=1)
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"'learning_rat' is not a field of TrainingArguments.*'learning_rate'"):
        trainer.hyperparameter_search(hp_space=lambda t: {"learning_rat": t.suggest_float("learning_rat", 0.1, 1)})
    with pytest.raises(ValueError, match=r"'seed' is not a field|not a field of TrainingArguments"):
        trainer.hyperparameter_search(hp_space={"sed": tune.randint(1, 3)}, backend="ray")
    with pytest.raises(ValueError, match=r"lr_scheduler_type='nope' is not a valid SchedulerType"):
        trainer.hyperparameter_search(hp_space={"lr_scheduler_type": "nope"})
    with pytest.raises(TypeError, match=r"unknown keyword arguments \['resources_per_trial'\]"):
        trainer.hyperparameter_search(backend="optuna", resources_per_trial={"cpu": 1})
    with pytest.raises(ValueError, match=r"backend 'sigopt' is not supported"):
        trainer.hyperparameter_search(backend="sigopt")
    with pytest.raises(ValueError, match=r"a Tune scheduler compares one metric"):
        trainer.hyperparameter_search(backend="ray", direction=["minimize", "maximize"], scheduler=ASHAScheduler())
    with pytest.raises(ValueError, match=r"no search-space preset or file 'no_such_preset'"):
        trainer.hyperparameter_search(hp_space="no_such_preset")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(("run-", "hp_search"))]


# ---------------------------------------------------------------------- Optuna backend, in-process trials
def test_optuna_prunes_and_loads_the_best_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    best = trainer.hyperparameter_search(hp_space=lr_space, n_trials=3, backend="optuna", sampler=grid(),
                                         pruner=PruneTinyLearningRates(), load_best_model=True)
    study = best.run_summary
    states = {t.params["learning_rate"]: t.state.name for t in study.trials}
    assert states == {GOOD_LR: "COMPLETE", SLOW_LR: "COMPLETE", BAD_LR: "PRUNED"}
    good = next(t for t in study.trials if t.params["learning_rate"] == GOOD_LR)
    assert best.run_id == str(good.number) and best.hyperparameters == {"learning_rate": GOOD_LR}
    assert best.objective == good.value == good.intermediate_values[12]
    assert sorted(good.intermediate_values) == [4, 8, 12]
    bad = next(t for t in study.trials if t.params["learning_rate"] == BAD_LR)
    assert os.listdir(tmp_path / f"run-{bad.number}") == ["trial_result.json"]  # pruned before its first save
    # the best checkpoint: on disk, HF layout, and its weights give the objective again
    assert best.checkpoint == str(tmp_path / f"run-{good.number}" / "checkpoint-12")
    assert best.checkpoint_metrics["eval_loss"] == best.objective
    assert eval_loss_of(trainer, trainer.model) == pytest.approx(best.objective, rel=1e-6)  # load_best_model
    fresh = model_init()
    load_weights(fresh, best.checkpoint)
    assert eval_loss_of(trainer, fresh) == pytest.approx(best.objective, rel=1e-6)
    rows = open(tmp_path / "hp_search_results.csv").read().splitlines()
    assert len(rows) == 4 and rows[0].startswith("run_id,run_name,status,objective,hp_learning_rate")
    assert sorted(row.split(",")[2] for row in rows[1:]) == ["complete", "complete", "pruned"]


def test_optuna_multi_objective_returns_the_pareto_front(tmp_path):
    trainer = make_trainer(tmp_path, save_strategy="no", eval_steps=12)
    front = trainer.hyperparameter_search(hp_space=lr_space, n_trials=3, backend="optuna", sampler=grid(),
                                          compute_objective=lambda m: [m["eval_loss"], m["eval_loss"]],
                                          direction=["minimize", "maximize"])
    study = front[0].run_summary
    assert sorted(r.run_id for r in front) == sorted(str(t.number) for t in study.best_trials)
    assert len(front) == 3 and all(r.objective[0] == r.objective[1] for r in front)
    dominated = trainer.hyperparameter_search(hp_space=lr_space, n_trials=3, backend="optuna", sampler=grid(),
                                              compute_objective=lambda m: (m["eval_loss"], m["eval_loss"]),
                                              direction=["minimize", "minimize"], study_name="second")
    assert len(dominated) == 1 and dominated[0].hyperparameters == {"learning_rate": GOOD_LR}


def test_optuna_study_in_storage_continues_after_a_restart(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    def storage():
        return JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))

    options = dict(hp_space=lr_space, backend="optuna", study_name="sweep", load_if_exists=True,
                   sampler=optuna.samplers.GridSampler({"learning_rate": [GOOD_LR, SLOW_LR, BAD_LR]}, seed=0))
    first = make_trainer(tmp_path).hyperparameter_search(n_trials=2, storage=storage(), **options)
    finished = {name: os.path.getmtime(tmp_path / name / "trial_result.json") for name in ("run-0", "run-1")}
    # a new driver (new Trainer, new storage object) on the same study: only the missing trial runs
    second = make_trainer(tmp_path).hyperparameter_search(n_trials=3, storage=storage(), **options)
    study = second.run_summary
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert sorted(t.params["learning_rate"] for t in study.trials) == sorted([GOOD_LR, SLOW_LR, BAD_LR])
    assert {name: os.path.getmtime(tmp_path / name / "trial_result.json") for name in finished} == finished
    assert second.objective <= first.objective


# ---------------------------------------------------------------------- Ray backend, in-process trials
@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_ray_asha_stops_a_bad_trial_early_and_keeps_the_best_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    best = trainer.hyperparameter_search(
        hp_space={"learning_rate": tune.grid_search([GOOD_LR, BAD_LR])}, n_trials=1, backend="ray",
        search_alg=BasicVariantGenerator(max_concurrent=1), verbose=0,  # the good trial first, then the bad
        scheduler=ASHAScheduler(max_t=10, grace_period=1, reduction_factor=2), load_best_model=True)
    grid_results = best.run_summary
    by_lr = {r.config["learning_rate"]: r for r in grid_results}
    assert len(by_lr[GOOD_LR].metrics_dataframe) == 3 and len(by_lr[BAD_LR].metrics_dataframe) == 1
    good_id = by_lr[GOOD_LR].metrics["trial_id"]
    assert best.run_id == good_id and best.hyperparameters == {"learning_rate": GOOD_LR}
    assert best.objective == by_lr[GOOD_LR].metrics["objective"]
    assert best.checkpoint == str(tmp_path / f"run-{good_id}" / "checkpoint-12")
    bad_dir = tmp_path / f"run-{by_lr[BAD_LR].metrics['trial_id']}"
    assert sorted(os.listdir(bad_dir)) == ["checkpoint-4"]  # stopped at its first report, after that save
    assert eval_loss_of(trainer, trainer.model) == pytest.approx(best.objective, rel=1e-6)
    rows = {row.split(",")[0]: row.split(",")[2] for row in open(tmp_path / "hp_search_results.csv").read().splitlines()}
    assert rows[good_id] == "complete" and rows[by_lr[BAD_LR].metrics["trial_id"]] == "stopped"
    # a new driver restores the experiment instead of starting over: nothing left to run, same answer
    written = (tmp_path / f"run-{good_id}" / "trial_result.json").stat().st_mtime
    again = make_trainer(tmp_path).hyperparameter_search(
        hp_space={"learning_rate": tune.grid_search([GOOD_LR, BAD_LR])}, n_trials=1, backend="ray", verbose=0,
        search_alg=BasicVariantGenerator(max_concurrent=1), resume=True)
    assert (again.run_id, again.objective, again.checkpoint) == (best.run_id, best.objective, best.checkpoint)
    assert (tmp_path / f"run-{good_id}" / "trial_result.json").stat().st_mtime == written


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_ray_runs_the_define_by_run_space_of_the_optuna_tests(tmp_path, capsys, monkeypatch):
    from ray.air._internal import usage

    classified = []  # Tune's usage statistics classify the callbacks passed, importing MLflow and W&B
    monkeypatch.setattr(usage, "_count_callbacks", lambda callbacks: classified.append(callbacks) or {})
    trainer = make_trainer(tmp_path, save_strategy="no")
    best = trainer.hyperparameter_search(hp_space=lr_space, n_trials=3, backend="ray", sampler=grid(),
                                         max_concurrent_trials=1)
    # quiet by default: one line per finished trial instead of Tune's tables, printed without any
    # Tune callback
    printed = capsys.readouterr().out.splitlines()
    assert len([line for line in printed if line.startswith("trial ") and " complete at step 12: objective=" in line]) == 3
    assert not any("╭" in line or "Trial status" in line for line in printed)
    assert classified == []
    # Tune's trial folders name each sampled value once (the define-by-run values sit in two places)
    folders = [name for name in os.listdir(tmp_path / "hp_search") if name.startswith("run-")]
    assert len(folders) == 3 and all(name.count("learning_rate=") == 1 for name in folders), folders
    tried = sorted(r.config["learning_rate"] for r in best.run_summary)
    assert tried == sorted([GOOD_LR, SLOW_LR, BAD_LR])
    assert best.hyperparameters == {"learning_rate": GOOD_LR} and best.checkpoint is None
    good = next(r for r in best.run_summary if r.config["learning_rate"] == GOOD_LR)
    assert best.objective == good.metrics["objective"] == good.metrics["eval_loss"]


def test_presets_by_name_and_path(tmp_path):
    by_name = make_trainer(tmp_path / "name", save_strategy="no").hyperparameter_search(
        hp_space="hf_default", n_trials=1, backend="optuna")
    assert sorted(by_name.hyperparameters) == ["learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                               "seed"]
    preset = tmp_path / "tiny.yaml"
    preset.write_text("parameters:\n  learning_rate: {type: categorical, choices: [0.05]}\n"
                      "  max_steps: {type: fixed, value: 4}\n")
    trainer = make_trainer(tmp_path / "path", save_strategy="no")
    by_path = trainer.hyperparameter_search(hp_space=str(preset), n_trials=1, backend="optuna")
    assert by_path.hyperparameters == {"learning_rate": 0.05}  # a fixed value is set, not sampled
    record = open(tmp_path / "path" / "hp_search_results.csv").read().splitlines()[1].split(",")
    assert record[2:4] == ["complete", str(by_path.objective)] and record[-5] == "4"  # global_step: max_steps=4


# ---------------------------------------------------------------------- trials on 2 Ray Train workers
@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
def test_two_worker_trials_prune_on_the_workers(tmp_path):
    trainer = make_trainer(tmp_path)
    workers = ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5})
    best = trainer.hyperparameter_search(
        hp_space=lr_space, n_trials=2, backend="optuna", scaling_config=workers, n_jobs=2,
        sampler=optuna.samplers.GridSampler({"learning_rate": [GOOD_LR, BAD_LR]}, seed=0),
        pruner=PruneTinyLearningRates())
    states = {t.params["learning_rate"]: (t.state.name, sorted(t.intermediate_values)) for t in best.run_summary.trials}
    assert states == {GOOD_LR: ("COMPLETE", [4, 8, 12]), BAD_LR: ("PRUNED", [4])}
    assert best.hyperparameters == {"learning_rate": GOOD_LR}
    assert best.checkpoint.endswith("checkpoint-12") and os.path.isfile(os.path.join(best.checkpoint, "model.safetensors"))
    fresh = model_init()
    load_weights(fresh, best.checkpoint)
    assert eval_loss_of(trainer, fresh) == pytest.approx(best.objective, rel=1e-5)
