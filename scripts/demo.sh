#!/usr/bin/env bash
# The quick start's main job: LongLoRA on a built-in tiny Llama-2-shaped model, on the CPU.
#
#   model   models/kjv-tiny: 4 layers, hidden 128, vocab 2000, pretrained by this engine at a
#           128-token context on the King James Bible (scripts/pretrain_demo_model.sh)
#   data    the King James Bible from Debian's bible-kjv package; Acts is held out
#   job     extend the context 4x (128 -> 512) with LoRA+ (r 8 on q,k,v,o; embeddings and norms
#           trained; position interpolation factor 4), once with S2-Attn (G = 128) and once
#           with full attention, then perplexity on Acts at 128, 256 and 512 tokens
#
# Set DEMO_STEPS to change the number of training steps (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo
model=models/kjv-tiny
steps=${DEMO_STEPS:-60}
mkdir -p "$out"
start=$(date +%s)

echo "== corpus: the King James Bible (bible-kjv), tokenized"
scripts/make_kjv_corpus.sh "$out/corpus"

# ppl NAME MODEL_ARGS SEQ CONTEXT -> prints the perplexity (non-overlapping windows)
ppl() {
  local name=$1 args=$2 seq=$3 ctx=$4
  ./ppl_eval $args --data "$out/corpus/valid.shard" --seq-len "$seq" --context-size "$ctx" \
    --protocol non-overlapping --json "$out/ppl_${name}_${seq}.json" > "$out/ppl_${name}_${seq}.log" 2>&1
  sed -n 's/^perplexity *//p' "$out/ppl_${name}_${seq}.log"
}

train() {
  local name=$1
  shift
  echo "== LongLoRA fine-tune to 512 tokens: $name ($steps steps of 4 x 512 tokens)"
  rm -rf "$out/$name"
  ./train_longlora -m "$model" --data "$out/corpus/train.shard" -ctx 512 --steps "$steps" \
    --grad-accum 4 --lr 2e-3 --warmup 5 --seed 1 --out "$out/$name" "$@" 2>&1 |
    grep -v '^train step' || true
  [[ -s "$out/$name/adapter_model.safetensors" ]]
}

train s2attn
train fullattn --full-attn

echo "== perplexity on Acts (held out), non-overlapping windows"
declare -A table
for seq in 128 256 512; do
  table[base,$seq]=$(ppl base "-m $model" "$seq" 128)
  table[pi,$seq]=$(ppl pi "-m $model" "$seq" 512)
  table[s2,$seq]=$(ppl s2 "-m $model --lora $out/s2attn" "$seq" 512)
  table[full,$seq]=$(ppl full "-m $model --lora $out/fullattn" "$seq" 512)
done
{
  echo "| model (evaluated with dense attention)                  | ppl @128 | ppl @256 | ppl @512 |"
  echo "|---------------------------------------------------------|---------:|---------:|---------:|"
  printf "| %-55s | %8.2f | %8.2f | %8.2f |\n" "base, pretrained at 128 (no interpolation)" \
    "${table[base,128]}" "${table[base,256]}" "${table[base,512]}"
  printf "| %-55s | %8.2f | %8.2f | %8.2f |\n" "base + position interpolation x4, not fine-tuned" \
    "${table[pi,128]}" "${table[pi,256]}" "${table[pi,512]}"
  printf "| %-55s | %8.2f | %8.2f | %8.2f |\n" "LongLoRA: S2-Attn fine-tune to 512 ($steps steps)" \
    "${table[s2,128]}" "${table[s2,256]}" "${table[s2,512]}"
  printf "| %-55s | %8.2f | %8.2f | %8.2f |\n" "LoRA+ with full attention to 512 ($steps steps)" \
    "${table[full,128]}" "${table[full,256]}" "${table[full,512]}"
} | tee "$out/results.md"
echo "== done in $(( $(date +%s) - start ))s; adapters, metrics and loss curves in $out/s2attn and $out/fullattn"
