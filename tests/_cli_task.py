"""The pieces the CLI tests' config files name (``_cli_task:<name>``): a tiny regression task."""

import torch
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainerCallback

CALLS = []


def build_model(trial=None):
    torch.manual_seed(0)
    return RegressionModel()


def train_set():
    return RegressionDataset(32)


def eval_set():
    return RegressionDataset(16, seed=5)


def mean_abs_error(eval_pred):
    predictions, labels = eval_pred
    return {"mae": float(abs(predictions - labels).mean())}


def negative_loss(metrics):
    return -metrics["eval_loss"]


class DoubledLossTrainer(Trainer):
    """A subclass named by 'trainer:'; its loss is twice the model's."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        return (2 * loss, outputs) if return_outputs else 2 * loss


class RecordSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        CALLS.append(state.global_step)


not_a_factory = RegressionModel()


def broken_set():
    raise RuntimeError("the data server is down")
