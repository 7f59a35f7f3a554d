"""A small FSDP2 model with its AdamW state, in a one-rank gloo group: what the sharded checkpoint
tests save and load."""

import torch

from raytrainer.parallel.process_group import ensure_process_group


class _OneRank:
    world_size = 1
    device = torch.device("cpu")


def sharded_model(seed: int, widths=(16, 32, 4)):
    """Linear layers from ``widths[0]`` to ``widths[-1]`` features with ReLUs between, each layer
    and the whole FSDP2-sharded, after one AdamW step (so the optimizer has its state)."""
    from torch.distributed.fsdp import fully_shard

    ensure_process_group(_OneRank())
    torch.manual_seed(seed)
    layers = []
    for features, out_features in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(features, out_features), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    for layer in model[::2]:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, widths[0])).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def values(model) -> dict:
    return {name: t.full_tensor().clone() for name, t in model.state_dict().items()}


def optimizer_values(optimizer) -> list:
    return [{k: getattr(v, "full_tensor", lambda v=v: v)().clone() for k, v in state.items()}
            for state in optimizer.state.values()]
