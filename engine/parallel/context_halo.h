#pragma once
// A context-parallel part's keys and values from the other parts, and their gradients back
// (engine/parallel/context_exchange.h's plan, over a Communicator's point-to-point exchange):
// the attention of part p reads a key buffer that starts at the earliest key any of its
// transfers brings and ends with its own keys; after the attention backward the gradients of
// the received rows go back to their owners, who add them to their own rows in part order.
// Host fp32 memory: the CPU backend's tensors (the GPU path will exchange over NCCL).
#include <cstdint>
#include <span>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/parallel/context_exchange.h"

namespace ll::dist {

class ContextHalo {
 public:
  // This process is part `part` of `exchange`, whose part q is rank first_rank + q of `comm`.
  ContextHalo(Communicator& comm, const ContextExchange& exchange, int part, int first_rank,
              int64_t kv_heads, int64_t head_dim);

  int64_t key_begin() const { return key_begin_; }  // window position of key buffer row 0
  int64_t key_rows() const { return part_.end - key_begin_; }

  // k, v: [part tokens, Hkv, hd] -> kbuf, vbuf: [key_rows(), Hkv, hd]: the part's own rows and
  // the received ones; rows (and kv heads) no transfer brings are zero (the mask never reads
  // them).
  void gather(std::span<const float> k, std::span<const float> v, std::span<float> kbuf,
              std::span<float> vbuf, const std::string& context);

  // dkbuf, dvbuf: [key_rows(), Hkv, hd] from the attention backward -> dk, dv: [part tokens, Hkv,
  // hd]: the own rows' gradients plus those the later parts computed for them, added in part
  // order (deterministic).
  void return_gradients(std::span<const float> dkbuf, std::span<const float> dvbuf,
                        std::span<float> dk, std::span<float> dv, const std::string& context);

  // Values this rank sent and received so far (K and V, or their gradients), for the bytes
  // check against the plan.
  int64_t values_sent() const { return values_sent_; }
  int64_t values_received() const { return values_received_; }

 private:
  int64_t row_values(const KeyTransfer& t) const { return t.tokens() * t.kv_heads() * head_dim_; }
  // Copies transfer t's K (then V) rows between a [rows, Hkv, hd] tensor whose row 0 is window
  // position `origin` and a packed [2, tokens, kv heads, hd] message.
  void pack(const KeyTransfer& t, std::span<const float> k, std::span<const float> v,
            int64_t origin, std::span<float> message) const;
  void unpack(const KeyTransfer& t, std::span<const float> message, std::span<float> k,
              std::span<float> v, int64_t origin, bool add) const;
  // One exchange of every transfer this part takes part in: K/V (or, with `gradients`, their
  // gradients, the other way) packed from [rows, Hkv, hd] tensors at window position `origin`
  // and unpacked into those at `origin_out` (gradients added to what is there).
  void exchange_transfers(bool gradients, std::span<const float> k, std::span<const float> v,
                          int64_t origin, std::span<float> k_out, std::span<float> v_out,
                          int64_t origin_out, const std::string& context);

  Communicator& comm_;
  const ContextExchange& exchange_;
  int part_index_;
  int first_rank_;
  ContextPart part_;
  int64_t kv_heads_, head_dim_;
  int64_t key_begin_;
  int64_t values_sent_ = 0, values_received_ = 0;
};

}  // namespace ll::dist
