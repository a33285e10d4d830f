# Sourced by the launch scripts: create .venv with Python 3.11 if missing and install jaxvision into it.
# Usage: source launch/_venv.sh [EXTRAS]   (EXTRAS like "dev" or "dev,export")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[jaxvision] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
EXTRAS="${1:-}"
SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
STAMP=".venv/.jaxvision-installed-${EXTRAS:-base}"
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  echo "[jaxvision] installing $SPEC into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e "$SPEC"
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# glibc's malloc backs large allocations with transparent huge pages: XLA:CPU's per-step buffers then stop
# page-faulting (1.5x training images/s for the small DMS model, 1.1x for the quickstart; BENCHMARKS.md).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}"
