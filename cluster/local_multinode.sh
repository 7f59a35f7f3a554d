#!/usr/bin/env bash
# A two-node Ray cluster on this machine (head + one worker node on loopback, dashboard and job
# server, token authentication), in a folder of its own; stop ends only that cluster:
#
#   bash cluster/local_multinode.sh start          # prints the exports to use it
#   eval "$(bash cluster/local_multinode.sh env)"
#   raytrainer submit -- train examples/configs/digits.yaml --output_dir /tmp/digits
#   bash cluster/local_multinode.sh stop
#
# Options: --dir DIR (default /tmp/raytrainer-cluster-<uid>), --nodes N, --cpus-per-node C.
# With one CPU per node, ScalingConfig(num_workers=2, placement_strategy="STRICT_SPREAD") puts one
# Ray Train worker on each node. See local_multinode.py for how it works.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/local_multinode.py" "$@"
