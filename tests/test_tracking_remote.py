"""report_to and push_to_hub beyond one process: a real MLflow tracking server started by the
test on 127.0.0.1 (parameters, metrics by step, checkpoint artifacts uploaded through it), and a
run on two Ray Train workers where only rank 0 reports and pushes to a stand-in Hub, and the
driver's evaluate() continues the same run."""

import glob
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from conftest import RegressionDataset, RegressionModel

from _hub_server import StubHub

from raytrainer import Trainer, TrainingArguments

mlflow = pytest.importorskip("mlflow", reason="needs mlflow (pip install 'raytrainer[tracking]')")
TESTS = os.path.dirname(__file__)
HUB_TOKEN = "hf_remote_SECRET_42"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def tracking_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a SQLite store; yields (url, artifact folder)."""
    port, artifacts = free_port(), tmp_path / "server-artifacts"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(artifacts)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: stopped as a whole
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, artifacts
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def make_trainer(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), max_steps=6, logging_steps=2, eval_strategy="steps",
                   eval_steps=3, save_steps=3, per_device_train_batch_size=8, learning_rate=0.05,
                   disable_tqdm=True, report_to="mlflow", run_name="served-run")
    options.update(overrides.pop("args", {}))
    torch.manual_seed(0)
    return Trainer(model=RegressionModel(), args=TrainingArguments(**options), train_dataset=RegressionDataset(48),
                   eval_dataset=RegressionDataset(16, seed=2), **overrides)


def logged(trainer, key) -> dict:
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


def history(client, run_id, key) -> dict:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_mlflow_tracking_server(tracking_server, tmp_path, monkeypatch):
    url, artifacts = tracking_server
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "served")
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "true")
    trainer = make_trainer(tmp_path)
    trainer.train()
    client = mlflow.MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.run_name == "served-run" and run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == "6" and run.data.params["logging_steps"] == "2"
    assert history(client, run.info.run_id, "loss") == pytest.approx(logged(trainer, "loss"))
    assert sorted(history(client, run.info.run_id, "loss")) == [2, 4, 6]
    assert history(client, run.info.run_id, "eval_loss") == pytest.approx(logged(trainer, "eval_loss"))
    listed = {item.path for item in client.list_artifacts(run.info.run_id, "checkpoint-3")}
    assert "checkpoint-3/model.safetensors" in listed
    # the server stored the uploaded files in its own artifact folder, byte for byte
    (stored,) = glob.glob(str(artifacts / "**" / "checkpoint-3" / "model.safetensors"), recursive=True)
    assert open(stored, "rb").read() == open(tmp_path / "out" / "checkpoint-3" / "model.safetensors", "rb").read()


@pytest.fixture(scope="module")
def stub_hub(tmp_path_factory):
    with StubHub({HUB_TOKEN: "tester"}) as hub:
        yield hub


@pytest.fixture(scope="module")
def ray_with_hub(stub_hub, tmp_path_factory):
    """A local Ray instance (never an existing cluster) whose workers talk to the stand-in Hub
    (HF_ENDPOINT in their environment, as a Ray job sets it with runtime_env)."""
    import ray

    # HF_HUB_OFFLINE: tests of transformers models set it in this process to forbid downloads
    env = {"PYTHONPATH": os.pathsep.join([TESTS, os.path.dirname(TESTS)]), "HF_ENDPOINT": stub_hub.endpoint,
           "HF_HOME": str(tmp_path_factory.mktemp("hf_home")), "HF_HUB_OFFLINE": "0"}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def test_on_two_workers_rank_zero_reports_and_pushes_and_the_driver_continues_the_run(
        ray_with_hub, stub_hub, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="TensorBoard files need tensorboard (pip install tensorboard)")
    from huggingface_hub import constants
    from ray.train import ScalingConfig

    # set after Ray started, so the workers' own environment lacks them: the settings travel with
    # the callbacks
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "on-workers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", stub_hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "ENDPOINT", stub_hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    trainer = make_trainer(tmp_path, args=dict(report_to=["mlflow", "tensorboard"], push_to_hub=True,
                                               hub_model_id="on-workers", hub_strategy="checkpoint",
                                               hub_token=HUB_TOKEN),
                           scaling_config=ScalingConfig(num_workers=2))
    trainer.train()
    # tracking: one MLflow run and one TensorBoard writer, both rank 0's
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("on-workers")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "served-run" and run.info.status == "FINISHED"
    assert history(client, run.info.run_id, "loss") == pytest.approx(logged(trainer, "loss"))
    assert len(glob.glob(os.path.join(trainer.args.logging_dir, "events.out.tfevents.*"))) == 1
    # the hub: rank 0 pushed every save, and train() returned once the uploads were done
    commits = [c for c in stub_hub.state.commits if c.repo_id == "tester/on-workers"]
    assert [c.message for c in commits] == ["Training in progress, step 3", "Training in progress, step 3, checkpoint",
                                            "Training in progress, step 6", "Training in progress, step 6, checkpoint"]
    final = open(tmp_path / "out" / "checkpoint-6" / "model.safetensors", "rb").read()
    files = stub_hub.state.files("tester/on-workers")
    assert files["model.safetensors"] == final and files["last-checkpoint/model.safetensors"] == final
    assert "last-checkpoint/rng_state_1.pth" in files  # the checkpoint Ray merged from both ranks
    for root, _, names in os.walk(tmp_path / "out"):  # Ray's run folder included: no token anywhere
        for name in names:
            assert HUB_TOKEN.encode() not in open(os.path.join(root, name), "rb").read(), name
    # the driver's evaluate() logs into the workers' MLflow run
    metrics = trainer.evaluate(RegressionDataset(8, seed=5), metric_key_prefix="after")
    assert history(client, run.info.run_id, "after_loss") == {6: pytest.approx(metrics["after_loss"])}
    assert len(client.search_runs([experiment.experiment_id])) == 1
