#!/usr/bin/env bash
# Data-parallel CPU training of train_longlora on the demo model (models/kjv-tiny), LoRA+ with
# S2-Attn (G = N/4), against the number of ranks: 1 process, then `mpirun -np 2`, at the same
# global batch (GLOBAL windows per optimizer step: --grad-accum GLOBAL / ranks per rank).
# The cores are split between the ranks (OMP_NUM_THREADS = cores / ranks), so the table shows
# what data parallelism costs or gains on one machine at a fixed core count; across machines
# each rank brings its own cores.
# The row "1 (sharded)" is one process with --sharded-optimizer: the data-parallel step's own
# cost (bucketed reduction from the backward hook, flat buffers, gather) without a second rank.
# tokens/s = tokens of all ranks per optimizer step / step time, median over steps 2..STEPS
# (step 1 is warm-up). Usage: bench/train_cpu_ranks.sh [STEPS] [CTX]   (default 6, 512)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
ctx=${2:-512}
global=4
command -v mpirun > /dev/null || { echo "mpirun not found: install openmpi-bin (make setup)"; exit 1; }
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/make_kjv_corpus.sh "$work/corpus" > /dev/null 2>&1
mpi_flags=(--oversubscribe)
[[ $(id -u) == 0 ]] && mpi_flags+=(--allow-run-as-root)
printf "|       ranks | threads/rank | context | windows/step | median tokens/s | median step s |\n"
printf "|------------:|-------------:|--------:|-------------:|----------------:|--------------:|\n"
for row in 1 1s 2; do
  ranks=${row%s}
  threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
  args=(--device cpu -m models/kjv-tiny --data "$work/corpus/train.shard" -ctx "$ctx"
        --steps "$steps" --grad-accum $(( global / ranks )) --lr 1e-4 --warmup 0
        --out "$work/ranks-$row")
  [[ $row == 1s ]] && args+=(--sharded-optimizer)
  if [[ $ranks == 1 ]]; then
    OMP_NUM_THREADS=$threads ./train_longlora "${args[@]}" > "$work/log" 2>&1 ||
      { cat "$work/log"; exit 1; }
  else
    OMP_NUM_THREADS=$threads mpirun -np "$ranks" "${mpi_flags[@]}" ./train_longlora "${args[@]}" \
      > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
  fi
  # Median tokens_per_s (all ranks' tokens) of steps 2..STEPS from rank 0's metrics log.
  median=$(grep '"step"' "$work/ranks-$row/metrics.jsonl" | grep -v '"event"' | tail -n +2 |
    sed -E 's/.*"tokens_per_s":([0-9.e+-]+).*/\1/' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  label=$ranks
  [[ $row == 1s ]] && label="1 (sharded)"
  awk -v r="$label" -v th="$threads" -v c="$ctx" -v w="$global" -v t="$median" \
    'BEGIN {printf "| %11s | %12d | %7d | %12d | %15.0f | %13.3f |\n", r, th, c, w, t, w * c / t}'
done
