"""Runs on workers: how often Ray Train's controller polls them, and what an interrupted fit leaves
behind. No Ray workers start here (the TorchTrainer is a stand-in); the setting reaching real
workers is checked in tests/test_distributed.py."""

import os
import threading

import pytest
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainingArguments
from raytrainer.runtime import workers
from raytrainer.runtime.controller_polls import HEALTH_CHECK_INTERVAL_ENV, POLL_INTERVAL_S, prompt_worker_polls


@pytest.fixture
def no_interval_set(monkeypatch):
    monkeypatch.delenv(HEALTH_CHECK_INTERVAL_ENV, raising=False)


def test_runs_poll_every_half_second_while_they_last(no_interval_set):
    assert POLL_INTERVAL_S == "0.5"
    with prompt_worker_polls():
        assert os.environ[HEALTH_CHECK_INTERVAL_ENV] == "0.5"
    assert HEALTH_CHECK_INTERVAL_ENV not in os.environ


def test_a_users_interval_decides(monkeypatch):
    monkeypatch.setenv(HEALTH_CHECK_INTERVAL_ENV, "5")
    with prompt_worker_polls():
        assert os.environ[HEALTH_CHECK_INTERVAL_ENV] == "5"
    assert os.environ[HEALTH_CHECK_INTERVAL_ENV] == "5"


def test_runs_side_by_side_keep_the_setting_until_the_last_one_ends(no_interval_set):
    first_inside, second_done = threading.Event(), threading.Event()
    seen = {}

    def second_run():
        first_inside.wait()
        with prompt_worker_polls():
            seen["second"] = os.environ.get(HEALTH_CHECK_INTERVAL_ENV)
        second_done.set()

    thread = threading.Thread(target=second_run)
    thread.start()
    with prompt_worker_polls():
        first_inside.set()
        second_done.wait()
        seen["first, after the second ended"] = os.environ.get(HEALTH_CHECK_INTERVAL_ENV)
    thread.join()
    assert seen == {"second": "0.5", "first, after the second ended": "0.5"}
    assert HEALTH_CHECK_INTERVAL_ENV not in os.environ


class _Channel:
    """The driver's end of a run link, without an actor."""

    def __init__(self, forget_fails=False):
        self.forgotten = 0
        self.forget_fails = forget_fails

    def drain(self):
        return []

    def forget(self):
        self.forgotten += 1
        if self.forget_fails:
            raise ConnectionError("the channel actor is gone")


class _TorchTrainer:
    def __init__(self, error):
        self.error = error
        self.interval_seen = None

    def fit(self):
        self.interval_seen = os.environ.get(HEALTH_CHECK_INTERVAL_ENV)
        raise self.error


def _trainer(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=True)
    return Trainer(model=RegressionModel(), args=args, train_dataset=RegressionDataset(8))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(0)], ids=["Ctrl-C", "Ray's second Ctrl-C"])
def test_an_interrupted_fit_drops_its_events_from_the_channel(tmp_path, no_interval_set, interrupt):
    channel, fit = _Channel(), _TorchTrainer(interrupt)
    with pytest.raises(type(interrupt)):
        workers.fit_for_result(_trainer(tmp_path), fit, channel, datasets={})
    assert channel.forgotten == 1
    assert fit.interval_seen == "0.5"  # the controller of this fit polled every 0.5 s
    assert HEALTH_CHECK_INTERVAL_ENV not in os.environ


def test_a_channel_that_cannot_forget_does_not_hide_the_runs_own_error(tmp_path, no_interval_set):
    channel = _Channel(forget_fails=True)
    with pytest.raises(KeyboardInterrupt):
        workers.fit_for_result(_trainer(tmp_path), _TorchTrainer(KeyboardInterrupt()), channel, datasets={})
    assert channel.forgotten == 1
