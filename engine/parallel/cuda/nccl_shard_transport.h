#pragma once
// The sharded optimizer's transport for the CUDA backend (engine/parallel/shard_transport.h): its flat
// buffers stay in device memory and move over NCCL (engine/parallel/cuda/nccl_communicator.h).
//
// Streams. The transport owns a non-blocking communication stream on the backend's GPU; every
// collective runs there, so the gradient reduction of a bucket overlaps the backward work the
// backend keeps enqueueing on its own stream. The two streams are ordered by CUDA events only:
//   - each call first records an event on the backend's stream and makes the communication
//     stream wait for it (the gradients computed so far are final; buffers the backend still
//     reads are not overwritten early);
//   - finish_reduces and all_gather record an event on the communication stream once the
//     collectives are done and make the backend's stream wait for it (later backend work sees
//     the results).
//
// start_reduce: one NCCL group of ncclReduce calls (NcclCommunicator::reduce_sum), one per rank
// whose shard meets the bucket [begin, end), rooted at that rank and writing straight into its
// grad_shard. No padding or staging copy is needed, and over a step the buckets add up to the
// reduce-scatter of the whole flat gradient. finish_reduces blocks the host until they are done
// (or throws after the timeout).
//
// all_gather: the shard is copied into a persistent staging block [B], all-gathered into a
// persistent padded buffer [W * B] and unpacked into flat [T] (engine/parallel/nccl_padding.h); when every
// shard has the same size the gather goes straight from the shard into flat. The call returns
// when flat is written.
//
// all_reduce_sum (host doubles, the clipping norm) goes through the host communicator.
//
// Timing (timing_summary()):
//   - per collective kind, the GPU time between the CUDA events around each call
//     (NcclCommunicator::timing_summary);
//   - "exposed" reduce time: for each finish_reduces, the GPU time from the moment the backend's
//     stream reached the finish_reduces call (the backward was done) to the moment the last
//     reduce completed, or zero when the reduces were done first. That is the communication the
//     backward did not hide; "hidden" is 1 - exposed / (reduce_sum GPU time). Hidden reduces
//     still share the GPU's SMs and memory bandwidth with the backward: hidden is not free;
//   - the host's wall time blocked in finish_reduces (it also covers backend work still queued
//     when finish_reduces was called, since the host runs ahead of the GPU).
//
// Failure: as NcclCommunicator (a rank that dies or hangs past the timeout throws ll::Error
// naming the rank and context; the transport is unusable afterwards).
#include <memory>
#include <span>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/parallel/shard_layout.h"
#include "engine/parallel/shard_transport.h"
#include "kernels/backend.h"

namespace ll {
class CudaBackend;
}

namespace ll::dist {

class NcclShardTransport final : public ShardTransport {
 public:
  // Collective over `host` (NCCL setup): every rank constructs its transport at the same point.
  // NCCL runs on the backend's GPU. `backend` and `host` must outlive the transport.
  NcclShardTransport(CudaBackend& backend, Communicator& host, const ShardLayout& layout,
                     const ShardTransportOptions& options);
  // Finalises NCCL (or aborts it after a failure), lets the communication stream drain, then
  // frees the buffers and the stream. Never throws.
  ~NcclShardTransport() override;
  NcclShardTransport(const NcclShardTransport&) = delete;
  NcclShardTransport& operator=(const NcclShardTransport&) = delete;

  // "NCCL 2.28.9 on GPU 0"
  std::string name() const override;
  void start_reduce(const Tensor& flat_grad, int64_t begin, int64_t end, const Tensor& grad_shard,
                    const std::string& context) override;
  void finish_reduces(const std::string& context) override;
  void all_gather(const Tensor& shard, const Tensor& flat, const std::string& context) override;
  void all_reduce_sum(std::span<double> values, const std::string& context) override;
  // "NCCL all_gather 1 calls, 33.3 MiB, 0.410 ms; reduce_sum 12 calls, 400.0 MiB, 10.100 ms;
  // reduces exposed 3.200 ms of 10.100 ms (68% hidden behind compute); host waited 4.000 ms in
  // finish_reduces" (the last part only once a reduce ran; "NCCL no collectives" before any).
  std::string timing_summary() const override;

  // The numbers behind timing_summary(), in seconds.
  double reduce_seconds() const;   // GPU time of the reduce_sum collectives
  double exposed_seconds() const;  // the part of it after the backward was done
  double host_wait_seconds() const;

 private:
  struct State;
  std::unique_ptr<State> st_;
};

// The transport for a CUDA backend; throws ll::Error when `backend` is not the CUDA backend.
std::unique_ptr<ShardTransport> make_nccl_shard_transport(Backend& backend, Communicator& host,
                                                          const ShardLayout& layout,
                                                          const ShardTransportOptions& options);

}  // namespace ll::dist
