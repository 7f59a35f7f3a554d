"""A real two-node Ray cluster on this machine: one worker per node, checkpoints visible to both."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_one_worker_per_node_on_a_two_node_cluster(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    job = os.path.join(os.path.dirname(__file__), "_multinode_job.py")
    done = subprocess.run([sys.executable, job, out], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.load(open(os.path.join(out, "result.json")))
    assert result == {"global_step": 4, "nodes": 2}
    nodes = {open(os.path.join(out, f"node-of-rank-{rank}")).read() for rank in (0, 1)}
    assert len(nodes) == 2  # STRICT_SPREAD put the two workers on different nodes
    for step in (2, 4):
        files = set(os.listdir(os.path.join(out, f"checkpoint-{step}")))
        assert {"model.safetensors", "trainer_state.json", "rng_state.pth", "rng_state_1.pth"} <= files
