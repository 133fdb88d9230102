#pragma once
// Token embedding kernels (see embedding.cuh) and their host launch sequences, plus the id
// check's error message. Internal: included by embedding.cu (nvcc) and by the SIMT emulator
// tests (tests/kernels/cuda/emu), which run the same kernels and sequences.
//
// Forward: one block per token (grid-stride), a bf16 row copy in 16-byte pieces when the row
// length and pointers allow. Backward: one thread per column adding the tokens in position
// order (no atomics: deterministic, bit-identical to the CPU). Bad ids never read or write
// outside the tables; they zero the output row (forward), are skipped (backward) and raise a
// flag; check_ids_kernel finds the first one for the host's message.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::embedding_dev {

using detail::bf16;

constexpr int kThreads = 256;
constexpr int kTokenTile = 256;  // backward: token ids staged in shared memory per tile

__device__ __forceinline__ bool bad_id(int32_t tok, int64_t vocab) {
  return tok < 0 || int64_t(tok) >= vocab;
}

// first_bad = min position with a bad id (atomicMin on ints: order-independent result).
__global__ void __launch_bounds__(kThreads)
    check_ids_kernel(int* first_bad, const int32_t* tokens, int64_t n_tokens, int64_t vocab) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t n = int64_t(blockIdx.x) * kThreads + threadIdx.x; n < n_tokens; n += stride) {
    if (bad_id(tokens[n], vocab)) atomicMin(first_bad, int(n));
  }
}

// One block per token (grid-stride), threads over the row in V-element (V * 2-byte) pieces.
template <int V>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(bf16* out, const bf16* table, const int32_t* tokens, int64_t n_tokens,
                             int64_t vocab, int64_t dim, int* bad_id_flag) {
  for (int64_t n = blockIdx.x; n < n_tokens; n += gridDim.x) {
    const int32_t tok = tokens[n];
    const bool bad = bad_id(tok, vocab);
    if (bad && bad_id_flag != nullptr && threadIdx.x == 0) *bad_id_flag = 1;
    bf16* orow = out + n * dim;                                 // [D]
    const bf16* trow = table + (bad ? 0 : int64_t(tok) * dim);  // [D]
    for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
      if constexpr (V == 8) {
        const uint4 v =
            bad ? make_uint4(0u, 0u, 0u, 0u) : *reinterpret_cast<const uint4*>(trow + d);
        *reinterpret_cast<uint4*>(orow + d) = v;
      } else {
        orow[d] = bad ? __float2bfloat16_rn(0.0f) : trow[d];
      }
    }
  }
}

// One thread per column; tokens in position order, staged kTokenTile at a time.
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* dtable, const bf16* dout, const int32_t* tokens,
                              int64_t n_tokens, int64_t vocab, int64_t dim, int* bad_id_flag) {
  __shared__ int32_t tile[kTokenTile];
  const int64_t d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTokenTile) {
    const int64_t count = n_tokens - t0 < kTokenTile ? n_tokens - t0 : kTokenTile;
    __syncthreads();  // the previous tile is fully used
    for (int64_t i = threadIdx.x; i < count; i += kThreads) tile[i] = tokens[t0 + i];
    __syncthreads();
    if (d >= dim) continue;  // no return: every thread must reach the barriers
    for (int64_t i = 0; i < count; ++i) {
      const int32_t tok = tile[i];
      if (bad_id(tok, vocab)) {
        if (bad_id_flag != nullptr && d == 0) *bad_id_flag = 1;
        continue;
      }
      float* cell = dtable + int64_t(tok) * dim + d;
      *cell = *cell + __bfloat162float(dout[(t0 + i) * dim + d]);
    }
  }
}

// first_bad: [1], INT_MAX on entry, the first position with an id outside [0, vocab) after
// (unchanged when there is none). tokens: [n_tokens], 1 <= n_tokens <= INT_MAX.
template <typename Launcher>
void run_check_token_ids(const Launcher& launch, int* first_bad, const int32_t* tokens,
                         int64_t n_tokens, int64_t vocab) {
  launch("check_ids_kernel", check_ids_kernel, dim3(host_detail::grid_for(n_tokens, kThreads)),
         dim3(kThreads), size_t(0), first_bad, tokens, n_tokens, vocab);
}

// The error check_token_ids throws for the first bad id `token`, found at `position`.
[[noreturn]] inline void fail_bad_token_id(int32_t token, int position, int64_t vocab) {
  ll::fail(
      "embedding (cuda): token id {} at position {} is outside the vocabulary [0, {}); was "
      "the data tokenized for another model?",
      token, position, vocab);
}

// out: [n_tokens, dim], table: [vocab, dim], tokens: [n_tokens]; n_tokens, dim >= 1.
template <typename Launcher>
void run_embedding_forward(const Launcher& launch, bf16* out, const bf16* table,
                           const int32_t* tokens, int64_t n_tokens, int64_t vocab, int64_t dim,
                           int* bad_id_flag) {
  const unsigned blocks = unsigned(n_tokens < (1 << 20) ? n_tokens : (1 << 20));
  using host_detail::aligned16;
  if (dim % detail::kVec == 0 && aligned16(out) && aligned16(table)) {
    launch("embedding_forward_kernel", embedding_forward_kernel<detail::kVec>, dim3(blocks),
           dim3(kThreads), size_t(0), out, table, tokens, n_tokens, vocab, dim, bad_id_flag);
  } else {
    launch("embedding_forward_kernel", embedding_forward_kernel<1>, dim3(blocks), dim3(kThreads),
           size_t(0), out, table, tokens, n_tokens, vocab, dim, bad_id_flag);
  }
}

// Blocks of the backward's grid (one thread per column); the caller checks it fits an int.
inline int64_t embedding_backward_blocks(int64_t dim) {
  return host_detail::ceil_div(dim, kThreads);
}

// dtable: [vocab, dim] fp32 (accumulated into), dout: [n_tokens, dim], tokens: [n_tokens];
// n_tokens, dim >= 1.
template <typename Launcher>
void run_embedding_backward(const Launcher& launch, float* dtable, const bf16* dout,
                            const int32_t* tokens, int64_t n_tokens, int64_t vocab, int64_t dim,
                            int* bad_id_flag) {
  launch("embedding_backward_kernel", embedding_backward_kernel,
         dim3(unsigned(embedding_backward_blocks(dim))), dim3(kThreads), size_t(0), dtable, dout,
         tokens, n_tokens, vocab, dim, bad_id_flag);
}

}  // namespace ll::cuda::embedding_dev
