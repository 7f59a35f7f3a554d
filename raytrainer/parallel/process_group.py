"""The torch process group a sharded model needs.

Ray Train starts it on its workers (gloo on CPU, nccl on GPU). A run in one process (Ray Train's
local mode, or the loop driven directly) has none, and FSDP and DeepSpeed still need one: a
single-rank group is started in this process with an in-memory store (no network port), and kept
for the life of the process, since the sharded model needs it for every later forward pass.
"""

import os

import torch
import torch.distributed as dist


def ensure_process_group(args) -> None:
    if dist.is_initialized():
        return
    if args.world_size > 1:
        raise RuntimeError(f"WORLD_SIZE is {args.world_size} but no torch process group was started; a sharded model "
                           "needs the one Ray Train starts on its workers.")
    device = args.device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    _forget_deepspeed_groups()


def set_launcher_environment() -> None:
    """DeepSpeed insists on the ``LOCAL_RANK`` a launcher sets, and ZeRO-3 reads it on every step;
    Ray Train sets it on its workers, a one-rank run in this process gets 0 (for the process's
    lifetime, like the group itself; note that accelerate then takes the process for a launched one)."""
    os.environ.setdefault("LOCAL_RANK", "0")


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches the groups it first saw in module globals; after Ray's local mode destroyed
    the earlier group (it does at the end of every local run), those are dead: drop them."""
    import sys

    comm, groups = sys.modules.get("deepspeed.comm.comm"), sys.modules.get("deepspeed.utils.groups")
    if comm is not None:
        comm.cdb = None
    for name in dir(groups) if groups is not None else ():
        if name.startswith("_") and name.endswith("_GROUP") and name.isupper():
            value = getattr(groups, name)
            setattr(groups, name, {} if isinstance(value, dict) else None)
