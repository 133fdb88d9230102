#!/usr/bin/env bash
# The longest -ctx whose memory plan fits one GPU, for Llama-2-7B and Llama-3.1-8B as LongLoRA
# trains them (LoRA+ r 8 on q,k,v,o, embeddings and norms trained, S2-Attn G = N/4), at each
# setting: no offload and whole tensors, token tiles alone, activation offload alone, both
# (the default, auto). From train_longlora --dry-run (config.json alone, no GPU needed), in
# steps of 8192 tokens; the plan must fit 95% of the card (model/activation_schedule.h).
#
# Usage: scripts/long_context_table.sh [DEVICE_MEMORY]   (default 80GB; TOOLS_DIR: where
# train_longlora is, default the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
memory=${1:-80GB}
bin=${TOOLS_DIR:-.}

fits() {  # fits CONFIG CTX OFFLOAD TILE
  "$bin/train_longlora" -m "models/configs/$1" -ctx "$2" --device cuda --device-memory "$memory" \
    --dry-run --offload-activations "$3" --tile-tokens "$4" > /dev/null 2>&1
}

longest() {  # longest CONFIG OFFLOAD TILE(whole|auto): the largest multiple of 8192 that fits
  local config=$1 offload=$2 tile=$3 lo=0 hi=1024 mid t  # in units of 8192; 1024 = 8M tokens
  while ((hi - lo > 1)); do
    mid=$(((lo + hi) / 2))
    t=$tile
    [[ $tile == whole ]] && t=$((mid * 8192))
    if fits "$config" $((mid * 8192)) "$offload" "$t"; then lo=$mid; else hi=$mid; fi
  done
  echo $((lo * 8192))
}

echo "| model ($memory card) | no offload | token tiles | offload | offload + tiles |"
echo "|---|---:|---:|---:|---:|"
for config in llama-2-7b llama-3.1-8b; do
  echo "| $config | $(longest "$config" off whole) | $(longest "$config" off auto) |" \
    "$(longest "$config" auto whole) | $(longest "$config" auto auto) |"
done
