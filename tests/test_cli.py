"""The ``raytrainer`` command in-process: config checking (file, line, key, fix, before Ray starts),
``train`` and ``tune`` end to end in local mode, ``results``, and the argument handling of every
subcommand (``submit`` without a cluster)."""

import json
import os
import textwrap
from importlib.metadata import entry_points

import pytest
import ray
import yaml

import _cli_task
from raytrainer.cli import main
from raytrainer.cli.config import ConfigError, load_config

TESTS = os.path.dirname(__file__)


def write_config(folder, data=None, text=None, name="config.yaml"):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(text if text is not None else (json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data)))
    return path


def task_config(out, **args):
    return {"model": "_cli_task:build_model", "train_dataset": "_cli_task:train_set",
            "eval_dataset": "_cli_task:eval_set", "compute_metrics": "_cli_task:mean_abs_error",
            "args": {"output_dir": str(out), "max_steps": 4, "per_device_train_batch_size": 8, "logging_steps": 1,
                     "learning_rate": 0.01, "report_to": "none", "disable_tqdm": True, "save_strategy": "no", **args}}


def config_error(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text=textwrap.dedent(text)))
    return str(caught.value)


# ---------------------------------------------------------------------- the config file
def test_config_errors_name_the_file_line_key_and_fix(tmp_path):
    path = os.path.join(str(tmp_path), "config.yaml")
    message = config_error(tmp_path, """\
        modle: _cli_task:build_model
        """)
    assert message == f"{path}:1: modle: unknown key. Did you mean 'model'?"
    assert "model: missing. Add 'model: my_module:build_model'" in config_error(tmp_path, "args: {}\n")
    message = config_error(tmp_path, """\
        model: _cli_task:build_model
        args:
          output_dir: out
          learnig_rate: 0.1
        """)
    assert message == f"{path}:4: args.learnig_rate: not a field of TrainingArguments. Did you mean 'learning_rate'?"
    assert "scaling.trainer_resources: not supported: Ray Train V2 removed it" in config_error(tmp_path, """\
        model: _cli_task:build_model
        scaling: {trainer_resources: {CPU: 1}}
        """)
    assert "scaling.num_worker: not a field of ray.train.ScalingConfig. Did you mean 'num_workers'?" in config_error(
        tmp_path, "model: a:b\nscaling: {num_worker: 2}\n")
    assert "scaling.num_workers: -1 is not a number of workers. Write 0" in config_error(
        tmp_path, "model: a:b\nscaling: {num_workers: -1}\n")
    assert "run.checkpoint_config: not supported here. Checkpoints follow TrainingArguments: use " \
           "args.save_strategy and args.save_total_limit." in config_error(tmp_path, "model: a:b\nrun: {checkpoint_config: {}}\n")
    assert "run.failure_config.max_failure: not a field of ray.train.FailureConfig. Did you mean 'max_failures'?" \
        in config_error(tmp_path, "model: a:b\nrun: {failure_config: {max_failure: 2}}\n")
    assert "train_dataset: 'data/missing' is neither 'module:function' nor an existing parquet file or folder" \
        in config_error(tmp_path, "model: a:b\ntrain_dataset: data/missing\n")
    assert "model: 'build_model' is not a reference. Write 'module:function'" in config_error(
        tmp_path, "model: build_model\n")
    assert f"{path}:3: YAML: expected ',' or ']'" in config_error(tmp_path, "model: a:b\nargs: [unclosed\n")
    assert "the top level is a list" in config_error(tmp_path, "- model\n")


def test_config_errors_from_the_users_code_and_argument_values(tmp_path):
    def fails(data, *overrides):
        return run_cli(["train", write_config(tmp_path, data), *overrides])

    out = tmp_path / "out"
    code, _, err = fails({**task_config(out), "model": "_cli_task:build_modl"})
    assert code == 2 and "model: _cli_task has no attribute 'build_modl'. Did you mean '_cli_task:build_model'?" in err
    code, _, err = fails({**task_config(out), "model": "_cli_task:not_a_factory"})
    assert code == 2 and "is a RegressionModel, not a function or class" in err
    code, _, err = fails({**task_config(out), "model": "no_such_module_here:build"})
    assert code == 2 and "cannot import 'no_such_module_here'" in err and os.getcwd() in err
    code, _, err = fails({**task_config(out), "trainer": "_cli_task:RecordSteps"})
    assert code == 2 and "trainer: _cli_task:RecordSteps is not a subclass of raytrainer.Trainer" in err
    code, _, err = fails(task_config(out, eval_strategy="sometimes"))
    assert code == 2 and "config.yaml:3: args.eval_strategy: eval_strategy='sometimes' cannot be converted: " \
        "invalid choice 'sometimes' (choose from no, steps, epoch). Fix the value in the file." in err
    code, _, err = fails(task_config(out), "--learnig_rate", "0.1")
    assert code == 2 and "unknown option '--learnig_rate'" in err and "Did you mean --learning_rate?" in err
    code, _, err = fails(task_config(out), "--learning_rate", "fast")
    assert code == 2 and "--learning_rate" in err and "'fast'" in err
    code, _, err = fails({**task_config(out), "eval_dataset": None}, "--eval_strategy", "steps")
    assert code == 2 and "Trainer: eval_strategy='steps' needs an eval_dataset" in err
    code, _, err = fails({**task_config(out), "data_collator": "raytrainer:DataCollatorWithPadding"})
    assert code == 2 and "data_collator: raytrainer:DataCollatorWithPadding cannot be built without arguments" in err
    code, _, err = fails({**task_config(out), "train_dataset": "_cli_task:broken_set"})
    assert code == 1 and "RuntimeError: the data server is down" in err
    assert "(raised while building train_dataset of " in err and "_cli_task:broken_set)" in err
    assert not os.path.exists(out) and not ray.is_initialized()  # nothing started, nothing written


# ---------------------------------------------------------------------- train and results
def run_cli(argv, capsys=None):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_train_with_overrides_subclass_callbacks_then_results(tmp_path):
    out = tmp_path / "run"
    data = {**task_config(out, save_strategy="steps", save_steps=2), "trainer": "_cli_task:DoubledLossTrainer",
            "callbacks": ["_cli_task:RecordSteps"], "scaling": {"num_workers": 0},
            "run": {"failure_config": {"max_failures": 1}}}
    _cli_task.CALLS.clear()
    code, printed, err = run_cli(["train", write_config(tmp_path, data), "--learning_rate", "0.05", "--max_steps", "6"])
    assert code == 0, err
    assert f"model saved to {out}" in printed and "eval_mae" in printed
    assert _cli_task.CALLS == [1, 2, 3, 4, 5, 6]
    assert json.load(open(out / "training_args.json"))["learning_rate"] == 0.05
    assert {"model.safetensors", "trainer_state.json", "all_results.json", "checkpoint-6"} <= set(os.listdir(out))
    state = json.load(open(out / "trainer_state.json"))
    assert state["global_step"] == 6
    doubled = state["log_history"][0]["loss"]

    plain = {**task_config(tmp_path / "plain"), "callbacks": ["_cli_task:RecordSteps"]}
    assert run_cli(["train", write_config(tmp_path, plain, name="plain.json"), "--learning_rate", "0.05"])[0] == 0
    single = json.load(open(tmp_path / "plain" / "trainer_state.json"))["log_history"][0]["loss"]
    assert doubled == pytest.approx(2 * single, rel=1e-5)  # the subclass's compute_loss ran

    code, printed, _ = run_cli(["results", str(out)])
    assert code == 0 and "global step 6" in printed and "eval_mae" in printed
    assert printed.splitlines()[0].split()[:2] == ["step", "epoch"]
    code, printed, _ = run_cli(["results", str(out), "--json"])
    report = json.loads(printed)
    assert report["kind"] == "run" and [e["step"] for e in report["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert run_cli(["results", str(tmp_path / "nothing")])[0] == 1


def test_train_resumes_with_resume_from_checkpoint_latest(tmp_path):
    out = tmp_path / "run"
    config = write_config(tmp_path, task_config(out, save_strategy="steps", save_steps=2))
    assert run_cli(["train", config])[0] == 0
    code, printed, err = run_cli(["train", config, "--max_steps", "6", "--resume_from_checkpoint", "latest"])
    assert code == 0, err
    history = json.load(open(out / "trainer_state.json"))["log_history"]
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4, 5, 6]


def test_module_references_resolve_from_the_current_directory(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "cwd_task_module.py").write_text("from _cli_task import build_model, train_set\n")
    monkeypatch.chdir(folder)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".", str(folder))])
    data = {"model": "cwd_task_module:build_model", "train_dataset": "cwd_task_module:train_set",
            "args": {"output_dir": "out", "max_steps": 2, "report_to": "none", "disable_tqdm": True,
                     "save_strategy": "no"}}
    code, printed, err = run_cli(["train", write_config(folder, data)])
    assert code == 0, err
    assert os.path.isfile(folder / "out" / "model.safetensors")


def test_parquet_sources_are_checked_before_ray_starts(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = f"model: _cli_task:build_model\ntrain_dataset: {empty}\n"
    assert f"the folder '{empty}' holds no parquet files" in config_error(tmp_path, text)
    (tmp_path / "data.csv").write_text("x\n1\n")
    assert "is not a parquet file" in config_error(tmp_path, f"model: a:b\ntrain_dataset: {tmp_path / 'data.csv'}\n")
    text = f"model: a:b\ntrain_dataset: {{path: {empty}, shufle: false}}\n"
    assert "train_dataset.shufle: not an option of raytrainer.stream. Did you mean 'shuffle'?" in config_error(tmp_path, text)
    assert not ray.is_initialized()


# ---------------------------------------------------------------------- tune
def test_tune_runs_a_sweep_prints_trials_and_the_best_run(tmp_path):
    out = tmp_path / "sweep"
    space = write_config(tmp_path, {"parameters": {"learning_rate": {"type": "categorical", "choices": [0.05, 1e-5]}}},
                         name="space.yaml")
    config = write_config(tmp_path, task_config(out, eval_strategy="steps", eval_steps=2, save_strategy="steps",
                                                save_steps=2))
    code, printed, err = run_cli(["tune", config, "--space", space, "--n-trials", "2", "--metric", "mae",
                                  "--sampler-seed", "1", "--max_steps", "4"])
    assert code == 0, err
    results = json.load(open(out / "hp_search_results.json"))
    assert len(results["trials"]) == 2 and all(t["status"] == "complete" for t in results["trials"])
    best = min(results["trials"], key=lambda t: t["objective"][0])
    assert best["objective"][0] == pytest.approx(best["checkpoint_metrics"]["eval_mae"])
    lines = printed.splitlines()
    assert lines[0].startswith("trial 0 complete at step 4: objective=") and "learning_rate=" in lines[0]
    assert f"best trial {best['run_id']}: objective {best['objective'][0]}" in printed
    assert f"checkpoint: {best['checkpoint']}" in printed and "hp_search_results.csv" in printed
    code, printed, _ = run_cli(["results", str(out)])
    assert code == 0 and printed.splitlines()[0].split()[:3] == ["run_id", "status", "objective"]
    assert len(printed.splitlines()) == 3


def test_tune_argument_errors_before_any_trial(tmp_path):
    config = write_config(tmp_path, task_config(tmp_path / "sweep"))
    cases = [
        (["--space", "hf_default", "--n-trials", "2", "--scheduler", "pbt"], "--scheduler pbt needs --backend ray"),
        (["--space", "hf_default", "--n-trials", "2", "--metric", "a", "b"], "--metric names 2 metric(s)"),
        (["--space", "no_such_preset", "--n-trials", "2"], "--space: hp_space: no search-space preset"),
        (["--space", "hf_default", "--n-trials", "0"], "expected a positive integer, got 0"),
        (["--space", "hf_default", "--n-trials", "2", "--backend", "ray", "--storage", "sqlite:///x.db"],
         "--storage is an Optuna study storage"),
        (["--space", "hf_default", "--n-trials", "2", "--direction", "minimize", "maximize"],
         "several --direction values need --metric"),
    ]
    for flags, message in cases:
        code, _, err = run_cli(["tune", config, *flags])
        assert code == 2 and message in err, (flags, err)
    data = {**task_config(tmp_path / "sweep"), "run": {"name": "x"}}
    code, _, err = run_cli(["tune", write_config(tmp_path, data), "--space", "hf_default", "--n-trials", "1"])
    assert code == 2 and "run.name: does not apply to a sweep" in err
    assert not os.path.exists(tmp_path / "sweep")


def test_tune_schedulers_for_each_backend():
    import optuna
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, PopulationBasedTraining

    from raytrainer.cli.tune import add_parser, backend_options, load_space

    parser = add_parser(__import__("argparse").ArgumentParser().add_subparsers())
    space = load_space("finetune_small")

    def options(*flags):
        return backend_options(parser.parse_args(["c.yaml", "--space", "x", "--n-trials", "1", *flags]), space, None)

    assert isinstance(options("--backend", "ray", "--scheduler", "asha")["scheduler"], ASHAScheduler)
    assert isinstance(options("--backend", "ray", "--scheduler", "median")["scheduler"], MedianStoppingRule)
    pbt = options("--backend", "ray", "--scheduler", "pbt", "--max-concurrent", "3")
    assert isinstance(pbt["scheduler"], PopulationBasedTraining) and pbt["max_concurrent_trials"] == 3
    assert set(pbt["scheduler"]._hyperparam_mutations) == {"learning_rate", "num_train_epochs", "warmup_ratio",
                                                           "weight_decay", "per_device_train_batch_size",
                                                           "lr_scheduler_type"}
    assert isinstance(options("--scheduler", "median")["pruner"], optuna.pruners.MedianPruner)
    assert isinstance(options("--scheduler", "asha")["pruner"], optuna.pruners.SuccessiveHalvingPruner)
    assert options("--max-concurrent", "2")["n_jobs"] == 2


# ---------------------------------------------------------------------- submit, main, entry points
def test_submit_checks_the_command_and_config_before_contacting_the_cluster(tmp_path):
    unreachable = ["--address", "http://127.0.0.1:9"]
    code, _, err = run_cli(["submit", *unreachable])
    assert code == 2 and "give the command to run after '--'" in err
    write_config(tmp_path, {"model": "_cli_task:build_model", "args": {"learnig_rate": 1}}, name="bad.yaml")
    code, _, err = run_cli(["submit", *unreachable, "--working-dir", str(tmp_path), "--", "train", "bad.yaml"])
    assert code == 2 and "bad.yaml:2: args.learnig_rate: not a field of TrainingArguments" in err
    code, _, err = run_cli(["submit", *unreachable, "--working-dir", str(tmp_path), "--", "train", "missing.yaml"])
    assert code == 2 and "missing.yaml: file: no such file" in err
    write_config(tmp_path, task_config("/abs/out"), name="good.yaml")
    code, _, err = run_cli(["submit", *unreachable, "--working-dir", str(tmp_path), "--", "tune", "good.yaml",
                            "--space", "hf_default", "--n-trials", "2", "--scheduler", "pbt"])
    assert code == 2 and "--scheduler pbt needs --backend ray" in err
    code, _, err = run_cli(["submit", *unreachable, "--working-dir", str(tmp_path), "--", "train", "good.yaml"])
    assert code == 3 and "cannot reach the Ray job server at http://127.0.0.1:9" in err


def test_submit_runtime_env_ships_the_working_dir_and_the_package():
    import argparse

    from raytrainer.cli.submit import _PACKAGE_DIR, job_runtime_env

    options = argparse.Namespace(exclude=["data/"], no_package=False, pip=["scikit-learn"], env=["A=1", "B=x=y"])
    env = job_runtime_env(options, TESTS)
    assert env["working_dir"] == TESTS and env["py_modules"] == [_PACKAGE_DIR]
    assert os.path.isfile(os.path.join(_PACKAGE_DIR, "cli", "submit.py"))
    assert ".git" in env["excludes"] and "data/" in env["excludes"]
    assert env["pip"] == ["scikit-learn"] and env["env_vars"] == {"A": "1", "B": "x=y"}
    assert "py_modules" not in job_runtime_env(options, os.path.dirname(_PACKAGE_DIR))  # the repo ships itself
    options.no_package = True
    assert "py_modules" not in job_runtime_env(options, TESTS)


class FakeJobClient:
    """The few JobSubmissionClient calls ``follow`` makes, scripted."""

    def __init__(self, status, exit_code=None, interrupt=False):
        from ray.job_submission import JobStatus

        self.final, self.exit_code, self.interrupt = JobStatus(status), exit_code, interrupt
        self.stopped = False

    async def tail_job_logs(self, job_id):
        yield "epoch 1\n"
        if not self.interrupt:
            yield "done\n"

    def get_job_status(self, job_id):
        from ray.job_submission import JobStatus

        if self.interrupt and not self.stopped:
            raise KeyboardInterrupt  # Ctrl-C lands in the main thread, which polls the status
        return JobStatus.STOPPED if self.stopped else self.final

    def get_job_info(self, job_id):
        from types import SimpleNamespace

        return SimpleNamespace(message="driver exited", driver_exit_code=self.exit_code)

    def stop_job(self, job_id):
        self.stopped = True


def test_submit_follows_logs_and_returns_the_jobs_exit_status(capsys):
    from raytrainer.cli.submit import follow

    assert follow(FakeJobClient("SUCCEEDED"), "job-1", poll_s=0) == 0
    assert capsys.readouterr().out == "epoch 1\ndone\n"
    assert follow(FakeJobClient("FAILED", exit_code=2), "job-1", poll_s=0) == 2
    assert "job job-1 failed: driver exited" in capsys.readouterr().err
    assert follow(FakeJobClient("FAILED"), "job-1", poll_s=0) == 1
    client = FakeJobClient("RUNNING", interrupt=True)
    assert follow(client, "job-1", poll_s=0) == 130 and client.stopped  # Ctrl-C stops the job
    assert "job job-1 is STOPPED" in capsys.readouterr().err


def test_main_help_exit_codes_and_entry_points(capsys):
    assert main(["--help"]) == 0
    for command in ("train", "tune", "submit", "results"):
        assert main([command, "--help"]) == 0
        assert f"usage: raytrainer {command}" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["results", "x", "--bogus"]) == 2
    assert main(["train"]) == 2 and "give the config file" in capsys.readouterr().err
    assert main(["train", "--help-args"]) == 0 and "--learning_rate" in capsys.readouterr().out
    (script,) = entry_points(group="console_scripts", name="raytrainer")
    assert script.value == "raytrainer.cli:main"
    import raytrainer.__main__  # noqa: F401 - python -m raytrainer imports cleanly
