#!/usr/bin/env python3
"""A Ray cluster of several nodes on this machine (a head and worker nodes on loopback), with the
dashboard and its job server and token authentication, all in one folder of its own:

    python cluster/local_multinode.py start [--dir DIR] [--nodes 2] [--cpus-per-node 1]
    eval "$(python cluster/local_multinode.py env [--dir DIR])"     # RAY_ADDRESS, token, job server
    raytrainer submit -- train examples/configs/digits.yaml         # or any Ray script
    python cluster/local_multinode.py stop [--dir DIR]

Every node runs ``ray start --block`` with ``--temp-dir`` inside DIR and free ports, so this
cluster lives beside any other Ray instance of the machine; ``stop`` ends exactly the processes it
started (and any Ray process whose command line names DIR), never a global ``ray stop``. The
token is generated into DIR/auth_token. Both nodes share this machine's disk, so checkpoints
written under output_dir are visible to both. Needs ``ray[default]`` (``pip install
'raytrainer[cluster]'``) for the dashboard.
"""

import argparse
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEFAULT_DIR = os.path.join(tempfile.gettempdir(), f"raytrainer-cluster-{os.getuid()}")
_HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")
_NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
               "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
_WORKER_PORT_RANGE = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_command() -> str:
    """The ``ray`` executable of this Python environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.path.exists(beside) else "ray"


def node_command(folder: str, index: int, head_port: int, cpus: int, dashboard_port: int) -> list:
    ports = {name: free_port() for name in _NODE_PORTS}
    low = free_port()
    command = [ray_command(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
               f"--temp-dir={os.path.join(folder, f'node-{index}')}", "--disable-usage-stats",
               f"--min-worker-port={low}", f"--max-worker-port={low + _WORKER_PORT_RANGE}"]
    command += [f"--{name}={port}" for name, port in ports.items()]
    if index == 0:
        command += ["--head", f"--port={head_port}", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}"]
    else:
        command += [f"--address=127.0.0.1:{head_port}"]
    return command


def cluster_env(folder: str) -> dict:
    with open(os.path.join(folder, "cluster.json")) as f:
        info = json.load(f)
    return {"RAY_ADDRESS": f"127.0.0.1:{info['port']}", "RAY_API_SERVER_ADDRESS": info["dashboard"],
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": os.path.join(folder, "auth_token")}


def start(folder: str, nodes: int, cpus: int, timeout_s: float = 120) -> dict:
    folder = os.path.abspath(folder)
    if running_pids(folder):
        raise SystemExit(f"a cluster already runs in {folder}; stop it first: {sys.argv[0]} stop --dir {folder}")
    os.makedirs(folder, exist_ok=True)
    token = os.path.join(folder, "auth_token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    head_port, dashboard_port = free_port(), free_port()
    with open(os.path.join(folder, "cluster.json"), "w") as f:
        json.dump({"port": head_port, "dashboard": f"http://127.0.0.1:{dashboard_port}", "nodes": nodes}, f)
    env = {**os.environ, **cluster_env(folder)}
    env.pop("RAY_AUTH_TOKEN", None)
    for index in range(nodes):
        command = node_command(folder, index, head_port, cpus, dashboard_port)
        with open(os.path.join(folder, f"node-{index}.log"), "w") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with open(os.path.join(folder, f"node-{index}.pid"), "w") as f:
            f.write(str(process.pid))
        wait_for_nodes(folder, index + 1, env, timeout_s)
    return cluster_env(folder)


def wait_for_nodes(folder: str, count: int, env: dict, timeout_s: float) -> None:
    """Until ``count`` nodes are alive (asked through the job server's REST API, which also
    proves that the dashboard is up)."""
    import urllib.request

    with open(os.path.join(folder, "cluster.json")) as f:
        dashboard = json.load(f)["dashboard"]
    with open(env["RAY_AUTH_TOKEN_PATH"]) as f:
        headers = {"Authorization": f"Bearer {f.read().strip()}"}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            request = urllib.request.Request(f"{dashboard}/nodes?view=summary", headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                summary = json.load(response)["data"]["summary"]
            if sum(node.get("raylet", {}).get("state") == "ALIVE" for node in summary) >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        if not running_pids(folder):
            break
        time.sleep(1)
    logs = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(".log")]
    stop(folder)
    raise SystemExit(f"the cluster in {folder} did not come up with {count} node(s); see {', '.join(logs)}")


def running_pids(folder: str) -> list:
    """Processes of this cluster: each node's ``ray start --block``, all their descendants (GCS,
    raylet, dashboard, Ray workers, job drivers), and any process whose command line names the
    cluster's folder (left over from an earlier, interrupted stop). Never this process or its
    ancestors (the shell that runs ``stop``)."""
    pids = set()
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".pid"):
            with open(os.path.join(folder, name)) as f:
                pids.add(int(f.read().strip() or 0))
    children, marker = {}, (os.path.abspath(folder) + os.sep).encode()
    for pid, parent, cmdline in _processes():
        children.setdefault(parent, []).append(pid)
        if marker in cmdline:
            pids.add(pid)
    stack = list(pids)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in pids:
                pids.add(child)
                stack.append(child)
    return sorted(pid for pid in pids - _self_and_ancestors() if pid > 0 and _alive(pid))


def _processes():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                yield int(entry), parent, f.read()
        except (OSError, IndexError, ValueError):
            continue


def _self_and_ancestors() -> set:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has already exited
    except OSError:
        return False


def stop(folder: str, grace_s: float = 3) -> None:
    """SIGTERM to each node's ``ray start --block``, worker nodes first (it stops its node's
    processes); after ``grace_s`` a node's, then SIGTERM and SIGKILL to whatever of this cluster
    is left."""
    folder = os.path.abspath(folder)
    # taken before the parents go (their children are then re-parented); with start times, so
    # that a process id reused by another program is never signalled
    cluster = {pid: _start_time(pid) for pid in running_pids(folder)}

    def left():
        found = {pid: _start_time(pid) for pid in running_pids(folder)}
        return sorted(pid for pid, started in {**cluster, **found}.items()
                      if _alive(pid) and started is not None and _start_time(pid) == started)

    # worker nodes first: a worker node whose head is gone waits for it to come back
    for name in sorted(os.listdir(folder) if os.path.isdir(folder) else [], reverse=True):
        if name.endswith(".pid"):
            with open(os.path.join(folder, name)) as f:
                pid = int(f.read().strip() or 0)
            if pid in cluster:
                _signal(pid, signal.SIGTERM)
                _wait_for_exit(pid, grace_s)
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        for pid in left():
            _signal(pid, sig)
        deadline = time.time() + wait_s
        while left() and time.time() < deadline:
            time.sleep(0.2)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".pid"):
            os.remove(os.path.join(folder, name))


def _wait_for_exit(pid: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)


def _start_time(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _signal(pid: int, sig) -> None:
    if pid > 0:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "env", "status"))
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster's own folder (default {DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, default=2, help="nodes, the head included (default 2)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    options = parser.parse_args(argv)
    if options.action == "start":
        env = start(options.dir, options.nodes, options.cpus_per_node)
        print(f"cluster up in {os.path.abspath(options.dir)}; to use it:")
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items()))
    elif options.action == "env":
        print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in cluster_env(options.dir).items()))
    elif options.action == "status":
        pids = running_pids(options.dir)
        print(f"{len(pids)} process(es) of the cluster in {os.path.abspath(options.dir)}" + (": running" if pids else ""))
        return 0 if pids else 1
    else:
        stop(options.dir)
        print(f"stopped the cluster in {os.path.abspath(options.dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
