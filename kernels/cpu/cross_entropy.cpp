#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"
#include "kernels/classifier_targets.h"
#include "kernels/cpu/matmul.h"

namespace ll::cpu {

namespace {

// classifier_forward, and with dx non-null its gradient too: the logits buffer of a chunk
// is turned in place into dL/dlogits = loss_scale * (softmax - onehot) (0 on unlabelled
// rows), then dx [chunk, D] = that @ lm_head. Peak extra memory stays chunk_rows * V floats.
int64_t classifier_impl(float* losses, float* dx, float* dlm_head, const float* x,
                        const float* lm_head, const int32_t* targets, int64_t n_tokens, int64_t dim,
                        int64_t vocab, int64_t chunk_rows, float loss_scale, float* scratch) {
  LL_CHECK(n_tokens >= 0 && dim >= 0 && vocab >= 1,
           "classifier: bad shape (tokens {}, dim {}, vocab {})", n_tokens, dim, vocab);
  LL_CHECK(chunk_rows >= 1, "classifier: chunk_rows must be >= 1, got {}", chunk_rows);
  // Check every label before any work, so a bad label fails fast and names its position.
  const int64_t n_labelled = count_labelled_targets(targets, n_tokens, vocab);
  if (n_tokens == 0) return 0;

  const int64_t rows = std::min(chunk_rows, n_tokens);
  // [rows, V], reused for every chunk (logits, then their gradient): the only large
  // allocation, the caller's when it gives one.
  std::vector<float> own;
  if (scratch == nullptr) own.resize(static_cast<size_t>(rows * vocab));
  float* const logits = scratch != nullptr ? scratch : own.data();
  const int64_t no_error = std::numeric_limits<int64_t>::max();
  int64_t first_bad = no_error;  // first position with a non-finite logit

  for (int64_t start = 0; start < n_tokens; start += rows) {
    const int64_t cnt = std::min(rows, n_tokens - start);
    const bool any_label =
        std::any_of(targets + start, targets + start + cnt, [](int32_t t) { return t >= 0; });
    if (!any_label) {
      // Prompt-only chunks (SFT) need no logits at all, and have no gradient.
      std::fill(losses + start, losses + start + cnt, 0.0f);
      if (dx != nullptr) std::fill(dx + start * dim, dx + (start + cnt) * dim, 0.0f);
      continue;
    }
    matmul_forward(logits, x + start * dim, lm_head, cnt, dim, vocab, false);
#pragma omp parallel for reduction(min : first_bad)
    for (int64_t r = 0; r < cnt; ++r) {
      const int64_t pos = start + r;
      const int32_t target = targets[pos];
      float* row = logits + r * vocab;  // [V]
      if (target < 0) {
        losses[pos] = 0.0f;
        if (dx != nullptr) std::fill(row, row + vocab, 0.0f);
        continue;
      }
      float mx = -std::numeric_limits<float>::infinity();
      bool finite = true;
      for (int64_t j = 0; j < vocab; ++j) {
        finite = finite && std::isfinite(row[j]);
        mx = row[j] > mx ? row[j] : mx;
      }
      if (!finite) {
        // Exceptions cannot leave an OpenMP loop; report after it.
        first_bad = std::min(first_bad, pos);
        losses[pos] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      double sum = 0.0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - double(mx));
      losses[pos] = float(double(mx) + std::log(sum) - double(row[target]));
      if (dx != nullptr) {
        // d loss / d logit_j = softmax_j - [j == target], in double, rounded once.
        const double scale = double(loss_scale);
        for (int64_t j = 0; j < vocab; ++j) {
          const double p = std::exp(double(row[j]) - double(mx)) / sum;
          row[j] = float((p - (j == target ? 1.0 : 0.0)) * scale);
        }
      }
    }
    if (first_bad != no_error) break;
    // dx [cnt, D] = dlogits [cnt, V] @ lm_head [V, D]
    if (dx != nullptr)
      matmul_backward_input(dx + start * dim, logits, lm_head, cnt, dim, vocab, 1.0f, false);
    // dlm_head [V, D] += dlogits [cnt, V]^T @ x [cnt, D] (only when lm_head is trained)
    if (dlm_head != nullptr)
      matmul_backward_weight(dlm_head, logits, x + start * dim, cnt, dim, vocab, 1.0f, true);
  }
  LL_CHECK(first_bad == no_error,
           "classifier: non-finite logit (NaN or Inf) at position {}: the hidden states or "
           "lm_head hold NaN/Inf (diverged training or a corrupt checkpoint?)",
           first_bad);
  return n_labelled;
}

}  // namespace

int64_t classifier_forward(float* losses, const float* x, const float* lm_head,
                           const int32_t* targets, int64_t n_tokens, int64_t dim, int64_t vocab,
                           int64_t chunk_rows, float* scratch) {
  return classifier_impl(losses, nullptr, nullptr, x, lm_head, targets, n_tokens, dim, vocab,
                         chunk_rows, 1.0f, scratch);
}

int64_t classifier_forward_backward(float* losses, float* dx, float* dlm_head, const float* x,
                                    const float* lm_head, const int32_t* targets, int64_t n_tokens,
                                    int64_t dim, int64_t vocab, int64_t chunk_rows,
                                    float loss_scale, float* scratch) {
  LL_CHECK(dx != nullptr || n_tokens * dim == 0, "classifier_forward_backward: dx is null");
  return classifier_impl(losses, dx, dlm_head, x, lm_head, targets, n_tokens, dim, vocab,
                         chunk_rows, loss_scale, scratch);
}

}  // namespace ll::cpu
