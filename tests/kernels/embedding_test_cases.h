#pragma once
// The embedding kernel tests' table, shared by test_embedding_gpu.cpp (on a GPU) and
// test_embedding_emu.cpp (the SIMT emulator): the shapes, their inputs (bf16-rounded table and
// dout, random ids that repeat), the CPU reference, the bitwise checks, and the out-of-range
// ids case. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the emulator's prelude).
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/embedding.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::embedding_cases {

struct Shape {
  int64_t vocab, dim, n;
  int64_t out_offset;  // elements: 1 puts out off the 16-byte alignment (emulator only)
  bool emu_slow;       // skipped by the emulator test (slow there)
};
// The scalar path (odd dims) and the 16-byte path (dim % 8 == 0), rows longer than a block's
// pass, several blocks, backward over several token tiles with repeated ids; the 16-byte-capable
// dim with a misaligned output (the scalar path).
inline const Shape kShapes[] = {
    {5, 1, 3, 0, false},
    {50, 7, 20, 0, false},
    {1000, 64, 300, 0, false},
    {100, 4100, 64, 0, false},
    {7, 256, 1000, 0, false},
    {1000, 64, 30, 1, false},
    // Llama-3.x's and Qwen2.5-7B's vocabularies (ids drawn over the whole table).
    {128256, 16, 200, 0, false},
    {152064, 24, 150, 0, false},
};

// table [V, D] and dout [N, D] bf16-rounded, the dtable accumulator dtable0 [V, D], tokens [N]
// (repeated ids: rows collide in backward); the reference out [N, D] and dtable [V, D].
struct Data {
  std::vector<float> table, dout, dtable0;
  std::vector<int32_t> tokens;
  std::vector<float> out_ref, dt_ref;
};
inline Data make_data(const Shape& s, std::mt19937_64& rng) {
  Data d;
  d.table = round_bf16(random_uniform(rng, size_t(s.vocab * s.dim)));
  d.dout = round_bf16(random_uniform(rng, size_t(s.n * s.dim)));
  d.dtable0 = random_uniform(rng, size_t(s.vocab * s.dim));
  d.tokens.resize(size_t(s.n));
  std::uniform_int_distribution<int32_t> pick(0, int32_t(s.vocab - 1));
  for (auto& t : d.tokens) t = pick(rng);
  d.out_ref.resize(size_t(s.n * s.dim));
  d.dt_ref = d.dtable0;
  ll::cpu::embedding_forward(d.out_ref.data(), d.table.data(), d.tokens.data(), s.n, s.vocab,
                             s.dim);
  ll::cpu::embedding_backward(d.dt_ref.data(), d.dout.data(), d.tokens.data(), s.n, s.vocab, s.dim);
  return d;
}

// Both exact (a bf16 copy; fp32 additions in position order): bitwise.
inline void check_out(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 0.0, 0.0, 1e-12);
}
inline void check_dtable(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 0.0, 0.0, 1e-12);
}

// Out-of-range ids: the forward zeroes their rows, the backward (dout all ones onto a zero
// dtable) skips them, the id check reports the first (-1 at position 1).
namespace bad_ids {
inline constexpr int64_t kVocab = 10, kDim = 16;
inline const std::vector<int32_t> kTokens = {3, -1, 9, 10, 1 << 30};
inline constexpr const char* kMessage = "token id -1 at position 1";
inline int64_t n() { return int64_t(kTokens.size()); }
inline std::vector<float> table() {
  std::mt19937_64 rng(7);
  return round_bf16(random_uniform(rng, size_t(kVocab * kDim)));  // [V, D]
}
inline void check_out(const std::vector<float>& out, const std::vector<float>& table) {
  for (int64_t i = 0; i < n(); ++i) {
    const int32_t t = kTokens[size_t(i)];
    const bool ok = t >= 0 && t < kVocab;
    for (int64_t d = 0; d < kDim; ++d) {
      const float want = ok ? table[size_t(t * kDim + d)] : 0.0f;
      CHECK(out[size_t(i * kDim + d)] == want);
    }
  }
}
inline void check_dtable(const std::vector<float>& dt) {
  for (int64_t v = 0; v < kVocab; ++v)
    CHECK(dt[size_t(v * kDim)] == ((v == 3 || v == 9) ? 1.0f : 0.0f));
}
}  // namespace bad_ids

}  // namespace ll::test::embedding_cases
