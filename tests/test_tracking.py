"""report_to: TensorBoard event files, an MLflow SQLite store and offline Weights & Biases runs,
each read back with the integration's own library and compared with the Trainer's log history;
"all"/"none", rank 0 only, clear errors for a missing library, and one run per search trial.
Everything stays on this machine (W&B offline, MLflow in a local file)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainerState, TrainingArguments
from raytrainer.integrations import installed_integrations, registry

MLFLOW_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN",
                   "MLFLOW_TAGS", "HF_MLFLOW_LOG_ARTIFACTS", "TENSORBOARD_LOGGING_DIR", "WANDB_PROJECT",
                   "WANDB_LOG_MODEL", "WANDB_RUN_GROUP")


@pytest.fixture()
def local_tracking(monkeypatch, tmp_path):
    """Every integration writes under tmp_path and nowhere else."""
    for name in MLFLOW_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working directory
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-runs"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def make_trainer(tmp_path, report_to, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=2, eval_strategy="steps",
                   eval_steps=3, save_steps=3, per_device_train_batch_size=8, learning_rate=0.05,
                   disable_tqdm=True, report_to=report_to, run_name="tiny-run")
    options.update(overrides)
    torch.manual_seed(0)
    return Trainer(model=RegressionModel(), args=TrainingArguments(**options), train_dataset=RegressionDataset(48),
                   eval_dataset=RegressionDataset(16, seed=2))


def logged(trainer, key) -> dict:
    """``{step: value}`` of a key in the Trainer's log history."""
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


def callback_of(trainer, name):
    return next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == name)


# --------------------------------------------------------------------------- choosing integrations


def test_report_to_all_and_none_and_a_users_own_instance(local_tracking):
    names = lambda t: [type(cb).__name__ for cb in t.callback_handler.callbacks]  # noqa: E731
    shipped = {"tensorboard": "TensorBoardCallback", "mlflow": "MLflowCallback", "wandb": "WandbCallback"}
    everything = make_trainer(local_tracking, "all")
    assert [n for n in names(everything) if n in shipped.values()] == [shipped[n] for n in installed_integrations()]
    assert not set(names(make_trainer(local_tracking, "none"))) & set(shipped.values())
    tensorboard_cls = registry.callback_class("tensorboard")
    own = tensorboard_cls()
    trainer = Trainer(model=RegressionModel(), args=TrainingArguments(output_dir=str(local_tracking / "o"),
                                                                      report_to="tensorboard"),
                      callbacks=[own])
    board = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, tensorboard_cls)]
    assert board == [own]  # report_to does not add a second one


def test_a_missing_library_is_a_clear_error_before_training(local_tracking, monkeypatch):
    real = registry.is_installed
    monkeypatch.setattr(registry, "is_installed", lambda name: name != "mlflow" and real(name))
    assert "mlflow" not in installed_integrations()  # "all" skips what is not installed
    with pytest.raises(ImportError, match=r"report_to includes 'mlflow', but the mlflow package is not installed\. "
                                          r"Install it with `pip install mlflow`"):
        make_trainer(local_tracking, ["tensorboard", "mlflow"])
    assert not (local_tracking / "out").exists()


def test_only_world_rank_zero_reports(local_tracking):
    pytest.importorskip("mlflow", reason="needs mlflow (pip install 'raytrainer[tracking]')")
    args = TrainingArguments(output_dir=str(local_tracking / "out"), report_to="none")
    replica = TrainerState(is_world_process_zero=False, global_step=2)
    for name in ("tensorboard", "mlflow"):
        callback = registry.callback_class(name)()
        callback.on_train_begin(args, replica, None, model=RegressionModel())
        callback.on_log(args, replica, None, logs={"loss": 1.0})
        callback.on_train_end(args, replica, None)
    assert not os.path.exists(args.logging_dir)
    assert not (local_tracking / "mlflow.db").exists()


def test_settings_travel_with_a_pickled_callback_but_credentials_do_not(local_tracking, monkeypatch):
    import pickle

    pytest.importorskip("wandb", reason="needs wandb (pip install 'raytrainer[tracking]')")
    monkeypatch.setenv("WANDB_PROJECT", "from-the-driver")
    monkeypatch.setenv("WANDB_API_KEY", "secret-key-0123456789")
    shipped = pickle.dumps(registry.callback_class("wandb")())  # as sent to the Ray workers
    assert b"secret-key-0123456789" not in shipped
    monkeypatch.delenv("WANDB_PROJECT")  # a worker started before the driver set it
    on_worker = pickle.loads(shipped)
    assert on_worker.env("WANDB_PROJECT") == "from-the-driver"
    assert on_worker.env("WANDB_API_KEY") == "secret-key-0123456789"  # read from the worker's own environment


# --------------------------------------------------------------------------- TensorBoard


def tensorboard_scalars(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}, events


def test_tensorboard_event_files_hold_hf_tags(local_tracking):
    pytest.importorskip("tensorboard", reason="TensorBoard's reader needs tensorboard (pip install tensorboard)")
    trainer = make_trainer(local_tracking, "tensorboard")
    trainer.train()
    scalars, events = tensorboard_scalars(trainer.args.logging_dir)
    assert scalars["train/loss"] == pytest.approx(logged(trainer, "loss"))
    assert sorted(scalars["train/loss"]) == [2, 4, 6]
    assert scalars["train/learning_rate"] == pytest.approx(logged(trainer, "learning_rate"))
    assert scalars["eval/loss"] == pytest.approx(logged(trainer, "eval_loss"))
    assert sorted(scalars["eval/loss"]) == [3, 6]
    assert scalars["train/train_loss"] == pytest.approx(logged(trainer, "train_loss"))
    assert "args/text_summary" in events.Tags()["tensors"]


def test_tensorboard_logging_dir_from_the_environment(local_tracking, monkeypatch):
    pytest.importorskip("tensorboard", reason="TensorBoard's reader needs tensorboard (pip install tensorboard)")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(local_tracking / "board"))
    trainer = make_trainer(local_tracking, "tensorboard", max_steps=2, eval_strategy="no")
    trainer.train()
    assert tensorboard_scalars(local_tracking / "board")[0]["train/loss"] == pytest.approx(logged(trainer, "loss"))
    assert not os.path.exists(trainer.args.logging_dir)


# --------------------------------------------------------------------------- MLflow


def mlflow_runs(tracking_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments, order_by=["attributes.start_time ASC"])


def metric_history(client, run_id, key) -> dict:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_mlflow_sqlite_store_params_metrics_and_checkpoint_artifacts(local_tracking, monkeypatch):
    pytest.importorskip("mlflow", reason="needs mlflow (pip install 'raytrainer[tracking]')")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-experiment")
    monkeypatch.setenv("MLFLOW_TAGS", json.dumps({"team": "tests"}))
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "1")
    trainer = make_trainer(local_tracking, "mlflow")
    trainer.train()
    client, runs = mlflow_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "tiny-run" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tiny-experiment"
    assert run.data.tags["team"] == "tests"
    assert run.data.params["learning_rate"] == "0.05" and run.data.params["max_steps"] == "6"
    assert run.data.params["hub_token"] == "<HUB_TOKEN>"
    assert metric_history(client, run.info.run_id, "loss") == pytest.approx(logged(trainer, "loss"))
    assert metric_history(client, run.info.run_id, "eval_loss") == pytest.approx(logged(trainer, "eval_loss"))
    saved = {item.path for item in client.list_artifacts(run.info.run_id, "checkpoint-6")}
    assert {"checkpoint-6/model.safetensors", "checkpoint-6/trainer_state.json"} <= saved
    # an evaluation after training logs into the same run
    trainer.evaluate(RegressionDataset(8, seed=5), metric_key_prefix="eval_extra")
    assert list(metric_history(client, run.info.run_id, "eval_extra_loss")) == [6]
    assert len(mlflow_runs(os.environ["MLFLOW_TRACKING_URI"])[1]) == 1


def test_mlflow_uses_a_run_the_user_started(local_tracking):
    mlflow = pytest.importorskip("mlflow", reason="needs mlflow (pip install 'raytrainer[tracking]')")
    with mlflow.start_run(run_name="mine") as mine:
        make_trainer(local_tracking, "mlflow", eval_strategy="no", max_steps=2).train()
        assert mlflow.active_run().info.run_id == mine.info.run_id  # left open for the user
    client, runs = mlflow_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert [r.info.run_name for r in runs] == ["mine"]
    assert list(metric_history(client, mine.info.run_id, "loss")) == [2]


# --------------------------------------------------------------------------- Weights & Biases


def wandb_records(run_dir) -> list:
    """The records of an offline run's ``.wandb`` log, through W&B's own reader (``wandb leet inspect``)."""
    files = [os.path.join(run_dir, name) for name in os.listdir(run_dir) if name.endswith(".wandb")]
    # its own process, not attached to this process's W&B service (WANDB_SERVICE)
    env = {name: value for name, value in os.environ.items() if name != "WANDB_SERVICE"}
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", files[0]],
                            capture_output=True, text=True, timeout=120, env=env)
    if result.returncode != 0:
        pytest.skip(f"this wandb version cannot read offline runs back: {result.stderr.strip()[:200]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def offline_runs(tmp_path) -> list:
    root = tmp_path / "wandb-runs" / "wandb"
    return sorted(str(root / name) for name in os.listdir(root) if name.startswith("offline-run-"))


def wandb_history(records, key) -> dict:
    return {item["train/global_step"]: item[key] for item in (r["history"]["item"] for r in records
                                                                if r["type"] == "history") if key in item}


def test_wandb_offline_run(local_tracking, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="needs wandb (pip install 'raytrainer[tracking]')")
    monkeypatch.setenv("WANDB_PROJECT", "tiny-project")
    trainer = make_trainer(local_tracking, "wandb")
    trainer.train()
    wandb.finish()  # as in HF, the run stays open after train() until the user (or the process) ends it
    (run_dir,) = offline_runs(local_tracking)
    records = wandb_records(run_dir)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert (run["display_name"], run["project"]) == ("tiny-run", "tiny-project")
    config = {}
    for record in records:
        if record["type"] == "config":
            config.update(record["config"].get("update", {}))
        if record["type"] == "run":
            config.update(record["run"].get("config", {}).get("update", {}))
    assert config["learning_rate"] == 0.05
    assert config["model/num_parameters"] == sum(p.numel() for p in trainer.model.parameters()) == 65
    assert wandb_history(records, "train/loss") == pytest.approx(logged(trainer, "loss"))
    assert wandb_history(records, "eval/loss") == pytest.approx(logged(trainer, "eval_loss"))
    summaries = {}
    for record in records:
        if record["type"] == "summary":
            summaries.update(record["summary"].get("update", {}))
    assert summaries["train_loss"] == pytest.approx(trainer.state.log_history[-1]["train_loss"])


# --------------------------------------------------------------------------- hyperparameter search


def model_init(trial=None):
    torch.manual_seed(0)
    return RegressionModel()


def test_each_search_trial_is_its_own_run(local_tracking):
    pytest.importorskip("tensorboard", reason="TensorBoard's reader needs tensorboard (pip install tensorboard)")
    pytest.importorskip("mlflow", reason="needs mlflow (pip install 'raytrainer[tracking]')")
    wandb = pytest.importorskip("wandb", reason="needs wandb (pip install 'raytrainer[tracking]')")
    import optuna

    args = TrainingArguments(output_dir=str(local_tracking / "out"), max_steps=4, logging_steps=2,
                             eval_strategy="steps", eval_steps=4, save_steps=4, per_device_train_batch_size=8,
                             disable_tqdm=True, report_to=["tensorboard", "mlflow", "wandb"], run_name="search")
    trainer = Trainer(model_init=model_init, args=args, train_dataset=RegressionDataset(48),
                      eval_dataset=RegressionDataset(16, seed=2))
    grid = {"learning_rate": [0.05, 0.01]}
    trainer.hyperparameter_search(hp_space=lambda t: {"learning_rate": t.suggest_categorical("learning_rate",
                                                                                             grid["learning_rate"])},
                                  n_trials=2, direction="minimize", backend="optuna",
                                  sampler=optuna.samplers.GridSampler(grid, seed=0))
    wandb.finish()
    names = ["run-0", "run-1"]
    # TensorBoard: one folder per trial under logging_dir
    losses = [tensorboard_scalars(os.path.join(args.logging_dir, name))[0]["train/loss"] for name in names]
    assert [sorted(loss) for loss in losses] == [[2, 4], [2, 4]] and losses[0] != losses[1]
    # MLflow: one run per trial, named after it and tagged with the search's run_name
    client, runs = mlflow_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert [r.info.run_name for r in runs] == names
    assert [r.data.tags["raytrainer.hp_search"] for r in runs] == ["search", "search"]
    assert sorted(r.data.params["learning_rate"] for r in runs) == ["0.01", "0.05"]
    # W&B: one run per trial, grouped under the search
    runs = [next(r["run"] for r in wandb_records(d) if r["type"] == "run") for d in offline_runs(local_tracking)]
    assert sorted((r["display_name"], r["run_group"]) for r in runs) == [("run-0", "search"), ("run-1", "search")]

