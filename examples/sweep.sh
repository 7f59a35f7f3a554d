#!/usr/bin/env bash
# A hyperparameter sweep from the command line: the digits task of configs/digits.yaml, the
# from_scratch preset of searchspaces/ (learning rate, warmup, decay, Adam beta2, clipping,
# schedule, batch size: the model starts from random weights), Optuna's TPE, dev accuracy
# maximised. Extra flags go to `raytrainer tune`
# (e.g. --backend ray --scheduler asha, --max-concurrent 2) or set TrainingArguments fields.
#
#   bash examples/sweep.sh                      # 8 trials, results in examples/out/sweep
#   N_TRIALS=20 bash examples/sweep.sh --backend ray --scheduler asha
#   raytrainer results examples/out/sweep       # the trial table again, later
set -euo pipefail
cd "$(dirname "$0")"
exec raytrainer tune configs/digits.yaml --space from_scratch --n-trials "${N_TRIALS:-8}" \
    --direction maximize --metric accuracy --output_dir out/sweep --disable_tqdm true "$@"
