"""Override points written for older transformers releases (without the keywords added since:
``num_items_in_batch``, ``device``, ``ignore_keys``) keep working: the loop calls each one with
the arguments its signature takes, and the training is the same as with the current signature."""

import copy

import pytest
import torch
from conftest import RegressionDataset, RegressionModel, TokenDataset, TokenModel

from raytrainer import Trainer
from raytrainer.overrides import OverrideCalls, accepts_argument


def _train(trainer_class, model, make_args, dataset=None, **overrides):
    settings = dict(max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=0.05)
    settings.update(overrides)
    trainer = trainer_class(model=model, args=make_args(**settings), train_dataset=dataset or TokenDataset(16))
    trainer.train()
    return trainer


def _same_training(old_class, make_args, model_class=TokenModel, dataset=None):
    torch.manual_seed(0)
    model = model_class()
    reference = copy.deepcopy(model)
    old = _train(old_class, model, make_args, dataset)
    new = _train(Trainer, reference, make_args, dataset)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert [e["loss"] for e in old.state.log_history if "loss" in e] == \
        [e["loss"] for e in new.state.log_history if "loss" in e]
    return old


def test_training_step_without_num_items_in_batch(make_args):
    class OldStep(Trainer):
        calls = 0

        def training_step(self, model, inputs):
            OldStep.calls += 1
            return super().training_step(model, inputs)

    # a mean loss (no **kwargs): the count was never needed, so the old override trains identically
    _same_training(OldStep, make_args, RegressionModel, RegressionDataset(16))
    assert OldStep.calls == 8  # 4 steps x 2 micro-batches


def test_get_batch_samples_without_device(make_args):
    class OldSamples(Trainer):
        calls = 0

        def get_batch_samples(self, epoch_iterator, num_batches):
            OldSamples.calls += 1
            return super().get_batch_samples(epoch_iterator, num_batches)

    _same_training(OldSamples, make_args)  # the token count still reaches the loss
    assert OldSamples.calls == 4


def test_compute_loss_without_num_items_in_batch(make_args):
    class OldLoss(Trainer):
        seen = []

        def compute_loss(self, model, inputs, return_outputs=False):
            OldLoss.seen.append(sorted(inputs))
            return super().compute_loss(model, inputs, return_outputs)

    torch.manual_seed(0)
    model = TokenModel()
    _train(OldLoss, model, make_args)
    assert OldLoss.seen and all(keys == ["input_ids", "labels"] for keys in OldLoss.seen)
    # not handed num_items_in_batch, the model normalises by its own batch's tokens
    assert set(model.seen_num_items) == {None}


def test_prediction_step_without_ignore_keys(make_args):
    class OldPrediction(Trainer):
        calls = 0

        def prediction_step(self, model, inputs, prediction_loss_only):
            OldPrediction.calls += 1
            return super().prediction_step(model, inputs, prediction_loss_only)

    data = RegressionDataset(10)
    torch.manual_seed(0)
    model = RegressionModel()
    metrics = OldPrediction(model=model, args=make_args(per_device_eval_batch_size=4), eval_dataset=data).evaluate()
    assert OldPrediction.calls == 3
    expected = torch.nn.functional.mse_loss(model(data.x)["logits"], data.y, reduction="none").mean()
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_signatures_are_read_once_per_run(make_args):
    trainer = Trainer(model=RegressionModel(), args=make_args(), train_dataset=RegressionDataset(4))
    calls = OverrideCalls(trainer)
    assert (calls._step_takes_num_items, calls._samples_take_device, calls._prediction_takes_ignore_keys) == (True,) * 3
    assert accepts_argument(lambda a, **kw: None, "anything") and not accepts_argument(lambda a: None, "b")
