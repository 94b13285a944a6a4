#!/usr/bin/env bash
# Create .venv and install advisor into it.
# torch is pinned FIRST: 2.13.0 is the CPU build found on local disk here; an unpinned torch
# (or any range admitting a newer release) would pull a multi-GB CUDA build from the registry.
# Usage: scripts/install.sh [EXTRAS]   e.g. scripts/install.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-example}"
PY="${PYTHON:-python3}"

pip_quiet() {  # pip, minus this machine's harmless "Location ... is ignored" lines; keeps pip's exit code
  set +e
  .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "is ignored"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_quiet --upgrade pip
pip_quiet "torch==2.13.0"
pip_quiet -e ".[${extras}]"
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13'), torch.__version__"
