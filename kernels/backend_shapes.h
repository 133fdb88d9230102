#pragma once
// Shape checks shared by every Backend implementation: each function checks the tensors one
// op relies on (ll::Error naming the operand and both shapes) and returns the dimensions the
// kernels are called with, so that the CPU and CUDA backends validate identically.
#include <cstdint>
#include <initializer_list>

#include "common/tensor.h"
#include "kernels/attention_pattern.h"

namespace ll::shapes {

// Throws unless t.shape == expected; `what` names the operand in the message.
void check(const Tensor& t, std::initializer_list<int64_t> expected, const char* what);

struct MatmulDims {
  int64_t m = 0;      // rows of the activations
  int64_t k = 0;      // input features
  int64_t n_out = 0;  // output features
};
// out [M, Nout], x [M, K], w [Nout, K]
MatmulDims matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w);
// dx [M, K], dout [M, Nout], w [Nout, K]
MatmulDims matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w);
// dw [Nout, K], dout [M, Nout], x [M, K]
MatmulDims matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x);

struct BiasDims {
  int64_t m = 0;  // rows
  int64_t c = 0;  // columns (output features)
};
// out [M, C], bias [C]
BiasDims add_bias(const Tensor& out, const Tensor& bias);
// dbias [C], dout [M, C]
BiasDims bias_backward(const Tensor& dbias, const Tensor& dout);

struct RowDims {
  int64_t n = 0;  // rows (tokens)
  int64_t d = 0;  // features
};
// out [N, D], x [N, D], weight [D], rstd [N] unless its data is null
RowDims rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight);
// dx, dout, x [N, D], weight [D], rstd [N], dweight [D] unless its data is null
RowDims rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& rstd);

struct EmbeddingDims {
  int64_t n = 0;  // tokens
  int64_t v = 0;  // vocabulary
  int64_t d = 0;  // features
};
// out [N, D], table [V, D], tokens [N]
EmbeddingDims embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens);
// dtable [V, D], dout [N, D], tokens [N]
EmbeddingDims embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens);

struct RopeDims {
  int64_t n = 0, heads = 0, hd = 0;
};
// x [N, heads, hd]
RopeDims rope(const Tensor& x);

struct AttnDims {
  int64_t n = 0;    // tokens (queries)
  int64_t h = 0;    // query heads
  int64_t hkv = 0;  // key/value heads
  int64_t hd = 0;   // head dim
  int64_t nk = 0;   // keys: n plus the keys before the queries (mask.query_offset - key_offset)
};
// out, q [N, H, hd], k, v [Nk, Hkv, hd], lse [H, N] unless its data is null; Nk = N +
// mask.query_offset - mask.key_offset (N for a whole window).
AttnDims attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                           const Tensor& v, const AttentionPattern& mask);
// cached attention: out, q [n, H, hd], k, v [past + n, Hkv, hd]; returns n as AttnDims::n
AttnDims attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, int64_t past);
// the forward's operands plus dout, dq [N, H, hd], dk, dv [Nk, Hkv, hd]; lse required
AttnDims attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                            const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& out, const Tensor& lse, const AttentionPattern& mask);

struct ClassifierDims {
  int64_t n = 0;  // tokens
  int64_t d = 0;  // hidden size
  int64_t v = 0;  // vocabulary
};
// losses [N], x [N, D], lm_head [V, D], targets [N]
ClassifierDims classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                                  const Tensor& targets);
// plus dx [N, D] and dlm_head [V, D] unless its data is null
ClassifierDims classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                           const Tensor& dlm_head, const Tensor& x,
                                           const Tensor& lm_head, const Tensor& targets);

// Elementwise ops: equal shapes (swiglu: all operands; add/copy: both).
void same_shape(std::initializer_list<const Tensor*> ts, const char* op);

// AdamW: master, param, grad, m, v all hold the same number of elements.
int64_t adamw(const Tensor& master, const Tensor& param, const Tensor& grad, const Tensor& m,
              const Tensor& v);

}  // namespace ll::shapes
