#!/usr/bin/env python3
"""Write the small reference fixtures that the C++ tests compare against.

Everything here comes from PyTorch + Hugging Face transformers (or from plain PyTorch written in
this file), never from our C++ code, so the fixtures are an independent reference. The tests do
not need Python; rerun this only to regenerate the fixtures (see tests/reference/README.md):

    python3 tests/reference/make_fixtures.py

Outputs (all under tests/fixtures/):
  tiny_llama/                   random LlamaForCausalLM (2 layers, hidden 64, GQA 4/2, vocab 512)
                                config.json + model.safetensors (+ tokenizer.model if present)
  tiny_llama_rope2/             random 1-layer model whose config.json has
                                rope_scaling {"type": "linear", "factor": 2.0}
  tiny_llama_reference.safetensors   tokens, logits, per-position losses, perplexities
  s2attn_reference.safetensors       S2-Attn (segment and roll forms) and dense attention

Deterministic: fixed seeds, float32 on CPU, one thread, deterministic algorithms.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
DIR_A = os.path.join(FIXTURES, "tiny_llama")
DIR_B = os.path.join(FIXTURES, "tiny_llama_rope2")
TOKENIZER = os.path.join(FIXTURES, "tokenizer", "tokenizer.model")
REF_MODEL = os.path.join(FIXTURES, "tiny_llama_reference.safetensors")
REF_S2 = os.path.join(FIXTURES, "s2attn_reference.safetensors")

# Model A: 2 layers, GQA (4 query heads share 2 kv heads), Llama-2 style config.
CONFIG_A = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)
# Model B: 1 layer, MHA, linear RoPE interpolation with factor 2 in its config.json.
ROPE2 = {"type": "linear", "factor": 2.0}
CONFIG_B = dict(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    hidden_act="silu",
)

SEED_A, SEED_B, SEED_TOKENS, SEED_ROPE2_TOKENS, SEED_S2 = 1234, 5678, 42, 43, 7
N_TOKENS = 1100
PAPER_STRIDE = 256  # eval.py's sliding_window


def setup_determinism():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def make_config(base, rope_scaling=None):
    kw = dict(base)
    if rope_scaling is not None:
        kw["rope_scaling"] = dict(rope_scaling)
    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def init_weights(model, seed):
    """Random init, larger than HF's default so the outputs are far from uniform.

    Linear and embedding weights ~ N(0, 0.08^2); RMSNorm weights 1 + 0.1 * N(0, 1). Parameters
    are visited in sorted-name order with one generator, so the result does not depend on
    transformers' own init order.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g, dtype=torch.float32))


def legacy_config_json(path, rope_scaling):
    """Rewrite config.json in the Llama-2 layout (top-level rope_theta and rope_scaling).

    transformers 5 saves RoPE settings as "rope_parameters": {...}; real Llama-2 checkpoints (the
    files our users have) carry "rope_theta" and "rope_scaling" at the top level, so the
    fixtures use that layout. transformers 5 reads it back (checked by reload_and_compare).
    """
    with open(path) as f:
        d = json.load(f)
    rp = d.pop("rope_parameters", None) or {}
    d["rope_theta"] = float(rp.get("rope_theta", 10000.0))
    d["rope_scaling"] = dict(rope_scaling) if rope_scaling is not None else None
    d = {k: d[k] for k in sorted(d)}
    with open(path, "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")


def save_model(model, out_dir, rope_scaling):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    legacy_config_json(os.path.join(out_dir, "config.json"), rope_scaling)
    # Every tensor must be stored as float32.
    for name, t in load_file(os.path.join(out_dir, "model.safetensors")).items():
        assert t.dtype == torch.float32, (name, t.dtype)


def load_model(model_dir, rope_scaling_override=None):
    """Load a fixture directory with transformers; optionally replace its rope_scaling the way
    LongLoRA's eval.py does (config.rope_scaling = {"type": "linear", "factor": s})."""
    with open(os.path.join(model_dir, "config.json")) as f:
        d = json.load(f)
    if rope_scaling_override is not None:
        d["rope_scaling"] = dict(rope_scaling_override)
    cfg = LlamaConfig(**{k: v for k, v in d.items() if k not in ("architectures", "transformers_version")})
    model = LlamaForCausalLM.from_pretrained(
        model_dir, config=cfg, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model


def rope_factor_of(model):
    rp = model.config.rope_parameters or {}
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    return rope_type, float(rp.get("factor", 1.0)) if rope_type == "linear" else 1.0


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids.long().unsqueeze(0)).logits[0].float()


@torch.no_grad()
def independent_forward(sd, cfg, ids, factor):
    """A plain float64 Llama forward written from DESIGN.md section 3 (not from transformers),
    used only to check that transformers interprets the fixture configs as we expect:
    rotate-half RoPE at position p / factor, RMSNorm with rms_norm_eps, GQA h -> h // (H/Hkv),
    SiLU-gated MLP, untied lm_head."""
    sd = {k: v.double() for k, v in sd.items()}
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"]
    hd = D // H
    eps = cfg["rms_norm_eps"]
    N = ids.numel()

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    pos = torch.arange(N, dtype=torch.float64) / factor
    ang = pos[:, None] * inv[None, :]  # [N, hd/2]
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(x):  # x [N, heads, hd]; pairs (i, i + hd/2)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    x = sd["model.embed_tokens.weight"][ids.long()]
    mask = torch.ones(N, N, dtype=torch.bool).tril()
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = rope((h @ sd[p + "self_attn.q_proj.weight"].T).view(N, H, hd))
        k = rope((h @ sd[p + "self_attn.k_proj.weight"].T).view(N, Hkv, hd))
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(N, Hkv, hd)
        out = torch.empty(N, H, hd, dtype=torch.float64)
        for hh in range(H):
            kh = hh // (H // Hkv)
            s = (q[:, hh] @ k[:, kh].T) / math.sqrt(hd)
            s = s.masked_fill(~mask, float("-inf"))
            out[:, hh] = torch.softmax(s, -1) @ v[:, kh]
        x = x + out.reshape(N, D) @ sd[p + "self_attn.o_proj.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = h @ sd[p + "mlp.gate_proj.weight"].T
        up = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    x = rms(x, sd["model.norm.weight"])
    return x @ sd["lm_head.weight"].T


def check_close(name, a, b, tol):
    diff = (a.double() - b.double()).abs().max().item()
    rel = ((a.double() - b.double()).norm() / b.double().norm()).item()
    ok = diff <= tol
    print(f"  check {name}: max|diff| = {diff:.3e}, rel = {rel:.3e} {'OK' if ok else 'FAIL'}")
    if not ok:
        sys.exit(f"error: check {name} failed")


# --------------------------------------------------------------------------------------------
# Perplexity protocols
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def paper_protocol(model, tokens, seq_len, stride=PAPER_STRIDE):
    """LongLoRA eval.py with batch size 1: windows start at range(0, len - seq_len, 256) with the
    last start popped; each window's loss is HF's model(input_ids=w, labels=w).loss (mean CE over
    seq_len - 1 predictions); mean over windows; ppl = exp(mean)."""
    starts = list(range(0, len(tokens) - seq_len, stride))
    starts.pop()
    losses = []
    for s in starts:
        w = tokens[s:s + seq_len].long().unsqueeze(0)
        out = model(input_ids=w, labels=w)
        # Cross-check HF's loss against a CE written here.
        own = F.cross_entropy(out.logits[0, :-1].float(), w[0, 1:], reduction="mean")
        assert abs(own.item() - out.loss.item()) < 1e-5, (own.item(), out.loss.item())
        losses.append(out.loss.item())
    losses_t = torch.tensor(losses, dtype=torch.float64)
    mean = losses_t.mean().item()
    return dict(starts=starts, window_losses=losses, mean_loss=mean, ppl=math.exp(mean))


@torch.no_grad()
def nonoverlap_protocol(model, tokens, seq_len):
    """Windows start at 0, seq_len-1, 2(seq_len-1), ...; each window is tokens[s : s+seq_len]
    (the last one is whatever remains, kept if it has >= 2 tokens) and scores all its
    predictions, so every token after the first is predicted exactly once."""
    n = len(tokens)
    total, count, s = 0.0, 0, 0
    while n - s >= 2:
        w = tokens[s:s + seq_len].long()
        logits = logits_of(model, w)
        total += F.cross_entropy(logits[:-1], w[1:], reduction="sum").double().item()
        count += w.numel() - 1
        s += seq_len - 1
    assert count == n - 1
    mean = total / count
    return dict(mean_loss=mean, ppl=math.exp(mean), tokens_scored=count)


# --------------------------------------------------------------------------------------------
# S2-Attn references (float64, plain PyTorch)
# --------------------------------------------------------------------------------------------

def expand_kv(x, H):
    """[N, Hkv, hd] -> [N, H, hd] with query head h using kv head h // (H // Hkv) (HF repeat_kv)."""
    Hkv = x.shape[1]
    return x.repeat_interleave(H // Hkv, dim=1)


def causal_attn(q, k, v):
    """Dense causal attention, q/k/v [n, H, hd] (kv already expanded), scale 1/sqrt(hd)."""
    n, _, hd = q.shape
    s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v)


def segment_bounds(N, G, shifted):
    """Segment starts/ends: [0,G),[G,2G),... or, shifted, [0,G/2),[G/2,3G/2),..., last one ends
    at N (shorter when ragged)."""
    first = G // 2 if shifted else G
    cuts = [0] + list(range(first, N, G)) + [N]
    return list(zip(cuts[:-1], cuts[1:]))


def s2_segment(q, k, v, G):
    """Official flash-attention path: heads [0,H/2) attend causally inside [0,G),[G,2G),...;
    heads [H/2,H) inside [0,G/2),[G/2,3G/2),...,[..,N). Sliced segment by segment."""
    N, H, hd = q.shape
    k, v = expand_kv(k, H), expand_kv(v, H)
    out = torch.empty_like(q)
    for half, heads in ((False, slice(0, H // 2)), (True, slice(H // 2, H))):
        for a, b in segment_bounds(N, G, half):
            out[a:b, heads] = causal_attn(q[a:b, heads], k[a:b, heads], v[a:b, heads])
    return out


def s2_segment_by_mask(q, k, v, G):
    """Same as s2_segment, written as one masked attention per head (cross-check only)."""
    N, H, hd = q.shape
    k, v = expand_kv(k, H), expand_kv(v, H)
    out = torch.empty_like(q)
    idx = torch.arange(N)
    for h in range(H):
        shifted = h >= H // 2
        seg = (idx + G // 2) // G if shifted else idx // G
        allowed = (seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None])
        s = (q[:, h] @ k[:, h].T) / math.sqrt(hd)
        s = s.masked_fill(~allowed, float("-inf"))
        out[:, h] = torch.softmax(s, -1) @ v[:, h]
    return out


def s2_roll(q, k, v, G):
    """Paper pseudocode: the second half of heads of q, k, v is rolled by -G/2 along the
    sequence, the sequence is split into groups of G (last one shorter when ragged), causal
    attention per group, the second half of the output is rolled back by +G/2. With GQA the kv
    heads are expanded first (repeat_kv), so a kv head shared by both halves is rolled only for
    the query heads of the second half."""
    N, H, hd = q.shape
    k, v = expand_kv(k, H), expand_kv(v, H)
    h2 = slice(H // 2, H)
    q, k, v = q.clone(), k.clone(), v.clone()
    for t in (q, k, v):
        t[:, h2] = torch.roll(t[:, h2], -G // 2, dims=0)
    out = torch.empty_like(q)
    for a in range(0, N, G):
        b = min(a + G, N)
        out[a:b] = causal_attn(q[a:b], k[a:b], v[a:b])
    out[:, h2] = torch.roll(out[:, h2], G // 2, dims=0)
    return out


def dense(q, k, v):
    H = q.shape[1]
    return causal_attn(q, expand_kv(k, H), expand_kv(v, H))


S2_CASES = [  # (N, G, H, Hkv, hd)
    (64, 16, 4, 2, 16),
    (50, 16, 4, 4, 16),  # ragged: N % G != 0
    (32, 32, 8, 2, 8),   # one group: first half dense, second half two segments
    (40, 8, 2, 1, 32),   # one kv head shared by both halves
]


def make_s2_reference():
    g = torch.Generator().manual_seed(SEED_S2)
    out = {}
    print("S2-Attn reference:")
    for ci, (N, G, H, Hkv, hd) in enumerate(S2_CASES, start=1):
        q32 = torch.randn(N, H, hd, generator=g, dtype=torch.float32)
        k32 = torch.randn(N, Hkv, hd, generator=g, dtype=torch.float32)
        v32 = torch.randn(N, Hkv, hd, generator=g, dtype=torch.float32)
        q, k, v = q32.double(), k32.double(), v32.double()
        o_s2 = s2_segment(q, k, v, G)
        o_roll = s2_roll(q, k, v, G)
        o_dense = dense(q, k, v)
        # Cross-checks between independent formulations.
        diff_mask = (o_s2 - s2_segment_by_mask(q, k, v, G)).abs().max().item()
        assert diff_mask < 1e-12, diff_mask
        h1, h2 = slice(0, H // 2), slice(H // 2, H)
        assert (o_s2[:, h1] - o_roll[:, h1]).abs().max().item() < 1e-12
        if N % G == 0:
            # Roll and segment forms agree on the shifted heads except for the first G/2
            # queries, which in the roll form also see the last G/2 tokens (the wrap-around).
            assert (o_s2[G // 2:, h2] - o_roll[G // 2:, h2]).abs().max().item() < 1e-12
        assert (o_s2[:G, h1] - o_dense[:G, h1]).abs().max().item() < 1e-12
        assert (o_s2[:G // 2, h2] - o_dense[:G // 2, h2]).abs().max().item() < 1e-12
        roll_vs_s2 = (o_s2 - o_roll).abs().max().item()
        s2_vs_dense = (o_s2 - o_dense).abs().max().item()
        print(f"  case{ci}: N={N} G={G} H={H} Hkv={Hkv} hd={hd}  max|s2-roll|={roll_vs_s2:.3f} "
              f"max|s2-dense|={s2_vs_dense:.3f}  segments h<H/2 {segment_bounds(N, G, False)} "
              f"h>=H/2 {segment_bounds(N, G, True)}")
        p = f"case{ci}_"
        out[p + "q"] = q32
        out[p + "k"] = k32
        out[p + "v"] = v32
        out[p + "out_s2"] = o_s2.float()
        out[p + "out_roll"] = o_roll.float()
        out[p + "out_dense"] = o_dense.float()
        for name, val in (("N", N), ("G", G), ("H", H), ("Hkv", Hkv), ("hd", hd)):
            out[p + name] = torch.tensor([val], dtype=torch.int32)
    return out


# --------------------------------------------------------------------------------------------

def scalar_f(x):
    return torch.tensor([x], dtype=torch.float32)


def scalar_i(x):
    return torch.tensor([x], dtype=torch.int32)


def write(path, tensors):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        assert torch.isfinite(v.double()).all(), k
    save_file(tensors, path)
    print(f"wrote {os.path.relpath(path, os.path.join(HERE, '..', '..'))} "
          f"({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def main():
    setup_determinism()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    os.makedirs(FIXTURES, exist_ok=True)

    # ---- A: tiny_llama ------------------------------------------------------------------
    torch.manual_seed(SEED_A)
    model_a = LlamaForCausalLM(make_config(CONFIG_A))
    init_weights(model_a, SEED_A)
    save_model(model_a, DIR_A, None)
    if os.path.exists(TOKENIZER):
        shutil.copyfile(TOKENIZER, os.path.join(DIR_A, "tokenizer.model"))
        print(f"copied {TOKENIZER} into {DIR_A}")
    else:
        print(f"note: {TOKENIZER} not found; tiny_llama has no tokenizer.model")
    model_a = load_model(DIR_A)  # everything below uses the files as written
    assert rope_factor_of(model_a) == ("default", 1.0), rope_factor_of(model_a)
    sd_a = load_file(os.path.join(DIR_A, "model.safetensors"))

    g = torch.Generator().manual_seed(SEED_TOKENS)
    tokens = torch.randint(0, CONFIG_A["vocab_size"], (N_TOKENS,), generator=g, dtype=torch.int64)
    ref = {"tokens": tokens.to(torch.int32)}

    print("model A (tiny_llama):")
    logits = logits_of(model_a, tokens[:64])
    check_close("A HF logits vs independent float64 forward", logits,
                independent_forward(sd_a, CONFIG_A, tokens[:64], 1.0), 1e-4)
    losses = F.cross_entropy(logits[:-1], tokens[1:64], reduction="none")
    ref["logits"] = logits
    ref["losses"] = losses
    print(f"  logits[0,:4] = {logits[0, :4].tolist()}")
    print(f"  logits std = {logits.std().item():.4f}; per-position loss mean = {losses.mean().item():.5f} "
          f"(ln 512 = {math.log(512):.5f}), min {losses.min().item():.4f}, max {losses.max().item():.4f}")

    p64 = paper_protocol(model_a, tokens, 64)
    ref["paper_s64_mean_loss"] = scalar_f(p64["mean_loss"])
    ref["paper_s64_ppl"] = scalar_f(p64["ppl"])
    ref["paper_s64_windows"] = scalar_i(len(p64["starts"]))
    ref["paper_s64_window_losses"] = torch.tensor(p64["window_losses"], dtype=torch.float32)
    ref["paper_s64_window_starts"] = torch.tensor(p64["starts"], dtype=torch.int32)
    print(f"  paper protocol seq_len 64: starts {p64['starts']}, window losses "
          f"{[round(x, 6) for x in p64['window_losses']]}, mean loss {p64['mean_loss']:.6f}, "
          f"ppl {p64['ppl']:.4f}")

    # eval.py --context-size 256 on a max_position_embeddings 128 model:
    # scaling_factor = ceil(256 / 128) = 2, config.rope_scaling = {"type": "linear", "factor": 2.0}.
    factor = float(math.ceil(256 / CONFIG_A["max_position_embeddings"]))
    model_a2 = load_model(DIR_A, {"type": "linear", "factor": factor})
    assert rope_factor_of(model_a2) == ("linear", 2.0), rope_factor_of(model_a2)
    la2 = logits_of(model_a2, tokens[:256])
    check_close("A with linear factor 2: HF logits vs independent forward (p/2)", la2,
                independent_forward(sd_a, CONFIG_A, tokens[:256], factor), 1e-4)
    d_unscaled = (la2 - logits_of(model_a, tokens[:256])).abs().max().item()
    print(f"  A with factor 2 vs without: max|logit diff| over 256 tokens = {d_unscaled:.4f} "
          f"(must be > 0: scaling is applied)")
    assert d_unscaled > 1e-3
    p256 = paper_protocol(model_a2, tokens, 256)
    ref["paper_s256_c256_mean_loss"] = scalar_f(p256["mean_loss"])
    ref["paper_s256_c256_ppl"] = scalar_f(p256["ppl"])
    ref["paper_s256_c256_windows"] = scalar_i(len(p256["starts"]))
    ref["paper_s256_c256_window_losses"] = torch.tensor(p256["window_losses"], dtype=torch.float32)
    ref["paper_s256_c256_window_starts"] = torch.tensor(p256["starts"], dtype=torch.int32)
    print(f"  paper protocol seq_len 256, context 256 (factor {factor}): starts {p256['starts']}, "
          f"window losses {[round(x, 6) for x in p256['window_losses']]}, "
          f"mean loss {p256['mean_loss']:.6f}, ppl {p256['ppl']:.4f}")

    no = nonoverlap_protocol(model_a, tokens, 64)
    ref["nonoverlap_s64_mean_loss"] = scalar_f(no["mean_loss"])
    ref["nonoverlap_s64_ppl"] = scalar_f(no["ppl"])
    ref["nonoverlap_s64_tokens_scored"] = scalar_i(no["tokens_scored"])
    print(f"  non-overlapping seq_len 64: tokens scored {no['tokens_scored']}, "
          f"mean loss {no['mean_loss']:.6f}, ppl {no['ppl']:.4f}")

    # ---- B: tiny_llama_rope2 ------------------------------------------------------------
    torch.manual_seed(SEED_B)
    model_b = LlamaForCausalLM(make_config(CONFIG_B, ROPE2))
    init_weights(model_b, SEED_B)
    save_model(model_b, DIR_B, ROPE2)
    model_b = load_model(DIR_B)
    assert rope_factor_of(model_b) == ("linear", 2.0), rope_factor_of(model_b)
    sd_b = load_file(os.path.join(DIR_B, "model.safetensors"))
    g = torch.Generator().manual_seed(SEED_ROPE2_TOKENS)
    tokens_b = torch.randint(0, CONFIG_B["vocab_size"], (96,), generator=g, dtype=torch.int64)
    print("model B (tiny_llama_rope2):")
    lb = logits_of(model_b, tokens_b)
    check_close("B HF logits vs independent forward (p/2)", lb,
                independent_forward(sd_b, CONFIG_B, tokens_b, 2.0), 1e-4)
    model_b1 = load_model(DIR_B, {"type": "default"})  # same weights, no scaling
    assert rope_factor_of(model_b1) == ("default", 1.0), rope_factor_of(model_b1)
    lb1 = logits_of(model_b1, tokens_b)
    check_close("B without scaling vs independent forward (p)", lb1,
                independent_forward(sd_b, CONFIG_B, tokens_b, 1.0), 1e-4)
    d_b = (lb - lb1).abs().max().item()
    print(f"  B scaled vs unscaled: max|logit diff| = {d_b:.4f}, position 0 diff = "
          f"{(lb[0] - lb1[0]).abs().max().item():.2e} (must be > 0 and 0: transformers applies linear scaling)")
    assert d_b > 1e-3
    ref["rope2_tokens"] = tokens_b.to(torch.int32)
    ref["rope2_logits"] = lb
    print(f"  rope2_logits[95,:4] = {lb[95, :4].tolist()}")

    write(REF_MODEL, ref)
    write(REF_S2, make_s2_reference())

    total = 0
    for root in (DIR_A, DIR_B):
        for name in sorted(os.listdir(root)):
            sz = os.path.getsize(os.path.join(root, name))
            total += sz
            print(f"  {os.path.relpath(os.path.join(root, name), FIXTURES)}: {sz} bytes")
    for path in (REF_MODEL, REF_S2):
        total += os.path.getsize(path)
    print(f"total fixture size written: {total} bytes")


if __name__ == "__main__":
    main()
