"""DeepSpeed ZeRO (stages 0-3, with offload as its config says) on each Ray worker.

``deepspeed.initialize`` builds the engine over the model, with DeepSpeed's optimizer and
scheduler when the config has them, else with the Trainer's own (``create_optimizer``/
``create_scheduler``). The engine runs the backward pass (loss scaling), gradient accumulation
(the boundary is set per micro-batch, so an epoch's short last window steps too), clipping and the
optimizer step. Checkpoints are DeepSpeed's own (``global_step<N>/`` and ``latest`` inside
``checkpoint-<N>/``), every rank writing its partition; DeepSpeed reads them back through our
weights-only loader (``_weights_only_loads``), so a checkpoint cannot run code when a run resumes.
"""

import contextlib
import os

import torch

from ..checkpoints.layout import DEEPSPEED_LATEST
from ..checkpoints.reader import safe_load
from ..checkpoints.weights import load_weights, read_state_dict, save_weights
from ..nested import cast_floating
from .deepspeed_config import build_config, zero_stage
from .lockstep import lockstep_batches
from .process_group import ensure_process_group, set_launcher_environment
from .strategy import DataParallel


class DeepSpeedStrategy(DataParallel):
    shards_model = True  # ZeRO-3 partitions the parameters; stages 1-2 are saved and loaded the same way

    def __init__(self, args):
        super().__init__(args)
        self.engine = None
        self.boundary = True

    def precision(self, precision):
        """DeepSpeed casts the model and scales the loss itself (its fp16/bf16 sections): no autocast."""
        return type(precision)(precision.device_type, None)

    def prepare_inputs(self, inputs):
        """Floating-point inputs in the engine's dtype, as the HF Trainer passes them: the engine holds
        the weights in bf16/fp16 (fp32 without either) and, unlike autocast, casts no inputs."""
        return cast_floating(inputs, self.input_dtype)

    @property
    def input_dtype(self):
        return torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32

    def place(self, model, device) -> None:
        """Nothing: the engine places (and under ZeRO-3 partitions) the model."""

    def wrap(self, trainer, model):
        ensure_process_group(self.args)
        return model  # the engine is built with the optimizer (create_optimizer_and_scheduler)

    def prepare_for_evaluation(self, trainer) -> None:
        import deepspeed

        ensure_process_group(self.args)
        config = {k: v for k, v in build_config(self.args, trainer.model).items() if k not in ("optimizer", "scheduler")}
        set_launcher_environment()
        self.engine = deepspeed.initialize(model=trainer.model, config=config)[0]
        trainer.model_wrapped = self.engine

    def create_optimizer_and_scheduler(self, trainer, wrapped, num_training_steps: int):
        import deepspeed

        config = build_config(self.args, trainer.model, num_training_steps=num_training_steps)
        options = {"model": trainer.model, "config": config, "model_parameters": trainer.model.parameters()}
        if "optimizer" not in config:
            options["optimizer"] = trainer.create_optimizer()
        set_launcher_environment()
        engine, optimizer, _, scheduler = deepspeed.initialize(**options)
        if scheduler is None:  # the Trainer's schedule over the optimizer's parameter groups
            scheduler = trainer.create_scheduler(num_training_steps, optimizer=options.get("optimizer", optimizer))
        else:
            scheduler = EngineStepsScheduler(scheduler)
        self.engine, trainer.optimizer, trainer.lr_scheduler = engine, optimizer, scheduler
        trainer.model_wrapped = engine
        return engine

    # ------------------------------------------------------------------ one step
    def no_sync(self, wrapped):
        @contextlib.contextmanager
        def inside_window():
            self.boundary = False
            try:
                yield
            finally:
                self.boundary = True

        return inside_window

    def backward(self, loss, scaler) -> None:
        self.engine.set_gradient_accumulation_boundary(self.boundary)
        self.engine.backward(loss, scale_wrt_gas=False)  # the Trainer already divided by the window

    def clip_gradients(self, wrapped, optimizer, max_norm: float, scaler):
        return None  # the engine clips in its step (gradient_clipping)

    def optimizer_step(self, optimizer, scaler) -> bool:
        self.engine.step()
        return bool(self.engine.was_step_applied())  # False: fp16 overflow, DeepSpeed skipped the update

    def last_grad_norm(self):
        norm = self.engine.get_global_grad_norm()
        return torch.as_tensor(float(norm)) if norm is not None else None

    def zero_grad(self, wrapped) -> None:
        """Nothing: the engine's step zeroes the gradients."""

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, trainer, wrapped, folder: str, writes_shared: bool) -> None:
        tag = f"global_step{trainer.state.global_step}"
        self.engine.save_checkpoint(folder, tag=tag, exclude_frozen_parameters=False)
        if zero_stage(self.engine.config) < 3 and writes_shared:
            save_weights(self.engine.module, folder, self.args.save_safetensors)  # stages 0-2: whole weights

    def load_checkpoint(self, trainer, folder: str) -> None:
        if not os.path.exists(os.path.join(folder, DEEPSPEED_LATEST)):
            raise ValueError(f"Checkpoint {folder} was not written by DeepSpeed (no '{DEEPSPEED_LATEST}' file); resume "
                             "it with the setting it was trained with, or start a new run from its weights.")
        with _weights_only_loads(self.engine):
            path, _ = self.engine.load_checkpoint(folder, load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise ValueError(f"DeepSpeed could not load the checkpoint in {folder} (written by a different number of "
                             "workers? DeepSpeed checkpoints resume on the worker count that wrote them).")

    def load_weights(self, trainer, folder: str) -> None:
        if os.path.exists(os.path.join(folder, DEEPSPEED_LATEST)):
            with _weights_only_loads(self.engine):
                self.engine.load_checkpoint(folder, load_optimizer_states=False, load_lr_scheduler_states=False,
                                            load_module_only=True)
        elif zero_stage(self.engine.config) == 3:
            import deepspeed

            parameters = list(self.engine.module.parameters())
            with deepspeed.zero.GatheredParameters(parameters, modifier_rank=0):
                if torch.distributed.get_rank() == 0:
                    self.engine.module.load_state_dict(read_state_dict(folder), strict=False)
        else:
            load_weights(self.engine.module, folder)

    def save_model(self, trainer, folder: str) -> None:
        ensure_process_group(self.args)  # Ray's local mode ends its run by destroying the group
        if zero_stage(self.engine.config) == 3:
            full = self.engine._zero3_consolidated_16bit_state_dict()  # every rank takes part
        else:
            full = None
        if self.args.should_save and self.args.process_index == 0:
            save_weights(self.engine.module, folder, self.args.save_safetensors, state_dict=full)
        if torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()

    def eval_batches(self, dataloader, forward):
        return lockstep_batches(dataloader, forward, self.args.device)


class EngineStepsScheduler:
    """The scheduler DeepSpeed built from its config: the engine steps it in ``engine.step()``, so
    the loop's ``step()`` does nothing; the rest is the scheduler's own."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def step(self, *args, **kwargs) -> None:
        pass

    def get_last_lr(self):
        return self.scheduler.get_last_lr()

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)


# DeepSpeed's checkpoint engines that read a checkpoint file with torch.load from its path
_FILE_ENGINES = ("TorchCheckpointEngine", "FastCheckpointEngine", "DecoupledCheckpointEngine")


@contextlib.contextmanager
def _weights_only_loads(engine):
    """DeepSpeed's own load of a checkpoint unpickles every file (``weights_only=False``), so a
    checkpoint from elsewhere could run code on resume. For the block, the engine's checkpoint
    engine reads each file with ``weights_only=True`` instead, allowing by name the few DeepSpeed
    classes its checkpoints hold (listed from ZeRO stages 0-3 in fp32 and bf16, and ZeRO-2 with its
    optimizer offloaded): anything else is refused with an error naming the file."""
    files = getattr(engine, "checkpoint_engine", None)
    if type(files).__name__ not in _FILE_ENGINES:
        yield  # another engine reads from elsewhere, in its own format
        return
    allowed = _deepspeed_checkpoint_classes()
    previous = vars(files).get("load")
    files.load = lambda path, map_location=None: safe_load(path, map_location, allowed_globals=allowed)
    try:
        yield
    finally:
        if previous is None:
            del files.load  # the class's own method again
        else:
            files.load = previous


def _deepspeed_checkpoint_classes() -> list:
    """Plain-data classes DeepSpeed pickles into its checkpoints: the loss scaler (a static or a
    dynamic one, as fp16 runs use), the ZeRO stage, the map of a flat partition's fragments."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
