#pragma once
// The optimizer half of a training step, shared by train_longlora and the training benchmark:
// the global gradient norm (for clipping and logging) and one AdamW update of every trained
// tensor, both on the model's backend.
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"
#include "optim/adamw.h"

namespace ll {

// sqrt of the sum of squares of every trained tensor's gradient (as clip_grad_norm_ sees it).
double gradient_norm(Backend& backend, const std::vector<TrainableParam>& params);

// One AdamW step (optimizer step number `step`, 1-based) at learning rate `lr` on every
// parameter; grad_scale multiplies the gradients first (the clipping coefficient).
void adamw_update_all(Backend& backend, std::vector<TrainableParam>& params,
                      const AdamWConfig& config, double lr, int64_t step, float grad_scale);

}  // namespace ll
