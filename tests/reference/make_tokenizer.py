#!/usr/bin/env python3
"""Train the tiny SentencePiece model used by the tests and the README's demo.

Output: tests/fixtures/tokenizer/tokenizer.model (a few KB, committed).

It has Llama-2's layout (unk 0, bos 1, eos 2, no pad, BPE with byte fallback, digits split,
identity normalization) with a 512-piece vocabulary, trained on the license texts in
/usr/share/common-licenses (shipped by Debian's base-files, so every machine has them).
Training is single-threaded over the full, unshuffled input so that the same input gives the
same model. The tests do not need Python; rerun this only to regenerate the fixture:

    pip install sentencepiece
    python3 tests/reference/make_tokenizer.py
"""
import io
import os
import sys

import sentencepiece as spm

LICENSE_DIR = "/usr/share/common-licenses"
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer")


def corpus_lines():
    # Several names are symlinks to the same text (GPL -> GPL-3); read each file once.
    seen = set()
    lines = []
    for name in sorted(os.listdir(LICENSE_DIR)):
        real = os.path.realpath(os.path.join(LICENSE_DIR, name))
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, encoding="utf-8", errors="replace") as f:
            lines.extend(line.rstrip("\n") for line in f if line.strip())
    return lines


def main():
    lines = corpus_lines()
    if not lines:
        sys.exit(f"error: no text found in {LICENSE_DIR}; install Debian's base-files")
    os.makedirs(OUT_DIR, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=512,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # Llama-2's normalizer settings.
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        # Determinism: one thread, every sentence, no shuffling.
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    path = os.path.join(OUT_DIR, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    print(f"wrote {os.path.normpath(path)} ({len(model.getvalue())} bytes, {len(lines)} lines)")


if __name__ == "__main__":
    main()
