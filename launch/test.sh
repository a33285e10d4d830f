#!/usr/bin/env bash
# Set up .venv with the dev extras and run the test suite.  Extra arguments go to pytest, e.g.
#   bash launch/test.sh -m "not slow"     (fast tests only)
#   bash launch/test.sh tests/test_losses.py
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" dev
exec .venv/bin/python -m pytest "$@"
