#!/usr/bin/env bash
# A two-node Ray cluster on this machine (head + one worker node on loopback), for trying
# multi-node training without a real cluster:
#
#   bash cluster/local_multinode.sh start
#   RAY_ADDRESS=127.0.0.1:6380 RAY_AUTH_MODE=disabled python your_script.py
#   bash cluster/local_multinode.sh stop
#
# Each node gets one CPU, so ScalingConfig(num_workers=2, placement_strategy="STRICT_SPREAD") puts
# one Ray Train worker on each node. Both nodes share this machine's disk, so checkpoints written
# under output_dir are visible to both.
set -euo pipefail
PORT="${RAY_PORT:-6380}"
# loopback only: no token authentication between the two local raylets (and the scripts you run
# against them need the same setting)
export RAY_AUTH_MODE=disabled
case "${1:-start}" in
  start)
    ray start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus=1 --include-dashboard=false
    # a second raylet on the same machine needs its own object store / temp dirs
    ray start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --num-cpus=1
    echo "cluster up: export RAY_ADDRESS=127.0.0.1:$PORT RAY_AUTH_MODE=disabled"
    ;;
  stop)
    ray stop  # note: stops every Ray process of this user on the machine
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
