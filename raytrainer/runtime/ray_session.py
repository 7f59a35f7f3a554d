"""Joining Ray, and keeping Ray's own output out of the user's way.

Users see raytrainer's progress bar, notebook table and log lines. Ray's own INFO lines (local mode
notices, every reported metric, Ray Data progress bars, Tune's per-result tables, warnings of
helper actors that need the dashboard) appear only when asked for: ``RAYTRAINER_RAY_LOGS=1`` in
the environment, or ``TrainingArguments(log_level="debug")``.
"""

import contextlib
import importlib.util
import logging
import os
import re
import sys
from typing import Optional

from .shared_setting import SharedSetting

RAY_LOGS_ENV = "RAYTRAINER_RAY_LOGS"
# Loggers whose INFO lines are Ray's bookkeeping rather than the user's run.
_RAY_LOGGERS = ("ray.train", "ray.tune", "ray.data")
# A helper actor of Ray Train polls the state API, which needs the dashboard (``ray[default]``);
# without it, it warns twice a second in every multi-worker run. Nothing is wrong for the user.
_NOISY_WORKER_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)
_NO_API_SERVER = "http://127.0.0.1:9"  # the discard port: nothing answers, requests fail at once
# Lines of Ray's own processes that reach the driver's console and ask nothing of the user. Ray's
# core logs an ERROR for every actor created with arguments in the object store and restarts
# allowed; Ray Train's preemption watcher is one, started with every run on workers.
_RAY_NOTICES = r"Actor with class name: 'PreemptionWatcher' .*has constructor arguments in the object store"


def ray_logs_wanted(args=None) -> bool:
    if os.environ.get(RAY_LOGS_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return args is not None and getattr(args, "log_level", None) == "debug"


def ensure_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (or the one already joined), else start a local
    Ray instance (see ``local_instance_runtime_env``)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if ray_logs_wanted():
        ray.init(runtime_env=local_instance_runtime_env(paths))
        return
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    try:  # without "Started a local Ray instance" and the token-auth notice
        ray.init(runtime_env=local_instance_runtime_env(paths), logging_level=logging.ERROR)
    finally:
        ray_logger.setLevel(level)


def local_instance_runtime_env(import_paths, dashboard: Optional[bool] = None) -> dict:
    """The runtime environment of a local Ray instance started by raytrainer (or its tests).

    Its workers get the driver's import path, so the modules a script imports its model and
    dataset classes from import there too. And Ray Train's helper actors find this instance's
    state API, not another one on the same machine: without the dashboard (``ray[default]``),
    Ray's lookup falls back to the default dashboard port, where another cluster may answer that
    this run's controller does not exist, and the helper then removes the run's placement group
    (its workers die). Pointing the state API nowhere makes that helper's checks fail harmlessly.
    ``dashboard``: whether the instance runs one (None: when ``ray[default]`` is installed, as
    ``ray.init()`` decides by default).
    """
    env_vars = {"PYTHONPATH": os.pathsep.join(import_paths)}
    if dashboard is None:
        dashboard = importlib.util.find_spec("aiohttp") is not None
    if not dashboard:  # no state API of its own
        env_vars["RAY_API_SERVER_ADDRESS"] = _NO_API_SERVER
    return {"env_vars": env_vars, "worker_process_setup_hook": f"{__name__}.prepare_worker_process"}


def prepare_worker_process() -> None:
    """Run by Ray in every worker process of a local instance started here."""
    import ray

    # the state API of this instance, not of the Ray instance started last on the machine
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    if not ray_logs_wanted():
        quiet_train_worker()
        for name in _NOISY_WORKER_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def quiet_train_worker() -> None:
    """Ray's INFO lines off in this worker process (any cluster): its loggers, and the one that
    announces every ``ray.train.report`` (named after its file, so outside ``ray.train``)."""
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: its loggers above are quiet already
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def quiet_run_config(run_config, args=None):
    """``run_config`` with Ray Train's console lines (controller and workers) at WARNING, unless
    Ray's output was asked for."""
    import dataclasses

    from ray.train import LoggingConfig

    if ray_logs_wanted(args) or run_config.logging_config.log_level != "INFO":
        return run_config  # asked for, or a level the user chose
    return dataclasses.replace(run_config, logging_config=LoggingConfig(log_level="WARNING"))


@contextlib.contextmanager
def quiet_ray(args=None):
    """Ray's INFO lines and Ray Data's progress bars off in this process for the block, unless
    Ray's output was asked for. Nested and concurrent blocks restore the settings once, when the
    last one ends."""
    if ray_logs_wanted(args):
        yield
        return
    # the lines of Ray's processes reach this process only through a Ray it has joined
    notices = _NOTICES.held() if "ray" in sys.modules else contextlib.nullcontext()
    with _QUIET.held(), notices:
        yield


class _WithoutBarsNotice(logging.Filter):
    """Ray Data warns that its progress bars are off, which is what quiet asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Progress bars disabled")


_BARS_NOTICE = _WithoutBarsNotice()


def _silence():
    loggers = [logging.getLogger(name) for name in _RAY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    _data_logger().addFilter(_BARS_NOTICE)
    data_context, bars = _data_context_progress_bars(False)
    return loggers, levels, data_context, bars


def _restore(saved) -> None:
    loggers, levels, data_context, bars = saved
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)
    _data_logger().removeFilter(_BARS_NOTICE)
    if data_context is not None:
        data_context.enable_progress_bars = bars


_QUIET = SharedSetting(_silence, _restore)


def _skip_notices():
    """The driver prints what Ray's processes print through two deduplicators (stdout, stderr),
    which drop the lines their ``skip_re`` matches (``RAY_DEDUP_LOGS_SKIP_REGEX``, kept)."""
    try:
        from ray._private import ray_logging
    except ImportError:
        return []
    saved = []
    for deduplicator in (ray_logging.stdout_deduplicator, ray_logging.stderr_deduplicator):
        if not hasattr(deduplicator, "skip_re"):  # another Ray version: its lines stay
            continue
        previous = deduplicator.skip_re
        pattern = _RAY_NOTICES if previous is None else f"(?:{previous.pattern})|(?:{_RAY_NOTICES})"
        deduplicator.skip_re = re.compile(pattern)
        saved.append((deduplicator, previous))
    return saved


def _show_notices(saved) -> None:
    for deduplicator, previous in saved:
        deduplicator.skip_re = previous


_NOTICES = SharedSetting(_skip_notices, _show_notices)


def _data_logger() -> logging.Logger:
    # the notice comes from Ray Data's progress module, whose logger sits below ray.data
    return logging.getLogger("ray.data._internal.progress")


def _data_context_progress_bars(enabled: bool):
    """Switch Ray Data's progress bars; returns (context, previous value), (None, None) when Ray
    Data was never imported (then nothing can show a bar)."""
    if "ray.data" not in sys.modules:
        return None, None
    from ray.data import DataContext

    context = DataContext.get_current()
    previous = context.enable_progress_bars
    context.enable_progress_bars = enabled
    return context, previous


@contextlib.contextmanager
def quiet_datasets(datasets: dict, args=None):
    """Ray Data's progress bars off for these datasets while the block runs (the split
    coordinator copies a dataset's own context when the run starts, so the current context is
    not enough), then back as the user had them."""
    contexts = {id(ds.context): ds.context for ds in datasets.values()} if not ray_logs_wanted(args) else {}
    saved = [(context, context.enable_progress_bars) for context in contexts.values()]
    for context, _ in saved:
        context.enable_progress_bars = False
    try:
        yield
    finally:
        for context, enabled in saved:
            context.enable_progress_bars = enabled
