#include "engine/parallel/cuda/nccl_shard_transport.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "engine/parallel/cuda/nccl_communicator.h"
#include "engine/parallel/nccl_padding.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/nccl_check.h"

namespace ll::dist {

namespace {

using Clock = std::chrono::steady_clock;

// "2.28.9" from ncclGetVersion's code (X * 10000 + Y * 100 + Z since NCCL 2.9).
std::string nccl_version() {
  int code = 0;
  LL_NCCL_CHECK(ncclGetVersion(&code));
  return fmt::format("{}.{}.{}", code / 10000, code % 10000 / 100, code % 100);
}

// The layout, once it is known to describe this world's shards.
const ShardLayout& checked_layout(const ShardLayout& layout, const Communicator& host) {
  LL_CHECK(layout.world_size() == host.world_size(),
           "rank {}: NCCL shard transport: the shard layout is for {} ranks but the world has {}",
           host.rank(), layout.world_size(), host.world_size());
  return layout;
}

float* f32_at(const Tensor& t, int64_t offset) { return static_cast<float*>(t.data) + offset; }

// The communication stream, on `device`; drained before it is destroyed (an aborted collective
// may still be running on it).
class CommStream {
 public:
  explicit CommStream(int device) {
    LL_CUDA_CHECK(cudaSetDevice(device));
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&handle_, cudaStreamNonBlocking));
  }
  ~CommStream() {
    (void)cudaStreamSynchronize(handle_);
    (void)cudaStreamDestroy(handle_);
  }
  CommStream(const CommStream&) = delete;
  CommStream& operator=(const CommStream&) = delete;
  cudaStream_t get() const { return handle_; }
  void drain() const noexcept { (void)cudaStreamSynchronize(handle_); }

 private:
  cudaStream_t handle_ = nullptr;
};

class Event {
 public:
  explicit Event(unsigned flags) { LL_CUDA_CHECK(cudaEventCreateWithFlags(&handle_, flags)); }
  ~Event() { (void)cudaEventDestroy(handle_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return handle_; }

 private:
  cudaEvent_t handle_ = nullptr;
};

}  // namespace

struct NcclShardTransport::State {
  CudaBackend& backend;
  Communicator& host;
  const ShardLayout layout;
  const NcclPadding padding;  // of layout's shards, for all_gather
  const int rank;
  const FlatRange own;  // this rank's shard in the flat vector
  const std::string version;

  // Destroyed in reverse order: NCCL first (the destructor body), then the buffers (once the
  // stream has drained), the events and last the stream.
  CommStream stream;
  Event backend_ready{cudaEventDisableTiming};  // backend stream -> communication stream
  Event comm_ready{cudaEventDisableTiming};     // communication stream -> backend stream
  Event compute_done{cudaEventDefault};         // timed: where finish_reduces found the backend
  Event reduces_done{cudaEventDefault};         // timed: after the last reduce
  OwnedTensor staging;                          // [B] F32, this rank's padded block (uneven shards)
  OwnedTensor gathered;                         // [W * B] F32, every rank's block (uneven shards)
  std::unique_ptr<NcclCommunicator> nccl;

  std::vector<NcclReducePiece> pieces;  // [<= W] scratch of start_reduce
  bool reduces_pending = false;         // start_reduce ran since the last finish_reduces
  double exposed_s = 0.0;
  double host_wait_s = 0.0;

  State(CudaBackend& b, Communicator& h, const ShardLayout& l, const ShardTransportOptions& options)
      : backend(b),
        host(h),
        layout(checked_layout(l, h)),
        padding(layout.shard_sizes()),
        rank(h.rank()),
        own(layout.shard_range(h.rank())),
        version(nccl_version()),
        stream(b.device()) {
    if (!padding.is_flat()) {
      staging = backend.allocate({padding.block_size()}, DType::F32);
      gathered = backend.allocate({padding.padded_size()}, DType::F32);
      backend.fill_zero(*staging);  // its padding element travels through the gather
    }
    // NCCL on the backend's GPU, whatever the local rank: the stream and buffers live there.
    nccl = std::make_unique<NcclCommunicator>(
        host, stream.get(), NcclOptions{.timeout_s = options.timeout_s, .device = b.device()});
  }

  ~State() {
    nccl.reset();    // finalises or aborts; never throws
    stream.drain();  // abandoned collectives may still write staging / gathered
  }

  // The communication stream waits for everything enqueued on the backend's stream so far.
  void comm_after_backend() {
    LL_CUDA_CHECK(cudaEventRecord(backend_ready.get(), backend.stream()));
    LL_CUDA_CHECK(cudaStreamWaitEvent(stream.get(), backend_ready.get(), 0));
  }

  // The backend's stream waits for everything enqueued on the communication stream so far.
  void backend_after_comm() {
    LL_CUDA_CHECK(cudaEventRecord(comm_ready.get(), stream.get()));
    LL_CUDA_CHECK(cudaStreamWaitEvent(backend.stream(), comm_ready.get(), 0));
  }
};

NcclShardTransport::NcclShardTransport(CudaBackend& backend, Communicator& host,
                                       const ShardLayout& layout,
                                       const ShardTransportOptions& options)
    : st_(std::make_unique<State>(backend, host, layout, options)) {}

NcclShardTransport::~NcclShardTransport() = default;

std::string NcclShardTransport::name() const {
  return fmt::format("NCCL {} on GPU {}", st_->version, st_->nccl->device());
}

void NcclShardTransport::start_reduce(const Tensor& flat_grad, int64_t begin, int64_t end,
                                      const Tensor& grad_shard, const std::string& context) {
  State& s = *st_;
  const int64_t total = s.layout.total_size();
  check_transport_vector(flat_grad, total, "flat gradient", s.rank, "start_reduce", context);
  check_transport_vector(grad_shard, s.own.size(), "gradient shard", s.rank, "start_reduce",
                         context);
  check_transport_range(begin, end, total, s.rank, "start_reduce", context);
  if (begin == end) return;

  // One ncclReduce per rank whose shard meets the range, rooted there; this rank's own part
  // lands in its grad_shard at the part's offset in the shard.
  s.pieces.clear();
  int64_t covered = 0;
  for (int r = 0; r < s.layout.world_size(); ++r) {
    const FlatRange part = owned_part(s.layout, r, begin, end);
    if (part.size() <= 0) continue;
    const FlatRange shard = s.layout.shard_range(r);
    LL_CHECK(part.begin >= std::max(begin, shard.begin) && part.end <= std::min(end, shard.end),
             "rank {}: start_reduce: internal error: owned_part gave [{}, {}) for rank {} whose "
             "shard is [{}, {}), range [{}, {})",
             s.rank, part.begin, part.end, r, shard.begin, shard.end, begin, end);
    NcclReducePiece piece;
    piece.send = f32_at(flat_grad, part.begin);
    piece.count = part.size();
    piece.root = r;
    if (r == s.rank) piece.recv = f32_at(grad_shard, part.begin - s.own.begin);
    s.pieces.push_back(piece);
    covered += part.size();
  }
  LL_CHECK(covered == end - begin,
           "rank {}: start_reduce: internal error: the shards' parts cover {} of the {} elements "
           "of [{}, {})",
           s.rank, covered, end - begin, begin, end);

  s.comm_after_backend();  // the bucket's gradients are final on the backend's stream
  const std::string range = fmt::format("flat [{}, {})", begin, end);
  s.nccl->reduce_sum(s.pieces, NcclElement::F32,
                     context.empty() ? range : fmt::format("{}, {}", context, range));
  s.reduces_pending = true;
}

void NcclShardTransport::finish_reduces(const std::string& context) {
  State& s = *st_;
  const auto start = Clock::now();
  const bool timed = s.reduces_pending;
  if (timed) {
    LL_CUDA_CHECK(cudaEventRecord(s.compute_done.get(), s.backend.stream()));
    LL_CUDA_CHECK(cudaEventRecord(s.reduces_done.get(), s.stream.get()));
  }
  s.nccl->wait(context);  // throws after the timeout
  if (timed) {
    s.reduces_pending = false;
    // The shards are read on the backend's stream next.
    LL_CUDA_CHECK(cudaStreamWaitEvent(s.backend.stream(), s.reduces_done.get(), 0));
    // Neither can block long: the reduces are done, and the backend's stream only runs work of
    // its own before compute_done.
    LL_CUDA_CHECK(cudaEventSynchronize(s.reduces_done.get()));
    LL_CUDA_CHECK(cudaEventSynchronize(s.compute_done.get()));
    float ms = 0.0f;  // negative when the reduces finished before the backward
    LL_CUDA_CHECK(cudaEventElapsedTime(&ms, s.compute_done.get(), s.reduces_done.get()));
    s.exposed_s += std::max(0.0, double(ms) * 1e-3);
  }
  s.host_wait_s += std::chrono::duration<double>(Clock::now() - start).count();
}

void NcclShardTransport::all_gather(const Tensor& shard, const Tensor& flat,
                                    const std::string& context) {
  State& s = *st_;
  check_transport_vector(shard, s.own.size(), "shard", s.rank, "all_gather", context);
  check_transport_vector(flat, s.layout.total_size(), "flat buffer", s.rank, "all_gather", context);
  s.comm_after_backend();  // the shard is final; nothing on the backend still reads flat
  if (s.padding.is_flat()) {
    // Equal shards: the flat buffer is the padded layout; gather straight into it.
    s.nccl->all_gather(shard.data, flat.data, s.padding, NcclElement::F32, context);
  } else {
    if (s.own.size() > 0) {
      LL_CUDA_CHECK(cudaMemcpyAsync(s.staging->data, shard.data, size_t(s.own.size()) * 4,
                                    cudaMemcpyDeviceToDevice, s.stream.get()));
    }
    s.nccl->all_gather(s.staging->data, s.gathered->data, s.padding, NcclElement::F32, context);
    s.nccl->unpack_padded(s.gathered->data, flat.data, s.padding, NcclElement::F32);
  }
  s.nccl->wait(context);  // throws after the timeout
  // The unpack copies follow the collective on the communication stream: later backend work
  // waits for them, and so does the host (complete on return).
  s.backend_after_comm();
  LL_CUDA_CHECK(cudaEventSynchronize(s.comm_ready.get()));
}

void NcclShardTransport::all_reduce_sum(std::span<double> values, const std::string& context) {
  st_->host.all_reduce_sum(values, context);
}

double NcclShardTransport::reduce_seconds() const {
  return st_->nccl->totals(NcclCollective::ReduceSum).seconds;
}

double NcclShardTransport::exposed_seconds() const { return st_->exposed_s; }

double NcclShardTransport::host_wait_seconds() const { return st_->host_wait_s; }

std::string NcclShardTransport::timing_summary() const {
  const State& s = *st_;
  std::string text = "NCCL " + s.nccl->timing_summary();
  if (s.nccl->totals(NcclCollective::ReduceSum).calls > 0) {
    const double reduce = reduce_seconds();
    const double hidden = reduce > 0.0 ? std::clamp(1.0 - s.exposed_s / reduce, 0.0, 1.0) : 1.0;
    text += fmt::format(
        "; reduces exposed {:.3f} ms of {:.3f} ms ({:.0f}% hidden behind "
        "compute); host waited {:.3f} ms in finish_reduces",
        s.exposed_s * 1e3, reduce * 1e3, hidden * 100.0, s.host_wait_s * 1e3);
  }
  return text;
}

std::unique_ptr<ShardTransport> make_nccl_shard_transport(Backend& backend, Communicator& host,
                                                          const ShardLayout& layout,
                                                          const ShardTransportOptions& options) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  LL_CHECK(cuda != nullptr,
           "the NCCL shard transport needs the CUDA backend's device memory, got the {} backend",
           backend.name());
  return std::make_unique<NcclShardTransport>(*cuda, host, layout, options);
}

}  // namespace ll::dist
