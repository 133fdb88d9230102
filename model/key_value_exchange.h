#pragma once
// Context parallelism as the model sees it: this process computes one contiguous part of a
// window whose other parts live on other ranks. Its attention needs some keys and values of
// those parts (the exchange plan, engine/parallel/context_exchange.h), and their gradients go
// back after the backward. The model calls these at the attention of every block; the engine
// implements them over its communicator (engine/parallel/context_attention.h).
#include <cstdint>

#include "common/tensor.h"

namespace ll {

class Backend;

class KeyValueExchange {
 public:
  virtual ~KeyValueExchange() = default;
  virtual int64_t window_tokens() const = 0;  // N of the whole window
  virtual int64_t part_begin() const = 0;     // window position of this part's first token
  virtual int64_t part_tokens() const = 0;
  virtual int64_t key_begin() const = 0;  // window position of the key buffer's first row
  int64_t key_rows() const { return part_begin() + part_tokens() - key_begin(); }
  // k, v: [part tokens, Hkv*hd] after RoPE -> kbuf, vbuf: [key_rows(), Hkv*hd], this part's rows
  // and the received ones (rows no transfer brings are zero; the mask never reads them).
  virtual void gather(Backend& backend, const Tensor& k, const Tensor& v, const Tensor& kbuf,
                      const Tensor& vbuf) = 0;
  // dkbuf, dvbuf: [key_rows(), Hkv*hd] from the attention backward -> dk, dv: [part tokens,
  // Hkv*hd]: this part's keys' gradients, with those the other parts computed added.
  virtual void return_gradients(Backend& backend, const Tensor& dkbuf, const Tensor& dvbuf,
                                const Tensor& dk, const Tensor& dv) = 0;
};

}  // namespace ll
