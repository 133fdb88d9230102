#include "engine/train/optimizer_step.h"

#include <cmath>

namespace ll {

double gradient_norm(Backend& backend, const std::vector<TrainableParam>& params) {
  double sq = 0.0;
  for (const TrainableParam& p : params) sq += backend.sum_squares(*p.grad);
  return std::sqrt(sq);
}

void adamw_update_all(Backend& backend, std::vector<TrainableParam>& params,
                      const AdamWConfig& config, double lr, int64_t step, float grad_scale) {
  AdamWStep update;
  update.config = config;
  update.lr = lr;
  update.step = step;
  update.grad_scale = grad_scale;
  for (TrainableParam& p : params)
    backend.adamw_step(*p.master, *p.value, *p.grad, *p.exp_avg, *p.exp_avg_sq, update);
}

}  // namespace ll
