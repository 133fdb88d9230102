#pragma once
#include <cstdint>

namespace ll::cpu {

// out[n, :] = x[n, :] * rstd[n] * weight, rstd[n] = 1 / sqrt(mean(x[n, :]^2) + eps),
// as HF LlamaRMSNorm computes it in fp32. out, x: [N, D]; weight: [D]; rstd: [N] or null
// (saved for backward). out may alias x.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n_rows,
                     int64_t dim, float eps);

// Backward of out = x * rstd * weight with rstd saved by the forward.
// dx [N, D] += d/dx (accumulated: the residual stream's gradient is already in dx),
// dweight [D] += sum over rows of dout * x * rstd, or skipped when null (frozen norm).
// dout: [N, D]. dx must not alias dout or x.
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x,
                      const float* weight, const float* rstd, int64_t n_rows, int64_t dim);

}  // namespace ll::cpu
