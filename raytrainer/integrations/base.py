"""What every experiment-tracking callback shares.

- It reports from the world rank 0 only (``state.is_world_process_zero``): on Ray workers the
  other ranks run the same callbacks and do nothing.
- Its settings come from the integration's usual environment variables, read where the run
  starts. A Ray worker may not see variables the driver set after Ray started, so when the
  callback is pickled for the workers it carries a snapshot of its (non-secret) variables with it.
  Credentials (API keys, tokens, passwords) are never copied: the tracking library reads them
  from the worker's own environment.
- After a run on Ray workers, rank 0 closes its run and hands the run's identity back to the
  driver (``close_for_handoff`` / ``adopt``), so that a later ``evaluate()`` on the driver logs
  into the same run instead of starting a new one.
"""

import logging
import numbers
import os

from ..callbacks import TrainerCallback
from .registry import require_installed

logger = logging.getLogger("raytrainer")

TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
_PREFIXES = ("eval", "test")


def rewrite_logs(logs: dict) -> dict:
    """HF's tag names: ``eval_loss`` -> ``eval/loss``, ``test_accuracy`` -> ``test/accuracy``,
    anything else -> ``train/<name>`` (``loss`` -> ``train/loss``)."""
    renamed = {}
    for key, value in logs.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p + "_")), None)
        renamed[f"{prefix}/{key[len(prefix) + 1:]}" if prefix else f"train/{key}"] = value
    return renamed


def scalar_value(value):
    """A plain int/float for a number or a one-element tensor, else ``None``."""
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return value
    if hasattr(value, "numel") and callable(value.numel) and value.numel() == 1:
        return value.item()
    return None


def model_config_dict(model) -> dict:
    """The model's ``config`` as a dict (transformers models), else empty."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if callable(to_dict) else {}


class ReportingCallback(TrainerCallback):
    """Base class of the ``report_to`` callbacks (see the module docstring)."""

    name = ""  # the report_to name
    env_vars = ()  # the integration's non-secret settings, snapshotted for Ray workers
    live_attributes = ()  # open handles (writers, clients, runs) and their flags: never pickled

    def __init__(self):
        require_installed(self.name)
        self._env = None  # the driver's settings, once this callback travelled to a Ray worker
        self._warned = set()

    def env(self, name: str, default=None):
        """A setting: the driver's snapshot first (on a Ray worker), then this process's environment."""
        value = (self._env or {}).get(name) or os.environ.get(name)
        return default if value in (None, "") else value

    def env_flag(self, name: str) -> bool:
        return str(self.env(name, "FALSE")).upper() in TRUE_VALUES

    def warn_once(self, key: str, message: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def saved_checkpoint(self, args, state, checkpoint_folder=None):
        """The checkpoint folder just saved (the loop passes it to ``on_save``), or ``None`` when
        it is not on this machine's filesystem (Ray storage elsewhere): then it is not uploaded."""
        trial = state.trial_name if state.is_hyper_param_search and state.trial_name else ""
        folder = checkpoint_folder or os.path.join(args.output_dir, trial, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            return folder
        self.warn_once("artifacts", "%s: checkpoint folder %s is not on this machine's filesystem; checkpoints "
                       "are not uploaded as artifacts.", type(self).__name__, folder)
        return None

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("_env") is None:
            state["_env"] = {name: os.environ[name] for name in self.env_vars if os.environ.get(name)}
        for name in self.live_attributes:
            state[name] = None
        return state

    # ------------------------------------------------------------------ hand-off after Ray workers
    def close_for_handoff(self):
        """Close what this rank opened and return what the driver needs to continue the run
        (a small picklable dict), or ``None``."""
        return None

    def adopt(self, handle) -> None:
        """Continue the run a Ray worker handed back (see ``close_for_handoff``)."""
