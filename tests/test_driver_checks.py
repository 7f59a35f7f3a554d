"""Errors come before work: what the driver checks before any Ray job starts (even for runs on
Ray workers, where a late error would cost the ~25 s worker start-up), and the model probe that
measures whether the loss uses ``num_items_in_batch``."""

import os
import time

import pytest
import ray
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import NoLossModel, RegressionDataset, RegressionModel
from ray.train import ScalingConfig

from raytrainer import Trainer, TrainingArguments

WORKERS = ScalingConfig(num_workers=2)


@pytest.fixture(autouse=True)
def no_ray_started():
    assert not ray.is_initialized()
    yield
    assert not ray.is_initialized(), "a check ran after Ray was started"


def _args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True, max_steps=2)
    settings.update(overrides)
    return TrainingArguments(**settings)


@pytest.mark.parametrize("name, value, message", [
    ("eval_dataset", 12345, r"eval_dataset is a int \(12345\), not a dataset"),
    ("train_dataset", "rows.parquet", r"train_dataset is the string 'rows.parquet'.*raytrainer\.stream\('rows\.parquet'\)"),
    ("train_dataset", {"x": [1, 2]}, r"train_dataset is a dict with keys \['x'\].*splits\['train'\]"),
    ("eval_dataset", {"dev": "dev.parquet"}, r"eval_dataset\['dev'\] is the string 'dev.parquet'"),
    ("train_dataset", object(), r"train_dataset \(object\) is not a dataset"),
])
def test_a_wrong_dataset_is_named_on_the_driver_before_any_worker_starts(tmp_path, name, value, message):
    datasets = {"train_dataset": RegressionDataset(8), "eval_dataset": RegressionDataset(4), name: value}
    started = time.perf_counter()
    with pytest.raises(TypeError, match=message):
        Trainer(model=RegressionModel(), args=_args(tmp_path), scaling_config=WORKERS, **datasets)
    assert time.perf_counter() - started < 2.0


def test_an_empty_eval_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="eval_dataset is empty"):
        Trainer(model=RegressionModel(), args=_args(tmp_path), train_dataset=RegressionDataset(8),
                eval_dataset=RegressionDataset(0))


@pytest.fixture
def blocker(tmp_path):
    """A file where a folder would have to be created."""
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def test_an_output_dir_that_cannot_be_created_fails_before_training(tmp_path, blocker):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, output_dir=str(blocker / "out")),
                      train_dataset=RegressionDataset(8), scaling_config=WORKERS)
    with pytest.raises(PermissionError, match=r"output_dir='.*a-file/out' cannot be created or written"):
        trainer.train()


def test_a_logging_dir_below_a_file_fails_before_training(tmp_path, blocker):
    trainer = Trainer(model=RegressionModel(), args=_args(tmp_path, logging_dir=str(blocker / "runs")),
                      train_dataset=RegressionDataset(8), scaling_config=WORKERS)
    with pytest.raises(PermissionError, match=r"logging_dir=.* cannot be created: .*a-file is a file"):
        trainer.train()
    assert os.path.isdir(tmp_path / "out")  # output_dir itself was fine, and is now there


def test_a_model_without_loss_fails_in_the_constructor_also_for_worker_runs(tmp_path):
    with pytest.raises(ValueError, match="NoLossModel did not return a loss"):
        Trainer(model=NoLossModel(), args=_args(tmp_path), train_dataset=RegressionDataset(8), scaling_config=WORKERS)


class MeanLossWithKwargs(nn.Module):
    """Like many transformers classification heads: takes **kwargs, computes a plain mean."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None, **kwargs):
        out = self.linear(x)
        return {"loss": F.mse_loss(out, labels), "logits": out}


class MeanLossNamed(MeanLossWithKwargs):
    def forward(self, x, labels=None):
        return super().forward(x, labels)


class TokenSumLoss(MeanLossWithKwargs):
    """Divides a summed loss by num_items_in_batch (a token-level loss over the whole window)."""

    def forward(self, x, labels=None, **kwargs):
        out = self.linear(x)
        num_items = kwargs.get("num_items_in_batch")
        loss = F.mse_loss(out, labels, reduction="sum")
        return {"loss": loss / (num_items if num_items is not None else labels.numel()), "logits": out}


class DeclaredMean(MeanLossWithKwargs):
    accepts_loss_kwargs = True  # a (wrong) declaration is the model's word: it is not second-guessed


@pytest.mark.parametrize("model_class, expected", [
    (MeanLossWithKwargs, False), (TokenSumLoss, True), (MeanLossNamed, False), (DeclaredMean, True),
])
def test_the_probe_measures_whether_the_loss_uses_num_items_in_batch(tmp_path, model_class, expected):
    trainer = Trainer(model=model_class(), args=_args(tmp_path), train_dataset=RegressionDataset(8))
    assert trainer.model_accepts_loss_kwargs is expected


def test_a_mean_loss_with_kwargs_trains_like_the_same_model_without_kwargs(tmp_path):
    # with accumulation: a loss that ignores num_items_in_batch is divided by the accumulation
    # steps, exactly as for a model whose forward names its arguments
    torch.manual_seed(0)
    kwargs_model, named_model = MeanLossWithKwargs(), MeanLossNamed()
    named_model.load_state_dict(kwargs_model.state_dict())
    logs = []
    for index, model in enumerate((kwargs_model, named_model)):
        args = _args(tmp_path / str(index), max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                     logging_steps=1, learning_rate=0.1, optim="sgd")
        trainer = Trainer(model=model, args=args, train_dataset=RegressionDataset(16))
        trainer.train()
        logs.append([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert len(logs[0]) == 4 and logs[0] == pytest.approx(logs[1], rel=1e-6)
    for a, b in zip(kwargs_model.parameters(), named_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
