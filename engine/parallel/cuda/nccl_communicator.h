#pragma once
// Collectives between GPUs over NCCL, for device buffers (gradients, parameters, norms). One
// NCCL rank per process and GPU, bootstrapped over the host communicator; every rank constructs
// it at the same point. Collectives are enqueued on the construction stream and return; wait()
// blocks. Nonblocking NCCL: no call or wait hangs; an NCCL error or a timeout aborts the
// communicator and throws ll::Error naming the rank, collective and context, and every later
// call throws. Buffers, element types and timing: docs/subsystems/nccl-transport.md.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/parallel/nccl_padding.h"

// As in CUDA's driver_types.h, so that host code including this header needs no CUDA headers.
typedef struct CUstream_st* cudaStream_t;

namespace ll::dist {

// Element types of the buffers the collectives move.
enum class NcclElement { F32, BF16, F64 };
size_t nccl_element_size(NcclElement element);
const char* nccl_element_name(NcclElement element);

enum class NcclCollective { ReduceScatterSum = 0, AllGather, AllReduceSum, Broadcast, ReduceSum };
inline constexpr int kNcclCollectiveKinds = 5;
const char* nccl_collective_name(NcclCollective collective);

// One ncclReduce of a reduce_sum group: send [count] (device, every rank) is summed over the
// ranks into recv [count] (device) on rank `root`; recv is not used on the other ranks (may be
// null there).
struct NcclReducePiece {
  const void* send = nullptr;
  void* recv = nullptr;
  int64_t count = 0;
  int root = 0;
};

// What one kind of collective has cost so far (only collectives completed through wait()).
struct NcclCollectiveTotals {
  int64_t calls = 0;
  int64_t bytes = 0;     // bytes of the buffer each call reduced or gathered, summed
  double seconds = 0.0;  // GPU time between the CUDA events around each call, summed
};

struct NcclOptions {
  // How long setup or one wait() may take before the run is declared broken.
  double timeout_s = 600.0;
  // The GPU of this rank; -1: the host communicator's local rank (one GPU per local rank).
  int device = -1;
};

class NcclCommunicator {
 public:
  // Collective over `host`: creates the NCCL communicator on `options.device` and makes that
  // device current. `stream` (a stream of that device; may be a non-blocking stream) receives
  // every collective. Throws ll::Error naming the rank when the device does not exist, NCCL
  // fails or setup does not complete within the timeout.
  NcclCommunicator(Communicator& host, cudaStream_t stream, const NcclOptions& options = {});
  // Finalises NCCL (waiting at most the timeout), or aborts it after a failure or when an
  // exception leaves the scope in a world of more than one rank (the others may never finalise).
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const;
  int world_size() const;
  int device() const;
  cudaStream_t stream() const;
  double timeout_s() const;
  // Empty while usable; the first failure's message afterwards.
  const std::string& failure() const;

  // padded_full: [W * B] device, this rank's contribution (padding zero); padded_shard: [B]
  // device, receives the sum over ranks of block `rank` (its first shard_size(rank) elements are
  // the shard). The caller divides by W for the mean. padding.world_size() must be W.
  void reduce_scatter_sum(const void* padded_full, void* padded_shard, const NcclPadding& padding,
                          NcclElement element, const std::string& context);

  // padded_shard: [B] device, this rank's block; padded_full: [W * B] device, receives every
  // rank's block in rank order.
  void all_gather(const void* padded_shard, void* padded_full, const NcclPadding& padding,
                  NcclElement element, const std::string& context);

  // values: [count] device, fp32 or fp64, summed over ranks in place.
  void all_reduce_sum(void* values, int64_t count, NcclElement element, const std::string& context);

  // buffer: [count] device; on completion every rank holds root's values.
  void broadcast(void* buffer, int64_t count, NcclElement element, int root,
                 const std::string& context);

  // Every piece's send buffer summed over ranks into its root's recv buffer, all pieces in one
  // NCCL group: one collective of kind ReduceSum in the totals (bytes: the pieces' counts
  // summed), timed by events around the whole group. Every rank passes the same pieces (counts,
  // roots) in the same order; empty pieces are skipped, and no piece at all enqueues nothing.
  void reduce_sum(std::span<const NcclReducePiece> pieces, NcclElement element,
                  const std::string& context);

  // Stream-ordered copies between the layouts (not collectives; no wait needed before the next
  // call on the stream). flat: [T] device; padded: [W * B] device (padding zeroed by pack).
  void pack_padded(const void* flat, void* padded, const NcclPadding& padding, NcclElement element);
  void unpack_padded(const void* padded, void* flat, const NcclPadding& padding,
                     NcclElement element);

  // Blocks until every collective enqueued so far has completed (then their times are added to
  // the totals). `context` says what the caller waits for ("step 12 gradients"); the timeout
  // message names it together with the first collective still running.
  void wait(const std::string& context);

  const NcclCollectiveTotals& totals(NcclCollective collective) const;
  // "reduce_scatter_sum 10 calls, 400.0 MiB, 12.345 ms; all_gather ...", kinds never called left
  // out ("no collectives" when none).
  std::string timing_summary() const;

 private:
  struct State;
  std::unique_ptr<State> st_;
};

}  // namespace ll::dist
