#pragma once
// The CUDA backend's copies beside the compute (Backend::copy_async / wait_copy): a second,
// non-blocking stream and the events that order it against the compute stream. copy() starts
// a copy after the compute stream's queued work; wait() makes the compute stream's later work
// wait for it. The host never blocks on either. Memory a copy reads or writes must stay
// allocated until its ticket is waited for (the backend frees stream-ordered on the compute
// stream, which only the wait orders after the copy).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kernels/backend.h"

namespace ll::cuda {

class CopyStream {
 public:
  explicit CopyStream(cudaStream_t compute);  // creates the copy stream
  ~CopyStream();                              // finishes its copies first; never throws
  CopyStream(const CopyStream&) = delete;
  CopyStream& operator=(const CopyStream&) = delete;

  // bytes from src to dst (kind: where each lives) after the compute stream's queued work.
  CopyTicket copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
  // The compute stream's later work runs after that copy; each ticket once.
  void wait(CopyTicket ticket);
  void synchronize();  // the host waits for every copy started
  cudaStream_t stream() const { return copy_; }

 private:
  cudaEvent_t take_event();  // a recycled event, or a new one (no timing)

  cudaStream_t compute_;
  cudaStream_t copy_ = nullptr;
  std::vector<cudaEvent_t> idle_;                     // events free for reuse
  std::unordered_map<int64_t, cudaEvent_t> pending_;  // ticket id -> its copy's done event
  int64_t next_id_ = 0;
};

}  // namespace ll::cuda
