#include "kernels/cuda/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>

#include <fmt/ranges.h>

#include "kernels/backend_shapes.h"
#include "kernels/classifier_targets.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/add.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_cached.cuh"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/bias.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/copy_stream.h"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_workspace.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace ll {
namespace {

using bf16 = __nv_bfloat16;

// Host <-> device conversions go through fp32 staging of at most this many elements, so a
// 500 MB embedding table does not need a second full-size copy on the device.
constexpr int64_t kStagingElems = int64_t(16) << 20;  // 64 MiB of fp32

double gib(int64_t bytes) { return double(bytes) / double(int64_t(1) << 30); }

bf16* bf16_ptr(const Tensor& t, const char* what) {
  LL_CHECK(t.dtype == DType::BF16, "cuda backend: {} must be BF16, got {}", what,
           dtype_name(t.dtype));
  return static_cast<bf16*>(t.data);
}

float* f32_ptr(const Tensor& t, const char* what) {
  LL_CHECK(t.dtype == DType::F32, "cuda backend: {} must be F32, got {}", what,
           dtype_name(t.dtype));
  return static_cast<float*>(t.data);
}

// Where a copy_async operand lives: backend (device) memory or allocate_host (pinned) memory.
bool on_device(const Tensor& t, const char* what) {
  cudaPointerAttributes attr{};
  LL_CUDA_CHECK(cudaPointerGetAttributes(&attr, t.data));
  LL_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeHost,
           "copy_async: the {} is neither backend memory nor allocate_host memory", what);
  return attr.type == cudaMemoryTypeDevice;
}

// The forward and backward launchers of a resolved attention family: the one place the family
// picks kernels. tc-sm90 runs the Hopper kernels where the mask allows (S2Roll: mma.sync).
struct AttentionLaunchers {
  decltype(&cuda::attention_forward) forward;
  decltype(&cuda::attention_backward) backward;
};

AttentionLaunchers attention_launchers(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::Simt:
      return {cuda::attention_forward, cuda::attention_backward};
    case AttentionKernel::TcSm80:
      return {cuda::attention_forward_tc_sm80, cuda::attention_backward_tc_sm80};
    case AttentionKernel::TcSm90:
      return {cuda::attention_forward_tc, cuda::attention_backward_tc};
    case AttentionKernel::TcSm90AtomicDq:
      return {cuda::attention_forward_tc, cuda::attention_backward_tc_atomic_dq};
    case AttentionKernel::Auto:
      break;
  }
  fail("cuda backend: the attention kernel was not resolved");
}

const int32_t* i32_ptr(const Tensor& t, const char* what) {
  LL_CHECK(t.dtype == DType::I32, "cuda backend: {} must be I32, got {}", what,
           dtype_name(t.dtype));
  return static_cast<const int32_t*>(t.data);
}

cuda::GemmType gemm_type(const Tensor& t, const char* what) {
  if (t.dtype == DType::BF16) return cuda::GemmType::BF16;
  LL_CHECK(t.dtype == DType::F32, "cuda backend: {} must be BF16 or F32, got {}", what,
           dtype_name(t.dtype));
  return cuda::GemmType::F32;
}

// A 2-D tensor (or `rows` rows of it starting at `row0`) as a dense row-major GEMM operand.
cuda::GemmMatrix gemm_matrix(const Tensor& t, const char* what, int64_t row0 = 0,
                             int64_t rows = -1) {
  const int64_t cols = t.shape.back();
  const int64_t total_rows = cols == 0 ? 0 : t.numel() / cols;
  if (rows < 0) rows = total_rows - row0;
  cuda::GemmMatrix m;
  m.type = gemm_type(t, what);
  m.data = static_cast<const char*>(t.data) + size_t(row0 * cols) * dtype_size(t.dtype);
  m.rows = rows;
  m.cols = cols;
  m.ld = cols;
  return m;
}

// The CUDA attention kernels take whole windows: context-parallel parts (a query offset, keys
// received from other ranks) run on the CPU backend so far (issue 20).
void check_whole_window(const AttentionPattern& mask) {
  LL_CHECK(!mask.window_part && mask.query_offset == 0 && mask.key_offset == 0,
           "cuda backend: attention over a context-parallel part (queries from window position "
           "{}, keys from {}) is not in the CUDA kernels yet; the CPU backend runs it",
           mask.query_offset, mask.key_offset);
}

}  // namespace

struct CudaBackend::State {
  int device = 0;
  cudaStream_t stream = nullptr;
  int64_t in_use = 0;  // bytes of live tensors (as requested) and the cuBLASLt workspace
  int64_t peak = 0;
  void* gemm_workspace = nullptr;  // [cuda::kGemmWorkspaceBytes]
  double* sum_result = nullptr;    // [1] sum_squares result
  double* sum_scratch = nullptr;   // [sum_squares_scratch_bytes / 8]
  int* status = nullptr;           // [1] classifier error bits
  std::unique_ptr<cuda::GemmRunner> gemm;
  std::unique_ptr<cuda::CopyStream> copies;  // copy_async's stream and events
  int64_t host_in_use = 0;                   // bytes of live allocate_host tensors
  int64_t host_peak = 0;
  // backend_traits(Cuda, the resolved attention family).
  BackendTraits traits;

  ~State() {
    // Destructors must not throw: report and go on.
    auto report = [](cudaError_t e, const char* what) {
      if (e != cudaSuccess)
        std::fprintf(stderr, "cuda backend: %s failed at shutdown: %s\n", what,
                     cudaGetErrorString(e));
    };
    copies.reset();  // first: finishes the copies in flight, before anything is freed
    gemm.reset();
    if (stream != nullptr) report(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    report(cudaFree(gemm_workspace), "cudaFree");
    report(cudaFree(sum_result), "cudaFree");
    report(cudaFree(sum_scratch), "cudaFree");
    report(cudaFree(status), "cudaFree");
    if (stream != nullptr) report(cudaStreamDestroy(stream), "cudaStreamDestroy");
  }

  void count(int64_t bytes) {
    in_use += bytes;
    peak = std::max(peak, in_use);
  }
};

CudaBackend::CudaBackend(int device, AttentionKernel attention) : st_(std::make_shared<State>()) {
  const int n_devices = cuda::device_count();
  LL_CHECK(device >= 0 && device < n_devices,
           "--device cuda: no CUDA device {} (this machine has {} usable)", device, n_devices);
  const cuda::DeviceInfo info = cuda::device_info(device);
  LL_CHECK(info.sm_major >= 8,
           "--device cuda: {} is sm_{}{}; the CUDA backend needs sm_80 or newer (bf16 tensor "
           "cores); use --device cpu",
           info.name, info.sm_major, info.sm_minor);
  State& s = *st_;
  s.device = device;
  // The one place the attention family is decided for this backend's life.
  const AttentionDeviceSupport support = cuda::attention_device_support(device);
  s.traits = backend_traits(BackendKind::Cuda, resolve_attention_kernel(attention, support));
  LL_CUDA_CHECK(cudaSetDevice(device));
  LL_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  s.copies = std::make_unique<cuda::CopyStream>(s.stream);
  // Keep freed blocks in the pool across synchronizations: the model frees and re-allocates
  // the same workspaces every layer and step.
  cudaMemPool_t pool = nullptr;
  LL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = std::numeric_limits<uint64_t>::max();
  LL_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));

  LL_CUDA_CHECK(cudaMalloc(&s.gemm_workspace, size_t(cuda::kGemmWorkspaceBytes)));
  s.count(cuda::kGemmWorkspaceBytes);
  LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.sum_result), sizeof(double)));
  LL_CUDA_CHECK(
      cudaMalloc(reinterpret_cast<void**>(&s.sum_scratch), cuda::sum_squares_scratch_bytes()));
  LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s.status), sizeof(int)));
  s.gemm = std::make_unique<cuda::GemmRunner>(s.gemm_workspace, size_t(cuda::kGemmWorkspaceBytes),
                                              s.stream);
}

CudaBackend::~CudaBackend() = default;

BackendMemory CudaBackend::memory() const {
  size_t free_bytes = 0, total_bytes = 0;
  LL_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  BackendMemory m{st_->in_use, st_->peak, int64_t(total_bytes - free_bytes), int64_t(total_bytes)};
  m.host_in_use = st_->host_in_use;
  m.host_peak = st_->host_peak;
  return m;
}

void CudaBackend::reset_peak() {
  st_->peak = st_->in_use;
  st_->host_peak = st_->host_in_use;
}

void CudaBackend::synchronize() {
  st_->copies->synchronize();
  LL_CUDA_CHECK(cudaStreamSynchronize(st_->stream));
}

void CudaBackend::reserve(int64_t bytes) {
  if (bytes <= 0) return;
  // One block of the planned size, returned to the pool at once: the pool keeps the memory
  // (release threshold raised in the constructor) and carves the run's tensors out of it.
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, size_t(bytes), st_->stream);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    fail(
        "the memory plan needs {:.2f} GiB on the GPU, but only {:.2f} GiB of its {:.2f} GiB "
        "are free: use a smaller -ctx or --classifier-chunk (train_longlora --dry-run prints "
        "the plan)",
        gib(bytes), gib(int64_t(free_bytes)), gib(int64_t(total_bytes)));
  }
  LL_CUDA_CHECK(err);
  LL_CUDA_CHECK(cudaFreeAsync(p, st_->stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(st_->stream));
}

std::string CudaBackend::device_description() const {
  const cuda::DeviceInfo info = cuda::device_info(st_->device);
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB); attention: {}", info.name, info.sm_major,
                     info.sm_minor, info.sm_count, gib(info.total_bytes),
                     describe_attention_kernel(st_->traits.attention_kernel));
}

BackendTraits CudaBackend::traits() const { return st_->traits; }

int CudaBackend::device() const { return st_->device; }

cudaStream_t CudaBackend::stream() const { return st_->stream; }

OwnedTensor CudaBackend::allocate(std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  const int64_t bytes = int64_t(t.view.nbytes());
  void* p = nullptr;
  // At least one byte, so that data is never null (null data means "absent" in the interface).
  const cudaError_t err = cudaMallocAsync(&p, size_t(std::max<int64_t>(bytes, 1)), st_->stream);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky-free error state of this call
    size_t free_bytes = 0, total_bytes = 0;
    (void)cudaMemGetInfo(&free_bytes, &total_bytes);
    fail(
        "out of GPU memory: asked for {:.2f} GiB for a [{}] {} tensor; this run holds "
        "{:.2f} GiB, the device has {:.2f} GiB free of {:.2f} GiB. Use a smaller -ctx or "
        "--classifier-chunk (train_longlora --dry-run prints the memory plan)",
        gib(bytes), fmt::join(t.view.shape, ", "), dtype_name(dtype), gib(st_->in_use),
        gib(int64_t(free_bytes)), gib(int64_t(total_bytes)));
  }
  LL_CUDA_CHECK(err);
  st_->count(bytes);
  t.storage = std::shared_ptr<void>(p, [st = st_, bytes](void* q) {
    // Stream-ordered: the memory returns to the pool after the work queued so far.
    const cudaError_t e = cudaFreeAsync(q, st->stream);
    if (e != cudaSuccess)
      std::fprintf(stderr, "cuda backend: cudaFreeAsync failed: %s\n", cudaGetErrorString(e));
    st->in_use -= bytes;
  });
  t.view.data = p;
  return t;
}

OwnedTensor CudaBackend::allocate_host(std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  const int64_t bytes = int64_t(t.view.nbytes());
  void* p = nullptr;
  // Pinned, so that copies run at full bus speed beside the kernels; at least one byte.
  const cudaError_t err =
      cudaHostAlloc(&p, size_t(std::max<int64_t>(bytes, 1)), cudaHostAllocDefault);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    fail(
        "could not pin {} bytes ({:.2f} GiB) of host memory for an offloaded [{}] {} tensor; "
        "this run has {:.2f} GiB pinned already. Free host memory, or offload fewer "
        "activations (a shorter -ctx)",
        bytes, gib(bytes), fmt::join(t.view.shape, ", "), dtype_name(dtype), gib(st_->host_in_use));
  }
  LL_CUDA_CHECK(err);
  st_->host_in_use += bytes;
  st_->host_peak = std::max(st_->host_peak, st_->host_in_use);
  t.storage = std::shared_ptr<void>(p, [st = st_, bytes](void* q) {
    const cudaError_t e = cudaFreeHost(q);
    if (e != cudaSuccess)
      std::fprintf(stderr, "cuda backend: cudaFreeHost failed: %s\n", cudaGetErrorString(e));
    st->host_in_use -= bytes;
  });
  t.view.data = p;
  return t;
}

CopyTicket CudaBackend::copy_async(const Tensor& dst, const Tensor& src) {
  shapes::same_shape({&dst, &src}, "copy_async");
  LL_CHECK(dst.dtype == src.dtype, "copy_async: {} into {}", dtype_name(src.dtype),
           dtype_name(dst.dtype));
  const bool dst_device = on_device(dst, "destination"), src_device = on_device(src, "source");
  const cudaMemcpyKind kind = dst_device
                                  ? (src_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                  : (src_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  return st_->copies->copy(dst.data, src.data, src.nbytes(), kind);
}

void CudaBackend::wait_copy(CopyTicket ticket) { st_->copies->wait(ticket); }

void CudaBackend::upload_f32(const Tensor& dst, const float* src) {
  cudaStream_t s = st_->stream;
  if (dst.dtype == DType::F32) {
    LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.nbytes(), cudaMemcpyHostToDevice, s));
    LL_CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  bf16* out = bf16_ptr(dst, "upload destination");
  const int64_t n = dst.numel();
  OwnedTensor staging = allocate({std::min(n, kStagingElems)}, DType::F32);  // [chunk]
  for (int64_t i = 0; i < n; i += kStagingElems) {
    const int64_t c = std::min(kStagingElems, n - i);
    LL_CUDA_CHECK(
        cudaMemcpyAsync(staging->data, src + i, size_t(c) * 4, cudaMemcpyHostToDevice, s));
    cuda::convert_f32_to_bf16(out + i, staging->f32(), c, s);
  }
  LL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::upload_i32(const Tensor& dst, const int32_t* src) {
  i32_ptr(dst, "upload destination");
  LL_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.nbytes(), cudaMemcpyHostToDevice, st_->stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(st_->stream));
}

void CudaBackend::download_f32(float* dst, const Tensor& src) {
  cudaStream_t s = st_->stream;
  if (src.dtype == DType::F32) {
    LL_CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.nbytes(), cudaMemcpyDeviceToHost, s));
    LL_CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  const bf16* in = bf16_ptr(src, "download source");
  const int64_t n = src.numel();
  OwnedTensor staging = allocate({std::min(n, kStagingElems)}, DType::F32);  // [chunk]
  for (int64_t i = 0; i < n; i += kStagingElems) {
    const int64_t c = std::min(kStagingElems, n - i);
    cuda::convert_bf16_to_f32(staging->f32(), in + i, c, s);
    LL_CUDA_CHECK(
        cudaMemcpyAsync(dst + i, staging->data, size_t(c) * 4, cudaMemcpyDeviceToHost, s));
  }
  LL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  const shapes::EmbeddingDims d = shapes::embedding_forward(out, table, tokens);
  const int32_t* ids = i32_ptr(tokens, "token ids");
  cuda::check_token_ids(ids, d.n, d.v, st_->stream);  // same error as the CPU backend
  cuda::embedding_forward(bf16_ptr(out, "embedding output"), bf16_ptr(table, "embedding table"),
                          ids, d.n, d.v, d.d, nullptr, st_->stream);
}

void CudaBackend::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                  const Tensor& weight, float eps) {
  const shapes::RowDims d = shapes::rmsnorm_forward(out, rstd, x, weight);
  float* rstd_ptr = rstd.data == nullptr ? nullptr : f32_ptr(rstd, "rmsnorm rstd");
  cuda::rmsnorm_forward(bf16_ptr(out, "rmsnorm output"), rstd_ptr, bf16_ptr(x, "rmsnorm input"),
                        bf16_ptr(weight, "rmsnorm weight"), d.n, d.d, eps, st_->stream);
}

void CudaBackend::matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w,
                                 bool accumulate, float alpha) {
  shapes::matmul_forward(out, x, w);
  // out [M, Nout] = alpha * x [M, K] @ (w [Nout, K])^T + beta * out
  st_->gemm->run(gemm_matrix(out, "matmul output"), gemm_matrix(x, "matmul input"), false,
                 gemm_matrix(w, "matmul weight"), true, alpha, accumulate ? 1.0f : 0.0f);
}

void CudaBackend::add_bias(const Tensor& out, const Tensor& bias) {
  const shapes::BiasDims d = shapes::add_bias(out, bias);
  bf16* o = bf16_ptr(out, "biased output");
  // The model passes the bias in the activation dtype; an F32 bias (a master copy) works too.
  if (bias.dtype == DType::F32) {
    cuda::add_bias(o, bias.f32(), d.m, d.c, st_->stream);
  } else {
    cuda::add_bias(o, bf16_ptr(bias, "bias"), d.m, d.c, st_->stream);
  }
}

void CudaBackend::matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w,
                                        bool accumulate, float alpha) {
  shapes::matmul_backward_input(dx, dout, w);
  // dx [M, K] = alpha * dout [M, Nout] @ w [Nout, K] + beta * dx
  st_->gemm->run(gemm_matrix(dx, "matmul input gradient"),
                 gemm_matrix(dout, "matmul output gradient"), false,
                 gemm_matrix(w, "matmul weight"), false, alpha, accumulate ? 1.0f : 0.0f);
}

void CudaBackend::matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x,
                                         bool accumulate, float alpha) {
  shapes::matmul_backward_weight(dw, dout, x);
  f32_ptr(dw, "matmul weight gradient");
  // dw [Nout, K] = alpha * (dout [M, Nout])^T @ x [M, K] + beta * dw
  st_->gemm->run(gemm_matrix(dw, "matmul weight gradient"),
                 gemm_matrix(dout, "matmul output gradient"), true, gemm_matrix(x, "matmul input"),
                 false, alpha, accumulate ? 1.0f : 0.0f);
}

void CudaBackend::bias_backward(const Tensor& dbias, const Tensor& dout) {
  const shapes::BiasDims d = shapes::bias_backward(dbias, dout);
  float* db = f32_ptr(dbias, "bias gradient");
  const bf16* g = bf16_ptr(dout, "biased output gradient");
  const size_t bytes = cuda::bias_backward_scratch_bytes(d.m, d.c);
  if (bytes == 0) return;  // no rows or no columns: nothing to add
  // Per-chunk partial column sums (double), counted like any tensor.
  OwnedTensor scratch = allocate({int64_t((bytes + 3) / 4)}, DType::F32);
  cuda::bias_backward(db, g, d.m, d.c, static_cast<double*>(scratch->data), st_->stream);
}

void CudaBackend::rope_forward(const Tensor& x, int64_t position_offset,
                               const RopeFrequencies& freqs) {
  const shapes::RopeDims d = shapes::rope(x);
  cuda::rope_forward(bf16_ptr(x, "rope input"), d.n, d.heads, d.hd, position_offset, freqs,
                     st_->stream);
}

void CudaBackend::rope_backward(const Tensor& dx, int64_t position_offset,
                                const RopeFrequencies& freqs) {
  const shapes::RopeDims d = shapes::rope(dx);
  cuda::rope_backward(bf16_ptr(dx, "rope gradient"), d.n, d.heads, d.hd, position_offset, freqs,
                      st_->stream);
}

void CudaBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                    const Tensor& k, const Tensor& v,
                                    const AttentionPattern& mask) {
  const shapes::AttnDims d = shapes::attention_forward(out, lse, q, k, v, mask);
  check_whole_window(mask);
  float* lse_ptr = lse.data == nullptr ? nullptr : f32_ptr(lse, "attention log-sum-exp");
  const AttentionKernel kernel = st_->traits.attention_kernel;
  check_attention_kernel_head_dim(kernel, d.hd);
  attention_launchers(kernel).forward(
      bf16_ptr(out, "attention output"), lse_ptr, bf16_ptr(q, "queries"), bf16_ptr(k, "keys"),
      bf16_ptr(v, "values"), d.n, d.h, d.hkv, d.hd, mask, st_->stream);
}

void CudaBackend::attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                           const Tensor& v, int64_t past) {
  const shapes::AttnDims d = shapes::attention_forward_cached(out, q, k, v, past);
  // Per-chunk partials of the split-key decode (none for short caches): counted like any tensor.
  const size_t ws_bytes =
      cuda::attention_forward_cached_workspace_bytes(d.n, past, d.h, d.hkv, d.hd);
  OwnedTensor ws;
  if (ws_bytes > 0) ws = allocate({int64_t((ws_bytes + 3) / 4)}, DType::F32);
  cuda::attention_forward_cached(bf16_ptr(out, "cached attention output"), bf16_ptr(q, "queries"),
                                 bf16_ptr(k, "cached keys"), bf16_ptr(v, "cached values"), d.n,
                                 past, d.h, d.hkv, d.hd, ws.view.data, st_->stream);
}

void CudaBackend::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                     const Tensor& dout, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& out, const Tensor& lse,
                                     const AttentionPattern& mask) {
  const shapes::AttnDims d = shapes::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, mask);
  check_whole_window(mask);
  // D = rowsum(dout * out) per head and token: [H, N] fp32 (with atomic dQ then the dQ
  // accumulator, [N, H, hd] fp32), counted like any tensor.
  const AttentionKernel kernel = st_->traits.attention_kernel;
  check_attention_kernel_head_dim(kernel, d.hd);
  const bool atomic = st_->traits.attention_dq_accumulator();
  const size_t ws_bytes =
      atomic ? cuda::attention_backward_tc_atomic_dq_workspace_bytes(d.n, d.h, d.hd)
             : cuda::attention_backward_workspace_bytes(d.n, d.h);
  OwnedTensor ws = allocate({int64_t((ws_bytes + 3) / 4)}, DType::F32);
  attention_launchers(kernel).backward(
      bf16_ptr(dq, "query gradient"), bf16_ptr(dk, "key gradient"), bf16_ptr(dv, "value gradient"),
      bf16_ptr(dout, "attention gradient"), bf16_ptr(q, "queries"), bf16_ptr(k, "keys"),
      bf16_ptr(v, "values"), bf16_ptr(out, "attention output"), f32_ptr(lse, "log-sum-exp"), d.n,
      d.h, d.hkv, d.hd, mask, ws->data, st_->stream);
}

void CudaBackend::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  shapes::same_shape({&out, &gate, &up}, "swiglu");
  cuda::swiglu_forward(bf16_ptr(out, "swiglu output"), bf16_ptr(gate, "gate"), bf16_ptr(up, "up"),
                       out.numel(), st_->stream);
}

void CudaBackend::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                  const Tensor& gate, const Tensor& up) {
  shapes::same_shape({&dgate, &dup, &dout, &gate, &up}, "swiglu backward");
  cuda::swiglu_backward(bf16_ptr(dgate, "gate gradient"), bf16_ptr(dup, "up gradient"),
                        bf16_ptr(dout, "swiglu gradient"), bf16_ptr(gate, "gate"),
                        bf16_ptr(up, "up"), gate.numel(), st_->stream);
}

void CudaBackend::add_inplace(const Tensor& x, const Tensor& y) {
  shapes::same_shape({&x, &y}, "add");
  LL_CHECK(x.dtype == y.dtype, "cuda backend: add of {} to {}", dtype_name(y.dtype),
           dtype_name(x.dtype));
  if (x.dtype == DType::F32) {
    cuda::add_inplace_f32(x.f32(), y.f32(), x.numel(), st_->stream);
  } else {
    cuda::add_inplace_bf16(bf16_ptr(x, "sum"), bf16_ptr(y, "addend"), x.numel(), st_->stream);
  }
}

void CudaBackend::copy(const Tensor& dst, const Tensor& src) {
  shapes::same_shape({&dst, &src}, "copy");
  if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
    // fp32 master weights into the bf16 copy the forward reads.
    cuda::convert_f32_to_bf16(bf16_ptr(dst, "copy destination"), src.f32(), src.numel(),
                              st_->stream);
    return;
  }
  LL_CHECK(dst.dtype == src.dtype,
           "copy: {} into {} is not supported (same dtype, or F32 into BF16)",
           dtype_name(src.dtype), dtype_name(dst.dtype));
  LL_CUDA_CHECK(
      cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, st_->stream));
}

int64_t CudaBackend::classifier_forward(const Tensor& losses, const Tensor& x,
                                        const Tensor& lm_head, const Tensor& targets,
                                        int64_t chunk_rows) {
  shapes::classifier_forward(losses, x, lm_head, targets);
  return classifier(losses, nullptr, nullptr, x, lm_head, targets, chunk_rows, 1.0f);
}

int64_t CudaBackend::classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                                 const Tensor& dlm_head, const Tensor& x,
                                                 const Tensor& lm_head, const Tensor& targets,
                                                 int64_t chunk_rows, float loss_scale) {
  shapes::classifier_forward_backward(losses, dx, dlm_head, x, lm_head, targets);
  return classifier(losses, &dx, dlm_head.data == nullptr ? nullptr : &dlm_head, x, lm_head,
                    targets, chunk_rows, loss_scale);
}

// The chunked fused classifier: per chunk of C tokens, fp32 logits [C, V] from one GEMM, the
// cross-entropy kernel turning them into losses and, in place, the bf16 logits gradient
// (leading dimension 2V), then the GEMMs for dx and dlm_head reading that gradient. Peak extra
// memory is C * V fp32, as the memory plan counts; the full [N, V] never exists.
int64_t CudaBackend::classifier(const Tensor& losses, const Tensor* dx, const Tensor* dlm_head,
                                const Tensor& x, const Tensor& lm_head, const Tensor& targets,
                                int64_t chunk_rows, float loss_scale) {
  LL_CHECK(chunk_rows >= 1, "classifier: chunk_rows must be >= 1, got {}", chunk_rows);
  const int64_t n = x.dim(0), v = lm_head.dim(0);
  cudaStream_t s = st_->stream;
  // Labels are checked on the host first, with the CPU backend's message (one small copy).
  std::vector<int32_t> host_targets(static_cast<size_t>(n));  // [N]
  const int32_t* target_ptr = i32_ptr(targets, "targets");
  LL_CUDA_CHECK(
      cudaMemcpyAsync(host_targets.data(), target_ptr, size_t(n) * 4, cudaMemcpyDeviceToHost, s));
  LL_CUDA_CHECK(cudaStreamSynchronize(s));
  const int64_t n_labelled = count_labelled_targets(host_targets.data(), n, v);
  if (n == 0) return 0;

  float* loss_ptr = f32_ptr(losses, "losses");
  const int64_t c_max = std::min(chunk_rows, n);
  OwnedTensor logits = allocate({c_max, v}, DType::F32);  // [C, V], then bf16 [C, V] ld 2V
  LL_CUDA_CHECK(cudaMemsetAsync(st_->status, 0, sizeof(int), s));
  const cuda::GemmMatrix head = gemm_matrix(lm_head, "lm_head");
  for (int64_t r0 = 0; r0 < n; r0 += c_max) {
    const int64_t c = std::min(c_max, n - r0);
    const cuda::GemmMatrix xc = gemm_matrix(x, "classifier input", r0, c);
    // logits [c, V] = x [c, D] @ lm_head [V, D]^T
    cuda::GemmMatrix lg{logits->data, cuda::GemmType::F32, c, v, v};
    st_->gemm->run(lg, xc, false, head, true, 1.0f, 0.0f);
    cuda::cross_entropy_chunk(loss_ptr + r0, logits->f32(), target_ptr + r0, c, v, loss_scale,
                              dx != nullptr, st_->status, s);
    if (dx == nullptr) continue;
    // dlogits [c, V] bf16 over the logits' storage: row r starts where fp32 row r started.
    const cuda::GemmMatrix g{logits->data, cuda::GemmType::BF16, c, v, 2 * v};
    // dx [c, D] = dlogits [c, V] @ lm_head [V, D]
    st_->gemm->run(gemm_matrix(*dx, "classifier input gradient", r0, c), g, false, head, false,
                   1.0f, 0.0f);
    // dlm_head [V, D] += dlogits [c, V]^T @ x [c, D] (only when lm_head is trained)
    if (dlm_head != nullptr) {
      f32_ptr(*dlm_head, "lm_head gradient");
      st_->gemm->run(gemm_matrix(*dlm_head, "lm_head gradient"), g, true, xc, false, 1.0f, 1.0f);
    }
  }
  int status = 0;
  LL_CUDA_CHECK(cudaMemcpyAsync(&status, st_->status, sizeof(int), cudaMemcpyDeviceToHost, s));
  LL_CUDA_CHECK(cudaStreamSynchronize(s));
  LL_CHECK((status & 1) == 0,
           "classifier: non-finite logit (NaN or Inf) at a labelled position: the hidden states "
           "or lm_head hold NaN/Inf (diverged training or a corrupt checkpoint?)");
  LL_CHECK(status == 0,
           "classifier: internal error: a target outside the vocabulary reached the "
           "GPU after the host check (status {})",
           status);
  return n_labelled;
}

void CudaBackend::rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                                   const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const shapes::RowDims d = shapes::rmsnorm_backward(dx, dweight, dout, x, weight, rstd);
  LL_CHECK(dx.data != dout.data && dx.data != x.data,
           "cuda backend: rmsnorm backward: dx must not alias dout or x");
  float* dweight_ptr = nullptr;
  OwnedTensor scratch;
  if (dweight.data != nullptr) {
    dweight_ptr = f32_ptr(dweight, "rmsnorm weight gradient");
    const int64_t floats = int64_t((cuda::rmsnorm_backward_scratch_bytes(d.n, d.d) + 3) / 4);
    scratch = allocate({floats}, DType::F32);  // per-chunk partial sums of dweight
  }
  cuda::rmsnorm_backward(bf16_ptr(dx, "rmsnorm input gradient"), dweight_ptr,
                         bf16_ptr(dout, "rmsnorm output gradient"), bf16_ptr(x, "rmsnorm input"),
                         bf16_ptr(weight, "rmsnorm weight"), f32_ptr(rstd, "rmsnorm rstd"), d.n,
                         d.d, dweight_ptr == nullptr ? nullptr : scratch->f32(), st_->stream);
}

void CudaBackend::embedding_backward(const Tensor& dtable, const Tensor& dout,
                                     const Tensor& tokens) {
  const shapes::EmbeddingDims d = shapes::embedding_backward(dtable, dout, tokens);
  cuda::embedding_backward(f32_ptr(dtable, "embedding gradient"),
                           bf16_ptr(dout, "embedding output gradient"),
                           i32_ptr(tokens, "token ids"), d.n, d.v, d.d, nullptr, st_->stream);
}

void CudaBackend::fill_zero(const Tensor& x) {
  // All-zero bits are +0 in F32, BF16 and I32.
  LL_CUDA_CHECK(cudaMemsetAsync(x.data, 0, x.nbytes(), st_->stream));
}

double CudaBackend::sum_squares(const Tensor& x) {
  cuda::sum_squares(st_->sum_result, f32_ptr(x, "sum_squares input"), x.numel(), st_->sum_scratch,
                    st_->stream);
  double result = 0.0;
  LL_CUDA_CHECK(cudaMemcpyAsync(&result, st_->sum_result, sizeof(double), cudaMemcpyDeviceToHost,
                                st_->stream));
  LL_CUDA_CHECK(cudaStreamSynchronize(st_->stream));
  return result;
}

void CudaBackend::adamw_step(const Tensor& master, const Tensor& param, const Tensor& grad,
                             const Tensor& m, const Tensor& v, const AdamWStep& step) {
  const int64_t n = shapes::adamw(master, param, grad, m, v);
  // The bf16 copy the forward reads; none when the caller passes the master itself.
  bf16* param_ptr = param.data == master.data ? nullptr : bf16_ptr(param, "parameter");
  cuda::adamw_step(f32_ptr(master, "master weights"), f32_ptr(grad, "gradient"),
                   f32_ptr(m, "first moment"), f32_ptr(v, "second moment"), param_ptr, n, step,
                   st_->stream);
}

}  // namespace ll
