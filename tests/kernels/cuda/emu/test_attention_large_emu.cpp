// The attention kernels at the sizes of issue 19 (N = 524800 tokens, 32 heads of 128: q, k, v,
// out and their gradients hold more than 2^31 elements), in the SIMT emulator on a window: the
// tensors are sparse host ranges (emu::SparseBuffer), only their last 512 rows are filled, and
// the emulator runs only the blocks of the tested heads at both ends of each grid (the block
// filter), so every offset the checked blocks compute lies past 2^31 elements. S2-Attn with
// G = 256 makes the last rows' keys those of their own group, so the CPU reference is dense
// causal attention over each group (one head at a time). The CUDA-core kernels, the mma.sync
// ones and the Hopper ones, forward and backward (rowdot, dK/dV, dQ).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/attention_pattern.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/attention_tc_backward_kernels.cuh"
#include "kernels/cuda/attention_tc_backward_sm90_kernels.cuh"
#include "kernels/cuda/attention_tc_forward_kernels.cuh"
#include "kernels/cuda/attention_tc_forward_sm90_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
using bf16 = __nv_bfloat16;
using ll::test::bf16_bits_to_f32;
using ll::test::f32_to_bf16_bits;

constexpr int64_t kN = 524800;  // 2050 groups of 256; N * H * hd = 2^31 + 2^21
constexpr int64_t kH = 32, kHd = 128, kG = 256;
constexpr int64_t kRowElems = kH * kHd;   // MHA (Llama-2-7B): k and v as large as q
constexpr int64_t kW0 = kN - 512;         // first filled row
constexpr int64_t kC0 = kN - 256;         // first checked row
constexpr int kHeads[] = {0, 1, 30, 31};  // both halves (unshifted and shifted by G / 2)
static_assert(kC0 * kRowElems > (int64_t(1) << 31), "the checked rows must lie past 2^31");

bool tested_head(unsigned h) {
  for (int t : kHeads)
    if (unsigned(t) == h) return true;
  return false;
}

// Blocks of the tested heads whose tiles hold filled rows: tile kernels (grid (tiles, heads);
// forward order or last tile first) run their first and last tiles; the rowdot kernels (one
// warp of 4 per (token, head) row, grid-strided) the blocks of the filled rows.
bool run_block(const char* name, const uint3& b, const dim3& grid) {
  if (std::string(name).find("rowdot") != std::string::npos) {
    const int64_t first = (kW0 * kH / 4) % grid.x, count = (kN - kW0) * kH / 4;
    return (int64_t(b.x) - first + grid.x) % grid.x < count;
  }
  if (!tested_head(b.y)) return false;
  const int64_t tile = (kN + grid.x - 1) / grid.x;
  const int64_t ends = (kN - kW0 + tile - 1) / tile + 1;
  return int64_t(b.x) < ends || int64_t(b.x) >= int64_t(grid.x) - ends;
}

// [N, H, hd] bf16 tensors (sparse) and the [H, N] fp32 ones.
struct Tensors {
  emu::SparseBuffer q, k, v, out, dout, dq, dk, dv, lse, dvec;
  Tensors()
      : q(bytes()),
        k(bytes()),
        v(bytes()),
        out(bytes()),
        dout(bytes()),
        dq(bytes()),
        dk(bytes()),
        dv(bytes()),
        lse(size_t(kH * kN) * 4),
        dvec(size_t(kH * kN) * 4) {}
  static size_t bytes() { return size_t(kN * kRowElems) * 2; }
};

// One head's rows [kW0, kN) of x (bf16 bits) as floats: [512, hd].
std::vector<float> head_rows(emu::SparseBuffer& x, int h, int64_t r0, int64_t r1) {
  std::vector<float> v(size_t((r1 - r0) * kHd));
  const uint16_t* p = x.as<uint16_t>();
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t d = 0; d < kHd; ++d)
      v[size_t((r - r0) * kHd + d)] = bf16_bits_to_f32(p[(r * kH + h) * kHd + d]);
  return v;
}
void set_head_rows(emu::SparseBuffer& x, int h, int64_t r0, const std::vector<float>& v) {
  uint16_t* p = x.as<uint16_t>();
  const int64_t rows = int64_t(v.size()) / kHd;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < kHd; ++d)
      p[((r0 + r) * kH + h) * kHd + d] = f32_to_bf16_bits(v[size_t(r * kHd + d)]);
}
void fill_random(emu::SparseBuffer& x, std::mt19937_64& rng, float lo, float hi) {
  for (int h : kHeads)
    set_head_rows(x, h, kW0, ll::test::random_uniform(rng, size_t((kN - kW0) * kHd), lo, hi));
}
void poison_rows(emu::SparseBuffer& x) {
  std::memset(x.as<unsigned char>() + size_t(kW0 * kRowElems) * 2, 0xff,
              size_t((kN - kW0) * kRowElems) * 2);
}

// The groups [s, e) of head h inside the filled rows (whole groups only).
std::vector<std::pair<int64_t, int64_t>> groups(const ll::AttentionPattern& m, int h) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t e = kN; e > kW0;) {
    const int64_t s = ll::attn_key_range(m, h, e - 1).first;
    if (s < kW0) break;
    out.push_back({s, e});
    e = s;
  }
  return out;
}

// The CPU reference per group of each tested head: out, lse (also written to the tensors as
// the backward's inputs) and, with dout, dq, dk, dv; rows [kC0, N) of the tested heads.
struct Reference {
  std::vector<float> out, dq, dk, dv;  // [heads][256 rows][hd]
  std::vector<float> lse;              // [heads][256 rows]
};

Reference reference(Tensors& t, const ll::AttentionPattern& m) {
  Reference ref;
  const size_t per_head = size_t((kN - kC0) * kHd);
  for (auto* v : {&ref.out, &ref.dq, &ref.dk, &ref.dv}) v->assign(std::size(kHeads) * per_head, 0);
  ref.lse.assign(std::size(kHeads) * size_t(kN - kC0), 0.0f);
  for (size_t hi = 0; hi < std::size(kHeads); ++hi) {
    const int h = kHeads[hi];
    for (const auto& [s, e] : groups(m, h)) {
      const int64_t len = e - s;
      const auto q = head_rows(t.q, h, s, e), k = head_rows(t.k, h, s, e),
                 v = head_rows(t.v, h, s, e), dout = head_rows(t.dout, h, s, e);
      std::vector<float> out(q.size()), dq(q.size()), dk(q.size()), dv(q.size());
      std::vector<float> lse(static_cast<size_t>(len));
      const ll::AttentionPattern dense{ll::AttnMode::Dense, len, 0, 1};
      ll::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), len, 1, 1,
                                 kHd, dense);
      const auto out_bf16 = ll::test::round_bf16(out);  // what the GPU backward reads
      ll::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                                  v.data(), out_bf16.data(), lse.data(), len, 1, 1, kHd, dense);
      set_head_rows(t.out, h, s, out_bf16);
      for (int64_t r = 0; r < len; ++r) t.lse.as<float>()[h * kN + s + r] = lse[size_t(r)];
      for (int64_t r = std::max(s, kC0); r < e; ++r) {
        const size_t src = size_t((r - s) * kHd), dst = hi * per_head + size_t((r - kC0) * kHd);
        for (int64_t d = 0; d < kHd; ++d) {
          ref.out[dst + d] = out[src + d];
          ref.dq[dst + d] = dq[src + d];
          ref.dk[dst + d] = dk[src + d];
          ref.dv[dst + d] = dv[src + d];
        }
        ref.lse[hi * size_t(kN - kC0) + size_t(r - kC0)] = lse[size_t(r - s)];
      }
    }
  }
  return ref;
}

// Rows [kC0, N) of the tested heads of x, in Reference's layout.
std::vector<float> checked_rows(emu::SparseBuffer& x) {
  std::vector<float> v;
  for (int h : kHeads) {
    const auto rows = head_rows(x, h, kC0, kN);
    v.insert(v.end(), rows.begin(), rows.end());
  }
  return v;
}
std::vector<float> checked_lse(emu::SparseBuffer& lse) {
  std::vector<float> v;
  for (int h : kHeads)
    for (int64_t r = kC0; r < kN; ++r) v.push_back(lse.as<float>()[h * kN + r]);
  return v;
}

enum class Family { Simt, Sm80, Hopper };

void run_forward(Family f, Tensors& t, const ll::AttentionPattern& m) {
  const emu::EmuLauncher launch{};
  bf16 *out = t.out.as<bf16>(), *q = t.q.as<bf16>(), *k = t.k.as<bf16>(), *v = t.v.as<bf16>();
  float* lse = t.lse.as<float>();
  if (f == Family::Simt) {
    ll::cuda::attn_dev::run_forward(launch, out, lse, q, k, v, kN, kH, kH, kHd, m);
  } else if (f == Family::Sm80) {
    ll::cuda::tc::run_forward_tc(launch, out, lse, q, k, v, int(kN), kH, kH, kHd, m);
  } else {
    REQUIRE(ll::cuda::tc::sm90::run_forward_sm90(launch, emu::tensor_map_encode_tiled, out, lse, q,
                                                 k, v, int(kN), kH, kH, kHd, m));
  }
}

void run_backward(Family f, Tensors& t, const ll::AttentionPattern& m) {
  const emu::EmuLauncher launch{};
  bf16 *dq = t.dq.as<bf16>(), *dk = t.dk.as<bf16>(), *dv = t.dv.as<bf16>();
  const bf16 *dout = t.dout.as<bf16>(), *q = t.q.as<bf16>(), *k = t.k.as<bf16>(),
             *v = t.v.as<bf16>(), *out = t.out.as<bf16>();
  const float* lse = t.lse.as<float>();
  float* dvec = t.dvec.as<float>();
  if (f == Family::Simt) {
    ll::cuda::attn_dev::run_backward(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, kN, kH, kH,
                                     kHd, m);
  } else if (f == Family::Sm80) {
    ll::cuda::tc::run_backward_tc(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, int(kN), kH,
                                  kH, kHd, m);
  } else {
    REQUIRE(ll::cuda::tc::sm90::run_backward_sm90(launch, emu::tensor_map_encode_tiled, dq, dk, dv,
                                                  dout, q, k, v, out, lse, dvec, nullptr, int(kN),
                                                  kH, kH, kHd, m));
  }
}

void check_family(Family f, uint64_t seed) {
  emu::clear_globals();  // sparse tensors are not registered: cp.async reads are unchecked
  std::mt19937_64 rng(seed);
  Tensors t;
  fill_random(t.q, rng, -1.5f, 1.5f);
  fill_random(t.k, rng, -1.5f, 1.5f);
  fill_random(t.v, rng, -1.0f, 1.0f);
  fill_random(t.dout, rng, -1.0f, 1.0f);
  const ll::AttentionPattern mask{ll::AttnMode::S2, kN, kG, kH};
  const Reference ref = reference(t, mask);  // also writes out and lse of the filled groups
  const ll::test::emu_util::ScopedBlockFilter filter(run_block);

  // Forward into a poisoned out (its reference values are kept for the backward).
  std::vector<unsigned char> saved_out(size_t((kN - kW0) * kRowElems) * 2);
  unsigned char* out_rows = t.out.as<unsigned char>() + size_t(kW0 * kRowElems) * 2;
  std::memcpy(saved_out.data(), out_rows, saved_out.size());
  std::vector<float> saved_lse(size_t(kH * kN));
  std::memcpy(saved_lse.data(), t.lse.as<float>(), saved_lse.size() * 4);
  poison_rows(t.out);
  run_forward(f, t, mask);
  {
    INFO("forward out, rows past 2^31 elements");
    ll::test::emu_util::check_bf16_close(ll::test::emu_util::to_bf16_bits(checked_rows(t.out)),
                                         ref.out, 1e-2, 1e-2, 1e-2);
  }
  {
    INFO("forward lse");
    ll::test::check_close(checked_lse(t.lse), ll::test::to_double(ref.lse), 2e-4, 2e-5, 1e-5);
  }

  std::memcpy(out_rows, saved_out.data(), saved_out.size());
  std::memcpy(t.lse.as<float>(), saved_lse.data(), saved_lse.size() * 4);
  for (auto* g : {&t.dq, &t.dk, &t.dv}) poison_rows(*g);
  run_backward(f, t, mask);
  ll::test::check_grad("dq, rows past 2^31 elements", checked_rows(t.dq), ref.dq);
  ll::test::check_grad("dk, rows past 2^31 elements", checked_rows(t.dk), ref.dk);
  ll::test::check_grad("dv, rows past 2^31 elements", checked_rows(t.dv), ref.dv);
}

}  // namespace

TEST_CASE("emulated attention kernels (CUDA cores) past 2^31 elements") {
  check_family(Family::Simt, ll::test::test_seeds()[0]);
}

TEST_CASE("emulated attention kernels (mma.sync) past 2^31 elements") {
  check_family(Family::Sm80, ll::test::test_seeds()[1]);
}

TEST_CASE("emulated attention kernels (Hopper) past 2^31 elements") {
  check_family(Family::Hopper, ll::test::test_seeds()[1] ^ 0x5eedu);
}

#else
TEST_CASE("attention kernels past 2^31 elements in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
