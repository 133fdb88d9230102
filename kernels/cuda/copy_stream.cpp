#include "kernels/cuda/copy_stream.h"

#include <cstdio>

#include "kernels/cuda/cuda_check.h"

namespace ll::cuda {

CopyStream::CopyStream(cudaStream_t compute) : compute_(compute) {
  LL_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
}

CopyStream::~CopyStream() {
  // Destructors must not throw: report and go on.
  auto report = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess)
      std::fprintf(stderr, "cuda backend: %s failed at shutdown: %s\n", what,
                   cudaGetErrorString(e));
  };
  // Copies still in flight read or write memory their owners free after this.
  report(cudaStreamSynchronize(copy_), "cudaStreamSynchronize (copy stream)");
  for (auto& [id, event] : pending_) report(cudaEventDestroy(event), "cudaEventDestroy");
  for (cudaEvent_t event : idle_) report(cudaEventDestroy(event), "cudaEventDestroy");
  report(cudaStreamDestroy(copy_), "cudaStreamDestroy (copy stream)");
}

cudaEvent_t CopyStream::take_event() {
  if (!idle_.empty()) {
    cudaEvent_t e = idle_.back();
    idle_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  LL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

CopyTicket CopyStream::copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  // The copy stream waits for the compute stream's work so far (what wrote src).
  cudaEvent_t ready = take_event();
  LL_CUDA_CHECK(cudaEventRecord(ready, compute_));
  LL_CUDA_CHECK(cudaStreamWaitEvent(copy_, ready, 0));
  idle_.push_back(ready);  // the wait has captured it: free to record again
  LL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, copy_));
  cudaEvent_t done = take_event();
  LL_CUDA_CHECK(cudaEventRecord(done, copy_));
  const int64_t id = next_id_++;
  pending_.emplace(id, done);
  return CopyTicket{id};
}

void CopyStream::wait(CopyTicket ticket) {
  const auto it = pending_.find(ticket.id);
  if (it == pending_.end()) {
    LL_CHECK(ticket.id < 0 || ticket.id >= next_id_,
             "wait_copy: ticket {} was already waited for (each copy is waited for once)",
             ticket.id);
    fail("wait_copy: ticket {} was not handed out by this backend's copy_async", ticket.id);
  }
  LL_CUDA_CHECK(cudaStreamWaitEvent(compute_, it->second, 0));
  idle_.push_back(it->second);
  pending_.erase(it);
}

void CopyStream::synchronize() { LL_CUDA_CHECK(cudaStreamSynchronize(copy_)); }

}  // namespace ll::cuda
