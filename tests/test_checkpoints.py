"""Checkpoints users can trust: exact resume, rotation, crash safety, safe and checked loading."""

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import RegressionDataset, RegressionModel, RunsCode

from raytrainer import EarlyStoppingCallback, Trainer
from raytrainer.checkpoints import latest_complete_checkpoint, load_weights, weights


def _train(make_args, model, data, **overrides):
    trainer = Trainer(model=model, args=make_args(**overrides), train_dataset=data)
    trainer.train(resume_from_checkpoint=overrides.pop("_resume", None))
    return trainer


def _losses(trainer, after_step=0):
    return [e["loss"] for e in trainer.state.log_history if "loss" in e and e["step"] > after_step]


@pytest.mark.parametrize("resume", ["path", True])
def test_resume_mid_epoch_with_dropout_is_bit_exact(make_args, resume):
    torch.manual_seed(0)
    model = RegressionModel(dropout=0.3)
    twin, third = copy.deepcopy(model), copy.deepcopy(model)
    data = RegressionDataset(30)  # 8 batches of 4 -> windows [3, 3, 2]: 3 steps per epoch
    common = dict(num_train_epochs=3, gradient_accumulation_steps=3, seed=11, learning_rate=0.02)
    full = Trainer(model=model, args=make_args(**common), train_dataset=data)
    full.train()
    saving = make_args(save_strategy="steps", save_steps=4, **common)
    Trainer(model=twin, args=saving, train_dataset=data).train()
    # forget everything after step 4 (mid-epoch 2), then resume from it with a fresh model
    for step in (8, 9):
        path = os.path.join(saving.output_dir, f"checkpoint-{step}")
        if os.path.isdir(path):
            import shutil

            shutil.rmtree(path)
    target = os.path.join(saving.output_dir, "checkpoint-4") if resume == "path" else True
    resumed = Trainer(model=third, args=saving, train_dataset=data)
    resumed.train(resume_from_checkpoint=target)
    assert resumed.state.global_step == 9
    for (name, a), b in zip(model.named_parameters(), third.parameters()):
        assert torch.equal(a, b), name
    assert _losses(resumed, after_step=4) == _losses(full, after_step=4)


def test_rotation_keeps_newest_and_the_best(make_args):
    values = iter([0.1, 0.5, 0.6, 0.7, 0.8])  # best at the first evaluation (step 2)
    args = make_args(max_steps=10, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="score",
                     greater_is_better=False)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(4), compute_metrics=lambda p: {"score": next(values)})
    trainer.train()
    assert sorted(os.listdir(args.output_dir)) == ["checkpoint-10", "checkpoint-2"]
    assert trainer.state.best_model_checkpoint == os.path.join(args.output_dir, "checkpoint-2")


def test_save_total_limit_one_keeps_best_and_latest_then_only_best(make_args):
    seen = []
    values = iter([0.1, 0.5, 0.6])

    class Watch(EarlyStoppingCallback):
        def on_save(self, args, state, control, **kwargs):
            seen.append(sorted(os.listdir(args.output_dir)))

    args = make_args(max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="score",
                     greater_is_better=False)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(4), compute_metrics=lambda p: {"score": next(values)},
                      callbacks=[Watch(early_stopping_patience=10)])
    trainer.train()
    assert seen == [["checkpoint-2"], ["checkpoint-2", "checkpoint-4"], ["checkpoint-2", "checkpoint-6"]]
    assert os.listdir(args.output_dir) == ["checkpoint-2"]


def test_rotation_without_best_is_by_step_number_not_mtime(make_args):
    args = make_args(max_steps=12, save_strategy="steps", save_steps=2, save_total_limit=3)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16))
    os.makedirs(args.output_dir)
    trainer.train()
    assert sorted(os.listdir(args.output_dir), key=lambda n: int(n.split("-")[1])) == [
        "checkpoint-8", "checkpoint-10", "checkpoint-12"]


_CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads({threads})  # the parent's: the test compares numbers across processes
    from conftest import RegressionDataset, RegressionModel
    import raytrainer.checkpoints.writer as writer
    from raytrainer import Trainer, TrainingArguments

    original = writer._save_training_objects
    def slow_save(trainer, scaler, folder):
        if trainer.state.global_step == 4:
            open(folder + "/started", "w").close()
            time.sleep(120)  # killed here, half-way through writing checkpoint-4
        original(trainer, scaler, folder)
    writer._save_training_objects = slow_save
    torch.manual_seed(0)
    args = TrainingArguments(output_dir={out!r}, max_steps=6, save_strategy="steps", save_steps=2,
                             disable_tqdm=True, per_device_train_batch_size=4, seed=3)
    Trainer(model=RegressionModel(dropout=0.2), args=args, train_dataset=RegressionDataset(24)).train()
""")


def test_crash_while_saving_leaves_the_previous_checkpoint_usable(make_args, tmp_path):
    out = str(tmp_path / "crash")
    script = _CRASH_SCRIPT.format(tests=os.path.dirname(__file__), out=out, threads=torch.get_num_threads())
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and not any(
            os.path.exists(os.path.join(out, name, "started")) for name in (os.listdir(out) if os.path.isdir(out) else [])):
        if process.poll() is not None:
            pytest.fail(f"training script ended early: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    names = sorted(os.listdir(out))
    assert "checkpoint-2" in names and "checkpoint-4" not in names
    assert any(name.startswith(".tmp-checkpoint-4-") for name in names)
    assert latest_complete_checkpoint(out) == os.path.join(out, "checkpoint-2")

    # resume from the survivor; the result equals an uninterrupted run
    torch.manual_seed(0)
    model = RegressionModel(dropout=0.2)
    reference = copy.deepcopy(model)
    args = make_args(output_dir=out, max_steps=6, save_strategy="steps", save_steps=2, seed=3)
    resumed = Trainer(model=model, args=args, train_dataset=RegressionDataset(24))
    resumed.train(resume_from_checkpoint=True)
    Trainer(model=reference, args=make_args(max_steps=6, seed=3), train_dataset=RegressionDataset(24)).train()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]  # the leftover is gone


def test_damaged_checkpoint_is_skipped_with_a_warning(make_args):
    args = make_args(max_steps=4, save_strategy="steps", save_steps=2)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train()
    os.remove(os.path.join(args.output_dir, "checkpoint-4", "trainer_state.json"))
    with pytest.warns(UserWarning, match="Skipping checkpoint .*checkpoint-4: it lacks trainer_state.json"):
        assert latest_complete_checkpoint(args.output_dir).endswith("checkpoint-2")
    with pytest.raises(ValueError, match="not a complete Trainer checkpoint: it lacks trainer_state.json"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train(
            resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-4"))


def test_mismatched_model_and_missing_files_name_the_problem(make_args):
    args = make_args(max_steps=2, save_strategy="steps", save_steps=2)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train()
    folder = os.path.join(args.output_dir, "checkpoint-2")
    with pytest.raises(RuntimeError, match=r"checkpoint-2 does not fit RegressionModel: .*fc1.weight: checkpoint \(8, 4\) vs model \(16, 4\)"):
        load_weights(RegressionModel(hidden=16), folder)
    os.remove(os.path.join(folder, "optimizer.pt"))
    with pytest.raises(ValueError, match="not a complete Trainer checkpoint: it lacks optimizer.pt"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train(resume_from_checkpoint=folder)


def test_pickled_code_in_a_checkpoint_is_refused(make_args, tmp_path):
    args = make_args(max_steps=2, save_strategy="steps", save_steps=2)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train()
    folder = os.path.join(args.output_dir, "checkpoint-2")
    marker = str(tmp_path / "pwned")
    torch.save({"state": {}, "param_groups": [], "evil": RunsCode(marker)}, os.path.join(folder, "optimizer.pt"))
    with pytest.raises(pickle.UnpicklingError, match="Refusing to load .*optimizer.pt"):
        Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8)).train(resume_from_checkpoint=folder)
    assert not os.path.exists(marker)


def test_sharded_safetensors_with_index(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "MAX_SHARD_BYTES", 150)
    model = RegressionModel()
    weights.save_weights(model, str(tmp_path))
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(p.numel() * 4 for p in model.parameters())
    other = RegressionModel()
    load_weights(other, str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_tied_weights_are_saved_once_and_reloaded(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.out = torch.nn.Linear(3, 5, bias=False)
            self.out.weight = self.embed.weight

    model = Tied()
    weights.save_weights(model, str(tmp_path))
    other = Tied()
    load_weights(other, str(tmp_path))
    assert torch.equal(other.out.weight, model.embed.weight) and other.out.weight is other.embed.weight


def test_save_only_model_and_torch_format(make_args):
    args = make_args(max_steps=2, save_strategy="steps", save_steps=2, save_only_model=True, save_safetensors=False)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))
    trainer.train()
    folder = os.path.join(args.output_dir, "checkpoint-2")
    assert sorted(os.listdir(folder)) == ["pytorch_model.bin", "rng_state.pth", "trainer_state.json", "training_args.bin",
                                          "training_args.json"]
    other = RegressionModel()
    load_weights(other, folder)
    assert torch.equal(other.fc2.weight, trainer.model.fc2.weight)


@pytest.mark.parametrize("restore", [True, False])
def test_callback_states_restored_only_when_asked(make_args, restore):
    values = iter([0.1, 0.5, 0.6, 0.7, 0.8, 0.9])
    args = make_args(max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=False,
                     restore_callback_states_from_checkpoint=restore)
    stopper = EarlyStoppingCallback(early_stopping_patience=5)
    Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16), eval_dataset=RegressionDataset(4),
            compute_metrics=lambda p: {"score": next(values)}, callbacks=[stopper]).train()
    saved = json.load(open(os.path.join(args.output_dir, "checkpoint-4", "trainer_state.json")))
    assert saved["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"] == 1
    assert saved["stateful_callbacks"]["TrainerControl"]["args"]["should_save"] is True
    fresh = EarlyStoppingCallback(early_stopping_patience=5)
    args.max_steps = 4
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(4), compute_metrics=lambda p: {"score": 1.0}, callbacks=[fresh])
    trainer.train(resume_from_checkpoint=os.path.join(args.output_dir, "checkpoint-4"))
    assert fresh.early_stopping_patience_counter == (1 if restore else 0)


def test_streaming_safetensors_files_interoperate_with_the_safetensors_library(tmp_path):
    from safetensors.torch import load_file, save_file

    from raytrainer.checkpoints.safetensors_io import read_safetensors, write_safetensors

    tensors = {"w": torch.randn(3, 5), "b16": torch.randn(4).to(torch.bfloat16), "i": torch.arange(6).view(2, 3),
               "empty": torch.zeros(0, 2), "flag": torch.tensor([True, False])}
    write_safetensors(str(tmp_path / "ours.safetensors"), tensors, metadata={"format": "pt"})
    theirs = load_file(str(tmp_path / "ours.safetensors"))
    assert all(torch.equal(theirs[k], v) for k, v in tensors.items())
    save_file(tensors, str(tmp_path / "theirs.safetensors"))
    target = {"w": torch.zeros(3, 5)}
    ours = read_safetensors(str(tmp_path / "theirs.safetensors"), into=target)
    assert ours["w"] is target["w"] and torch.equal(target["w"], tensors["w"])  # read in place
    assert all(torch.equal(ours[k], v) for k, v in tensors.items())


def test_a_failed_load_leaves_the_model_untouched(tmp_path):
    model = RegressionModel()
    weights.save_weights(model, str(tmp_path))
    wider = RegressionModel(hidden=16)
    before = [p.detach().clone() for p in wider.parameters()]
    with pytest.raises(RuntimeError, match="does not fit"):
        load_weights(wider, str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(before, wider.parameters()))


def test_a_tensor_larger_than_one_read_loads_whole_and_a_short_file_is_an_error(tmp_path, monkeypatch):
    """One read returns at most about 2 GiB on Linux: a larger tensor (an fp32 embedding of a large
    vocabulary) takes several reads. Here every read returns at most 1000 bytes."""
    from raytrainer.checkpoints import file_reads
    from raytrainer.checkpoints.safetensors_io import read_safetensors, write_safetensors

    original = file_reads._pread_into
    calls = []

    def short_reads(fd, view, offset):
        calls.append(offset)
        return original(fd, view[:1000], offset)

    monkeypatch.setattr(file_reads, "_pread_into", short_reads)
    weights = {"embedding": torch.randn(50, 40), "bias": torch.arange(7, dtype=torch.int64)}
    path = str(tmp_path / "model.safetensors")
    write_safetensors(path, weights)
    target = torch.empty(50, 40)
    loaded = read_safetensors(path, into={"embedding": target})
    assert loaded["embedding"] is target and torch.equal(target, weights["embedding"])
    assert torch.equal(loaded["bias"], weights["bias"])
    assert len(calls) == 8 + 1  # 8000 bytes in eight reads, 56 in one
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated: tensor bias needs bytes"):
        read_safetensors(path)
