"""What one run owns on this process, apart from ``TrainerState``/``TrainerControl``.

A training run (``TrainingLoop``) or an evaluation outside training creates a ``RunState`` and
binds it to the Trainer for its duration (``Trainer._running``); the Trainer's override points
(``compute_loss``, ``training_step``, the autocast context, ...) read it there. Modules hand it
to each other explicitly; nothing else is stored on the Trainer by the loop.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..parallel import DataParallel, choose_strategy
from .precision import Precision, choose_precision


@dataclass
class TrainRequest:
    """What a ``train()`` call asked for; the same in every kind of run."""

    resume_from_checkpoint: Optional[str] = None
    trial: Any = None
    ignore_keys_for_eval: Optional[list] = None


@dataclass
class RunState:
    context: Any  # runtime.context.ExecutionContext: where this run happens (None: an evaluation outside training)
    strategy: Any  # raytrainer.parallel: how this rank holds the model (DDP, FSDP, DeepSpeed)
    precision: Precision
    device: torch.device
    train_batch_size: int
    sink: Any = None  # where checkpoints go (checkpoints.sinks)
    past: Any = None  # the model's memory output when past_index >= 0
    flos: float = 0.0  # floating point operations since they were last added to the state
    releases: list = field(default_factory=list)  # undo at the end of training (NEFTune's hook)
    skipped_steps: int = 0  # optimizer steps fp16 loss scaling skipped (inf/NaN gradients)

    @property
    def scaler(self):
        return self.precision.scaler

    @classmethod
    def for_training(cls, args, context, train_batch_size: int) -> "RunState":
        device = args.device
        strategy = choose_strategy(args)
        return cls(context=context, strategy=strategy, device=device, train_batch_size=train_batch_size,
                   precision=strategy.precision(choose_precision(args, device, training=True)),
                   sink=context.checkpoint_sink() if context else None)

    @classmethod
    def for_evaluation(cls, args, train_batch_size: int, strategy=None, context=None) -> "RunState":
        """An evaluation outside training, with the strategy of the model it evaluates (a replicated
        model unless a sharded one was prepared for it), in ``context`` (None: this process)."""
        device = args.device
        strategy = strategy or DataParallel(args)
        return cls(context=context, strategy=strategy, device=device, train_batch_size=train_batch_size,
                   precision=strategy.precision(choose_precision(args, device, training=False)))

    def on_release(self, undo: Callable) -> None:
        self.releases.append(undo)

    def release(self) -> None:
        while self.releases:
            self.releases.pop()()
