"""Sharded checkpoint I/O (``parallel/dcp_io.py``): the files stay DCP's own format both ways (a
stock DCP reader loads what we write, we load what stock DCP writes), tensors are read straight
into the model's and optimizer's memory, what cannot be placed exactly takes DCP's own path, and
the save neither fsyncs nor leaves torch's CRC setting changed. One-rank gloo group, FSDP2."""

import io
import os
import pickle

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import LoadItemType
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

from raytrainer.parallel import dcp_io, exact_load, torch_archives
from raytrainer.parallel import sharded_checkpoints as sharded

from _sharded_models import optimizer_values as _optimizer_values
from _sharded_models import sharded_model as _sharded_model
from _sharded_models import values as _values
from conftest import RunsCode


@pytest.fixture
def through_dcp(monkeypatch):
    """Loads take DCP's path (``DirectReader``), as any load not into the sharding it was saved
    from does; ``test_exact_load.py`` tests the other."""
    monkeypatch.setattr(sharded, "load_exact", lambda state, path: False)


def test_round_trip_restores_model_and_optimizer_without_fsync(tmp_path, monkeypatch, through_dcp):
    model, optimizer = _sharded_model(seed=0)
    saved, saved_optimizer = _values(model), _optimizer_values(optimizer)
    synced = []
    with monkeypatch.context() as during_save:
        during_save.setattr(os, "fsync", lambda fd: synced.append(fd))
        during_save.setattr(os, "sync", lambda: synced.append("sync"))
        sharded.save_sharded(model, optimizer, str(tmp_path))
    assert synced == []  # atomicity comes from the checkpoint folder's rename, not from fsync
    assert torch.serialization.get_crc32_options() is True  # restored after the save

    other, other_optimizer = _sharded_model(seed=1)
    assert not torch.equal(_values(other)["0.weight"], saved["0.weight"])
    fallbacks = _count_fallbacks(monkeypatch)
    sharded.load_sharded_model(other, str(tmp_path))
    sharded.load_sharded_optimizer(other, other_optimizer, str(tmp_path))
    # every tensor was read in place; only the optimizer's settings (lr, betas, ...) are pickled objects
    assert {item.type for item in fallbacks} == {LoadItemType.BYTE_IO}
    for name, value in _values(other).items():
        assert torch.equal(value, saved[name]), name
    for loaded, expected in zip(_optimizer_values(other_optimizer), saved_optimizer):
        assert loaded.keys() == expected.keys()
        for key in expected:
            assert torch.equal(loaded[key], expected[key]), key
    # the loaded model trains on from the same point as the saved one
    batch = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(other(batch), model(batch))


def _count_fallbacks(monkeypatch) -> list:
    """Requests handed to DCP's own reader by ``DirectReader``."""
    seen = []
    original = FileSystemReader.read_data

    def counting(self, plan, planner):
        seen.extend(plan.items)
        return original(self, plan, planner)

    monkeypatch.setattr(FileSystemReader, "read_data", counting)
    return seen


def test_files_are_dcp_format_both_ways(tmp_path):
    model, _ = _sharded_model(seed=0)
    saved = _values(model)
    sharded.save_sharded(model, None, str(tmp_path / "ours"))
    # stock DCP reads what we wrote
    stock, _ = _sharded_model(seed=1)
    state = {"model": get_model_state_dict(stock)}
    path = str(tmp_path / "ours" / "pytorch_model_fsdp_0")
    dcp.load(state, storage_reader=FileSystemReader(path), checkpoint_id=path)
    assert all(torch.equal(state["model"][n].full_tensor(), saved[n]) for n in saved)
    # we read what stock DCP (fsync, CRC) wrote
    stock_path = str(tmp_path / "stock" / "pytorch_model_fsdp_0")
    dcp.save({"model": get_model_state_dict(model)}, storage_writer=FileSystemWriter(stock_path),
             checkpoint_id=stock_path)
    ours, _ = _sharded_model(seed=2)
    sharded.load_sharded_model(ours, str(tmp_path / "stock"))
    assert all(torch.equal(value, saved[name]) for name, value in _values(ours).items())


def test_a_tensor_it_cannot_place_takes_dcps_own_path(tmp_path, monkeypatch):
    model, _ = _sharded_model(seed=0)
    saved = _values(model)
    sharded.save_sharded(model, None, str(tmp_path))
    half, _ = _sharded_model(seed=1)
    half.to(torch.float64)  # another dtype: DCP's reader converts while it copies
    fallbacks = _count_fallbacks(monkeypatch)
    sharded.load_sharded_model(half, str(tmp_path))
    assert len(fallbacks) == len(saved)
    for name, value in _values(half).items():
        assert value.dtype == torch.float64 and torch.equal(value, saved[name].double()), name


def test_a_torch_without_the_private_helpers_loads_through_dcps_own_path(tmp_path, monkeypatch):
    model, _ = _sharded_model(seed=0)
    saved = _values(model)
    sharded.save_sharded(model, None, str(tmp_path))
    other, _ = _sharded_model(seed=1)
    monkeypatch.setattr(dcp_io, "narrow_tensor_by_index", None)  # as when the guarded imports failed
    monkeypatch.setattr(exact_load, "flatten_state_dict", None)
    fallbacks = _count_fallbacks(monkeypatch)
    sharded.load_sharded_model(other, str(tmp_path))
    assert len(fallbacks) == len(saved)
    assert all(torch.equal(value, saved[name]) for name, value in _values(other).items())


def _archive_file(tmp_path, tensor, prefix: bytes = b"x" * 100):
    path = tmp_path / "item.bin"
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    path.write_bytes(prefix + buffer.getvalue())
    return path, len(prefix), len(buffer.getvalue())


def test_stored_slice_finds_the_bytes_of_a_contiguous_slice_only(tmp_path):
    tensor = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    path, begin, length = _archive_file(tmp_path, tensor)
    with open(path, "rb") as f:
        rows = dcp_io.stored_slice(f, begin, length, [2, 0], [3, 4])  # rows 2..4: contiguous
        columns = dcp_io.stored_slice(f, begin, length, [0, 1], [6, 2])  # columns 1..2: strided
        f.seek(rows.offset)
        data = torch.frombuffer(bytearray(f.read(3 * 4 * 4)), dtype=torch.float32).reshape(3, 4)
    assert rows.dtype == torch.float32 and rows.shape == (3, 4)
    assert torch.equal(data, tensor[2:5])
    assert columns is None
    transposed_path, begin, length = _archive_file(tmp_path, tensor.t())  # a transposed view: strided
    with open(transposed_path, "rb") as f:
        assert dcp_io.stored_slice(f, begin, length, [0, 0], [4, 6]) is None
    not_a_tensor, begin, length = _archive_file(tmp_path, {"lr": 0.1})
    with open(not_a_tensor, "rb") as f:
        assert dcp_io.stored_slice(f, begin, length, [0], [1]) is None


def test_a_truncated_shard_file_is_an_error_not_a_silent_partial_load(tmp_path):
    model, _ = _sharded_model(seed=0)
    sharded.save_sharded(model, None, str(tmp_path))
    data_file = tmp_path / "pytorch_model_fsdp_0" / "__0_0.distcp"
    content = data_file.read_bytes()
    data_file.write_bytes(content[: len(content) - 600])  # the last archive loses its tail
    other, _ = _sharded_model(seed=1)
    # DCP reports a rank's failure as a CheckpointException, a BaseException
    with pytest.raises(CheckpointException, match=r"(?s)failed finding central directory.*checkpoint file is corrupted"):
        sharded.load_sharded_model(other, str(tmp_path))



@pytest.mark.parametrize("value", [torch.arange(6, dtype=torch.int64), torch.randn(64, 300),
                                   torch.ones(3, dtype=torch.bfloat16), {"lr": 0.1, "betas": (0.9, 0.99)}],
                         ids=["small", "data-past-the-peek", "bfloat16", "not-a-tensor"])
def test_the_archive_directory_read_with_preads_agrees_with_torchs_reader(tmp_path, value):
    path, begin, length = _archive_file(tmp_path, value)
    with open(path, "rb", buffering=0) as f:
        ours = torch_archives.ArchiveRecords.in_file(f.fileno(), begin, length)
        torchs = torch_archives.torch_reader(f, begin, length)
        names = torchs.get_all_records()  # without the archive's folder
        assert ours is not None and sorted(names) == sorted(ours._records)
        for name in names:
            assert ours.get_record_offset(name) == torchs.get_record_offset(name), name
            assert ours.get_record(name) == torchs.get_record(name), name


def test_an_archive_the_directory_read_does_not_know_goes_to_torchs_reader(tmp_path, monkeypatch):
    """A truncated archive, one with a comment after its directory, a file that is no archive:
    ``ArchiveRecords.in_file`` answers None, and the slice is found by torch's own reader (or not at all)."""
    tensor = torch.arange(12, dtype=torch.float32)
    path, begin, length = _archive_file(tmp_path, tensor)
    content = path.read_bytes()
    with open(path, "rb", buffering=0) as f:
        assert torch_archives.ArchiveRecords.in_file(f.fileno(), begin, length - 1) is None
    commented = tmp_path / "commented.bin"
    end = content.rindex(b"PK\x05\x06")
    commented.write_bytes(content[:end + 20] + (4).to_bytes(2, "little") + b"note")  # a zip comment
    with open(commented, "rb", buffering=0) as f:
        assert torch_archives.ArchiveRecords.in_file(f.fileno(), begin, length + 4) is None
        found = dcp_io.stored_slice(f, begin, length + 4, [0], [12])  # torch's reader reads it
        f.seek(found.offset)
        assert torch.equal(torch.frombuffer(bytearray(f.read(48)), dtype=torch.float32), tensor)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(length))
    with open(garbage, "rb", buffering=0) as f:
        assert torch_archives.ArchiveRecords.in_file(f.fileno(), 0, length) is None
        assert dcp_io.stored_slice(f, 0, length, [0], [12]) is None


def test_a_load_reads_every_archive_directory_with_preads_and_no_collective(tmp_path, monkeypatch, through_dcp):
    model, optimizer = _sharded_model(seed=0)
    saved, saved_optimizer = _values(model), _optimizer_values(optimizer)
    sharded.save_sharded(model, optimizer, str(tmp_path))
    slow = []
    original = dcp_io.torch_reader
    monkeypatch.setattr(dcp_io, "torch_reader", lambda *a: slow.append(a) or original(*a))
    other, other_optimizer = _sharded_model(seed=1)

    def collective(*args, **kwargs):
        raise AssertionError("every rank plans and reads its own slices: no collective")

    with monkeypatch.context() as during_load:
        for name in ("gather_object", "scatter_object_list", "all_gather_object", "broadcast_object_list", "barrier"):
            during_load.setattr(dist, name, collective)
        sharded.load_sharded_model(other, str(tmp_path))
    sharded.load_sharded_optimizer(other, other_optimizer, str(tmp_path))
    assert slow == []
    assert all(torch.equal(value, saved[name]) for name, value in _values(other).items())
    for mine, theirs in zip(_optimizer_values(other_optimizer), saved_optimizer):
        assert all(torch.equal(mine[key], theirs[key]) for key in theirs)


def test_a_one_rank_save_calls_no_collective(tmp_path, monkeypatch):
    """With one rank DCP's gathering of plans and write results only pickled them back and forth;
    the two-rank save is tested in ``test_exact_load.py``."""
    model, optimizer = _sharded_model(seed=0)
    saved = _values(model)

    def collective(*args, **kwargs):
        raise AssertionError("a one-rank save needs no collective")

    with monkeypatch.context() as during_save:
        for name in ("gather_object", "scatter_object_list", "all_gather_object", "broadcast_object_list", "barrier"):
            during_save.setattr(dist, name, collective)
        sharded.save_sharded(model, optimizer, str(tmp_path))
    other, _ = _sharded_model(seed=1)
    sharded.load_sharded_model(other, str(tmp_path))
    assert all(torch.equal(value, saved[name]) for name, value in _values(other).items())


def test_the_writer_writes_the_bytes_dcps_own_writer_writes(tmp_path, monkeypatch):
    """Model and optimizer shards (tensors and the optimizer's byte items): the same files, byte
    for byte, as DCP's FileSystemWriter writes with torch's CRC-32 off, and the same index; a
    second save writes every tensor's archive without torch.save."""
    model, optimizer = _sharded_model(seed=0)
    sharded.save_sharded(model, optimizer, str(tmp_path / "ours"))
    with monkeypatch.context() as counting:
        saves, torch_save = [], torch.save

        def counted(value, *args, **kwargs):
            saves.append(value)
            return torch_save(value, *args, **kwargs)

        counting.setattr(torch, "save", counted)
        sharded.save_sharded(model, optimizer, str(tmp_path / "again"))
    assert saves and not any(isinstance(value, torch.Tensor) for value in saves)  # DCP's byte items: the lr, ...
    with dcp_io._without_crc32():
        for folder, state in (("pytorch_model_fsdp_0", {"model": get_model_state_dict(model)}),
                              ("optimizer_0", {"optimizer": get_optimizer_state_dict(model, optimizer)})):
            path = str(tmp_path / "stock" / folder)
            dcp.save(state, storage_writer=FileSystemWriter(path, sync_files=False), checkpoint_id=path)
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        stock = (tmp_path / "stock" / folder / "__0_0.distcp").read_bytes()
        for ours in ("ours", "again"):
            assert (tmp_path / ours / folder / "__0_0.distcp").read_bytes() == stock, (ours, folder)
            index = FileSystemReader(str(tmp_path / ours / folder)).read_metadata()
            stock_index = FileSystemReader(str(tmp_path / "stock" / folder)).read_metadata()
            assert index.storage_data == stock_index.storage_data
            assert index.state_dict_metadata == stock_index.state_dict_metadata


def _torch_save_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("make,templated", [
    (lambda seed: torch.randn(64, 33, generator=torch.Generator().manual_seed(seed)), True),
    (lambda seed: torch.randn(5, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16), True),
    (lambda seed: torch.tensor(seed + 3, dtype=torch.int64), True),  # 0-dim
    (lambda seed: torch.empty(0, 4), True),
    (lambda seed: torch.full((3, 2), float(seed)).requires_grad_(), True),
    (lambda seed: torch.arange(20.0)[seed:seed + 5], False),  # a view of a larger storage: torch.save writes it all
    (lambda seed: torch.randn(4, 6, generator=torch.Generator().manual_seed(seed)).t(), False),  # not contiguous
    (lambda seed: torch.nn.Parameter(torch.ones(3) * seed), False),  # a subclass: pickled another way
    (lambda seed: torch.randn(3000, generator=torch.Generator().manual_seed(seed)), False),  # over LARGEST here
], ids=["float32", "bfloat16", "scalar", "empty", "requires-grad", "view", "transposed", "parameter", "large"])
def test_an_archive_written_here_is_torch_saves_byte_for_byte(make, templated, monkeypatch):
    monkeypatch.setattr(torch_archives.ArchiveWriter, "LARGEST", 10_000)  # bytes: 3000 floats are large here
    writer = torch_archives.ArchiveWriter()
    with dcp_io._without_crc32():
        for seed in (0, 1, 2):  # the first of a layout, then two more of the same layout
            value = make(seed)
            stream = io.BytesIO()
            writer.write(stream, value)
            assert stream.getvalue() == _torch_save_bytes(value), seed
            loaded = torch.load(io.BytesIO(stream.getvalue()), weights_only=True)
            assert torch.equal(loaded, value) and loaded.requires_grad == value.requires_grad
    assert len(writer._around) == (1 if templated else 0)  # one layout: written around after its first


def test_a_shard_larger_than_one_read_loads_whole(tmp_path, monkeypatch):
    from raytrainer.checkpoints import file_reads

    model, _ = _sharded_model(seed=0)
    saved = _values(model)
    sharded.save_sharded(model, None, str(tmp_path))
    original = file_reads._pread_into
    monkeypatch.setattr(file_reads, "_pread_into", lambda fd, view, offset: original(fd, view[:100], offset))
    other, _ = _sharded_model(seed=1)
    fallbacks = _count_fallbacks(monkeypatch)
    sharded.load_sharded_model(other, str(tmp_path))
    assert fallbacks == [] and all(torch.equal(value, saved[name]) for name, value in _values(other).items())


def test_an_index_that_names_code_is_refused_before_it_runs_and_nothing_loads(tmp_path):
    """DCP's own reader unpickles a checkpoint's index (``.metadata``) with ``pickle.load``: a folder
    from someone else could run code on a resume. Ours refuses any name an index does not hold."""
    model, optimizer = _sharded_model(seed=0)
    sharded.save_sharded(model, optimizer, str(tmp_path))
    marker = tmp_path / "code-ran"
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):
        index = FileSystemReader(str(tmp_path / folder)).read_metadata()
        index.planner_data = RunsCode(str(marker))
        (tmp_path / folder / ".metadata").write_bytes(pickle.dumps(index))
    FileSystemReader(str(tmp_path / "optimizer_0")).read_metadata()
    assert marker.exists()  # what DCP's own reader does with it
    marker.unlink()

    other, other_optimizer = _sharded_model(seed=1)
    before, before_optimizer = _values(other), _optimizer_values(other_optimizer)
    refused = r"(?s)Refusing to load the checkpoint index .*{}.\.metadata: it names io\.open, .*could run code"
    with pytest.raises(BaseException, match=refused.format("pytorch_model_fsdp_0")):  # a CheckpointException
        sharded.load_sharded_model(other, str(tmp_path))
    with pytest.raises(BaseException, match=refused.format("optimizer_0")):
        sharded.load_sharded_optimizer(other, other_optimizer, str(tmp_path))
    assert not marker.exists()
    assert all(torch.equal(value, before[name]) for name, value in _values(other).items())
    after_optimizer = _optimizer_values(other_optimizer)
    assert len(after_optimizer) == len(before_optimizer) > 0
    for after, before_state in zip(after_optimizer, before_optimizer):
        assert after.keys() == before_state.keys() and all(torch.equal(after[k], before_state[k]) for k in after)


def test_an_index_file_that_holds_something_else_is_named(tmp_path):
    from raytrainer.parallel.dcp_index import read_index

    (tmp_path / ".metadata").write_bytes(pickle.dumps({"version": 1}))
    with pytest.raises(pickle.UnpicklingError, match=r"\.metadata is not the index of a torch\.distributed\.checkpoint "
                                                     r"checkpoint: it holds a dict"):
        read_index(str(tmp_path / ".metadata"))


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["grad", "no-grad"])
def test_the_save_plan_is_dcps_own_with_every_dtensor_planned_here(monkeypatch, grad_enabled):
    """``LocalShardsPlanner`` makes the plan DCP's ``DefaultSavePlanner`` makes (write items, their
    chunks and tensor properties, the flattening map) and hands the writer the same bytes; every
    DTensor takes its own path, the rest (the step counts, the param groups) DCP's. The parameters
    themselves (``keep_vars``) record ``requires_grad`` as DCP does: only with grad enabled."""
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.tensor import DTensor

    from raytrainer.parallel import dcp_save_plan

    model, optimizer = _sharded_model(seed=0)
    planned_by_dcp, dcp_create = [], dcp_save_plan._create_write_items
    monkeypatch.setattr(dcp_save_plan, "_create_write_items",
                        lambda fqn, value: planned_by_dcp.append(value) or dcp_create(fqn, value))
    states = ({"model": get_model_state_dict(model)}, {"model": model.state_dict(keep_vars=True)},
              {"optimizer": get_optimizer_state_dict(model, optimizer)})
    with torch.set_grad_enabled(grad_enabled):
        plans = []
        for state in states:
            ours, stock = dcp_save_plan.LocalShardsPlanner(), DefaultSavePlanner()
            for planner in (ours, stock):
                planner.set_up_planner(state, None, True)
            plans.append(ours.create_local_plan())
            assert plans[-1] == stock.create_local_plan()
            for item in plans[-1].items:
                if item.tensor_data is None:
                    assert ours.resolve_data(item).getvalue() == stock.resolve_data(item).getvalue()
                else:
                    assert torch.equal(ours.resolve_data(item), stock.resolve_data(item))
    # 2 weights and 2 biases; their AdamW states (4 x exp_avg, exp_avg_sq, step) and 12 values of the group
    assert [len(plan.items) for plan in plans] == [4, 4, 24]
    assert planned_by_dcp and not any(isinstance(value, DTensor) for value in planned_by_dcp)
    assert {item.tensor_data.properties.requires_grad for item in plans[1].items} == {grad_enabled}
