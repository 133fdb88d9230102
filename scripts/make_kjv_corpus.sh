#!/usr/bin/env bash
# The demo corpus: the King James Bible from Debian's bible-kjv package (public domain, as the
# paper's PG19 books are), tokenized with the demo model's tokenizer.
#   train: Genesis .. John and Romans .. Revelation (1.16M tokens)
#   valid: Acts, held out (39k tokens)
# Usage: scripts/make_kjv_corpus.sh OUT_DIR
set -euo pipefail
out=${1:?usage: $0 OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tok="$root/models/kjv-tiny/tokenizer.model"
if ! command -v bible >/dev/null; then
  echo "make_kjv_corpus: the 'bible' program is missing; run 'make setup' (installs bible-kjv)" >&2
  exit 1
fi
mkdir -p "$out"
[[ -s "$out/train.shard" && -s "$out/valid.shard" ]] && exit 0
bible gen1:1-jn21:25 > "$out/train_a.txt"
bible rom1:1-rev22:21 > "$out/train_b.txt"
bible acts1:1-acts28:31 > "$out/valid.txt"
"$root/tokenize" --tokenizer "$tok" -o "$out/train.shard" "$out/train_a.txt" "$out/train_b.txt"
"$root/tokenize" --tokenizer "$tok" -o "$out/valid.shard" "$out/valid.txt"
