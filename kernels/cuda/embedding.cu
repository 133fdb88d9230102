#include "kernels/cuda/embedding.cuh"

#include <climits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ew_device.cuh"

namespace ll::cuda {

namespace {

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
    embedding_forward_kernel(bf16* out, const bf16* table, const int32_t* tokens,
                             int64_t n_tokens, int64_t vocab, int64_t dim, int* bad_id_flag) {
  for (int64_t n = blockIdx.x; n < n_tokens; n += gridDim.x) {
    const int32_t tok = tokens[n];
    const bool bad = bad_id(tok, vocab);
    if (bad && bad_id_flag != nullptr && threadIdx.x == 0) *bad_id_flag = 1;
    bf16* orow = out + n * dim;  // [D]
    const bf16* trow = table + (bad ? 0 : int64_t(tok) * dim);  // [D]
    for (int64_t d = int64_t(threadIdx.x) * V; d < dim; d += int64_t(kThreads) * V) {
      if constexpr (V == 8) {
        const uint4 v = bad ? make_uint4(0u, 0u, 0u, 0u)
                            : *reinterpret_cast<const uint4*>(trow + d);
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

void check_sizes(const char* op, int64_t n_tokens, int64_t vocab, int64_t dim) {
  LL_CHECK(n_tokens >= 0 && vocab >= 0 && dim >= 0,
           "{}: negative size (tokens {}, vocab {}, dim {})", op, n_tokens, vocab, dim);
  LL_CHECK(n_tokens <= int64_t(INT_MAX), "{}: {} tokens exceed the int32 limit", op, n_tokens);
}

}  // namespace

void check_token_ids(const int32_t* tokens, int64_t n_tokens, int64_t vocab,
                     cudaStream_t stream) {
  check_sizes("check_token_ids (cuda)", n_tokens, vocab, 0);
  if (n_tokens == 0) return;
  int* first_bad = nullptr;  // device [1]
  LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&first_bad), sizeof(int), stream));
  const int none = INT_MAX;
  LL_CUDA_CHECK(cudaMemcpyAsync(first_bad, &none, sizeof(int), cudaMemcpyHostToDevice, stream));
  check_ids_kernel<<<host_detail::grid_for(n_tokens, kThreads), kThreads, 0, stream>>>(
      first_bad, tokens, n_tokens, vocab);
  LL_CUDA_CHECK_LAUNCH();
  int pos = INT_MAX;
  LL_CUDA_CHECK(cudaMemcpyAsync(&pos, first_bad, sizeof(int), cudaMemcpyDeviceToHost, stream));
  LL_CUDA_CHECK(cudaFreeAsync(first_bad, stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (pos == INT_MAX) return;
  int32_t tok = 0;
  LL_CUDA_CHECK(cudaMemcpy(&tok, tokens + pos, sizeof(int32_t), cudaMemcpyDeviceToHost));
  ll::fail(
      "embedding (cuda): token id {} at position {} is outside the vocabulary [0, {}); was "
      "the data tokenized for another model?",
      tok, pos, vocab);
}

void embedding_forward(bf16* out, const bf16* table, const int32_t* tokens, int64_t n_tokens,
                       int64_t vocab, int64_t dim, int* bad_id_flag, cudaStream_t stream) {
  check_sizes("embedding (cuda)", n_tokens, vocab, dim);
  if (n_tokens == 0 || dim == 0) return;
  const unsigned blocks = unsigned(n_tokens < (1 << 20) ? n_tokens : (1 << 20));
  using host_detail::aligned16;
  if (dim % detail::kVec == 0 && aligned16(out) && aligned16(table)) {
    embedding_forward_kernel<detail::kVec><<<blocks, kThreads, 0, stream>>>(
        out, table, tokens, n_tokens, vocab, dim, bad_id_flag);
  } else {
    embedding_forward_kernel<1><<<blocks, kThreads, 0, stream>>>(out, table, tokens, n_tokens,
                                                                 vocab, dim, bad_id_flag);
  }
  LL_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const bf16* dout, const int32_t* tokens,
                        int64_t n_tokens, int64_t vocab, int64_t dim, int* bad_id_flag,
                        cudaStream_t stream) {
  check_sizes("embedding_backward (cuda)", n_tokens, vocab, dim);
  if (n_tokens == 0 || dim == 0) return;
  const int64_t blocks = host_detail::ceil_div(dim, kThreads);
  LL_CHECK(blocks <= int64_t(INT_MAX), "embedding_backward (cuda): dim {} too large", dim);
  embedding_backward_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(
      dtable, dout, tokens, n_tokens, vocab, dim, bad_id_flag);
  LL_CUDA_CHECK_LAUNCH();
}

}  // namespace ll::cuda
