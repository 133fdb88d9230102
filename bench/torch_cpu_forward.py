#!/usr/bin/env python3
"""The PyTorch side of bench_cpu_forward: the same small random Llama in Hugging Face
transformers, forward with labels (loss), fp32 on the CPU, median of repeated runs."""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                      max_position_embeddings=4096, rms_norm_eps=1e-5,
                      attn_implementation=a.attn)
    model = LlamaForCausalLM(cfg).float().eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention {a.attn}")
    print(f"{'seq_len':>8} {'median_s':>12} {'tokens/s':>12}")
    rows = []
    with torch.inference_mode():
        for n in a.seq_lens:
            ids = torch.randint(0, cfg.vocab_size, (1, n))
            model(input_ids=ids, labels=ids)  # warm-up
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                model(input_ids=ids, labels=ids)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            print(f"{n:>8} {med:>12.4f} {n / med:>12.1f}")
            rows.append({"seq_len": n, "median_s": med, "tokens_per_s": n / med})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
