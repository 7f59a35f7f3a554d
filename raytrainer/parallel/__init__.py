"""How each rank holds the model: full replicas (DDP), FSDP2 shards or DeepSpeed ZeRO.

``choose_strategy(args)`` picks one from ``TrainingArguments.fsdp`` / ``deepspeed``; the loop asks
the strategy (``strategy.DataParallel`` is the interface) for wrapping, the backward pass, the
optimizer step, the model's part of checkpoints and evaluation batches. FSDP and DeepSpeed are
imported only when a run uses them (DeepSpeed only on the processes that train).
"""

from .strategy import DataParallel


def choose_strategy(args):
    if args.deepspeed:
        from .deepspeed import DeepSpeedStrategy

        return DeepSpeedStrategy(args)
    if args.fsdp:
        from .fsdp import FsdpStrategy
        from .fsdp_config import fsdp_settings

        settings = fsdp_settings(args, warn=False)
        if settings is not None:  # None: 'no_shard', which is plain data parallelism
            return FsdpStrategy(args, settings)
    return DataParallel(args)


__all__ = ["DataParallel", "choose_strategy"]
