#pragma once
// Linear-layer bias kernels (see bias.cuh) and their host launch sequences. Internal: included
// by bias.cu (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu, host compiler after
// tests/cuda_emu/cuda_prelude.h), which run the same kernels and sequences.
//
// add_bias: a grid-stride loop over V-element pieces of out's rows, V = 8 (16-byte bf16
// accesses) when C % 8 == 0 and out and bias are 16-byte aligned, else 1; bias (bf16 or fp32)
// is read as fp32, added in fp32 and the sum rounded once to bf16.
// bias_backward: deterministic without atomics: rows are cut into at most 256 chunks of >= 64
// rows (the cut depends only on M); one thread per (column, chunk) sums its chunk in row order
// in double into partial [n_chunks, C]; then one thread per column adds the chunks in order and
// dbias once, rounding to fp32 once. Double costs nothing in these memory-bound loops and keeps
// M = 500k rows exact to double precision (fp32 partials over ~2000 rows would lose ~1e-4
// relative to a nonzero column mean).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::bias_dev {

using detail::bf16;

constexpr int kThreads = 256;        // add_bias
constexpr int kSumThreads = 256;     // bias_backward: columns per block
constexpr int64_t kSumRowsMin = 64;  // bias_backward: at least this many rows per chunk
constexpr int64_t kSumChunksMax = 256;

// V bias values as fp32 (V == 8 needs p 16-byte aligned).
template <int V>
__device__ __forceinline__ void load_bias(const bf16* p, float (&f)[V]) {
  detail::load_bf16<V>(p, f);
}
template <int V>
__device__ __forceinline__ void load_bias(const float* p, float (&f)[V]) {
  if constexpr (V == 8) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) f[k] = v[k];
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = p[k];
  }
}

// out [rows, cols] += bias [cols] on every row; B is bf16 or float; V divides cols.
template <typename B, int V>
__global__ void __launch_bounds__(kThreads)
    add_bias_kernel(bf16* out, const B* bias, int64_t rows, int64_t cols) {
  const int64_t per_row = cols / V;  // pieces per row
  const int64_t n_pieces = rows * per_row;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n_pieces; i += stride) {
    const int64_t r = i / per_row;
    const int64_t j = (i - r * per_row) * V;  // first column of the piece
    bf16* o = out + r * cols + j;             // [V]
    float a[V], b[V];
    detail::load_bf16<V>(o, a);
    load_bias<V>(bias + j, b);
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] += b[k];
    detail::store_bf16<V>(o, a);
  }
}

// partial[ch, j] = sum of dout[r, j] over chunk ch's rows [ch * rows_per_chunk, ...), in row
// order, in double. Consecutive threads read consecutive columns of a row (coalesced).
__global__ void __launch_bounds__(kSumThreads)
    bias_sum_partial_kernel(double* partial, const bf16* dout, int64_t rows, int64_t cols,
                            int64_t rows_per_chunk) {
  const int64_t j = int64_t(blockIdx.x) * kSumThreads + threadIdx.x;
  if (j >= cols) return;
  const int64_t ch = blockIdx.y;
  const int64_t r0 = ch * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) acc += double(__bfloat162float(dout[r * cols + j]));
  partial[ch * cols + j] = acc;
}

// dbias[j] = fp32(dbias[j] + sum over chunks in order), the sum in double, rounded once.
__global__ void __launch_bounds__(kSumThreads)
    bias_sum_final_kernel(float* dbias, const double* partial, int64_t cols, int64_t n_chunks) {
  const int64_t j = int64_t(blockIdx.x) * kSumThreads + threadIdx.x;
  if (j >= cols) return;
  double acc = double(dbias[j]);
  for (int64_t ch = 0; ch < n_chunks; ++ch) acc += partial[ch * cols + j];
  dbias[j] = float(acc);
}

struct SumChunks {
  int64_t n_chunks;
  int64_t rows_per_chunk;
};

// The row chunks of an M-row bias gradient (depends on M only: the sum order is fixed).
inline SumChunks sum_chunks(int64_t rows) {
  using host_detail::ceil_div;
  int64_t chunks = ceil_div(rows, kSumRowsMin);
  if (chunks > kSumChunksMax) chunks = kSumChunksMax;
  if (chunks < 1) chunks = 1;
  return {chunks, ceil_div(rows, chunks)};
}

// The launch sequence of add_bias after its argument checks (rows, cols >= 1); B is bf16 or
// float.
template <typename B, typename Launcher>
void run_add_bias(const Launcher& launch, bf16* out, const B* bias, int64_t rows, int64_t cols) {
  constexpr bool kBf16 = std::is_same_v<B, bf16>;
  using host_detail::aligned16;
  using host_detail::grid_for;
  const int64_t n = rows * cols;
  if (cols % detail::kVec == 0 && aligned16(out) && aligned16(bias)) {
    launch(kBf16 ? "add_bias_kernel<bf16, 8>" : "add_bias_kernel<float, 8>",
           add_bias_kernel<B, detail::kVec>, dim3(grid_for(n / detail::kVec, kThreads)),
           dim3(kThreads), size_t(0), out, bias, rows, cols);
  } else {
    launch(kBf16 ? "add_bias_kernel<bf16, 1>" : "add_bias_kernel<float, 1>", add_bias_kernel<B, 1>,
           dim3(grid_for(n, kThreads)), dim3(kThreads), size_t(0), out, bias, rows, cols);
  }
}

// The launch sequence of bias_backward after its argument checks (rows, cols >= 1). partial:
// [sum_chunks(rows).n_chunks, cols] double scratch.
template <typename Launcher>
void run_bias_backward(const Launcher& launch, float* dbias, double* partial, const bf16* dout,
                       int64_t rows, int64_t cols) {
  const SumChunks ch = sum_chunks(rows);
  const unsigned col_blocks = unsigned(host_detail::ceil_div(cols, kSumThreads));
  launch("bias_sum_partial_kernel", bias_sum_partial_kernel,
         dim3(col_blocks, unsigned(ch.n_chunks)), dim3(kSumThreads), size_t(0), partial, dout, rows,
         cols, ch.rows_per_chunk);
  launch("bias_sum_final_kernel", bias_sum_final_kernel, dim3(col_blocks), dim3(kSumThreads),
         size_t(0), dbias, partial, cols, ch.n_chunks);
}

}  // namespace ll::cuda::bias_dev
