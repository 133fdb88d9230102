#!/usr/bin/env python3
"""The PyTorch side of ./bench_train: one full LongLoRA optimizer step (forward, backward, grad
norm clipping, AdamW) of a Llama-2-7B-shaped model with random weights, the way the official
LongLoRA code trains: LoRA r 8 / alpha 16 on q,k,v,o, trainable embeddings and norms ("LoRA+"),
S2-Attn (G = N/4), linear position interpolation (factor ceil(N/4096)), per-layer gradient
checkpointing, bf16. Same columns as bench_train: ctx, G, step_ms (median), tokens/s,
MFU = 6 * P * tokens/s / peak (P = all weights but the embedding table, lm_head included) and
peak memory (torch.cuda.max_memory_allocated, reset per context).

--impl hf: transformers LlamaForCausalLM + peft, S2-Attn registered as an attention function.
--impl plain: the same model in plain PyTorch (for machines without transformers/peft).
--attn s2: the official training path (llama_attn_replace.py forward_flashattn: varlen segment
  boundaries, no wrap-around); s2-roll: the paper pseudocode / forward_noflashattn (roll half the
  heads by -G/2 with wrap-around); dense: full causal. See DESIGN.md section 3.
CPU smoke test: --device cpu --layers 1 --hidden 256 --intermediate 688 --heads 4 --vocab 1000
"""
import argparse
import contextlib
import gc
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:
    sdpa_kernel = None
try:
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None

KERNEL = "sdpa-default"  # "flash_attn" (varlen, like the original), "sdpa-flash" or "sdpa-default"
ATTN = "s2"              # s2 | s2-roll | dense (set from --attn)

def group_size(n):  # G = N/4, even (bench_train's s2_group_size with ratio 0.25)
    g = n // 4
    return max(2, g - g % 2)

def pi_factor(n, max_pos=4096):  # LongLoRA: ceil(target / max_position_embeddings), else 1
    return float(math.ceil(n / max_pos)) if n > max_pos else 1.0

def sdpa_ctx():  # force SDPA's flash backend when the probe showed it works
    return sdpa_kernel(SDPBackend.FLASH_ATTENTION) if KERNEL == "sdpa-flash" else contextlib.nullcontext()

# ---- attention cores: q, k, v and the result are [B, N, H, hd] -------------------------------
def _sdpa(q, k, v):  # causal attention of each batch row (= each group) separately
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True)
    return o.transpose(1, 2)

def s2_sdpa(q, k, v, G):
    """Official semantics: heads [0,H/2) causal in [0,G),[G,2G),...; heads [H/2,H) causal in
    [0,G/2),[G/2,3G/2),...,[N-G/2,N). Groups become batch rows (views, no wasted work); the
    shifted half's two half-length edge segments go in one extra call."""
    B, N, H, hd = q.shape
    h, g = H // 2, G // 2
    grp = lambda x, n: x.reshape(-1, n, x.shape[2], hd)  # [B, L, h, hd] -> [B*L/n, n, h, hd]
    a = _sdpa(*(grp(x[:, :, :h], G) for x in (q, k, v))).reshape(B, N, h, hd)
    sh = [x[:, :, h:] for x in (q, k, v)]
    edge = _sdpa(*(grp(torch.cat([x[:, :g], x[:, N - g:]], 1), g) for x in sh)).reshape(B, G, h, hd)
    parts = [edge[:, :g]]
    if N > G:
        parts.append(_sdpa(*(grp(x[:, g:N - g], G) for x in sh)).reshape(B, N - G, h, hd))
    b = torch.cat(parts + [edge[:, g:]], 1)
    return torch.cat([a, b], 2)

_CU = {}

def s2_flash_attn(q, k, v, G):
    """The official forward_flashattn: each head half becomes its own batch row, then
    flash_attn_varlen with cu_seqlens at 0,G,2G,... (first half) and 0,G/2,3G/2,... (second)."""
    B, N, H, hd = q.shape
    key = (B, N, G, q.device)
    if key not in _CU:
        b = []
        for s in range(2 * B):  # row order (b, half), as the original's permute gives
            b += [s * N + t for t in (range(0, N, G) if s % 2 == 0 else [0, *range(G // 2, N, G)])]
        _CU[key] = torch.tensor(b + [2 * B * N], dtype=torch.int32, device=q.device)
    cu = _CU[key]
    pack = lambda x: x.reshape(B, N, 2, H // 2, hd).transpose(1, 2).reshape(2 * B * N, H // 2, hd)
    o = flash_attn_varlen_func(pack(q), pack(k), pack(v), cu, cu, G, G, causal=True)
    return o.reshape(B, 2, N, H // 2, hd).transpose(1, 2).reshape(B, N, H, hd)

def s2_roll(q, k, v, G):
    """Paper pseudocode / forward_noflashattn: roll heads [H/2,H) by -G/2 along the sequence
    (wrap-around: the last group mixes [N-G/2,N) with [0,G/2)), attend causally in groups of G,
    roll back by +G/2."""
    B, N, H, hd = q.shape
    h = H // 2
    shift = lambda x: torch.cat([x[:, :, :h], x[:, :, h:].roll(-G // 2, 1)], 2).reshape(-1, G, H, hd)
    o = _sdpa(shift(q), shift(k), shift(v)).reshape(B, N, H, hd)
    return torch.cat([o[:, :, :h], o[:, :, h:].roll(G // 2, 1)], 2)

def attention(q, k, v, mode=None, kernel=None):
    mode, kernel = mode or ATTN, kernel or KERNEL
    if mode == "dense":
        return _sdpa(q, k, v)
    G = group_size(q.shape[1])
    if q.shape[1] % G:
        raise ValueError(f"S2-Attn needs N ({q.shape[1]}) divisible by G ({G}), as the original")
    if mode == "s2-roll":
        return s2_roll(q, k, v, G)
    return s2_flash_attn(q, k, v, G) if kernel == "flash_attn" else s2_sdpa(q, k, v, G)

# ---- plain PyTorch Llama + LoRA+ ---------------------------------------------------------------
class LoRALinear(nn.Module):
    """Frozen bf16 base + PEFT-style adapter: y = W x + (alpha/r) B(A x), A kaiming-uniform(a=sqrt5),
    B zero; adapters fp32 (PEFT upcasts them too), computed in bf16 under autocast."""

    def __init__(self, d_in, d_out, r=8, alpha=16):
        super().__init__()
        self.base = frozen_linear(d_in, d_out)
        self.lora_A, self.lora_B = nn.Linear(d_in, r, bias=False), nn.Linear(r, d_out, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling

def frozen_linear(d_in, d_out):
    m = nn.Linear(d_in, d_out, bias=False, dtype=torch.bfloat16)
    nn.init.normal_(m.weight, std=0.02)  # HF initializer_range
    m.weight.requires_grad_(False)
    return m

class RMSNorm(nn.Module):  # as HF LlamaRMSNorm; the weight is trainable and fp32
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

def rope(x, cos, sin):  # rotate-half form, x [B, N, H, hd], cos/sin [N, hd]
    x1, x2 = x.chunk(2, -1)
    return x * cos[:, None] + torch.cat([-x2, x1], -1) * sin[:, None]

class Layer(nn.Module):
    def __init__(self, d, f, H):
        super().__init__()
        self.H = H
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (LoRALinear(d, d) for _ in range(4))
        self.gate, self.up, self.down = frozen_linear(d, f), frozen_linear(d, f), frozen_linear(f, d)

    def forward(self, x, cos, sin):
        B, N, D = x.shape
        y = self.n1(x)
        q, k, v = (p(y).view(B, N, self.H, D // self.H) for p in (self.q, self.k, self.v))
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        x = x + self.o(attention(rope(q, cos, sin), rope(k, cos, sin), v).reshape(B, N, D))
        y = self.n2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))

class PlainLlama(nn.Module):
    def __init__(self, a, factor):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)  # trainable fp32
        nn.init.normal_(self.embed.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(a.hidden, a.intermediate, a.heads) for _ in range(a.layers))
        self.norm, self.lm_head = RMSNorm(a.hidden), frozen_linear(a.hidden, a.vocab)
        hd = a.hidden // a.heads
        self.inv_freq = 1.0 / 10000.0 ** (torch.arange(0, hd, 2).float() / hd)
        self.factor = factor

    def loss(self, ids):
        N = ids.shape[1]
        with torch.autocast(ids.device.type, enabled=False):  # RoPE tables in fp32, like HF
            t = torch.arange(N, device=ids.device).float() / self.factor  # position interpolation
            fr = torch.outer(t, self.inv_freq.to(ids.device))
            emb = torch.cat([fr, fr], -1)
            cos, sin = emb.cos(), emb.sin()
        # The bf16 cast keeps the residual stream (and the checkpointed layer inputs) in bf16 as in
        # the original's all-bf16 DeepSpeed model, although the embedding master is fp32.
        x = self.embed(ids).to(torch.bfloat16)
        for layer in self.layers:
            x = checkpoint(layer, x, cos, sin, use_reentrant=False)
        # Like HF: full [N, vocab] logits (bf16 under autocast), then .float() in the loss. At 32k
        # that is 2 GiB bf16 + 4 GiB fp32 (+ the softmax grad): part of what we compare against.
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])

# ---- Hugging Face transformers + peft ------------------------------------------------------------
def hf_available():
    try:
        import peft  # noqa: F401
        from transformers import AttentionInterface  # noqa: F401 (>= 4.48)
        return True
    except ImportError:
        return False

def hf_s2_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kw):
    """S2-Attn patch (the role of llama_attn_replace.py): HF hands q,k,v as [B, H, N, hd]
    after RoPE; no mask is built for this custom name (causal is implied)."""
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # scaling = hd^-0.5 = SDPA default
    if k.shape[2] != q.shape[2]:  # GQA
        k, v = (x.repeat_interleave(q.shape[2] // x.shape[2], 2) for x in (k, v))
    return attention(q, k, v).contiguous(), None

class HFLoss(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def loss(self, ids):  # HF builds full [N, vocab] logits and .float()s them in its loss
        return self.m(input_ids=ids, labels=ids, use_cache=False).loss

def build_hf(a, factor):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
    base = "flash_attention_2" if flash_attn_varlen_func is not None else "sdpa"
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.heads, vocab_size=a.vocab, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, use_cache=False,
                      rope_scaling={"type": "linear", "factor": factor}, attn_implementation=base)
    dt = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.bfloat16}
    with torch.device(a.device):
        m = LlamaForCausalLM._from_config(cfg, **dt)
    if ATTN != "dense":
        AttentionInterface.register("longlora_s2", hf_s2_attention)
        m.config._attn_implementation = "longlora_s2"
    m.train()  # HF checkpoints only in training mode
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                     task_type="CAUSAL_LM"))
    for n, p in m.named_parameters():  # LongLoRA's --trainable_params embed,norm; fp32 masters
        if "embed" in n or "norm" in n:
            p.data = p.data.float()
            p.requires_grad_(True)
    # Same reason as in PlainLlama: keep the residual stream bf16.
    m.get_input_embeddings().register_forward_hook(lambda mod, i, o: o.to(torch.bfloat16))
    return HFLoss(m), f"transformers {transformers.__version__} ({cfg._attn_implementation if ATTN == 'dense' else 'longlora_s2'})"

# ---- probes, self-check, benchmark ----------------------------------------------------------------
def pick_kernel(dev, want):
    dt = torch.bfloat16
    x = lambda: torch.randn(1, 64, 4, 64, device=dev, dtype=dt, requires_grad=True)
    if want in ("auto", "flash_attn") and flash_attn_varlen_func is not None and dev == "cuda":
        try:
            q, k, v = x(), x(), x()
            s2_flash_attn(q, k, v, 16).sum().backward()
            if (s2_flash_attn(q, k, v, 16) - s2_sdpa(q, k, v, 16)).abs().max() < 2e-2:
                return "flash_attn", ""
        except Exception as e:  # noqa: BLE001 - any failure: fall back to SDPA
            print(f"flash_attn probe failed ({e}); using SDPA")
    if sdpa_kernel is None:
        return "sdpa-default", " (no torch.nn.attention.sdpa_kernel)"
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            _sdpa(x(), x(), x()).sum().backward()
        return "sdpa-flash", ""
    except RuntimeError as e:
        return "sdpa-default", f" (flash backend unavailable: {str(e).splitlines()[0][:80]})"

def self_check(dev):
    """S2 implementations vs attention with explicit [N, N] masks, fp64 reference."""
    ok = True
    dt = torch.float32 if dev == "cpu" else torch.bfloat16
    kernels = ["sdpa-flash" if KERNEL == "sdpa-flash" else "sdpa-default"] + (["flash_attn"] if KERNEL == "flash_attn" else [])
    for B, N, H, hd in [(1, 64, 4, 16), (2, 128, 6, 32), (1, 48, 2, 64)]:
        G, g = group_size(N), group_size(N) // 2
        q, k, v = (torch.randn(B, N, H, hd, device=dev).to(dt) for _ in range(3))
        p = torch.arange(N, device=dev)
        i, j = p[:, None], p[None, :]
        seg = lambda s: (j <= i) & (s[i] == s[j])  # causal inside a segment
        r = (p - g) % N                             # rolled position of original token p
        masks = {"dense": j <= i,
                 "s2": (seg(p // G), seg((p + g) // G)),
                 "s2-roll": (seg(p // G), (r[j] <= r[i]) & (r[i] // G == r[j] // G))}
        for mode, m in masks.items():
            full = m if mode == "dense" else torch.stack([m[0]] * (H // 2) + [m[1]] * (H - H // 2))
            s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / math.sqrt(hd)
            ref = torch.einsum("bhij,bjhd->bihd", s.masked_fill(~full, float("-inf")).softmax(-1), v.double())
            for kern in kernels if mode == "s2" else kernels[:1]:
                with (sdpa_ctx() if kern == "sdpa-flash" else contextlib.nullcontext()):
                    out = attention(q, k, v, mode, kern).double()
                err = ((out - ref).norm() / ref.norm()).item()
                good = err < (1e-5 if dt == torch.float32 else 1e-2)
                ok &= good
                print(f"self-check B{B} N{N} G{G} H{H} {mode:8s} {kern:12s} rel err {err:.2e} {'ok' if good else 'FAIL'}")
        leak = ((attention(q, k, v, "s2-roll") - attention(q, k, v, "s2")).abs().max()).item()
        print(f"self-check N{N}: s2-roll differs from s2 by {leak:.3f} (the wrap-around groups)")
    return ok

def peak_tflops(name):  # same table as bench_train
    if "H100 PCIe" in name:
        return 756.0
    if any(s in name for s in ("H100", "H200", "GH200")):
        return 989.0
    return 312.0 if "A100" in name else None

def run_ctx(a, N, impl):
    factor = pi_factor(N)
    if impl == "hf":
        model, _ = build_hf(a, factor)
    else:
        with torch.device(a.device):
            model = PlainLlama(a, factor)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                            fused=a.device == "cuda")
    ids = torch.randint(0, a.vocab, (1, N), generator=torch.Generator().manual_seed(7)).to(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    times, losses = [], []
    for s in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with sdpa_ctx():  # the flag is global, so it also covers checkpoint recompute
            with torch.autocast(a.device, dtype=torch.bfloat16):
                loss = model.loss(ids)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sync()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return times, losses

def main():
    global KERNEL, ATTN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ctx", default="8192,32768", help="comma-separated context lengths")
    # --hidden/--intermediate/--heads/--vocab: small shapes for smoke tests (default Llama-2-7B)
    for k, v in [("layers", 32), ("steps", 3), ("warmup", 1), ("hidden", 4096),
                 ("intermediate", 11008), ("heads", 32), ("vocab", 32000)]:
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--attn", default="s2", choices=["s2", "s2-roll", "dense"])
    ap.add_argument("--attn-kernel", default="auto", choices=["auto", "sdpa", "flash_attn"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--impl", default="auto", choices=["auto", "plain", "hf"])
    ap.add_argument("--json")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--self-check", action="store_true", help="check the S2 cores against masks, exit")
    a = ap.parse_args()
    ATTN = a.attn
    torch.manual_seed(0)
    KERNEL, why = pick_kernel(a.device, a.attn_kernel)
    if a.self_check:
        raise SystemExit(0 if self_check(a.device) else 1)
    impl = ("hf" if hf_available() else "plain") if a.impl == "auto" else a.impl
    if impl == "hf" and not hf_available():
        raise SystemExit("--impl hf needs transformers >= 4.48 (AttentionInterface) and peft")
    name = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    peak = peak_tflops(name)
    d, f, L, V = a.hidden, a.intermediate, a.layers, a.vocab
    P = L * (4 * d * d + 3 * d * f + 2 * d) + d + V * d  # bench_train's params_through
    kdesc = {"flash_attn": "flash_attn varlen (as the original)", "sdpa-flash": "SDPA flash backend",
             "sdpa-default": "SDPA default backend"}[KERNEL] + why
    if impl == "hf" and a.attn == "dense":
        kdesc = ("HF flash_attention_2" if flash_attn_varlen_func else "HF sdpa") + f", {kdesc}"
    print(f"torch {torch.__version__} | device {name} | impl {impl} | attention {a.attn}: {kdesc}")
    print(f"model     Llama-2 shape d{d} f{f} H{a.heads} V{V}, {L} layers, random weights; LoRA r 8 "
          f"alpha 16 on q,k,v,o + embeddings and norms (fp32 masters, frozen bf16, autocast bf16); "
          f"{'S2-Attn G = N/4' if a.attn != 'dense' else 'dense causal'}; PI ceil(N/4096); "
          f"per-layer checkpointing; AdamW{' fused' if a.device == 'cuda' else ''}, clip 1.0")
    print(f"MFU       6 x {P:.3g} params x tokens/s / {peak if peak else '(unknown peak)'} TFLOP/s")
    print(f"{'ctx':>7} {'G':>6} {'step_ms':>10} {'tokens/s':>10} {'MFU':>7} {'peak_GiB':>10}  loss first->last")
    rows = []
    for N in (int(c) for c in a.ctx.split(",")):
        G = group_size(N) if a.attn != "dense" else 0
        if a.device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            times, losses = run_ctx(a, N, impl)
        except torch.cuda.OutOfMemoryError:
            times = None
        if times is None:
            print(f"{N:>7} {G:>6} {'OOM':>10}", flush=True)
            rows.append({"ctx": N, "group_size": G, "attn": a.attn, "layers": L, "oom": True})
            continue
        t = statistics.median(times)
        tok_s = N / t
        mfu = 6 * P * tok_s / (peak * 1e12) if peak else None
        pb = torch.cuda.max_memory_allocated() if a.device == "cuda" else None
        print(f"{N:>7} {G:>6} {t * 1e3:>10.1f} {tok_s:>10.0f} {f'{mfu * 100:.1f}%' if mfu else '-':>7} "
              f"{f'{pb / 2**30:.2f}' if pb else '-':>10}  {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
        rows.append({"ctx": N, "group_size": G, "attn": a.attn, "layers": L, "step_ms": t * 1e3,
                     "step_ms_all": [x * 1e3 for x in times], "tokens_per_s": tok_s, "mfu": mfu,
                     "loss": losses[-1], "losses": losses, "peak_bytes": pb, "oom": False})
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"backend": f"torch {torch.__version__} {name}", "impl": impl, "attention": kdesc,
                       "params_through": P, "peak_tflops": peak, "rows": rows}, fh, indent=2)

if __name__ == "__main__":
    main()
