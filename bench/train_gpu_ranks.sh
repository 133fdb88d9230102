#!/usr/bin/env bash
# Data-parallel training step on GPUs against the number of ranks (one GPU each): bench_train
# --sharded (Llama-2-7B shape, random weights, LoRA+, S2-Attn G = N/4; the sharded AdamW step
# with each layer's gradients reduced over NCCL while the backward goes on) as one process, then
# under `mpirun -np R` for every R in RANKS that the machine's GPUs allow. Every rank runs the
# same context, so tokens/s per GPU should stay flat as ranks are added; the last column is the
# share of the gradient reduction the backward hid (from the NCCL transport's timing summary).
# Usage: bench/train_gpu_ranks.sh [RANKS] [CTX] [LAYERS]   (defaults "1 2 4 8", 8192, 32)
# DEVICE=cpu runs the same on the CPU backend (a smoke test of the script: --layers 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ranks_list=${1:-"1 2 4 8"}
ctx=${2:-8192}
layers=${3:-32}
device=${DEVICE:-cuda}
if [[ $device == cuda ]]; then
  gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
  ((gpus > 0)) || { echo "no GPU visible (nvidia-smi); DEVICE=cpu for a CPU smoke test"; exit 1; }
else
  gpus=$(nproc)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpi_flags=(--oversubscribe)
[[ $(id -u) == 0 ]] && mpi_flags+=(--allow-run-as-root)
printf "| ranks | ctx | step ms | tokens/s per rank | tokens/s total | peak GiB per rank | reduction hidden |\n"
printf "|------:|----:|--------:|------------------:|---------------:|------------------:|-----------------:|\n"
for ranks in $ranks_list; do
  if ((ranks > gpus)); then
    echo "($ranks ranks skipped: $gpus GPU(s) here)"
    continue
  fi
  args=(--device "$device" --sharded --ctx "$ctx" --layers "$layers" --steps 3 --warmup 1
        --json "$work/r$ranks.json")
  if ((ranks == 1)); then
    ./bench_train "${args[@]}" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
  else
    command -v mpirun > /dev/null || { echo "mpirun not found: install openmpi-bin (make setup)"; exit 1; }
    # The host's cores shared between the ranks (the CPU backend computes with them).
    OMP_NUM_THREADS=$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 )) mpirun -np "$ranks" "${mpi_flags[@]}" \
      ./bench_train "${args[@]}" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
  fi
  python3 - "$work/r$ranks.json" "$ranks" <<'PY'
import json, re, sys
doc = json.load(open(sys.argv[1]))
ranks = int(sys.argv[2])
for r in doc["rows"]:
    m = re.search(r"\((\d+)% hidden", r.get("collectives", ""))
    hidden = f"{m.group(1)}%" if m else "-"
    print(f"| {ranks} | {r['ctx']} | {r['step_ms']:.1f} | {r['tokens_per_s']:.0f} | "
          f"{ranks * r['tokens_per_s']:.0f} | {r['peak_bytes'] / 2**30:.2f} | {hidden} |")
PY
done
