#include "engine/parallel/context_attention.h"

#include <fmt/format.h>

#include "common/error.h"
#include "kernels/backend.h"

namespace ll::dist {

namespace {

std::span<float> host_values(Backend& backend, const Tensor& t, const char* what) {
  LL_CHECK(backend.kind() == BackendKind::Cpu,
           "context parallelism runs on the CPU backend so far ({} on {})", what, backend.name());
  return {t.f32(), size_t(t.numel())};
}

}  // namespace

HostKeyValueExchange::HostKeyValueExchange(Communicator& comm, ContextExchange exchange, int part,
                                           int first_rank, int64_t kv_heads, int64_t head_dim)
    : exchange_(std::move(exchange)), part_(part) {
  halo_ = std::make_unique<ContextHalo>(comm, exchange_, part, first_rank, kv_heads, head_dim);
}

void HostKeyValueExchange::gather(Backend& backend, const Tensor& k, const Tensor& v,
                                  const Tensor& kbuf, const Tensor& vbuf) {
  halo_->gather(host_values(backend, k, "keys"), host_values(backend, v, "values"),
                host_values(backend, kbuf, "key buffer"),
                host_values(backend, vbuf, "value buffer"),
                fmt::format("context halo {}", ++calls_));
}

void HostKeyValueExchange::return_gradients(Backend& backend, const Tensor& dkbuf,
                                            const Tensor& dvbuf, const Tensor& dk,
                                            const Tensor& dv) {
  halo_->return_gradients(
      host_values(backend, dkbuf, "key gradients"), host_values(backend, dvbuf, "value gradients"),
      host_values(backend, dk, "key gradients"), host_values(backend, dv, "value gradients"),
      fmt::format("context halo gradients {}", ++calls_));
}

}  // namespace ll::dist
