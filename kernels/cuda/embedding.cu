// Token embedding on the GPU (see embedding.cuh): argument checks, the id check's round trip
// and the launches on a stream. The kernels and their launch sequences are in
// embedding_kernels.cuh.
#include <climits>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/embedding_kernels.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

void check_sizes(const char* op, int64_t n_tokens, int64_t vocab, int64_t dim) {
  LL_CHECK(n_tokens >= 0 && vocab >= 0 && dim >= 0,
           "{}: negative size (tokens {}, vocab {}, dim {})", op, n_tokens, vocab, dim);
  LL_CHECK(n_tokens <= int64_t(INT_MAX), "{}: {} tokens exceed the int32 limit", op, n_tokens);
}

}  // namespace

void check_token_ids(const int32_t* tokens, int64_t n_tokens, int64_t vocab, cudaStream_t stream) {
  check_sizes("check_token_ids (cuda)", n_tokens, vocab, 0);
  if (n_tokens == 0) return;
  int* first_bad = nullptr;  // device [1]
  LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&first_bad), sizeof(int), stream));
  const int none = INT_MAX;
  LL_CUDA_CHECK(cudaMemcpyAsync(first_bad, &none, sizeof(int), cudaMemcpyHostToDevice, stream));
  embedding_dev::run_check_token_ids(StreamLauncher{stream}, first_bad, tokens, n_tokens, vocab);
  int pos = INT_MAX;
  LL_CUDA_CHECK(cudaMemcpyAsync(&pos, first_bad, sizeof(int), cudaMemcpyDeviceToHost, stream));
  LL_CUDA_CHECK(cudaFreeAsync(first_bad, stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (pos == INT_MAX) return;
  int32_t tok = 0;
  LL_CUDA_CHECK(cudaMemcpy(&tok, tokens + pos, sizeof(int32_t), cudaMemcpyDeviceToHost));
  embedding_dev::fail_bad_token_id(tok, pos, vocab);
}

void embedding_forward(bf16* out, const bf16* table, const int32_t* tokens, int64_t n_tokens,
                       int64_t vocab, int64_t dim, int* bad_id_flag, cudaStream_t stream) {
  check_sizes("embedding (cuda)", n_tokens, vocab, dim);
  if (n_tokens == 0 || dim == 0) return;
  embedding_dev::run_embedding_forward(StreamLauncher{stream}, out, table, tokens, n_tokens, vocab,
                                       dim, bad_id_flag);
}

void embedding_backward(float* dtable, const bf16* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab, int64_t dim, int* bad_id_flag, cudaStream_t stream) {
  check_sizes("embedding_backward (cuda)", n_tokens, vocab, dim);
  if (n_tokens == 0 || dim == 0) return;
  LL_CHECK(embedding_dev::embedding_backward_blocks(dim) <= int64_t(INT_MAX),
           "embedding_backward (cuda): dim {} too large", dim);
  embedding_dev::run_embedding_backward(StreamLauncher{stream}, dtable, dout, tokens, n_tokens,
                                        vocab, dim, bad_id_flag);
}

}  // namespace ll::cuda
