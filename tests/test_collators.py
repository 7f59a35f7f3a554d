"""Collators and column pruning: dtypes, shapes, label renaming, kept columns, errors."""

import dataclasses
import logging
from collections import UserDict

import numpy as np
import pytest
import torch
from torch import nn

from raytrainer.data.collators import (
    DataCollatorWithPadding,
    SequencePadder,
    default_data_collator,
    pad_sequences,
)
from raytrainer.data.columns import (
    RemoveColumnsCollator,
    remove_unused_hf_columns,
    signature_columns,
)

# --- default_data_collator -------------------------------------------------------------------


def test_int_label_becomes_long_labels_and_other_fields_are_stacked():
    batch = default_data_collator([
        {"label": 1, "input_ids": [1, 2, 3], "weight": 0.5, "text": "a", "extra": None},
        {"label": 0, "input_ids": [4, 5, 6], "weight": 1.5, "text": "b", "extra": None},
    ])
    assert list(batch) == ["labels", "input_ids", "weight"]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert batch["weight"].dtype == torch.float32 and batch["weight"].tolist() == [0.5, 1.5]


def test_float_and_numpy_and_tensor_labels_get_the_right_dtype():
    floats = default_data_collator([{"label": 0.25}, {"label": 1.0}])
    assert floats["labels"].dtype == torch.float32 and floats["labels"].tolist() == [0.25, 1.0]
    numpy_ints = default_data_collator([{"label": np.int64(3)}, {"label": np.int64(4)}])
    assert numpy_ints["labels"].dtype == torch.long and numpy_ints["labels"].tolist() == [3, 4]
    tensors = default_data_collator([{"label": torch.tensor(2, dtype=torch.int32)}] * 2)
    assert tensors["labels"].dtype == torch.long and tensors["labels"].tolist() == [2, 2]


def test_label_ids_lists_and_tensors_are_stacked_as_labels():
    lists = default_data_collator([{"label_ids": [1, 2]}, {"label_ids": [3, 4]}])
    assert list(lists) == ["labels"]
    assert lists["labels"].dtype == torch.long and lists["labels"].shape == (2, 2)
    multi = default_data_collator([{"label_ids": torch.tensor([0.0, 1.0])}] * 3)
    assert multi["labels"].dtype == torch.float32 and multi["labels"].shape == (3, 2)


def test_tensors_and_numpy_arrays_keep_their_dtype():
    batch = default_data_collator([
        {"x": torch.ones(2, dtype=torch.float16), "mask": np.array([1, 0], dtype=np.int32)},
        {"x": torch.zeros(2, dtype=torch.float16), "mask": np.array([1, 1], dtype=np.int32)},
    ])
    assert batch["x"].dtype == torch.float16 and batch["x"].shape == (2, 2)
    assert batch["mask"].dtype == torch.int32 and batch["mask"].tolist() == [[1, 0], [1, 1]]


def test_dataclass_features_and_numpy_output():
    @dataclasses.dataclass
    class Example:
        input_ids: list
        label: int

    batch = default_data_collator([Example([1, 2], 1), Example([3, 4], 0)], return_tensors="np")
    assert batch["labels"].dtype == np.int64 and batch["labels"].tolist() == [1, 0]
    assert isinstance(batch["input_ids"], np.ndarray) and batch["input_ids"].shape == (2, 2)


def test_tensor_dataset_rows_use_default_collate():
    rows = [(torch.tensor([1.0, 2.0]), torch.tensor(0)),
            (torch.tensor([3.0, 4.0]), torch.tensor(1))]
    features, labels = default_data_collator(rows)
    assert features.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert labels.tolist() == [0, 1]


def test_default_collator_rejects_bad_input():
    with pytest.raises(ValueError, match="return_tensors='tf' is not supported"):
        default_data_collator([{"x": 1}], return_tensors="tf")
    with pytest.raises(ValueError, match="features is empty"):
        default_data_collator([])
    with pytest.raises(TypeError, match="cannot read a feature of type int"):
        default_data_collator([1, 2])
    with pytest.raises(ValueError, match="cannot stack field 'input_ids'.*DataCollatorWithPadding"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [3]}])


# --- padding ---------------------------------------------------------------------------------


def test_pad_sequences_right_left_and_multiple_of():
    right = pad_sequences([[1, 2, 3], [4]], padding_value=0)
    assert right.tolist() == [[1, 2, 3], [4, 0, 0]]
    left = pad_sequences([torch.tensor([1, 2, 3]), torch.tensor([4])], -1, padding_side="left")
    assert left.tolist() == [[1, 2, 3], [-1, -1, 4]]
    assert pad_sequences([[1, 2, 3]], 0, pad_to_multiple_of=4).tolist() == [[1, 2, 3, 0]]
    assert pad_sequences([[1]], 0, pad_to_multiple_of=4, max_length=5).shape == (1, 8)
    with pytest.raises(ValueError, match="max_length=2 is shorter than the longest sequence"):
        pad_sequences([[1, 2, 3]], 0, max_length=2)
    with pytest.raises(ValueError, match="pad_to_multiple_of=0 must be a positive int"):
        pad_sequences([[1]], 0, pad_to_multiple_of=0)


def test_padding_collator_without_tokenizer_pads_and_renames_labels():
    collator = DataCollatorWithPadding(SequencePadder(pad_token_id=9), pad_to_multiple_of=4)
    batch = collator([
        {"input_ids": [1, 2, 3, 4, 5], "label": 1, "source": "x"},
        {"input_ids": [6], "label": 0, "source": "y"},
    ])
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 9, 9, 9], [6, 9, 9, 9, 9, 9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] + [0] * 7]
    assert batch["labels"].tolist() == [1, 0]


def test_sequence_padder_pads_token_labels_with_minus_100_and_honours_max_length():
    padder = SequencePadder(pad_token_id=0, padding_side="left")
    batch = padder.pad([{"input_ids": [5, 6], "labels": [1, 2]}, {"input_ids": [7], "labels": [3]}],
                       padding="max_length", max_length=3, return_tensors="np")
    assert batch["input_ids"].tolist() == [[0, 5, 6], [0, 0, 7]]
    assert batch["labels"].tolist() == [[-100, 1, 2], [-100, -100, 3]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="padding='max_length' needs max_length"):
        padder.pad([{"input_ids": [1]}], padding="max_length")
    with pytest.raises(ValueError, match="padding='shortest' is invalid"):
        padder.pad([{"input_ids": [1]}], padding="shortest")


class _RecordingTokenizer:
    def __init__(self):
        self.calls = []

    def pad(self, features, **kwargs):
        self.calls.append(kwargs)
        return UserDict({"input_ids": torch.zeros(len(features), 2), "label_ids": torch.ones(2)})


def test_padding_collator_forwards_its_options_to_tokenizer_pad():
    tokenizer = _RecordingTokenizer()
    collator = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=16,
                                       pad_to_multiple_of=8)
    batch = collator([{"input_ids": [1]}, {"input_ids": [2]}])
    assert tokenizer.calls == [{"padding": "max_length", "max_length": 16,
                                "pad_to_multiple_of": 8, "return_tensors": "pt"}]
    assert sorted(batch) == ["input_ids", "labels"]
    with pytest.raises(TypeError, match="tokenizer must have a pad"):
        DataCollatorWithPadding(object())


# --- signature_columns -----------------------------------------------------------------------


class _Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, input_ids, attention_mask=None, labels=None):
        return self.linear(input_ids)


class _TakesKwargs(nn.Module):
    def forward(self, input_ids, **kwargs):
        return input_ids


class _OwnsAModuleAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.module = _Classifier()

    def forward(self, pixels, *extra):
        return pixels


class _PeftLike(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def get_base_model(self):
        return self.base

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)


def test_signature_columns_lists_forward_parameters_then_label_columns():
    expected = ["input_ids", "attention_mask", "labels", "label", "label_ids"]
    assert signature_columns(_Classifier()) == expected
    assert signature_columns(_Classifier(), label_names=["start", "labels"]) == expected + ["start"]


def test_signature_columns_with_kwargs_keeps_named_inputs_only():
    # transformers models name their inputs and take **kwargs: unnamed columns still go (HF)
    assert signature_columns(_TakesKwargs()) == ["input_ids", "label", "label_ids"]

    class TakesEverything(nn.Module):
        def forward(self, **inputs):
            return inputs

    assert signature_columns(TakesEverything()) is None  # names nothing: keep every column


def test_signature_columns_sees_through_wrappers_but_not_user_attributes():
    model = _Classifier()
    expected = ["input_ids", "attention_mask", "labels", "label", "label_ids"]
    assert signature_columns(nn.DataParallel(model)) == expected
    assert signature_columns(torch.compile(model)) == expected
    assert signature_columns(_PeftLike(model)) == expected
    assert signature_columns(_OwnsAModuleAttribute()) == ["pixels", "label", "label_ids"]


# --- RemoveColumnsCollator / remove_unused_hf_columns ------------------------------------


def test_remove_columns_collator_drops_unknown_keys_and_logs_once(caplog):
    seen = []
    collator = RemoveColumnsCollator(lambda rows: seen.append(rows) or len(rows),
                                     ["input_ids", "label"], description="training")
    with caplog.at_level(logging.INFO, logger="raytrainer"):
        assert collator([{"input_ids": 1, "idx": 0, "text": "a", "label": 1}]) == 1
        collator([{"input_ids": 2, "idx": 1, "text": "b", "label": 0}])
    assert seen == [[{"input_ids": 1, "label": 1}], [{"input_ids": 2, "label": 0}]]
    messages = [r.getMessage() for r in caplog.records if r.name == "raytrainer"]
    assert len(messages) == 1
    assert "in the training set" in messages[0] and "ignored: idx, text" in messages[0]


def test_remove_columns_collator_passes_everything_when_forward_takes_kwargs():
    collator = RemoveColumnsCollator(lambda rows: rows, None)
    assert collator([{"a": 1, "b": 2}]) == [{"a": 1, "b": 2}]
    assert RemoveColumnsCollator(lambda rows: rows, ["a"])([(1, 2)]) == [(1, 2)]


def test_remove_columns_collator_fails_when_no_column_is_left():
    collator = RemoveColumnsCollator(default_data_collator, ["input_ids", "labels"],
                                     description="evaluation")
    with pytest.raises(ValueError) as error:
        collator([{"tokens": [1], "target": 0}])
    message = str(error.value)
    assert "No column of the evaluation dataset matches" in message
    assert "['tokens', 'target']" in message and "['input_ids', 'labels']" in message


class _FakeHFDataset:
    def __init__(self, column_names):
        self.column_names = column_names

    def remove_columns(self, names):
        return _FakeHFDataset([c for c in self.column_names if c not in names])


def test_remove_unused_hf_columns_removes_only_unknown_columns():
    dataset = _FakeHFDataset(["text", "input_ids", "label", "idx"])
    pruned = remove_unused_hf_columns(dataset, signature_columns(_Classifier()), "training")
    assert pruned.column_names == ["input_ids", "label"]
    untouched = _FakeHFDataset(["input_ids"])
    assert remove_unused_hf_columns(untouched, ["input_ids"], None) is untouched
    assert remove_unused_hf_columns(dataset, None, None) is dataset
    torch_style = [{"text": "a"}]
    assert remove_unused_hf_columns(torch_style, ["input_ids"], None) is torch_style
    with pytest.raises(ValueError, match=r"the dataset has \['text'\], forward accepts"):
        remove_unused_hf_columns(_FakeHFDataset(["text"]), ["input_ids"], None)
