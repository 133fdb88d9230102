#!/usr/bin/env bash
# The quick start's main job, on the built-in tiny Llama (tests/fixtures/tiny_llama, random
# weights, 512-token SentencePiece vocabulary) and text every Debian machine has
# (/usr/share/common-licenses): tokenize, convert to our .bin, measure perplexity on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
model=tests/fixtures/tiny_llama
out=demo
mkdir -p "$out"

echo "== tokenize the GPL-3 and Apache-2.0 texts into a token shard"
./tokenize -m "$model" -o "$out/licenses.shard" \
  /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0

echo "== convert the Hugging Face directory to our single-file .bin"
./convert "$model" -o "$out/tiny_llama.bin"

echo "== perplexity, paper protocol, from the HF directory"
./ppl_eval -m "$model" --data "$out/licenses.shard" --seq-len 128 --json "$out/ppl_hf.json"

echo "== the same from the .bin, and with position interpolation to 256 tokens"
./ppl_eval -m "$out/tiny_llama.bin" --data "$out/licenses.shard" --seq-len 128 \
  --json "$out/ppl_bin.json"
./ppl_eval -m "$out/tiny_llama.bin" --data "$out/licenses.shard" --seq-len 256 \
  --context-size 256 --protocol non-overlapping --json "$out/ppl_pi.json"
echo "== results in $out/"
