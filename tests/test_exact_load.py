"""Sharded checkpoints loaded into the sharding they were saved from (``parallel/exact_load.py``):
no DCP planning, each tensor's bytes found by its archive's head after the first of its layout,
and every case it does not cover handed to DCP's path with nothing changed. One-rank gloo group,
FSDP2; the load into another world size is tested on two workers (``test_fsdp_workers.py``)."""

import fractions

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from _sharded_models import optimizer_values, sharded_model, values
from raytrainer.parallel import dcp_io, exact_load
from raytrainer.parallel import sharded_checkpoints as sharded

REPEATED = (16, 16, 16, 16)  # three layers of one shape: two layouts (weight, bias) for six tensors


@pytest.fixture
def archive_parses(monkeypatch):
    """The archives whose directory and pickle were read (``stored_slice``) by exact loads."""
    parsed, original = [], dcp_io.stored_slice
    monkeypatch.setattr(exact_load, "stored_slice", lambda file, begin, *rest: parsed.append(begin) or
                        original(file, begin, *rest))
    return parsed


@pytest.fixture
def dcp_loads(monkeypatch):
    """Loads that took DCP's path."""
    seen, original = [], dcp.load
    monkeypatch.setattr(sharded.dcp, "load", lambda state, **kwargs: seen.append(kwargs["checkpoint_id"]) or
                        original(state, **kwargs))
    return seen


def test_a_resume_loads_model_and_optimizer_without_dcps_planner(tmp_path, dcp_loads, archive_parses):
    model, optimizer = sharded_model(seed=0, widths=REPEATED)
    saved, saved_optimizer = values(model), optimizer_values(optimizer)
    sharded.save_sharded(model, optimizer, str(tmp_path))
    other, other_optimizer = sharded_model(seed=1, widths=REPEATED)
    other_optimizer.param_groups[0]["lr"] = 0.5
    assert not torch.equal(values(other)["0.weight"], saved["0.weight"])

    sharded.load_sharded_model(other, str(tmp_path))
    assert len(archive_parses) == 2  # 6 tensors of 2 layouts: the other 4 found by their heads
    sharded.load_sharded_optimizer(other, other_optimizer, str(tmp_path))
    assert dcp_loads == []
    assert len(archive_parses) == 2 + 3  # of 18: the moments of each shape (one layout) and the steps
    for name, value in values(other).items():
        assert torch.equal(value, saved[name]), name
    for loaded, expected in zip(optimizer_values(other_optimizer), saved_optimizer):
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    assert other_optimizer.param_groups[0]["lr"] == 0.01  # the pickled settings, set where DCP sets them
    # the loaded model and optimizer train on exactly as the saved ones
    batch = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    for net, opt in ((model, optimizer), (other, other_optimizer)):
        net(batch).sum().backward()
        opt.step()
    assert all(torch.equal(value, values(model)[name]) for name, value in values(other).items())


def test_archives_stock_dcp_wrote_with_crc32_are_found_by_their_heads_too(tmp_path, dcp_loads, archive_parses):
    model, _ = sharded_model(seed=0, widths=REPEATED)
    saved = values(model)
    path = str(tmp_path / "pytorch_model_fsdp_0")
    dcp.save({"model": sharded.get_model_state_dict(model)}, storage_writer=FileSystemWriter(path),
             checkpoint_id=path)  # fsync, CRC-32 of every tensor in its archive's headers
    other, _ = sharded_model(seed=1, widths=REPEATED)
    dcp_loads.clear()
    sharded.load_sharded_model(other, str(tmp_path))
    assert dcp_loads == [] and len(archive_parses) == 2
    assert all(torch.equal(value, saved[name]) for name, value in values(other).items())


def _save_plain(state: dict, path: str) -> None:
    dcp.save(state, storage_writer=dcp_io.CheckpointWriter(path), checkpoint_id=path)


def test_an_archive_whose_head_differs_is_read_from_its_own_layout(tmp_path):
    """Same dtype, shape and archive length, another memory order: the head (its pickle) differs,
    so its bytes are not read where the first archive's were, and DCP's path reorders them."""
    rows = torch.arange(24.0).reshape(4, 6)
    transposed = torch.arange(100.0, 124.0).reshape(6, 4).t()  # shape (4, 6), stored column-major
    path = str(tmp_path / "plain")
    _save_plain({"a": rows, "b": transposed}, path)
    infos = FileSystemReader(path).read_metadata().storage_data
    assert infos[MetadataIndex("a", [0, 0])].length == infos[MetadataIndex("b", [0, 0])].length
    state = {"a": torch.zeros(4, 6), "b": torch.zeros(4, 6)}
    assert not exact_load.load_exact(state, path)
    assert torch.equal(state["b"], torch.zeros(4, 6))  # not read in the order of a's bytes
    sharded._load(state, path)
    assert torch.equal(state["a"], rows) and torch.equal(state["b"], transposed)


def test_what_it_does_not_cover_changes_nothing_and_takes_dcps_path(tmp_path):
    path = str(tmp_path / "plain")
    weights = torch.arange(6.0)
    _save_plain({"w": weights, "ratio": fractions.Fraction(1, 3)}, path)
    # a pickled value that is not plain data: nothing is read, and DCP's path refuses it by name
    state = {"w": torch.zeros(6), "ratio": None}
    assert not exact_load.load_exact(state, path)
    assert torch.equal(state["w"], torch.zeros(6)) and state["ratio"] is None
    with pytest.raises(BaseException, match=r"(?s)Refusing to load ratio from .*plain\s+data.*could run code"):
        sharded._load(state, path)  # a CheckpointException carrying the UnpicklingError
    assert state["ratio"] is None
    state = {"w": torch.zeros(6)}  # without the value, the rest loads
    assert exact_load.load_exact(state, path) and torch.equal(state["w"], weights)
    # another dtype: DCP's path converts
    state = {"w": torch.zeros(6, dtype=torch.float64)}
    assert not exact_load.load_exact(state, path)
    sharded._load(state, path)
    assert state["w"].dtype == torch.float64 and torch.equal(state["w"], weights.double())
    # a key the checkpoint lacks: DCP's error names it
    with pytest.raises(BaseException, match="Missing key in checkpoint state_dict: absent"):  # a CheckpointException
        sharded._load({"w": torch.zeros(6), "absent": torch.zeros(2)}, path)
    # another global shape
    assert not exact_load.load_exact({"w": torch.zeros(7)}, path)


def test_a_shard_that_is_not_one_stored_chunk_is_planned_by_dcp():
    """A checkpoint saved by two ranks holds each tensor as two chunks: a one-rank load of the
    whole tensor spans both, which only DCP's resharding plan reads."""
    properties = TensorProperties(dtype=torch.float32)
    halves = [ChunkStorageMetadata(offsets=torch.Size([0]), sizes=torch.Size([2])),
              ChunkStorageMetadata(offsets=torch.Size([2]), sizes=torch.Size([2]))]
    metadata = Metadata(state_dict_metadata={"w": TensorStorageMetadata(properties, torch.Size([4]), halves)})
    metadata.storage_data = {MetadataIndex("w", [0], 0): None, MetadataIndex("w", [2], 1): None}
    assert exact_load._plan({"w": torch.zeros(4)}, {"w": ("w",)}, metadata) is None
    assert exact_load._plan({"w": torch.zeros(2)}, {"w": ("w",)}, metadata) is None  # not the global shape


def test_a_truncated_file_changes_nothing_and_is_dcps_error(tmp_path):
    """The last archive loses its directory: its head, the same as the first of its layout's, is
    intact, but the index says the file is longer, so nothing is read (DCP's path then fails)."""
    model, _ = sharded_model(seed=0, widths=REPEATED)
    sharded.save_sharded(model, None, str(tmp_path))
    data_file = tmp_path / "pytorch_model_fsdp_0" / "__0_0.distcp"
    data_file.write_bytes(data_file.read_bytes()[:-600])
    other, _ = sharded_model(seed=1, widths=REPEATED)
    before = values(other)
    state = {"model": sharded.get_model_state_dict(other)}
    assert not exact_load.load_exact(state, str(tmp_path / "pytorch_model_fsdp_0"))
    assert all(torch.equal(value, before[name]) for name, value in values(other).items())
    with pytest.raises(BaseException, match="checkpoint file is corrupted"):  # a CheckpointException
        sharded.load_sharded_model(other, str(tmp_path))


def _rank_saves_and_loads(rank: int, folder: str) -> None:
    """One of two gloo ranks: save (FSDP2 shards of uneven sizes), load into a fresh model."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    model, optimizer = sharded_model(seed=0, widths=(16, 33, 3))  # 33 and 3 rows: 17 + 16, 2 + 1
    sharded.save_sharded(model, optimizer, folder)
    other, other_optimizer = sharded_model(seed=1, widths=(16, 33, 3))
    through_dcp = []
    sharded.dcp.load = lambda *args, **kwargs: through_dcp.append(kwargs)
    sharded.load_sharded_model(other, folder)
    sharded.load_sharded_optimizer(other, other_optimizer, folder)
    shards = {name: (exact_load.local_shard(mine).clone(), exact_load.local_shard(theirs).clone())
              for (name, mine), theirs in zip(other.state_dict().items(), model.state_dict().values())}
    moments = [(exact_load.local_shard(a["exp_avg"]).clone(), exact_load.local_shard(b["exp_avg"]).clone())
               for a, b in zip(other_optimizer.state.values(), optimizer.state.values())]
    torch.save({"through_dcp": len(through_dcp), "shards": shards, "moments": moments}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_each_read_their_own_chunks_from_their_own_files(tmp_path):
    import torch.multiprocessing

    torch.multiprocessing.spawn(_rank_saves_and_loads, args=(str(tmp_path),), nprocs=2)
    assert sorted(p.name for p in (tmp_path / "pytorch_model_fsdp_0").iterdir()) == [".metadata", "__0_0.distcp",
                                                                                     "__1_0.distcp"]
    rows = {}
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["through_dcp"] == 0
        for name, (loaded, saved) in result["shards"].items():
            assert torch.equal(loaded, saved), (rank, name)
            rows.setdefault(name, []).append(loaded.shape[0] if loaded.dim() else None)
        assert all(torch.equal(loaded, saved) for loaded, saved in result["moments"])
    assert rows["0.weight"] == [17, 16] and rows["2.bias"] == [2, 1]  # each rank its own, uneven shard
