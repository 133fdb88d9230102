#include "kernels/cpu/embedding.h"

#include <cstring>

#include "common/error.h"

namespace ll::cpu {

void embedding_forward(float* out, const float* table, const int32_t* tokens, int64_t n_tokens,
                       int64_t vocab, int64_t dim) {
  LL_CHECK(n_tokens >= 0 && vocab >= 0 && dim >= 0,
           "embedding: negative size (tokens {}, vocab {}, dim {})", n_tokens, vocab, dim);
  // Validate every id before touching out: a bad id usually means a tokenizer/model mismatch.
  for (int64_t n = 0; n < n_tokens; ++n) {
    const int32_t tok = tokens[n];
    LL_CHECK(tok >= 0 && tok < vocab,
             "embedding: token id {} at position {} is outside the vocabulary [0, {}); was the "
             "data tokenized for another model?",
             tok, n, vocab);
  }
#pragma omp parallel for
  for (int64_t n = 0; n < n_tokens; ++n) {
    std::memcpy(out + n * dim, table + int64_t(tokens[n]) * dim, size_t(dim) * sizeof(float));
  }
}

}  // namespace ll::cpu
