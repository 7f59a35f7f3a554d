"""How ``report_to`` becomes callbacks of a Trainer, and how a run's identity comes back from
the Ray workers.

A Trainer built by the user gets one callback per integration named in ``report_to`` (unless
the user passed one of that class already). A Trainer rebuilt from another one (on a Ray worker,
or for each trial of a search) receives the original's callbacks as a ``RebuiltCallbacks`` list
and adds none: what the user removed stays removed.
"""

from .base import ReportingCallback
from .registry import callback_classes


class RebuiltCallbacks(list):
    """The complete callback list of a Trainer being rebuilt from another one."""


def _holds(callbacks, cls) -> bool:
    return any(isinstance(cb, cls) or (isinstance(cb, type) and issubclass(cb, cls)) for cb in callbacks)


def added_callbacks(trainer, callbacks) -> list:
    """The callbacks ``report_to`` adds to ``callbacks`` (the constructor's list). A missing
    tracking library fails here, before any training."""
    if isinstance(callbacks, RebuiltCallbacks):
        return []
    given = list(callbacks or [])
    return [cls() for cls in callback_classes(trainer.args.report_to) if not _holds(given, cls)]


def hand_off_runs(trainer) -> dict:
    """On rank 0 of the Ray workers, at the end of ``train()``: close every tracking run and
    return what the driver needs to continue them, by callback class name."""
    handles = {}
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ReportingCallback):
            handle = callback.close_for_handoff()
            if handle is not None:
                handles[type(callback).__name__] = handle
    return handles


def adopt_runs(trainer, handles) -> None:
    """On the driver: later logs (``evaluate()``) continue the runs the workers handed back."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ReportingCallback) and type(callback).__name__ in (handles or {}):
            callback.adopt(handles[type(callback).__name__])
