#include "dist/shard_transport.h"

#include <algorithm>

#include "common/error.h"
#include "dist/host_shard_transport.h"
#if defined(LL_HAVE_NCCL)
#include "dist/cuda/nccl_shard_transport.h"
#endif

namespace ll::dist {

FlatRange owned_part(const ShardLayout& layout, int rank, int64_t begin, int64_t end) {
  const FlatRange shard = layout.shard_range(rank);
  const int64_t b = std::max(begin, shard.begin), e = std::min(end, shard.end);
  return b < e ? FlatRange{b, e} : FlatRange{b, b};
}

void check_transport_buffers(const ShardLayout& layout, int rank, const Tensor& flat,
                             const Tensor& shard, const char* what) {
  LL_CHECK(flat.dtype == DType::F32 && shard.dtype == DType::F32,
           "{}: the flat buffer is {} and the shard {}, both must be F32", what,
           dtype_name(flat.dtype), dtype_name(shard.dtype));
  LL_CHECK(flat.numel() == layout.total_size(),
           "{}: the flat buffer holds {} elements, the layout {}", what, flat.numel(),
           layout.total_size());
  LL_CHECK(shard.numel() == layout.shard_size(rank),
           "{}: rank {}'s shard buffer holds {} elements, its shard {}", what, rank, shard.numel(),
           layout.shard_size(rank));
}

void check_transport_range(const ShardLayout& layout, int64_t begin, int64_t end,
                           const char* what) {
  LL_CHECK(0 <= begin && begin <= end && end <= layout.total_size(),
           "{}: the range [{}, {}) is outside the {} trainable elements", what, begin, end,
           layout.total_size());
}

std::unique_ptr<ShardTransport> make_shard_transport(Backend& backend, Communicator& host,
                                                     const ShardLayout& layout,
                                                     const ShardTransportOptions& options) {
  LL_CHECK(layout.world_size() == host.world_size(),
           "sharded optimizer: the layout has {} shards but the world {} ranks",
           layout.world_size(), host.world_size());
  if (backend.name() == "cpu") return std::make_unique<HostShardTransport>(backend, host, layout);
#if defined(LL_HAVE_NCCL)
  if (backend.name() == "cuda") return make_nccl_shard_transport(backend, host, layout, options);
#else
  (void)options;
#endif
  fail("sharded optimizer: the {} backend keeps its tensors in device memory and this build has "
       "no NCCL to move them between ranks (install NCCL >= 2.14 with the CUDA toolkit and "
       "rebuild), or use --device cpu",
       backend.name());
}

}  // namespace ll::dist
