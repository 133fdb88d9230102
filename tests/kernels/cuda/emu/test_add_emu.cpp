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
#include "tests/kernels/add_test_cases.h"
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

// The GPU test's table (add_test_cases.h), without its sizes marked slow here.
using ll::test::add_cases::kOffsets;
using ll::test::add_cases::kPad;
using ll::test::add_cases::kSizes;
using ll::test::add_cases::Offsets;
using ll::test::add_cases::Size;
namespace cases = ll::test::add_cases;

// The table's values as the buffers hold them: bf16 bits (already rounded) or fp32.
std::vector<uint16_t> held(const std::vector<float>& v, uint16_t) { return to_bf16_bits(v); }
std::vector<float> held(const std::vector<float>& v, float) { return v; }

// x[o.x + i] += y[o.y + i] (and x[o.x + i] += x[o.x + i]) for T = uint16_t (bf16) or float.
template <typename T>
void check_add(const char* vec_kernel, const char* scalar_kernel, const cases::Data& d, int64_t n,
               Offsets o) {
  const std::vector<T> x = held(d.x, T()), y = held(d.y, T());
  const std::vector<T> want = held(d.want, T()), twice = held(d.twice, T());
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
  for (const Size size : kSizes) {
    if (size.emu_slow) continue;
    for (const Offsets o : kOffsets) {
      const int64_t n = size.n;
      const uint64_t seed = case_seed(seeds, index);
      ++index;
      INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
      std::mt19937_64 rng(seed);
      check_add<uint16_t>("add_inplace_kernel<bf16, 8>", "add_inplace_kernel<bf16, 1>",
                          cases::make_data(rng, n, o, true), n, o);
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
  for (const Size size : kSizes) {
    if (size.emu_slow) continue;
    for (const Offsets o : kOffsets) {
      const int64_t n = size.n;
      const uint64_t seed = case_seed(seeds, index);
      ++index;
      INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
      std::mt19937_64 rng(seed);
      check_add<float>("add_inplace_kernel<float, 4>", "add_inplace_kernel<float, 1>",
                       cases::make_data(rng, n, o, false), n, o);
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
