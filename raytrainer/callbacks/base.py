"""The callback protocol (``TrainerCallback``) and the object that fans events out (``CallbackHandler``).

Every event receives ``(args, state, control)`` positionally: the ``TrainingArguments``, the
``TrainerState`` and the ``TrainerControl``. Keyword arguments always include ``model``,
``processing_class``, ``optimizer``, ``lr_scheduler``, ``train_dataloader`` and
``eval_dataloader`` (each may be ``None`` when the loop does not have one yet); some events add
their own (``metrics``, ``logs``). A callback steers the loop by setting flags on ``control``,
or by returning a ``TrainerControl`` that replaces it.
"""

from __future__ import annotations

import logging

from raytrainer.state import TrainerControl

logger = logging.getLogger(__name__)


class TrainerCallback:
    """Base class for callbacks: override the events you need; every default does nothing.

    Accept ``**kwargs`` in overrides so that keywords added to an event later do not break them.
    """

    def on_init_end(self, args, state, control, **kwargs):
        """Fires once, when the Trainer constructor has finished setting itself up."""

    def on_train_begin(self, args, state, control, **kwargs):
        """Fires when ``train()`` starts, after the optimizer, scheduler and dataloader exist."""

    def on_train_end(self, args, state, control, **kwargs):
        """Fires when the training loop is over (after the last step and any final save)."""

    def on_epoch_begin(self, args, state, control, **kwargs):
        """Fires before the first batch of every epoch."""

    def on_epoch_end(self, args, state, control, **kwargs):
        """Fires after the last batch of every epoch, before the epoch's log/eval/save happen."""

    def on_step_begin(self, args, state, control, **kwargs):
        """Fires before each optimizer step's first forward pass.

        With gradient accumulation one step covers several batches; this fires once per step.
        """

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        """Fires after gradients are clipped and right before ``optimizer.step()``."""

    def on_optimizer_step(self, args, state, control, **kwargs):
        """Fires right after ``optimizer.step()``, before the gradients are zeroed."""

    def on_substep_end(self, args, state, control, **kwargs):
        """Fires after each accumulated batch that does not finish an optimizer step."""

    def on_step_end(self, args, state, control, **kwargs):
        """Fires after each optimizer step, once ``state.global_step`` has been incremented.

        This is where the default flow decides whether the step logs, evaluates, saves or stops.
        """

    def on_evaluate(self, args, state, control, **kwargs):
        """Fires after an evaluation; ``metrics`` holds its results (keys prefixed ``eval_``)."""

    def on_predict(self, args, state, control, **kwargs):
        """Fires after ``predict()``; ``metrics`` holds the metrics of the prediction run."""

    def on_save(self, args, state, control, **kwargs):
        """Fires after a checkpoint has been written."""

    def on_log(self, args, state, control, **kwargs):
        """Fires when the loop logs; ``logs`` is the dict of values just logged."""

    def on_prediction_step(self, args, state, control, **kwargs):
        """Fires after each batch of an evaluation or prediction run."""

    def on_push_begin(self, args, state, control, **kwargs):
        """Fires just before the output directory is pushed to the Hub."""


class CallbackHandler(TrainerCallback):
    """Holds the callbacks in order and calls each of them for every event.

    The loop sets ``train_dataloader`` / ``eval_dataloader`` (and may replace ``model``,
    ``optimizer``, ...) on the handler; every callback receives them as keywords.
    """

    def __init__(self, callbacks, model, processing_class, optimizer, lr_scheduler, warn_without_flow: bool = True):
        self.callbacks = []
        for callback in callbacks or ():
            self.add_callback(callback)
        self.model = model
        self.processing_class = processing_class
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = None
        self.eval_dataloader = None
        self._warns_without_flow = warn_without_flow  # False for a display-only handler
        self._warn_without_default_flow()

    def _warn_without_default_flow(self) -> None:
        if self._warns_without_flow and not any(_is_default_flow(callback) for callback in self.callbacks):
            logger.warning(
                "No DefaultFlowCallback among the callbacks: the loop will never log, evaluate, "
                "save or stop on its own. Add one with add_callback(DefaultFlowCallback). "
                "Current callbacks:\n%s",
                self.callback_list,
            )

    def add_callback(self, callback) -> None:
        """Append a callback; a class is instantiated with no arguments."""
        instance = _as_callback_instance(callback)
        callback_class = type(instance)
        if any(type(existing) is callback_class for existing in self.callbacks):
            logger.warning(
                "A %s is already among the callbacks; adding a second one. Current callbacks:\n%s",
                callback_class.__name__,
                self.callback_list,
            )
        self.callbacks.append(instance)
        self.__dict__.pop("_listener_cache", None)

    def pop_callback(self, callback):
        """Remove and return a callback: the first instance of a class, or that very instance.

        Returns ``None`` when nothing matches.
        """
        for index, existing in enumerate(self.callbacks):
            if _matches(existing, callback):
                self.__dict__.pop("_listener_cache", None)
                return self.callbacks.pop(index)
        return None

    def remove_callback(self, callback) -> None:
        """Remove a callback like ``pop_callback`` does, without returning it."""
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        """The class names of the callbacks, one per line, in calling order."""
        return "\n".join(type(callback).__name__ for callback in self.callbacks)

    def on_init_end(self, args, state, control, **kwargs):
        return self.call_event("on_init_end", args, state, control, **kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        control.should_training_stop = False
        self._warn_without_default_flow()  # it may have been removed since the handler was built
        return self.call_event("on_train_begin", args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        return self.call_event("on_train_end", args, state, control, **kwargs)

    def on_epoch_begin(self, args, state, control, **kwargs):
        control.should_epoch_stop = False
        return self.call_event("on_epoch_begin", args, state, control, **kwargs)

    def on_epoch_end(self, args, state, control, **kwargs):
        return self.call_event("on_epoch_end", args, state, control, **kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        control.should_log = False
        control.should_evaluate = False
        control.should_save = False
        return self.call_event("on_step_begin", args, state, control, **kwargs)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        return self.call_event("on_pre_optimizer_step", args, state, control, **kwargs)

    def on_optimizer_step(self, args, state, control, **kwargs):
        return self.call_event("on_optimizer_step", args, state, control, **kwargs)

    def on_substep_end(self, args, state, control, **kwargs):
        return self.call_event("on_substep_end", args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        return self.call_event("on_step_end", args, state, control, **kwargs)

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        control.should_evaluate = False
        return self.call_event("on_evaluate", args, state, control, metrics=metrics, **kwargs)

    def on_predict(self, args, state, control, metrics, **kwargs):
        return self.call_event("on_predict", args, state, control, metrics=metrics, **kwargs)

    def on_save(self, args, state, control, **kwargs):
        control.should_save = False
        return self.call_event("on_save", args, state, control, **kwargs)

    def on_log(self, args, state, control, logs, **kwargs):
        control.should_log = False
        return self.call_event("on_log", args, state, control, logs=logs, **kwargs)

    def on_prediction_step(self, args, state, control, **kwargs):
        return self.call_event("on_prediction_step", args, state, control, **kwargs)

    def on_push_begin(self, args, state, control, **kwargs):
        return self.call_event("on_push_begin", args, state, control, **kwargs)

    def call_event(self, event: str, args, state, control, **kwargs):
        """Call ``event`` on every callback, in order, with the handler's objects (``model``,
        ``optimizer``, the dataloaders, ...) and ``kwargs`` as keywords; a returned
        TrainerControl replaces ``control``, which is returned. Callbacks that inherit the base
        class's no-op are skipped: this runs several times per step."""
        listeners = self._listeners(event)
        if not listeners:
            return control
        kwargs = {
            "model": self.model,
            "processing_class": self.processing_class,
            "optimizer": self.optimizer,
            "lr_scheduler": self.lr_scheduler,
            "train_dataloader": self.train_dataloader,
            "eval_dataloader": self.eval_dataloader,
            **kwargs,
        }
        for callback in listeners:
            result = getattr(callback, event)(args, state, control, **kwargs)
            if result is not None:
                control = _checked_control(result, callback, event)
        return control

    def _listeners(self, event: str) -> list:
        # add/pop/remove_callback drop the cache; the key also catches a replaced or resized list
        cache = self.__dict__.get("_listener_cache")
        key = (id(self.callbacks), len(self.callbacks))
        if cache is None or cache[0] != key:
            cache = (key, {})
            self.__dict__["_listener_cache"] = cache
        listeners = cache[1].get(event)
        if listeners is None:
            base = getattr(TrainerCallback, event)
            listeners = [cb for cb in self.callbacks if _implements(cb, event, base)]
            cache[1][event] = listeners
        return listeners


def _implements(callback, event: str, base) -> bool:
    """Whether ``callback`` does something on ``event``: it overrides the method (in its class or
    on the instance) or resolves attributes dynamically, in which case it is always called."""
    cls = type(callback)
    return (getattr(cls, event, base) is not base or event in getattr(callback, "__dict__", {})
            or cls.__getattribute__ is not object.__getattribute__ or hasattr(cls, "__getattr__"))


def _is_default_flow(callback) -> bool:
    # Imported here because flow.py builds on this module.
    from raytrainer.callbacks.flow import DefaultFlowCallback

    return isinstance(callback, DefaultFlowCallback)


def _as_callback_instance(callback) -> TrainerCallback:
    if isinstance(callback, type):
        if not issubclass(callback, TrainerCallback):
            raise TypeError(
                f"callback={callback.__name__} is not a TrainerCallback subclass; "
                "subclass raytrainer.TrainerCallback and override the events you need."
            )
        return callback()
    if not isinstance(callback, TrainerCallback):
        raise TypeError(
            f"callback={callback!r} is a {type(callback).__name__}, not a TrainerCallback; pass a "
            "TrainerCallback subclass or an instance of one."
        )
    return callback


def _matches(existing: TrainerCallback, wanted) -> bool:
    # A class selects its first instance (subclasses included); an instance selects itself.
    if isinstance(wanted, type):
        return isinstance(existing, wanted)
    return existing == wanted


def _checked_control(result, callback, event) -> TrainerControl:
    if not isinstance(result, TrainerControl):
        raise TypeError(
            f"{type(callback).__name__}.{event} returned a {type(result).__name__}; an event must "
            "return None or a TrainerControl (set flags on `control` and return it, or return nothing)."
        )
    return result
