#pragma once
// The block inputs a training step saves for its backward (layer-wise recomputation: each
// block's input [N, D] and nothing else). With m = host_layers offloaded, layers [0, m) send
// their inputs to host memory while the next blocks compute and get them back one layer ahead
// of the backward that needs them (activation offload); layers (m, L) keep theirs in device
// memory.
//
// Layers [0, m] pass their inputs through two device staging buffers used in turn (layer l's
// is staging[l % 2]). Layer m's input is the last one written there and the first of them the
// backward needs: it stays in its staging buffer and is never copied. So m host layers save
// m - 1 device buffers of [N, D] (m = 1 saves none), and m = L - 1 leaves two.
//
// Copies run beside the compute (Backend::copy_async) and are ordered by their tickets only: a
// staging buffer is written only after the copy that last read or wrote it was waited for, and
// a fetched input is read only after its fetch was waited for. The compute never waits for the
// host.
#include <cstdint>
#include <optional>
#include <vector>

#include "kernels/backend.h"

namespace ll {

class SavedBlockInputs {
 public:
  // host_layers in [0, L). `host` holds at least host_layers tensors of at least n * d elements in
  // the backend's activation dtype (from allocate_host; reused across steps, so pinning happens
  // once).
  SavedBlockInputs(Backend& backend, int64_t layers, int64_t host_layers, int64_t n, int64_t d,
                   const std::vector<OwnedTensor>& host);
  ~SavedBlockInputs();  // waits for every copy still in flight
  SavedBlockInputs(const SavedBlockInputs&) = delete;
  SavedBlockInputs& operator=(const SavedBlockInputs&) = delete;

  // Forward. Layer 0's input, to be written by the embedding.
  Tensor first_input();
  // Layer l's input is complete (in first_input() or layer l-1's output): starts its copy to
  // host when the layer is offloaded, and returns the buffer layer l writes its output into
  // (layer l+1's input; after the last layer the final hidden state, valid until
  // release_final()).
  Tensor begin_forward_layer(int64_t l);
  // The final hidden state is no longer needed (its buffer may be a staging buffer).
  void release_final();

  // Backward, last layer first. Layer l's input, ready to read until end_backward_layer(l);
  // starts fetching layer l-1's input when that one is in host memory.
  Tensor begin_backward_layer(int64_t l);
  void end_backward_layer(int64_t l);  // frees layer l's device input

 private:
  Tensor host_view(int64_t l) const;
  // Waits for the copy that last used staging buffer b, before b is written again.
  void claim_staging(int b);
  void start_fetch(int64_t l);

  Backend& backend_;
  int64_t layers_, host_layers_, n_, d_;
  const std::vector<OwnedTensor>& host_;
  // Whether layer l's input (l == L: the final hidden state) lives in a staging buffer.
  bool staged(int64_t l) const;

  OwnedTensor staging_[2];                // [N, D] each, when host_layers > 0
  std::optional<CopyTicket> pending_[2];  // the copy last started on each staging buffer
  std::vector<OwnedTensor> device_;       // [L] layer inputs kept on the device
  OwnedTensor final_;                     // [N, D] final hidden state when not staged
};

}  // namespace ll
