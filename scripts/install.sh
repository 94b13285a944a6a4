#!/usr/bin/env bash
# Create a virtual environment and install advisor into it.
#
#   scripts/install.sh [EXTRAS]   .venv: torch 2.13.0 (CPU build) first, then advisor[EXTRAS]
#                                 (default "example"; "dev" adds the test tools)
#   scripts/install.sh vision     .venv-vision: torch 2.14.1 + torchvision 0.29.1 + timm, then
#                                 advisor[dev] -- the environment for real torchvision/timm models
#
# torch is pinned FIRST: 2.13.0 is the CPU build found on local disk here; an unpinned torch
# (or any range admitting a newer release) would pull a multi-GB CUDA build from the registry.
# torch 2.14.1 and torchvision 0.29.1 are on local disk too (a CUDA build that runs on the CPU,
# ~5.5 GB); PyPI's torchvision does not load beside the CPU torch 2.13 ("torchvision::nms does not
# exist"), which is why the vision environment is a separate venv.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-example}"
PY="${PYTHON:-python3}"

if [ "$extras" = vision ]; then
  venv=.venv-vision; torch_pins=("torch==2.14.1" "torchvision==0.29.1"); torch_prefix=2.14
  extras=dev; more=("timm>=1.0" "pytest-xdist>=3.5")
else
  venv=.venv; torch_pins=("torch==2.13.0"); torch_prefix=2.13; more=()
fi

pip_quiet() {  # pip, minus this machine's harmless "Location ... is ignored" lines; keeps pip's exit code
  set +e
  "$venv/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip_quiet --upgrade pip
pip_quiet "${torch_pins[@]}"
# the torch pins are repeated so that nothing later can swap the torch they chose
[ ${#more[@]} -eq 0 ] || pip_quiet "${torch_pins[@]}" "${more[@]}"
pip_quiet "${torch_pins[@]}" -e ".[${extras}]"
"$venv/bin/python" -c "import torch, sys; assert torch.__version__.startswith(sys.argv[1]), torch.__version__" "$torch_prefix"

# the device agent's environment, as a device has it: onnxruntime, numpy and psutil, no torch and
# no advisor (advisor pushes its agent over the link). The dev tests run the agent in it.
if [ "$extras" = dev ] && [ "$venv" = .venv ]; then
  agent_venv=.venv-agent
  [ -x "$agent_venv/bin/python" ] || "$PY" -m venv "$agent_venv"
  set +e
  "$agent_venv/bin/python" -m pip install -q "onnxruntime>=1.20" "numpy>=1.26" "psutil>=5.9" 2>&1 | grep -v "is ignored"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || exit "$rc"
  if "$agent_venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "error: $agent_venv must not have torch" >&2; exit 1
  fi
fi
