#pragma once
// The shard transport (engine/parallel/shard_transport.h) for backends whose tensors live in host
// memory (the CPU backend): every collective goes through the host communicator (MPI, or a world of
// one where each is a copy). Synchronous: start_reduce has finished its reduces when it returns
// (MPI progresses a nonblocking collective only inside MPI calls, so there is nothing to gain
// from leaving it running while the CPU computes the backward), finish_reduces has nothing left.
// A bucket [begin, end) becomes one reduce_sum per rank whose shard it meets, rooted there.
#include "engine/parallel/shard_transport.h"

namespace ll::dist {

class HostShardTransport final : public ShardTransport {
 public:
  // `backend` must keep its tensors in host memory (checked: the CPU backend).
  HostShardTransport(Backend& backend, Communicator& host, const ShardLayout& layout);

  std::string name() const override;
  void start_reduce(const Tensor& flat_grad, int64_t begin, int64_t end, const Tensor& grad_shard,
                    const std::string& context) override;
  void finish_reduces(const std::string&) override {}
  void all_gather(const Tensor& shard, const Tensor& flat, const std::string& context) override;
  void all_reduce_sum(std::span<double> values, const std::string& context) override;
  std::string timing_summary() const override { return ""; }

 private:
  Communicator& host_;
  ShardLayout layout_;
  std::vector<int64_t> shard_sizes_;  // [W]
};

}  // namespace ll::dist
