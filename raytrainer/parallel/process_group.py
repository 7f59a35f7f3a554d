"""The torch process group a sharded model needs.

Ray Train starts it on its workers (gloo on CPU, nccl on GPU). A run in one process (Ray Train's
local mode, or the loop driven directly) has none, and FSDP and DeepSpeed still need one: a
single-rank group is started in this process with an in-memory store (no network port), and kept
for the life of the process, since the sharded model needs it for every later forward pass.
"""

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
