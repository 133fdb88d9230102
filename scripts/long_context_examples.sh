#!/usr/bin/env bash
# The README's "Half a million tokens on one GPU" examples: the memory plans of Llama-2-7B and
# Llama-3.1-8B at 524288 tokens on an 80 GB card (--dry-run from models/configs: no weights, no
# GPU), then the table of the longest context per setting (scripts/long_context_table.sh).
#
# Usage: scripts/long_context_examples.sh   (the tools at the repository root, from
# `make tools`, or in TOOLS_DIR when set: the test runs its build's)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${TOOLS_DIR:-.}

run() {
  echo "\$ $*"
  "$@"
}

for config in llama-2-7b llama-3.1-8b; do
  run "$bin/train_longlora" -m "models/configs/$config" -ctx 524288 --device cuda \
    --device-memory 80GB --dry-run
done
TOOLS_DIR=$bin scripts/long_context_table.sh 80GB
