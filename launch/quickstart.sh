#!/usr/bin/env bash
# Set up .venv, train DeepLabv3+ (seg + depth) on the built-in synthetic driving scenes, evaluate it
# and write the prediction picture.  Extra arguments are config overrides, e.g.
#   bash launch/quickstart.sh --config.train.num_steps=300
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
WORKDIR="${WORKDIR:-runs/quickstart}"
jaxvision train --config configs/quickstart.py --workdir "$WORKDIR" "$@"
jaxvision eval --workdir "$WORKDIR"
echo "[jaxvision] metrics: $WORKDIR/eval_metrics.md  predictions: $WORKDIR/predictions.png  logs: $WORKDIR/metrics.jsonl"
