#pragma once
// RMSNorm forward / backward kernels (see rmsnorm.cuh) and their host launch sequences.
// Internal: included by rmsnorm.cu (nvcc) and by the SIMT emulator tests
// (tests/kernels/cuda/emu, host compiler after tests/cuda_emu/cuda_prelude.h), which run the
// same kernels and sequences.
//
// Forward and dx: one block of 256 threads per row; each thread walks the row in steps of
// 256 * V elements, V = 8 (16-byte bf16 accesses) when D % 8 == 0 and the pointers are
// 16-byte aligned, else 1. The row's sum (of squares; of g * w * x for dx) is a fixed-order
// block reduction (detail::block_sum), so the result does not depend on scheduling.
// dweight: deterministic without atomics: rows are cut into at most 256 chunks of >= 64 rows
// (the cut depends only on N), one thread per (column, chunk) sums its chunk in row order into
// partial [n_chunks, D] fp32, then one thread per column adds the chunks in order in double.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::rmsnorm_dev {

using detail::bf16;
using detail::block_sum;
using detail::load_bf16;
using detail::store_bf16;

constexpr int kThreads = 256;       // one block per row
constexpr int kDwThreads = 256;     // dweight: columns per block
constexpr int64_t kDwRowsMin = 64;  // dweight: at least this many rows per chunk
constexpr int64_t kDwChunksMax = 256;

// V elements per thread access: 8 (16-byte) when D % 8 == 0 and pointers are aligned, else 1.
template <int V>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(bf16* out, float* rstd, const bf16* x, const bf16* weight, int64_t dim,
                           float eps) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const bf16* xr = x + row * dim;  // [D]
  bf16* orow = out + row * dim;    // [D], may alias xr: all reads of the sum pass end at the
                                   // barrier in block_sum; the second pass reads each element
                                   // before the same thread overwrites it.
  float ss = 0.0f;
  for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
    float f[V];
    load_bf16<V>(xr + d, f);
#pragma unroll
    for (int k = 0; k < V; ++k) ss = fmaf(f[k], f[k], ss);
  }
  ss = block_sum<kThreads>(ss, red);
  const float variance = ss / float(dim);
  const float r = 1.0f / sqrtf(variance + eps);
  for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
    float f[V], w[V];
    load_bf16<V>(xr + d, f);
    load_bf16<V>(weight + d, w);
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = w[k] * __fmul_rn(f[k], r);  // HF order: w * (x * r)
    store_bf16<V>(orow + d, f);
  }
  if (rstd != nullptr && threadIdx.x == 0) rstd[row] = r;
}

// dx_d += r * w_d * g_d - (r^3 / D) * x_d * sum_e(g_e * w_e * x_e), per row.
template <int V>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dx_kernel(bf16* dx, const bf16* dout, const bf16* x, const bf16* weight,
                               const float* rstd, int64_t dim) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const bf16* xr = x + row * dim;     // [D]
  const bf16* gr = dout + row * dim;  // [D]
  bf16* dxr = dx + row * dim;         // [D]
  const float r = rstd[row];
  float dot = 0.0f;
  for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
    float g[V], w[V], xv[V];
    load_bf16<V>(gr + d, g);
    load_bf16<V>(weight + d, w);
    load_bf16<V>(xr + d, xv);
#pragma unroll
    for (int k = 0; k < V; ++k) dot = fmaf(g[k] * w[k], xv[k], dot);
  }
  dot = block_sum<kThreads>(dot, red);
  const float coef = dot * r * r * r / float(dim);
  for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
    float g[V], w[V], xv[V], acc[V];
    load_bf16<V>(gr + d, g);
    load_bf16<V>(weight + d, w);
    load_bf16<V>(xr + d, xv);
    load_bf16<V>(dxr + d, acc);
#pragma unroll
    for (int k = 0; k < V; ++k) acc[k] += r * w[k] * g[k] - coef * xv[k];
    store_bf16<V>(dxr + d, acc);
  }
}

// partial[c, d] = sum over rows [c * rows_per_chunk, ...) of dout * x * rstd, rows in order.
__global__ void __launch_bounds__(kDwThreads)
    rmsnorm_dweight_partial_kernel(float* partial, const bf16* dout, const bf16* x,
                                   const float* rstd, int64_t n_rows, int64_t dim,
                                   int64_t rows_per_chunk) {
  const int64_t d = int64_t(blockIdx.x) * kDwThreads + threadIdx.x;
  if (d >= dim) return;
  const int64_t c = blockIdx.y;
  const int64_t r0 = c * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < n_rows ? r0 + rows_per_chunk : n_rows;
  float acc = 0.0f;
  for (int64_t n = r0; n < r1; ++n) {
    const float g = __bfloat162float(dout[n * dim + d]);
    const float xv = __bfloat162float(x[n * dim + d]);
    acc = fmaf(g * xv, rstd[n], acc);
  }
  partial[c * dim + d] = acc;
}

// dweight[d] += sum over chunks in order (in double, rounded once).
__global__ void __launch_bounds__(kDwThreads)
    rmsnorm_dweight_final_kernel(float* dweight, const float* partial, int64_t dim,
                                 int64_t n_chunks) {
  const int64_t d = int64_t(blockIdx.x) * kDwThreads + threadIdx.x;
  if (d >= dim) return;
  double acc = 0.0;
  for (int64_t c = 0; c < n_chunks; ++c) acc += double(partial[c * dim + d]);
  dweight[d] = float(double(dweight[d]) + acc);
}

struct DwChunks {
  int64_t n_chunks;
  int64_t rows_per_chunk;
};

// The dweight row chunks of an N-row input (depends on N only: the sum order is fixed).
inline DwChunks dweight_chunks(int64_t n_rows) {
  using host_detail::ceil_div;
  int64_t chunks = ceil_div(n_rows, kDwRowsMin);
  if (chunks > kDwChunksMax) chunks = kDwChunksMax;
  if (chunks < 1) chunks = 1;
  return {chunks, ceil_div(n_rows, chunks)};
}

// The launch sequence of rmsnorm_forward after its argument checks (n_rows >= 1).
template <typename Launcher>
void run_rmsnorm_forward(const Launcher& launch, bf16* out, float* rstd, const bf16* x,
                         const bf16* weight, int64_t n_rows, int64_t dim, float eps) {
  using host_detail::aligned16;
  const bool vec = dim % detail::kVec == 0 && aligned16(out) && aligned16(x) && aligned16(weight);
  const dim3 grid = dim3(unsigned(n_rows));
  if (vec) {
    launch("rmsnorm_forward_kernel<8>", rmsnorm_forward_kernel<detail::kVec>, grid, dim3(kThreads),
           size_t(0), out, rstd, x, weight, dim, eps);
  } else {
    launch("rmsnorm_forward_kernel<1>", rmsnorm_forward_kernel<1>, grid, dim3(kThreads), size_t(0),
           out, rstd, x, weight, dim, eps);
  }
}

// The launch sequence of rmsnorm_backward after its argument checks (n_rows >= 1). partial:
// [dweight_chunks(n_rows).n_chunks, D] fp32 scratch, used only when dweight is not null.
template <typename Launcher>
void run_rmsnorm_backward(const Launcher& launch, bf16* dx, float* dweight, float* partial,
                          const bf16* dout, const bf16* x, const bf16* weight, const float* rstd,
                          int64_t n_rows, int64_t dim) {
  using host_detail::aligned16;
  const bool vec = dim % detail::kVec == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) &&
                   aligned16(weight);
  const dim3 grid = dim3(unsigned(n_rows));
  if (vec) {
    launch("rmsnorm_backward_dx_kernel<8>", rmsnorm_backward_dx_kernel<detail::kVec>, grid,
           dim3(kThreads), size_t(0), dx, dout, x, weight, rstd, dim);
  } else {
    launch("rmsnorm_backward_dx_kernel<1>", rmsnorm_backward_dx_kernel<1>, grid, dim3(kThreads),
           size_t(0), dx, dout, x, weight, rstd, dim);
  }
  if (dweight == nullptr) return;

  const DwChunks ch = dweight_chunks(n_rows);
  const unsigned col_blocks = unsigned(host_detail::ceil_div(dim, kDwThreads));
  launch("rmsnorm_dweight_partial_kernel", rmsnorm_dweight_partial_kernel,
         dim3(col_blocks, unsigned(ch.n_chunks)), dim3(kDwThreads), size_t(0), partial, dout, x,
         rstd, n_rows, dim, ch.rows_per_chunk);
  launch("rmsnorm_dweight_final_kernel", rmsnorm_dweight_final_kernel, dim3(col_blocks),
         dim3(kDwThreads), size_t(0), dweight, partial, dim, ch.n_chunks);
}

}  // namespace ll::cuda::rmsnorm_dev
