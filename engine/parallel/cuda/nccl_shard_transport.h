#pragma once
// The sharded optimizer's transport for the CUDA backend (engine/parallel/shard_transport.h):
// its flat buffers stay in device memory and move over NCCL (nccl_communicator.h) on a
// communication stream the transport owns, ordered against the backend's stream by CUDA events
// only, so bucketed gradient reductions overlap the backward. Failure as NcclCommunicator (a
// rank that dies or hangs past the timeout throws; the transport is unusable afterwards).
// Streams, buckets, padding and the exposed / hidden timing: docs/subsystems/nccl-transport.md.
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
