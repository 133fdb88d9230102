#include "optim/adamw.h"

#include <cmath>

#include "common/error.h"

namespace ll {

// Mirrors torch.optim.AdamW(foreach=False) on fp32 CPU tensors operation by operation, so the
// results agree with torch to the last bit or two:
//  - scalars (bias corrections, step size, 1 - lr * wd) are Python floats, i.e. doubles, and
//    torch casts each to fp32 when it meets an fp32 tensor;
//  - exp_avg.lerp_(g, 1 - b1) is m + w * (g - m) with one rounding (torch's vectorized lerp is
//    an fmadd); exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2) is fma((1 - b2) * g, g, b2 * v);
//  - denom = sqrt(v) / sqrt(bc2) + eps; p.addcdiv_(m, denom, -step_size) is
//    p + (-step_size * m) / denom.
// torch's vectorized CPU sqrt is not always correctly rounded (observed +-1 ulp), so the last
// bit can still differ; that is ~6e-8 relative on one update.
void adamw_update(float* master, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step) {
  const AdamWConfig& c = step.config;
  LL_CHECK(step.step >= 1, "adamw: step numbers start at 1 (bias correction), got {}", step.step);
  LL_CHECK(n >= 0, "adamw: negative element count {}", n);

  const double bias_correction1 = 1.0 - std::pow(c.beta1, double(step.step));
  const double bias_correction2 = 1.0 - std::pow(c.beta2, double(step.step));
  const double step_size = step.lr / bias_correction1;

  const float decay = float(1.0 - step.lr * c.weight_decay);
  const bool apply_decay = c.weight_decay != 0.0;
  const float lerp_weight = float(1.0 - c.beta1);
  const float beta2 = float(c.beta2);
  const float one_minus_beta2 = float(1.0 - c.beta2);
  const float bias_correction2_sqrt = float(std::sqrt(bias_correction2));
  const float eps = float(c.eps);
  const float neg_step_size = float(-step_size);
  const float grad_scale = step.grad_scale;
  const bool scale_grad = grad_scale != 1.0f;

#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = scale_grad ? grad_scale * grad[i] : grad[i];
    float p = master[i];
    if (apply_decay) p = p * decay;
    const float mi = std::fma(lerp_weight, g - m[i], m[i]);
    const float vi = std::fma(one_minus_beta2 * g, g, v[i] * beta2);
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    master[i] = p + (neg_step_size * mi) / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace ll
