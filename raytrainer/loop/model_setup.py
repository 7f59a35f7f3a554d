"""Model preparation for a training run: device placement, gradient checkpointing, NEFTune noise
and ``torch.compile``. ``trainer.model`` always stays the user's module; the loop trains
``trainer.model_wrapped``, which may be a compiled (or, on workers, DDP) wrapper around it."""

import torch

from ..modeling import unwrap_model
from .collectives import is_distributed


def prepare_model_for_training(trainer, run):
    """Place and wrap ``trainer.model`` for training; returns what the loop trains. What must not
    outlive training (NEFTune's noise) is undone when ``run`` is released."""
    args = trainer.args
    model = trainer.model
    if args.tf32 is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    if trainer.place_model_on_device:
        model.to(args.device)
    if args.gradient_checkpointing:
        kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": True}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if args.neftune_noise_alpha is not None:
        run.on_release(_attach_neftune(model, args.neftune_noise_alpha).remove)
    wrapped = model
    if args.torch_compile:
        wrapped = torch.compile(model, backend=args.torch_compile_backend or "inductor",
                                mode=args.torch_compile_mode)
    if is_distributed(args):
        wrapped = _wrap_ddp(wrapped, model, args)
    trainer.model_wrapped = wrapped
    return wrapped


def _wrap_ddp(wrapped, model, args):
    """DistributedDataParallel with the ``ddp_*`` arguments; unused-parameter search defaults as
    in HF: off for a transformers model with gradient checkpointing, on otherwise."""
    if args.ddp_find_unused_parameters is not None:
        find_unused = args.ddp_find_unused_parameters
    else:
        find_unused = not getattr(model, "is_gradient_checkpointing", False)
    options = {"find_unused_parameters": find_unused}
    if args.ddp_bucket_cap_mb is not None:
        options["bucket_cap_mb"] = args.ddp_bucket_cap_mb
    if args.ddp_broadcast_buffers is not None:
        options["broadcast_buffers"] = args.ddp_broadcast_buffers
    device = args.device
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids, **options)


def _attach_neftune(model, alpha: float):
    """NEFTune (Jain et al., 2023): uniform noise of scale alpha / sqrt(seq_len * dim) added to the
    input embeddings during training only."""
    embeddings = unwrap_model(model).get_input_embeddings()

    def add_noise(module, inputs, output):
        if not module.training:
            return output
        scale = alpha / torch.sqrt(torch.tensor(output.size(1) * output.size(2), dtype=output.dtype))
        return output + torch.zeros_like(output).uniform_(-1, 1) * scale.to(output.device)

    return embeddings.register_forward_hook(add_noise)
