#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <climits>

#include "common/error.h"

namespace ll::cpu {

namespace {

// The three products below are one row-major sgemm each; this checks their sizes once.
// cblas takes int dimensions.
void check_sizes(const char* op, int64_t m, int64_t k, int64_t n_out) {
  LL_CHECK(m >= 0 && k >= 0 && n_out >= 0, "{}: negative size (m {}, k {}, n {})", op, m, k,
           n_out);
  LL_CHECK(m <= INT_MAX && k <= INT_MAX && n_out <= INT_MAX,
           "{}: dimension too large for BLAS (m {}, k {}, n {})", op, m, k, n_out);
}

// An empty reduction: BLAS rejects a leading dimension of 0, so the caller handles it here.
// The sum over nothing is 0, so c is zeroed or, when accumulating, left as it is.
void empty_sum(float* c, int64_t count, bool accumulate) {
  if (accumulate) return;
  for (int64_t i = 0; i < count; ++i) c[i] = 0.0f;
}

}  // namespace

void matmul_forward(float* out, const float* x, const float* w, int64_t m, int64_t k, int64_t n_out,
                    bool accumulate) {
  matmul_forward_scaled(out, x, w, m, k, n_out, 1.0f, accumulate);
}

void matmul_forward_scaled(float* out, const float* x, const float* w, int64_t m, int64_t k,
                           int64_t n_out, float alpha, bool accumulate) {
  check_sizes("matmul", m, k, n_out);
  if (m == 0 || n_out == 0) return;
  if (k == 0) return empty_sum(out, m * n_out, accumulate);
  // Row-major out [m, n] = alpha * x [m, k] @ w [n, k]^T; beta 0 overwrites (NaN in out is
  // ignored).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n_out), int(k), alpha, x,
              int(k), w, int(k), accumulate ? 1.0f : 0.0f, out, int(n_out));
}

void matmul_backward_input(float* dx, const float* dout, const float* w, int64_t m, int64_t k,
                           int64_t n_out, float alpha, bool accumulate) {
  check_sizes("matmul_backward_input", m, k, n_out);
  if (m == 0 || k == 0) return;
  if (n_out == 0) return empty_sum(dx, m * k, accumulate);
  // Row-major dx [m, k] = alpha * dout [m, n] @ w [n, k].
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(k), int(n_out), alpha, dout,
              int(n_out), w, int(k), accumulate ? 1.0f : 0.0f, dx, int(k));
}

void matmul_backward_weight(float* dw, const float* dout, const float* x, int64_t m, int64_t k,
                            int64_t n_out, float alpha, bool accumulate) {
  check_sizes("matmul_backward_weight", m, k, n_out);
  if (n_out == 0 || k == 0) return;
  if (m == 0) return empty_sum(dw, n_out * k, accumulate);
  // Row-major dw [n, k] = alpha * dout [m, n]^T @ x [m, k].
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(n_out), int(k), int(m), alpha, dout,
              int(n_out), x, int(k), accumulate ? 1.0f : 0.0f, dw, int(k));
}

}  // namespace ll::cpu
