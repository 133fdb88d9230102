// check_s2_group (kernels/attention_pattern.h): every S2-Attn group rule with its message, the
// fields a caller leaves empty unchecked, and s2_group_size's results always accepted.
#include <doctest/doctest.h>

// The cases below name only the fields they set.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <cmath>
#include <limits>
#include <string>

#include "common/error.h"
#include "kernels/attention_pattern.h"

namespace {

using ll::S2GroupInput;

// The message check_s2_group throws for `in` ("" when it accepts).
std::string message_of(const S2GroupInput& in) {
  try {
    ll::check_s2_group(in);
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("the ratio is a finite number in (0, 1]") {
  CHECK(message_of({.ratio = 0.25}).empty());
  CHECK(message_of({.ratio = 1.0}).empty());
  CHECK(message_of({.ratio = std::nan("")}) == "--group-ratio must be a finite number (got nan)");
  CHECK(message_of({.ratio = std::numeric_limits<double>::infinity()}) ==
        "--group-ratio must be a finite number (got inf)");
  for (double bad : {0.0, -0.5, 1.5})
    CHECK(message_of({.ratio = bad}) ==
          fmt::format("--group-ratio must be in (0, 1] (got {}); the S2-Attn group is ctx * ratio "
                      "tokens",
                      bad));
  // The range is checked before the group it gives.
  CHECK(message_of({.ratio = 0.0, .seq_len = 4096}).find("(0, 1]") != std::string::npos);
}

TEST_CASE("N x ratio reaches 2 tokens") {
  CHECK(message_of({.ratio = 0.25, .seq_len = 8}).empty());  // exactly 2
  CHECK(message_of({.ratio = 0.25, .seq_len = 4}) ==
        "S2-Attn group size --ctx x --group-ratio = 4 x 0.25 = 1 is below 2 tokens: use a larger "
        "--group-ratio or --ctx, or --full-attn");
  CHECK(message_of({.ratio = 0.005, .seq_len = 256}).find("below 2 tokens") != std::string::npos);
  // Without a ratio the length alone says nothing.
  CHECK(message_of({.seq_len = 1}).empty());
}

TEST_CASE("a group size is even and at least 2") {
  for (int64_t g : {2, 4, 1024}) CHECK(message_of({.group_size = g}).empty());
  for (int64_t g : {0, 1, 3, -2, 1023})
    CHECK(message_of({.group_size = g}) ==
          fmt::format("S2-Attn group size must be even and at least 2, got {}", g));
}

TEST_CASE("the heads split into two halves") {
  for (int64_t h : {2, 4, 32}) CHECK(message_of({.n_heads = h}).empty());
  for (int64_t h : {1, 3, 7})
    CHECK(message_of({.n_heads = h}) ==
          fmt::format("S2-Attn shifts half of the heads, but the model has {} heads: use "
                      "--full-attn",
                      h));
}

TEST_CASE("every rule at once, and s2_group_size's groups pass") {
  CHECK(message_of({}).empty());
  CHECK(message_of({.ratio = 0.25, .seq_len = 4096, .group_size = 1024, .n_heads = 32}).empty());
  // The first broken rule is the one named.
  CHECK(message_of({.ratio = 0.25, .seq_len = 4096, .group_size = 3, .n_heads = 3})
            .find("group size must be even") != std::string::npos);
  for (int64_t n : {1, 4, 10, 100, 4096})
    for (double ratio : {0.125, 0.25, 0.5, 1.0})
      CHECK(message_of({.group_size = ll::s2_group_size(n, ratio)}).empty());
}

}  // namespace
