#pragma once
// Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ computes it.
namespace ll {

// total_norm = sqrt(sum of squares of every gradient); the factor every gradient is
// multiplied by is min(1, max_norm / (total_norm + 1e-6)). max_norm <= 0 disables clipping
// (factor 1). A non-finite total_norm is returned as is by the caller's check, not here.
double clip_coefficient(double total_norm, double max_norm);

}  // namespace ll
