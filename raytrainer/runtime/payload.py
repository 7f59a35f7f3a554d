"""What crosses from the driver to the Ray workers: the user's Trainer class and the arguments
its constructor was called with, so each worker rebuilds the same Trainer (subclass overrides
included). Large objects inside travel through Ray's object store as one ``ray.put``."""

import inspect
from dataclasses import dataclass, field

from ..integrations import RebuiltCallbacks

# Display callbacks are the driver's business: workers get them rebuilt or not at all.
_DISPLAY_CALLBACK_NAMES = {"DefaultFlowCallback", "ProgressCallback", "PrinterCallback", "NotebookProgressCallback"}


# What the driver found out about the model (its probe) and workers must not measure again.
_DRIVER_FACTS = ("model_accepts_loss_kwargs",)


@dataclass
class TrainerBlueprint:
    trainer_cls: type
    arguments: dict  # constructor keyword -> value, as bound to the class's __init__ signature
    facts: dict = field(default_factory=dict)  # public Trainer attributes the driver settled

    def build(self):
        """The Trainer, rebuilt on a Ray worker: the driver's checks and probe are not repeated."""
        from ..validation import checked_on_driver

        with checked_on_driver():
            trainer = self.trainer_cls(**self.arguments)
        for name, value in self.facts.items():
            setattr(trainer, name, value)
        return trainer


def blueprint_of(trainer) -> TrainerBlueprint:
    """The constructor call that rebuilds ``trainer`` on a worker, with the current model (after
    ``model_init``) and callbacks, and without Ray configuration (the worker runs the loop itself)."""
    args, kwargs = getattr(trainer, "_constructor_call", ((), {}))
    signature = inspect.signature(type(trainer).__init__)
    bound = signature.bind(trainer, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(signature.parameters)))  # self
    for name, parameter in signature.parameters.items():
        if parameter.kind == parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
    arguments.update(
        model=trainer.model,
        model_init=None,  # the driver already built this run's model
        args=trainer.args,
        callbacks=RebuiltCallbacks(cb for cb in trainer.callback_handler.callbacks
                                   if type(cb).__name__ not in _DISPLAY_CALLBACK_NAMES),
        scaling_config=None,
        run_config=None,
    )
    for name in ("train_dataset", "eval_dataset"):  # as the driver holds them (Ray datasets become streams)
        if name in arguments:
            arguments[name] = getattr(trainer, name)
    return TrainerBlueprint(type(trainer), arguments, {name: getattr(trainer, name) for name in _DRIVER_FACTS})


def put_blueprint(blueprint: TrainerBlueprint):
    """``ray.put`` the blueprint; if it does not pickle, name the argument that does not."""
    import ray

    try:
        return ray.put(blueprint)
    except Exception as error:  # noqa: BLE001 - pickling errors come in many types
        if not _pickles(blueprint.trainer_cls):
            raise TypeError(f"The Trainer class {blueprint.trainer_cls.__name__} cannot be sent to Ray workers: "
                            f"{error}. Define it at module level in an importable file.") from error
        for name, value in blueprint.arguments.items():
            if not _pickles(value):
                raise TypeError(
                    f"Trainer argument {name!r} ({type(value).__name__}) cannot be sent to Ray workers: it does "
                    f"not pickle ({_pickle_error(value)}). Pass an object that pickles (e.g. a module-level "
                    "function instead of a lambda holding a lock or an open file), or train in this process "
                    "with ScalingConfig(num_workers=0)."
                ) from error
        raise


def _pickles(value) -> bool:
    return _pickle_error(value) is None


def _pickle_error(value):
    from ray import cloudpickle

    try:
        cloudpickle.dumps(value)
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None
