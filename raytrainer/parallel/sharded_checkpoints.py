"""Checkpoints of a sharded model with ``torch.distributed.checkpoint`` (DCP).

Inside ``checkpoint-<step>/`` every rank writes its own shard files and rank 0 the index
(``.metadata``), in accelerate's layout: ``pytorch_model_fsdp_0/`` (``{"model": ...}``) and
``optimizer_0/`` (``{"optimizer": ...}``). The state dicts are keyed by parameter names, not by
ranks, so a checkpoint loads on any number of workers: DCP reads the slices each rank now owns.
Each rank may write into its own staging folder (Ray merges the ranks' folders into one), since
every file name is unique to its rank. The files go to disk and back through ``dcp_io`` (DCP's
format, without its fsyncs and extra copies).
"""

import contextlib
import itertools
import os
import pickle
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..checkpoints.layout import SHARDED_MODEL_DIR, SHARDED_OPTIMIZER_DIR
from .dcp_io import CheckpointWriter, DirectReader
from .dcp_save_plan import LocalShardsPlanner
from .exact_load import load_exact, local_shard


def has_sharded_model(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, SHARDED_MODEL_DIR, ".metadata"))


def save_sharded(model, optimizer, folder: str) -> None:
    """Every rank: its shard of the model (and of the optimizer state, unless None) into ``folder``."""
    _save({"model": get_model_state_dict(model)}, os.path.join(folder, SHARDED_MODEL_DIR))
    if optimizer is not None:
        _save({"optimizer": get_optimizer_state_dict(model, optimizer)}, os.path.join(folder, SHARDED_OPTIMIZER_DIR))


def _save(state: dict, path: str) -> None:
    """With one rank, without collectives: DCP gathers every rank's plan and write results to the
    coordinator, which with one rank only pickled them back and forth (some 60 ms of a 605 MB
    save into memory). With more ranks the coordinator needs them to write the index."""
    with _no_dist_warning_off():
        dcp.save(state, storage_writer=CheckpointWriter(path), planner=LocalShardsPlanner(), checkpoint_id=path,
                 no_dist=_one_rank())


def _one_rank() -> bool:
    return not dist.is_initialized() or dist.get_world_size() == 1


@contextlib.contextmanager
def _no_dist_warning_off():
    """``no_dist`` warns that it assumes a single process: so is a one-rank save, but not a load,
    where it means that every rank plans alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _load(state: dict, path: str) -> None:
    """Into the sharding it was saved from without DCP's planner (``exact_load``); into any other
    through DCP, each rank planning and reading its own slices without collectives (``no_dist``):
    DCP's default load plan is made by every rank alone, and its gathering of the ranks' plans and
    of their read results only pickled them back and forth (some 7 ms of a 605 MB load)."""
    if load_exact(state, path):
        return
    with _no_dist_warning_off():
        dcp.load(state, storage_reader=DirectReader(path), planner=_PlainDataPlanner(path), checkpoint_id=path,
                 no_dist=True)


class _PlainDataPlanner(DefaultLoadPlanner):
    """DCP's load planner, but a checkpoint's pickled values (the optimizer's lr, betas, ...) must
    be plain data: DCP's own unpickles whatever they hold, which could run code the file carries."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def load_bytes(self, read_item, value) -> None:
        try:
            torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(
                f"Refusing to load {read_item.storage_index.fqn} from {self._path}: it holds objects other "
                f"than tensors and plain data, and loading them could run code ({str(error).splitlines()[0]})."
            ) from None
        value.seek(0)  # proven plain data: DCP's own unpickling of it runs nothing else
        super().load_bytes(read_item, value)


def load_sharded_model(model, folder: str) -> None:
    """Every rank: the slices of the checkpoint's weights that this rank's shards cover."""
    state = {"model": get_model_state_dict(model)}
    _load(state, os.path.join(folder, SHARDED_MODEL_DIR))
    # FSDP2's state dict holds views of the parameters themselves, which DCP has filled in place:
    # setting them again would copy every byte onto itself
    if not _is_model_memory(model, state["model"]):
        set_model_state_dict(model, state["model"])


def _is_model_memory(model, state_dict: dict) -> bool:
    """Whether every value of ``state_dict`` is a view of one of ``model``'s own tensors."""
    own = {local_shard(t).data_ptr() for t in itertools.chain(model.parameters(), model.buffers())}
    return all(isinstance(t, torch.Tensor) and local_shard(t).data_ptr() in own for t in state_dict.values())


def load_sharded_optimizer(model, optimizer, folder: str) -> None:
    path = os.path.join(folder, SHARDED_OPTIMIZER_DIR)
    if not os.path.exists(os.path.join(path, ".metadata")):
        raise FileNotFoundError(f"Checkpoint {folder} has no {SHARDED_OPTIMIZER_DIR}/ (saved with save_only_model=True?): "
                                "its weights can be loaded into a model, but training cannot resume from it.")
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    _load(state, path)
    set_optimizer_state_dict(model, optimizer, state["optimizer"])


def full_state_dict(model) -> dict:
    """Every rank takes part; rank 0 receives the whole state dict on the CPU, the others ``{}``."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state_dict: dict) -> None:
    """Every rank takes part; rank 0 passes the whole state dict and every rank receives its shards."""
    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
