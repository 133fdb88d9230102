#include "engine/parallel/shard_transport.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"
#include "engine/parallel/host_shard_transport.h"
#if defined(LL_HAVE_NCCL)
#include "engine/parallel/cuda/nccl_shard_transport.h"
#endif

namespace ll::dist {

FlatRange owned_part(const ShardLayout& layout, int rank, int64_t begin, int64_t end) {
  const FlatRange shard = layout.shard_range(rank);
  const int64_t b = std::max(begin, shard.begin), e = std::min(end, shard.end);
  return b < e ? FlatRange{b, e} : FlatRange{b, b};
}

namespace {

std::string describe(const char* call, const std::string& context) {
  return context.empty() ? std::string(call) : fmt::format("{} ({})", call, context);
}

}  // namespace

void check_transport_vector(const Tensor& t, int64_t size, const char* what, int rank,
                            const char* call, const std::string& context) {
  LL_CHECK(t.dtype == DType::F32, "rank {}: {}: the {} must be F32, got {}", rank,
           describe(call, context), what, dtype_name(t.dtype));
  LL_CHECK(t.shape.size() == 1 && t.shape[0] == size,
           "rank {}: {}: the {} must have shape [{}], got [{}]", rank, describe(call, context),
           what, size, fmt::join(t.shape, ", "));
  LL_CHECK(size == 0 || t.data != nullptr, "rank {}: {}: the {} has no data", rank,
           describe(call, context), what);
}

void check_transport_range(int64_t begin, int64_t end, int64_t total, int rank, const char* call,
                           const std::string& context) {
  LL_CHECK(begin >= 0 && begin <= end && end <= total,
           "rank {}: {}: the range [{}, {}) is not inside the flat gradient [0, {})", rank,
           describe(call, context), begin, end, total);
}

std::unique_ptr<ShardTransport> make_shard_transport(Backend& backend, Communicator& host,
                                                     const ShardLayout& layout,
                                                     const ShardTransportOptions& options) {
  LL_CHECK(layout.world_size() == host.world_size(),
           "sharded optimizer: the layout has {} shards but the world {} ranks",
           layout.world_size(), host.world_size());
  if (backend.kind() == BackendKind::Cpu)
    return std::make_unique<HostShardTransport>(backend, host, layout);
#if defined(LL_HAVE_NCCL)
  if (backend.kind() == BackendKind::Cuda)
    return make_nccl_shard_transport(backend, host, layout, options);
#else
  (void)options;
#endif
  fail(
      "sharded optimizer: the {} backend keeps its tensors in device memory and this build has "
      "no NCCL to move them between ranks (install NCCL >= 2.14 with the CUDA toolkit and "
      "rebuild), or use --device cpu",
      backend.name());
}

}  // namespace ll::dist
