// The row-wise and flat kernels at the sizes of issue 19, in the SIMT emulator on a window: the
// [N, D] tensors (N = 524352 tokens of 4096: 2^31 + 2^18 elements; 20000 rows of logits over a
// 128256-token vocabulary; flat tensors past 2^31 elements) are sparse host ranges
// (emu::SparseBuffer) with only the rows a test checks filled, and the emulator runs only the
// blocks that reach those rows (the block filter), so every offset checked lies past 2^31
// elements: RMSNorm forward and backward (dx, dweight), RoPE forward and backward, embedding
// forward and backward, bias add and bias gradient, cross-entropy, in-place add, sum of
// squares and AdamW (their grid-stride loops' second and later turns).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/adamw_kernels.cuh"
#include "kernels/cuda/add_kernels.cuh"
#include "kernels/cuda/bias_kernels.cuh"
#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "kernels/cuda/embedding_kernels.cuh"
#include "kernels/cuda/reduce_kernels.cuh"
#include "kernels/cuda/rmsnorm_kernels.cuh"
#include "kernels/cuda/rope_kernels.cuh"
#include "kernels/rope_scaling.h"
#include "optim/adamw.h"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
using bf16 = __nv_bfloat16;
using ll::test::bf16_bits_to_f32;
using ll::test::f32_to_bf16_bits;
using ll::test::emu_util::check_bf16_close;
using ll::test::emu_util::ScopedBlockFilter;

constexpr int64_t kN = 524352;  // tokens: 2^19 + 64
constexpr int64_t kD = 4096;    // hidden size (also 32 heads of 128)
constexpr int64_t kRows = 4;    // rows checked: [kN - kRows, kN)
constexpr int64_t kR0 = kN - kRows;
static_assert(kR0 * kD > (int64_t(1) << 31), "the checked rows must lie past 2^31 elements");

// Blocks the named kernels run (kernels not named run every block).
using Rule = std::function<bool(const uint3&, const dim3&)>;
emu::BlockFilter only(std::map<std::string, Rule> rules) {
  return [rules](const char* name, const uint3& b, const dim3& g) {
    const auto it = rules.find(name);
    return it == rules.end() || it->second(b, g);
  };
}
Rule last_blocks_x(int64_t count) {
  return [count](const uint3& b, const dim3& g) { return int64_t(b.x) >= int64_t(g.x) - count; };
}
Rule first_blocks_x(int64_t count) {
  return [count](const uint3& b, const dim3&) { return int64_t(b.x) < count; };
}

// Rows [r0, r0 + rows) of a [*, cols] bf16 sparse tensor as bits, and floats into it.
std::vector<uint16_t> read_bits(emu::SparseBuffer& x, int64_t r0, int64_t rows, int64_t cols) {
  std::vector<uint16_t> v(size_t(rows * cols));
  std::memcpy(v.data(), x.as<uint16_t>() + r0 * cols, v.size() * 2);
  return v;
}
void write_rows(emu::SparseBuffer& x, int64_t r0, int64_t cols, const std::vector<float>& v) {
  uint16_t* p = x.as<uint16_t>() + r0 * cols;
  for (size_t i = 0; i < v.size(); ++i) p[i] = f32_to_bf16_bits(v[i]);
}
void poison_rows(emu::SparseBuffer& x, int64_t r0, int64_t rows, int64_t cols) {
  std::memset(x.as<uint16_t>() + r0 * cols, 0xff, size_t(rows * cols) * 2);
}
std::vector<float> random_bf16(std::mt19937_64& rng, size_t n, float lo = -2.0f, float hi = 2.0f) {
  return ll::test::round_bf16(ll::test::random_uniform(rng, n, lo, hi));
}
size_t bf16_bytes(int64_t n) { return size_t(n) * 2; }

}  // namespace

TEST_CASE("emulated rmsnorm forward and backward past 2^31 elements") {
  namespace dev = ll::cuda::rmsnorm_dev;
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  const float eps = 1e-5f;
  emu::SparseBuffer x(bf16_bytes(kN * kD)), out(bf16_bytes(kN * kD)), dout(bf16_bytes(kN * kD)),
      dx(bf16_bytes(kN * kD));
  const auto xw = random_bf16(rng, size_t(kRows * kD)), gw = random_bf16(rng, size_t(kRows * kD));
  const auto dx0 = random_bf16(rng, size_t(kRows * kD)), w = random_bf16(rng, size_t(kD));
  write_rows(x, kR0, kD, xw);
  write_rows(dout, kR0, kD, gw);
  write_rows(dx, kR0, kD, dx0);
  poison_rows(out, kR0, kRows, kD);
  auto bw = ll::test::emu_util::bf16_host_buffer(w);
  std::vector<float> rstd(size_t(kN), 0.0f);  // [N]: rows outside the window stay 0
  const dev::DwChunks ch = dev::dweight_chunks(kN);
  std::vector<float> partial(size_t(ch.n_chunks * kD), 0.0f);  // chunks not run add nothing
  std::vector<float> dweight(size_t(kD), 0.0f);

  std::vector<float> out_ref(xw.size()), rstd_ref(static_cast<size_t>(kRows)),
      dx_ref = dx0, dw_ref(size_t(kD), 0.0f);
  ll::cpu::rmsnorm_forward(out_ref.data(), rstd_ref.data(), xw.data(), w.data(), kRows, kD, eps);
  ll::cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), gw.data(), xw.data(), w.data(),
                            rstd_ref.data(), kRows, kD);

  std::vector<emu::KernelRun> runs;
  {
    const ScopedBlockFilter filter(only({
        {"rmsnorm_forward_kernel<8>", last_blocks_x(kRows)},
        {"rmsnorm_backward_dx_kernel<8>", last_blocks_x(kRows)},
        // The last row chunk holds the window (the partial sums of the others stay 0).
        {"rmsnorm_dweight_partial_kernel",
         [](const uint3& b, const dim3& g) { return b.y == g.y - 1; }},
    }));
    dev::run_rmsnorm_forward(emu::EmuLauncher{&runs}, out.as<bf16>(), rstd.data(), x.as<bf16>(),
                             bw.as<bf16>(), kN, kD, eps);
    dev::run_rmsnorm_backward(emu::EmuLauncher{&runs}, dx.as<bf16>(), dweight.data(),
                              partial.data(), dout.as<bf16>(), x.as<bf16>(), bw.as<bf16>(),
                              rstd.data(), kN, kD);
  }
  REQUIRE(runs.size() == 4);
  CHECK(runs[0].stats.blocks == kRows);
  check_bf16_close(read_bits(out, kR0, kRows, kD), out_ref, 1e-2, 1e-2, 1e-2);
  ll::test::check_close(std::vector<float>(rstd.begin() + kR0, rstd.end()),
                        ll::test::to_double(rstd_ref), 0.0, 1e-6, 1e-6);
  check_bf16_close(read_bits(dx, kR0, kRows, kD), dx_ref, 1e-2, 1e-2, 1e-2);
  ll::test::check_close(dweight, ll::test::to_double(dw_ref), 1e-3, 1e-2, 1e-3);
}

TEST_CASE("emulated rope forward and backward past 2^31 elements") {
  namespace dev = ll::cuda::rope_dev;
  std::mt19937_64 rng(ll::test::test_seeds()[1] + 1);
  constexpr int64_t kHeads = 32, kHd = 128;
  const ll::RopeFrequencies freqs = ll::rope_frequencies({}, 500000.0, kHd, 8192, kN);
  emu::SparseBuffer x(bf16_bytes(kN * kD));
  const auto xw = random_bf16(rng, size_t(kRows * kD));
  write_rows(x, kR0, kD, xw);
  // The CPU reference on the window: its positions are the tokens' own (offset kR0).
  std::vector<float> fwd_ref = xw, bwd_ref = xw;
  ll::cpu::rope_forward(fwd_ref.data(), kRows, kHeads, kHd, kR0, freqs);
  ll::cpu::rope_backward(bwd_ref.data(), kRows, kHeads, kHd, kR0, freqs);
  const ScopedBlockFilter filter(only({{"rope_kernel", last_blocks_x(kRows)}}));
  dev::run_rope_forward(emu::EmuLauncher{}, x.as<bf16>(), kN, kHeads, kHd, 0, freqs);
  check_bf16_close(read_bits(x, kR0, kRows, kD), fwd_ref, 1e-2, 1e-2, 1e-2);
  write_rows(x, kR0, kD, xw);
  dev::run_rope_backward(emu::EmuLauncher{}, x.as<bf16>(), kN, kHeads, kHd, 0, freqs);
  check_bf16_close(read_bits(x, kR0, kRows, kD), bwd_ref, 1e-2, 1e-2, 1e-2);
}

TEST_CASE("emulated embedding forward and backward past 2^31 elements") {
  namespace dev = ll::cuda::embedding_dev;
  std::mt19937_64 rng(ll::test::test_seeds()[1] + 2);
  constexpr int64_t kVocab = 16;
  const auto table = random_bf16(rng, size_t(kVocab * kD));
  auto btable = ll::test::emu_util::bf16_host_buffer(table);
  std::vector<int32_t> tokens(size_t(kN), 0);  // [N]
  for (int64_t r = kR0; r < kN; ++r) tokens[size_t(r)] = int32_t(1 + (r - kR0) * 3);
  emu::SparseBuffer out(bf16_bytes(kN * kD)), dout(bf16_bytes(kN * kD));
  poison_rows(out, kR0, kRows, kD);
  const auto gw = random_bf16(rng, size_t(kRows * kD));
  write_rows(dout, kR0, kD, gw);  // rows outside the window: 0 (their token 0 gains nothing)
  std::vector<float> dtable(size_t(kVocab * kD), 0.0f);
  std::vector<float> out_ref(size_t(kRows * kD)), dtable_ref(dtable.size(), 0.0f);
  ll::cpu::embedding_forward(out_ref.data(), table.data(), tokens.data() + kR0, kRows, kVocab, kD);
  ll::cpu::embedding_backward(dtable_ref.data(), gw.data(), tokens.data() + kR0, kRows, kVocab, kD);

  // The backward walks every token for its columns: only the last column block runs (its
  // columns are the ones checked).
  constexpr int64_t kCol0 = kD - ll::cuda::embedding_dev::kThreads;
  const ScopedBlockFilter filter(only({{"embedding_forward_kernel", last_blocks_x(kRows)},
                                       {"embedding_backward_kernel", last_blocks_x(1)}}));
  int flag = 0;
  dev::run_embedding_forward(emu::EmuLauncher{}, out.as<bf16>(), btable.as<bf16>(), tokens.data(),
                             kN, kVocab, kD, &flag);
  dev::run_embedding_backward(emu::EmuLauncher{}, dtable.data(), dout.as<bf16>(), tokens.data(), kN,
                              kVocab, kD, &flag);
  CHECK(flag == 0);
  check_bf16_close(read_bits(out, kR0, kRows, kD), out_ref, 0.0, 0.0, 1e-30);
  std::vector<float> got, want;
  for (int64_t v = 0; v < kVocab; ++v)
    for (int64_t d = kCol0; d < kD; ++d) {
      got.push_back(dtable[size_t(v * kD + d)]);
      want.push_back(dtable_ref[size_t(v * kD + d)]);
    }
  ll::test::check_close(got, ll::test::to_double(want), 0.0, 0.0, 1e-30);
}

TEST_CASE("emulated bias add and bias gradient past 2^31 elements") {
  namespace dev = ll::cuda::bias_dev;
  std::mt19937_64 rng(ll::test::test_seeds()[1] + 3);
  const auto bias = random_bf16(rng, size_t(kD));
  auto bbias = ll::test::emu_util::bf16_host_buffer(bias);
  emu::SparseBuffer out(bf16_bytes(kN * kD));
  // The 16-byte path: 2^28 + 2^15 pieces of 8 on 2^20 blocks of 256 threads; the first two
  // blocks' second turn covers row 2^31 / D = 524288 exactly.
  constexpr int64_t kRow = (int64_t(1) << 31) / kD;
  const auto row = random_bf16(rng, size_t(kD));
  write_rows(out, kRow, kD, row);
  {
    const ScopedBlockFilter filter(only({{"add_bias_kernel<bf16, 8>", first_blocks_x(2)}}));
    dev::run_add_bias(emu::EmuLauncher{}, out.as<bf16>(), bbias.as<bf16>(), kN, kD);
  }
  std::vector<float> want(static_cast<size_t>(kD));
  for (int64_t d = 0; d < kD; ++d) want[size_t(d)] = row[size_t(d)] + bias[size_t(d)];
  check_bf16_close(read_bits(out, kRow, 1, kD), want, 1e-2, 1e-2, 1e-2);

  // Gradient: the last row chunk holds the window.
  emu::SparseBuffer dout(bf16_bytes(kN * kD));
  const auto gw = random_bf16(rng, size_t(kRows * kD));
  write_rows(dout, kR0, kD, gw);
  const dev::SumChunks ch = dev::sum_chunks(kN);
  std::vector<double> partial(size_t(ch.n_chunks * kD), 0.0);
  std::vector<float> dbias(size_t(kD), 0.0f);
  std::vector<double> dbias_ref(size_t(kD), 0.0);
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t d = 0; d < kD; ++d) dbias_ref[size_t(d)] += gw[size_t(r * kD + d)];
  const ScopedBlockFilter filter(only(
      {{"bias_sum_partial_kernel", [](const uint3& b, const dim3& g) { return b.y == g.y - 1; }}}));
  dev::run_bias_backward(emu::EmuLauncher{}, dbias.data(), partial.data(), dout.as<bf16>(), kN, kD);
  ll::test::check_close(dbias, dbias_ref, 1e-6, 1e-6, 1e-6);
}

TEST_CASE("emulated cross-entropy past 2^31 logits") {
  namespace dev = ll::cuda::cross_entropy_dev;
  std::mt19937_64 rng(ll::test::test_seeds()[1] + 4);
  constexpr int64_t kVocab = 128256, kCeRows = 20000, kLast = 2;
  static_assert((kCeRows - kLast) * kVocab > (int64_t(1) << 31), "past 2^31");
  emu::SparseBuffer logits(size_t(kCeRows * kVocab) * 4);
  std::vector<int32_t> targets(size_t(kCeRows), 0);
  std::vector<float> losses(size_t(kCeRows), NAN);
  const float scale = 0.25f;
  std::vector<std::vector<float>> rows;
  for (int64_t r = kCeRows - kLast; r < kCeRows; ++r) {
    rows.push_back(ll::test::random_uniform(rng, size_t(kVocab), -4.0f, 4.0f));
    std::memcpy(logits.as<float>() + r * kVocab, rows.back().data(), size_t(kVocab) * 4);
    targets[size_t(r)] = int32_t((r * 7919) % kVocab);
  }
  int status = 0;
  {
    const ScopedBlockFilter filter(only({{"cross_entropy_kernel", last_blocks_x(kLast)}}));
    dev::run_cross_entropy_chunk(emu::EmuLauncher{}, losses.data(), logits.as<float>(),
                                 targets.data(), kCeRows, int(kVocab), scale, true, &status);
  }
  CHECK(status == 0);
  for (int64_t i = 0; i < kLast; ++i) {
    const int64_t r = kCeRows - kLast + i;
    const std::vector<float>& x = rows[size_t(i)];
    double mx = -1e300, sum = 0.0;
    for (float v : x) mx = std::max(mx, double(v));
    for (float v : x) sum += std::exp(double(v) - mx);
    const int32_t t = targets[size_t(r)];
    INFO("row " << r);
    CHECK(losses[size_t(r)] == doctest::Approx(mx + std::log(sum) - x[size_t(t)]).epsilon(1e-5));
    std::vector<float> grad(static_cast<size_t>(kVocab));
    std::vector<double> want(static_cast<size_t>(kVocab));
    const uint16_t* g = reinterpret_cast<const uint16_t*>(logits.as<float>() + r * kVocab);
    for (int64_t j = 0; j < kVocab; ++j) {
      grad[size_t(j)] = bf16_bits_to_f32(g[j]);
      want[size_t(j)] = (std::exp(double(x[size_t(j)]) - mx) / sum - (j == t ? 1.0 : 0.0)) * scale;
    }
    ll::test::check_close(grad, want, 1e-6, 1e-2, 1e-2);
  }
}

TEST_CASE("emulated flat kernels (add, sum of squares, AdamW) past 2^31 elements") {
  constexpr int64_t kFlat = (int64_t(1) << 31) + 4096 + 3;  // a ragged tail too
  // In-place add, the 16-byte path: block 0's second turn reaches elements [2^31, 2^31 + 2048)
  // (2^20 blocks x 256 threads x 8 elements per turn), its first threads the 3-element tail.
  {
    std::mt19937_64 rng(ll::test::test_seeds()[1] + 5);
    emu::SparseBuffer x(bf16_bytes(kFlat)), y(bf16_bytes(kFlat));
    constexpr int64_t kE0 = int64_t(1) << 31, kCount = 2048;
    const auto xv = random_bf16(rng, size_t(kCount)), yv = random_bf16(rng, size_t(kCount));
    write_rows(x, kE0, 1, xv);
    write_rows(y, kE0, 1, yv);
    const auto xt = random_bf16(rng, 3), yt = random_bf16(rng, 3);
    write_rows(x, kFlat - 3, 1, xt);
    write_rows(y, kFlat - 3, 1, yt);
    {
      const ScopedBlockFilter filter(only({{"add_inplace_kernel<bf16, 8>", first_blocks_x(1)}}));
      ll::cuda::add_dev::run_add_inplace_bf16(emu::EmuLauncher{}, x.as<bf16>(), y.as<bf16>(),
                                              kFlat);
    }
    std::vector<float> want(static_cast<size_t>(kCount)), want_tail(3);
    for (size_t i = 0; i < want.size(); ++i) want[i] = xv[i] + yv[i];
    for (size_t i = 0; i < 3; ++i) want_tail[i] = xt[i] + yt[i];
    check_bf16_close(read_bits(x, kE0, kCount, 1), want, 1e-2, 1e-2, 1e-2);
    check_bf16_close(read_bits(x, kFlat - 3, 3, 1), want_tail, 1e-2, 1e-2, 1e-2);
  }
  // Sum of squares: only the first first-pass block runs (the others' partials stay 0); its
  // grid-stride loop's last turn (512 blocks x 256 threads per turn) starts at element 2^31.
  {
    emu::SparseBuffer x(size_t(kFlat) * 4);
    const int64_t e1 = (int64_t(1) << 31) + 5, e2 = (int64_t(1) << 31) + 200;
    x.as<float>()[e1] = 3.0f;
    x.as<float>()[e2] = 4.0f;
    std::vector<double> partial(size_t(ll::cuda::reduce_dev::kPartials), 0.0);
    double result = NAN;
    const ScopedBlockFilter filter(only({{"sum_squares_partial_kernel", first_blocks_x(1)}}));
    ll::cuda::reduce_dev::run_sum_squares(emu::EmuLauncher{}, &result, partial.data(),
                                          x.as<float>(), kFlat);
    CHECK(result == 25.0);
  }
  // AdamW, one element per thread: block 0's ninth turn reaches [2^31, 2^31 + 256).
  {
    std::mt19937_64 rng(ll::test::test_seeds()[1] + 6);
    emu::SparseBuffer master(size_t(kFlat) * 4), grad(size_t(kFlat) * 4), m(size_t(kFlat) * 4),
        v(size_t(kFlat) * 4), param(bf16_bytes(kFlat));
    constexpr int64_t kE0 = int64_t(1) << 31, kCount = 256;
    std::vector<float> p0 = ll::test::random_uniform(rng, kCount),
                       g0 = ll::test::random_uniform(rng, kCount),
                       m0 = ll::test::random_uniform(rng, kCount, -0.1f, 0.1f),
                       v0 = ll::test::random_uniform(rng, kCount, 0.0f, 0.1f);
    std::memcpy(master.as<float>() + kE0, p0.data(), kCount * 4);
    std::memcpy(grad.as<float>() + kE0, g0.data(), kCount * 4);
    std::memcpy(m.as<float>() + kE0, m0.data(), kCount * 4);
    std::memcpy(v.as<float>() + kE0, v0.data(), kCount * 4);
    ll::AdamWStep step;
    step.lr = 1e-3;
    step.step = 3;
    step.config.weight_decay = 0.1;
    {
      const ScopedBlockFilter filter(only({{"adamw_kernel", first_blocks_x(1)}}));
      ll::cuda::adamw_dev::run_adamw_step(emu::EmuLauncher{}, master.as<float>(), grad.as<float>(),
                                          m.as<float>(), v.as<float>(), param.as<bf16>(), kFlat,
                                          step);
    }
    ll::adamw_update(p0.data(), g0.data(), m0.data(), v0.data(), kCount, step);
    for (int64_t i = 0; i < kCount; ++i) {
      INFO("element 2^31 + " << i);
      CHECK(master.as<float>()[kE0 + i] == p0[size_t(i)]);  // bit-identical to the CPU update
      CHECK(m.as<float>()[kE0 + i] == m0[size_t(i)]);
      CHECK(v.as<float>()[kE0 + i] == v0[size_t(i)]);
      CHECK(param.as<uint16_t>()[kE0 + i] == f32_to_bf16_bits(p0[size_t(i)]));
    }
  }
}

#else
TEST_CASE("kernels past 2^31 elements in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
