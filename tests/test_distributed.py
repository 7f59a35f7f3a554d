"""Training on real Ray Train workers (2 CPU workers, gloo). Each fit costs ~20 s of fixed start-up
on 2 cores, so these tests are few and each checks several things."""

import copy
import os
import signal
import threading

import pytest
import ray
import torch
from conftest import RegressionDataset, RegressionModel, assert_same_logs
from ray.train import FailureConfig, RunConfig, ScalingConfig

from raytrainer import Trainer, TrainerCallback, TrainingArguments

TESTS = os.path.dirname(__file__)


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([TESTS, os.path.dirname(TESTS)])}})
    yield
    ray.shutdown()


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
    model = RegressionModel()
    reference = copy.deepcopy(model)
    train, dev = RegressionDataset(40), RegressionDataset(13, seed=4)  # 13: not divisible by 2 x 3
    distributed = Trainer(model=model, args=_args(tmp_path / "dist", 4), train_dataset=train, eval_dataset=dev,
                          compute_metrics=_first_column, scaling_config=ScalingConfig(num_workers=2))
    output = distributed.train()
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
    prediction = distributed.predict(dev)
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


def test_unpicklable_argument_is_named_before_any_worker_starts(tmp_path):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, 4), train_dataset=RegressionDataset(8),
                      eval_dataset=RegressionDataset(4), compute_metrics=Locked(),
                      scaling_config=ScalingConfig(num_workers=2))
    with pytest.raises(TypeError, match="Trainer argument 'compute_metrics' \\(Locked\\) cannot be sent to Ray workers"):
        trainer.train()


def test_new_driver_resumes_only_when_asked(tmp_path):
    """A driver that died leaves checkpoints in Ray's storage (= output_dir). A new train() with
    resume_from_checkpoint=True continues from the latest; without it, training starts afresh
    even though Ray's storage holds the earlier run's checkpoints."""

    def run(max_steps, resume):
        args = _args(tmp_path / "restart", 4, eval_strategy="no", save_strategy="steps", save_steps=2,
                     max_steps=max_steps, lr_scheduler_type="constant")
        trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(32),
                          scaling_config=ScalingConfig(num_workers=2))
        trainer.train(resume_from_checkpoint=resume)
        return [e["step"] for e in trainer.state.log_history if "loss" in e]

    assert run(4, None) == [2, 4]
    assert run(6, True) == [2, 4, 6]  # history of the first run, then steps 5-6
    assert run(2, None) == [2]  # fresh: not silently resumed from checkpoint-6
