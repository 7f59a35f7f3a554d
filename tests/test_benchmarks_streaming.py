"""The streaming benchmark's pure parts: plans and their checks, the data it writes, the throughput
and first-batch arithmetic, and the report. Ray is never started here (a real run takes minutes)."""

import os
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

import streaming as bench  # noqa: E402
from streaming import Plan  # noqa: E402


def test_plans_and_overrides():
    assert bench.plan_from(bench.parse_args([])) == Plan(rows=262144, features=32, files=16, batch_size=256,
                                                          max_steps=600, skip_steps=100, rounds=3)
    quick = bench.plan_from(bench.parse_args(["--quick", "--rounds", "2", "--rows", "4096", "--steps", "50"]))
    assert quick == Plan(rows=4096, features=32, files=8, batch_size=256, max_steps=50, skip_steps=20, rounds=2)


def test_bad_settings_fail_with_the_argument_named():
    with pytest.raises(ValueError, match="rounds must be a positive integer, got 0"):
        bench.plan_from(bench.parse_args(["--rounds", "0"]))
    with pytest.raises(ValueError, match="steps must be larger than 21"):
        bench.plan_from(bench.parse_args(["--quick", "--steps", "21"]))
    with pytest.raises(ValueError, match=r"rows must be at least 2048 \(8 files of at least one batch of 256\)"):
        bench.plan_from(bench.parse_args(["--quick", "--rows", "1000"]))


def test_rows_are_seeded_and_written_as_parquet_files(tmp_path):
    x, y = bench.make_rows(100, 3)
    again_x, _ = bench.make_rows(100, 3)
    assert x.shape == (100, 3) and y.shape == (100, 1) and x.dtype == y.dtype == np.float32
    assert np.array_equal(x, again_x)
    paths = bench.write_parquet(str(tmp_path), x, y, files=4)
    tables = [pq.read_table(path) for path in paths]
    assert [t.num_rows for t in tables] == [25, 25, 25, 25]
    assert np.array_equal(np.stack(tables[1]["x"].to_pylist()), x[25:50])
    assert np.array_equal(np.stack(tables[3]["labels"].to_pylist()), y[75:])


def test_steady_throughput_leaves_the_warm_up_out():
    # steps end at 0, 10, 11, 12, 13 (s): skipping 2 steps leaves 3 steps of 256 rows in 13 - 10 = 3 s
    assert bench.steady_rows_per_second([0.0, 10.0, 11.0, 12.0, 13.0], 256, skip_steps=2) == pytest.approx(256)
    with pytest.raises(ValueError, match="need more than 3 step ends, got 3"):
        bench.steady_rows_per_second([0.0, 1.0, 2.0], 256, skip_steps=3)


def test_first_batch_is_timed_and_the_iterator_closed():
    produced = []

    def batches():
        for number in range(3):
            produced.append(number)
            yield number

    class Loader:
        def __iter__(self):
            self.iterator = batches()
            return self.iterator

    loader = Loader()
    assert bench.first_batch_seconds(loader) >= 0.0
    assert produced == [0] and loader.iterator.gi_frame is None  # closed after the first batch


def test_summary_ratios_and_report():
    runs = {"in_memory": [{"first_batch_s": 0.01, "rows_per_s": 1000.0}, {"first_batch_s": 0.02, "rows_per_s": 2000.0},
                          {"first_batch_s": 0.03, "rows_per_s": 1000.0}],
            "ray_stream": [{"first_batch_s": 0.5, "rows_per_s": 900.0}, {"first_batch_s": 0.7, "rows_per_s": 2400.0},
                           {"first_batch_s": 0.6, "rows_per_s": 1000.0}]}
    plan = Plan(rows=4096, features=32, files=8, batch_size=256, max_steps=50, skip_steps=20, rounds=3)
    result = bench.summarise_runs(plan, runs)
    # per-round ratios 0.9, 1.2, 1.0: the median is 1.0 (a ratio of medians would say 1000/1000 too, by luck)
    assert result["throughput_ratios"] == {"ray_stream/in_memory": pytest.approx(1.0)}
    assert result["target"]["ray_stream/in_memory"] == {"at_least": 0.9, "met": True}
    assert result["implementations"]["ray_stream"]["first_batch_s"]["median"] == pytest.approx(0.6)
    report = bench.format_report(result).splitlines()
    assert report[2].split() == ["implementation", "rows/s", "(steady)", "min..max", "first", "batch", "(s)"]
    assert report[4].split() == ["in_memory", "1,000", "1,000..2,000", "0.020"]
    assert report[-1].split() == ["ray_stream/in_memory", "1.000x", ">=", "0.9", "met"]
