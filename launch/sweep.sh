#!/usr/bin/env bash
# Run a sweep file (configs/segdepth/sweeps/*.sweep) and write WORKDIR/results.md and results.csv.
#   bash launch/sweep.sh configs/segdepth/sweeps/002_table5_task_weights.sweep [--config.train.num_steps=2000 ...]
# CONFIG (default configs/segdepth/deeplabv3plus.py) is the base config, WORKDIR (default
# runs/<sweep file name>) gets one folder per run. Finished runs are skipped, so re-running the same
# command after an interruption continues the sweep. Extra arguments are overrides for every run.
set -euo pipefail
SWEEP="${1:?usage: bash launch/sweep.sh SWEEP_FILE [--config.key=value ...]}"
shift
SWEEP="$(cd "$(dirname "$SWEEP")" && pwd)/$(basename "$SWEEP")"
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
CONFIG="${CONFIG:-configs/segdepth/deeplabv3plus.py}"
NAME="$(basename "$SWEEP")"
WORKDIR="${WORKDIR:-runs/${NAME%.*}}"
jaxvision sweep --config "$CONFIG" --workdir "$WORKDIR" --sweep "$SWEEP" "$@"
