// Every op of the Backend interface on the CudaBackend against the CpuBackend (ggml's
// test-backend-ops): one table of (op, shape) cases; each case draws fresh bf16-rounded inputs,
// runs them through both backends' virtuals only and compares with the bf16-vs-fp32 budget of
// DESIGN.md section 4 (relative norm and per element atol + rtol; NaN never passes). Outputs the
// op overwrites start as NaN on the CUDA side (allocate, upload NaN, run); ops that accumulate
// or work in place start from the same values on both sides. Attention runs the backend's
// default family (simt). The kernels' own tests (test_*_gpu.cpp) cover more shapes and paths;
// test_cuda_backend_gpu.cpp covers the matmul forms, the classifier's errors and memory.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/backend_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_scalings.h"

namespace {

using namespace ll;
using ll::test::get;
using ll::test::kBf16Rtol;
using ll::test::poisoned;
using ll::test::put;
using ll::test::random_uniform;
using ll::test::round_bf16;

struct Backends {
  CpuBackend cpu;
  CudaBackend gpu;
  Backend* side(int i) { return i == 0 ? static_cast<Backend*>(&cpu) : &gpu; }  // 0: reference
};

// A comparison budget: |got - ref| <= atol + atol_of_max * max|ref| + rtol * |ref| per element
// and ||got - ref|| / ||ref|| < rel.
struct Tol {
  double atol, atol_of_max, rtol, rel;
};
constexpr Tol kBf16Out{1e-5, 0.0, kBf16Rtol, 1e-2};   // one bf16 rounding of the output
constexpr Tol kBf16Sum{1e-5, 1e-3, kBf16Rtol, 1e-2};  // plus fp32 sums that may cancel
constexpr Tol kF32Out{1e-5, 1e-5, 1e-5, 1e-5};        // fp32 vs fp32
constexpr Tol kExact{0.0, 0.0, 0.0, 1e-12};           // a copy
constexpr Tol kAttnOut{1e-2, 0.0, 1e-2, 1e-2};        // test_attention_gpu.cpp's
constexpr Tol kAttnGrad{1e-6, 1e-2, 1e-2, 1e-2};      // test_attention_gpu.cpp's
constexpr Tol kLse{1e-4, 0.0, 1e-5, 1e-5};            // test_attention_gpu.cpp's

void compare(const char* what, const std::vector<float>& got, const std::vector<float>& ref,
             const Tol& tol) {
  double mx = 0.0;
  for (float x : ref) mx = std::max(mx, double(std::fabs(x)));
  INFO(std::string(what) << " (max |ref| " << mx << ")");
  ll::test::check_close(got, ll::test::to_double(ref), tol.atol + tol.atol_of_max * mx, tol.rtol,
                        tol.rel);
}

// An output the op overwrites: NaN on the CUDA side, uninitialised on the CPU.
OwnedTensor out(Backend& backend, std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t = backend.allocate(std::move(shape), dtype);
  if (backend.kind() != BackendKind::Cpu) {
    const std::vector<float> nan = poisoned(size_t(t->numel()));
    backend.upload_f32(*t, nan.data());
  }
  return t;
}
OwnedTensor put_i32(Backend& backend, const std::vector<int32_t>& host) {
  OwnedTensor t = backend.allocate({int64_t(host.size())}, DType::I32);
  backend.upload_i32(*t, host.data());
  return t;
}
// Activations: F32 on the CPU, BF16 on CUDA.
DType act(const Backend& backend) { return backend.activation_dtype(); }
std::vector<float> bf16_uniform(std::mt19937_64& rng, int64_t n, float lo = -1.0f,
                                float hi = 1.0f) {
  return round_bf16(random_uniform(rng, size_t(n), lo, hi));
}
std::vector<int32_t> random_ids(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = id(rng);
  return v;
}

struct OpCase;
using Runner = void (*)(Backends&, const OpCase&, std::mt19937_64&);
struct OpCase {
  const char* op;          // the Backend virtuals it drives
  std::vector<int64_t> s;  // shape, as the runner's comment says
  Runner run;
};

// s = {V, D, N}
void embedding_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t v = c.s[0], d = c.s[1], n = c.s[2];
  const auto table = bf16_uniform(rng, v * d);
  const auto ids = random_ids(rng, n, v);
  const auto dout = bf16_uniform(rng, n * d);
  const auto dtable0 = random_uniform(rng, size_t(v * d));
  std::vector<float> ref[2], got[2];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    auto o = out(*be, {n, d}, act(*be));
    auto tokens = put_i32(*be, ids);
    be->embedding_forward(*o, *put(*be, {v, d}, act(*be), table), *tokens);
    auto dt = put(*be, {v, d}, DType::F32, dtable0);
    be->embedding_backward(*dt, *put(*be, {n, d}, act(*be), dout), *tokens);
    (side ? got : ref)[0] = get(*be, o);
    (side ? got : ref)[1] = get(*be, dt);
  }
  compare("embedding_forward out", got[0], ref[0], kExact);
  compare("embedding_backward dtable", got[1], ref[1], kF32Out);
}

// s = {N, D}
void rmsnorm_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0], d = c.s[1];
  const float eps = 1e-5f;
  const auto x = bf16_uniform(rng, n * d, -2.0f, 2.0f);
  const auto w = bf16_uniform(rng, d, 0.5f, 1.5f);
  const auto g = bf16_uniform(rng, n * d);
  const auto dx0 = bf16_uniform(rng, n * d);
  const auto dw0 = random_uniform(rng, size_t(d));
  // The backward reads the CPU's rstd on both sides (same inputs).
  std::vector<float> ref[4], got[4], rstd;
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    auto o = out(*be, {n, d}, act(*be));
    auto r = out(*be, {n}, DType::F32);
    auto tx = put(*be, {n, d}, act(*be), x), tw = put(*be, {d}, act(*be), w);
    be->rmsnorm_forward(*o, *r, *tx, *tw, eps);
    if (side == 0) rstd = get(*be, r);
    auto dx = put(*be, {n, d}, act(*be), dx0);
    auto dw = put(*be, {d}, DType::F32, dw0);
    be->rmsnorm_backward(*dx, *dw, *put(*be, {n, d}, act(*be), g), *tx, *tw,
                         *put(*be, {n}, DType::F32, rstd));
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, o);
    dst[1] = get(*be, r);
    dst[2] = get(*be, dx);
    dst[3] = get(*be, dw);
  }
  compare("rmsnorm_forward out", got[0], ref[0], kBf16Out);
  compare("rmsnorm_forward rstd", got[1], ref[1], {0.0, 0.0, 1e-5, 1e-5});
  compare("rmsnorm_backward dx", got[2], ref[2], {1e-4, 0.0, kBf16Rtol, 1e-2});
  compare("rmsnorm_backward dweight", got[3], ref[3], {1e-5 + 1e-6 * double(n), 0.0, 1e-5, 1e-5});
}

// s = {M, K, Nout}; accumulate = false (outputs poisoned) and true with alpha 0.5.
void matmul_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t m = c.s[0], k = c.s[1], n_out = c.s[2];
  const auto x = bf16_uniform(rng, m * k), w = bf16_uniform(rng, n_out * k);
  const auto dout = bf16_uniform(rng, m * n_out);
  const auto prior_out = bf16_uniform(rng, m * n_out), prior_dx = bf16_uniform(rng, m * k);
  const auto prior_dw = random_uniform(rng, size_t(n_out * k));
  for (bool accumulate : {false, true}) {
    INFO("accumulate " << accumulate);
    const float alpha = accumulate ? 0.5f : 1.0f;
    std::vector<float> ref[3], got[3];
    for (int side = 0; side < 2; ++side) {
      Backend* be = b.side(side);
      const DType a = act(*be);
      auto o = accumulate ? put(*be, {m, n_out}, a, prior_out) : out(*be, {m, n_out}, a);
      auto dx = accumulate ? put(*be, {m, k}, a, prior_dx) : out(*be, {m, k}, a);
      auto dw = accumulate ? put(*be, {n_out, k}, DType::F32, prior_dw)
                           : out(*be, {n_out, k}, DType::F32);
      auto tx = put(*be, {m, k}, a, x), tw = put(*be, {n_out, k}, a, w);
      auto tdo = put(*be, {m, n_out}, a, dout);
      be->matmul_forward(*o, *tx, *tw, accumulate, alpha);
      be->matmul_backward_input(*dx, *tdo, *tw, accumulate, alpha);
      be->matmul_backward_weight(*dw, *tdo, *tx, accumulate, alpha);
      std::vector<float>* dst = side ? got : ref;
      dst[0] = get(*be, o);
      dst[1] = get(*be, dx);
      dst[2] = get(*be, dw);
    }
    compare("matmul_forward out", got[0], ref[0], kBf16Sum);
    compare("matmul_backward_input dx", got[1], ref[1], kBf16Sum);
    compare("matmul_backward_weight dw", got[2], ref[2], {1e-5, 1e-5, 1e-4, 1e-4});
  }
}

// s = {M, C}: add_bias with an activation-dtype and an F32 bias, bias_backward onto prior
// gradients.
void bias_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t m = c.s[0], n_col = c.s[1];
  const auto x = bf16_uniform(rng, m * n_col, -4.0f, 4.0f), bias = bf16_uniform(rng, n_col);
  const auto bias_f32 = random_uniform(rng, size_t(n_col));
  const auto dout = bf16_uniform(rng, m * n_col);
  const auto dbias0 = random_uniform(rng, size_t(n_col));
  std::vector<float> ref[3], got[3];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto o = put(*be, {m, n_col}, a, x), of = put(*be, {m, n_col}, a, x);
    be->add_bias(*o, *put(*be, {n_col}, a, bias));
    be->add_bias(*of, *put(*be, {n_col}, DType::F32, bias_f32));
    auto db = put(*be, {n_col}, DType::F32, dbias0);
    be->bias_backward(*db, *put(*be, {m, n_col}, a, dout));
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, o);
    dst[1] = get(*be, of);
    dst[2] = get(*be, db);
  }
  compare("add_bias (activation bias)", got[0], ref[0], kBf16Out);
  compare("add_bias (F32 bias)", got[1], ref[1], kBf16Out);
  // Both sum the same values in double and round once.
  compare("bias_backward dbias", got[2], ref[2], kF32Out);
}

// s = {N, heads, hd, position_offset, factor x 10, theta, 0: linear / 1: yarn (original 1024)}
void rope_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0], h = c.s[1], hd = c.s[2], offset = c.s[3];
  const double scale = double(c.s[4]) / 10.0, theta = double(c.s[5]);
  const auto x = bf16_uniform(rng, n * h * hd);
  std::vector<float> ref[2], got[2];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    auto f = put(*be, {n, h, hd}, act(*be), x), bw = put(*be, {n, h, hd}, act(*be), x);
    const RopeFrequencies freqs =
        c.s.size() < 7 ? ll::test::linear_freqs(hd, scale, theta)
                       : rope_frequencies(ll::test::yarn_rope(scale, 1024), theta, hd, 0, 0);
    be->rope_forward(*f, offset, freqs);
    be->rope_backward(*bw, offset, freqs);
    (side ? got : ref)[0] = get(*be, f);
    (side ? got : ref)[1] = get(*be, bw);
  }
  compare("rope_forward", got[0], ref[0], kBf16Out);
  compare("rope_backward", got[1], ref[1], kBf16Out);
}

// s = {N, H, Hkv, hd, G} (G = 0: dense causal, else S2 with group size G)
void attention_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0], h = c.s[1], hkv = c.s[2], hd = c.s[3], g = c.s[4];
  const AttentionPattern mask{g == 0 ? AttnMode::Dense : AttnMode::S2, n, g, h};
  const auto q = bf16_uniform(rng, n * h * hd), k = bf16_uniform(rng, n * hkv * hd);
  const auto v = bf16_uniform(rng, n * hkv * hd), dout = bf16_uniform(rng, n * h * hd);
  // The backward reads the CPU forward's out (bf16-rounded) and lse on both sides.
  std::vector<float> fwd_out, fwd_lse;
  std::vector<float> ref[5], got[5];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto o = out(*be, {n, h, hd}, a);
    auto lse = out(*be, {h, n}, DType::F32);
    auto tq = put(*be, {n, h, hd}, a, q), tk = put(*be, {n, hkv, hd}, a, k);
    auto tv = put(*be, {n, hkv, hd}, a, v);
    be->attention_forward(*o, *lse, *tq, *tk, *tv, mask);
    if (side == 0) {
      fwd_out = round_bf16(get(*be, o));
      fwd_lse = get(*be, lse);
    }
    auto dq = out(*be, {n, h, hd}, a), dk = out(*be, {n, hkv, hd}, a);
    auto dv = out(*be, {n, hkv, hd}, a);
    be->attention_backward(*dq, *dk, *dv, *put(*be, {n, h, hd}, a, dout), *tq, *tk, *tv,
                           *put(*be, {n, h, hd}, a, fwd_out),
                           *put(*be, {h, n}, DType::F32, fwd_lse), mask);
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, o);
    dst[1] = get(*be, lse);
    dst[2] = get(*be, dq);
    dst[3] = get(*be, dk);
    dst[4] = get(*be, dv);
  }
  compare("attention_forward out", got[0], ref[0], kAttnOut);
  compare("attention_forward lse", got[1], ref[1], kLse);
  compare("attention_backward dq", got[2], ref[2], kAttnGrad);
  compare("attention_backward dk", got[3], ref[3], kAttnGrad);
  compare("attention_backward dv", got[4], ref[4], kAttnGrad);
}

// s = {past, n, H, Hkv, hd}
void attention_cached_op(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t past = c.s[0], n = c.s[1], h = c.s[2], hkv = c.s[3], hd = c.s[4];
  const int64_t t = past + n;
  const auto q = bf16_uniform(rng, n * h * hd), k = bf16_uniform(rng, t * hkv * hd);
  const auto v = bf16_uniform(rng, t * hkv * hd);
  std::vector<float> ref, got;
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto o = out(*be, {n, h, hd}, a);
    be->attention_forward_cached(*o, *put(*be, {n, h, hd}, a, q), *put(*be, {t, hkv, hd}, a, k),
                                 *put(*be, {t, hkv, hd}, a, v), past);
    (side ? got : ref) = get(*be, o);
  }
  compare("attention_forward_cached out", got, ref, {1e-6, 1e-2, 1e-2, 1e-2});
}

// s = {N, F}
void swiglu_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0], f = c.s[1];
  const auto gate = bf16_uniform(rng, n * f, -4.0f, 4.0f), up = bf16_uniform(rng, n * f);
  const auto dout = bf16_uniform(rng, n * f);
  std::vector<float> ref[3], got[3];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto o = out(*be, {n, f}, a), dg = out(*be, {n, f}, a), du = out(*be, {n, f}, a);
    auto tg = put(*be, {n, f}, a, gate), tu = put(*be, {n, f}, a, up);
    be->swiglu_forward(*o, *tg, *tu);
    be->swiglu_backward(*dg, *du, *put(*be, {n, f}, a, dout), *tg, *tu);
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, o);
    dst[1] = get(*be, dg);
    dst[2] = get(*be, du);
  }
  compare("swiglu_forward out", got[0], ref[0], kBf16Out);
  compare("swiglu_backward dgate", got[1], ref[1], kBf16Out);
  compare("swiglu_backward dup", got[2], ref[2], kBf16Out);
}

// s = {n}: add_inplace and copy on activations (bf16 on CUDA) and on F32, copy F32 -> activation.
void elementwise_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0];
  const auto x = bf16_uniform(rng, n), y = bf16_uniform(rng, n);
  const auto xf = random_uniform(rng, size_t(n)), yf = random_uniform(rng, size_t(n));
  std::vector<float> ref[5], got[5];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto ta = put(*be, {n}, a, x);
    be->add_inplace(*ta, *put(*be, {n}, a, y));
    auto tf = put(*be, {n}, DType::F32, xf);
    be->add_inplace(*tf, *put(*be, {n}, DType::F32, yf));
    auto ca = out(*be, {n}, a), cf = out(*be, {n}, DType::F32), cfa = out(*be, {n}, a);
    be->copy(*ca, *put(*be, {n}, a, x));
    be->copy(*cf, *put(*be, {n}, DType::F32, xf));
    be->copy(*cfa, *put(*be, {n}, DType::F32, xf));
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, ta);
    dst[1] = get(*be, tf);
    dst[2] = get(*be, ca);
    dst[3] = get(*be, cf);
    dst[4] = get(*be, cfa);
  }
  compare("add_inplace (activations)", got[0], ref[0], {0.0, 0.0, kBf16Rtol, 1e-2});
  compare("add_inplace (F32)", got[1], ref[1], kExact);
  compare("copy (activations)", got[2], ref[2], kExact);
  compare("copy (F32)", got[3], ref[3], kExact);
  // F32 into a bf16 dst rounds to nearest even: exactly the host rounding.
  compare("copy (F32 -> activations)", got[4], round_bf16(ref[4]), kExact);
}

// s = {N, D, V, chunk_rows}; every fifth row unlabelled.
void classifier_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0], d = c.s[1], v = c.s[2], chunk = c.s[3];
  const auto x = bf16_uniform(rng, n * d, -2.0f, 2.0f), head = bf16_uniform(rng, v * d);
  std::vector<int32_t> targets = random_ids(rng, n, v);
  for (size_t i = 3; i < targets.size(); i += 5) targets[i] = -1;
  const auto dhead0 = random_uniform(rng, size_t(v * d));
  const float loss_scale = 1.0f / 29.0f;
  std::vector<float> ref[4], got[4];
  int64_t count[2][2] = {};
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    const DType a = act(*be);
    auto tx = put(*be, {n, d}, a, x), th = put(*be, {v, d}, a, head);
    auto tt = put_i32(*be, targets);
    auto loss_f = out(*be, {n}, DType::F32);
    count[side][0] = be->classifier_forward(*loss_f, *tx, *th, *tt, chunk);
    auto loss = out(*be, {n}, DType::F32), dx = out(*be, {n, d}, a);
    auto dh = put(*be, {v, d}, DType::F32, dhead0);
    count[side][1] =
        be->classifier_forward_backward(*loss, *dx, *dh, *tx, *th, *tt, chunk, loss_scale);
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, loss_f);
    dst[1] = get(*be, loss);
    dst[2] = get(*be, dx);
    dst[3] = get(*be, dh);
  }
  CHECK(count[1][0] == count[0][0]);
  CHECK(count[1][1] == count[0][1]);
  const Tol loss_tol{1e-5, 0.0, 1e-5, 1e-5};
  compare("classifier_forward losses", got[0], ref[0], loss_tol);
  compare("classifier_forward_backward losses", got[1], ref[1], loss_tol);
  compare("classifier_forward_backward dx", got[2], ref[2], {1e-6, 2e-2, 2e-2, 2e-2});
  compare("classifier_forward_backward dlm_head", got[3], ref[3], {1e-6, 1e-3, 1e-3, 1e-3});
}

// s = {n}: fill_zero, sum_squares and adamw_step (bf16 param, and the master as its own param).
void optimizer_ops(Backends& b, const OpCase& c, std::mt19937_64& rng) {
  const int64_t n = c.s[0];
  const auto p = random_uniform(rng, size_t(n)), g = random_uniform(rng, size_t(n));
  const auto m0 = random_uniform(rng, size_t(n), -0.1f, 0.1f);
  const auto v0 = random_uniform(rng, size_t(n), 0.0f, 0.01f);
  AdamWStep step;
  step.lr = 1e-2;
  step.step = 3;
  step.grad_scale = 0.5f;
  double sums[2] = {};
  std::vector<float> ref[5], got[5];
  for (int side = 0; side < 2; ++side) {
    Backend* be = b.side(side);
    auto z = put(*be, {n}, DType::F32, p);
    sums[side] = be->sum_squares(*z);
    be->fill_zero(*z);
    auto master = put(*be, {n}, DType::F32, p), param = out(*be, {n}, act(*be));
    auto tm = put(*be, {n}, DType::F32, m0), tv = put(*be, {n}, DType::F32, v0);
    auto grad = put(*be, {n}, DType::F32, g);
    be->adamw_step(*master, *param, *grad, *tm, *tv, step);
    auto self = put(*be, {n}, DType::F32, p);
    be->adamw_step(*self, *self, *grad, *put(*be, {n}, DType::F32, m0),
                   *put(*be, {n}, DType::F32, v0), step);
    std::vector<float>* dst = side ? got : ref;
    dst[0] = get(*be, z);
    dst[1] = get(*be, master);
    dst[2] = get(*be, param);
    dst[3] = get(*be, tm);
    dst[4] = get(*be, self);
  }
  CHECK(sums[1] == doctest::Approx(sums[0]).epsilon(1e-12));
  compare("fill_zero", got[0], ref[0], kExact);
  compare("adamw_step master", got[1], ref[1], kF32Out);
  compare("adamw_step bf16 param", got[2], round_bf16(ref[1]), kExact);
  compare("adamw_step m", got[3], ref[3], kF32Out);
  compare("adamw_step master as param", got[4], ref[1], kF32Out);
}

// Every Backend op, small shapes (the emulated build runs the kernels on the CPU): odd sizes
// (scalar paths), multiples of 8 (vector paths), more than one block or chunk.
const OpCase kCases[] = {
    {"embedding_forward/backward", {5, 1, 3}, embedding_ops},
    {"embedding_forward/backward", {50, 72, 40}, embedding_ops},
    {"rmsnorm_forward/backward", {3, 7}, rmsnorm_ops},
    {"rmsnorm_forward/backward", {130, 264}, rmsnorm_ops},
    {"matmul_forward/backward_input/backward_weight", {1, 1, 1}, matmul_ops},
    {"matmul_forward/backward_input/backward_weight", {37, 45, 19}, matmul_ops},
    {"matmul_forward/backward_input/backward_weight", {128, 64, 200}, matmul_ops},
    {"add_bias/bias_backward", {1, 1}, bias_ops},
    {"add_bias/bias_backward", {37, 13}, bias_ops},
    {"add_bias/bias_backward", {130, 264}, bias_ops},
    {"rope_forward/backward", {3, 2, 6, 5, 10, 10000}, rope_ops},
    {"rope_forward/backward", {17, 4, 128, 100000, 40, 10000}, rope_ops},
    {"rope_forward/backward yarn", {9, 2, 64, 5000, 40, 10000, 1}, rope_ops},
    {"attention_forward/backward (dense)", {3, 1, 1, 32, 0}, attention_ops},
    {"attention_forward/backward (dense)", {37, 4, 2, 64, 0}, attention_ops},
    {"attention_forward/backward (s2)", {64, 4, 2, 32, 16}, attention_ops},
    {"attention_forward/backward (s2)", {50, 2, 2, 128, 14}, attention_ops},
    {"attention_forward_cached", {0, 5, 4, 2, 64}, attention_cached_op},
    {"attention_forward_cached", {29, 1, 4, 1, 32}, attention_cached_op},
    {"swiglu_forward/backward", {1, 1}, swiglu_ops},
    {"swiglu_forward/backward", {33, 200}, swiglu_ops},
    {"add_inplace/copy", {1}, elementwise_ops},
    {"add_inplace/copy", {1001}, elementwise_ops},
    {"classifier_forward/forward_backward", {37, 64, 1000, 8}, classifier_ops},
    {"classifier_forward/forward_backward", {5, 24, 77, 4096}, classifier_ops},
    {"fill_zero/sum_squares/adamw_step", {1}, optimizer_ops},
    {"fill_zero/sum_squares/adamw_step", {1001}, optimizer_ops},
};

}  // namespace

TEST_CASE("every Backend op on CUDA matches the CPU backend (one table of cases)") {
  ll::test::require_gpu();
  Backends b;
  for (const uint64_t seed : ll::test::test_seeds()) {
    for (size_t i = 0; i < std::size(kCases); ++i) {
      const OpCase& c = kCases[i];
      std::string shape;
      for (int64_t x : c.s) shape += (shape.empty() ? "" : ", ") + std::to_string(x);
      INFO(std::string(c.op) << " [" << shape << "] seed " << seed);
      std::mt19937_64 rng(seed + i);
      c.run(b, c, rng);
    }
  }
}

#else
TEST_CASE("backend ops (skipped)") { ll::test::require_gpu(); }
#endif
