"""Evaluation tensor trees: concatenation with -100 padding, truncation, numpy, devices."""

from collections import UserDict, namedtuple

import numpy as np
import pytest
import torch

from raytrainer.nested import (
    EvalLoopContainer,
    find_batch_size,
    move_to_device,
    nested_concat,
    nested_detach,
    nested_numpify,
    nested_truncate,
)

Output = namedtuple("Output", ["loss", "logits"])


def test_torch_concat_pads_the_shorter_sequence_with_minus_100():
    result = nested_concat(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6, 7]]))
    assert result.tolist() == [[1, 2, -100], [3, 4, -100], [5, 6, 7]]
    longer_first = nested_concat(torch.tensor([[5, 6, 7]]), torch.tensor([[1]]), padding_index=0)
    assert longer_first.tolist() == [[5, 6, 7], [1, 0, 0]]


def test_numpy_concat_pads_with_minus_100_and_keeps_trailing_dims():
    first = np.ones((1, 2, 3), dtype=np.float32)
    second = np.full((2, 4, 3), 2.0, dtype=np.float32)
    result = nested_concat(first, second)
    assert result.shape == (3, 4, 3) and result.dtype == np.float32
    assert result[0, :2].tolist() == [[1.0] * 3] * 2
    assert result[0, 2:].tolist() == [[-100.0] * 3] * 2
    assert (result[1:] == 2.0).all()


def test_equal_shapes_concatenate_and_scalars_become_vectors():
    assert nested_concat(torch.zeros(2, 3), torch.ones(1, 3)).shape == (3, 3)
    losses = nested_concat(torch.tensor(0.5), torch.tensor(1.5))
    assert losses.tolist() == [0.5, 1.5]
    assert nested_concat(np.arange(2), np.arange(3)).tolist() == [0, 1, 0, 1, 2]


def test_concat_keeps_the_nesting_of_tuples_namedtuples_and_dicts():
    first = {"out": Output(torch.tensor(1.0), torch.zeros(1, 2)), "ids": [torch.tensor([1])]}
    second = {"out": Output(torch.tensor(2.0), torch.ones(1, 3)), "ids": [torch.tensor([2])]}
    result = nested_concat(first, second)
    assert isinstance(result["out"], Output) and isinstance(result["ids"], list)
    assert result["out"].loss.tolist() == [1.0, 2.0]
    assert result["out"].logits.tolist() == [[0.0, 0.0, -100.0], [1.0, 1.0, 1.0]]
    assert result["ids"][0].tolist() == [1, 2]


def test_concat_rejects_mixed_types_and_ranks():
    with pytest.raises(TypeError, match=r"different types: \['Tensor', 'ndarray'\]"):
        nested_concat(torch.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        nested_concat(torch.zeros(1, 2), torch.zeros(1, 2, 3))


def test_truncate_cuts_every_leaf_but_scalars():
    tree = (torch.arange(5), {"b": np.arange(10).reshape(5, 2)}, torch.tensor(3.0), None)
    truncated = nested_truncate(tree, 3)
    assert truncated[0].tolist() == [0, 1, 2]
    assert truncated[1]["b"].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert truncated[2].item() == 3.0 and truncated[3] is None


def test_find_batch_size_skips_scalars_and_none():
    assert find_batch_size({"loss": torch.tensor(1.0), "x": None, "ids": torch.zeros(4, 2)}) == 4
    assert find_batch_size([torch.tensor(1.0), (np.zeros((6, 1)),)]) == 6
    assert find_batch_size({"loss": torch.tensor(1.0)}) is None
    assert find_batch_size("text") is None


def test_numpify_and_detach():
    weights = torch.ones(2, requires_grad=True)
    tree = {"a": weights * 2, "b": torch.tensor([1.5, 2.5], dtype=torch.bfloat16)}
    detached = nested_detach(tree)
    assert detached["a"].requires_grad is False and detached["a"].tolist() == [2.0, 2.0]
    arrays = nested_numpify(tree)
    assert arrays["b"].dtype == np.float32 and arrays["b"].tolist() == [1.5, 2.5]
    assert arrays["a"].tolist() == [2.0, 2.0]
    with pytest.raises(TypeError, match="got str"):
        nested_numpify(["x"])


class _Movable:
    def __init__(self):
        self.device = None

    def to(self, device):
        self.device = device
        return self


def test_move_to_device_recurses_and_keeps_container_types():
    batch = UserDict({"ids": torch.ones(2), "pair": (torch.zeros(1), "keep"), "obj": _Movable()})
    moved = move_to_device(batch, "meta")
    assert isinstance(moved, UserDict)
    assert moved["ids"].device.type == "meta"
    assert isinstance(moved["pair"], tuple) and moved["pair"][0].device.type == "meta"
    assert moved["pair"][1] == "keep" and moved["obj"].device == "meta"


def test_eval_container_concatenates_across_flushes_with_padding():
    container = EvalLoopContainer(padding_index=-100)
    container.add(torch.tensor([[1, 2]]))
    container.add(None)  # a step that produced no logits is skipped
    container.add(torch.tensor([[3, 4, 5]]))
    container.to_cpu_and_numpy()  # eval_accumulation_steps reached
    container.add(torch.tensor([[6, 7, 8, 9]]))
    arrays = container.get_arrays()
    assert isinstance(arrays, np.ndarray)
    assert arrays.tolist() == [[1, 2, -100, -100], [3, 4, 5, -100], [6, 7, 8, 9]]
    assert container.get_arrays().tolist() == arrays.tolist()


def test_eval_container_without_concat_keeps_one_entry_per_batch():
    container = EvalLoopContainer(do_nested_concat=False)
    assert container.get_arrays() is None
    container.add((torch.tensor([1]), torch.tensor([[1, 2]])))
    container.to_cpu_and_numpy()
    container.add((torch.tensor([2]), torch.tensor([[3]])))
    arrays = container.get_arrays()
    assert len(arrays) == 2 and isinstance(arrays[1], tuple)
    assert [a[1].tolist() for a in arrays] == [[[1, 2]], [[3]]]
    assert isinstance(arrays[0][0], np.ndarray)
