"""How often Ray Train's controller polls the workers of raytrainer's runs.

Ray Train V2's controller learns that the workers have finished only at its next poll of them,
and it polls at most every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` seconds (2 by default). With the
shutdown that follows, ``fit()`` returned 3.0-3.7 s after the workers' last step on a 2-core
machine, on every ``train()``, ``evaluate()`` and ``predict()`` that runs on workers. raytrainer's
runs poll every ``POLL_INTERVAL_S`` instead (measured: 1.0-1.9 s from the last step to the
return), unless the user set Ray's variable, which then decides.

A poll is one small actor call per worker; a poll that has not answered is waited for by the next
one rather than sent again, and a worker counts as hung only after Ray's own health-check timeout
(``RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S``, 10 minutes), which this does not change.

Ray hands the variable from the driver's environment to the controller when ``fit()`` starts it,
so it is set in this process's environment while raytrainer's fits run (runs side by side share
one setting) and removed when the last one ends.
"""

import os

from .shared_setting import SharedSetting

HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = "0.5"


def _poll_sooner() -> bool:
    """Sets the interval unless the user did; True when it was set here."""
    if HEALTH_CHECK_INTERVAL_ENV in os.environ:
        return False
    os.environ[HEALTH_CHECK_INTERVAL_ENV] = POLL_INTERVAL_S
    return True


def _poll_as_before(set_here: bool) -> None:
    if set_here:
        os.environ.pop(HEALTH_CHECK_INTERVAL_ENV, None)


_PROMPT_POLLS = SharedSetting(_poll_sooner, _poll_as_before)


def prompt_worker_polls():
    """While the block runs, Ray Train controllers started from this process poll every
    ``POLL_INTERVAL_S`` (unless ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` was set by the user)."""
    return _PROMPT_POLLS.held()
