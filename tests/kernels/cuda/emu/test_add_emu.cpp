// The CUDA in-place add kernel (kernels/cuda/add_kernels.cuh) runs in the SIMT emulator,
// bitwise against the host (fp32 add, one rounding to bf16), on a machine without a GPU: the
// 16-byte path with a peeled head (x and y equally misaligned) and a tail, the element-by-element
// path (differently misaligned), n smaller than the head, several blocks, x == y (doubling), and
// no writes outside [x, x + n) nor to y. Each case runs again with the fibers in reverse order
// and must give the same bytes. Not reachable here: the grid-stride loop's second pass
// (more than 2^28 vectors).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/add_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::add_dev;
using bf16 = __nv_bfloat16;
using ll::test::emu_util::case_seed;
using ll::test::emu_util::OffsetBuffer;  // n + kPad elements here, from x[0] and y[0]
using ll::test::emu_util::run_both_orders;
using ll::test::emu_util::to_bf16_bits;

// bf16 buffers hold bits; the kernel gets them as bf16.
bf16* device_type(uint16_t* p) { return ll::test::emu_util::as_bf16(p); }
float* device_type(float* p) { return p; }

// 4099: the 16-byte path in 2 (bf16) or 4 (f32) blocks, the element path in 17.
const int64_t kSizes[] = {1, 7, 20, 4099};
// Element offsets of x and y from a 16-byte boundary.
struct Offsets {
  int64_t x, y;
};
const Offsets kOffsets[] = {{0, 0}, {1, 1}, {3, 3}, {0, 1}, {5, 2}, {7, 0}};
constexpr int64_t kPad = 16;  // elements around the used range, checked to stay untouched

// Random values spread over a few binades, so that the sums round.
std::vector<float> random_values(std::mt19937_64& rng, size_t n) {
  auto v = ll::test::random_uniform(rng, n, -4.0f, 4.0f);
  std::uniform_int_distribution<int> e(-6, 6);
  for (float& x : v) x = std::ldexp(x, e(rng));
  return v;
}

float value_of(uint16_t bits) { return ll::test::bf16_bits_to_f32(bits); }
float value_of(float f) { return f; }
uint16_t rounded(float f, uint16_t) { return ll::test::f32_to_bf16_bits(f); }
float rounded(float f, float) { return f; }

// x[o.x + i] += y[o.y + i] (and x[o.x + i] += x[o.x + i]) for T = uint16_t (bf16) or float.
template <typename T>
void check_add(const char* vec_kernel, const char* scalar_kernel, const std::vector<T>& x,
               const std::vector<T>& y, int64_t n, Offsets o) {
  std::vector<T> want = x, twice = x;
  for (int64_t i = 0; i < n; ++i) {
    const size_t ix = size_t(o.x + i), iy = size_t(o.y + i);
    want[ix] = rounded(value_of(x[ix]) + value_of(y[iy]), T());
    twice[ix] = rounded(2.0f * value_of(x[ix]), T());
  }
  struct Result {
    std::vector<T> x, y, doubled;
    std::vector<emu::KernelRun> runs;
  };
  const auto [got, rev] = run_both_orders([&] {
    Result r;
    OffsetBuffer<T> d_x(x), d_y(y), d_z(x);
    dev::run_add_inplace(emu::EmuLauncher{&r.runs}, device_type(d_x.data() + o.x),
                         device_type(d_y.data() + o.y), n);
    dev::run_add_inplace(emu::EmuLauncher{&r.runs}, device_type(d_z.data() + o.x),
                         device_type(d_z.data() + o.x), n);
    r.x = d_x.values();
    r.y = d_y.values();
    r.doubled = d_z.values();
    return r;
  });
  CHECK_MESSAGE(ll::test::same_bytes(got.x, want), "x differs from the host");
  CHECK_MESSAGE(ll::test::same_bytes(got.y, y), "y changed");
  CHECK_MESSAGE(ll::test::same_bytes(got.doubled, twice), "x += x differs from 2x");
  CHECK_MESSAGE(ll::test::same_bytes(rev.x, got.x), "x differs with the reverse thread order");
  CHECK_MESSAGE(ll::test::same_bytes(rev.doubled, got.doubled),
                "x += x differs with the reverse thread order");

  // Equal misalignment: the 16-byte path, also for x == y.
  const bool vec = (o.x * int64_t(sizeof(T))) % 16 == (o.y * int64_t(sizeof(T))) % 16;
  REQUIRE(got.runs.size() == 2);
  CHECK(got.runs[0].kernel == std::string(vec ? vec_kernel : scalar_kernel));
  CHECK(got.runs[1].kernel == std::string(vec_kernel));
}

}  // namespace

TEST_CASE("emulated add_inplace_bf16 equals the host bitwise") {
  const auto seeds = ll::test::test_seeds();
  size_t index = 0;
  for (const int64_t n : kSizes) {
    for (const Offsets o : kOffsets) {
      const uint64_t seed = case_seed(seeds, index);
      ++index;
      INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
      std::mt19937_64 rng(seed);
      const size_t len = size_t(n + kPad);
      const auto x = to_bf16_bits(random_values(rng, len));
      const auto y = to_bf16_bits(random_values(rng, len));
      check_add("add_inplace_kernel<bf16, 8>", "add_inplace_kernel<bf16, 1>", x, y, n, o);
    }
  }
  // Grids: 7 head elements, 511 bf16 vectors, 4 tail elements: 2 blocks.
  std::vector<uint16_t> x(4099 + kPad, 0), y(4099 + kPad, 0);
  std::vector<emu::KernelRun> runs;
  OffsetBuffer<uint16_t> d_x(x), d_y(y);
  dev::run_add_inplace_bf16(emu::EmuLauncher{&runs}, device_type(d_x.data() + 1),
                            device_type(d_y.data() + 1), 4099);
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].stats.blocks == 2);
}

TEST_CASE("emulated add_inplace_f32 equals the host bitwise") {
  const auto seeds = ll::test::test_seeds();
  size_t index = 0;
  for (const int64_t n : kSizes) {
    for (const Offsets o : kOffsets) {
      const uint64_t seed = case_seed(seeds, index);
      ++index;
      INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
      std::mt19937_64 rng(seed);
      const size_t len = size_t(n + kPad);
      check_add("add_inplace_kernel<float, 4>", "add_inplace_kernel<float, 1>",
                random_values(rng, len), random_values(rng, len), n, o);
    }
  }
  std::vector<float> x(4099 + kPad, 0.0f), y(4099 + kPad, 0.0f);
  std::vector<emu::KernelRun> runs;
  OffsetBuffer<float> d_x(x), d_y(y);
  dev::run_add_inplace_f32(emu::EmuLauncher{&runs}, d_x.data(), d_y.data(), 4099);
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].stats.blocks == 4);  // 1024 float4 vectors and 3 tail elements
}

#else
TEST_CASE("emulated add_inplace") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
