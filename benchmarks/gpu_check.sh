#!/usr/bin/env bash
# GPU check of raytrainer's loop (see benchmarks/gpu_check.py): mixed precision, compile, FSDP and
# DeepSpeed on one GPU, and throughput against a bare loop and transformers.Trainer. Needs PyTorch
# with CUDA, not Ray, nothing from the network; about 8 minutes on one H100/H200.
#   bash benchmarks/gpu_check.sh                      # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --json gpu.json      # also write the results as JSON
#   bash benchmarks/gpu_check.sh --cpu --tiny         # every code path on a CPU in seconds (a test)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
"$python" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPUs', torch.cuda.device_count())"
exec timeout "${GPU_CHECK_TIMEOUT:-900}" "$python" benchmarks/gpu_check.py "$@"
