#include "model/saved_block_inputs.h"

#include <cstdio>

#include "common/error.h"

namespace ll {

SavedBlockInputs::SavedBlockInputs(Backend& backend, int64_t layers, int64_t host_layers, int64_t n,
                                   int64_t d, const std::vector<OwnedTensor>& host)
    : backend_(backend), layers_(layers), host_layers_(host_layers), n_(n), d_(d), host_(host) {
  LL_CHECK(host_layers >= 0 && host_layers < layers,
           "activation offload: {} offloaded layers of {} (at most {}: the last layer's input "
           "stays on the device)",
           host_layers, layers, layers - 1);
  LL_CHECK(int64_t(host.size()) >= host_layers,
           "activation offload: {} host buffers for {} offloaded layers", host.size(), host_layers);
  device_.resize(size_t(layers));
  if (host_layers > 0) {
    for (OwnedTensor& s : staging_) s = backend_.allocate({n, d}, backend_.activation_dtype());
  }
}

SavedBlockInputs::~SavedBlockInputs() {
  // Destructors must not throw: a failure here is reported, the step's own error (if any) is
  // the one that propagates.
  for (std::optional<CopyTicket>& t : pending_) {
    if (!t) continue;
    try {
      backend_.wait_copy(*t);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "activation offload: waiting for a copy failed: %s\n", e.what());
    }
    t.reset();
  }
}

bool SavedBlockInputs::staged(int64_t l) const {
  if (host_layers_ == 0) return false;
  // The final hidden state takes the free staging buffer when every layer input is staged.
  return l <= host_layers_ || (l == layers_ && host_layers_ == layers_ - 1);
}

Tensor SavedBlockInputs::host_view(int64_t l) const {
  return reshaped(*host_[size_t(l)], {n_, d_});
}

void SavedBlockInputs::claim_staging(int b) {
  if (!pending_[b]) return;
  backend_.wait_copy(*pending_[b]);
  pending_[b].reset();
}

Tensor SavedBlockInputs::first_input() {
  if (staged(0)) {
    claim_staging(0);
    return *staging_[0];
  }
  device_[0] = backend_.allocate({n_, d_}, backend_.activation_dtype());
  return *device_[0];
}

Tensor SavedBlockInputs::begin_forward_layer(int64_t l) {
  LL_CHECK(l >= 0 && l < layers_, "activation offload: no layer {}", l);
  if (l < host_layers_) {
    const int b = int(l % 2);
    pending_[b] = backend_.copy_async(host_view(l), *staging_[b]);
  }
  const int64_t next = l + 1;
  if (staged(next)) {
    // The other staging buffer: its last copy (layer l-1's input to host) must be done.
    const int b = int(next % 2);
    claim_staging(b);
    return *staging_[b];
  }
  OwnedTensor out = backend_.allocate({n_, d_}, backend_.activation_dtype());
  if (next < layers_) {
    device_[size_t(next)] = out;
  } else {
    final_ = out;
  }
  return *out;
}

void SavedBlockInputs::release_final() { final_ = {}; }

void SavedBlockInputs::start_fetch(int64_t l) {
  const int b = int(l % 2);
  claim_staging(b);
  pending_[b] = backend_.copy_async(*staging_[b], host_view(l));
}

Tensor SavedBlockInputs::begin_backward_layer(int64_t l) {
  LL_CHECK(l >= 0 && l < layers_, "activation offload: no layer {}", l);
  // Layer host_layers's input never left its staging buffer; the ones below it were fetched
  // one layer ahead.
  if (staged(l)) claim_staging(int(l % 2));
  if (l >= 1 && l - 1 < host_layers_) start_fetch(l - 1);
  if (staged(l)) return *staging_[l % 2];
  LL_CHECK(device_[size_t(l)].view.data != nullptr,
           "activation offload: layer {}'s input was not saved", l);
  return *device_[size_t(l)];
}

void SavedBlockInputs::end_backward_layer(int64_t l) {
  if (!staged(l)) device_[size_t(l)] = {};
}

}  // namespace ll
