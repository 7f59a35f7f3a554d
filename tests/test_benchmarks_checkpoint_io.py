"""The checkpoint I/O benchmark still runs end to end (``--quick``, in its own process as a user
runs it), measures the bytes it claims for both families, and reports every ratio."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import checkpoint_io  # noqa: E402


def test_quick_run_reports_every_contestant_and_ratio(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "checkpoint_io.py"), "--quick",
                          "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["rounds"] == 2
    contestants = result["contestants"]
    assert list(contestants) == ["raw", "raytrainer", "safetensors", "torch.save", "raw-sharded", "raytrainer-fsdp"]
    layers = len(checkpoint_io.build_model(20))
    weights = layers * 4 * (1024 * 1024 + 1024)
    for name in ("raw", "raytrainer", "safetensors", "torch.save"):
        assert contestants[name]["bytes"] == weights and contestants[name]["reference"] == "raw"
    # FSDP: the weights, AdamW's two moments of the same size, and one float32 step per parameter
    for name in ("raw-sharded", "raytrainer-fsdp"):
        assert contestants[name]["bytes"] == 3 * weights + 2 * layers * 4
        assert contestants[name]["reference"] == "raw-sharded"
    for name, entry in contestants.items():
        for op in checkpoint_io.OPERATIONS:
            assert entry[op] > 0 and entry[f"{op}_vs_raw"] > 0, (name, op)
            assert entry[f"{op}_gb_per_s"] == entry["bytes"] / entry[op] / 1e9
    for raw in ("raw", "raw-sharded"):
        assert all(contestants[raw][f"{op}_vs_raw"] == 1.0 for op in checkpoint_io.OPERATIONS)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("checkpoint I/O, median of 2 rounds")
    assert [line.split(":")[1].split(">=")[0].strip() for line in lines if line.startswith("target:")] == \
        ["raytrainer", "raytrainer-fsdp"]
