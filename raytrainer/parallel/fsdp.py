"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on each Ray worker.

The model is sharded in place: ``trainer.model`` stays the user's module, its parameters become
DTensors that each hold this rank's slice. The units chosen by ``fsdp_config`` (layer classes or a
size threshold) are sharded first, then the root, so each unit's parameters are gathered just in
time for its forward and backward. See ``fsdp_config`` for how HF's options map onto FSDP2.
"""

import contextlib
import os

import torch
import torch.distributed as dist

from ..checkpoints.weights import read_state_dict, save_weights
from . import sharded_checkpoints as sharded
from .fsdp_config import FsdpSettings
from .lockstep import lockstep_batches
from .process_group import ensure_process_group
from .strategy import DataParallel, _compiled


class FsdpStrategy(DataParallel):
    shards_model = True

    def __init__(self, args, settings: FsdpSettings):
        super().__init__(args)
        self.settings = settings
        self.param_dtype = None  # bf16/fp16 compute under mixed precision
        self.root = None  # the sharded module

    def precision(self, precision):
        self.param_dtype = precision.dtype
        if precision.scaler is not None:  # fp16: the found-inf flag must agree across the shards
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            precision.scaler = ShardedGradScaler(device=precision.device_type)
        return precision

    def place(self, model, device) -> None:
        """Nothing: ``fully_shard`` moves each rank's shards to its device (the whole model never is)."""

    def wrap(self, trainer, model):
        from torch.distributed.fsdp import FSDPModule

        ensure_process_group(self.args)
        if isinstance(model, FSDPModule):  # sharded by an earlier run (a retry, a second train())
            model.reset_iter_state()  # an out-of-memory error mid-step leaves FSDP's step state undefined
            self.root = model
        else:
            self.shard(model)
        return _compiled(model, self.args)

    def shard(self, model) -> None:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        settings, device = self.settings, self.args.device
        rank = dist.get_rank()
        efficient = settings.cpu_ram_efficient_loading and dist.get_world_size() > 1
        full_state = model.state_dict() if efficient and rank == 0 else {}
        if settings.sync_module_states and not efficient:
            _broadcast_from_rank_zero(model)
        spare_buffers = _drop_weights(model) if efficient and rank != 0 else None
        units = wrapped_units(model, settings)
        if settings.activation_checkpointing:
            units = _checkpoint_activations(model, units)
        options = dict(mesh=_device_mesh(settings, device), reshard_after_forward=settings.reshard_after_forward)
        if self.param_dtype is not None:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=torch.float32)
        options["offload_policy"] = (CPUOffloadPolicy(pin_memory=device.type == "cuda") if settings.offload
                                     else OffloadPolicy())
        for unit in units:
            fully_shard(unit, **options)
        fully_shard(model, **options)
        _set_prefetching(units, settings)
        if efficient:
            if spare_buffers is not None:
                model.to_empty(device=device if not settings.offload else "cpu")
                _restore(spare_buffers)
            sharded.load_full_state_dict(model, full_state)
        self.root = model

    # ------------------------------------------------------------------ one step
    def no_sync(self, wrapped):
        root = self.root

        @contextlib.contextmanager
        def without_gradient_sync():
            root.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                root.set_requires_gradient_sync(True)

        return without_gradient_sync

    def clip_gradients(self, wrapped, optimizer, max_norm: float, scaler):
        norm = super().clip_gradients(self.root, optimizer, max_norm, scaler)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # a DTensor over the shards

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, trainer, wrapped, folder: str, writes_shared: bool) -> None:
        optimizer = None if self.args.save_only_model else trainer.optimizer
        sharded.save_sharded(self.root, optimizer, folder)
        if self.settings.full_state_dict:  # FULL_STATE_DICT: the consolidated weights too
            self.save_model(trainer, folder)

    def load_checkpoint(self, trainer, folder: str) -> None:
        if not sharded.has_sharded_model(folder):
            raise ValueError(f"Checkpoint {folder} was written without FSDP (no {sharded.SHARDED_MODEL_DIR}/): its "
                             "optimizer state is not sharded. Resume it with the fsdp setting it was trained with, "
                             "or start a new run from its weights.")
        sharded.load_sharded_model(self.root, folder)
        sharded.load_sharded_optimizer(self.root, trainer.optimizer, folder)

    def load_weights(self, trainer, folder: str) -> None:
        if sharded.has_sharded_model(folder):
            sharded.load_sharded_model(self.root, folder)
            return
        full = read_state_dict(folder) if dist.get_rank() == 0 else {}  # consolidated weights: rank 0 reads
        sharded.load_full_state_dict(self.root, full)

    def save_model(self, trainer, folder: str) -> None:
        ensure_process_group(self.args)  # Ray's local mode ends its run by destroying the group
        full = sharded.full_state_dict(self.root)  # every rank takes part; rank 0 receives the weights
        if self.args.should_save and self.args.process_index == 0:
            save_weights(self.root, folder, self.args.save_safetensors, state_dict=full)
        if dist.get_world_size() > 1:
            dist.barrier()  # the file is complete before any rank reads or reports it

    def eval_batches(self, dataloader, forward):
        return lockstep_batches(dataloader, forward, self.args.device)


def wrapped_units(model, settings: FsdpSettings) -> list:
    """The sub-modules that become their own FSDP unit, in registration order (the usual order of
    the forward pass): instances of the named layer classes, or size-based units."""
    classes = set(settings.layer_classes)
    if "<no_split_modules>" in classes:
        classes = set(getattr(model, "_no_split_modules", None) or [])
        if not classes:
            raise ValueError(f"fsdp='auto_wrap': {type(model).__name__} names no _no_split_modules; set fsdp_config "
                             "transformer_layer_cls_to_wrap to its layer class (e.g. 'BertLayer') or min_num_params.")
    if classes:
        present = {type(module).__name__ for module in model.modules()}
        missing = sorted(classes - present)
        if missing:
            raise ValueError(f"fsdp_config transformer_layer_cls_to_wrap: {type(model).__name__} has no module of "
                             f"class {missing}; its classes include {sorted(present)[:12]}.")
        return [m for m in model.modules() if type(m).__name__ in classes and m is not model]
    if settings.min_num_params:
        return _size_based_units(model, settings.min_num_params)
    return []


def _size_based_units(model, threshold: int) -> list:
    """Bottom-up: a module becomes a unit when the parameters it holds outside smaller units reach
    ``threshold`` (the rule of torch's size_based_auto_wrap_policy)."""
    chosen = []

    def visit(module) -> int:
        remaining = sum(p.numel() for p in module.parameters(recurse=False))
        remaining += sum(visit(child) for child in module.children())
        if module is not model and remaining >= threshold:
            chosen.append(module)
            return 0
        return remaining

    visit(model)
    order = {id(m): i for i, m in enumerate(model.modules())}
    return sorted(chosen, key=lambda m: order[id(m)])


def _checkpoint_activations(model, units: list) -> list:
    """Recompute each unit's activations in backward (torch's checkpoint wrapper, non-reentrant);
    returns the wrappers, which become the FSDP units."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    targets = {id(unit) for unit in units}
    apply_activation_checkpointing(
        model, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: id(m) in targets)
    wrappers = {id(getattr(m, "_checkpoint_wrapped_module", None)): m for m in model.modules()}
    return [wrappers[id(unit)] for unit in units]


def _device_mesh(settings: FsdpSettings, device):
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if not settings.hybrid:
        return init_device_mesh(device.type, (world,))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world % per_node:
        raise ValueError(f"fsdp='hybrid_shard' needs the same number of workers on every node; {world} workers with "
                         f"{per_node} on this node do not divide evenly. Use 'full_shard', or set ScalingConfig so "
                         "each node runs the same number of workers.")
    return init_device_mesh(device.type, (world // per_node, per_node), mesh_dim_names=("replicate", "shard"))


def _set_prefetching(units: list, settings: FsdpSettings) -> None:
    for before, after in zip(units, units[1:]):
        if settings.forward_prefetch:
            before.set_modules_to_forward_prefetch([after])
        if settings.backward_prefetch:
            after.set_modules_to_backward_prefetch([before])


def _broadcast_from_rank_zero(model) -> None:
    """``sync_module_states``: every rank starts from rank 0's weights and buffers."""
    if dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def _drop_weights(model) -> list:
    """``cpu_ram_efficient_loading`` on ranks other than 0: release the full weights (they move to
    the meta device) keeping tied parameters tied; returns the non-persistent buffers, which the
    broadcast from rank 0 does not carry, to put back once the shards exist."""
    owners, ties, spare = {}, [], []
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is None:
                continue
            if id(param) in owners:
                ties.append((module, name, owners[id(param)]))
            else:
                owners[id(param)] = (module, name)
        for name in module._non_persistent_buffers_set:
            if module._buffers.get(name) is not None:
                spare.append((module, name, module._buffers[name].clone()))
    model.to("meta")
    for module, name, (owner, owner_name) in ties:
        setattr(module, name, getattr(owner, owner_name))
    return spare


def _restore(spare_buffers: list) -> None:
    for module, name, value in spare_buffers:
        module._buffers[name] = value.to(module._buffers[name].device)
