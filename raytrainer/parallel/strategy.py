"""How one rank holds and updates the model: the strategy the training loop asks for wrapping,
the backward pass, the optimizer step and the model's part of a checkpoint.

``DataParallel`` is the default: one full copy of the model on every rank, gradients averaged by
DistributedDataParallel across Ray workers (nothing to average in one process). ``parallel.fsdp``
and ``parallel.deepspeed`` shard the model instead. The loop never branches on which one runs.
"""

import os

import torch

from ..checkpoints.layout import OPTIMIZER_NAME
from ..checkpoints.reader import safe_load
from ..checkpoints.weights import load_weights, save_weights


class DataParallel:
    """One full copy of the model per rank (DDP across Ray workers)."""

    shards_model = False  # True: no rank holds the whole model; evaluation and saving are collective

    def __init__(self, args):
        self.args = args

    # ------------------------------------------------------------------ set-up
    def precision(self, precision):
        """The run's mixed precision, as the strategy runs it (``loop.precision.Precision``)."""
        return precision

    def prepare_inputs(self, inputs):
        """A batch as the wrapped model takes it (already on this rank's device)."""
        return inputs

    def place(self, model, device) -> None:
        """Put the model on this rank's device before wrapping."""
        model.to(device)

    def wrap(self, trainer, model):
        """What the loop trains, around ``model`` (already on its device): compiled, then DDP."""
        args = self.args
        wrapped = _compiled(model, args)
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            wrapped = _wrap_ddp(wrapped, model, args)
        return wrapped

    def prepare_for_evaluation(self, trainer) -> None:
        """Prepare the Trainer's model as training would, for an evaluation outside training."""
        trainer.model_wrapped = self.wrap(trainer, trainer.model)

    def create_optimizer_and_scheduler(self, trainer, wrapped, num_training_steps: int):
        """Build the optimizer and scheduler over the prepared model; returns what the loop trains."""
        trainer.create_optimizer_and_scheduler(num_training_steps=num_training_steps)
        return wrapped

    # ------------------------------------------------------------------ one step
    def no_sync(self, wrapped):
        """A context factory that skips the gradient reduction of a micro-batch (None: none)."""
        return getattr(wrapped, "no_sync", None)

    def backward(self, loss, scaler) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def clip_gradients(self, wrapped, optimizer, max_norm: float, scaler):
        """Unscale (fp16) and clip; returns the total gradient norm (a tensor)."""
        if scaler is not None:
            scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(wrapped.parameters(), max_norm)

    def optimizer_step(self, optimizer, scaler) -> bool:
        """Step the optimizer; False when fp16 loss scaling skipped the step (inf/NaN gradients)."""
        if scaler is None:
            optimizer.step()
            return True
        scale_before = scaler.get_scale()  # sync: fp16 only, as accelerate does to detect a skip
        scaler.step(optimizer)
        scaler.update()
        return scaler.get_scale() >= scale_before

    def last_grad_norm(self):
        """The gradient norm of the last step, for strategies that clip inside their step."""
        return None

    def zero_grad(self, wrapped) -> None:
        wrapped.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, trainer, wrapped, folder: str, writes_shared: bool) -> None:
        """Write the model and the optimizer state into a checkpoint folder being staged."""
        if not writes_shared:
            return
        save_weights(wrapped, folder, self.args.save_safetensors)
        if not self.args.save_only_model:
            torch.save(trainer.optimizer.state_dict(), os.path.join(folder, OPTIMIZER_NAME))

    def load_checkpoint(self, trainer, folder: str) -> None:
        """Load a checkpoint's model and optimizer state (the scheduler and the rest: checkpoints.reader)."""
        load_weights(trainer.model, folder)
        path = os.path.join(folder, OPTIMIZER_NAME)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint {folder} has no {OPTIMIZER_NAME} (saved with save_only_model=True?): "
                                    "its weights can be loaded into a model, but training cannot resume from it.")
        trainer.optimizer.load_state_dict(safe_load(path, map_location=self.args.device))

    def load_weights(self, trainer, folder: str) -> None:
        """The weights a checkpoint or model folder holds into the (prepared) model."""
        load_weights(trainer.model, folder)

    def save_model(self, trainer, folder: str) -> None:
        """One consolidated copy of the weights in ``folder`` (safetensors unless disabled). Every rank
        calls it; the ranks that save write."""
        if self.args.should_save:
            save_weights(trainer.model, folder, self.args.save_safetensors)

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, dataloader, forward):
        """The evaluation batches of this rank. Replicated models need nothing across ranks."""
        return dataloader


def _compiled(model, args):
    if not args.torch_compile:
        return model
    return torch.compile(model, backend=args.torch_compile_backend or "inductor", mode=args.torch_compile_mode)


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
    if args.ddp_static_graph is not None:
        options["static_graph"] = args.ddp_static_graph
    device = args.device
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids, **options)
