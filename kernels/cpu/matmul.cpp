#include "kernels/cpu/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>

#include "common/error.h"

namespace ll::cpu {

namespace {

// The three products below are one row-major sgemm each; this checks their sizes once.
// cblas takes int dimensions.
void check_sizes(const char* op, int64_t m, int64_t k, int64_t n_out) {
  LL_CHECK(m >= 0 && k >= 0 && n_out >= 0, "{}: negative size (m {}, k {}, n {})", op, m, k, n_out);
  LL_CHECK(m <= INT_MAX && k <= INT_MAX && n_out <= INT_MAX,
           "{}: dimension too large for BLAS (m {}, k {}, n {})", op, m, k, n_out);
}

// An empty reduction: BLAS rejects a leading dimension of 0, so the caller handles it here.
// The sum over nothing is 0, so c is zeroed or, when accumulating, left as it is.
void empty_sum(float* c, int64_t count, bool accumulate) {
  if (accumulate) return;
  for (int64_t i = 0; i < count; ++i) c[i] = 0.0f;
}

// One row-major sgemm C [M, N] = alpha * op(A) @ op(B) + beta * C, split into blocks of C
// rows (or columns, when N is the larger side) over the OpenMP threads, each block a
// single-threaded BLAS call. OpenBLAS's own thread pool is switched off: its spinning
// threads and OpenMP's fought over the cores (a 3x slowdown measured on 2 cores), and one
// pool keeps every result independent of which library scheduled it. Each element of C is
// still one BLAS dot-product order, so results do not depend on the block split.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  static const bool single_threaded_blas = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded_blas;
  const auto call = [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
    const float* a_blk = trans_a ? a + r0 : a + r0 * lda;  // A is [K, M] when transposed
    const float* b_blk = trans_b ? b + c0 * ldb : b + c0;  // B is [N, K] when transposed
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, int(rows), int(cols), int(k), alpha, a_blk,
                int(lda), b_blk, int(ldb), beta, c + r0 * ldc + c0, int(ldc));
  };
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool split_rows = m >= n;
  const int64_t extent = split_rows ? m : n;
  // Blocks of at least 32 rows/columns, and no split for small products.
  const int64_t blocks =
      m * n * k < (int64_t(1) << 16) ? 1 : std::clamp<int64_t>(extent / 32, 1, threads);
  if (blocks == 1) return call(0, m, 0, n);
  const int64_t step = (extent + blocks - 1) / blocks;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t begin = blk * step, len = std::min(step, extent - begin);
    if (len <= 0) continue;
    if (split_rows) {
      call(begin, len, 0, n);
    } else {
      call(0, m, begin, len);
    }
  }
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
  sgemm(false, true, m, n_out, k, alpha, x, k, w, k, accumulate ? 1.0f : 0.0f, out, n_out);
}

void matmul_backward_input(float* dx, const float* dout, const float* w, int64_t m, int64_t k,
                           int64_t n_out, float alpha, bool accumulate) {
  check_sizes("matmul_backward_input", m, k, n_out);
  if (m == 0 || k == 0) return;
  if (n_out == 0) return empty_sum(dx, m * k, accumulate);
  // Row-major dx [m, k] = alpha * dout [m, n] @ w [n, k].
  sgemm(false, false, m, k, n_out, alpha, dout, n_out, w, k, accumulate ? 1.0f : 0.0f, dx, k);
}

void matmul_backward_weight(float* dw, const float* dout, const float* x, int64_t m, int64_t k,
                            int64_t n_out, float alpha, bool accumulate) {
  check_sizes("matmul_backward_weight", m, k, n_out);
  if (n_out == 0 || k == 0) return;
  if (m == 0) return empty_sum(dw, n_out * k, accumulate);
  // Row-major dw [n, k] = alpha * dout [m, n]^T @ x [m, k].
  sgemm(true, false, n_out, k, m, alpha, dout, n_out, x, k, accumulate ? 1.0f : 0.0f, dw, k);
}

}  // namespace ll::cpu
