#pragma once
// AdamW exactly as torch.optim.AdamW computes it (decoupled weight decay, bias-corrected
// moments, eps added to the corrected sqrt of the second moment), over fp32 master weights.
#include <cstdint>

namespace ll {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;  // LongLoRA's recipe (torch's default is 0.999)
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// Everything one update needs: the config, this step's learning rate, the 1-based step
// number (for bias correction) and a factor applied to the gradient first (gradient
// clipping coefficient; 1 when the norm is under the limit).
struct AdamWStep {
  AdamWConfig config;
  double lr = 0.0;
  int64_t step = 1;
  float grad_scale = 1.0f;
};

// The reference update on host fp32 arrays of n elements (the CPU backend's adamw_step):
//   g = grad_scale * grad;  p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
void adamw_update(float* master, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step);

}  // namespace ll
