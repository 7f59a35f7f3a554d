"""benchmarks/gpu_check.sh cannot run here (no GPU), so its --cpu --tiny mode runs every code path:
raytrainer's loop without Ray, each precision/compile/sharding check, the three throughput loops.
It runs in a subprocess because the script refuses Ray imports for its whole process."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_runs_every_path_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--cpu", "--tiny", "--json",
                           str(out)], capture_output=True, text=True, env=env, timeout=900, cwd=str(tmp_path))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(out.read_text())
    statuses = {row["check"]: row["status"] for row in result["checks"]}
    cuda_only = {"tf32", "fp16 + scaler", "fp16_full_eval", "auto_find_batch_size OOM"}
    assert all(statuses[name] == "skipped" for name in cuda_only)
    expected_ok = {"fp32", "bf16", "compile fp32", "compile bf16", "grad checkpointing", "empty_cache_steps=2",
                   "fsdp fp32", "fsdp bf16", "bf16_full_eval", "fsdp resume from shards"}
    assert {name for name, status in statuses.items() if status == "ok"} >= expected_ok
    try:
        import deepspeed  # noqa: F401

        assert statuses["deepspeed zero2 bf16"] == statuses["deepspeed zero3 bf16"] == "ok"
    except ImportError:
        assert statuses["deepspeed zero3 bf16"] == "skipped"
    loops = result["throughput"]["results"]
    assert {"bare", "raytrainer", "bare+compile", "raytrainer+compile"} <= set(loops)
    assert all(loops[name]["tokens_per_second"] > 0 for name in ("bare", "raytrainer", "raytrainer+compile"))
    assert "Throughput:" in done.stdout and "fsdp resume from shards" in done.stdout
