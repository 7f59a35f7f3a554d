"""The driver's checks of ``fsdp`` / ``deepspeed`` before any worker starts."""

import importlib.util


def check_sharding(args, model, world_size: int = 1) -> None:
    if args.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ImportError("TrainingArguments.deepspeed is set, but DeepSpeed is not installed here. Install it "
                              "with `pip install 'raytrainer[deepspeed]'` (or `pip install deepspeed`) on the driver "
                              "and in the workers' environment, or remove the deepspeed setting.")
        from .deepspeed_config import build_config, zero_stage

        config = build_config(args, model, world_size=world_size)  # errors in the config or its "auto" values now
        if args.auto_find_batch_size and zero_stage(config) == 3:
            raise ValueError("auto_find_batch_size=True cannot retry under DeepSpeed ZeRO-3 (the engine has already "
                             "partitioned the model when the out-of-memory error comes, as in the HF Trainer); set the "
                             "batch size yourself, or use ZeRO stage 1-2 or fsdp.")
        return
    from .fsdp import wrapped_units
    from .fsdp_config import fsdp_settings

    settings = fsdp_settings(args, warn=True)
    if settings is not None:
        wrapped_units(model, settings)  # the layer classes named exist in the model
