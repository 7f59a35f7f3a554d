"""evaluate / predict / evaluation_loop: numbers, shapes, prefixes and options."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ClassificationDataset, ClassifierModel, RegressionDataset, RegressionModel

from raytrainer import EvalPrediction, Trainer


def _manual_mse(model, data):
    with torch.no_grad():
        preds = model(data.x)["logits"]
    per_batch = [((preds[i:i + 8] - data.y[i:i + 8]) ** 2).mean().item() for i in range(0, len(data), 8)]
    sizes = [min(8, len(data) - i) for i in range(0, len(data), 8)]
    return float(np.average(per_batch, weights=sizes)), preds.numpy()


def test_evaluate_loss_is_the_example_weighted_mean_of_batch_losses(make_args):
    model = RegressionModel()
    data = RegressionDataset(20)  # batches of 8, 8, 4
    trainer = Trainer(model=model, args=make_args(per_device_eval_batch_size=8), eval_dataset=data)
    metrics = trainer.evaluate()
    expected, _ = _manual_mse(model, data)
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-6)
    assert {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"} <= set(metrics)
    assert trainer.state.log_history[-1]["eval_loss"] == metrics["eval_loss"]


def test_predict_returns_predictions_in_dataset_order_and_prefixed_metrics(make_args):
    model = RegressionModel()
    data = RegressionDataset(19)

    def compute_metrics(pred: EvalPrediction):
        preds, labels = pred
        return {"mae": float(np.abs(preds - labels).mean())}

    trainer = Trainer(model=model, args=make_args(per_device_eval_batch_size=8), compute_metrics=compute_metrics)
    output = trainer.predict(data)
    _, expected_preds = _manual_mse(model, data)
    np.testing.assert_allclose(output.predictions, expected_preds, rtol=1e-6)
    np.testing.assert_array_equal(output.label_ids, data.y.numpy())
    assert output.metrics["test_mae"] == pytest.approx(float(np.abs(expected_preds - data.y.numpy()).mean()), rel=1e-6)
    assert "test_loss" in output.metrics and "test_runtime" in output.metrics


def test_dict_of_eval_datasets_prefixes_each_name(make_args):
    model = RegressionModel()
    evals = {"small": RegressionDataset(8, seed=1), "big": RegressionDataset(24, seed=2)}
    trainer = Trainer(model=model, args=make_args(), eval_dataset=evals)
    metrics = trainer.evaluate()
    assert metrics["eval_small_loss"] == pytest.approx(_manual_mse(model, evals["small"])[0], rel=1e-6)
    assert metrics["eval_big_loss"] == pytest.approx(_manual_mse(model, evals["big"])[0], rel=1e-6)


def test_tuple_outputs_and_label_renaming_with_accuracy(make_args):
    model = ClassifierModel()
    data = ClassificationDataset(30)

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=make_args(per_device_eval_batch_size=7), compute_metrics=accuracy)
    metrics = trainer.evaluate(data, metric_key_prefix="dev")
    with torch.no_grad():
        logits = model.linear(data.x)
    expected_acc = float((logits.argmax(-1) == data.labels).float().mean())
    assert metrics["dev_accuracy"] == pytest.approx(expected_acc)
    assert metrics["dev_loss"] == pytest.approx(
        np.average([nn.functional.cross_entropy(logits[i:i + 7], data.labels[i:i + 7]).item() for i in range(0, 30, 7)],
                   weights=[7, 7, 7, 7, 2]), rel=1e-5)


class VariableLengthModel(nn.Module):
    """Returns logits whose sequence length depends on the batch (the longest item)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, length, labels=None):
        width = int(length.max())
        logits = self.scale * x[:, :1].repeat(1, width)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = logits.sum() * 0
        return out


def test_variable_length_outputs_are_padded_with_minus_100(make_args):
    rows = [{"x": torch.tensor([float(i)]), "length": torch.tensor(1 + i), "labels": torch.tensor(0.0)} for i in range(4)]
    trainer = Trainer(model=VariableLengthModel(), args=make_args(per_device_eval_batch_size=2))
    output = trainer.predict(rows)
    assert output.predictions.shape == (4, 4)
    np.testing.assert_array_equal(output.predictions[0], [0, 0, -100, -100])
    np.testing.assert_array_equal(output.predictions[3], [3, 3, 3, 3])


def test_include_for_metrics_passes_inputs_and_losses(make_args):
    seen = {}

    def capture(pred):
        seen["inputs"], seen["losses"] = pred.inputs, pred.losses
        return {}

    class XModel(RegressionModel):
        main_input_name = "x"

    data = RegressionDataset(10)
    args = make_args(include_for_metrics=["inputs", "loss"], per_device_eval_batch_size=4)
    Trainer(model=XModel(), args=args, compute_metrics=capture).evaluate(data)
    np.testing.assert_allclose(seen["inputs"], data.x.numpy())
    assert seen["losses"].shape == (10,)


def test_batch_eval_metrics_calls_compute_result_on_last_batch(make_args):
    calls = []

    def batched(pred, compute_result):
        calls.append((len(pred.predictions), compute_result))
        return {"batches": len(calls)} if compute_result else None

    args = make_args(batch_eval_metrics=True, per_device_eval_batch_size=4)
    metrics = Trainer(model=RegressionModel(), args=args, compute_metrics=batched).evaluate(RegressionDataset(10))
    assert calls == [(4, False), (4, False), (2, True)]
    assert metrics["eval_batches"] == 3


def test_eval_accumulation_steps_gives_the_same_predictions(make_args):
    model, data = RegressionModel(), RegressionDataset(21)
    plain = Trainer(model=model, args=make_args(per_device_eval_batch_size=4)).predict(data)
    chunked = Trainer(model=model, args=make_args(per_device_eval_batch_size=4, eval_accumulation_steps=2)).predict(data)
    np.testing.assert_array_equal(plain.predictions, chunked.predictions)
    assert plain.metrics["test_loss"] == pytest.approx(chunked.metrics["test_loss"])


def test_prediction_loss_only_and_label_names(make_args):
    class TwoLabels(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x, start=None, end=None):
            out = self.linear(x)
            return {"loss": out.sum() * 0 + 1.0, "logits": out}

    rows = [{"x": torch.ones(4) * i, "start": torch.tensor(i), "end": torch.tensor(i + 1)} for i in range(6)]
    args = make_args(label_names=["start", "end"], per_device_eval_batch_size=3)
    output = Trainer(model=TwoLabels(), args=args).predict(rows)
    assert isinstance(output.label_ids, tuple) and len(output.label_ids) == 2
    np.testing.assert_array_equal(output.label_ids[1], np.arange(1, 7))
    loss_only = Trainer(model=TwoLabels(), args=make_args(label_names=["start", "end"], prediction_loss_only=True))
    assert loss_only.predict(rows).predictions is None


def test_evaluation_during_training_on_steps_and_epochs(make_args):
    args = make_args(max_steps=6, eval_strategy="steps", eval_steps=2, logging_steps=3)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(8, seed=5))
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "eval_loss" in e] == [2, 4, 6]
    args = make_args(num_train_epochs=2, eval_strategy="epoch", eval_delay=1)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(16),
                      eval_dataset=RegressionDataset(8, seed=5))
    trainer.train()
    # eval_delay=1 epoch: the evaluation at epoch 1.0 counts (delay <= epoch), so both epochs evaluate
    assert [e["epoch"] for e in trainer.state.log_history if "eval_loss" in e] == [1.0, 2.0]


def test_eval_on_start_evaluates_before_the_first_step(make_args):
    args = make_args(max_steps=2, eval_strategy="steps", eval_steps=2, eval_on_start=True)
    trainer = Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8),
                      eval_dataset=RegressionDataset(8))
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "eval_loss" in e] == [0, 2]


def test_training_resumes_in_train_mode_after_an_evaluation(make_args):
    modes = []

    class Recorder(RegressionModel):
        def forward(self, x, labels=None):
            if torch.is_grad_enabled():
                modes.append(self.training)
            return super().forward(x, labels)

    args = make_args(num_train_epochs=2, eval_strategy="epoch")
    trainer = Trainer(model=Recorder(), args=args, train_dataset=RegressionDataset(8), eval_dataset=RegressionDataset(4))
    trainer.train()
    # wrapped like on workers: evaluation switches the inner module to eval mode
    assert modes and all(modes)
