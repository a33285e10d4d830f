#!/usr/bin/env bash
# Set up .venv with the dev, export and tf extras and run the test suite: the fast tests unless a -m marker
# expression is given.
# Extra arguments go to pytest, e.g.
#   bash launch/test.sh -m slow           (the slow tests: multi-process, notebook, larger export siblings, ...)
#   bash launch/test.sh -m ""             (everything)
#   bash launch/test.sh tests/test_losses.py
# The PyTorch originals (the `parity` extra: torch, torchvision, timm, ~5.5 GB) are installed too when possible,
# for the weight-conversion parity tests; JAXVISION_PARITY=0 skips them (those tests then skip, saying why).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" dev,export,tf
if [ "${JAXVISION_PARITY:-1}" != 0 ]; then
  bash launch/_venv.sh dev,export,tf,parity \
    || echo "[jaxvision] could not install torch/torchvision/timm; the PyTorch parity tests will skip"
fi
MARKER=(-m "not slow")
for arg in "$@"; do [ "$arg" = "-m" ] && MARKER=(); done
exec .venv/bin/python -m pytest "${MARKER[@]}" "$@"
