"""The hyperparameter-search benchmark's pure helpers compute what they claim, and its task and
space are what the implementations share (the full benchmark runs minutes; it is not run here)."""

import os
import sys

import optuna
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import hpo as benchmark  # noqa: E402


def test_summarize_takes_the_median_overhead_of_complete_trials():
    trials = [{"wall": 3.0, "train": 2.0, "complete": True}, {"wall": 5.0, "train": 2.5, "complete": True},
              {"wall": 1.0, "train": None, "complete": False}, {"wall": 4.0, "train": 3.5, "complete": True}]
    assert benchmark.summarize(trials) == {"trials": 4, "complete": 3, "overhead_median": 1.0}
    assert benchmark.summarize([{"wall": 1.0, "train": None, "complete": False}])["overhead_median"] is None


def test_ratio_against_the_reference():
    assert benchmark.ratio(30.0, 60.0) == 0.5
    assert benchmark.ratio(30.0, None) is None and benchmark.ratio(None, 60.0) is None


def test_space_task_and_sizes():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    values = benchmark.hp_space(trial)
    assert set(values) == {"learning_rate", "per_device_train_batch_size", "weight_decay"}
    assert values["per_device_train_batch_size"] in (16, 32, 64) and 1e-5 <= values["learning_rate"] <= 3e-2
    assert benchmark.SIZES["full"]["n_trials"] == 16 and benchmark.SIZES["quick"]["n_trials"] == 4
    for size in benchmark.SIZES.values():
        assert size["max_steps"] % size["eval_every"] == 0
    data = benchmark.RegressionData(16, seed=0)
    item = data[3]
    assert item["x"].shape == (32,) and item["labels"].shape == (1,)
    assert benchmark.RegressionData(16, seed=0).y.sum().item() == pytest.approx(data.y.sum().item())
    output = benchmark.MLP(8)(data.x[:4], data.y[:4])
    assert output["logits"].shape == (4, 1) and output["loss"].ndim == 0


def test_print_table_reports_ratios_against_transformers(capsys):
    results = {"size": {"n_trials": 4}, "bare_trial_s": 2.0,
               "transformers": {"wall": 40.0, "best": 0.5, "complete": 4, "trials": 4, "overhead_median": 1.5},
               "raytrainer-optuna": {"wall": 10.0, "best": 0.4, "complete": 3, "trials": 4, "overhead_median": None}}
    benchmark.print_table(results, ["transformers", "raytrainer-optuna"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "4 trials; one trial trains 2.0 s in a bare loop"
    assert lines[3].split() == ["transformers", "40.0", "0.50000", "4/4", "1.50", "1.00x"]
    assert lines[4].split() == ["raytrainer-optuna", "10.0", "0.40000", "3/4", "-", "0.25x"]
