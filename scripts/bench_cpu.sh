#!/usr/bin/env bash
# CPU forward benchmark: our reference backend vs PyTorch (when installed) on the same shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
./bench_cpu_forward "$@"
if python3 -c "import torch, transformers" 2>/dev/null; then
  python3 bench/torch_cpu_forward.py
else
  echo "bench: PyTorch/transformers not installed; skipping the PyTorch side"
fi
