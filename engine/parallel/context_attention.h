#pragma once
// The model's KeyValueExchange (model/key_value_exchange.h) over a communicator: ContextHalo's
// halo exchange for one part of a window, on the CPU backend (fp32 tensors in host memory; the
// GPU path will exchange over NCCL on a communication stream).
#include <memory>

#include "engine/parallel/context_exchange.h"
#include "engine/parallel/context_halo.h"
#include "model/key_value_exchange.h"

namespace ll::dist {

class HostKeyValueExchange final : public KeyValueExchange {
 public:
  // Part `part` of `exchange` (which it keeps), whose part q is rank first_rank + q of `comm`.
  HostKeyValueExchange(Communicator& comm, ContextExchange exchange, int part, int first_rank,
                       int64_t kv_heads, int64_t head_dim);

  int64_t window_tokens() const override { return exchange_.parts.back().end; }
  int64_t part_begin() const override { return exchange_.parts[size_t(part_)].begin; }
  int64_t part_tokens() const override { return exchange_.parts[size_t(part_)].size(); }
  int64_t key_begin() const override { return halo_->key_begin(); }
  void gather(Backend& backend, const Tensor& k, const Tensor& v, const Tensor& kbuf,
              const Tensor& vbuf) override;
  void return_gradients(Backend& backend, const Tensor& dkbuf, const Tensor& dvbuf,
                        const Tensor& dk, const Tensor& dv) override;

  const ContextHalo& halo() const { return *halo_; }

 private:
  ContextExchange exchange_;
  int part_;
  std::unique_ptr<ContextHalo> halo_;
  int64_t calls_ = 0;  // names each exchange in errors (a hung rank is reported with it)
};

}  // namespace ll::dist
