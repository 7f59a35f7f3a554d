"""Training on real Ray Train workers (2 CPU workers, gloo). Each fit costs ~20 s of fixed start-up
on 2 cores, so these tests are few and each checks several things."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import torch
from conftest import (
    KwargsRegressionModel,
    RegressionDataset,
    RegressionModel,
    TokenDataset,
    TokenModel,
    assert_same_logs,
)
from ray.train import FailureConfig, RunConfig, ScalingConfig

from raytrainer import Trainer, TrainerCallback, TrainingArguments
from raytrainer.runtime import channel as run_channel

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_instance")]
TESTS = os.path.dirname(__file__)


def _args(out, batch, **overrides):
    options = dict(output_dir=str(out), per_device_train_batch_size=batch, per_device_eval_batch_size=3,
                   num_train_epochs=2, logging_steps=2, eval_strategy="epoch", save_strategy="epoch", seed=5,
                   learning_rate=0.05, disable_tqdm=True, report_to="none")
    options.update(overrides)
    return TrainingArguments(**options)


def _first_column(pred):
    return {"count": len(pred.predictions), "checksum": float(pred.predictions.sum()),
            "first": float(pred.predictions[0][0])}


def test_two_workers_equal_one_process_with_twice_the_batch(tmp_path, capsys):
    torch.manual_seed(0)
    # forward takes **kwargs but the loss is a plain mean: neither loss nor gradient may grow with
    # the number of workers (the probe finds that num_items_in_batch does not change the loss)
    model = KwargsRegressionModel()
    reference = RegressionModel()
    reference.load_state_dict(model.state_dict())
    train, dev = RegressionDataset(40), RegressionDataset(13, seed=4)  # 13: not divisible by 2 x 3
    distributed = Trainer(model=model, args=_args(tmp_path / "dist", 4), train_dataset=train, eval_dataset=dev,
                          compute_metrics=_first_column, scaling_config=ScalingConfig(num_workers=2))
    output = distributed.train()
    assert distributed.model_accepts_loss_kwargs is False
    local = Trainer(model=reference, args=_args(tmp_path / "local", 8), train_dataset=train, eval_dataset=dev,
                    compute_metrics=_first_column)
    local_output = local.train()

    # same maths: the driver's model holds the trained weights, equal to one process with batch 8
    assert output.global_step == local_output.global_step == 10
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    # logged loss is the mean over ranks, grad_norm the global norm
    assert_same_logs(distributed.state.log_history, local.state.log_history,
                     ("loss", "grad_norm", "learning_rate", "eval_loss", "eval_count", "eval_checksum"), abs=1e-6)
    assert distributed.state.total_flos == local.state.total_flos > 0  # every worker's FLOPs, summed
    # every eval example counted once, in dataset order
    evals = [e for e in distributed.state.log_history if "eval_count" in e]
    assert [e["eval_count"] for e in evals] == [13, 13]
    # checkpoints through Ray storage land in output_dir, with one RNG file per rank
    folder = tmp_path / "dist" / "checkpoint-10"
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth",
            "rng_state_1.pth"} <= set(os.listdir(folder))
    assert distributed.state.global_step == 10 and distributed.state.log_history[-1]["train_loss"] == output.training_loss
    # the driver streamed the logs live (printed by the driver, not by the workers)
    printed = capsys.readouterr().out
    assert "'loss':" in printed and "'eval_count': 13" in printed
    # and evaluate/predict work on the driver afterwards, on the trained weights
    channel_of_training = run_channel._SHARED["actor"]
    prediction = distributed.predict(dev)
    assert run_channel._SHARED["actor"] is channel_of_training  # one channel actor serves the driver's runs
    torch.testing.assert_close(torch.as_tensor(prediction.predictions), reference(dev.x)["logits"].detach(),
                               rtol=0, atol=1e-5)


class KillRankOneOnce(TrainerCallback):
    """SIGKILLs rank 1 at step 5, the first time only (the marker file survives the restart)."""

    def __init__(self, marker):
        self.marker = marker

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5 and args.process_index == 1 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_is_restarted_and_resumes_from_the_latest_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = RegressionModel()
    reference = copy.deepcopy(model)
    train = RegressionDataset(32)
    marker = str(tmp_path / "killed")
    args = _args(tmp_path / "ft", 4, eval_strategy="no", save_strategy="steps", save_steps=2, num_train_epochs=2)
    survivor = Trainer(model=model, args=args, train_dataset=train, callbacks=[KillRankOneOnce(marker)],
                       scaling_config=ScalingConfig(num_workers=2),
                       run_config=RunConfig(name="ft", storage_path=str(tmp_path), failure_config=FailureConfig(max_failures=1)))
    survivor.train()
    assert os.path.exists(marker)  # it really died once
    # an uninterrupted run: one process with twice the batch sees the same examples step by step
    # (dropout masks differ per rank, so the model here has none: see RegressionModel(dropout=0.0))
    uninterrupted = Trainer(model=reference, args=_args(tmp_path / "plain", 8, eval_strategy="no", save_strategy="no",
                                                        num_train_epochs=2), train_dataset=train)
    uninterrupted.train()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    steps_logged = [e["step"] for e in survivor.state.log_history if "loss" in e]
    assert steps_logged == [2, 4, 6, 8]  # history restored from checkpoint-4, no duplicates


class Locked:
    """A metric function holding a lock: it cannot be pickled to the workers."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, pred):
        return {}


class FailAtStepTwo(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise ValueError("the user's callback fails at step 2")


def test_a_worker_error_reaches_the_driver_as_itself_and_the_next_run_still_streams(tmp_path, capsys):
    train = RegressionDataset(16)
    failing = Trainer(model=RegressionModel(), args=_args(tmp_path / "fail", 4, eval_strategy="no", max_steps=4),
                      train_dataset=train,
                      callbacks=[FailAtStepTwo()], scaling_config=ScalingConfig(num_workers=1))
    with pytest.raises(ValueError, match="the user's callback fails at step 2") as raised:
        failing.train()
    assert "(raised on Ray Train worker rank 0)" in getattr(raised.value, "__notes__", [])
    capsys.readouterr()
    # the driver's channel actor forgot the failed run and serves the next one
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path / "next", 4, eval_strategy="no", max_steps=4),
                      train_dataset=train, scaling_config=ScalingConfig(num_workers=1),
                      callbacks=[RecordPollInterval(str(tmp_path / "interval"))])
    assert trainer.train().global_step == 4
    assert "'loss':" in capsys.readouterr().out  # its logs came through the channel, live
    # raytrainer's fits poll their workers every 0.5 s (Ray hands the setting to controller and workers)
    assert (tmp_path / "interval").read_text() == "0.5"


class RecordPollInterval(TrainerCallback):
    """On the worker: the health-check interval that Ray Train handed down to this run."""

    def __init__(self, path: str):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        with open(self.path, "w") as f:
            f.write(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "unset"))


TWO_SESSIONS = """
import sys, tempfile
import ray
from conftest import RegressionDataset, RegressionModel, runtime_env_for_tests
from ray.train import ScalingConfig
from raytrainer import Trainer, TrainingArguments
for session in range(2):  # a new cluster reuses the first one's job id
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=runtime_env_for_tests())
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=3, save_strategy="no", report_to="none",
                             disable_tqdm=True, per_device_train_batch_size=4)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      scaling_config=ScalingConfig(num_workers=1))
    print("steps", trainer.train().global_step)
    ray.shutdown()
"""


def test_runs_in_a_second_ray_session_of_the_same_driver_get_a_live_channel(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.path.dirname(TESTS)]))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", TWO_SESSIONS], capture_output=True, text=True, env=env,
                          timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("steps")] == ["steps 3", "steps 3"]


def test_unpicklable_argument_is_named_before_any_worker_starts(tmp_path):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, 4), train_dataset=RegressionDataset(8),
                      eval_dataset=RegressionDataset(4), compute_metrics=Locked(),
                      scaling_config=ScalingConfig(num_workers=2))
    with pytest.raises(TypeError, match="Trainer argument 'compute_metrics' \\(Locked\\) cannot be sent to Ray workers"):
        trainer.train()


def test_new_driver_resumes_only_when_asked(tmp_path):
    """A driver that died leaves checkpoints in Ray's storage (= output_dir). A new train() with
    resume_from_checkpoint=True continues from the latest; without it, training starts afresh
    even though Ray's storage holds the earlier run's checkpoints. Checkpoints rotated away
    (save_total_limit) or deleted by the user in between do not stop the next run."""
    output_dir = tmp_path / "restart"

    def run(max_steps, resume):
        args = _args(output_dir, 4, eval_strategy="no", save_strategy="steps", save_steps=2, save_total_limit=1,
                     max_steps=max_steps, lr_scheduler_type="constant")
        trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(32),
                          scaling_config=ScalingConfig(num_workers=2))
        trainer.train(resume_from_checkpoint=resume)
        return [e["step"] for e in trainer.state.log_history if "loss" in e]

    def checkpoints():
        return sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint-"))

    assert run(4, None) == [2, 4] and checkpoints() == ["checkpoint-4"]  # checkpoint-2 rotated away
    assert run(6, True) == [2, 4, 6]  # history of the first run, then steps 5-6
    assert checkpoints() == ["checkpoint-6"]
    shutil.rmtree(output_dir / "checkpoint-6")  # the user cleans up
    assert run(2, None) == [2]  # fresh: not silently resumed
    assert checkpoints() == ["checkpoint-2"]


def test_a_script_on_two_workers_is_quiet_and_its_token_loss_does_not_scale_with_workers(tmp_path):
    """As a user runs it: raytrainer starts Ray itself. Two workers x batch 2 train the weights one
    process with batch 4 trains (a loss normalised by num_items_in_batch over both workers), and
    the output holds our log lines, none of Ray's."""
    job = os.path.join(TESTS, "_two_workers_job.py")
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAYTRAINER_RAY_LOGS")}
    done = subprocess.run([sys.executable, job, str(tmp_path / "two")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    printed = (done.stdout + done.stderr).splitlines()
    result = json.loads(next(line for line in printed if line.startswith("RESULT "))[len("RESULT "):])
    ours = [line for line in printed if line.startswith("{'loss'") or line.startswith("{'train_runtime'")]
    assert len(ours) == 4
    # allowed: torch's DDP hint (as under transformers); nothing of Ray's (local-mode notices,
    # reports, helper actors, its core's notice about Ray Train's preemption watcher)
    others = [line for line in printed if line not in ours and not line.startswith("RESULT ")]
    assert [line for line in others if "reducer.cpp" not in line] == [], others[:10]
    assert len(others) <= 2

    torch.manual_seed(0)
    model = TokenModel()
    args = TrainingArguments(output_dir=str(tmp_path / "one"), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                             max_steps=3, logging_steps=1, learning_rate=0.05, save_strategy="no", report_to="none",
                             disable_tqdm=True, seed=7)
    single = Trainer(model=model, args=args, train_dataset=TokenDataset(16))
    single.train()
    assert result["accepts"] is True and single.model_accepts_loss_kwargs is True
    assert result["losses"] == pytest.approx([e["loss"] for e in single.state.log_history if "loss" in e], rel=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(torch.tensor(result["weights"][name]), value, rtol=0, atol=1e-6, msg=name)
