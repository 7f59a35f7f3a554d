"""Train, evaluate and predict with raytrainer on a small real dataset (scikit-learn's digits),
then run a small hyperparameter sweep.

    python examples/quickstart.py [--output_dir out/quickstart] [--num_train_epochs 3] ...

Any TrainingArguments field can be given on the command line (HfArgumentParser). The loop runs
through a Ray Train TorchTrainer in local mode (ScalingConfig(num_workers=0)): in this process,
no cluster needed. It finishes in a few seconds on a laptop CPU.
"""

import dataclasses
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ray.train import ScalingConfig

from raytrainer import EarlyStoppingCallback, HfArgumentParser, Trainer, TrainingArguments, set_seed


class DigitsDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.tensor(images / 16.0, dtype=torch.float32)
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixels": self.images[i], "labels": self.labels[i]}


class DigitClassifier(nn.Module):
    """An MLP that follows the HF model conventions: a dict with the loss when labels are given."""

    def __init__(self, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 10)

    def forward(self, pixels, labels=None):
        logits = self.head(self.body(pixels))
        if labels is None:
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def load_digits_splits(seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    images, labels = digits.data[order], digits.target[order]
    cut_dev, cut_test = int(0.7 * len(order)), int(0.85 * len(order))
    return (DigitsDataset(images[:cut_dev], labels[:cut_dev]),
            DigitsDataset(images[cut_dev:cut_test], labels[cut_dev:cut_test]),
            DigitsDataset(images[cut_test:], labels[cut_test:]))


def accuracy(eval_pred):
    predictions, labels = eval_pred
    return {"accuracy": float((predictions.argmax(-1) == labels).mean())}


def main(argv=None):
    defaults = ["--output_dir", "out/quickstart", "--num_train_epochs", "3", "--learning_rate", "3e-3",
                "--per_device_train_batch_size", "32", "--eval_strategy", "epoch", "--save_strategy", "epoch",
                "--logging_steps", "10", "--load_best_model_at_end", "true", "--metric_for_best_model", "accuracy",
                "--save_total_limit", "2", "--warmup_ratio", "0.1", "--weight_decay", "0.01"]
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(defaults + list(argv or []))
    train, dev, test = load_digits_splits(args.seed)
    set_seed(args.seed)  # before the model is built: its initial weights come from the seed too
    trainer = Trainer(
        model=DigitClassifier(),
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        compute_metrics=accuracy,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
        scaling_config=ScalingConfig(num_workers=0),
    )
    result = trainer.train()
    trainer.log_metrics("train", result.metrics)
    dev_metrics = trainer.evaluate()
    trainer.log_metrics("eval", dev_metrics)
    prediction = trainer.predict(test)
    trainer.log_metrics("test", prediction.metrics)
    trainer.save_model()
    print(f"test accuracy: {prediction.metrics['test_accuracy']:.3f}  (checkpoints in {args.output_dir})")
    best = small_sweep(args, train, dev)
    print(f"sweep: best learning_rate {best.hyperparameters['learning_rate']:.2e}, "
          f"dev accuracy {best.objective:.3f} (trials in {args.output_dir}/sweep)")
    return prediction.metrics


def small_sweep(args, train, dev, n_trials: int = 4):
    """A small Optuna sweep over the learning rate and the warmup; each trial trains a fresh model
    from ``model_init`` in this process for one epoch and reports its dev accuracy. The sampler is
    seeded with ``args.seed`` (hyperparameter_search's default), so the sweep repeats exactly."""
    sweep_args = dataclasses.replace(args, output_dir=f"{args.output_dir}/sweep", num_train_epochs=1,
                                     load_best_model_at_end=False, save_strategy="no", eval_strategy="epoch",
                                     disable_tqdm=True, logging_strategy="no")
    searcher = Trainer(model_init=DigitClassifier, args=sweep_args, train_dataset=train, eval_dataset=dev,
                       compute_metrics=accuracy)

    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True),
                "warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2)}

    return searcher.hyperparameter_search(hp_space=space, n_trials=n_trials, direction="maximize",
                                          compute_objective=lambda metrics: metrics["eval_accuracy"],
                                          backend="optuna")


if __name__ == "__main__":
    main(sys.argv[1:])
