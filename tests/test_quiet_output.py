"""Quiet by default: a run shows raytrainer's own progress and logs; Ray's bookkeeping lines
appear only when asked for (RAYTRAINER_RAY_LOGS=1, or log_level="debug")."""

import logging

import pytest
from conftest import RegressionDataset, RegressionModel

from raytrainer import Trainer, TrainingArguments
from raytrainer.runtime.ray_session import RAY_LOGS_ENV, quiet_ray

RAY_LINES = ("Running in local mode", "Reported metrics", "please file a report")


def _train(tmp_path, **overrides):
    """A local run inside Ray Train's local mode (a RunConfig brings it in: a plain local run has no
    Ray at all, see test_startup.py), where Ray has lines to print."""
    from ray.train import RunConfig

    settings = dict(output_dir=str(tmp_path / "out"), report_to="none", disable_tqdm=True, max_steps=3,
                    logging_steps=1, per_device_train_batch_size=4)
    settings.update(overrides)
    run_config = RunConfig(name="out", storage_path=str(tmp_path))
    Trainer(model=RegressionModel(), args=TrainingArguments(**settings), train_dataset=RegressionDataset(16),
            run_config=run_config).train()


def _ray_lines(caplog, capfd) -> list:
    out, err = capfd.readouterr()
    text = out + err + "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("ray"))
    return [line for line in text.splitlines() if any(marker in line for marker in RAY_LINES)]


def test_local_mode_prints_our_logs_and_none_of_rays(tmp_path, capfd, caplog, monkeypatch):
    monkeypatch.delenv(RAY_LOGS_ENV, raising=False)
    caplog.set_level(logging.INFO)
    _train(tmp_path)
    out, _ = capfd.readouterr()
    assert out.count("'loss':") == 3 and "'train_runtime':" in out  # our printer: three logs and the summary
    assert _ray_lines(caplog, capfd) == []
    assert logging.getLogger("ray.train").level == logging.NOTSET  # put back as it was


@pytest.mark.parametrize("switch", ["env", "log_level"])
def test_rays_own_lines_come_back_when_asked_for(tmp_path, capfd, caplog, monkeypatch, switch):
    caplog.set_level(logging.INFO)
    if switch == "env":
        monkeypatch.setenv(RAY_LOGS_ENV, "1")
        _train(tmp_path)
    else:
        monkeypatch.delenv(RAY_LOGS_ENV, raising=False)
        _train(tmp_path, log_level="debug")
    lines = _ray_lines(caplog, capfd)
    assert any("Running in local mode" in line for line in lines) and any("Reported metrics" in line for line in lines)


def test_nested_and_overlapping_quiet_blocks_restore_once():
    logger = logging.getLogger("ray.tune")
    logger.setLevel(logging.INFO)
    try:
        outer = quiet_ray()
        outer.__enter__()
        with quiet_ray():
            assert logger.level == logging.WARNING
        assert logger.level == logging.WARNING  # the outer block still runs
        outer.__exit__(None, None, None)
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(logging.NOTSET)


def test_the_driver_drops_rays_preemption_watcher_notice_while_quiet_and_keeps_the_users_skip_pattern(monkeypatch):
    """Ray's core logs an ERROR line in the controller of every run on workers (its preemption
    watcher has arguments in the object store); the driver prints the workers' lines through Ray's
    deduplicators, which drop it while raytrainer runs quietly. A worker's own lines still come."""
    import re

    from ray._private import ray_logging

    monkeypatch.delenv(RAY_LOGS_ENV, raising=False)
    notice = ("[2026-12-01 10:40:41,297 E 3007 3068] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
              "and ID: 'cf5d4bda8b159311542adcb201000000' has constructor arguments in the object store and "
              "max_restarts > 0. If the arguments in the object store go out of scope ...")
    users = re.compile("my noisy library")
    monkeypatch.setattr(ray_logging.stderr_deduplicator, "skip_re", users)

    def printed(pid, word):  # a worker's lines as the driver prints them (Ray's dedup ignores numbers: words)
        lines = [notice, f"the worker says {word}", "my noisy library says hi"]
        batches = ray_logging.stderr_deduplicator.deduplicate({"ip": "10.0.0.1", "pid": pid, "lines": lines})
        return [line for batch in batches for line in batch["lines"]]

    with quiet_ray():
        assert printed(1, "hello") == ["the worker says hello"]
    assert ray_logging.stderr_deduplicator.skip_re is users
    assert printed(2, "goodbye") == [notice, "the worker says goodbye"]
    with quiet_ray(TrainingArguments(output_dir="unused", log_level="debug", report_to="none")):
        assert ray_logging.stderr_deduplicator.skip_re is users  # asked for: Ray's lines come
