"""push_to_hub against a local stand-in of the Hub's HTTP API (tests/_hub_server.py), through
huggingface_hub with HF_ENDPOINT pointing at it: repository creation, background pushes at each
save for every hub_strategy, the end of training waiting for them, Trainer.push_to_hub() and the
model card, clear errors before training, and the token never written or logged."""

import json
import logging
import os
import socket

import pytest
import torch
from _hub_server import StubHub
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainerCallback, TrainingArguments

hub_constants = pytest.importorskip("huggingface_hub.constants",
                                      reason="push_to_hub needs huggingface_hub (pip install 'raytrainer[hub]')")

TOKEN = "hf_test_SECRET_0123456789"
USER = "tester"


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # never the machine's saved login
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with StubHub({TOKEN: USER}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        # huggingface_hub read HF_ENDPOINT when it was imported; its own background requests (an
        # agent registry it fetches for its user-agent header) must not leave the machine either
        monkeypatch.setattr(hub_constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # read at import; other tests set it
        yield server.state


def make_trainer(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), max_steps=6, save_steps=3, logging_steps=2,
                   per_device_train_batch_size=8, learning_rate=0.05, disable_tqdm=True, report_to="none",
                   push_to_hub=True, hub_model_id="tiny-regressor", hub_token=TOKEN)
    options.update(overrides)
    torch.manual_seed(0)
    return Trainer(model=RegressionModel(), args=TrainingArguments(**options), train_dataset=RegressionDataset(48),
                   eval_dataset=RegressionDataset(16, seed=2))


def load_weights_dict(path):
    from safetensors.torch import load_file

    return load_file(path)


def test_every_save_pushes_the_model_in_the_background_and_training_waits(hub, tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.hub_model_id == f"{USER}/tiny-regressor"  # the namespace comes from the token's owner
    assert hub.repos == {f"{USER}/tiny-regressor": {"private": False}}
    trainer.train()
    # train() returned only once the uploads were done: both saves are on the Hub
    messages = [commit.message for commit in hub.commits]
    assert messages == ["Training in progress, step 3", "Training in progress, step 6"]
    last = hub.commits[-1].files
    # output_dir's top level only; training_args.bin is in HF's layout (its token fields cleared)
    assert set(last) == {"model.safetensors", "training_args.json", "training_args.bin"}
    assert TOKEN.encode() not in last["training_args.bin"]
    on_disk = open(tmp_path / "out" / "checkpoint-6" / "model.safetensors", "rb").read()
    assert last["model.safetensors"] == on_disk
    assert json.loads(last["training_args.json"])["hub_token"] == "<HUB_TOKEN>"
    unauthenticated = [path for _, path, headers in hub.requests if headers.get("authorization") != f"Bearer {TOKEN}"]
    assert set(unauthenticated) <= {"/api/agent-harnesses"}  # huggingface_hub's own, token-free lookup


def test_a_save_during_a_running_upload_is_skipped_and_the_last_one_pushed_at_the_end(hub, tmp_path):
    hub.commit_delay = 1.5  # each upload outlasts several training steps
    trainer = make_trainer(tmp_path, save_steps=1, max_steps=4)
    trainer.train()
    steps = [int(commit.message.rsplit(" ", 1)[1]) for commit in hub.commits]
    assert steps[0] == 1 and steps[-1] == 4  # the first save, then the final model once the upload finished
    assert len(steps) < 4  # saves 2 and 3 came while an upload was running
    final = open(tmp_path / "out" / "checkpoint-4" / "model.safetensors", "rb").read()
    assert hub.files(f"{USER}/tiny-regressor")["model.safetensors"] == final


def test_hub_always_push_pushes_every_save_in_order(hub, tmp_path):
    hub.commit_delay = 0.3
    make_trainer(tmp_path, save_steps=1, max_steps=4, hub_always_push=True).train()
    assert [commit.message for commit in hub.commits] == [f"Training in progress, step {s}" for s in (1, 2, 3, 4)]


@pytest.mark.parametrize("strategy, folder", [("checkpoint", "last-checkpoint"), ("all_checkpoints", None)])
def test_checkpoint_strategies_push_the_checkpoint_folders(hub, tmp_path, strategy, folder):
    make_trainer(tmp_path, hub_strategy=strategy).train()
    files = hub.files(f"{USER}/tiny-regressor")
    prefixes = [folder] if folder else ["checkpoint-3", "checkpoint-6"]
    for prefix in prefixes:
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"):
            assert f"{prefix}/{name}" in files, (prefix, name)
    state = json.loads(files[f"{prefixes[-1]}/trainer_state.json"])
    assert state["global_step"] == 6  # last-checkpoint holds the latest save
    checkpoint_commits = [c.message for c in hub.commits if c.message.endswith(", checkpoint")]
    assert checkpoint_commits == ["Training in progress, step 3, checkpoint", "Training in progress, step 6, checkpoint"]


class StopAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_last_checkpoint_from_the_hub_resumes_training(hub, tmp_path):
    interrupted = make_trainer(tmp_path, hub_strategy="checkpoint")
    interrupted.add_callback(StopAfter(3))
    interrupted.train()
    download = tmp_path / "download" / "last-checkpoint"
    for path, content in hub.files(f"{USER}/tiny-regressor").items():
        if path.startswith("last-checkpoint/"):
            target = tmp_path / "download" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    resumed = make_trainer(tmp_path, output_dir=str(tmp_path / "resumed"), max_steps=6, push_to_hub=False)
    assert resumed.train(resume_from_checkpoint=str(download)).global_step == 6
    straight = make_trainer(tmp_path, output_dir=str(tmp_path / "straight"), max_steps=6, push_to_hub=False)
    straight.train()
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        torch.testing.assert_close(a, b)


def test_end_strategy_pushes_on_save_model_and_push_to_hub_with_a_model_card(hub, tmp_path):
    trainer = make_trainer(tmp_path, hub_strategy="end", eval_strategy="steps", eval_steps=3)
    trainer.train()
    assert hub.commits == []  # nothing is pushed during training with "end"
    trainer.save_model()
    assert [c.message for c in hub.commits] == ["Model save"]
    info = trainer.push_to_hub(commit_message="Final model", tags=["regression"], license="mit")
    assert info.oid and hub.commits[-1].message == "Final model"
    files = hub.commits[-1].files
    weights = load_weights_dict(str(tmp_path / "out" / "model.safetensors"))
    model_state = trainer.model.state_dict()
    assert all(torch.equal(weights[name], model_state[name]) for name in weights)
    assert files["model.safetensors"] == open(tmp_path / "out" / "model.safetensors", "rb").read()
    assert not any(path.startswith("checkpoint-") for path in files)
    card = files["README.md"].decode()
    from huggingface_hub import ModelCard

    metadata = ModelCard(card).data
    assert metadata.license == "mit"
    assert {"raytrainer", "generated_from_trainer", "regression"} <= set(metadata.tags)
    assert "- learning_rate: 0.05" in card and "- training_steps: 6" in card
    eval_losses = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert f"| {eval_losses[0]:.4f} |" in card  # the training results table has every evaluation


def test_push_to_hub_non_blocking_returns_a_future(hub, tmp_path):
    trainer = make_trainer(tmp_path, push_to_hub=False, hub_model_id=None, max_steps=2)
    trainer.train()
    assert trainer.hub_model_id is None and hub.commits == []
    future = trainer.push_to_hub(blocking=False, token=TOKEN)  # push_to_hub=False: the repo is made now
    assert future.result().oid
    assert trainer.hub_model_id == f"{USER}/out"  # default repository name: the name of output_dir
    assert hub.commits[-1].message == "End of training" and "model.safetensors" in hub.commits[-1].files


def test_private_repository(hub, tmp_path):
    make_trainer(tmp_path, hub_private_repo=True, hub_model_id="org-like/private-model")
    assert hub.repos == {"org-like/private-model": {"private": True}}


def test_model_card_lists_evaluation_results_with_task_and_dataset(hub, tmp_path):
    trainer = make_trainer(tmp_path, push_to_hub=False, eval_strategy="steps", eval_steps=3)
    trainer.train()
    trainer.create_model_card(tasks="tabular-regression", dataset="synthetic-regression", language="en",
                              finetuned_from="someone/base-model")
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(tmp_path / "out" / "README.md"))
    results = card.data.eval_results
    last_eval = [e for e in trainer.state.log_history if "eval_loss" in e][-1]
    assert [(r.task_type, r.dataset_name, r.metric_type) for r in results] == [
        ("tabular-regression", "synthetic-regression", "loss")]
    assert results[0].metric_value == pytest.approx(last_eval["eval_loss"])
    assert card.data.base_model == "someone/base-model" and card.data.language == "en"


def test_unreachable_hub_fails_before_training(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConnectionError, match=rf"push_to_hub: the Hugging Face Hub at http://127.0.0.1:{port} "
                                              r"cannot be reached .*set push_to_hub=False") as error:
        make_trainer(tmp_path)
    assert TOKEN not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_refused_token_fails_before_training(hub, tmp_path):
    with pytest.raises(PermissionError, match=r"refused to create the repository 'tiny-regressor' \(HTTP 401\).*"
                                              r"hub_token"):
        make_trainer(tmp_path, hub_token="hf_wrong_token")


def test_search_trials_are_not_pushed(hub, tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.state.is_hyper_param_search = True
    (tmp_path / "out" / "checkpoint-1").mkdir(parents=True)
    trainer._push_from_checkpoint(str(tmp_path / "out" / "checkpoint-1"))
    trainer._finish_current_push()
    assert hub.commits == []


def test_the_token_is_never_written_or_logged(hub, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    trainer = make_trainer(tmp_path, hub_strategy="checkpoint", log_level="debug", eval_strategy="steps",
                           eval_steps=3)
    trainer.train()
    trainer.push_to_hub()
    print(trainer.args, repr(trainer.args))
    written = [os.path.join(root, name) for root, _, names in os.walk(tmp_path / "out") for name in names]
    assert any(path.endswith("trainer_state.json") for path in written)
    assert any(path.endswith("training_args.json") for path in written)
    for path in written:
        assert TOKEN.encode() not in open(path, "rb").read(), path
    for commit in hub.commits:
        for path, content in commit.files.items():
            assert TOKEN.encode() not in content, path
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    assert TOKEN not in caplog.text
