#!/usr/bin/env python3
"""Write tests/fixtures/rope_reference.safetensors: transformers' own RoPE frequencies and cos/sin
for each scaling type (default, linear, dynamic, yarn, llama3).

kernels/rope_scaling.cpp and the CPU rope kernel are compared against these values by
tests/kernels/test_rope_scaling.cpp; the test does not need Python. Regenerate with

    python3 tests/reference/make_rope_fixtures.py

Each case builds a transformers LlamaConfig with the case's rope_parameters, makes a fresh
LlamaRotaryEmbedding (the class the model runs) and calls it once with position_ids = the case's
positions, whose largest is seq_len - 1: for dynamic that is the forward-time update
(dynamic_rope_update, seq_len a tensor), for the others the init function's values.

Tensors (float32), for each case NAME:
  NAME.inv_freq  [hd/2]     rotary.inv_freq after the call
  NAME.powers    [hd/2]     base ** (arange(0, hd, 2) / hd) as torch computes it (base: theta, or
                            dynamic's enlarged fp32 base), the values every type starts from
  NAME.cos       [P, hd/2]  cos of the call (the first half; the second repeats it)
  NAME.sin       [P, hd/2]
Metadata: "cases", a JSON list of {name, rope_parameters (as given to the config), rope_theta,
head_dim, max_position_embeddings, seq_len, positions, attention_scaling, effective_base};
"versions": torch and transformers versions.

Self-checks (exit non-zero on failure): inv_freq equals the init function from
ROPE_INIT_FUNCTIONS called directly (with seq_len for dynamic); cos/sin equal
cos(position * inv_freq) * attention_scaling in fp32; for default and linear inv_freq equals
1 / powers (/ factor), so the powers are the ones transformers used.
"""
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "rope_reference.safetensors"))

LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
LLAMA32 = dict(LLAMA31, factor=32.0)
QWEN_YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}

# name, rope_parameters (without rope_theta), rope_theta, head_dim, max_position_embeddings,
# seq_len (last position + 1), positions.
CASES = [
    ("default_hd16", {"rope_type": "default"}, 10000.0, 16, 128, 128, [0, 1, 77, 127]),
    ("linear_hd64", {"type": "linear", "factor": 4.0}, 10000.0, 64, 4096, 16384,
     [0, 3, 4095, 16383]),
    ("linear_hd128_25", {"rope_type": "linear", "factor": 25.0}, 10000.0, 128, 4096, 100000,
     [0, 1, 5000, 99999]),
    # dynamic: below, at and above max_position_embeddings (2048).
    ("dynamic_hd64_below", {"rope_type": "dynamic", "factor": 2.0}, 10000.0, 64, 2048, 1000,
     [0, 1, 500, 999]),
    ("dynamic_hd64_at", {"rope_type": "dynamic", "factor": 2.0}, 10000.0, 64, 2048, 2048,
     [0, 1, 2047]),
    ("dynamic_hd64_above", {"rope_type": "dynamic", "factor": 2.0}, 10000.0, 64, 2048, 5000,
     [0, 1, 2048, 4999]),
    ("dynamic_hd128_far", {"rope_type": "dynamic", "factor": 3.5}, 500000.0, 128, 4096, 100001,
     [0, 7, 60000, 100000]),
    # Llama-3.1 8B (head_dim 128) and Llama-3.2 1B (head_dim 64) as they ship.
    ("llama31_hd128", LLAMA31, 500000.0, 128, 131072, 131072, [0, 1, 8191, 131071]),
    ("llama32_hd64", LLAMA32, 500000.0, 64, 131072, 131072, [0, 2, 40000, 131071]),
    ("llama3_hd16", {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0,
                     "high_freq_factor": 8.0, "original_max_position_embeddings": 256},
     10000.0, 16, 1024, 1024, [0, 1, 300, 1023]),
    # Qwen2.5 with its documented yarn block (attention factor from the factor).
    ("yarn_qwen_hd128", QWEN_YARN, 1000000.0, 128, 32768, 131072, [0, 1, 32767, 131071]),
    ("yarn_attn_factor_hd64", dict(QWEN_YARN, original_max_position_embeddings=4096,
                                    attention_factor=1.25, beta_fast=16, beta_slow=2),
     10000.0, 64, 4096, 16384, [0, 9, 4096, 16383]),
    ("yarn_mscale_hd16", {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings":
                          512, "mscale": 0.707, "mscale_all_dim": 1.0, "truncate": False},
     10000.0, 16, 4096, 4096, [0, 1, 1000, 4095]),
    ("yarn_truncate_hd128", {"rope_type": "yarn", "factor": 2.5, "original_max_position_embeddings":
                             4096, "truncate": True}, 10000.0, 128, 4096, 10240,
     [0, 3, 7000, 10239]),
]


def make_config(params, theta, hd, mpe):
    rope = dict(params)
    rope["rope_theta"] = theta
    heads = 4
    return LlamaConfig(hidden_size=hd * heads, num_attention_heads=heads, num_key_value_heads=heads,
                       head_dim=hd, intermediate_size=32, num_hidden_layers=1, vocab_size=32,
                       max_position_embeddings=mpe, rope_parameters=rope)


def effective_base(params, theta, hd, mpe, seq_len):
    """The base the powers use, as transformers computes it (dynamic: its forward-time path)."""
    if params.get("rope_type", params.get("type")) != "dynamic" or seq_len <= mpe:
        return torch.tensor(theta, dtype=torch.float32), theta
    factor = params["factor"]
    s = torch.tensor(seq_len, dtype=torch.int64)
    s = torch.maximum(s, torch.tensor(mpe, dtype=torch.int64))
    base = theta * ((factor * s / mpe) - (factor - 1)) ** (hd / (hd - 2))
    return base, float(base)


def main():
    torch.set_num_threads(1)
    tensors, cases, failures = {}, [], []
    for name, params, theta, hd, mpe, seq_len, positions in CASES:
        assert max(positions) == seq_len - 1
        config = make_config(params, theta, hd, mpe)
        rotary = LlamaRotaryEmbedding(config)
        x = torch.zeros(1, dtype=torch.float32)
        pos = torch.tensor([positions], dtype=torch.int64)
        cos, sin = rotary(x, pos)
        inv_freq = rotary.inv_freq.detach().clone().float()
        scaling = float(rotary.attention_scaling)
        rope_type = config.rope_parameters["rope_type"]

        # Self-check 1: the init function called directly gives the same inv_freq.
        if rope_type != "default":
            direct, direct_scaling = ROPE_INIT_FUNCTIONS[rope_type](
                make_config(params, theta, hd, mpe), "cpu",
                seq_len=torch.tensor(seq_len) if rope_type == "dynamic" else None)
            if not torch.equal(direct.float(), inv_freq) or float(direct_scaling) != scaling:
                failures.append(f"{name}: init function differs from the rotary class")
        # Self-check 2: cos/sin are cos(p * inv_freq) * attention_scaling in fp32.
        angle = pos[0, :, None].float() * inv_freq[None, :]
        if not (torch.equal(cos[0, :, : hd // 2], angle.cos() * scaling)
                and torch.equal(sin[0, :, : hd // 2], angle.sin() * scaling)):
            failures.append(f"{name}: cos/sin are not cos(p * inv_freq) * attention_scaling")
        base_t, base = effective_base(params, theta, hd, mpe, seq_len)
        powers = base_t ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)
        # Self-check 3: where the formula allows, inv_freq is 1 / powers (/ factor).
        if rope_type in ("default", "linear", "dynamic"):
            want = 1.0 / powers
            if rope_type == "linear":
                want = want / params["factor"]
            if not torch.equal(want, inv_freq):
                failures.append(f"{name}: inv_freq is not 1 / powers")

        tensors[f"{name}.inv_freq"] = inv_freq.contiguous()
        tensors[f"{name}.powers"] = powers.float().contiguous()
        tensors[f"{name}.cos"] = cos[0, :, : hd // 2].float().contiguous()
        tensors[f"{name}.sin"] = sin[0, :, : hd // 2].float().contiguous()
        cases.append({"name": name, "rope_parameters": params, "rope_theta": theta,
                      "head_dim": hd, "max_position_embeddings": mpe, "seq_len": seq_len,
                      "positions": positions, "attention_scaling": scaling,
                      "effective_base": base})
        print(f"{name:24s} {rope_type:8s} attention_scaling {scaling:.6g} "
              f"inv_freq[1] {inv_freq[1].item():.9g}")

    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    metadata = {"cases": json.dumps(cases),
                "versions": f"torch {torch.__version__} transformers {transformers.__version__}"}
    save_file(tensors, OUT, metadata=metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
