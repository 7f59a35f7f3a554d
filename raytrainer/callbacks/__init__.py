"""Callbacks: the protocol, the handler that dispatches events, and the built-in callbacks."""

from raytrainer.callbacks.base import CallbackHandler, TrainerCallback
from raytrainer.callbacks.early_stopping import EarlyStoppingCallback
from raytrainer.callbacks.notebook import NotebookProgressCallback
from raytrainer.callbacks.flow import (
    DefaultFlowCallback,
    EpochDecisions,
    StepDecisions,
    epoch_end_decisions,
    step_end_decisions,
)
from raytrainer.callbacks.progress import (
    PrinterCallback,
    ProgressCallback,
    format_logs,
    progress_callback_class,
)

# What every Trainer installs before the user's callbacks, as in Hugging Face's Trainer.
DEFAULT_CALLBACKS = [DefaultFlowCallback]
DEFAULT_PROGRESS_CALLBACK = ProgressCallback


def default_callback_handler(args, callbacks, model, processing_class, optimizer, lr_scheduler) -> CallbackHandler:
    """The Trainer's handler: the default flow, the user's callbacks, then the progress display."""
    all_callbacks = list(DEFAULT_CALLBACKS) + list(callbacks or []) + [progress_callback_class(args)]
    return CallbackHandler(all_callbacks, model, processing_class, optimizer, lr_scheduler)

__all__ = [
    "CallbackHandler",
    "DEFAULT_CALLBACKS",
    "DEFAULT_PROGRESS_CALLBACK",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EpochDecisions",
    "NotebookProgressCallback",
    "PrinterCallback",
    "ProgressCallback",
    "StepDecisions",
    "TrainerCallback",
    "default_callback_handler",
    "epoch_end_decisions",
    "format_logs",
    "progress_callback_class",
    "step_end_decisions",
]
