#!/usr/bin/env bash
# Start ONE process of a multi-process (multi-host) jaxvision run.  Run it on every host (or N times
# on one host for a local test), each with its own process id:
#   COORDINATOR=host0:12345 NUM_PROCESSES=2 PROCESS_ID=0 bash launch/multiprocess.sh \
#       train --config configs/segdepth/deeplabv3plus.py --workdir /shared/runs/r34
# Flags --coordinator/--num-processes/--process-id may be given instead of the environment variables.
set -euo pipefail
while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) COORDINATOR="$2"; shift 2 ;;
    --num-processes) NUM_PROCESSES="$2"; shift 2 ;;
    --process-id) PROCESS_ID="$2"; shift 2 ;;
    *) break ;;
  esac
done
: "${COORDINATOR:?set COORDINATOR=host:port (process 0 listens there)}"
: "${NUM_PROCESSES:?set NUM_PROCESSES}"
: "${PROCESS_ID:?set PROCESS_ID (0..NUM_PROCESSES-1)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export JAXVISION_COORDINATOR="$COORDINATOR" JAXVISION_NUM_PROCESSES="$NUM_PROCESSES" JAXVISION_PROCESS_ID="$PROCESS_ID"
exec "$ROOT/.venv/bin/jaxvision" "$@"
