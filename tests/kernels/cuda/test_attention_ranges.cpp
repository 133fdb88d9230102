// kernels/cuda/attention_ranges.h (the query ranges the CUDA attention backward loops over)
// against brute force over kernels/attention_pattern.h: for every key, the queries whose key range
// contains it are exactly attn_query_range's run of query visit indices. Runs on the CPU.
#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"

TEST_CASE("attention query ranges invert the key ranges (dense, S2, S2Roll)") {
  using ll::AttnMode;
  for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
    for (int64_t n = 1; n <= 41; ++n) {
      for (int64_t g = 2; g <= 2 * n + 4; g += 2) {
        if (mode == AttnMode::Dense && g > 2) break;
        const int64_t heads = 4;
        const ll::AttentionPattern mask{mode, n, g, heads};
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t j = 0; j < n; ++j) {
            const int64_t vj = ll::attn_visit_of_key(mask, h, j);
            REQUIRE(ll::attn_key_of_visit(mask, h, vj) == j);
            REQUIRE(ll::attn_query_of_visit(mask, h, vj) == j);
            const ll::QueryRange qr = ll::attn_query_range(mask, h, j);
            REQUIRE(qr.first <= qr.last);
            for (int64_t u = 0; u < n; ++u) {
              const int64_t i = ll::attn_query_of_visit(mask, h, u);
              const ll::KeyRange kr = ll::attn_key_range(mask, h, i);
              const bool sees = kr.first <= vj && vj <= kr.last;
              const bool in_range = qr.first <= u && u <= qr.last;
              if (sees != in_range) {
                FAIL("mode " << int(mode) << " N " << n << " G " << g << " head " << h << " key "
                             << j << " query visit " << u << ": sees " << sees
                             << " but query range [" << qr.first << ", " << qr.last << "]");
              }
            }
          }
        }
      }
    }
  }
}
