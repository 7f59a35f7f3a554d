"""One example through the model on the driver, before any training starts.

It answers two questions early: does the model return a loss (a model that does not fails here,
not mid-run on a worker), and does its loss use ``num_items_in_batch``? The second decides the
maths of token-level losses: a loss that divides by ``num_items_in_batch`` (the label tokens of
the whole accumulation window, summed over every worker) must not be divided again by the
accumulation steps, and is multiplied by the number of workers because DDP averages gradients.
A model whose ``forward`` takes ``**kwargs`` but computes a plain mean (many transformers
classification heads) must get neither, or its loss and gradient grow with the worker count.
Measured, not guessed: the loss is computed with two different counts and compared.

The probe runs in eval mode without gradients and restores the RNG, so training is unaffected.
It is skipped for large models and data it cannot read one example of; the model's declaration
(``accepts_loss_kwargs``) or its signature then decides, as in transformers.
"""

from collections.abc import Mapping
from typing import Optional

import torch

from .data.loaders import has_length
from .loop.losses import loss_from_outputs

# Above this size the probe's forward pass on the driver costs more than it saves.
PROBE_MAX_PARAMETERS = 50_000_000


def probe_model(trainer, overrides_compute_loss: bool) -> Optional[bool]:
    """Run the probe; returns whether the loss uses ``num_items_in_batch`` (None: not measured)."""
    dataset = trainer.train_dataset
    if (dataset is None or not has_length(dataset) or overrides_compute_loss
            or sum(p.numel() for p in trainer.model.parameters()) > PROBE_MAX_PARAMETERS):
        return None
    loader = trainer.get_train_dataloader()
    example = loader.dataset[0]
    if not isinstance(example, Mapping):
        raise TypeError(
            f"Trainer: train_dataset items must be dicts of model inputs, got {type(example).__name__}. Return "
            "dicts such as {'input': x, 'labels': y}, or pass a data_collator that builds them."
        )
    batch = trainer._prepare_inputs(loader.collate_fn([example]))
    model = trainer.model.to(trainer.args.device)
    was_training = model.training
    rng = torch.random.get_rng_state()
    try:
        model.eval()
        with torch.no_grad():
            trainer.compute_loss(model, dict(batch))
            return _loss_uses_num_items(trainer, model, batch)
    finally:
        torch.random.set_rng_state(rng)
        model.train(was_training)


def _loss_uses_num_items(trainer, model, batch) -> Optional[bool]:
    """Whether the model's loss changes with ``num_items_in_batch``; None when that cannot be
    measured here (no labels in the batch) or is already settled (a declaration, no ``**kwargs``)."""
    signature = trainer._signature
    declared = getattr(_core(model), "accepts_loss_kwargs", None)
    if declared is not None or not signature.accepts_var_kwargs or "num_items_in_batch" in signature.parameters:
        return None
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if labels is None or trainer.compute_loss_func is not None or trainer.label_smoother is not None:
        return None
    count = max(1, int(labels.ne(-100).sum()))
    losses = []
    for num_items in (count, 2 * count):
        outputs = model(**batch, num_items_in_batch=torch.tensor(num_items, device=labels.device))
        losses.append(loss_from_outputs(outputs, model).detach().float())
    return not torch.allclose(losses[0], losses[1], rtol=1e-4, atol=0.0)


def _core(model):
    from .modeling import unwrap_model

    return unwrap_model(model)
