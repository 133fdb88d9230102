#pragma once
#include <cstdint>

namespace ll::cpu {

// out[n, :] = x[n, :] * rstd[n] * weight, rstd[n] = 1 / sqrt(mean(x[n, :]^2) + eps),
// as HF LlamaRMSNorm computes it in fp32. out, x: [N, D]; weight: [D]; rstd: [N] or null
// (saved for backward). out may alias x.
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n_rows,
                     int64_t dim, float eps);

}  // namespace ll::cpu
