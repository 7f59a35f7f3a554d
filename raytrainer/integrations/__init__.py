"""Experiment tracking (``report_to``): TensorBoard, MLflow and Weights & Biases callbacks.

Each callback imports its library only when it is built, so importing this package is cheap.
"""

from .attach import RebuiltCallbacks, added_callbacks, adopt_runs, hand_off_runs
from .base import ReportingCallback, rewrite_logs
from .registry import INTEGRATIONS, installed_integrations, is_installed

_CALLBACKS = {"TensorBoardCallback": "tensorboard", "MLflowCallback": "mlflow", "WandbCallback": "wandb"}


def __getattr__(name):
    # TensorBoardCallback & co. are importable from here without importing every module up front
    if name in _CALLBACKS:
        from .registry import callback_class

        return callback_class(_CALLBACKS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "INTEGRATIONS",
    "MLflowCallback",
    "RebuiltCallbacks",
    "ReportingCallback",
    "TensorBoardCallback",
    "WandbCallback",
    "added_callbacks",
    "adopt_runs",
    "hand_off_runs",
    "installed_integrations",
    "is_installed",
    "rewrite_logs",
]
