"""The Ray-overhead benchmark's pure parts: argument parsing and plans, the arithmetic that turns
driver times and rank-0 stamps into metrics and phases, the report, and the job module's clock
and model. Ray is never started here: one real fit costs ~20 s on 2 cores."""

import os
import pickle
import sys

import pytest
import torch

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import _ray_job
import ray_overhead
from ray_overhead import Plan


def _run(impl, call, worker_start, loop_start, step_ends, worker_end, returned, cpu=0.5):
    driver = {"call": call, "return": returned, "cpu": cpu}
    clock = {"marks": {"worker_start": worker_start, "loop_start": loop_start, "worker_end": worker_end},
             "step_ends": step_ends, "step_cpu": [0.001 * t for t in step_ends]}  # CPU: a thousandth of wall
    return {"implementation": impl, "metrics": ray_overhead.run_metrics(driver, clock, skip_steps=2),
            "phases": ray_overhead.phase_breakdown(driver, clock)}


def test_default_and_quick_plans_and_overrides():
    assert ray_overhead.plan_from(ray_overhead.parse_args([])) == Plan(rounds=4, max_steps=400, skip_steps=50,
                                                                       warmup_steps=40)
    assert ray_overhead.plan_from(ray_overhead.parse_args(["--quick"])) == Plan(rounds=1, max_steps=120,
                                                                                skip_steps=20, warmup_steps=0)
    options = ray_overhead.parse_args(["--quick", "--rounds", "3", "--steps", "200", "--json", "out.json"])
    assert ray_overhead.plan_from(options) == Plan(rounds=3, max_steps=200, skip_steps=20, warmup_steps=0)
    assert options.json == "out.json" and options.workers == 2


def test_bad_settings_fail_with_the_argument_named():
    with pytest.raises(ValueError, match="rounds must be a positive integer, got 0"):
        ray_overhead.plan_from(ray_overhead.parse_args(["--rounds", "0"]))
    with pytest.raises(ValueError, match=r"max_steps \(25\) must be at least skip_steps \+ 10 \(30\)"):
        ray_overhead.plan_from(ray_overhead.parse_args(["--quick", "--steps", "25"]))
    with pytest.raises(ValueError, match=r"--workers must be at least 2 \(a distributed run\), got 1"):
        ray_overhead.plan_from(ray_overhead.parse_args(["--workers", "1"]))
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer, got -1"):
        ray_overhead.validate_plan(Plan(rounds=1, max_steps=100, skip_steps=5, warmup_steps=-1))
    with pytest.raises(SystemExit):  # argparse refuses a non-integer
        ray_overhead.parse_args(["--steps", "many"])


def test_run_metrics_and_phases_from_stamps():
    # call at 100; worker up at 110, loop at 113, steps end at 114, 115, 117, 119, 121; return at 125
    run = _run("raw", 100.0, 110.0, 113.0, [114.0, 115.0, 117.0, 119.0, 121.0], 121.5, 125.0)
    assert run["metrics"]["fit_wall"] == pytest.approx(25.0)
    assert run["metrics"]["first_step"] == pytest.approx(14.0)
    assert run["metrics"]["per_step"] == pytest.approx(2.0)  # steps 3..5 span 115 -> 121
    assert run["metrics"]["typical_step"] == pytest.approx(2.0)
    assert run["metrics"]["per_step_cpu"] == pytest.approx(0.002)
    assert run["metrics"]["driver_cpu"] == 0.5
    assert run["phases"] == pytest.approx({"to_worker_start": 10.0, "worker_setup": 3.0, "to_first_step": 1.0,
                                           "steps": 7.0, "after_last_step": 0.5, "to_return": 3.5})
    assert sum(run["phases"].values()) == pytest.approx(run["metrics"]["fit_wall"])


def test_summary_pairs_rounds_and_judges_each_metric():
    steps = [1.0, 2.0, 3.0, 4.0, 5.0]
    runs = [_run("raw", 0.0, 10.0, 12.0, [13.0 + s for s in steps], 18.0, 20.0),
            _run("raytrainer", 0.0, 10.2, 12.2, [13.2 + s for s in steps], 18.2, 20.4),  # +2% wall, same steps
            _run("raw", 0.0, 10.0, 12.0, [13.0 + s for s in steps], 18.0, 20.0),
            _run("raytrainer", 0.0, 11.0, 13.0, [14.0 + 1.2 * s for s in steps], 20.0, 24.0)]  # 1.2x everywhere
    summary = ray_overhead.summarise_runs(runs)
    assert summary["metrics"]["raw"]["fit_wall"]["median"] == 20.0
    assert summary["metrics"]["raytrainer"]["fit_wall"]["rounds"] == [20.4, 24.0]
    # per-round ratios 1.02 and 1.2 -> median 1.11
    assert summary["ratios"]["fit_wall"] == pytest.approx(1.11)
    assert summary["ratios"]["per_step"] == pytest.approx(1.1)
    assert summary["targets"]["per_step"] == {"at_most": 1.05, "met": False}
    assert set(summary["targets"]) == {"fit_wall", "first_step", "per_step"}
    assert summary["all_targets_met"] is False
    assert summary["phases"]["raytrainer"]["to_return"] == pytest.approx(3.1)  # median of 2.2 and 4.0
    with pytest.raises(ValueError, match="at least one run of each"):
        ray_overhead.summarise_runs(runs[:1])


def test_report_shows_medians_ratios_verdicts_and_phases():
    steps = [1.0, 2.0, 3.0, 4.0, 5.0]
    runs = [_run("raw", 0.0, 10.0, 12.0, [13.0 + s for s in steps], 18.0, 20.0),
            _run("raytrainer", 0.0, 10.0, 12.0, [13.0 + s for s in steps], 18.0, 20.5)]
    result = {"config": {"workers": 2, "job": "MLP", "plan": {"max_steps": 5, "rounds": 1, "skip_steps": 2},
                         "versions": {"ray": "2.60.0"}},
              "summary": ray_overhead.summarise_runs(runs)}
    report = ray_overhead.format_report(result)
    lines = report.splitlines()
    wall = next(line for line in lines if line.startswith("fit() / train() wall (s)"))
    assert "20.000 (20.000..20.000)" in wall and "20.500" in wall and "1.025x" in wall and wall.endswith("met")
    step = next(line for line in lines if line.startswith("steady-state step (ms)"))
    assert "1000.000" in step and "1.000x" in step
    to_return = next(line for line in lines if line.startswith("loop end -> fit returns (driver)"))
    assert to_return.split()[-3:] == ["2.000", "2.500", "+0.500"]
    assert lines[-1] == "verdict: all targets met"


def test_clock_writes_what_rank_zero_saw(tmp_path):
    clock = _ray_job.RankZeroClock(str(tmp_path / "clock.json"))
    clock.mark("worker_start")
    clock.step_end()
    clock.step_end()
    clock.write()
    record = _ray_job.read_clock(str(tmp_path / "clock.json"))
    assert set(record["marks"]) == {"worker_start"} and len(record["step_ends"]) == len(record["step_cpu"]) == 2
    assert record["step_cpu"][0] <= record["step_cpu"][1]
    assert record["step_ends"][0] <= record["step_ends"][1] and record["torch_threads"] == torch.get_num_threads()
    with pytest.raises(RuntimeError, match="rank 0 wrote no timestamps to .*missing.json"):
        _ray_job.read_clock(str(tmp_path / "missing.json"))


def test_callback_stamps_worker_start_only_in_another_process(tmp_path):
    from _ray_job_callback import RankZeroClockCallback

    from raytrainer import TrainerControl, TrainerState

    callback = RankZeroClockCallback(str(tmp_path / "clock.json"))
    assert "worker_start" not in pickle.loads(pickle.dumps(callback)).clock.marks  # same process: no stamp
    callback.driver_pid = -1  # as if unpickled in a Ray worker process
    on_worker = pickle.loads(pickle.dumps(callback))
    first = on_worker.clock.marks["worker_start"]
    assert pickle.loads(pickle.dumps(on_worker)).clock.marks["worker_start"] == first  # a later copy keeps it
    state = TrainerState()
    state.is_world_process_zero = True
    for event in ("on_train_begin", "on_step_end", "on_step_end", "on_train_end"):
        getattr(on_worker, event)(None, state, TrainerControl())
    record = _ray_job.read_clock(str(tmp_path / "clock.json"))
    assert set(record["marks"]) == {"worker_start", "loop_start", "worker_end"} and len(record["step_ends"]) == 2


def test_job_model_and_optimizer_groups():
    torch.manual_seed(0)
    model, dataset = _ray_job.WideMLP(), _ray_job.WideRegression(size=16)
    assert sum(p.numel() for p in model.parameters()) == 329_217
    batch = {"x": dataset.x[:4], "labels": dataset.labels[:4]}
    output = model(**batch)
    assert output["logits"].shape == (4, 1) and output["loss"].ndim == 0 and output["loss"] > 0
    decay, no_decay = _ray_job.decay_groups(model)
    assert [p.shape for p in decay["params"]] == [(512, 128), (512, 512), (1, 512)]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
