#pragma once
// Row-major bf16 GEMMs on cuBLASLt, with the descriptors and the heuristic's algorithm cached
// per shape (kernels/cuda/gemm_plan.h). GemmType and GemmMatrix are defined in gemm_plan.h.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/gemm_plan.h"

namespace ll::cuda {

// Row-major  D = alpha * op(A) @ op(B) + beta * D  where op(X) = X, or X^T when trans_x.
// op(A) is [M, K], op(B) is [K, N], D is [M, N]. fp32 compute (CUBLAS_COMPUTE_32F), fp32
// alpha/beta. A and B bf16; D bf16 or f32. D must not overlap A or B; D's padding (columns
// [N, ld)) is never touched.
//   - beta == 0: D is not read (it may hold NaN).
//   - M == 0 or N == 0: nothing is done.
//   - K == 0: D = beta * D, done without cuBLASLt: beta == 0 zeroes D (cudaMemset2DAsync),
//     beta == 1 leaves it; any other beta throws ll::Error.
//   - Pointers need only element alignment (2 bytes for bf16, 4 for f32); lower alignment
//     (e.g. a sub-matrix view at an odd column) is passed to the heuristic, which may pick a
//     slower kernel. ld is any value >= cols.
// Bad shapes or types throw ll::Error; so do cuBLASLt failures and "no algorithm" from the
// heuristic (with the shape in the message). Not thread-safe: one runner per thread/stream.
class GemmRunner {
 public:
  // workspace: device memory of workspace_bytes (owned by the caller, 256-byte aligned; may
  // be null with 0 bytes), used by every call; stream: all work is enqueued there. Creates
  // the cuBLASLt handle on the current device.
  GemmRunner(void* workspace, size_t workspace_bytes, cudaStream_t stream);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  void run(const GemmMatrix& d, const GemmMatrix& a, bool trans_a, const GemmMatrix& b,
           bool trans_b, float alpha, float beta);

  // Plans built (cache misses) and reused (hits), for tests and logs.
  int64_t plans_built() const;
  int64_t plan_hits() const;

 private:
  struct Impl;  // cuBLASLt handle and plan cache; keeps cublasLt.h out of this header
  std::unique_ptr<Impl> impl_;
};

}  // namespace ll::cuda
