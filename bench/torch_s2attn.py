#!/usr/bin/env python3
"""The PyTorch side of ./bench_s2attn: attention alone, S2-Attn vs dense causal, forward and
backward, bf16, on the same shapes, with the same rows, columns and --json keys (so that one
table can hold both).

dense:  F.scaled_dot_product_attention on [B, H, N, hd], is_causal=True, under
        sdpa_kernel(SDPBackend.FLASH_ATTENTION) on CUDA (--backend).
S2:     the way the official LongLoRA repository runs it in training:
  varlen  (when flash_attn is importable; mode "s2"): forward_flashattn, each head half its own
          packed sequence, flash_attn_varlen_func with cu_seqlens at 0, G, 2G, ... (first half)
          and 0, G/2, 3G/2, ..., N (second half): segment boundaries, no wrap-around.
  group   (otherwise; mode "s2-roll"): forward_noflashattn's group form: heads [H/2, H) rolled by
          -G/2 along the sequence (wrap-around), all heads reshaped to N/G groups of G as a batch,
          SDPA causal (flash backend), result rolled back. The roll, reshape and roll-back copies
          are inside the timed region (they are part of that path).
  The script prints which one it used; --s2-impl forces one.
Timing: CUDA events around the call, the L2 cache flushed (zeroing a buffer of twice the L2
size) before each timed region and outside it; median over --iters after --warmup. Forward runs
with autograd recording (as in training); backward = out.backward(dout) with a random dout,
given a forward done untimed (or just timed, for --dir both); fwd+bwd = per-iteration sum.
FLOPs as bench_s2attn (DESIGN.md 6): forward 4 * hd * visible query-key pairs (all heads),
backward 2.5x, fwd+bwd 3.5x; dense pairs N(N+1)/2 per head; group form: (N/G) * G(G+1)/2 per head;
varlen: the official segments (two half segments on the shifted half).
CPU smoke test (timings mean nothing): --device cpu --n 64,128 --heads 4 --hd 32 --iters 2 --warmup 1
"""
import argparse
import contextlib
import datetime
import gc
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:
    SDPBackend = sdpa_kernel = None
try:
    from flash_attn import flash_attn_varlen_func
except ImportError:
    flash_attn_varlen_func = None


# ---- FLOP accounting: the same visible-pair count as bench_s2attn -------------------------
def tri(n):
    return n * (n + 1) // 2


def segmented_pairs(n, g):  # causal pairs of n tokens in segments of g (ragged last)
    return 0 if n <= 0 else (n // g) * tri(g) + tri(n % g)


def visible_pairs(mode, n, g, heads):
    if mode == "dense":
        return heads * tri(n)
    unshifted, shifted = heads // 2, heads - heads // 2
    if mode == "s2-roll":  # rolled order: segments [kG, kG+G) on every head
        return heads * segmented_pairs(n, g)
    s = g // 2  # s2: shifted heads see [0, G/2), then [G/2 + kG, ...)
    return unshifted * segmented_pairs(n, g) + shifted * (tri(n) if n <= s else tri(s) + segmented_pairs(n - s, g))


def group_size(n, ratio):  # = ll::s2_group_size: N * ratio rounded down to even, at least 2
    g = int(n * ratio)
    g -= g % 2
    return max(2, g)


# ---- attention forms; every input is [B, N, H, hd] -----------------------------------------
def sdpa_ctx(backend):
    if sdpa_kernel is None or backend == "default":
        return contextlib.nullcontext()
    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH,
                        "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend])


def dense(q, k, v, G):  # q, k, v: [B, H, N, hd] contiguous (the layout SDPA wants)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def s2_group(q, k, v, G):
    """forward_noflashattn's shift(): roll heads [H/2, H) by -G/2 (wrap-around), N/G groups of G
    as a batch, causal attention per group, roll back."""
    B, N, H, hd = q.shape
    h = H // 2
    shift = lambda x: torch.cat([x[:, :, :h], x[:, :, h:].roll(-G // 2, 1)], 2) \
        .reshape(B * (N // G), G, H, hd).transpose(1, 2)
    o = F.scaled_dot_product_attention(shift(q), shift(k), shift(v), is_causal=True)
    o = o.transpose(1, 2).reshape(B, N, H, hd)
    return torch.cat([o[:, :, :h], o[:, :, h:].roll(G // 2, 1)], 2)


_CU = {}


def s2_varlen(q, k, v, G):
    """forward_flashattn: each head half its own packed sequence; flash_attn_varlen_func with
    cu_seqlens 0, G, 2G, ... (first half) and 0, G/2, 3G/2, ..., N (second half)."""
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


def explicit(q, k, v, mode, G):
    """fp64 reference with an explicit [N, N] mask per head class (for --check)."""
    B, N, H, hd = q.shape
    p = torch.arange(N)
    i, j = p[:, None], p[None, :]
    if mode == "dense":
        full = (j <= i).expand(H, N, N)
    else:
        g = G // 2
        a = (j <= i) & (i // G == j // G)
        if mode == "s2":
            b = (j <= i) & ((i + g) // G == (j + g) // G)
        else:
            r = (p - g) % N
            b = (r[j] <= r[i]) & (r[i] // G == r[j] // G)
        full = torch.stack([a] * (H // 2) + [b] * (H - H // 2))
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / hd ** 0.5
    return torch.einsum("bhij,bjhd->bihd", s.masked_fill(~full, float("-inf")).softmax(-1), v.double()), full


def check(dev, backend, s2_form):
    """The S2 form this script times vs an explicit mask, and the pair count vs the mask."""
    ok = True
    for B, N, H, hd, G in [(1, 64, 4, 32, 16), (2, 96, 6, 64, 24), (1, 32, 2, 32, 32)]:
        q, k, v = (torch.randn(B, N, H, hd, device=dev).to(torch.bfloat16) for _ in range(3))
        mode = "s2" if s2_form == "varlen" else "s2-roll"
        for m, fn in (("dense", None), (mode, s2_group if s2_form == "group" else s2_varlen)):
            ref, full = explicit(q.cpu(), k.cpu(), v.cpu(), m, G)
            with sdpa_ctx(backend):
                if fn is None:
                    out = dense(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), G).transpose(1, 2)
                else:
                    out = fn(q, k, v, G)
            err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
            pairs_ok = int(full.sum()) * B == visible_pairs(m, N, G, H) * B
            good = err < 1e-2 and pairs_ok
            ok &= good
            print(f"check B{B} N{N} G{G} H{H} hd{hd} {m:8s} rel err {err:.1e}, pairs "
                  f"{'match' if pairs_ok else 'DIFFER'}: {'ok' if good else 'FAIL'}")
    return ok


# ---- timing ----------------------------------------------------------------------------------
class Timer:
    def __init__(self, dev):
        self.cuda = dev == "cuda"
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            l2 = getattr(props, "L2_cache_size", 0) or 64 << 20
            self.flush_buf = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
            self.ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]

    def flush(self):
        if self.cuda:
            self.flush_buf.zero_()

    def time(self, fn):  # ms of fn() alone, L2 flushed before
        self.flush()
        if self.cuda:
            self.ev[0].record()
            r = fn()
            self.ev[1].record()
            self.ev[1].synchronize()
            return self.ev[0].elapsed_time(self.ev[1]), r
        t0 = time.perf_counter()
        r = fn()
        return (time.perf_counter() - t0) * 1e3, r


def measure(a, timer, attn, shape_bnhd, G, do_fwd, do_bwd):
    B, N, H, hd = shape_bnhd
    dev, dt = a.device, torch.bfloat16
    mk = lambda: torch.rand(shape_bnhd, device=dev, dtype=dt).mul_(2).sub_(1).requires_grad_(do_bwd)
    q, k, v = mk(), mk(), mk()
    dout = torch.rand(shape_bnhd, device=dev, dtype=dt).mul_(2).sub_(1)
    fwd_ms, bwd_ms = [], []

    def once():
        for x in (q, k, v):
            x.grad = None
        with sdpa_ctx(a.backend):
            if do_fwd:
                f, out = timer.time(lambda: attn(q, k, v, G))
            else:
                out, f = attn(q, k, v, G), 0.0
            b = 0.0
            if do_bwd:
                b, _ = timer.time(lambda: out.backward(dout))
        return f, b

    for _ in range(max(a.warmup, 1)):
        once()
    for _ in range(a.iters):
        f, b = once()
        fwd_ms.append(f)
        bwd_ms.append(b)
    return fwd_ms, bwd_ms


def speedup_text(r):
    return f"{r['speedup']:.1f}x" if r.get("speedup") else "-"


def print_row(r):
    g = r["group_size"] or "-"
    if r["oom"] or r["ms"] is None:
        what = "OOM" if r["oom"] else "skipped"
        print(f"{r['n']:>7} {g:>6} {r['heads']:>5} {r['kv_heads']:>3} {r['hd']:>4} {r['dir']:>7} "
              f"{r['mode']:>7} {what:>10} {'-':>8} {'-':>8}", flush=True)
        return
    print(f"{r['n']:>7} {g:>6} {r['heads']:>5} {r['kv_heads']:>3} {r['hd']:>4} {r['dir']:>7} "
          f"{r['mode']:>7} {r['ms']:>10.3f} {r['tflops']:>8.1f} {speedup_text(r):>8}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="4096,8192,16384,32768,65536", help="sequence lengths (comma list)")
    ap.add_argument("--ratio", type=float, default=0.25, help="G = N x ratio, rounded down to even")
    ap.add_argument("--g", type=int, default=0, help="fixed S2 group size (even; overrides --ratio)")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--hd", type=int, default=128, choices=[32, 64, 128])
    ap.add_argument("--batch", type=int, default=1, help="sequences per call (a real batch dimension)")
    ap.add_argument("--mode", default="both", choices=["s2", "dense", "both"])
    ap.add_argument("--dir", default="both", choices=["fwd", "bwd", "both"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--backend", default="auto", choices=["auto", "flash", "math", "efficient", "default"],
                    help="SDPA backend (auto: flash on CUDA, math on the CPU)")
    ap.add_argument("--s2-impl", default="auto", choices=["auto", "varlen", "group"],
                    help="auto: flash_attn varlen when importable on CUDA, else the group form")
    ap.add_argument("--json", help="also write the rows as JSON (bench_s2attn's keys)")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table for bench/RESULTS.md")
    ap.add_argument("--check", action="store_true", help="check the attention forms against explicit masks, exit")
    a = ap.parse_args()
    if a.backend == "auto":
        a.backend = "flash" if a.device == "cuda" else "math"
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("torch_s2attn: CUDA is not available to torch (use --device cpu for a smoke test)")
    s2_form = a.s2_impl
    if s2_form == "auto":
        s2_form = "varlen" if flash_attn_varlen_func is not None and a.device == "cuda" else "group"
    if s2_form == "varlen" and flash_attn_varlen_func is None:
        raise SystemExit("torch_s2attn: --s2-impl varlen needs the flash_attn package")
    if a.heads % 2 or a.heads < 2:
        raise SystemExit(f"torch_s2attn: S2-Attn needs an even number of heads, got {a.heads}")
    if a.g and (a.g < 2 or a.g % 2):
        raise SystemExit(f"torch_s2attn: --g must be even and at least 2, got {a.g}")
    torch.manual_seed(0)
    if a.check:
        raise SystemExit(0 if check(a.device, a.backend, s2_form) else 1)

    s2_mode = "s2" if s2_form == "varlen" else "s2-roll"
    s2_desc = ("flash_attn_varlen_func with the official cu_seqlens (forward_flashattn; no wrap)"
               if s2_form == "varlen" else
               f"group form (forward_noflashattn: roll -G/2 with wrap, N/G groups as a batch), SDPA {a.backend}")
    card = torch.cuda.get_device_name() if a.device == "cuda" else "CPU"
    commit = os.environ.get("LL_COMMIT") or "unknown"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    timer = Timer(a.device)
    print(f"torch     {torch.__version__} | device {card} | CUDA runtime {torch.version.cuda}")
    print(f"dense     SDPA {a.backend} backend, [B, H, N, hd], is_causal=True")
    print(f"S2        mode {s2_mode}: {s2_desc}")
    print(f"shape     bf16, heads {a.heads}, hd {a.hd}, batch {a.batch}; timing "
          f"{'CUDA events, L2 flushed' if a.device == 'cuda' else 'perf_counter (CPU: meaningless)'}, "
          f"median of {a.iters} after {max(a.warmup, 1)} warm-up; commit {commit}, {date}")
    print("FLOPs     fwd 4 x hd x visible pairs (all heads), bwd 2.5 x fwd; speedup = dense ms / S2 ms")
    print(f"{'N':>7} {'G':>6} {'heads':>5} {'kv':>3} {'hd':>4} {'dir':>7} {'mode':>7} {'ms':>10} "
          f"{'TFLOP/s':>8} {'speedup':>8}")
    do_fwd, do_bwd = a.dir != "bwd", a.dir != "fwd"
    dirs = (["fwd"] if do_fwd else []) + (["bwd"] if do_bwd else []) + (["fwd+bwd"] if do_fwd and do_bwd else [])
    modes = (["dense"] if a.mode != "s2" else []) + ([s2_mode] if a.mode != "dense" else [])
    rows = []
    for N in (int(x) for x in a.n.split(",")):
        G = a.g or group_size(N, a.ratio)
        dense_ms = {}
        for mode in modes:
            pairs = visible_pairs(mode, N, G, a.heads) * a.batch
            f1 = 4.0 * pairs * a.hd
            skipped = mode != "dense" and N % G != 0  # both official forms need N % G == 0
            oom = False
            fwd_ms = bwd_ms = None
            if not skipped:
                if a.device == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
                try:
                    if mode == "dense":
                        fwd_ms, bwd_ms = measure(a, timer, dense, (a.batch, a.heads, N, a.hd), G, do_fwd, do_bwd)
                    else:
                        fn = s2_varlen if s2_form == "varlen" else s2_group
                        fwd_ms, bwd_ms = measure(a, timer, fn, (a.batch, N, a.heads, a.hd), G, do_fwd, do_bwd)
                except torch.cuda.OutOfMemoryError:
                    oom = True
            else:
                print(f"(N {N} is not a multiple of G {G}: the official S2 forms need that; row skipped)")
            for d in dirs:
                ms_all = None
                if fwd_ms is not None:
                    ms_all = fwd_ms if d == "fwd" else bwd_ms if d == "bwd" else [x + y for x, y in zip(fwd_ms, bwd_ms)]
                ms = statistics.median(ms_all) if ms_all else None
                flops = f1 * {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[d]
                r = {"n": N, "group_size": None if mode == "dense" else G, "heads": a.heads,
                     "kv_heads": a.heads, "hd": a.hd, "batch": a.batch, "dir": d, "mode": mode,
                     "oom": oom, "ms": ms, "ms_all": ms_all or [],
                     "tflops": flops / (ms * 1e-3) / 1e12 if ms else None, "flops": flops,
                     "visible_pairs": pairs, "speedup": None,
                     "iters": a.iters if ms else 0, "warmup": max(a.warmup, 1) if ms else 0}
                if skipped:
                    r["skipped"] = "N not a multiple of G"
                if mode == "dense" and ms:
                    dense_ms[d] = ms
                elif ms and d in dense_ms:
                    r["speedup"] = dense_ms[d] / ms
                print_row(r)
                rows.append(r)
    if a.markdown:
        print("\n| card | date | commit | N | G | heads | hd | dir | mode | ms | TFLOP/s | speedup |")
        print("|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|")
        for r in rows:
            ms = "OOM" if r["oom"] else "-" if r["ms"] is None else f"{r['ms']:.3f}"
            tf = "-" if r["tflops"] is None else f"{r['tflops']:.1f}"
            print(f"| {card} (torch) | {date} | {commit} | {r['n']} | {r['group_size'] or '-'} | "
                  f"{r['heads']} | {r['hd']} | {r['dir']} | {r['mode']} | {ms} | {tf} | {speedup_text(r)} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"tool": "torch_s2attn", "impl": f"torch-{s2_form}",
                       "impl_description": f"dense: SDPA {a.backend}; S2: {s2_desc}",
                       "device": card, "driver_version": None, "runtime_version": torch.version.cuda,
                       "torch_version": torch.__version__, "commit": commit, "date": date,
                       "mask_form": s2_mode,
                       "l2_flush_bytes": timer.flush_buf.numel() if a.device == "cuda" else 0,
                       "flop_convention": "fwd 4*hd*visible_pairs, bwd 2.5x fwd, fwd+bwd 3.5x fwd",
                       "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
