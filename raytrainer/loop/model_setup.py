"""Model preparation for a training run: device placement, gradient checkpointing, NEFTune noise
and the wrapping the run's parallel strategy does (``torch.compile``, DDP, FSDP, DeepSpeed).
``trainer.model`` always stays the user's module (sharded in place under FSDP); the loop trains
``trainer.model_wrapped``, which may be a wrapper around it."""

import torch

from ..modeling import unwrap_model


def prepare_model_for_training(trainer, run):
    """Place and wrap ``trainer.model`` for training; returns what the loop trains. What must not
    outlive training (NEFTune's noise) is undone when ``run`` is released."""
    args = trainer.args
    model = trainer.model
    if args.tf32 is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    if trainer.place_model_on_device:
        run.strategy.place(model, args.device)
    if args.gradient_checkpointing:
        kwargs = args.gradient_checkpointing_kwargs or {"use_reentrant": True}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if args.neftune_noise_alpha is not None:
        run.on_release(_attach_neftune(model, args.neftune_noise_alpha).remove)
    wrapped = run.strategy.wrap(trainer, model)  # compile and DDP, or sharding (raytrainer.parallel)
    trainer.model_wrapped = wrapped
    return wrapped


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
