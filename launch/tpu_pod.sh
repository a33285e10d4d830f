#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command runs on every worker; JAX discovers the
# coordinator and process ids from the TPU metadata (JAXVISION_DISTRIBUTED=auto).
#   TPU_NAME=my-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh configs/segdepth/deeplabv3plus.py gs://bucket/runs/r34
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}"; : "${ZONE:?set ZONE}"
CONFIG="$1"; WORKDIR="$2"; shift 2
REPO_DIR="${REPO_DIR:-~/jaxvision}"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR && source launch/_venv.sh && pip install --quiet 'jax[tpu]' &&
  JAXVISION_DISTRIBUTED=auto jaxvision train --config $CONFIG --workdir $WORKDIR $*"
