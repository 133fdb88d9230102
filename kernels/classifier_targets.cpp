#include "kernels/classifier_targets.h"

#include "common/error.h"

namespace ll {

int64_t count_labelled_targets(const int32_t* targets, int64_t n, int64_t vocab) {
  int64_t n_labelled = 0;
  for (int64_t i = 0; i < n; ++i) {
    LL_CHECK(targets[i] < vocab,
             "classifier: target id {} at position {} is outside the vocabulary [0, {})",
             targets[i], i, vocab);
    if (targets[i] >= 0) ++n_labelled;
  }
  return n_labelled;
}

}  // namespace ll
