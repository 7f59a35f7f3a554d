"""Tiny models and datasets shared by the tests. Nothing here downloads anything."""

import os
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))

# Ray prints an INFO line per local-mode fit; keep test output readable.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


class RegressionDataset(torch.utils.data.Dataset):
    """y = x @ w + b + noise, as dicts {"x": [4], "labels": [1]}; fixed by its seed."""

    def __init__(self, length: int = 64, seed: int = 0, extra_column: bool = False):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(length, 4, generator=generator)
        w = torch.tensor([[1.5], [-2.0], [0.5], [3.0]])
        self.y = self.x @ w + 0.3 + 0.1 * torch.randn(length, 1, generator=generator)
        self.extra_column = extra_column

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        item = {"x": self.x[i], "labels": self.y[i]}
        if self.extra_column:
            item["weight"] = torch.tensor(1.0)  # not a forward() argument
        return item


class RegressionModel(nn.Module):
    """A two-layer MLP with a LayerNorm (so weight decay has something to skip)."""

    def __init__(self, hidden: int = 8, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x, labels=None):
        out = self.fc2(self.dropout(torch.relu(self.norm(self.fc1(x)))))
        result = {"logits": out}
        if labels is not None:
            result = {"loss": F.mse_loss(out, labels), "logits": out}
        return result


class KwargsRegressionModel(RegressionModel):
    """A forward that takes **kwargs but computes a plain mean (like many transformers heads)."""

    def forward(self, x, labels=None, **kwargs):
        return super().forward(x, labels)


class NoLossModel(nn.Module):
    """Returns logits only: the Trainer must say so before training."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        return {"logits": self.linear(x)}


class ClassificationDataset(torch.utils.data.Dataset):
    def __init__(self, length: int = 48, num_classes: int = 3, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(length, 4, generator=generator)
        self.labels = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.5).long()
        self.labels = self.labels.clamp(max=num_classes - 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "label": int(self.labels[i])}


class ClassifierModel(nn.Module):
    """Returns a tuple (loss, logits) like an HF model with return_dict=False."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x, labels=None):
        logits = self.linear(x)
        if labels is None:
            return (logits,)
        return (F.cross_entropy(logits, labels), logits)


class TokenDataset(torch.utils.data.Dataset):
    """Variable-length token sequences padded with -100 labels, for token-level losses."""

    def __init__(self, length: int = 24, vocab: int = 11, seed: int = 2):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(length):
            n = 3 + i % 4
            ids = torch.randint(1, vocab, (6,), generator=generator)
            labels = ids.clone()
            labels[n:] = -100
            self.items.append({"input_ids": ids, "labels": labels})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class TokenModel(nn.Module):
    """A tiny language-model-shaped module whose loss is normalised by num_items_in_batch."""

    def __init__(self, vocab: int = 11, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)
        self.seen_num_items = []

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, labels=None, **kwargs):
        logits = self.head(self.embed(input_ids))
        if labels is None:
            return {"logits": logits}
        num_items = kwargs.get("num_items_in_batch")
        self.seen_num_items.append(None if num_items is None else int(num_items))
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        loss = loss / (num_items if num_items is not None else (labels != -100).sum())
        return {"loss": loss, "logits": logits}


class RunsCode:
    """Pickles as a call of ``open``: whoever unpickles it creates the file ``marker``. What a
    checkpoint from someone else could carry; loading one must never run it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def runtime_env_for_tests() -> dict:
    """What raytrainer gives a local Ray instance it starts (the tests start theirs without the
    dashboard), with the tests' folder importable."""
    from raytrainer.runtime.ray_session import local_instance_runtime_env

    tests = os.path.dirname(os.path.abspath(__file__))
    return local_instance_runtime_env([tests, os.path.dirname(tests)], dashboard=False)


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance (2 CPUs) for one test module's multi-worker or Tune tests; its workers
    import the tests' helper modules. Never an existing cluster: ``address="local"``."""
    import ray

    if ray.is_initialized():  # an earlier test left Ray running: say so, and start clean
        warnings.warn("a test before this module left Ray initialized; shutting it down")
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env=runtime_env_for_tests())
    yield
    ray.shutdown()


@pytest.fixture
def make_args(tmp_path):
    """TrainingArguments writing under the test's tmp dir, quiet by default."""
    from raytrainer import TrainingArguments

    def build(**overrides):
        defaults = dict(output_dir=str(tmp_path / "out"), disable_tqdm=True, report_to="none",
                        save_strategy="no", logging_steps=1, per_device_train_batch_size=4)
        defaults.update(overrides)
        return TrainingArguments(**defaults)

    return build


def assert_same_logs(ours: list, theirs: list, keys, rel: float = 1e-5, abs: float = 0.0) -> None:
    """Two log histories are entry by entry the same: same length, the same ``keys`` present in each
    entry, equal values within tolerance (a plain ``zip`` would hide a missing or extra entry)."""
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for index, (mine, other) in enumerate(zip(ours, theirs)):
        present = [key for key in keys if key in other]
        assert [key for key in keys if key in mine] == present, (index, mine, other)
        for key in present:
            assert mine[key] == pytest.approx(other[key], rel=rel, abs=abs), (index, key)
