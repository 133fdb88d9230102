#include "optim/grad_clip.h"

#include <cmath>

namespace ll {

// torch: clip_coef = max_norm / (total_norm + 1e-6); clamp(clip_coef, max=1.0). clamp keeps a
// NaN (from a NaN norm) rather than hiding it behind 1, so a NaN norm stays visible here too.
double clip_coefficient(double total_norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0;
  const double coef = max_norm / (total_norm + 1e-6);
  if (std::isnan(coef)) return coef;
  return coef < 1.0 ? coef : 1.0;
}

}  // namespace ll
