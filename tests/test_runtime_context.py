"""The seam between the loop and where it runs, tested with fakes of the execution context (as
Ray tests its controller one step at a time): the loop asks the context for everything that
differs between local mode, a Tune trial and Ray workers, and the driver picks the context."""

import os
import types

import pytest
import ray.train
from conftest import RegressionDataset, RegressionModel
from ray.train import RunConfig, ScalingConfig

from raytrainer import Trainer, TrainerCallback
from raytrainer.checkpoints.sinks import RUN_ID_NAME, LocalSink
from raytrainer.loop.run_state import TrainRequest
from raytrainer.loop.training import run_training
from raytrainer.runtime import launch
from raytrainer.runtime.context import ExecutionContext, TuneTrialContext, WorkerContext


class RecordingSink(LocalSink):
    def __init__(self, root, log):
        super().__init__(root)
        self.log = log

    def commit(self, staging, step, metrics, writes_shared):
        self.log.append(("commit", step, sorted(os.listdir(staging))))
        return super().commit(staging, step, metrics, writes_shared)


class Marker(TrainerCallback):
    def __init__(self, log):
        self.log = log

    def on_train_begin(self, args, state, control, **kwargs):
        self.log.append(("callback", state.max_steps))


class FakeContext(ExecutionContext):
    def __init__(self, root):
        super().__init__(root)
        self.log = []

    def checkpoint_sink(self):
        return RecordingSink(self.checkpoint_root, self.log)

    def dataset_shard(self, name):
        self.log.append(("shard", name))
        return None

    def loop_callbacks(self, trainer):
        return [Marker(self.log)]

    def finish(self, trainer, output):
        self.log.append(("finish", output.global_step))


def test_the_loop_runs_in_any_context_without_ray(tmp_path, make_args):
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=4, save_strategy="steps", save_steps=2),
                      train_dataset=RegressionDataset(16))
    context = FakeContext(str(tmp_path / "elsewhere"))
    output = run_training(trainer, context, TrainRequest())
    assert output.global_step == 4
    commits = [entry for entry in context.log if entry[0] == "commit"]
    assert [step for _, step, _ in commits] == [2, 4]
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(commits[0][2])
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["checkpoint-2", "checkpoint-4"]  # the context's root
    assert not os.path.exists(trainer.args.output_dir) or not os.listdir(trainer.args.output_dir)
    assert context.log[0] == ("callback", 4) and context.log[-1] == ("finish", 4)
    assert not any(type(cb).__name__ == "Marker" for cb in trainer.callback_handler.callbacks)  # removed again
    assert trainer._run is None  # the run's state is unbound once training ended


def test_worker_context_resumes_from_rays_checkpoint_only_when_this_run_wrote_it(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / RUN_ID_NAME).write_text("run-a")
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(str(folder)))
    context = WorkerContext.__new__(WorkerContext)  # no Ray Train run around it: only what resume_point reads
    context.job = types.SimpleNamespace(run_id="run-a")
    with context.resume_point("/asked/for") as point:
        assert point == str(folder)  # a restarted worker of this very train() call
    context.job = types.SimpleNamespace(run_id="run-b")
    with context.resume_point("/asked/for") as point:
        assert point == "/asked/for"  # an earlier run's leftovers are not resumed silently
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    with context.resume_point(None) as point:
        assert point is None


@pytest.mark.parametrize("trial, scaling, run_config, expected", [
    (None, None, None, "local"),
    (None, ScalingConfig(num_workers=0), RunConfig(name="mine"), "ray train local mode"),
    (types.SimpleNamespace(in_tune_trial=True, run_name="run-7"), None, None, "tune"),
    (None, ScalingConfig(num_workers=2), None, "workers"),
])
def test_the_driver_picks_the_context(tmp_path, make_args, monkeypatch, trial, scaling, run_config, expected):
    picked = []
    monkeypatch.setattr(launch, "run_loop", lambda trainer, context, request: picked.append(context) or "ran")
    monkeypatch.setattr("raytrainer.runtime.workers.run_on_workers",
                        lambda trainer, scaling_config, request: picked.append("workers") or "ran")
    monkeypatch.setattr("ray.train.torch.TorchTrainer", lambda fn, train_loop_config, **kw: types.SimpleNamespace(
        fit=lambda: (picked.append("ray train local mode"), train_loop_config["job"].result.update(output="ran"))))
    trainer = Trainer(model=RegressionModel(), args=make_args(), train_dataset=RegressionDataset(8),
                      scaling_config=scaling, run_config=run_config)
    request = TrainRequest(trial=trial)
    assert launch.run_training(trainer, request) == "ran"
    if expected == "tune":
        assert isinstance(picked[0], TuneTrialContext)
        assert picked[0].checkpoint_root == os.path.join(trainer.args.output_dir, "run-7")
    elif expected == "local":  # no streams, no RunConfig: the loop runs right here, without Ray Train
        assert [type(context) for context in picked] == [ExecutionContext]
        assert picked[0].checkpoint_root == trainer.args.output_dir
    else:
        assert picked == [expected]
