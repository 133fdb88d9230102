#!/usr/bin/env bash
# How models/kjv-tiny was made, with this engine only: a randomly initialised Llama-2-shaped
# model (config.json: 4 layers, hidden 128, 4 heads, vocab 2000, max_position_embeddings 128)
# trained from scratch at context 128 on the demo corpus, every tensor trained
# (--lora-rank 0 --trainable all). The tokenizer is a 2000-piece SentencePiece unigram model
# trained on the same text (spm_train --vocab_size=2000 --model_type=unigram
# --byte_fallback=true --split_digits=true). About 15 minutes on 2 cores.
# Usage: scripts/pretrain_demo_model.sh WORK_DIR   (writes WORK_DIR/model/)
set -euo pipefail
work=${1:?usage: $0 WORK_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/make_kjv_corpus.sh" "$work/corpus"
"$root/init_model" --config "$root/models/kjv-tiny/config.json" --out "$work/init" \
  --tokenizer "$root/models/kjv-tiny/tokenizer.model" --seed 1
"$root/train_longlora" -m "$work/init" --data "$work/corpus/train.shard" -ctx 128 --full-attn \
  --lora-rank 0 --trainable all --lr 3e-3 --schedule cosine --warmup 50 --grad-accum 8 \
  --steps 1500 --seed 1 --save-every 500 --out "$work/pretrain"
# The trained tensors are the whole model: config + weights (+ tokenizer) form an HF dir.
mkdir -p "$work/model"
cp "$root/models/kjv-tiny/config.json" "$root/models/kjv-tiny/tokenizer.model" "$work/model/"
cp "$work/pretrain/trainable_params.safetensors" "$work/model/model.safetensors"
echo "pretrained model: $work/model"
