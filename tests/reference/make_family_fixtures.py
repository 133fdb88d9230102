#!/usr/bin/env python3
"""Write the reference fixtures of the model families (Llama-3.x, Qwen2/2.5, Mistral).

Reference only: everything comes from PyTorch + Hugging Face transformers + peft (S2-Attn from
make_training_fixtures.py's registered attention function), never from our C++ code. Rerun only
to regenerate (see tests/reference/README.md):

    python3 tests/reference/make_family_fixtures.py

For each family a tiny random model made with transformers' own class, saved with
save_pretrained under tests/fixtures/families/<name>/ (config.json as transformers 5 writes it,
model.safetensors float32, generation_config.json), a PEFT adapter under
tests/fixtures/families/<name>_adapter/ and tests/fixtures/families/<name>_reference.safetensors
with logits, per-token losses, the non-overlapping perplexity, LoRA+ gradients (S2-Attn and full
attention), greedy generation and the logits of base + adapter (what export_hf must reproduce).
The Llama-2 family is tests/fixtures/tiny_llama (make_fixtures.py); it is not regenerated here.

Deterministic: float32 on CPU, one thread, fixed seeds, torch.use_deterministic_algorithms(True).
Checks itself against an independent float64 forward written here (from Meta's and the
families' published formulas, not from transformers) and exits non-zero if a check fails.
"""
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
import transformers
import peft
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (perplexity protocol, S2 reference)
import make_training_fixtures as mt  # noqa: E402  (registers the "s2attn" attention function)

# Relative to the repository root (the script chdirs there): peft records the base model path
# as given, so adapter_config.json says "tests/fixtures/families/<name>".
FAMILY_DIR = os.path.join("tests", "fixtures", "families")

R, ALPHA = 8, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_B_STD = 0.05

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# name -> transformers classes, constructor arguments, seeds and the test settings.
#   s2_factor: the linear position interpolation of the S2-Attn case (LongLoRA's -ctx 256 on a
#              128-position base: 2); llama3 keeps its own scaling (factor 1 on top).
FAMILIES = {
    "llama3": dict(
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM, seed=3101,
        config=dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                    max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0,
                    rope_scaling=dict(LLAMA3_ROPE), tie_word_embeddings=True, bos_token_id=1,
                    eos_token_id=[2], hidden_act="silu", attention_bias=False, mlp_bias=False),
        s2_factor=1.0),
    "qwen2": dict(
        config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM, seed=3202,
        config=dict(vocab_size=288, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                    use_sliding_window=False, max_window_layers=2, bos_token_id=270,
                    eos_token_id=271, hidden_act="silu"),
        s2_factor=2.0),
    "mistral": dict(
        config_cls=MistralConfig, model_cls=MistralForCausalLM, seed=3303,
        config=dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1000000.0,
                    sliding_window=None, tie_word_embeddings=False, bos_token_id=1,
                    eos_token_id=2, hidden_act="silu"),
        s2_factor=2.0),
}

N_LOGITS = 80          # logits / per-token loss sequence (crosses llama3's original 64)
N_PPL, PPL_SEQ = 600, 128
S2_N, S2_G = 256, 64   # S2-Attn: group 1/4
DENSE_N = 96
PROMPT_N, GEN_N = 48, 32
EXPORT_N, EXPORT_STRIDE = 96, 4  # export reference rows 3, 7, ..., 95
FD_H = 1e-5
EMBED_STD, LINEAR_STD = 0.3, 0.25


def fail(msg):
    sys.exit(f"error: {msg}")


def check(name, ok, detail=""):
    print(f"  check {name}: {detail} {'OK' if ok else 'FAIL'}")
    if not ok:
        fail(f"check {name} failed")


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def relmax(a, b):
    """max |a - b| / max |b| (the logits' scale is set by the largest entries)."""
    return maxdiff(a, b) / b.double().abs().max().item()


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def scalar_f(x):
    return torch.tensor([x], dtype=torch.float32)


def scalar_i(x):
    return torch.tensor([x], dtype=torch.int32)


# --------------------------------------------------------------------------------------------
# Independent float64 forward (from the published formulas, not from transformers)
# --------------------------------------------------------------------------------------------

def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_params_of(cfg):
    """(theta, scaling dict or None) from a config.json dict in either layout."""
    rp = cfg.get("rope_parameters")
    if rp is not None:
        theta = rp["rope_theta"]
        scaling = None if rp.get("rope_type", "default") == "default" else rp
    else:
        theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    return float(theta), scaling


def independent_inv_freq(cfg):
    """RoPE inverse frequencies in float64: theta^(-2i/hd); llama3 scaling as Meta's reference
    (llama-models apply_scaling, element by element); linear divides by the factor."""
    theta, scaling = rope_params_of(cfg)
    hd = head_dim_of(cfg)
    freqs = [1.0 / theta ** (2 * i / hd) for i in range(hd // 2)]
    rtype = None if scaling is None else scaling.get("rope_type", scaling.get("type"))
    if rtype == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        out = []
        for f in freqs:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                out.append(f)
            elif wavelen > low_wavelen:
                out.append(f / factor)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * f / factor + smooth * f)
        freqs = out
    elif rtype == "linear":
        freqs = [f / scaling["factor"] for f in freqs]
    else:
        assert rtype is None, rtype
    return torch.tensor(freqs, dtype=torch.float64)


def independent_logits(sd, cfg, ids, pos_scale=1.0, lora=None, G=None):
    """Plain float64 forward of the Llama block with the family differences: explicit head_dim,
    GQA, q/k/v biases when the tensors exist, tied lm_head (embedding) when lm_head.weight is
    absent, rotate-half RoPE at p / pos_scale with independent_inv_freq, RMSNorm, SiLU MLP.
    lora: {peft key: tensor} merged as W + (alpha/r) B A. G: S2-Attn group (segment form of
    make_fixtures.s2_segment) or None for dense causal attention."""
    sd = {k: v.double() for k, v in sd.items()}
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd, eps, N = head_dim_of(cfg), cfg["rms_norm_eps"], ids.numel()
    inv = independent_inv_freq(cfg)
    ang = (torch.arange(N, dtype=torch.float64) / pos_scale)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def linear(x, i, t):
        w = sd[f"model.layers.{i}.self_attn.{t}.weight"]
        if lora is not None:
            pre = f"base_model.model.model.layers.{i}.self_attn.{t}."
            w = w + (ALPHA / R) * lora[pre + "lora_B.weight"].double() @ lora[pre + "lora_A.weight"].double()
        y = x @ w.T
        b = sd.get(f"model.layers.{i}.self_attn.{t}.bias")
        return y if b is None else y + b

    x = sd["model.embed_tokens.weight"][ids.long()]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = rope(linear(h, i, "q_proj").view(N, H, hd))
        k = rope(linear(h, i, "k_proj").view(N, Hkv, hd))
        v = linear(h, i, "v_proj").view(N, Hkv, hd)
        a = mf.s2_segment(q, k, v, G) if G is not None else mf.dense(q, k, v)
        x = x + linear(a.reshape(N, H * hd), i, "o_proj")
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        x = x + (F.silu(h @ sd[p + "mlp.gate_proj.weight"].T) * (h @ sd[p + "mlp.up_proj.weight"].T)) \
            @ sd[p + "mlp.down_proj.weight"].T
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return rms(x, sd["model.norm.weight"]) @ head.T


def independent_loss(sd, cfg, ids, pos_scale, lora, G):
    logits = independent_logits(sd, cfg, ids, pos_scale, lora, G)
    return F.cross_entropy(logits[:-1], ids[1:].long()).item()


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def load_family(fam, model_dir, pos_scale=1.0, attn="eager", dtype=torch.float32, config=None):
    """The saved model as transformers loads it; pos_scale > 1 replaces plain RoPE by linear
    interpolation (rope_parameters {"rope_type": "linear", "factor": s}), as LongLoRA does."""
    d = dict(config if config is not None else read_config(model_dir))
    if pos_scale != 1.0:
        theta, scaling = rope_params_of(d)
        assert scaling is None, "extra interpolation on a scaled model is not a fixture case"
        d.pop("rope_theta", None)
        d.pop("rope_scaling", None)
        d["rope_parameters"] = {"rope_type": "linear", "factor": float(pos_scale), "rope_theta": theta}
    cfg = fam["config_cls"](**{k: v for k, v in d.items()
                               if k not in ("architectures", "transformers_version")})
    model = fam["model_cls"].from_pretrained(model_dir, config=cfg, attn_implementation=attn,
                                             dtype=dtype)
    assert model.config._attn_implementation == attn
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "embedding not tied"
    # The rotary embedding carries the frequencies written here independently.
    want = independent_inv_freq(d)
    got = model.model.rotary_emb.inv_freq.double()
    assert maxdiff(got, want) <= 1e-6 * want.abs().max().item(), (got, want)
    model.eval()
    return model


def init_weights(model, seed):
    """Embedding (and lm_head) ~ N(0, 0.3^2); other linear weights and biases ~ N(0, 0.25^2); RMSNorm
    weights 1 + 0.1 N(0, 1); parameters in sorted-name order from one generator (a tied lm_head is
    the embedding: drawn once). Larger than make_fixtures.py's 0.08: with small weights a tied
    model's residual stream predicts its own input token and greedy generation repeats one id."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))
            else:
                p.copy_(LINEAR_STD * torch.randn(p.shape, generator=g, dtype=torch.float32))


def fixture_name(peft_name):
    """peft parameter name -> fixture name: LoRA under peft's saved key, base tensors (and a
    LoRA layer's bias, base_layer.bias) under their HF name."""
    if ".lora_A." in peft_name or ".lora_B." in peft_name:
        return peft_name.replace(".default.", ".")
    assert peft_name.startswith("base_model.model."), peft_name
    return peft_name[len("base_model.model."):].replace(".base_layer.", ".")


def is_trained_base(hf_name, bias):
    return (hf_name == "model.embed_tokens.weight" or hf_name.endswith("norm.weight")
            or (bias and hf_name.endswith("_proj.bias")))


def lora_config():
    return LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")


def make_peft(base, lora_init=None, seed=0, bias=False):
    """get_peft_model + LoRA+ (embed_tokens and norms trainable; with bias, the projections'
    biases too, as --trainable embed,norm,bias). LoRA weights from lora_init or drawn (A: PEFT's
    kaiming_uniform a=sqrt(5); B: 0.05 randn, non-zero so that A has a gradient)."""
    model = get_peft_model(base, lora_config())
    for n, p in model.named_parameters():
        if ".lora_" in n:
            assert p.requires_grad, n
        else:
            p.requires_grad_(is_trained_base(fixture_name(n), bias))
    lora = sorted((n, p) for n, p in model.named_parameters() if ".lora_" in n)
    with torch.no_grad():
        if lora_init is None:
            ga = torch.Generator().manual_seed(seed)
            gb = torch.Generator().manual_seed(seed + 1)
            for n, p in lora:
                if ".lora_A." in n:
                    tmp = torch.empty(p.shape, dtype=torch.float32)
                    torch.nn.init.kaiming_uniform_(tmp, a=math.sqrt(5), generator=ga)
                    p.copy_(tmp)
            for n, p in lora:
                if ".lora_B." in n:
                    p.copy_(LORA_B_STD * torch.randn(p.shape, generator=gb, dtype=torch.float32))
            lora_init = {fixture_name(n): p.detach().float().clone() for n, p in lora}
        else:
            for n, p in lora:
                p.copy_(lora_init[fixture_name(n)])
    model.train()
    return model, lora_init


def trainables(model):
    return sorted(((fixture_name(n), p) for n, p in model.named_parameters() if p.requires_grad),
                  key=lambda kv: kv[0])


def forward_backward(model, ids):
    model.zero_grad(set_to_none=True)
    loss = mt.loss_of(model, ids)
    loss.backward()
    return loss.detach().float(), {n: p.grad.detach().float().clone() for n, p in trainables(model)}


def rand_tokens(seed, n, vocab, lo=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, vocab, (n,), generator=g, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# One family
# --------------------------------------------------------------------------------------------

def greedy_no_cache(model, prompt, n):
    """Greedy continuation by full forwards (no cache); also the smallest top-1/top-2 margin."""
    ids = prompt.clone()
    margin = float("inf")
    with torch.no_grad():
        for _ in range(n):
            row = model(input_ids=ids[None]).logits[0, -1].double()
            top = torch.topk(row, 2).values
            margin = min(margin, (top[0] - top[1]).item())
            ids = torch.cat([ids, row.argmax().reshape(1)])
    return ids[prompt.numel():], margin


def hf_generate(model, prompt, n, eos):
    """transformers' generate, greedy, with the KV cache; eos None: no stop (the model's own
    generation_config would fill in its eos ids otherwise, so it is cleared meanwhile)."""
    gc = GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=0,
                          num_beams=1)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        with torch.no_grad():
            out = model.generate(input_ids=prompt[None],
                                 attention_mask=torch.ones_like(prompt)[None], generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, prompt.numel():]


def pick_prompt(model, fam, vocab):
    """A prompt whose greedy continuation has a top-1/top-2 margin of at least 1e-3 at every step
    (fp32 rounding cannot flip it); seeds tried in order."""
    for attempt in range(20):
        prompt = rand_tokens(fam["seed"] + 50 + attempt, PROMPT_N, vocab)
        cont, margin = greedy_no_cache(model, prompt, GEN_N)
        if margin >= 1e-3:
            return prompt, cont, margin, attempt
    fail("no prompt with a clear greedy margin")


def make_model_dir(name, fam):
    """Build, init and save the model; for llama3 the eos list is chosen so that its second id
    is a token the greedy reference generates (the list must be honoured, not its first id)."""
    out_dir = os.path.join(FAMILY_DIR, name)
    kw = dict(fam["config"])
    torch.manual_seed(fam["seed"])
    model = fam["model_cls"](fam["config_cls"](**kw))
    init_weights(model, fam["seed"])
    model.eval()
    extra = {}
    if name == "llama3":
        prompt, cont, margin, _ = pick_prompt(model, fam, kw["vocab_size"])
        # The token of the first step >= 12 that was not generated before: as the eos list's
        # second id it ends the generation there.
        seen = set()
        hit_step = None
        for step, t in enumerate(cont.tolist()):
            if step >= 12 and t not in seen:
                hit_step = step
                break
            seen.add(t)
        assert hit_step is not None, cont
        hit = int(cont[hit_step])
        others = [t for t in range(kw["vocab_size"] - 1, 0, -1) if t not in cont.tolist() and t != hit]
        eos = [others[0], hit, others[1]]
        model.config.eos_token_id = eos
        model.generation_config.eos_token_id = eos
        extra = dict(eos_hit=hit, eos_hit_step=hit_step)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    for n_, t in load_file(os.path.join(out_dir, "model.safetensors")).items():
        assert t.dtype == torch.float32, (n_, t.dtype)
    return out_dir, extra


def hub_layout(cfg):
    """The same config in the layout of the checkpoints on the Hub (transformers 4.x): top-level
    rope_theta and rope_scaling instead of rope_parameters."""
    d = dict(cfg)
    rp = d.pop("rope_parameters")
    d["rope_theta"] = rp["rope_theta"]
    d["rope_scaling"] = None if rp["rope_type"] == "default" else \
        {k: v for k, v in rp.items() if k != "rope_theta"}
    return d


def build_family(name, fam):
    print(f"=== {name} ({fam['model_cls'].__name__}) ===")
    model_dir, extra = make_model_dir(name, fam)
    cfg = read_config(model_dir)
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    V = cfg["vocab_size"]
    tied = cfg["tie_word_embeddings"]
    has_bias = any(k.endswith("_proj.bias") for k in sd)
    print(f"  config: model_type {cfg['model_type']}, head_dim {head_dim_of(cfg)} "
          f"(hidden {cfg['hidden_size']} / heads {cfg['num_attention_heads']}), kv heads "
          f"{cfg['num_key_value_heads']}, tied {tied}, q/k/v bias {has_bias}, rope "
          f"{cfg['rope_parameters']}, eos {cfg['eos_token_id']}")
    check("tied: no lm_head.weight in the file" if tied else "untied: lm_head.weight stored",
          ("lm_head.weight" in sd) != tied)
    check("q/k/v bias tensors exactly for qwen2", has_bias == (cfg["model_type"] == "qwen2"))
    if has_bias:
        check("biases non-zero", all(sd[k].abs().min().item() > 0 for k in sd if k.endswith(".bias")))
    ref = {}
    model = load_family(fam, model_dir)

    # ---- logits, losses -------------------------------------------------------------------
    ids = rand_tokens(fam["seed"] + 1, N_LOGITS, V)
    with torch.no_grad():
        out = model(input_ids=ids[None], labels=ids[None])
    logits = out.logits[0].float()
    losses = F.cross_entropy(logits[:-1], ids[1:], reduction="none")
    check("HF loss == mean of per-token CE", abs(out.loss.item() - losses.mean().item()) < 1e-5,
          f"{out.loss.item():.7f}")
    ind = independent_logits(sd, cfg, ids)
    check("HF logits == independent float64 forward (rel to max)", relmax(logits, ind) < 1e-5,
          f"{relmax(logits, ind):.2e}")
    ref["logits.tokens"] = ids.to(torch.int32)
    ref["logits"] = logits
    ref["losses"] = losses
    ref["loss"] = scalar_f(out.loss.item())
    if name == "llama3":
        # The scaling matters: plain RoPE (theta 500000) and linear factor 8 give other logits.
        for label, rp in (("default", {"rope_type": "default", "rope_theta": 500000.0}),
                          ("linear 8", {"rope_type": "linear", "factor": 8.0, "rope_theta": 500000.0})):
            other = dict(cfg, rope_parameters=rp)
            m2 = load_family(fam, model_dir, config=other)
            with torch.no_grad():
                l2 = m2(input_ids=ids[None]).logits[0]
            d = maxdiff(l2, logits)
            check(f"llama3 logits differ from {label} RoPE", d > 1e-2, f"max|diff| {d:.3f}")
        inv = independent_inv_freq(cfg)
        theta, sc = rope_params_of(cfg)
        hd = head_dim_of(cfg)
        plain = torch.tensor([1.0 / theta ** (2 * i / hd) for i in range(hd // 2)], dtype=torch.float64)
        ratio = (plain / inv).tolist()
        kinds = ["high" if abs(r - 1) < 1e-12 else "low" if abs(r - 8) < 1e-9 else "medium" for r in ratio]
        check("llama3 frequencies in all three bands (kept, smoothed, divided by 8)",
              {"high", "medium", "low"} <= set(kinds), f"plain/scaled {[round(r, 4) for r in ratio]}")
        # The Hub layout (top-level rope_theta + rope_scaling) is read to the same model.
        with tempfile.TemporaryDirectory() as tmp:
            for f_ in ("model.safetensors",):
                shutil.copyfile(os.path.join(model_dir, f_), os.path.join(tmp, f_))
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(hub_layout(cfg), f)
            m3 = load_family(fam, tmp)
            with torch.no_grad():
                l3 = m3(input_ids=ids[None]).logits[0]
            check("Hub-layout config.json gives the same logits", maxdiff(l3, logits) == 0.0,
                  f"{maxdiff(l3, logits):.2e}")

    # ---- perplexity (non-overlapping protocol) --------------------------------------------
    ppl_ids = rand_tokens(fam["seed"] + 2, N_PPL, V)
    no = mf.nonoverlap_protocol(model, ppl_ids, PPL_SEQ)
    ref["ppl.tokens"] = ppl_ids.to(torch.int32)
    ref["ppl.seq_len"] = scalar_i(PPL_SEQ)
    ref["ppl.mean_loss"] = scalar_f(no["mean_loss"])
    ref["ppl.ppl"] = scalar_f(no["ppl"])
    ref["ppl.tokens_scored"] = scalar_i(no["tokens_scored"])
    # Cross-check: the same sum from the independent forward.
    tot = 0.0
    for s in range(0, N_PPL - 1, PPL_SEQ - 1):
        w = ppl_ids[s:s + PPL_SEQ]
        tot += F.cross_entropy(independent_logits(sd, cfg, w)[:-1], w[1:], reduction="sum").item()
    own = math.exp(tot / (N_PPL - 1))
    check("non-overlapping ppl == independent forward", abs(own - no["ppl"]) < 1e-5 * own,
          f"{no['ppl']:.6f} vs {own:.6f} ({no['tokens_scored']} tokens, seq_len {PPL_SEQ})")

    # ---- greedy generation ----------------------------------------------------------------
    prompt, cont, margin, attempt = pick_prompt(model, fam, V)
    gen = hf_generate(model, prompt, GEN_N, None)
    check("generate (cache, eos off) == greedy full forwards, 32 tokens",
          gen.numel() == GEN_N and torch.equal(gen, cont),
          f"prompt seed +{attempt}, min top-1/top-2 margin {margin:.4f}")
    ref["gen.prompt"] = prompt.to(torch.int32)
    ref["gen.tokens"] = gen.to(torch.int32)
    eos = cfg["eos_token_id"]
    eos_list = eos if isinstance(eos, list) else [eos]
    gen_eos = hf_generate(model, prompt, GEN_N, eos_list)
    stops = [i for i, t in enumerate(cont.tolist()) if t in eos_list]
    if stops:
        want = cont[:stops[0] + 1]
        check("generate with the config's eos stops at the first eos (included)",
              torch.equal(gen_eos, want), f"{gen_eos.numel()} tokens, stop id {int(want[-1])}")
        ref["gen.eos_tokens"] = gen_eos.to(torch.int32)
    else:
        check("no eos in the greedy continuation: generate with eos == without",
              torch.equal(gen_eos, gen))
    if name == "llama3":
        check("llama3: stops at the eos list's second id", bool(stops) and
              int(cont[stops[0]]) == eos_list[1] == extra["eos_hit"] and
              stops[0] == extra["eos_hit_step"], f"eos {eos_list}, step {stops[0] if stops else None}")

    # ---- LoRA+ gradients: S2-Attn and full attention ---------------------------------------
    cases = [("s2", S2_N, fam["s2_factor"], S2_G), ("dense", DENSE_N, 1.0, None)]
    lora_init = None
    for ci, (case, n, factor, G) in enumerate(cases):
        print(f"  case {case}: N={n}, G={G}, linear factor on top {factor}:")
        tokens = rand_tokens(fam["seed"] + 10 + ci, n, V, lo=3)
        if G is None:
            mt.set_attention("dense")
        else:
            mt.set_attention("s2", G)
        pm, lora_init = make_peft(load_family(fam, model_dir, factor, attn="s2attn"), lora_init,
                                  seed=fam["seed"] + 100, bias=False)
        loss, grads = forward_backward(pm, tokens)
        names = sorted(grads)
        n_layers = cfg["num_hidden_layers"]
        check("trainable set: LoRA A/B + embed_tokens + norms",
              len([x for x in names if ".lora_" in x]) == 8 * n_layers
              and len([x for x in names if ".lora_" not in x]) == 2 * n_layers + 2
              and "model.embed_tokens.weight" in names, f"{len(names)} tensors")
        il = independent_loss(sd, cfg, tokens, factor, lora_init, G)
        check(f"{case} loss == independent float64 forward", abs(il - loss.item()) < 1e-5,
              f"{loss.item():.7f} vs {il:.7f}")
        if G is not None:
            with torch.no_grad():
                mt.set_attention("dense")
                ld = mt.loss_of(pm, tokens).item()
                mt.set_attention("s2", G)
            check("s2 loss differs from dense attention", abs(ld - loss.item()) > 1e-4,
                  f"{loss.item():.6f} vs dense {ld:.6f}")
        if case == "dense":
            em, _ = make_peft(load_family(fam, model_dir, factor, attn="eager"), lora_init)
            le, ge = forward_backward(em, tokens)
            worst = max(maxdiff(ge[k], grads[k]) for k in grads)
            check("dense (s2attn fn) == transformers eager: loss, grads",
                  abs(le.item() - loss.item()) < 1e-6 and worst < 1e-6,
                  f"{abs(le.item() - loss.item()):.1e}, {worst:.1e}")
            del em
        if has_bias:
            bm, _ = make_peft(load_family(fam, model_dir, factor, attn="s2attn"), lora_init, bias=True)
            lb, gb = forward_backward(bm, tokens)
            bias_names = sorted(k for k in gb if k.endswith(".bias"))
            check("--trainable bias adds exactly the q/k/v biases", len(bias_names) == 3 * n_layers
                  and sorted(k for k in gb if not k.endswith(".bias")) == names, f"{bias_names[:3]}...")
            worst = max(maxdiff(gb[k], grads[k]) for k in grads)
            check("other gradients unchanged by training the biases", worst == 0.0 and lb == loss,
                  f"{worst:.1e}")
            grads.update({k: gb[k] for k in bias_names})
            del bm
        # float64 copy (autograd) and central finite differences of the independent forward.
        m64, _ = make_peft(load_family(fam, model_dir, factor, attn="s2attn", dtype=torch.float64),
                           lora_init, bias=has_bias)
        m64.double()
        m64.zero_grad(set_to_none=True)
        l64 = mt.loss_of_f64(m64, tokens)
        l64.backward()
        g64 = {k: p.grad.detach().clone() for k, p in trainables(m64)}
        worst = max(rel_l2(grads[k], g64[k]) for k in grads)
        check("fp32 grads vs fp64 HF copy (worst relative L2 over tensors)", worst < 1e-4, f"{worst:.2e}")
        del m64
        present = set(tokens.tolist())
        absent = next(t for t in range(V) if t not in present)
        eg = grads["model.embed_tokens.weight"][absent]
        if tied:
            check("tied: embedding row of a token not in the input has the classifier's gradient",
                  eg.abs().max().item() > 1e-6, f"row {absent}: max |g| {eg.abs().max().item():.2e}")
        else:
            check("untied: embedding row of a token not in the input has zero gradient",
                  eg.abs().max().item() == 0.0)
        probes = [
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", (3, 17)),
            ("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", (5, 2)),
            ("base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight", (6, 9)),
            ("model.embed_tokens.weight", (int(tokens[5]), 11)),
            ("model.embed_tokens.weight", (absent, 7)),
            ("model.layers.1.input_layernorm.weight", (13,)),
            ("model.norm.weight", (4,)),
        ]
        if has_bias:
            probes += [("model.layers.0.self_attn.k_proj.bias", (3,)),
                       ("model.layers.1.self_attn.v_proj.bias", (7,))]
        for pname, idx in probes:
            vals = []
            for sign in (1, -1):
                sd_p = {k: v.double().clone() for k, v in sd.items()}
                lo_p = {k: v.double().clone() for k, v in lora_init.items()}
                (lo_p if ".lora_" in pname else sd_p)[pname][idx] += sign * FD_H
                vals.append(independent_loss(sd_p, cfg, tokens, factor, lo_p, G))
            fd = (vals[0] - vals[1]) / (2 * FD_H)
            a32 = grads[pname][idx].item()
            check(f"finite difference {pname}{list(idx)}",
                  abs(fd - a32) <= 2e-7 + 1e-4 * abs(fd), f"fd {fd:.6e} fixture {a32:.6e}")
        ref[f"{case}.tokens"] = tokens.to(torch.int32)
        ref[f"{case}.rope_factor"] = scalar_f(factor)
        ref[f"{case}.group_size"] = scalar_i(G or 0)
        ref[f"{case}.loss"] = loss.reshape(1)
        for k, g in grads.items():
            ref[f"{case}.grad.{k}"] = g
        nz = [k for k, g in grads.items() if g.abs().max().item() == 0.0]
        check(f"{case}: every gradient tensor non-zero", not nz, f"zero: {nz}")
        print(f"    loss {loss.item():.7f}, total grad norm "
              f"{math.sqrt(sum(g.double().pow(2).sum().item() for g in grads.values())):.5f}")
        if ci == 0:
            adapter_dir = save_adapter(name, pm, lora_init, model_dir)
        del pm

    # ---- base + adapter (what export_hf writes must reproduce) ------------------------------
    trained = None
    if name == "qwen2":
        # As train_longlora --trainable embed,norm,bias writes them: the tied embedding (one
        # tensor for both uses), every norm and the q/k/v biases, perturbed.
        g = torch.Generator().manual_seed(fam["seed"] + 200)
        trained = {}
        for k in sorted(sd):
            if is_trained_base(k, True):
                trained[k] = (sd[k] + 0.02 * torch.randn(sd[k].shape, generator=g)).contiguous()
        save_file(trained, os.path.join(adapter_dir, "trainable_params.safetensors"),
                  metadata={"format": "pt"})
    ids_e = rand_tokens(fam["seed"] + 3, EXPORT_N, V)
    base = load_family(fam, model_dir)
    if trained is not None:
        missing, unexpected = base.load_state_dict(trained, strict=False)
        assert not unexpected, unexpected
        assert base.lm_head.weight is base.model.embed_tokens.weight
    pmodel = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        le = pmodel(input_ids=ids_e[None]).logits[0]
    sd_t = dict(sd, **(trained or {}))
    ind = independent_logits(sd_t, cfg, ids_e, 1.0, lora_init, None)
    check("base + adapter (peft) == independent forward with the merge", relmax(le, ind) < 1e-5,
          f"{relmax(le, ind):.2e}")
    rows = list(range(EXPORT_STRIDE - 1, EXPORT_N, EXPORT_STRIDE))
    ref["export.tokens"] = ids_e.to(torch.int32)
    ref["export.positions"] = torch.tensor(rows, dtype=torch.int32)
    ref["export.logits"] = le[rows].float().contiguous()
    return model_dir, adapter_dir, ref


def save_adapter(name, model, lora_init, model_dir):
    adapter_dir = os.path.join(FAMILY_DIR, f"{name}_adapter")
    if os.path.isdir(adapter_dir):
        shutil.rmtree(adapter_dir)
    model.save_pretrained(adapter_dir, safe_serialization=True)
    for f in sorted(os.listdir(adapter_dir)):
        if f not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(adapter_dir, f))  # peft's README.md model-card template
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(model)
    check("adapter_model.safetensors == peft state dict == LoRA init",
          sorted(saved) == sorted(lora_init) == sorted(state)
          and all(torch.equal(saved[k], lora_init[k]) for k in lora_init), f"{len(saved)} tensors")
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        ac = json.load(f)
    check("adapter_config.json base path", ac["base_model_name_or_path"] == model_dir,
          ac["base_model_name_or_path"])
    return adapter_dir


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":  # peft writes target_modules from a set
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    mt.setup_determinism()
    os.chdir(REPO)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    os.makedirs(FAMILY_DIR, exist_ok=True)
    names = sys.argv[1:] or list(FAMILIES)
    for name in names:
        model_dir, adapter_dir, ref = build_family(name, FAMILIES[name])
        out = {k: v.contiguous() for k, v in sorted(ref.items())}
        for k, v in out.items():
            assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
            assert torch.isfinite(v.double()).all(), k
        meta = {
            "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "generator": "tests/reference/make_family_fixtures.py",
            "model": model_dir, "adapter": adapter_dir,
            "description": (
                f"Reference for {model_dir}: logits/losses of logits.tokens; non-overlapping "
                f"perplexity of ppl.tokens at seq_len ppl.seq_len; LoRA+ (peft r={R} alpha={ALPHA} "
                "q/k/v/o, LoRA weights = the adapter's, embed_tokens + norms trainable, q/k/v "
                "biases' gradients as with --trainable bias) loss and gradients for S2-Attn (s2.*, "
                "segment form, linear factor s2.rope_factor on top of the config's RoPE) and full "
                "attention (dense.*); greedy generation of 32 tokens after gen.prompt without EOS "
                "stop (gen.tokens) and with the config's eos ids (gen.eos_tokens, when one is hit); "
                "export.logits: rows export.positions of base (+ trainable_params) + adapter."),
        }
        path = os.path.join(FAMILY_DIR, f"{name}_reference.safetensors")
        mt.write_safetensors(path, out, meta)
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)")
    total = 0
    for root, _, files in os.walk(FAMILY_DIR):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"tests/fixtures/families: {total} bytes")


if __name__ == "__main__":
    main()
