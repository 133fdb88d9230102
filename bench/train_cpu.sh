#!/usr/bin/env bash
# CPU training throughput of train_longlora on the demo model (models/kjv-tiny), LoRA+ with
# layer-wise recomputation, S2-Attn (G = N/4) vs full attention, at two contexts.
# tokens/s = tokens processed per optimizer step / step time, median over steps 2..STEPS
# (step 1 is warm-up). Usage: bench/train_cpu.sh [STEPS]   (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/make_kjv_corpus.sh "$work/corpus" > /dev/null 2>&1
printf "| context | attention | tokens/step | median tokens/s | median step s |\n"
printf "|--------:|-----------|------------:|----------------:|--------------:|\n"
for ctx in 512 2048; do
  for mode in s2 full; do
    extra=()
    [[ $mode == full ]] && extra=(--full-attn)
    ./train_longlora --device cpu -m models/kjv-tiny --data "$work/corpus/train.shard" -ctx "$ctx" \
      --steps "$steps" --grad-accum 2 --lr 1e-4 --warmup 0 --out "$work/$ctx-$mode" \
      "${extra[@]}" > "$work/log" 2>&1 || { cat "$work/log"; exit 1; }
    # Median tokens_per_s of steps 2..STEPS from the metrics log.
    median=$(grep '"step"' "$work/$ctx-$mode/metrics.jsonl" | tail -n +2 |
      sed -E 's/.*"tokens_per_s":([0-9.e+-]+).*/\1/' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v c="$ctx" -v m="$mode" -v t="$median" \
      'BEGIN {printf "| %7d | %-9s | %11d | %15.0f | %13.3f |\n", c, (m == "s2" ? "S2-Attn" : "full"), 2 * c, t, 2 * c / t}'
  done
done
