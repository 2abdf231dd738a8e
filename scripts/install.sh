#!/usr/bin/env bash
# Set up SpecRouter on this machine.
#   bash scripts/install.sh          runtime only (the demo and the CLI)
#   bash scripts/install.sh --dev    plus the test and lint tools
# torch: a torch you already have is kept (GPU users: install your CUDA build first).
# Without one, the CPU build torch==2.13.0 is installed, never a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "install: keeping torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  echo "install: no torch found; installing the CPU build torch==2.13.0"
  "$PYTHON" -m pip install --quiet torch==2.13.0 \
    || "$PYTHON" -m pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
fi
"$PYTHON" -m pip install --quiet --editable ".${extras}"
echo "install: done ($("$PYTHON" -m pip --version | cut -d' ' -f1-2))"
