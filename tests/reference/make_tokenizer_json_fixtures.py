#!/usr/bin/env python3
"""Make the tokenizer.json fixtures: small tokenizers configured like the real families', and the
ids the Hugging Face `tokenizers` library gives for the King James Bible and a Unicode stress text.

Output: tests/fixtures/tokenizer_json/<name>/ for each name below, each with
  tokenizer.json         the tokenizer (trained here: there is no network to the HF hub)
  tokenizer_config.json  bos_token / eos_token / add_bos_token (+ the family's real chat template)
  expected.json          the library's ids and decoded text for both texts (format below)
and tests/fixtures/tokenizer_json/chat/<family>.json: transformers' apply_chat_template tokens
for the records of chat/records.json (llama3: Meta-Llama-3-8B-Instruct's template; chatml:
Qwen2.5-Instruct's template).

  llama3           byte-level BPE: Split(Llama-3 regex) + ByteLevel, ignore_merges, Llama-3's
                   special tokens (ids after the trained vocabulary), BOS added by the template
  qwen2            byte-level BPE: NFC + Split(Qwen2 regex) + ByteLevel, <|endoftext|>,
                   <|im_start|>, <|im_end|> and non-special added tokens, no BOS
  nemo             byte-level BPE: Split(Mistral-Nemo's tekken regex) + ByteLevel, control
                   tokens <unk> <s> </s> [INST] ... at ids 0.. inside the model vocabulary
  llama2_legacy    Llama-2 as transformers converts it (legacy=True): Prepend + Replace
                   normalizers, BPE with byte_fallback, Replace/ByteFallback/Fuse/Strip decoders
  llama2_metaspace the same vocabulary with the Metaspace pre-tokenizer (prepend_scheme first),
                   as converted with legacy=False
The two Llama-2 forms are built from tests/fixtures/tokenizer/tokenizer.model the way
transformers' LlamaConverter builds them (transformers 5.24's converter fails on that path).

expected.json: {"format": "ll-tokenizer-expected", "version": 1, "texts": {NAME: {...}}} with,
per text, "count" (ids), "fnv1a64" (FNV-1a 64 over the ids as little-endian uint32, hex),
"block" and "block_fnv1a64" (the same per block of ids, to say where a mismatch starts),
"head" (the first ids), "decoded_fnv1a64" (FNV-1a 64 over the UTF-8 bytes of
decode(ids, skip_special_tokens=False)) and, for the stress text, "ids" and "decoded" in full.
The texts: "kjv" = `bible gen1:1-rev22:21` (Debian's bible-kjv), "stress" = stress.txt read as
bytes and decoded with Python's errors="replace" (invalid UTF-8 -> U+FFFD per maximal subpart),
which is what the engine does with the same bytes.

Needs: tokenizers (0.23.3 used), sentencepiece, transformers + jinja2 (5.24.0 used) for the chat
fixture. Run from anywhere: python3 tests/reference/make_tokenizer_json_fixtures.py
"""
import json
import os
import subprocess

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer_json")
SP_MODEL = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.model")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Mistral-Nemo's (tekken) pattern: case-aware words, single digits.
NEMO_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
              r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
              r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Meta-Llama-3-8B-Instruct's chat_template.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Qwen2.5-Instruct's chat_template.
QWEN25_CHAT_TEMPLATE = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"


def kjv_text():
    return subprocess.run(["bible", "gen1:1-rev22:21"], check=True, capture_output=True).stdout.decode()


def stress_text():
    with open(os.path.join(OUT, "stress.txt"), "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def training_lines():
    # Half the Bible and the stress text: merges for English and for the other scripts.
    lines = kjv_text().splitlines(keepends=True)
    return lines[: len(lines) // 2] + stress_text().splitlines(keepends=True) * 20


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def ids_bytes(ids):
    return b"".join(i.to_bytes(4, "little") for i in ids)


def byte_level_bpe(regex, vocab_size, ignore_merges, normalizer=None, special_tokens=()):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(special_tokens))
    tok.train_from_iterator(training_lines(), trainer)
    return tok


def make_llama3():
    tok = byte_level_bpe(LLAMA3_REGEX, 1000, True)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(3, 8)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    # Meta-Llama-3-8B-Instruct: the instruct EOS is <|eot_id|>; BOS comes from the post-processor.
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "chat_template": LLAMA3_CHAT_TEMPLATE, "model_max_length": 8192,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config


def make_qwen2():
    tok = byte_level_bpe(QWEN2_REGEX, 1000, False, normalizers.NFC())
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                      "<|object_ref_start|>", "<|vision_pad|>"]])
    # Qwen2.5 ships <tool_call> and </tool_call> as added tokens that are not special.
    tok.add_tokens([AddedToken(s, special=False, normalized=False)
                    for s in ["<tool_call>", "</tool_call>"]])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    config = {"add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "chat_template": QWEN25_CHAT_TEMPLATE,
              "errors": "replace", "model_max_length": 131072,
              "tokenizer_class": "Qwen2Tokenizer"}
    return tok, config


def make_nemo():
    # Mistral-Nemo: the control tokens come first (ids 0..), inside the model's vocabulary.
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]"]
    tok = byte_level_bpe(NEMO_REGEX, 1000, False, special_tokens=specials)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 1)])
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>",
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config


def sp_vocab_and_merges():
    # transformers' SentencePieceExtractor.extract (4.x), with scores: merges ordered by the
    # merged piece's score (higher first), then by the left and right ids.
    sp = spm.SentencePieceProcessor(model_file=SP_MODEL)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    merges = []
    for piece, score in scores.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: m[2], reverse=True)
    return sp, vocab, [(a, b) for a, b, _ in merges]


def make_llama2(legacy):
    sp, vocab, merges = sp_vocab_and_merges()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True, dropout=None))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(sp.id_to_piece(i), special=True, normalized=False)
                            for i in (0, 1, 2)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
              "eos_token": "</s>", "unk_token": "<unk>", "legacy": legacy,
              "tokenizer_class": "LlamaTokenizer"}
    return tok, config


def expected(tok, text, full):
    ids = tok.encode(text, add_special_tokens=False).ids
    decoded = tok.decode(ids, skip_special_tokens=False)
    block = 4096
    out = {"count": len(ids), "fnv1a64": fnv1a64(ids_bytes(ids)), "block": block,
           "block_fnv1a64": [fnv1a64(ids_bytes(ids[i:i + block]))
                             for i in range(0, len(ids), block)],
           "head": ids[:200], "decoded_fnv1a64": fnv1a64(decoded.encode("utf-8")),
           "round_trip": decoded == text}
    if full:
        out["ids"] = ids
        out["decoded"] = decoded
    return out


def write_json(path, obj, indent=None):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


CHAT_RECORDS = [
    {"instruction": "Who begat Enos?", "output": "Seth begat Enos."},
    {"instruction": "Summarize the verse.", "input": "In the beginning God created the heaven "
     "and the earth.", "output": "God made everything at the start."},
    {"system": "You answer in one word.", "instruction": "Colour of the sky?",
     "output": "Blue"},
    {"instruction": "  Padded question with spaces \n", "input": "",
     "output": "\n An answer with leading and trailing whitespace.  \n"},
    {"instruction": "Translate: 中文分词 😀 e\u0301", "input": "<|im_start|> inside text",
     "output": "Unicode: 日本語 👍🏽 <|eot_id|> done"},
]


def chat_messages(record):
    # The record -> messages mapping documented in docs/formats/sft-records.md.
    user = record["instruction"]
    if record.get("input"):
        user += "\n" + record["input"]
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    messages.append({"role": "user", "content": user})
    return messages, {"role": "assistant", "content": record["output"]}


def make_chat_fixture(family, tok_dir):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    examples = []
    for record in CHAT_RECORDS:
        prompt_messages, answer = chat_messages(record)
        full = tokenizer.apply_chat_template(prompt_messages + [answer], tokenize=False)
        prompt = tokenizer.apply_chat_template(prompt_messages, tokenize=False,
                                               add_generation_prompt=True)
        assert full.startswith(prompt), (family, full, prompt)
        # apply_chat_template(tokenize=True) tokenizes the rendered text without adding specials.
        tokens = tokenizer(full, add_special_tokens=False)["input_ids"]
        direct = tokenizer.apply_chat_template(prompt_messages + [answer], tokenize=True)
        if isinstance(direct, dict) or hasattr(direct, "keys"):
            direct = direct["input_ids"]
        assert list(direct) == tokens, (family, direct, tokens)
        examples.append({"text": full, "prompt_text": prompt, "tokens": tokens,
                         "prompt_tokens": tokenizer(prompt, add_special_tokens=False)["input_ids"]})
    return {"format": "ll-chat-expected", "version": 1, "family": family,
            "tokenizer": os.path.basename(tok_dir), "examples": examples}


def main():
    kjv, stress = kjv_text(), stress_text()
    builders = {"llama3": make_llama3, "qwen2": make_qwen2, "nemo": make_nemo,
                "llama2_legacy": lambda: make_llama2(True),
                "llama2_metaspace": lambda: make_llama2(False)}
    for name, build in builders.items():
        tok, config = build()
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        write_json(os.path.join(d, "tokenizer_config.json"), config, indent=2)
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))  # what the engine reads
        write_json(os.path.join(d, "expected.json"),
                   {"format": "ll-tokenizer-expected", "version": 1,
                    "tokenizers_version": __import__("tokenizers").__version__,
                    "vocab_size": tok.get_vocab_size(with_added_tokens=True),
                    "texts": {"kjv": expected(tok, kjv, False),
                              "stress": expected(tok, stress, True)}})
        print(f"{name}: vocab {tok.get_vocab_size()}, kjv {len(kjv)} bytes")
    os.makedirs(os.path.join(OUT, "chat"), exist_ok=True)
    write_json(os.path.join(OUT, "chat", "records.json"), CHAT_RECORDS, indent=1)
    for family, tok_name in (("llama3", "llama3"), ("chatml", "qwen2")):
        write_json(os.path.join(OUT, "chat", f"{family}.json"),
                   make_chat_fixture(family, os.path.join(OUT, tok_name)))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
