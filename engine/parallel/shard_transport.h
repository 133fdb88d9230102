#pragma once
// How the sharded optimizer (engine/parallel/sharded_optimizer.h) moves its flat buffers between
// ranks, in the memory of the backend that holds them: host memory over the host communicator (MPI
// or a world of one) for the CPU backend, device memory over NCCL for the CUDA backend.
//
// Gradient reduction is bucketed so that it can overlap the backward pass: as soon as a group of
// parameters' gradients is final, the optimizer hands their contiguous range [begin, end) of the
// flat gradient vector to start_reduce, and the transport sums it over the ranks into the shards
// that own it (for each rank r, the part of the range inside r's shard lands in r's grad_shard at
// its offset in the shard). A transport may run that while the caller computes (the NCCL one does
// it on its own stream); finish_reduces waits for all of them. Over every range of one step the
// effect is a reduce-scatter (sum) of the whole vector, whatever the bucketing.
//
// Every rank must make the same calls in the same order with the same ranges (the collectives
// pair up by order). Failures (a rank that died or hangs past the timeout, a library error)
// throw ll::Error naming the rank and `context`; the transport is unusable afterwards.
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/tensor.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/shard_layout.h"
#include "kernels/backend.h"

namespace ll::dist {

class ShardTransport {
 public:
  virtual ~ShardTransport() = default;

  // "MPI (host memory)", "NCCL 2.28 on GPU 0", ... for logs.
  virtual std::string name() const = 0;

  // flat_grad: [T] F32, this rank's gradients; grad_shard: [shard_size(rank)] F32, receives the
  // sum over ranks of its part of [begin, end) (other elements untouched). The range must lie
  // in [0, T]; an empty range is a no-op. Asynchronous: read grad_shard and write
  // flat_grad[begin, end) only after finish_reduces.
  virtual void start_reduce(const Tensor& flat_grad, int64_t begin, int64_t end,
                            const Tensor& grad_shard, const std::string& context) = 0;
  // Blocks until every reduce started so far is complete; then grad_shard is readable on the
  // backend's stream.
  virtual void finish_reduces(const std::string& context) = 0;

  // shard: [shard_size(rank)] F32; flat: [T] F32, receives every rank's shard in rank order.
  // Complete on return (ordered before later backend work).
  virtual void all_gather(const Tensor& shard, const Tensor& flat, const std::string& context) = 0;

  // Host values summed over ranks in place (the clipping norm's sum of squares).
  virtual void all_reduce_sum(std::span<double> values, const std::string& context) = 0;

  // What the collectives cost so far, one line for the run's summary; "" when nothing is
  // measured (the host transport).
  virtual std::string timing_summary() const = 0;
};

struct ShardTransportOptions {
  double timeout_s = 600.0;  // how long one collective may wait for the other ranks
};

// The transport for `backend`'s memory: host collectives through `host` for the CPU backend,
// NCCL (bootstrapped over `host`) for the CUDA backend. Throws ll::Error when the build has no
// transport for the backend (a CUDA build without NCCL). `host` must outlive the transport.
std::unique_ptr<ShardTransport> make_shard_transport(Backend& backend, Communicator& host,
                                                     const ShardLayout& layout,
                                                     const ShardTransportOptions& options = {});

// The part of the flat range [begin, end) that rank r's shard owns, as a range of the flat
// vector (empty when they do not meet).
FlatRange owned_part(const ShardLayout& layout, int rank, int64_t begin, int64_t end);

// Argument checks shared by the transports; each throws ll::Error starting "rank R: CALL
// (CONTEXT): ". `t` must be an F32 vector [size] (`what` names it: "flat gradient", "shard");
// [begin, end) must lie inside the flat vector [0, total).
void check_transport_vector(const Tensor& t, int64_t size, const char* what, int rank,
                            const char* call, const std::string& context);
void check_transport_range(int64_t begin, int64_t end, int64_t total, int rank, const char* call,
                           const std::string& context);

}  // namespace ll::dist
