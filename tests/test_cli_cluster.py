"""A real Ray cluster on this machine, started by cluster/local_multinode.sh in a folder of its own
(two nodes, dashboard and job server, token authentication): ``raytrainer submit`` runs
``raytrainer train`` on it with two Ray Train workers, a failing job's exit status comes back,
a driver that joined the cluster trains there by default, and ``stop`` ends exactly that cluster."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "cluster", "local_multinode.sh")
sys.path.insert(0, os.path.join(REPO, "cluster"))

import local_multinode  # noqa: E402


def _environment(extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    env.update(extra or {})
    return env


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("aiohttp", reason="the job server needs ray[default]: pip install 'raytrainer[cluster]'")
    folder = tempfile.mkdtemp(prefix="rtc-", dir="/tmp")  # short: Ray's socket paths live below it
    started = subprocess.run(["bash", SCRIPT, "start", "--dir", folder], env=_environment(), capture_output=True,
                             text=True, timeout=240)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:" in started.stdout
        yield folder, _environment(local_multinode.cluster_env(folder))
    finally:
        stopped = subprocess.run(["bash", SCRIPT, "stop", "--dir", folder], env=_environment(), capture_output=True,
                                 text=True, timeout=180)
        left = local_multinode.running_pids(folder)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0 and not left, (stopped.stderr, left)


def submit(env, *argv, timeout=400):
    return subprocess.run([sys.executable, "-m", "raytrainer", "submit", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_submit_train_on_two_workers_of_the_cluster(cluster, tmp_path):
    folder, env = cluster
    out = tmp_path / "digits"
    done = submit(env, "--working-dir", "examples", "--", "train", "configs/digits_cluster.yaml",
                  "--output_dir", str(out), "--num_train_epochs", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted job raysubmit_" in done.stdout and f"model saved to {out}" in done.stdout
    assert {"model.safetensors", "checkpoint-40", "trainer_state.json", "all_results.json"} <= set(os.listdir(out))
    state = json.load(open(out / "trainer_state.json"))
    assert state["global_step"] == 40  # 1257 examples / (2 workers x 16) = 40 steps
    # rank 1 saved its own RNG state: two workers trained
    assert {"model.safetensors", "optimizer.pt", "rng_state.pth", "rng_state_1.pth"} <= set(os.listdir(out / "checkpoint-40"))
    assert json.load(open(out / "eval_results.json"))["eval_accuracy"] > 0.5


def test_a_failed_job_returns_its_exit_status(cluster, tmp_path):
    folder, env = cluster
    (tmp_path / "broken_task.py").write_text("raise RuntimeError('no weights here')\n")
    (tmp_path / "broken.yaml").write_text("model: broken_task:build_model\nargs: {output_dir: /tmp/unused}\n")
    done = submit(env, "--working-dir", str(tmp_path), "--no-package", "--", "train", "broken.yaml", timeout=200)
    # the job's own verdict: its config error (exit status 2) on the cluster, passed through
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "model: importing 'broken_task' raised RuntimeError: no weights here" in done.stdout
    assert "raytrainer submit: job raysubmit_" in done.stderr and " failed" in done.stderr


def test_ctrl_c_stops_the_job(cluster, tmp_path):
    folder, env = cluster
    process = subprocess.Popen([sys.executable, "-m", "raytrainer", "submit", "--working-dir", "examples", "--",
                                "train", "configs/digits.yaml", "--output_dir", str(tmp_path / "long"),
                                "--num_train_epochs", "10000"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:  # wait until the job trains: it logs a loss every 10 steps
            if "'loss'" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "stopping job raysubmit_" in err and " is STOPPED." in err


def test_a_driver_that_joined_the_cluster_trains_on_its_workers_by_default(cluster):
    folder, env = cluster
    address = env.pop("RAY_ADDRESS")  # a notebook on the head node: ray.init(address) and nothing else
    probe = ("import json, ray\n"
             f"ray.init(address={address!r}, log_to_driver=False)\n"
             "from raytrainer.runtime.scaling import is_local_mode, resolve_scaling_config\n"
             "print(json.dumps([is_local_mode(None), resolve_scaling_config(None).num_workers]))\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, 1]
