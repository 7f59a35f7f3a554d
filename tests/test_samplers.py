"""Samplers and DataLoader builders: exact index sequences, seeding, rank sharding."""

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from raytrainer.data.loaders import (
    IterableDatasetShard,
    build_eval_dataloader,
    build_train_dataloader,
    has_length,
    set_dataloader_epoch,
)
from raytrainer.data.samplers import (
    EpochShuffleSampler,
    LengthGroupedSampler,
    ShardedEvalSampler,
    num_batches_per_rank,
)


def _randperm(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def _rank_batches(sampler_factory, n, batch_size):
    """Batches (lists of ints) a DataLoader draws through the given sampler."""
    sampler = sampler_factory()
    loader = DataLoader(list(range(n)), batch_size=batch_size, sampler=sampler)
    return [batch.tolist() for batch in loader]


# --- EpochShuffleSampler: exact sequences -------------------------------------------------


def test_unshuffled_two_ranks_take_alternate_slices_of_each_global_batch():
    ranks = [list(EpochShuffleSampler(10, 2, seed=0, shuffle=False, world_size=2, rank=r))
             for r in range(2)]
    assert ranks == [[0, 1, 4, 5, 8], [2, 3, 6, 7, 9]]


def test_partial_global_batch_is_padded_by_wrapping_to_the_start_of_the_order():
    # global batches: [0..3] [4..7] [8 9 10] -> the last one is completed with order[0] = 0
    ranks = [list(EpochShuffleSampler(11, 2, seed=0, shuffle=False, world_size=2, rank=r))
             for r in range(2)]
    assert ranks == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 0]]


def test_padding_wraps_cyclically_when_there_are_fewer_examples_than_ranks():
    ranks = [list(EpochShuffleSampler(1, 2, seed=0, shuffle=False, world_size=3, rank=r))
             for r in range(3)]
    assert ranks == [[0], [0], [0]]


def test_single_rank_is_never_padded():
    sampler = EpochShuffleSampler(5, 2, seed=0, shuffle=False)
    assert list(sampler) == [0, 1, 2, 3, 4]
    assert len(sampler) == 5


def test_drop_last_drops_the_partial_global_batch():
    ranks = [EpochShuffleSampler(11, 2, seed=0, shuffle=False, world_size=2, rank=r,
                                 drop_last=True) for r in range(2)]
    assert [list(s) for s in ranks] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert [len(s) for s in ranks] == [4, 4]
    assert num_batches_per_rank(11, 2, world_size=2, drop_last=True) == 2
    assert num_batches_per_rank(11, 2, world_size=2, drop_last=False) == 3


# --- seeding ---------------------------------------------------------------------------------


def test_epoch_order_is_randperm_seeded_with_seed_plus_epoch_whatever_the_global_rng():
    sampler = EpochShuffleSampler(10, 10, seed=7)
    torch.manual_seed(123)
    epoch0 = list(sampler)
    torch.manual_seed(999)  # the global RNG must not matter
    assert list(sampler) == epoch0 == _randperm(10, 7)
    sampler.set_epoch(3)
    assert list(sampler) == _randperm(10, 10)
    assert list(sampler) != epoch0


def test_a_fresh_sampler_reproduces_a_given_epoch():
    first = EpochShuffleSampler(20, 3, seed=5, world_size=2, rank=1)
    first.set_epoch(2)
    second = EpochShuffleSampler(20, 3, seed=5, world_size=2, rank=1)
    second.set_epoch(2)
    assert list(first) == list(second)


@pytest.mark.parametrize("n", [1, 3, 8, 9, 10, 13, 17])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_two_ranks_of_b_see_the_examples_of_one_rank_of_2b_step_by_step(n, batch_size):
    single = _rank_batches(lambda: EpochShuffleSampler(n, 2 * batch_size, seed=11), n,
                           2 * batch_size)
    per_rank = [
        _rank_batches(lambda r=r: EpochShuffleSampler(n, batch_size, seed=11, world_size=2, rank=r),
                      n, batch_size)
        for r in range(2)
    ]
    order = _randperm(n, 11)
    assert len(per_rank[0]) == len(per_rank[1]) == len(single)
    for step, expected in enumerate(single):
        combined = per_rank[0][step] + per_rank[1][step]
        assert combined[: len(expected)] == expected
        # only the last step may hold padding, taken from the start of the epoch order
        padding = combined[len(expected):]
        assert padding == order[: len(padding)]
        assert len(padding) < 2 and (not padding or step == len(single) - 1)


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_rank_draws_the_same_number_of_batches(world_size, drop_last):
    for n in range(1, 20):
        for batch_size in (1, 2, 3):
            samplers = [EpochShuffleSampler(n, batch_size, seed=0, world_size=world_size,
                                            rank=r, drop_last=drop_last)
                        for r in range(world_size)]
            counts = {len(_rank_batches(lambda s=s: s, n, batch_size)) for s in samplers}
            assert counts == {num_batches_per_rank(n, batch_size, world_size, drop_last)}
            assert all(len(s) == len(list(s)) for s in samplers)


def test_skip_batches_resumes_mid_epoch_once():
    sampler = EpochShuffleSampler(10, 3, seed=1)
    full = list(sampler)
    sampler.skip_batches(2)
    assert list(sampler) == full[6:]
    assert list(sampler) == full  # the skip applies to one iteration only
    sampler.skip_batches(4)
    assert list(sampler) == []
    with pytest.raises(ValueError, match="num_batches=5 exceeds the 4 batches"):
        sampler.skip_batches(5)


def test_bad_sampler_arguments_name_the_argument():
    with pytest.raises(ValueError, match="rank=2 is out of range for world_size=2"):
        EpochShuffleSampler(10, 2, seed=0, world_size=2, rank=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        EpochShuffleSampler(10, 0, seed=0)
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        EpochShuffleSampler(10, 2, seed=1.5)
    with pytest.raises(ValueError, match="seed must be in"):
        EpochShuffleSampler(10, 2, seed=-1)


# --- ShardedEvalSampler ----------------------------------------------------------------------


def test_eval_shards_are_contiguous_and_differ_by_at_most_one():
    shards = [list(ShardedEvalSampler(10, 3, r)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_eval_shards_cover_every_example_exactly_once(n, world_size):
    shards = [list(ShardedEvalSampler(n, world_size, r)) for r in range(world_size)]
    assert sum(shards, []) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


# --- LengthGroupedSampler --------------------------------------------------------------------


def test_one_megabatch_is_sorted_longest_first():
    lengths = [3, 7, 1, 9, 5, 2, 8, 4]
    sampler = LengthGroupedSampler(lengths, 1, seed=0, mega_batch_mult=8)
    assert list(sampler) == [3, 6, 1, 4, 7, 0, 5, 2]


def test_megabatches_hold_fifty_batches_sorted_with_the_longest_example_first():
    lengths = _randperm(1000, 3)  # distinct lengths 0..999
    order = list(LengthGroupedSampler(lengths, 2, seed=4))
    assert sorted(order) == list(range(1000))
    assert lengths[order[0]] == 999
    megabatches = [[lengths[i] for i in order[i:i + 100]] for i in range(0, 1000, 100)]
    for block in megabatches:  # 50 batches of 2 per megabatch, each sorted longest first
        assert block[1:] == sorted(block[1:], reverse=True)
    # the longest example was swapped with the head of the first megabatch, so at most one
    # other megabatch starts with a shorter example than its second one
    assert sum(block[0] < block[1] for block in megabatches[1:]) <= 1
    assert order != list(LengthGroupedSampler(lengths, 2, seed=5))


def test_length_grouping_is_seeded_per_epoch_and_splits_like_one_big_batch():
    lengths = [(i * 7) % 13 for i in range(23)]
    sampler = LengthGroupedSampler(lengths, 4, seed=2)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    ranks = [list(LengthGroupedSampler(lengths, 2, seed=2, world_size=2, rank=r))
             for r in range(2)]
    steps = [ranks[0][i:i + 2] + ranks[1][i:i + 2] for i in range(0, 12, 2)]
    assert sum(steps, [])[:23] == epoch0


def test_lengths_must_be_non_negative_ints():
    with pytest.raises(ValueError, match=r"lengths\[1\]=2.5 is not a non-negative int"):
        LengthGroupedSampler([1, 2.5], 2, seed=0)


# --- loaders ---------------------------------------------------------------------------------


class _Stream(IterableDataset):
    def __init__(self, n):
        self.n, self.epochs = n, []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        return iter(range(self.n))


class _BrokenLen:
    def __len__(self):
        raise TypeError("no length")


def test_has_length():
    assert has_length([1, 2]) is True
    assert has_length(_Stream(3)) is False
    assert has_length(_BrokenLen()) is False


def test_train_dataloader_shards_map_style_data_and_follows_epochs():
    dataset = TensorDataset(torch.arange(10))
    loaders = [build_train_dataloader(dataset, None, 2, seed=3, world_size=2, rank=r)
               for r in range(2)]
    assert isinstance(loaders[0].sampler, EpochShuffleSampler)
    for epoch in (0, 1):
        for loader in loaders:
            set_dataloader_epoch(loader, epoch)
        steps = [a[0].tolist() + b[0].tolist() for a, b in zip(*loaders)]
        assert len(steps) == 3
        assert sum(steps, [])[:10] == _randperm(10, 3 + epoch)


def test_train_dataloader_with_workers_matches_in_process_loading():
    dataset = TensorDataset(torch.arange(12))
    in_process = build_train_dataloader(dataset, None, 4, seed=0)
    with_worker = build_train_dataloader(dataset, None, 4, seed=0, num_workers=1)
    assert [b[0].tolist() for b in in_process] == [b[0].tolist() for b in with_worker]


def test_group_by_length_reads_lengths_from_input_ids():
    dataset = [{"input_ids": [0] * length} for length in (2, 9, 4, 1)]
    loader = build_train_dataloader(dataset, lambda rows: rows, 4, seed=0, group_by_length=True)
    assert isinstance(loader.sampler, LengthGroupedSampler)
    assert [len(row["input_ids"]) for row in next(iter(loader))] == [9, 4, 2, 1]
    with pytest.raises(ValueError, match="example 0 has no 'input_ids' field"):
        build_train_dataloader([{"x": 1}], None, 1, seed=0, group_by_length=True)
    with pytest.raises(ValueError, match="lengths has 1 entries but the dataset has 4"):
        build_train_dataloader(dataset, None, 1, seed=0, group_by_length=True, lengths=[3])


def test_worker_only_options_need_workers():
    with pytest.raises(ValueError, match="persistent_workers=True needs worker processes"):
        build_train_dataloader([1], None, 1, seed=0, persistent_workers=True)
    with pytest.raises(ValueError, match="prefetch_factor=2 needs worker processes"):
        build_eval_dataloader([1], None, 1, prefetch_factor=2)


def test_streams_are_split_per_global_batch_padded_for_training_exact_for_eval():
    train = [[b.tolist() for b in build_train_dataloader(_Stream(7), None, 2, seed=0,
                                                          world_size=2, rank=r)]
             for r in range(2)]
    assert train == [[[0, 1], [4, 5]], [[2, 3], [6, 0]]]
    evaluation = [[b.tolist() for b in build_eval_dataloader(_Stream(7), None, 2, world_size=2,
                                                              rank=r)]
                  for r in range(2)]
    assert evaluation == [[[0, 1], [4, 5]], [[2, 3], [6]]]
    dropped = list(IterableDatasetShard(_Stream(7), 2, 2, 1, drop_last=True))
    assert dropped == [2, 3]


def test_set_dataloader_epoch_reaches_a_stream_through_its_shard():
    stream = _Stream(4)
    loader = build_train_dataloader(stream, None, 1, seed=0, world_size=2, rank=0)
    set_dataloader_epoch(loader, 5)
    assert stream.epochs == [5]


def test_eval_dataloader_reads_each_example_once_in_order():
    dataset = TensorDataset(torch.arange(10))
    batches = [[b[0].tolist() for b in build_eval_dataloader(dataset, None, 2, world_size=3,
                                                             rank=r)]
               for r in range(3)]
    assert batches == [[[0, 1], [2, 3]], [[4, 5], [6]], [[7, 8], [9]]]
