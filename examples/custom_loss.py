"""A Trainer subclass with its own ``compute_loss``: class-weighted cross-entropy for an imbalanced
task (spotting the digit 0 among scikit-learn's digits: one image in ten).

    python examples/custom_loss.py [--output_dir out/custom_loss] [--num_train_epochs 3] ...

The subclass is written as for ``transformers.Trainer``. With Ray Train workers
(``scaling_config=ScalingConfig(num_workers=N)``) each worker rebuilds this class from the same
constructor call, ``class_weights`` included, so the override runs where the training runs.
"""

import sys

import torch
import torch.nn.functional as F
from ray.train import ScalingConfig

from raytrainer import HfArgumentParser, Trainer, TrainingArguments

from quickstart import DigitClassifier, DigitsDataset, load_digits_splits


class WeightedLossTrainer(Trainer):
    """Cross-entropy with a weight per class; the rest of the Trainer is unchanged."""

    def __init__(self, *args, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = torch.as_tensor(class_weights, dtype=torch.float32)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs["logits"], labels, weight=self.class_weights.to(labels.device))
        return (loss, outputs) if return_outputs else loss


class ZeroOrNot(torch.utils.data.Dataset):
    """The same images, labelled 1 for a zero and 0 for any other digit."""

    def __init__(self, digits: DigitsDataset):
        self.images, self.labels = digits.images, (digits.labels == 0).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixels": self.images[i], "labels": self.labels[i]}


def class_weights(labels: torch.Tensor) -> list:
    """Inverse class frequency, scaled so that the weights average to one over the examples."""
    counts = torch.bincount(labels, minlength=2).float()
    return (len(labels) / (2 * counts)).tolist()


def recall_of_zeros(eval_pred):
    logits, labels = eval_pred
    predicted = logits.argmax(-1)
    return {"recall_zero": float((predicted[labels == 1] == 1).mean()),
            "accuracy": float((predicted == labels).mean())}


def main(argv=None):
    defaults = ["--output_dir", "out/custom_loss", "--num_train_epochs", "3", "--learning_rate", "3e-3",
                "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "512",
                "--eval_strategy", "epoch", "--save_strategy", "no", "--logging_steps", "10", "--report_to", "none"]
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(defaults + list(argv or []))
    train, dev, _ = (ZeroOrNot(split) for split in load_digits_splits(args.seed))
    model = DigitClassifier()
    model.head = torch.nn.Linear(model.head.in_features, 2)  # two classes: a zero or not
    trainer = WeightedLossTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                                  compute_metrics=recall_of_zeros, class_weights=class_weights(train.labels),
                                  scaling_config=ScalingConfig(num_workers=0))
    trainer.train()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    print(f"recall of the zeros {metrics['eval_recall_zero']:.3f}, accuracy {metrics['eval_accuracy']:.3f} "
          f"(class weights {[round(w, 2) for w in trainer.class_weights.tolist()]})")
    return trainer, metrics


if __name__ == "__main__":
    main(sys.argv[1:])
