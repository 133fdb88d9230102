#!/usr/bin/env python3
"""Write tests/fixtures/adamw_reference.safetensors: torch.optim.AdamW on a small fp32 tensor.

The C++ AdamW (optim/adamw.cpp) is compared against these values by tests/optim/test_adamw.cpp;
the test does not need Python. Regenerate with

    python3 tests/reference/make_optim_fixture.py

torch.optim.AdamW(foreach=False, fused=False) on the CPU, lr 1e-3, betas (0.9, 0.95), eps 1e-8,
over N = 101 fp32 elements and 5 steps, three runs from the same initial parameter and gradients:

  wd0      weight_decay 0
  wd01     weight_decay 0.1
  scaled   weight_decay 0.1, and each gradient multiplied in place by grad_scale (0.37) before
           the step, as clip_grad_norm_ does with its clipping coefficient

Tensors (all float32):
  param_init         [N]     initial parameter, N(0, 1)
  grads              [5, N]  gradient of step k (1-based) in row k-1: N(0, 1) * scale_k with
                             scale_k = 1, 0.3, 2, 1e-4, 1 (a tiny one makes eps and the moments'
                             memory matter)
  grad_scale         [1]     0.37
  {run}_params       [5, N]  parameter after step k in row k-1
  {run}_exp_avg      [N]     first moment after step 5
  {run}_exp_avg_sq   [N]     second moment after step 5
Metadata: one key, "adamw": "lr=0.001 beta1=0.9 beta2=0.95 eps=1e-08 steps=5 ... torch=VERSION".

Self-check: every run is recomputed by an independent float64 AdamW written here from the
formula; the script exits non-zero if they differ by more than 1e-6 (relative, norm-wise).
Deterministic: fixed seed, CPU, one thread.
"""
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "adamw_reference.safetensors"))

N = 101
STEPS = 5
LR = 1e-3
BETAS = (0.9, 0.95)
EPS = 1e-8
GRAD_SCALE = 0.37
GRAD_SCALES = [1.0, 0.3, 2.0, 1e-4, 1.0]
RUNS = [("wd0", 0.0, False), ("wd01", 0.1, False), ("scaled", 0.1, True)]


def run_torch(param_init, grads, weight_decay, scaled):
    p = torch.nn.Parameter(param_init.clone())
    opt = torch.optim.AdamW([p], lr=LR, betas=BETAS, eps=EPS, weight_decay=weight_decay,
                            foreach=False, fused=False)
    params = []
    for k in range(STEPS):
        g = grads[k].clone()
        if scaled:
            g.mul_(GRAD_SCALE)  # what clip_grad_norm_ does with its coefficient
        p.grad = g
        opt.step()
        params.append(p.detach().clone())
    state = opt.state[p]
    return torch.stack(params), state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def run_float64(param_init, grads, weight_decay, scaled):
    """AdamW from its formula (Loshchilov & Hutter with torch's eps placement), in float64."""
    p = param_init.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    b1, b2 = BETAS
    params = []
    for k in range(STEPS):
        g = grads[k].double()
        if scaled:
            g = g * float(torch.tensor(GRAD_SCALE, dtype=torch.float32))
        t = k + 1
        p = p * (1 - LR * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        denom = (v / (1 - b2 ** t)).sqrt() + EPS
        p = p - LR * m_hat / denom
        params.append(p.clone())
    return torch.stack(params), m, v


def rel(a, b):
    a = a.double()
    b = b.double()
    return float((a - b).norm() / b.norm())


def main():
    torch.manual_seed(20240607)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    param_init = torch.randn(N, dtype=torch.float32)
    grads = torch.stack([torch.randn(N, dtype=torch.float32) * s for s in GRAD_SCALES])

    tensors = {
        "param_init": param_init,
        "grads": grads.contiguous(),
        "grad_scale": torch.tensor([GRAD_SCALE], dtype=torch.float32),
    }
    ok = True
    for name, wd, scaled in RUNS:
        params, m, v = run_torch(param_init, grads, wd, scaled)
        params64, m64, v64 = run_float64(param_init, grads, wd, scaled)
        errors = [rel(params[k], params64[k]) for k in range(STEPS)]
        errors += [rel(m, m64), rel(v, v64)]
        worst = max(errors)
        print(f"{name}: torch vs float64 AdamW, worst relative error {worst:.3e}")
        if not worst <= 1e-6:
            print(f"{name}: torch and the float64 AdamW disagree", file=sys.stderr)
            ok = False
        tensors[f"{name}_params"] = params.contiguous()
        tensors[f"{name}_exp_avg"] = m.contiguous()
        tensors[f"{name}_exp_avg_sq"] = v.contiguous()

    # One metadata key: safetensors writes several in a random order, one keeps the file
    # byte-identical from run to run.
    metadata = {
        "adamw": f"lr={LR!r} beta1={BETAS[0]!r} beta2={BETAS[1]!r} eps={EPS!r} steps={STEPS} "
                 f"weight_decay wd0=0 wd01=0.1 scaled=0.1 grad_scale={GRAD_SCALE!r} "
                 f"torch={torch.__version__}",
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(tensors, OUT, metadata=metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
