#include "kernels/backend_shapes.h"

#include <vector>

#include <fmt/ranges.h>

namespace ll::shapes {
namespace {

// The dimensions of a tensor that must have `rank` of them.
const std::vector<int64_t>& dims(const Tensor& t, size_t rank, const char* what) {
  LL_CHECK(t.shape.size() == rank, "backend: {} has shape [{}], expected {} dimensions", what,
           fmt::join(t.shape, ", "), rank);
  return t.shape;
}

}  // namespace

void check(const Tensor& t, std::initializer_list<int64_t> expected, const char* what) {
  LL_CHECK(t.shape == std::vector<int64_t>(expected), "backend: {} has shape [{}], expected [{}]",
           what, fmt::join(t.shape, ", "), fmt::join(expected, ", "));
}

MatmulDims matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w) {
  const auto& xs = dims(x, 2, "matmul input");
  const auto& ws = dims(w, 2, "matmul weight");
  const MatmulDims r{xs[0], xs[1], ws[0]};
  check(w, {r.n_out, r.k}, "matmul weight");
  check(out, {r.m, r.n_out}, "matmul output");
  return r;
}

MatmulDims matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w) {
  const auto& ds = dims(dout, 2, "matmul output gradient");
  const auto& ws = dims(w, 2, "matmul weight");
  const MatmulDims r{ds[0], ws[1], ds[1]};
  check(w, {r.n_out, r.k}, "matmul weight");
  check(dx, {r.m, r.k}, "matmul input gradient");
  return r;
}

MatmulDims matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x) {
  const auto& ds = dims(dout, 2, "matmul output gradient");
  const auto& xs = dims(x, 2, "matmul input");
  const MatmulDims r{ds[0], xs[1], ds[1]};
  check(x, {r.m, r.k}, "matmul input");
  check(dw, {r.n_out, r.k}, "matmul weight gradient");
  return r;
}

BiasDims add_bias(const Tensor& out, const Tensor& bias) {
  const auto& os = dims(out, 2, "biased output");
  check(bias, {os[1]}, "bias");
  return {os[0], os[1]};
}

BiasDims bias_backward(const Tensor& dbias, const Tensor& dout) {
  const auto& ds = dims(dout, 2, "biased output gradient");
  check(dbias, {ds[1]}, "bias gradient");
  return {ds[0], ds[1]};
}

RowDims rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                        const Tensor& weight) {
  const auto& xs = dims(x, 2, "rmsnorm input");
  const RowDims r{xs[0], xs[1]};
  check(out, {r.n, r.d}, "rmsnorm output");
  check(weight, {r.d}, "rmsnorm weight");
  if (rstd.data != nullptr) check(rstd, {r.n}, "rmsnorm rstd");
  return r;
}

RowDims rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const auto& xs = dims(x, 2, "rmsnorm input");
  const RowDims r{xs[0], xs[1]};
  check(dx, {r.n, r.d}, "rmsnorm input gradient");
  check(dout, {r.n, r.d}, "rmsnorm output gradient");
  check(weight, {r.d}, "rmsnorm weight");
  check(rstd, {r.n}, "rmsnorm rstd");
  if (dweight.data != nullptr) check(dweight, {r.d}, "rmsnorm weight gradient");
  return r;
}

EmbeddingDims embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  const auto& ts = dims(table, 2, "embedding table");
  const EmbeddingDims r{dims(tokens, 1, "token ids")[0], ts[0], ts[1]};
  check(out, {r.n, r.d}, "embedding output");
  return r;
}

EmbeddingDims embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  const auto& ts = dims(dtable, 2, "embedding gradient");
  const EmbeddingDims r{dims(tokens, 1, "token ids")[0], ts[0], ts[1]};
  check(dout, {r.n, r.d}, "embedding output gradient");
  return r;
}

RopeDims rope(const Tensor& x) {
  const auto& s = dims(x, 3, "rope input");
  return RopeDims{s[0], s[1], s[2]};
}

AttnDims attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                           const Tensor& v, const AttentionPattern& mask) {
  const auto& qs = dims(q, 3, "attention queries");
  const auto& ks = dims(k, 3, "attention keys");
  LL_CHECK(mask.key_offset >= 0 && mask.key_offset <= mask.query_offset,
           "backend: attention keys from window position {} for queries from {}", mask.key_offset,
           mask.query_offset);
  const AttnDims r{qs[0], qs[1], ks[1], qs[2], qs[0] + mask.query_offset - mask.key_offset};
  check(k, {r.nk, r.hkv, r.hd}, "attention keys");
  check(v, {r.nk, r.hkv, r.hd}, "attention values");
  check(out, {r.n, r.h, r.hd}, "attention output");
  if (lse.data != nullptr) check(lse, {r.h, r.n}, "attention log-sum-exp");
  return r;
}

AttnDims attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, int64_t past) {
  const auto& qs = dims(q, 3, "cached attention queries");
  const auto& ks = dims(k, 3, "cached attention keys");
  const AttnDims r{qs[0], qs[1], ks[1], qs[2], past + qs[0]};
  LL_CHECK(past >= 0, "backend: cached attention after {} tokens", past);
  check(k, {past + r.n, r.hkv, r.hd}, "cached attention keys");
  check(v, {past + r.n, r.hkv, r.hd}, "cached attention values");
  check(out, {r.n, r.h, r.hd}, "cached attention output");
  return r;
}

AttnDims attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                            const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& out, const Tensor& lse, const AttentionPattern& mask) {
  LL_CHECK(lse.data != nullptr, "backend: attention backward needs the forward's log-sum-exp");
  const AttnDims r = attention_forward(out, lse, q, k, v, mask);
  check(dout, {r.n, r.h, r.hd}, "attention output gradient");
  check(dq, {r.n, r.h, r.hd}, "attention query gradient");
  check(dk, {r.nk, r.hkv, r.hd}, "attention key gradient");
  check(dv, {r.nk, r.hkv, r.hd}, "attention value gradient");
  return r;
}

ClassifierDims classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                                  const Tensor& targets) {
  const auto& xs = dims(x, 2, "classifier input");
  const ClassifierDims r{xs[0], xs[1], dims(lm_head, 2, "lm_head")[0]};
  check(lm_head, {r.v, r.d}, "lm_head");
  check(targets, {r.n}, "targets");
  check(losses, {r.n}, "losses");
  return r;
}

ClassifierDims classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                           const Tensor& dlm_head, const Tensor& x,
                                           const Tensor& lm_head, const Tensor& targets) {
  const ClassifierDims r = classifier_forward(losses, x, lm_head, targets);
  check(dx, {r.n, r.d}, "classifier input gradient");
  if (dlm_head.data != nullptr) check(dlm_head, {r.v, r.d}, "lm_head gradient");
  return r;
}

void same_shape(std::initializer_list<const Tensor*> ts, const char* op) {
  const Tensor* first = *ts.begin();
  for (const Tensor* t : ts) {
    LL_CHECK(t->shape == first->shape, "backend: {}: operands of shapes [{}] and [{}]", op,
             fmt::join(first->shape, ", "), fmt::join(t->shape, ", "));
  }
}

int64_t adamw(const Tensor& master, const Tensor& param, const Tensor& grad, const Tensor& m,
              const Tensor& v) {
  const int64_t n = master.numel();
  LL_CHECK(param.numel() == n && grad.numel() == n && m.numel() == n && v.numel() == n,
           "backend: adamw: parameter, gradient and moments differ in size");
  return n;
}

}  // namespace ll::shapes
