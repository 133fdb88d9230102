#!/usr/bin/env bash
# The README's "Model families" examples, one per family, on the CPU in about 10 s:
#
#   models/families/llama3-tiny   Llama-3.x layout: GQA, explicit head_dim, tied embeddings,
#                                 rope_scaling llama3 (original context 32, max 128), eos list
#   models/families/qwen2.5-tiny  Qwen2.5: q/k/v biases, tied embeddings, rope_theta 1e6,
#                                 embedding rows beyond the tokenizer's ids
#   models/families/mistral-tiny  Mistral(-Nemo): head_dim 16 != hidden 128 / 4 heads,
#                                 sliding_window null
#
# each with its family's byte-level BPE tokenizer.json (tests/fixtures/tokenizer_json). For each:
# random weights (init_model), the King James Bible tokenized (book of Ruth held out), the
# memory plan of the real 7B/8B model at 131072 tokens (--dry-run, from models/configs), a short
# LongLoRA run to 512 tokens (4x the tiny model's context) with the family's RoPE scaling, and
# the perplexity on Ruth before and after; for Llama-3 also the merged export (export_hf) and a
# short --sft run with its chat template.
# The weights are random, so the numbers show the mechanics, not a model's quality.
#
# Usage: scripts/family_examples.sh [OUT_DIR]   (default demo/families; the tools at the
# repository root, from `make tools`, or in TOOLS_DIR when set: the test runs its build's)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-demo/families}
bin=${TOOLS_DIR:-.}
mkdir -p "$out"
start=$(date +%s)

# Prints a command, runs it, then prints its output without the progress lines (which a
# terminal shows on stderr as they happen).
run() {
  echo "\$ $*"
  local rc=0
  "$@" > "$out/last.log" 2>&1 || rc=$?
  grep -v -e '^train step' -e '^ppl_eval windows' -e '^tokenize (MiB)' -e '^note: finished pass' \
    "$out/last.log" || true
  return "$rc"
}

if ! command -v bible >/dev/null; then
  echo "family_examples: the 'bible' program is missing; run 'make setup' (installs bible-kjv)" >&2
  exit 1
fi
text=$out/text
mkdir -p "$text"
bible gen1:1-judg21:25 > "$text/train_a.txt"
bible 1sam1:1-rev22:21 > "$text/train_b.txt"
bible ruth1:1-ruth4:22 > "$text/ruth.txt"

# example FAMILY REAL_CONFIG [train_longlora options...]
example() {
  local family=$1 real=$2
  shift 2
  local m=$out/$family
  echo "== $family"
  rm -rf "$m"
  run "$bin/init_model" --config "models/families/$family/config.json" --out "$m"
  run "$bin/tokenize" -m "$m" -o "$m/train.shard" "$text/train_a.txt" "$text/train_b.txt"
  run "$bin/tokenize" -m "$m" -o "$m/ruth.shard" "$text/ruth.txt"
  run "$bin/train_longlora" -m "models/configs/$real" -ctx 131072 --device cuda --dry-run
  run "$bin/train_longlora" -m "$m" --data "$m/train.shard" -ctx 512 "$@" --steps 20 --grad-accum 2 \
    --lr 2e-3 --warmup 2 --seed 1 --out "$m/longlora"
  run "$bin/ppl_eval" -m "$m" --data "$m/ruth.shard" --seq-len 512 --protocol non-overlapping
  run "$bin/ppl_eval" -m "$m" --lora "$m/longlora" --data "$m/ruth.shard" --seq-len 512 \
    --protocol non-overlapping
}

example llama3-tiny llama-3.1-8b
echo "== llama3-tiny: the adapter merged into a Hugging Face directory, evaluated alone"
rm -rf "$out/llama3-tiny-512"
run "$bin/export_hf" -m "$out/llama3-tiny" --lora "$out/llama3-tiny/longlora" --out "$out/llama3-tiny-512"
run "$bin/ppl_eval" -m "$out/llama3-tiny-512" --data "$out/llama3-tiny/ruth.shard" --seq-len 512 \
  --protocol non-overlapping
echo "== llama3-tiny: supervised fine-tuning with the Llama-3 chat template"
run "$bin/train_longlora" -m "$out/llama3-tiny" --sft tests/fixtures/sft/tiny_alpaca.json \
  --chat-template llama3 -ctx 256 --steps 10 --lr 2e-3 --warmup 2 --seed 1 \
  --out "$out/llama3-tiny/sft"
example qwen2.5-tiny qwen2.5-7b --rope-scaling yarn
example mistral-tiny mistral-7b-v0.3
echo "== done in $(($(date +%s) - start))s; models, shards and adapters in $out"
