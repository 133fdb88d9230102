#include "engine/parallel/host_shard_transport.h"

#include "common/error.h"

namespace ll::dist {

namespace {

std::span<float> host_span(const Tensor& t, int64_t offset, int64_t count) {
  return {t.f32() + offset, size_t(count)};
}

}  // namespace

HostShardTransport::HostShardTransport(Backend& backend, Communicator& host,
                                       const ShardLayout& layout)
    : host_(host), layout_(layout), shard_sizes_(layout.shard_sizes()) {
  LL_CHECK(backend.kind() == BackendKind::Cpu,
           "the host shard transport moves host memory, but the {} backend keeps its tensors "
           "on the device",
           backend.name());
}

std::string HostShardTransport::name() const { return host_.backend_name() + " (host memory)"; }

void HostShardTransport::start_reduce(const Tensor& flat_grad, int64_t begin, int64_t end,
                                      const Tensor& grad_shard, const std::string& context) {
  const int rank = host_.rank();
  check_transport_vector(flat_grad, layout_.total_size(), "flat gradient", rank, "start_reduce",
                         context);
  check_transport_vector(grad_shard, layout_.shard_size(rank), "gradient shard", rank,
                         "start_reduce", context);
  check_transport_range(begin, end, layout_.total_size(), rank, "start_reduce", context);
  const int64_t shard_begin = layout_.shard_range(rank).begin;
  for (int root = 0; root < layout_.world_size(); ++root) {
    const FlatRange part = owned_part(layout_, root, begin, end);
    if (part.size() == 0) continue;
    const std::span<float> recv = root == rank
                                      ? host_span(grad_shard, part.begin - shard_begin, part.size())
                                      : std::span<float>{};
    host_.reduce_sum(host_span(flat_grad, part.begin, part.size()), recv, root, context);
  }
}

void HostShardTransport::all_gather(const Tensor& shard, const Tensor& flat,
                                    const std::string& context) {
  const int rank = host_.rank();
  check_transport_vector(shard, layout_.shard_size(rank), "shard", rank, "all_gather", context);
  check_transport_vector(flat, layout_.total_size(), "flat buffer", rank, "all_gather", context);
  host_.all_gather(host_span(shard, 0, shard.numel()), host_span(flat, 0, flat.numel()),
                   shard_sizes_, context);
}

void HostShardTransport::all_reduce_sum(std::span<double> values, const std::string& context) {
  host_.all_reduce_sum(values, context);
}

}  // namespace ll::dist
