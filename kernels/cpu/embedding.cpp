#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace ll::cpu {

namespace {

// Validates every id before any work: a bad id usually means a tokenizer/model mismatch.
void check_tokens(const char* op, const int32_t* tokens, int64_t n_tokens, int64_t vocab,
                  int64_t dim) {
  LL_CHECK(n_tokens >= 0 && vocab >= 0 && dim >= 0,
           "{}: negative size (tokens {}, vocab {}, dim {})", op, n_tokens, vocab, dim);
  for (int64_t n = 0; n < n_tokens; ++n) {
    const int32_t tok = tokens[n];
    LL_CHECK(tok >= 0 && tok < vocab,
             "{}: token id {} at position {} is outside the vocabulary [0, {}); was the "
             "data tokenized for another model?",
             op, tok, n, vocab);
  }
}

}  // namespace

void embedding_forward(float* out, const float* table, const int32_t* tokens, int64_t n_tokens,
                       int64_t vocab, int64_t dim) {
  check_tokens("embedding", tokens, n_tokens, vocab, dim);
#pragma omp parallel for
  for (int64_t n = 0; n < n_tokens; ++n) {
    std::memcpy(out + n * dim, table + int64_t(tokens[n]) * dim, size_t(dim) * sizeof(float));
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab, int64_t dim) {
  check_tokens("embedding_backward", tokens, n_tokens, vocab, dim);
  // Repeated ids make rows collide, so rows cannot be split between threads without atomics.
  // Split the columns instead: each thread owns a block of columns of every row and adds the
  // tokens in position order, so the additions happen in the same order for any thread count.
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t d0 = b * kBlock;
    const int64_t width = std::min(kBlock, dim - d0);
    for (int64_t n = 0; n < n_tokens; ++n) {
      float* row = dtable + int64_t(tokens[n]) * dim + d0;  // [width]
      const float* g = dout + n * dim + d0;                 // [width]
      for (int64_t d = 0; d < width; ++d) row[d] += g[d];
    }
  }
}

}  // namespace ll::cpu
