#!/usr/bin/env python3
"""Write the LongLoRA training reference fixture (LoRA+ gradients, S2-Attn, AdamW steps).

Reference only: everything comes from PyTorch + Hugging Face transformers + peft (with the S2-Attn
segment form written here in plain torch and registered as a transformers attention function),
never from our C++ code. Rerun only to regenerate (see tests/reference/README.md):

    python3 tests/reference/make_training_fixtures.py

Reads (never modifies): tests/fixtures/tiny_llama/ (written by make_fixtures.py),
                        tests/fixtures/s2attn_reference.safetensors (cross-check only).
Writes:  tests/fixtures/tiny_llama_lora_reference.safetensors
         tests/fixtures/tiny_llama_peft_adapter/{adapter_config.json, adapter_model.safetensors}

Model setup = LongLoRA fine-tune.py "LoRA+": peft LoraConfig(r=8, lora_alpha=16, q/k/v/o_proj,
dropout 0, bias none, CAUSAL_LM); embed_tokens and every RMSNorm weight also trainable; lm_head
and everything else frozen. lora_A gets PEFT's default init (kaiming_uniform_, a=sqrt(5)) from a
fixed generator, lora_B = 0.05 * randn from another (PEFT's zero B would make A's gradient 0).

Deterministic: float32 on CPU, one thread, fixed seeds, torch.use_deterministic_algorithms(True).
Checks itself and exits non-zero if a check fails.
"""
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
import transformers
import peft
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (S2 reference functions; its main() is not run)

# Paths relative to the repository root (the script chdirs there), so that peft records the
# relative base-model path "tests/fixtures/tiny_llama" in adapter_config.json.
MODEL_DIR = os.path.join("tests", "fixtures", "tiny_llama")
S2_REF = os.path.join("tests", "fixtures", "s2attn_reference.safetensors")
OUT = os.path.join("tests", "fixtures", "tiny_llama_lora_reference.safetensors")
ADAPTER_DIR = os.path.join("tests", "fixtures", "tiny_llama_peft_adapter")

R, ALPHA = 8, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_B_STD = 0.05
SEED_LORA_A, SEED_LORA_B = 2024, 2025
SEED_S2_TOKENS, SEED_DENSE_TOKENS, SEED_TRAIN_TOKENS = 101, 102, 103
TOK_LO, TOK_HI = 3, 512

S2_N, S2_G, S2_FACTOR = 256, 64, 2.0
DENSE_N, DENSE_FACTOR = 64, 1.0
TRAIN_STEPS, TRAIN_ACCUM = 3, 2
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.95), 1e-8, 0.0
# clip_grad_norm_ max_norm. With 1.0 no step is clipped (pre-clip norms 0.714, 0.789, 0.678), so
# the fixture uses 0.75: step 1 is clipped, steps 0 and 2 are not (both branches exercised).
MAX_GRAD_NORM = 0.75


def setup_determinism():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


def fail(msg):
    sys.exit(f"error: {msg}")


def check(name, ok, detail=""):
    print(f"  check {name}: {detail} {'OK' if ok else 'FAIL'}")
    if not ok:
        fail(f"check {name} failed")


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


# --------------------------------------------------------------------------------------------
# S2-Attn as a transformers attention function
# --------------------------------------------------------------------------------------------

# Which attention the registered "s2attn" function computes: {"mode": "s2", "G": int} or
# {"mode": "dense"}. Set by set_attention() before each forward.
ATTN = {"mode": "dense", "G": None}


def set_attention(mode, G=None):
    assert mode in ("s2", "dense")
    ATTN["mode"], ATTN["G"] = mode, G


def s2_allowed_mask(N, H, G):
    """Bool [H, N, N]: allowed[h, i, j]. Heads [0, H/2): causal inside [0,G), [G,2G), ...;
    heads [H/2, H): causal inside [0,G/2), [G/2,3G/2), ..., the last segment clipped at N.
    (Shifted heads: query i >= G/2 sees keys from G/2 + floor((i - G/2)/G)*G up to i.)"""
    idx = torch.arange(N)
    causal = idx[None, :] <= idx[:, None]
    seg_plain = idx // G
    seg_shift = (idx + G // 2) // G
    m_plain = (seg_plain[:, None] == seg_plain[None, :]) & causal
    m_shift = (seg_shift[:, None] == seg_shift[None, :]) & causal
    return torch.stack([m_plain] * (H // 2) + [m_shift] * (H - H // 2))


def attention_core(query, key, value, scaling, allowed):
    """query [B,H,N,hd], key/value [B,Hkv,N,hd] (after RoPE); allowed bool [H or 1, N, N].
    Returns [B,N,H,hd]. GQA: query head h uses kv head h // (H/Hkv). Softmax in fp32 (fp64 if the
    inputs are fp64)."""
    B, H, N, hd = query.shape
    Hkv = key.shape[1]
    rep = H // Hkv
    k = key.repeat_interleave(rep, dim=1)
    v = value.repeat_interleave(rep, dim=1)
    cdt = torch.promote_types(query.dtype, torch.float32)
    scores = torch.matmul(query.to(cdt), k.to(cdt).transpose(2, 3)) * scaling
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=cdt).to(value.dtype)
    out = torch.matmul(probs, v)
    return out.transpose(1, 2).contiguous()


def s2attn_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Registered as transformers attention "s2attn". attention_mask is ignored (transformers
    passes None for custom implementations; batch 1, no padding here)."""
    assert dropout == 0.0
    B, H, N, hd = query.shape
    if ATTN["mode"] == "s2":
        allowed = s2_allowed_mask(N, H, ATTN["G"])
    else:
        allowed = torch.ones(N, N, dtype=torch.bool).tril()[None]
    return attention_core(query, key, value, scaling, allowed), None


AttentionInterface.register("s2attn", s2attn_forward)


def check_s2_function():
    """The registered function against make_fixtures.py's S2 reference (same math, sliced
    segment form, float64) and the stored s2attn_reference.safetensors; and against dense causal
    attention when G >= 2N."""
    print("S2-Attn function checks:")
    ref = load_file(S2_REF)
    for ci, (N, G, H, Hkv, hd) in enumerate(mf.S2_CASES, start=1):
        p = f"case{ci}_"
        q, k, v = ref[p + "q"].double(), ref[p + "k"].double(), ref[p + "v"].double()
        # [N, heads, hd] -> [1, heads, N, hd]
        to_hf = lambda x: x.permute(1, 0, 2)[None]
        for mode, G_ in (("s2", G), ("dense", None)):
            set_attention(mode, G_)
            out, _ = s2attn_forward(None, to_hf(q), to_hf(k), to_hf(v), None, 1.0 / math.sqrt(hd))
            out = out[0]  # [N, H, hd]
            want64 = mf.s2_segment(q, k, v, G) if mode == "s2" else mf.dense(q, k, v)
            want32 = ref[p + ("out_s2" if mode == "s2" else "out_dense")]
            d64, d32 = maxdiff(out, want64), maxdiff(out, want32)
            check(f"case{ci} {mode} vs make_fixtures float64 / stored fixture",
                  d64 < 1e-12 and d32 < 1e-6, f"{d64:.2e} / {d32:.2e}")
        # float32 path (what the model uses) against the float64 reference.
        set_attention("s2", G)
        out32, _ = s2attn_forward(None, to_hf(q.float()), to_hf(k.float()), to_hf(v.float()), None,
                                  1.0 / math.sqrt(hd))
        d = maxdiff(out32[0], mf.s2_segment(q, k, v, G))
        check(f"case{ci} s2 float32 vs float64 reference", d < 1e-5, f"{d:.2e}")
        # G >= 2N: both halves see one segment [0, N) -> dense causal.
        set_attention("s2", 2 * N)
        o_big, _ = s2attn_forward(None, to_hf(q), to_hf(k), to_hf(v), None, 1.0 / math.sqrt(hd))
        d = maxdiff(o_big[0], mf.dense(q, k, v))
        check(f"case{ci} s2 with G=2N vs dense", d < 1e-12, f"{d:.2e}")
    # The mask formula quoted in the brief, element by element, for the fixture's s2 case.
    N, G, H = S2_N, S2_G, 4
    m = s2_allowed_mask(N, H, G)
    ok = True
    for i in range(N):
        start_plain = (i // G) * G
        start_shift = 0 if i < G // 2 else max(0, G // 2 + ((i - G // 2) // G) * G)
        row_p = torch.zeros(N, dtype=torch.bool)
        row_p[start_plain:i + 1] = True
        row_s = torch.zeros(N, dtype=torch.bool)
        row_s[start_shift:i + 1] = True
        ok &= bool((m[0, i] == row_p).all() and (m[1, i] == row_p).all()
                   and (m[2, i] == row_s).all() and (m[3, i] == row_s).all())
    check("mask rows == explicit start formula (N=256, G=64, H=4)", ok)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def read_config_dict():
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        return json.load(f)


def load_base(factor, dtype=torch.float32, attn="s2attn"):
    """tiny_llama with rope_scaling linear factor (None for factor 1), the way LongLoRA sets it."""
    d = read_config_dict()
    d["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)} if factor != 1.0 else None
    cfg = LlamaConfig(**{k: v for k, v in d.items() if k not in ("architectures", "transformers_version")})
    model = LlamaForCausalLM.from_pretrained(MODEL_DIR, config=cfg, attn_implementation=attn, dtype=dtype)
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    rp = model.config.rope_parameters or {}
    rtype = rp.get("rope_type", rp.get("type", "default"))
    got = float(rp.get("factor", 1.0)) if rtype == "linear" else 1.0
    assert got == float(factor), (rp, factor)
    rot = model.model.rotary_emb
    # The rotary embedding really carries the factor: inv_freq = default / factor.
    hd = d["head_dim"]
    inv_default = 1.0 / (d["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    assert maxdiff(rot.inv_freq, inv_default / factor) < 1e-6, (rot.inv_freq, factor)
    model.train()
    return model


def lora_config():
    return LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM")


def fixture_name(peft_name):
    """Name used in the fixture for a trainable parameter of the peft model."""
    if ".lora_A." in peft_name or ".lora_B." in peft_name:
        return peft_name.replace(".default.", ".")  # peft's saved key (adapter name removed)
    assert peft_name.startswith("base_model.model."), peft_name
    return peft_name[len("base_model.model."):]  # HF name


def is_lora_plus_base(hf_name):
    """LongLoRA's trainable_params "embed,norm": embed_tokens + every RMSNorm weight."""
    return hf_name == "model.embed_tokens.weight" or hf_name.endswith("norm.weight")


def make_peft(base, init=None):
    """get_peft_model + LoRA+ trainables; LoRA weights from `init` (fixture names) or, if None,
    freshly drawn from the fixed seeds (returned)."""
    model = get_peft_model(base, lora_config())
    for n, p in model.named_parameters():
        if ".lora_A." in n or ".lora_B." in n:
            assert p.requires_grad, n
        else:
            p.requires_grad_(is_lora_plus_base(fixture_name(n)))
    lora = sorted((n, p) for n, p in model.named_parameters() if ".lora_" in n)
    with torch.no_grad():
        if init is None:
            ga = torch.Generator().manual_seed(SEED_LORA_A)
            gb = torch.Generator().manual_seed(SEED_LORA_B)
            for n, p in lora:  # sorted-name order
                if ".lora_A." in n:
                    # PEFT's default (init_lora_weights=True) A init, from a fixed generator.
                    tmp = torch.empty(p.shape, dtype=torch.float32)
                    torch.nn.init.kaiming_uniform_(tmp, a=math.sqrt(5), generator=ga)
                    p.copy_(tmp)
            for n, p in lora:
                if ".lora_B." in n:
                    p.copy_(LORA_B_STD * torch.randn(p.shape, generator=gb, dtype=torch.float32))
            init = {fixture_name(n): p.detach().float().clone() for n, p in lora}
        else:
            for n, p in lora:
                p.copy_(init[fixture_name(n)])
    model.train()
    return model, init


def trainables(model):
    """[(fixture name, param)] in sorted fixture-name order."""
    out = sorted(((fixture_name(n), p) for n, p in model.named_parameters() if p.requires_grad),
                 key=lambda kv: kv[0])
    return out


def expected_trainable_names(cfg):
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(cfg["num_hidden_layers"]):
        names += [f"model.layers.{i}.input_layernorm.weight",
                  f"model.layers.{i}.post_attention_layernorm.weight"]
        for t in TARGETS:
            for ab in ("A", "B"):
                names.append(f"base_model.model.model.layers.{i}.self_attn.{t}.lora_{ab}.weight")
    return sorted(names)


def loss_of(model, ids):
    """HF's loss (labels = input_ids, shifted inside the model): mean next-token CE."""
    ids = ids.long()[None]
    return model(input_ids=ids, labels=ids).loss


def loss_of_f64(model, ids):
    """Same loss computed here from the logits without casting: HF's loss function upcasts the
    logits with .float(), which would turn a float64 model's loss into float32."""
    ids = ids.long()
    logits = model(input_ids=ids[None]).logits[0]
    assert logits.dtype == torch.float64
    return F.cross_entropy(logits[:-1], ids[1:])


def forward_backward(model, ids):
    model.zero_grad(set_to_none=True)
    loss = loss_of(model, ids)
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in trainables(model)}
    return loss.detach().float(), grads


def rand_tokens(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(TOK_LO, TOK_HI, shape, generator=g, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# Independent float64 forward (LoRA merged, S2 via make_fixtures.s2_segment)
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def independent_loss(sd, cfg, init, ids, factor, G):
    """Plain float64 Llama forward written from DESIGN.md section 3 (not transformers / peft):
    LoRA merged as W + (alpha/r) B A, RoPE at p / factor, attention = make_fixtures.s2_segment
    (G given) or make_fixtures.dense. Returns mean next-token CE."""
    sd = {k: v.double() for k, v in sd.items()}
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd, eps, N = D // H, cfg["rms_norm_eps"], ids.numel()
    scale = ALPHA / R

    def W(i, t):
        base = sd[f"model.layers.{i}.self_attn.{t}.weight"]
        pre = f"base_model.model.model.layers.{i}.self_attn.{t}."
        return base + scale * init[pre + "lora_B.weight"].double() @ init[pre + "lora_A.weight"].double()

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = (torch.arange(N, dtype=torch.float64) / factor)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    x = sd["model.embed_tokens.weight"][ids.long()]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = rope((h @ W(i, "q_proj").T).view(N, H, hd))
        k = rope((h @ W(i, "k_proj").T).view(N, Hkv, hd))
        v = (h @ W(i, "v_proj").T).view(N, Hkv, hd)
        a = mf.s2_segment(q, k, v, G) if G is not None else mf.dense(q, k, v)
        x = x + a.reshape(N, D) @ W(i, "o_proj").T
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        x = x + (F.silu(h @ sd[p + "mlp.gate_proj.weight"].T) * (h @ sd[p + "mlp.up_proj.weight"].T)) \
            @ sd[p + "mlp.down_proj.weight"].T
    logits = rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T
    return F.cross_entropy(logits[:-1], ids[1:].long()).item()


# --------------------------------------------------------------------------------------------

def save_adapter(model, init):
    """model.save_pretrained of the initial adapter; keep exactly peft's two files."""
    if os.path.isdir(ADAPTER_DIR):
        shutil.rmtree(ADAPTER_DIR)
    model.save_pretrained(ADAPTER_DIR, safe_serialization=True)
    for name in sorted(os.listdir(ADAPTER_DIR)):
        if name not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(ADAPTER_DIR, name))  # peft's README.md model-card template
    saved = load_file(os.path.join(ADAPTER_DIR, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(model)
    ok = sorted(saved) == sorted(init) == sorted(state) and all(
        torch.equal(saved[k], init[k]) and saved[k].dtype == torch.float32 for k in init)
    check("adapter_model.safetensors keys/values == get_peft_model_state_dict == init.*", ok,
          f"{len(saved)} tensors")
    with open(os.path.join(ADAPTER_DIR, "adapter_config.json")) as f:
        ac = json.load(f)
    check("adapter_config.json r/alpha/targets",
          ac["r"] == R and ac["lora_alpha"] == ALPHA and sorted(ac["target_modules"]) == sorted(TARGETS),
          f"r={ac['r']} alpha={ac['lora_alpha']} targets={sorted(ac['target_modules'])} "
          f"base={ac.get('base_model_name_or_path')}")


def write_safetensors(path, tensors, metadata):
    """safetensors.torch.save with the header re-serialised in a fixed key order: the Rust
    writer stores __metadata__ from a HashMap, whose order changes from run to run. Tensor
    entries, offsets and data are unchanged (offsets are relative to the end of the header)."""
    from safetensors.torch import save
    blob = save(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = {k: header["__metadata__"][k] for k in sorted(header["__metadata__"])}
    ordered = {"__metadata__": header.pop("__metadata__")}
    ordered.update({k: header[k] for k in sorted(header)})
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    back = load_file(path)
    assert sorted(back) == sorted(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata


def main():
    # peft writes adapter_config.json's target_modules from a Python set; fix the string hash
    # seed so that its order (and the file) is the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    setup_determinism()
    os.chdir(REPO)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    cfg = read_config_dict()
    sd = load_file(os.path.join(MODEL_DIR, "model.safetensors"))
    out = {}

    check_s2_function()

    # ---- position interpolation ------------------------------------------------------------
    print("position interpolation checks (base model, dense attention, 256 tokens):")
    set_attention("dense")
    ids = rand_tokens(SEED_S2_TOKENS, (S2_N,))
    b1, b2 = load_base(1.0).eval(), load_base(S2_FACTOR).eval()
    with torch.no_grad():
        l1 = b1(input_ids=ids[None]).logits[0]
        l2 = b2(input_ids=ids[None]).logits[0]
        # factor 1 model fed fractional positions p/2 must give the factor-2 logits.
        l1_half = b1(input_ids=ids[None], position_ids=(torch.arange(S2_N, dtype=torch.float32) / 2)[None]).logits[0]
    d12 = maxdiff(l1, l2)
    check("factor 2 vs factor 1 logits differ", d12 > 1e-3, f"max|diff| = {d12:.4f}")
    check("factor 2 vs factor 1 at position 0 equal", maxdiff(l1[0], l2[0]) < 1e-6,
          f"{maxdiff(l1[0], l2[0]):.2e}")
    d = maxdiff(l2, l1_half)
    check("factor 2 logits == factor 1 with position_ids p/2", d < 1e-4, f"{d:.2e}")
    d = maxdiff(l2, mf.independent_forward(sd, cfg, ids, S2_FACTOR))
    check("factor 2 logits == make_fixtures independent float64 forward at p/2", d < 1e-4, f"{d:.2e}")
    del b1, b2

    # ---- case s2 ---------------------------------------------------------------------------
    print(f"case s2: N={S2_N}, G={S2_G}, rope factor {S2_FACTOR}:")
    model, init = make_peft(load_base(S2_FACTOR))
    names = [n for n, _ in trainables(model)]
    check("trainable set == LoRA A/B + embed_tokens + RMSNorm weights",
          names == expected_trainable_names(cfg), f"{len(names)} tensors")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("lm_head" in n for n in frozen)
    state_keys = sorted(get_peft_model_state_dict(model))
    check("LoRA fixture names == peft state-dict keys",
          state_keys == sorted(n for n in names if ".lora_" in n), f"{len(state_keys)} keys")
    save_adapter(model, init)
    for k, v in init.items():
        out[f"init.{k}"] = v

    set_attention("s2", S2_G)
    loss_s2, grads_s2 = forward_backward(model, ids)
    out["s2.tokens"] = ids.to(torch.int32)
    out["s2.loss"] = loss_s2.reshape(1)
    for k, g in grads_s2.items():
        out[f"s2.grad.{k}"] = g
    il = independent_loss(sd, cfg, init, ids, S2_FACTOR, S2_G)
    check("s2 loss (HF+peft+s2attn fp32) == independent float64 forward", abs(il - loss_s2.item()) < 1e-5,
          f"{loss_s2.item():.7f} vs {il:.7f}")
    with torch.no_grad():
        set_attention("dense")
        loss_s2_dense = loss_of(model, ids).item()
        set_attention("s2", 2 * S2_N)
        loss_s2_bigG = loss_of(model, ids).item()
    check("s2 loss differs from dense attention on the same tokens", abs(loss_s2_dense - loss_s2.item()) > 1e-4,
          f"s2 {loss_s2.item():.6f} vs dense {loss_s2_dense:.6f}")
    check("s2 with G=2N == dense", abs(loss_s2_bigG - loss_s2_dense) < 1e-6,
          f"{loss_s2_bigG:.7f} vs {loss_s2_dense:.7f}")
    il = independent_loss(sd, cfg, init, ids, S2_FACTOR, None)
    check("dense loss at factor 2 == independent float64 forward", abs(il - loss_s2_dense) < 1e-5,
          f"{loss_s2_dense:.7f} vs {il:.7f}")

    # Gradients: float64 copy of the same model (autograd) and central finite differences.
    print("  gradient checks (float64 model copy):")
    m64, _ = make_peft(load_base(S2_FACTOR, dtype=torch.float64), init)
    m64.double()
    set_attention("s2", S2_G)
    m64.zero_grad(set_to_none=True)
    l64 = loss_of_f64(m64, ids)
    l64.backward()
    check("float64 model loss == fp32 fixture loss", abs(l64.item() - loss_s2.item()) < 1e-5,
          f"{l64.item():.9f} vs {loss_s2.item():.7f}")
    g64 = {n: p.grad.detach().clone() for n, p in trainables(m64)}
    worst = 0.0
    for k, g in grads_s2.items():
        rel = ((g.double() - g64[k]).norm() / g64[k].norm().clamp_min(1e-30)).item()
        worst = max(worst, rel)
    check("fp32 grads vs fp64 grads (worst relative L2 error over tensors)", worst < 1e-4, f"{worst:.2e}")
    # Central finite differences of the independent float64 forward (LoRA merged, RoPE p/2,
    # make_fixtures.s2_segment); transformers' LlamaRMSNorm computes in float32 even in a float64
    # model, so the HF float64 copy is too noisy for finite differences at small h.
    tok = int(ids[5])
    probes = [
        ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", (3, 17)),
        ("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", (9, 2)),
        ("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", (7, 40)),
        ("model.embed_tokens.weight", (tok, 11)),
        ("model.layers.1.input_layernorm.weight", (23,)),
    ]
    h = 1e-5
    for name, idx in probes:
        vals = []
        for sign in (1, -1):
            sd_p = {k: v.double().clone() for k, v in sd.items()}
            init_p = {k: v.double().clone() for k, v in init.items()}
            target = init_p if ".lora_" in name else sd_p
            target[name][idx] += sign * h
            vals.append(independent_loss(sd_p, cfg, init_p, ids, S2_FACTOR, S2_G))
        fd = (vals[0] - vals[1]) / (2 * h)
        a64, a32 = g64[name][idx].item(), grads_s2[name][idx].item()
        ok = abs(fd - a32) <= 1e-7 + 1e-4 * abs(fd) and abs(fd - a64) <= 1e-7 + 1e-4 * abs(fd)
        check(f"finite difference (independent fp64 forward) {name}{list(idx)}", ok,
              f"fd {fd:.9e} fixture(fp32) {a32:.9e} HF-fp64 autograd {a64:.9e}")
    del m64

    # ---- case dense ------------------------------------------------------------------------
    print(f"case dense: N={DENSE_N}, rope factor {DENSE_FACTOR}:")
    ids_d = rand_tokens(SEED_DENSE_TOKENS, (DENSE_N,))
    model_d, _ = make_peft(load_base(DENSE_FACTOR), init)
    set_attention("dense")
    loss_d, grads_d = forward_backward(model_d, ids_d)
    out["dense.tokens"] = ids_d.to(torch.int32)
    out["dense.loss"] = loss_d.reshape(1)
    for k, g in grads_d.items():
        out[f"dense.grad.{k}"] = g
    il = independent_loss(sd, cfg, init, ids_d, DENSE_FACTOR, None)
    check("dense loss == independent float64 forward", abs(il - loss_d.item()) < 1e-5,
          f"{loss_d.item():.7f} vs {il:.7f}")
    model_e, _ = make_peft(load_base(DENSE_FACTOR, attn="eager"), init)
    loss_e, grads_e = forward_backward(model_e, ids_d)
    worst = max(maxdiff(grads_e[k], grads_d[k]) for k in grads_d)
    check("dense (s2attn fn, dense mask) == transformers eager: loss, grads",
          abs(loss_e.item() - loss_d.item()) < 1e-6 and worst < 1e-6,
          f"loss diff {abs(loss_e.item() - loss_d.item()):.2e}, max grad diff {worst:.2e}")
    del model_d, model_e

    # ---- optimizer run ---------------------------------------------------------------------
    print(f"train: {TRAIN_STEPS} AdamW steps, accumulation {TRAIN_ACCUM}, N={S2_N}, G={S2_G}, "
          f"factor {S2_FACTOR}, lr {LR}, max_grad_norm {MAX_GRAD_NORM}:")
    train_tokens = rand_tokens(SEED_TRAIN_TOKENS, (TRAIN_STEPS * TRAIN_ACCUM, S2_N))
    model_t, _ = make_peft(load_base(S2_FACTOR), init)
    set_attention("s2", S2_G)
    params = [p for _, p in trainables(model_t)]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    step_losses, step_norms = [], []
    for s in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        win_losses = []
        for j in range(TRAIN_ACCUM):
            lj = loss_of(model_t, train_tokens[TRAIN_ACCUM * s + j])
            (lj / TRAIN_ACCUM).backward()  # step loss = sum of window means / accum
            win_losses.append(lj.item())
        step_loss = sum(win_losses) / TRAIN_ACCUM
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=MAX_GRAD_NORM)
        opt.step()
        step_losses.append(step_loss)
        step_norms.append(norm.item())
        print(f"  step {s}: window losses {[round(x, 6) for x in win_losses]}, loss {step_loss:.6f}, "
              f"pre-clip grad norm {norm.item():.6f} ({'clipped' if norm.item() > MAX_GRAD_NORM else 'not clipped'})")
    check("clipping active in at least one step", max(step_norms) > MAX_GRAD_NORM,
          f"norms {[round(x, 4) for x in step_norms]}, max_norm {MAX_GRAD_NORM}")
    margin = min(abs(x - MAX_GRAD_NORM) / MAX_GRAD_NORM for x in step_norms)
    check("every pre-clip norm at least 2% away from max_norm (clip decision robust)", margin > 0.02,
          f"min relative margin {margin:.3f}")
    out["train.tokens"] = train_tokens.to(torch.int32)
    out["train.max_grad_norm"] = torch.tensor([MAX_GRAD_NORM], dtype=torch.float32)
    out["train.lr"] = torch.tensor([LR], dtype=torch.float32)
    out["train.loss"] = torch.tensor(step_losses, dtype=torch.float32)
    out["train.grad_norm"] = torch.tensor(step_norms, dtype=torch.float32)
    for k, p in trainables(model_t):
        out[f"train.after.{k}"] = p.detach().float().clone()
    moved = max(maxdiff(out[f"train.after.{k}"], init[k]) for k in init)
    check("LoRA weights moved", moved > 1e-4, f"max |after - init| over LoRA = {moved:.3e}")

    # ---- write -----------------------------------------------------------------------------
    out = {k: v.contiguous() for k, v in sorted(out.items())}
    for k, v in out.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        assert torch.isfinite(v.double()).all(), k
    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "generator": "tests/reference/make_training_fixtures.py",
        "description": (
            "LongLoRA training reference for tests/fixtures/tiny_llama: LoRA+ (peft r=8 alpha=16 "
            "q/k/v/o_proj, dropout 0; embed_tokens + RMSNorm weights trainable, lm_head frozen). "
            "init.*: initial LoRA A (kaiming_uniform a=sqrt5) and B (0.05 randn). "
            f"s2: N={S2_N} G={S2_G} rope linear factor {S2_FACTOR}, S2-Attn segment form; "
            f"dense: N={DENSE_N} factor {DENSE_FACTOR}, dense causal. loss = mean next-token CE; "
            "grad.* = d loss / d trainable. train: 3 AdamW steps (lr 1e-3, betas 0.9/0.95, eps 1e-8, "
            "wd 0, constant lr), accumulation 2 (loss = sum of window means / 2, one backward per "
            "window), clip_grad_norm_ max_norm before each step; train.loss / train.grad_norm per "
            "step (pre-update loss, pre-clip norm); train.after.* = trainables after 3 steps. "
            "LoRA names = peft saved keys; base names = HF names."),
    }
    write_safetensors(OUT, out, meta)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(out)} tensors)")

    # ---- summary ---------------------------------------------------------------------------
    print("summary:")
    print(f"  s2.loss {loss_s2.item():.7f}   (same tokens, dense attention: {loss_s2_dense:.7f})")
    print(f"  dense.loss {loss_d.item():.7f}")
    print(f"  train.loss {[round(x, 7) for x in step_losses]}")
    print(f"  train.grad_norm {[round(x, 7) for x in step_norms]} (max_grad_norm {MAX_GRAD_NORM})")
    for case, grads in (("s2", grads_s2), ("dense", grads_d)):
        tot = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads.values()))
        print(f"  {case} grads (total norm {tot:.6f}), max|g| per tensor:")
        for k, g in grads.items():
            print(f"    {k:66s} {tuple(g.shape)!s:10s} {g.abs().max().item():.4e}")
        zero_a = [k for k, g in grads.items() if ".lora_A." in k and g.abs().max().item() == 0.0]
        check(f"{case}: every lora_A gradient nonzero", not zero_a, f"zero: {zero_a}")
    total = os.path.getsize(OUT) + sum(os.path.getsize(os.path.join(ADAPTER_DIR, n))
                                       for n in os.listdir(ADAPTER_DIR))
    print(f"total size written: {total} bytes")


if __name__ == "__main__":
    main()
