#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <climits>

#include "common/error.h"

namespace ll::cpu {

void matmul_forward(float* out, const float* x, const float* w, int64_t m, int64_t k, int64_t n_out,
                    bool accumulate) {
  LL_CHECK(m >= 0 && k >= 0 && n_out >= 0, "matmul: negative size (m {}, k {}, n {})", m, k, n_out);
  // cblas takes int dimensions.
  LL_CHECK(m <= INT_MAX && k <= INT_MAX && n_out <= INT_MAX,
           "matmul: dimension too large for BLAS (m {}, k {}, n {})", m, k, n_out);
  if (m == 0 || n_out == 0) return;
  if (k == 0) {
    // Empty sum; BLAS rejects lda = 0, so handle it here.
    if (!accumulate) {
      for (int64_t i = 0; i < m * n_out; ++i) out[i] = 0.0f;
    }
    return;
  }
  // Row-major out [m, n] = x [m, k] @ w[n, k]^T; beta 0 overwrites (NaN in out is ignored).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n_out), int(k), 1.0f, x, int(k),
              w, int(k), accumulate ? 1.0f : 0.0f, out, int(n_out));
}

}  // namespace ll::cpu
