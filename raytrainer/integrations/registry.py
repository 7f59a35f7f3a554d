"""The ``report_to`` integrations raytrainer ships, how to tell whether each is installed, and
which callbacks a ``report_to`` list turns into.

Nothing here imports a tracking library: ``is_installed`` only looks the package up, and a
callback module is imported when its callback is built.
"""

import importlib
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Integration:
    name: str  # the report_to spelling
    module: str  # module of raytrainer.integrations holding the callback
    callback: str  # the callback's class name
    packages: tuple  # importable packages; any one of them is enough
    install: str  # what to pip install


INTEGRATIONS = {
    # torch.utils.tensorboard writes with the tensorboard package; tensorboardX is HF's fallback
    "tensorboard": Integration("tensorboard", "tensorboard_callback", "TensorBoardCallback",
                               ("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": Integration("mlflow", "mlflow_callback", "MLflowCallback", ("mlflow",), "mlflow"),
    "wandb": Integration("wandb", "wandb_callback", "WandbCallback", ("wandb",), "wandb"),
}


def is_installed(name: str) -> bool:
    integration = INTEGRATIONS[name]
    if name == "mlflow" and os.environ.get("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        return False  # HF's switch to keep report_to="all" away from an installed mlflow
    return any(importlib.util.find_spec(package) is not None for package in integration.packages)


def installed_integrations() -> list:
    """What ``report_to="all"`` means: every shipped integration whose library is installed."""
    return [name for name in INTEGRATIONS if is_installed(name)]


def require_installed(name: str) -> None:
    """A clear error, before any training, when an integration's library is missing."""
    if is_installed(name):
        return
    integration = INTEGRATIONS[name]
    if name == "mlflow" and os.environ.get("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        raise ImportError("report_to includes 'mlflow', but DISABLE_MLFLOW_INTEGRATION=TRUE is set; unset it "
                          "or remove 'mlflow' from report_to.")
    raise ImportError(
        f"report_to includes {name!r}, but the {integration.install} package is not installed. Install it with "
        f"`pip install {integration.install}` (or `pip install 'raytrainer[tracking]'` for every integration), "
        f"or remove {name!r} from report_to."
    )


def callback_class(name: str) -> type:
    integration = INTEGRATIONS[name]
    module = importlib.import_module(f"{__package__}.{integration.module}")
    return getattr(module, integration.callback)


def callback_classes(report_to) -> list:
    """The callback classes of the shipped integrations named in ``report_to`` (already
    normalised by TrainingArguments: a list of names, ``"all"`` expanded). Each library is checked
    first, so a missing one fails here, before training."""
    names = [name for name in report_to or [] if name in INTEGRATIONS]
    for name in names:
        require_installed(name)
    return [callback_class(name) for name in names]
