"""The loop-overhead benchmark still runs end to end (smallest configuration), and its timing
helpers compute what they claim; so the benchmark cannot silently rot."""

import json
import math
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import _common  # noqa: E402
import loop_overhead  # noqa: E402

HAS_TRANSFORMERS = "transformers" in loop_overhead.available_implementations()


def test_per_step_by_difference_cancels_fixed_costs():
    # 2 s of set-up plus 10 ms per step: 100 steps take 3 s, 400 steps take 6 s
    assert _common.per_step_by_difference(3.0, 6.0, 100, 400) == pytest.approx(0.01)
    with pytest.raises(ValueError, match=r"long_steps \(5\) must be larger than short_steps \(5\)"):
        _common.per_step_by_difference(1.0, 2.0, 5, 5)


def test_per_step_from_clock_skips_the_warm_up_steps():
    # step ends at 1, 2, 4, 6, 8: skipping 2 steps leaves 3 steps spanning 2 -> 8
    assert _common.per_step_from_clock([1.0, 2.0, 4.0, 6.0, 8.0], skip_steps=2) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="need more than skip_steps"):
        _common.per_step_from_clock([1.0, 2.0], skip_steps=1)


def test_typical_step_is_a_low_quantile_of_single_steps():
    # steps after the first: 1, 5, 2, 2, 10 -> sorted 1, 2, 2, 5, 10; the 25th percentile is 2
    ends = [0.0, 1.0, 6.0, 8.0, 10.0, 20.0]
    assert _common.typical_step(ends, skip_steps=1) == pytest.approx(2.0)
    assert _common.typical_step(ends, skip_steps=1, quantile=1.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="quantile must be within"):
        _common.typical_step(ends, skip_steps=1, quantile=1.5)
    with pytest.raises(ValueError, match="need more than skip_steps"):
        _common.typical_step(ends[:2], skip_steps=2)


def test_summaries_ratios_and_table():
    assert _common.summarise([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": [3.0, 1.0, 2.0]}
    # per-round ratios 2, 1, 1.5 -> median 1.5 (a ratio of medians would give 2.0 / 1.5)
    assert _common.paired_ratio([2.0, 2.0, 3.0], [1.0, 2.0, 2.0]) == pytest.approx(1.5)
    assert _common.format_table(["a", "bb"], [["xyz", "1"]]).splitlines() == ["a    bb", "---  --", "xyz  1"]


def test_run_benchmark_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode='huge' is not one of"):
        loop_overhead.run_benchmark("huge")
    with pytest.raises(ValueError, match=r"workloads \['cnn'\] are unknown"):
        loop_overhead.run_benchmark("smoke", workloads=("cnn",))
    with pytest.raises(ValueError, match="rounds must be a positive integer, got 0"):
        loop_overhead.run_benchmark("smoke", rounds=0)


def test_bare_loop_runs_the_asked_steps_and_learns():
    import copy

    import torch

    workload = loop_overhead.WORKLOADS["mlp"]
    torch.manual_seed(0)
    model, dataset = workload.build_model(), workload.build_dataset()
    before = copy.deepcopy(model)
    clock = []
    mean_loss = loop_overhead.prepare_bare(model, dataset, 32, 5, clock, output_dir="unused")()
    assert len(clock) == 5 and clock == sorted(clock)
    assert math.isfinite(mean_loss) and mean_loss > 0
    assert not torch.equal(model.hidden.weight, before.hidden.weight)


def test_smallest_configuration_end_to_end():
    import logging

    import torch

    threads_before, ray_level_before = torch.get_num_threads(), logging.getLogger("ray").level
    result = loop_overhead.run_benchmark("smoke", workloads=("mlp",), threads=1)
    # the process's own settings come back: the benchmark must not slow or silence later tests
    assert torch.get_num_threads() == threads_before
    assert logging.getLogger("ray").level == ray_level_before
    expected = {"bare", "raytrainer", "transformers"} if HAS_TRANSFORMERS else {"bare", "raytrainer"}
    mlp = result["workloads"]["mlp"]
    assert set(mlp["implementations"]) == expected
    assert mlp["steps"] == {"short": 2, "long": 12} and mlp["rounds"] == 1
    for name, timing in mlp["implementations"].items():
        # the step-end clock is free of set-up noise, so it is always positive
        assert timing["in_loop"]["median"] > 0 and timing["typical"]["median"] > 0, name
        # the difference estimate is only as good as 10 steps allow; it must still be a number
        assert math.isfinite(timing["seconds_per_step"]), name
    expected_ratios = {"raytrainer/bare", "transformers/bare", "raytrainer/transformers"} if HAS_TRANSFORMERS \
        else {"raytrainer/bare"}
    assert set(mlp["ratios"]) == expected_ratios == set(mlp["typical_ratios"]) == set(mlp["wall_ratios"])
    assert mlp["targets"]["raytrainer/bare"]["at_most"] == 1.10
    assert isinstance(mlp["targets"]["raytrainer/bare"]["met"], bool)
    json.dumps(result)  # what --json writes must serialise
    report = loop_overhead.format_report(result)
    assert "[mlp]" in report and "raytrainer/bare" in report and "<= 1.10" in report
    assert ("transformers is not importable" in report) is not HAS_TRANSFORMERS
