"""The digits task of the quickstart as the pieces a config file names (see configs/digits.yaml):

    cd examples && raytrainer train configs/digits.yaml --num_train_epochs 2

``model``, ``train_dataset``, ``eval_dataset`` and ``compute_metrics`` of the config point here as
``digits_task:<name>``; the module is imported from the current directory (and, for Ray workers
or a cluster job, from the working directory they are given).
"""

from quickstart import DigitClassifier, accuracy, load_digits_splits

__all__ = ["DigitClassifier", "accuracy", "build_model", "dev_set", "test_set", "train_set"]


def build_model(trial=None):
    """A fresh classifier; in a sweep ``trial`` is the trial (unused: the space holds
    TrainingArguments fields only)."""
    return DigitClassifier(hidden=64, dropout=0.1)


def train_set():
    return load_digits_splits()[0]


def dev_set():
    return load_digits_splits()[1]


def test_set():
    return load_digits_splits()[2]
