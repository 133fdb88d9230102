#!/usr/bin/env python3
"""Encode throughput of the Hugging Face `tokenizers` library (one thread, best of N) on the
same text and tokenizer.json files as ./bench_tokenizer, for bench/RESULTS.md.

    python3 bench/tokenizers_encode.py [--repeats 3] [--text FILE] [--lines]
"""
import argparse
import os
import subprocess
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # encode() of one text is sequential anyway
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer  # noqa: E402

FILES = ["tests/fixtures/tokenizer_json/llama3/tokenizer.json",
         "tests/fixtures/tokenizer_json/qwen2/tokenizer.json",
         "tests/fixtures/tokenizer_json/llama2_legacy/tokenizer.json",
         "tests/fixtures/tokenizer_json/llama2_metaspace/tokenizer.json"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text", default="")
    ap.add_argument("--lines", action="store_true",
                    help="encode each line on its own (short texts) instead of one text")
    args = ap.parse_args()
    if args.text:
        with open(args.text, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
    else:
        text = subprocess.run(["bible", "gen1:1-rev22:21"], check=True,
                              capture_output=True).stdout.decode()
    size = len(text.encode("utf-8"))
    pieces = text.splitlines(keepends=True) if args.lines else [text]
    print(f"text: {size} bytes in {len(pieces)} encode calls; tokenizers "
          f"{__import__('tokenizers').__version__}, best of {args.repeats}")
    for path in FILES:
        tok = Tokenizer.from_file(path)
        best, n = 1e30, 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            n = sum(len(tok.encode(p, add_special_tokens=False).ids) for p in pieces)
            best = min(best, time.perf_counter() - t0)
        print(f"{path:<62} {n:>10} {best:>9.3f} {size / 1e6 / best:>8.2f}")


if __name__ == "__main__":
    main()
