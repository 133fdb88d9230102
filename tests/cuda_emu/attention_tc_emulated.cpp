// The tensor-core attention kernels compiled as host code (cuda_prelude.h first) and run by the
// SIMT emulator through the kernels' own launch sequences.
#include "tests/cuda_emu/cuda_prelude.h"
// The prelude must come before every kernel header.
#include <cstring>

#include "common/error.h"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_tc_backward_kernels.cuh"
#include "kernels/cuda/attention_tc_backward_sm90_kernels.cuh"
#include "kernels/cuda/attention_tc_forward_kernels.cuh"
#include "kernels/cuda/attention_tc_forward_sm90_kernels.cuh"
#include "tests/cuda_emu/attention_tc_emulated.h"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"

namespace ll::cuda::emu {
namespace {

using bf16 = __nv_bfloat16;

struct GlobalsScope {
  GlobalsScope() { clear_globals(); }
  ~GlobalsScope() { clear_globals(); }
};

void check_sizes(const char* op, const Bf16Bits& x, size_t expect, const char* name) {
  LL_CHECK(x.size() == expect, "{}: {} has {} elements, the shape needs {}", op, name, x.size(),
           expect);
}

}  // namespace

namespace {

ForwardResult forward(bool hopper, const Bf16Bits& q, const Bf16Bits& k, const Bf16Bits& v,
                      int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                      const AttentionPattern& mask, bool with_lse) {
  const char* op = hopper ? "emulated attention_forward_sm90" : "emulated attention_forward_tc";
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, op,
                       head_dim == 64 || head_dim == 128, "64 or 128", tc::fwd::kMaxTokens);
  LL_CHECK(!hopper || mask.mode != AttnMode::S2Roll, "{}: S2Roll masks go to the mma.sync kernel",
           op);
  const size_t nq = size_t(n * n_heads * head_dim), nkv = size_t(n * n_kv_heads * head_dim);
  check_sizes(op, q, nq, "q");
  check_sizes(op, k, nkv, "k");
  check_sizes(op, v, nkv, "v");
  ForwardResult r;
  if (n == 0) return r;
  GlobalsScope scope;
  // The kernels' copies read q, k, v: registered, so a read outside them fails.
  HostBuffer bq(q), bk(k), bv(v), bout(nq * 2, true), blse(size_t(n * n_heads) * 4, true);
  bq.as_global();
  bk.as_global();
  bv.as_global();
  float* lse = with_lse ? blse.as<float>() : nullptr;
  if (hopper) {
    const bool ok = tc::sm90::run_forward_sm90(
        EmuLauncher{&r.launches}, tensor_map_encode_tiled, bout.as<bf16>(), lse, bq.as<bf16>(),
        bk.as<bf16>(), bv.as<bf16>(), int(n), int(n_heads), int(n_kv_heads), int(head_dim), mask);
    LL_CHECK(ok, "{}: the tensor-map encoder rejected a map", op);
  } else {
    tc::run_forward_tc(EmuLauncher{&r.launches}, bout.as<bf16>(), lse, bq.as<bf16>(), bk.as<bf16>(),
                       bv.as<bf16>(), int(n), int(n_heads), int(n_kv_heads), int(head_dim), mask);
  }
  r.out = bout.read<uint16_t>(nq);
  if (with_lse) r.lse = blse.read<float>(size_t(n * n_heads));
  return r;
}

}  // namespace

ForwardResult attention_forward_tc_emulated(const Bf16Bits& q, const Bf16Bits& k, const Bf16Bits& v,
                                            int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                            int64_t head_dim, const AttentionPattern& mask,
                                            bool with_lse) {
  return forward(false, q, k, v, n, n_heads, n_kv_heads, head_dim, mask, with_lse);
}

ForwardResult attention_forward_sm90_emulated(const Bf16Bits& q, const Bf16Bits& k,
                                              const Bf16Bits& v, int64_t n, int64_t n_heads,
                                              int64_t n_kv_heads, int64_t head_dim,
                                              const AttentionPattern& mask, bool with_lse) {
  return forward(true, q, k, v, n, n_heads, n_kv_heads, head_dim, mask, with_lse);
}

namespace {

BackwardResult backward(bool hopper, bool atomic_dq, const Bf16Bits& dout, const Bf16Bits& q,
                        const Bf16Bits& k, const Bf16Bits& v, const Bf16Bits& out,
                        const std::vector<float>& lse, int64_t n, int64_t n_heads,
                        int64_t n_kv_heads, int64_t head_dim, const AttentionPattern& mask) {
  const char* op = hopper ? "emulated attention_backward_sm90" : "emulated attention_backward_tc";
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, op,
                       head_dim == 64 || head_dim == 128, "64 or 128", tc::bwd::kMaxTokens);
  LL_CHECK(!hopper || mask.mode != AttnMode::S2Roll, "{}: S2Roll masks go to the mma.sync kernels",
           op);
  const size_t nq = size_t(n * n_heads * head_dim), nkv = size_t(n * n_kv_heads * head_dim);
  check_sizes(op, dout, nq, "dout");
  check_sizes(op, q, nq, "q");
  check_sizes(op, out, nq, "out");
  check_sizes(op, k, nkv, "k");
  check_sizes(op, v, nkv, "v");
  LL_CHECK(lse.size() == size_t(n * n_heads), "{}: lse has {} elements, the shape needs {}", op,
           lse.size(), n * n_heads);
  BackwardResult r;
  if (n == 0) return r;
  GlobalsScope scope;
  HostBuffer bdout(dout), bq(q), bk(k), bv(v), bout(out), blse(lse);
  for (HostBuffer* b : {&bdout, &bq, &bk, &bv}) b->as_global();  // what the copies read
  HostBuffer bdq(nq * 2, true), bdk(nkv * 2, true), bdv(nkv * 2, true);
  HostBuffer dvec(size_t(n * n_heads) * 4, true);  // the workspace, poisoned
  // The atomic dQ's accumulator (poisoned: the launch sequence must zero it).
  HostBuffer dq_accum(atomic_dq ? nq * 4 : 4, true);
  if (hopper) {
    const bool ok = tc::sm90::run_backward_sm90(
        EmuLauncher{&r.launches}, tensor_map_encode_tiled, bdq.as<bf16>(), bdk.as<bf16>(),
        bdv.as<bf16>(), bdout.as<bf16>(), bq.as<bf16>(), bk.as<bf16>(), bv.as<bf16>(),
        bout.as<bf16>(), blse.as<float>(), dvec.as<float>(),
        atomic_dq ? dq_accum.as<float>() : nullptr, int(n), int(n_heads), int(n_kv_heads),
        int(head_dim), mask);
    LL_CHECK(ok, "{}: the tensor-map encoder rejected a map", op);
  } else {
    tc::run_backward_tc(EmuLauncher{&r.launches}, bdq.as<bf16>(), bdk.as<bf16>(), bdv.as<bf16>(),
                        bdout.as<bf16>(), bq.as<bf16>(), bk.as<bf16>(), bv.as<bf16>(),
                        bout.as<bf16>(), blse.as<float>(), dvec.as<float>(), int(n), int(n_heads),
                        int(n_kv_heads), int(head_dim), mask);
  }
  r.dq = bdq.read<uint16_t>(nq);
  r.dk = bdk.read<uint16_t>(nkv);
  r.dv = bdv.read<uint16_t>(nkv);
  return r;
}

}  // namespace

BackwardResult attention_backward_tc_emulated(const Bf16Bits& dout, const Bf16Bits& q,
                                              const Bf16Bits& k, const Bf16Bits& v,
                                              const Bf16Bits& out, const std::vector<float>& lse,
                                              int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                              int64_t head_dim, const AttentionPattern& mask) {
  return backward(false, false, dout, q, k, v, out, lse, n, n_heads, n_kv_heads, head_dim, mask);
}

BackwardResult attention_backward_sm90_emulated(const Bf16Bits& dout, const Bf16Bits& q,
                                                const Bf16Bits& k, const Bf16Bits& v,
                                                const Bf16Bits& out, const std::vector<float>& lse,
                                                int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                                int64_t head_dim, const AttentionPattern& mask,
                                                bool atomic_dq) {
  return backward(true, atomic_dq, dout, q, k, v, out, lse, n, n_heads, n_kv_heads, head_dim, mask);
}

}  // namespace ll::cuda::emu
