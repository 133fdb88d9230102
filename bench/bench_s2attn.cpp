// bench_s2attn: speed of the CUDA attention kernels, S2-Attn against dense causal attention,
// forward and backward, on Llama-shaped heads (bf16 q,k,v,out [N, H, hd], fp32 lse [H, N]).
//
// Timing (DESIGN.md 6): CUDA events around the launches only; before every timed launch the L2
// cache is flushed by a cudaMemsetAsync of a buffer twice the L2 size, outside the timed region;
// warm-up runs first, then the median over --iters runs (fewer for slow shapes: --budget-s
// caps the seconds one (N, mode) measurement may take, default 30). Backward is
// attention_backward alone, given the forward's out and lse (its D = rowsum(dout * out) pass
// included, the workspace preallocated). "fwd+bwd" is, per iteration, the forward time plus
// the backward time.
// --batch B: B independent sequences, laid out one after another; the launchers take one
// sequence, so each timed region launches the kernel(s) B times in a row on one stream.
//
// FLOPs (FlashAttention convention, DESIGN.md 6): forward = 4 * hd * (visible query-key pairs,
// summed over heads) per sequence; backward = 2.5 x forward; fwd+bwd = 3.5 x forward. Visible
// pairs come from the mask semantics of kernels/attention_pattern.h: N(N+1)/2 per head for dense
// causal; for S2 the sum over segments of g(g+1)/2 (unshifted heads [kG, kG+G), shifted heads
// [0, G/2) then [G/2 + kG, ...), the last segment ragged); for s2-roll all heads have segments
// [kG, kG+G) in rolled order (ragged last). --self-check checks this count against brute force.
//
// Implementations: --impl simt is the CUDA-core kernel (kernels/cuda/attention.cuh); --impl tc
// the tensor-core forward and backward (kernels/cuda/attention_tc.cuh: the Hopper wgmma kernels
// on an sm_90 device for s2 and dense masks, mma.sync otherwise); --impl tc-atomic the same
// with the atomic-dQ backward where the Hopper kernels run (dQ summed with fp32 atomics, not
// bitwise reproducible); --impl tc-sm80 the mma.sync kernels everywhere. --attention-kernel
// names the same kernels as the training tools do (simt, tc-sm80, tc-sm90 = tc checked to run
// the Hopper kernels here, tc-sm90-atomic-dq = tc-atomic likewise). Each implementation
// is an AttnImpl below (a forward / backward launcher pair with the same signatures, plus the
// backward workspace size).
//
// Example: ./bench_s2attn --n 8192,32768 --dir fwd --json s2attn.json --markdown
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/tool_main.h"
#include "kernels/attention_pattern.h"

#if defined(LL_HAVE_CUDA)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/attention_kernel.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"
#endif

namespace {

// ---- FLOP accounting (host only, no GPU needed) ---------------------------------------------

int64_t tri(int64_t n) { return n * (n + 1) / 2; }

// Causal pairs of n tokens cut into segments [0, g), [g, 2g), ... (the last one ragged).
int64_t segmented_pairs(int64_t n, int64_t g) {
  if (n <= 0) return 0;
  return (n / g) * tri(g) + tri(n % g);
}

// Visible (query, key) pairs of one head: what the kernel must compute.
int64_t head_pairs(const ll::AttentionPattern& m, int64_t head) {
  const int64_t n = m.seq_len, g = m.group_size;
  switch (m.mode) {
    case ll::AttnMode::Dense:
      return tri(n);
    case ll::AttnMode::S2: {
      const int64_t shift = ll::attn_head_shift(m, head);
      if (shift == 0) return segmented_pairs(n, g);
      if (n <= shift) return tri(n);
      return tri(shift) + segmented_pairs(n - shift, g);
    }
    case ll::AttnMode::S2Roll:  // rolled order: segments [kG, kG+G) for every head
      return segmented_pairs(n, g);
  }
  return 0;
}

// Visible pairs summed over all heads of one sequence.
int64_t visible_pairs(const ll::AttentionPattern& m) {
  int64_t total = 0;
  if (m.mode == ll::AttnMode::Dense) return m.n_heads * tri(m.seq_len);
  // Heads [0, H/2) unshifted, [H/2, H) shifted: two classes, count one head of each.
  const int64_t unshifted = m.n_heads / 2;
  if (unshifted > 0) total += unshifted * head_pairs(m, 0);
  if (m.n_heads - unshifted > 0) total += (m.n_heads - unshifted) * head_pairs(m, m.n_heads - 1);
  return total;
}

double forward_flops(const ll::AttentionPattern& m, int64_t head_dim, int64_t batch) {
  return 4.0 * double(visible_pairs(m)) * double(head_dim) * double(batch);
}

// Brute force 1: the mask's own key ranges, summed query by query, head by head.
int64_t pairs_from_key_ranges(const ll::AttentionPattern& m) {
  int64_t total = 0;
  for (int64_t h = 0; h < m.n_heads; ++h)
    for (int64_t i = 0; i < m.seq_len; ++i) {
      const ll::KeyRange r = ll::attn_key_range(m, h, i);
      total += r.last - r.first + 1;
    }
  return total;
}

// Brute force 2: every (i, j) pair tested against the definitions in DESIGN.md 3, written
// independently of attention_mask.h.
int64_t pairs_from_definition(ll::AttnMode mode, int64_t n, int64_t g, int64_t heads) {
  int64_t total = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const bool shifted = mode != ll::AttnMode::Dense && h >= heads / 2;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        bool visible = false;
        if (!shifted) {  // dense, or the unshifted half
          visible = j <= i && (mode == ll::AttnMode::Dense || i / g == j / g);
        } else if (mode == ll::AttnMode::S2) {
          visible = j <= i && (i + g / 2) / g == (j + g / 2) / g;
        } else {  // S2Roll, shifted half: roll by -G/2 with wrap, group, causal in rolled order
          const int64_t ri = ((i - g / 2) % n + n) % n, rj = ((j - g / 2) % n + n) % n;
          visible = rj <= ri && ri / g == rj / g;
        }
        total += visible ? 1 : 0;
      }
  }
  return total;
}

int self_check() {
  int failures = 0, checks = 0;
  const std::vector<int64_t> ns = {1, 2, 3, 5, 7, 8, 12, 16, 17, 30, 31, 64, 100, 129, 250, 257};
  const std::vector<int64_t> gs = {2, 4, 6, 8, 10, 16, 26, 64, 100};
  const std::vector<int64_t> hs = {1, 2, 3, 4, 6};
  const ll::AttnMode modes[] = {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll};
  for (const ll::AttnMode mode : modes)
    for (const int64_t n : ns)
      for (const int64_t g : gs)
        for (const int64_t h : hs) {
          if (mode == ll::AttnMode::Dense && g != 2) continue;  // G unused
          const ll::AttentionPattern m{mode, n, g, h};
          const int64_t fast = visible_pairs(m);
          const int64_t ranges = pairs_from_key_ranges(m);
          const int64_t defn = pairs_from_definition(mode, n, g, h);
          ++checks;
          if (fast != ranges || fast != defn) {
            ++failures;
            fmt::print(
                "FAIL mode {} N {} G {} H {}: closed form {}, key ranges {}, definition {}\n",
                int(mode), n, g, h, fast, ranges, defn);
          }
        }
  // The benchmark's own shapes (key-range count only: O(N H)).
  for (const int64_t n : {4096, 4100, 8192, 16384}) {
    const int64_t g = ll::s2_group_size(n, 0.25);
    for (const ll::AttnMode mode : modes) {
      const ll::AttentionPattern m{mode, n, g, 32};
      ++checks;
      if (visible_pairs(m) != pairs_from_key_ranges(m)) {
        ++failures;
        fmt::print("FAIL mode {} N {} G {} H 32: closed form {}, key ranges {}\n", int(mode), n, g,
                   visible_pairs(m), pairs_from_key_ranges(m));
      }
    }
  }
  // Hand-computed anchors: N = 8, G = 4, H = 2: dense 2 * 36; S2 head 0: 2 * 10, head 1:
  // 3 + 10 + 3 = 16; s2-roll: 2 * 20. FLOPs forward with hd 128, batch 2: 4 * pairs * 128 * 2.
  const auto anchor = [&](ll::AttnMode mode, int64_t want) {
    ++checks;
    const int64_t got = visible_pairs(ll::AttentionPattern{mode, 8, 4, 2});
    if (got != want) {
      ++failures;
      fmt::print("FAIL anchor mode {}: {} != {}\n", int(mode), got, want);
    }
  };
  anchor(ll::AttnMode::Dense, 72);
  anchor(ll::AttnMode::S2, 36);
  anchor(ll::AttnMode::S2Roll, 40);
  ++checks;
  if (forward_flops(ll::AttentionPattern{ll::AttnMode::S2, 8, 4, 2}, 128, 2) !=
      4.0 * 36 * 128 * 2) {
    ++failures;
    fmt::print("FAIL forward_flops\n");
  }
  fmt::print("self-check: visible-pair count vs brute force, {} cases: {}\n", checks,
             failures == 0 ? "ok" : fmt::format("{} FAILED", failures));
  // A worked example, for the eye.
  const ll::AttentionPattern dense{ll::AttnMode::Dense, 8192, 0, 32};
  const ll::AttentionPattern s2{ll::AttnMode::S2, 8192, 2048, 32};
  fmt::print(
      "example: N 8192, H 32, hd 128: dense fwd {:.4g} FLOP, S2 (G 2048) fwd {:.4g} FLOP "
      "(ratio {:.3f})\n",
      forward_flops(dense, 128, 1), forward_flops(s2, 128, 1),
      forward_flops(s2, 128, 1) / forward_flops(dense, 128, 1));
  return failures == 0 ? 0 : 1;
}

// ---- options and result rows -------------------------------------------------------------------

struct Options {
  std::vector<int64_t> ns = {4096, 8192, 16384, 32768, 65536};
  int64_t g = 0;  // 0: from --ratio
  double ratio = 0.25;
  int64_t heads = 32;
  int64_t kv_heads = 0;  // 0: = heads
  int64_t hd = 128;
  int64_t batch = 1;
  std::string mode = "both";
  std::string dir = "both";
  int iters = 20;
  int warmup = 5;
  double budget_s = 30.0;
  std::string json_path;
  std::string mask_form = "s2";
  std::string impl = "simt";
  std::string attention_kernel;  // "" = --impl
  bool markdown = false;
  bool self_check = false;
};

#if defined(LL_HAVE_CUDA)

struct Row {
  int64_t n = 0;
  int64_t g = 0;  // 0 for dense
  int64_t heads = 0, kv_heads = 0, hd = 0, batch = 0;
  std::string dir;   // fwd | bwd | fwd+bwd
  std::string mode;  // dense | s2 | s2-roll
  bool oom = false;
  double ms = 0.0;
  std::vector<double> ms_all;
  double flops = 0.0;
  int64_t pairs = 0;
  std::optional<double> speedup;
  int iters = 0, warmup = 0;
  double tflops() const { return ms > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0; }
};

std::string speedup_text(const Row& r) {
  return r.speedup ? fmt::format("{:.1f}x", *r.speedup) : std::string("-");
}

void print_header() {
  fmt::print("{:>7} {:>6} {:>5} {:>3} {:>4} {:>7} {:>7} {:>10} {:>8} {:>8}\n", "N", "G", "heads",
             "kv", "hd", "dir", "mode", "ms", "TFLOP/s", "speedup");
}

void print_row(const Row& r) {
  const std::string g = r.g > 0 ? fmt::format("{}", r.g) : std::string("-");
  if (r.oom) {
    fmt::print("{:>7} {:>6} {:>5} {:>3} {:>4} {:>7} {:>7} {:>10} {:>8} {:>8}\n", r.n, g, r.heads,
               r.kv_heads, r.hd, r.dir, r.mode, "OOM", "-", "-");
  } else {
    fmt::print("{:>7} {:>6} {:>5} {:>3} {:>4} {:>7} {:>7} {:>10.3f} {:>8.1f} {:>8}\n", r.n, g,
               r.heads, r.kv_heads, r.hd, r.dir, r.mode, r.ms, r.tflops(), speedup_text(r));
  }
  std::fflush(stdout);
}

nlohmann::json row_json(const Row& r) {
  using nlohmann::json;
  return json{{"n", r.n},
              {"group_size", r.g > 0 ? json(r.g) : json(nullptr)},
              {"heads", r.heads},
              {"kv_heads", r.kv_heads},
              {"hd", r.hd},
              {"batch", r.batch},
              {"dir", r.dir},
              {"mode", r.mode},
              {"oom", r.oom},
              {"ms", r.oom ? json(nullptr) : json(r.ms)},
              {"ms_all", r.ms_all},
              {"tflops", r.oom ? json(nullptr) : json(r.tflops())},
              {"flops", r.flops},
              {"visible_pairs", r.pairs},
              {"speedup", r.speedup ? json(*r.speedup) : json(nullptr)},
              {"iters", r.iters},
              {"warmup", r.warmup}};
}

std::string utc_date() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

std::string commit_id() {
  const char* c = std::getenv("LL_COMMIT");
  return c != nullptr && *c != '\0' ? std::string(c) : std::string("unknown");
}

void print_markdown(const std::vector<Row>& rows, const std::string& card, const std::string& date,
                    const std::string& commit) {
  fmt::print(
      "\n| card | date | commit | N | G | heads | hd | dir | mode | ms | TFLOP/s | speedup |\n");
  fmt::print("|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const std::string g = r.g > 0 ? fmt::format("{}", r.g) : std::string("-");
    const std::string heads = r.kv_heads == r.heads ? fmt::format("{}", r.heads)
                                                    : fmt::format("{}/{}", r.heads, r.kv_heads);
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", card, date,
               commit, r.n, g, heads, r.hd, r.dir, r.mode,
               r.oom ? std::string("OOM") : fmt::format("{:.3f}", r.ms),
               r.oom ? std::string("-") : fmt::format("{:.1f}", r.tflops()), speedup_text(r));
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// ---- implementations -----------------------------------------------------------------------

using bf16 = __nv_bfloat16;
using ForwardFn = void (*)(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                           int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                           const ll::AttentionPattern& mask, cudaStream_t stream);
using BackwardFn = void (*)(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                            const bf16* k, const bf16* v, const bf16* out, const float* lse,
                            int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                            const ll::AttentionPattern& mask, void* workspace, cudaStream_t stream);
using WorkspaceFn = size_t (*)(int64_t n_tokens, int64_t n_heads, int64_t head_dim);

size_t d_workspace_bytes(int64_t n_tokens, int64_t n_heads, int64_t) {
  return ll::cuda::attention_backward_workspace_bytes(n_tokens, n_heads);
}

struct AttnImpl {
  const char* name;
  const char* description;
  ForwardFn forward;
  BackwardFn backward;
  WorkspaceFn backward_workspace_bytes;
};

const AttnImpl kImpls[] = {
    {"simt", "CUDA-core flash-style kernel (kernels/cuda/attention.cuh)",
     &ll::cuda::attention_forward, &ll::cuda::attention_backward, &d_workspace_bytes},
    {"tc",
     "tensor-core forward and backward (kernels/cuda/attention_tc.cuh: wgmma on sm_90 for s2 / "
     "dense, else mma.sync)",
     &ll::cuda::attention_forward_tc, &ll::cuda::attention_backward_tc, &d_workspace_bytes},
    {"tc-atomic",
     "tensor-core forward and backward, atomic dQ where the Hopper kernels run "
     "(kernels/cuda/attention_tc.cuh)",
     &ll::cuda::attention_forward_tc, &ll::cuda::attention_backward_tc_atomic_dq,
     &ll::cuda::attention_backward_tc_atomic_dq_workspace_bytes},
    {"tc-sm80", "tensor-core forward and backward, mma.sync (kernels/cuda/attention_tc.cuh)",
     &ll::cuda::attention_forward_tc_sm80, &ll::cuda::attention_backward_tc_sm80,
     &d_workspace_bytes},
};

const AttnImpl& find_impl(const std::string& name) {
  for (const AttnImpl& impl : kImpls)
    if (name == impl.name) return impl;
  ll::fail("unknown --impl {}", name);
}

// The --impl of an --attention-kernel family, checked against GPU 0 (an impossible family is
// an error naming the possible ones, as in the training tools).
std::string impl_of_kernel(const std::string& name) {
  const ll::AttentionKernel kernel = ll::resolve_attention_kernel(
      ll::parse_attention_kernel(name), ll::cuda::attention_device_support(0));
  switch (kernel) {
    case ll::AttentionKernel::TcSm80:
      return "tc-sm80";
    case ll::AttentionKernel::TcSm90:
      return "tc";
    case ll::AttentionKernel::TcSm90AtomicDq:
      return "tc-atomic";
    default:
      return "simt";
  }
}

// ---- device memory -------------------------------------------------------------------------

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }
  // false when the device is out of memory (the error is cleared); throws on other errors.
  bool try_alloc(size_t bytes) {
    release();
    const cudaError_t s = cudaMalloc(&ptr_, bytes);
    if (s == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      ptr_ = nullptr;
      return false;
    }
    LL_CUDA_CHECK(s);
    bytes_ = bytes;
    return true;
  }
  void release() {
    if (ptr_ == nullptr) return;
    const cudaError_t s = cudaFree(ptr_);
    if (s != cudaSuccess)  // destructors must not throw: report and go on
      std::fprintf(stderr, "bench_s2attn: cudaFree failed: %s\n", cudaGetErrorString(s));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Random bf16 bits, uniform in [-1, 1) (round to nearest even; no NaN/Inf possible).
uint16_t bf16_bits(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof(u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fills device tensors with random bf16 values: a pool of random values is uploaded once, then
// each tensor is tiled with chunks of it taken at random offsets (device-to-device copies), so
// that large tensors fill in milliseconds without a device kernel in this host-only file.
class RandomFiller {
 public:
  explicit RandomFiller(uint64_t seed) : seed_(seed) {
    std::vector<uint16_t> host(kPool);
    for (uint16_t& b : host)
      b = bf16_bits(float(double(splitmix(seed_) >> 11) * 0x1.0p-53 * 2.0 - 1.0));
    LL_CHECK(pool_.try_alloc(kPool * sizeof(uint16_t)), "out of device memory for the random pool");
    LL_CUDA_CHECK(cudaMemcpy(pool_.as<void>(), host.data(), kPool * sizeof(uint16_t),
                             cudaMemcpyHostToDevice));
  }
  void fill(bf16* dst, size_t count, cudaStream_t stream) {
    for (size_t off = 0; off < count; off += kChunk) {
      const size_t len = std::min(kChunk, count - off);
      const size_t start = size_t(splitmix(seed_) % (kPool - len + 1));
      LL_CUDA_CHECK(cudaMemcpyAsync(dst + off, pool_.as<uint16_t>() + start, len * sizeof(uint16_t),
                                    cudaMemcpyDeviceToDevice, stream));
    }
  }

 private:
  static constexpr size_t kPool = (size_t(1) << 22) + 4099;  // odd size: no aligned period
  static constexpr size_t kChunk = size_t(1) << 20;
  uint64_t seed_;
  DeviceBuffer pool_;
};

struct Events {
  cudaEvent_t e[4] = {nullptr, nullptr, nullptr, nullptr};
  Events() {
    for (cudaEvent_t& x : e) LL_CUDA_CHECK(cudaEventCreate(&x));
  }
  ~Events() {
    for (cudaEvent_t x : e)
      if (x != nullptr && cudaEventDestroy(x) != cudaSuccess)  // no throwing from destructors
        std::fprintf(stderr, "bench_s2attn: cudaEventDestroy failed\n");
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
};

// All tensors of one sequence length (batch sequences back to back).
struct Tensors {
  DeviceBuffer q, k, v, out, lse, dout, dq, dk, dv, workspace;
};

struct Shape {
  int64_t n, heads, kv_heads, hd, batch;
  size_t q_elems() const { return size_t(n * heads * hd); }      // per sequence
  size_t kv_elems() const { return size_t(n * kv_heads * hd); }  // per sequence
  size_t lse_elems() const { return size_t(heads * n); }
};

// false: out of device memory (rows reported as OOM).
bool allocate(Tensors& t, const Shape& s, bool need_bwd, const AttnImpl& impl) {
  const size_t b = size_t(s.batch), h2 = sizeof(bf16);
  bool ok = t.q.try_alloc(b * s.q_elems() * h2) && t.k.try_alloc(b * s.kv_elems() * h2) &&
            t.v.try_alloc(b * s.kv_elems() * h2) && t.out.try_alloc(b * s.q_elems() * h2) &&
            t.lse.try_alloc(b * s.lse_elems() * sizeof(float));
  if (ok && need_bwd)
    ok = t.dout.try_alloc(b * s.q_elems() * h2) && t.dq.try_alloc(b * s.q_elems() * h2) &&
         t.dk.try_alloc(b * s.kv_elems() * h2) && t.dv.try_alloc(b * s.kv_elems() * h2) &&
         t.workspace.try_alloc(
             std::max<size_t>(impl.backward_workspace_bytes(s.n, s.heads, s.hd), 4));
  if (!ok)
    for (DeviceBuffer* d :
         {&t.q, &t.k, &t.v, &t.out, &t.lse, &t.dout, &t.dq, &t.dk, &t.dv, &t.workspace})
      d->release();
  return ok;
}

struct Measured {
  std::vector<double> fwd_ms, bwd_ms;
  int warmup = 0, iters = 0;
};

Measured measure(const AttnImpl& impl, Tensors& t, const Shape& s, const ll::AttentionPattern& mask,
                 bool do_fwd, bool do_bwd, const Options& o, DeviceBuffer& flush,
                 cudaStream_t stream, Events& ev) {
  const size_t qs = s.q_elems(), kvs = s.kv_elems(), ls = s.lse_elems();
  const auto fwd_all = [&] {
    for (int64_t b = 0; b < s.batch; ++b)
      impl.forward(t.out.as<bf16>() + b * qs, t.lse.as<float>() + b * ls, t.q.as<bf16>() + b * qs,
                   t.k.as<bf16>() + b * kvs, t.v.as<bf16>() + b * kvs, s.n, s.heads, s.kv_heads,
                   s.hd, mask, stream);
  };
  const auto bwd_all = [&] {
    for (int64_t b = 0; b < s.batch; ++b)
      impl.backward(t.dq.as<bf16>() + b * qs, t.dk.as<bf16>() + b * kvs, t.dv.as<bf16>() + b * kvs,
                    t.dout.as<bf16>() + b * qs, t.q.as<bf16>() + b * qs, t.k.as<bf16>() + b * kvs,
                    t.v.as<bf16>() + b * kvs, t.out.as<bf16>() + b * qs, t.lse.as<float>() + b * ls,
                    s.n, s.heads, s.kv_heads, s.hd, mask, t.workspace.as<void>(), stream);
  };
  const auto flush_l2 = [&] {
    LL_CUDA_CHECK(cudaMemsetAsync(flush.as<void>(), 0x5a, flush.bytes(), stream));
  };
  // One iteration; returns {fwd ms, bwd ms} (0 for a direction not run).
  const auto once = [&]() -> std::pair<double, double> {
    if (do_fwd) {
      flush_l2();
      LL_CUDA_CHECK(cudaEventRecord(ev.e[0], stream));
      fwd_all();
      LL_CUDA_CHECK(cudaEventRecord(ev.e[1], stream));
    }
    if (do_bwd) {
      flush_l2();
      LL_CUDA_CHECK(cudaEventRecord(ev.e[2], stream));
      bwd_all();
      LL_CUDA_CHECK(cudaEventRecord(ev.e[3], stream));
    }
    LL_CUDA_CHECK(cudaEventSynchronize(do_bwd ? ev.e[3] : ev.e[1]));
    float f = 0.0f, b = 0.0f;
    if (do_fwd) LL_CUDA_CHECK(cudaEventElapsedTime(&f, ev.e[0], ev.e[1]));
    if (do_bwd) LL_CUDA_CHECK(cudaEventElapsedTime(&b, ev.e[2], ev.e[3]));
    return {double(f), double(b)};
  };

  if (!do_fwd) {  // backward alone still needs the forward's out and lse
    fwd_all();
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  Measured m;
  // Warm-up; the first run also sizes the measurement to --budget-s (slow rows get fewer runs).
  const auto [f1, b1] = once();
  const double first_s = (f1 + b1) * 1e-3;
  int warmup = std::max(o.warmup, 1), iters = o.iters;
  if (o.budget_s > 0 && first_s > 0) {
    if (first_s * warmup > 0.25 * o.budget_s)
      warmup = std::max(1, int(0.25 * o.budget_s / first_s));
    if (first_s * iters > o.budget_s) iters = std::max(3, int(o.budget_s / first_s));
  }
  for (int i = 1; i < warmup; ++i) once();
  for (int i = 0; i < iters; ++i) {
    const auto [f, b] = once();
    if (do_fwd) m.fwd_ms.push_back(f);
    if (do_bwd) m.bwd_ms.push_back(b);
  }
  m.warmup = warmup;
  m.iters = iters;
  return m;
}

std::string cuda_version_text(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

int run_bench(const Options& o) {
  if (ll::cuda::device_count() == 0)
    ll::fail(
        "no CUDA device found (no GPU visible or no driver); bench_s2attn needs a GPU "
        "(--self-check runs without one)");
  const AttnImpl& impl =
      find_impl(o.attention_kernel.empty() ? o.impl : impl_of_kernel(o.attention_kernel));
  const ll::cuda::DeviceInfo info = ll::cuda::device_info(0);
  int driver = 0, runtime = 0, l2_bytes = 0;
  LL_CUDA_CHECK(cudaDriverGetVersion(&driver));
  LL_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  LL_CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, 0));
  const std::string date = utc_date(), commit = commit_id();

  const int64_t kv_heads = o.kv_heads > 0 ? o.kv_heads : o.heads;
  const bool run_dense = o.mode != "s2", run_s2 = o.mode != "dense";
  const bool do_fwd = o.dir != "bwd", do_bwd = o.dir != "fwd";
  const ll::AttnMode s2_mode = o.mask_form == "s2-roll" ? ll::AttnMode::S2Roll : ll::AttnMode::S2;

  fmt::print("device    {} (sm_{}{}, {} SMs, {:.1f} GiB), driver {}, runtime {}, L2 {:.1f} MiB\n",
             info.name, info.sm_major, info.sm_minor, info.sm_count,
             double(info.total_bytes) / double(1 << 30), cuda_version_text(driver),
             cuda_version_text(runtime), double(l2_bytes) / double(1 << 20));
  fmt::print("impl      {}: {}\n", impl.name, impl.description);
  if (std::string(impl.name) == "tc" || std::string(impl.name) == "tc-atomic")
    fmt::print("          kernels here: {}\n",
               ll::cuda::attention_tc_uses_hopper(ll::AttentionPattern{s2_mode, 2, 2, 2})
                   ? "Hopper (wgmma + bulk tensor copies)"
                   : "mma.sync");
  fmt::print("shape     bf16, heads {}, kv heads {}, hd {}, batch {}{}; S2 mask {}, G = {}\n",
             o.heads, kv_heads, o.hd, o.batch,
             o.batch > 1 ? " (one launch per sequence, all inside the timed region)" : "",
             o.mask_form, o.g > 0 ? fmt::format("{}", o.g) : fmt::format("N x {} (even)", o.ratio));
  fmt::print(
      "timing    CUDA events, L2 flushed ({:.0f} MiB memset) before each timed launch, "
      "median of up to {} runs after {} warm-up (--budget-s {}); commit {}, {}\n",
      2.0 * double(l2_bytes) / double(1 << 20), o.iters, o.warmup, o.budget_s, commit, date);
  fmt::print(
      "FLOPs     fwd 4 x hd x visible pairs (all heads), bwd 2.5 x fwd; speedup = dense ms "
      "/ S2 ms\n");
  print_header();

  cudaStream_t stream = nullptr;
  LL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<Row> rows;
  {
    Events ev;
    DeviceBuffer flush;
    LL_CHECK(flush.try_alloc(std::max<size_t>(2 * size_t(l2_bytes), 1 << 20)),
             "out of device memory for the L2 flush buffer");
    RandomFiller filler(20261126);
    std::vector<std::string> dirs;
    if (do_fwd) dirs.push_back("fwd");
    if (do_bwd) dirs.push_back("bwd");
    if (do_fwd && do_bwd) dirs.push_back("fwd+bwd");

    for (const int64_t n : o.ns) {
      const int64_t g = o.g > 0 ? o.g : ll::s2_group_size(n, o.ratio);
      const Shape s{n, o.heads, kv_heads, o.hd, o.batch};
      Tensors t;
      const bool have = allocate(t, s, do_bwd, impl);
      if (have) {
        filler.fill(t.q.as<bf16>(), size_t(o.batch) * s.q_elems(), stream);
        filler.fill(t.k.as<bf16>(), size_t(o.batch) * s.kv_elems(), stream);
        filler.fill(t.v.as<bf16>(), size_t(o.batch) * s.kv_elems(), stream);
        if (do_bwd) filler.fill(t.dout.as<bf16>(), size_t(o.batch) * s.q_elems(), stream);
        LL_CUDA_CHECK(cudaStreamSynchronize(stream));
      }
      std::vector<Row> dense_rows;
      const auto run_mode = [&](ll::AttnMode mode) {
        const ll::AttentionPattern mask{mode, n, mode == ll::AttnMode::Dense ? 0 : g, o.heads};
        const double f1 = forward_flops(mask, o.hd, o.batch);
        Measured m;
        if (have) m = measure(impl, t, s, mask, do_fwd, do_bwd, o, flush, stream, ev);
        for (const std::string& dir : dirs) {
          Row r;
          r.n = n;
          r.g = mode == ll::AttnMode::Dense ? 0 : g;
          r.heads = o.heads;
          r.kv_heads = kv_heads;
          r.hd = o.hd;
          r.batch = o.batch;
          r.dir = dir;
          r.mode = mode == ll::AttnMode::Dense ? "dense" : o.mask_form;
          r.pairs = visible_pairs(mask) * o.batch;
          r.oom = !have;
          r.flops = dir == "fwd" ? f1 : dir == "bwd" ? 2.5 * f1 : 3.5 * f1;
          r.iters = m.iters;
          r.warmup = m.warmup;
          if (have) {
            if (dir == "fwd") {
              r.ms_all = m.fwd_ms;
            } else if (dir == "bwd") {
              r.ms_all = m.bwd_ms;
            } else {
              for (size_t i = 0; i < m.fwd_ms.size(); ++i)
                r.ms_all.push_back(m.fwd_ms[i] + m.bwd_ms[i]);
            }
            r.ms = median(r.ms_all);
          }
          if (mode != ll::AttnMode::Dense)
            for (const Row& d : dense_rows)
              if (d.dir == dir && !d.oom && !r.oom && r.ms > 0) r.speedup = d.ms / r.ms;
          print_row(r);
          if (mode == ll::AttnMode::Dense) dense_rows.push_back(r);
          rows.push_back(r);
        }
      };
      if (run_dense) run_mode(ll::AttnMode::Dense);
      if (run_s2) run_mode(s2_mode);
    }
  }
  LL_CUDA_CHECK(cudaStreamDestroy(stream));

  if (o.markdown) print_markdown(rows, info.name, date, commit);
  if (!o.json_path.empty()) {
    nlohmann::json jrows = nlohmann::json::array();
    for (const Row& r : rows) jrows.push_back(row_json(r));
    std::ofstream f(o.json_path);
    f << nlohmann::json{{"tool", "bench_s2attn"},
                        {"impl", impl.name},
                        {"impl_description", impl.description},
                        {"device", info.name},
                        {"driver_version", cuda_version_text(driver)},
                        {"runtime_version", cuda_version_text(runtime)},
                        {"commit", commit},
                        {"date", date},
                        {"mask_form", o.mask_form},
                        {"l2_flush_bytes", 2 * int64_t(l2_bytes)},
                        {"flop_convention",
                         "fwd 4*hd*visible_pairs, bwd 2.5x fwd, fwd+bwd 3.5x fwd"},
                        {"rows", jrows}}
             .dump(2)
      << "\n";
    LL_CHECK(f.good(), "cannot write {}", o.json_path);
  }
  return 0;
}

#endif  // LL_HAVE_CUDA

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Speed of the CUDA attention kernels: S2-Attn vs dense causal, forward and backward.\n"
      "Example: ./bench_s2attn --n 8192,32768 --dir fwd --json s2attn.json --markdown"};
  app.add_option("--n", o.ns, "sequence lengths N (comma list)")
      ->delimiter(',')
      ->capture_default_str();
  auto* g_opt =
      app.add_option("--g", o.g, "S2 group size G for every N (even; default N x --ratio)");
  app.add_option("--ratio", o.ratio, "G = N x ratio, rounded down to even (not with --g)")
      ->capture_default_str()
      ->excludes(g_opt);
  app.add_option("--heads", o.heads, "query heads H (even for S2)")->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads, "key/value heads (GQA; default = --heads)");
  app.add_option("--hd", o.hd, "head dim: 32, 64 or 128")
      ->capture_default_str()
      ->check(CLI::IsMember({32, 64, 128}));
  app.add_option("--batch", o.batch,
                 "independent sequences per timed run (one launch each, back to back; times "
                 "and FLOPs are for the whole batch)")
      ->capture_default_str();
  app.add_option("--mode", o.mode, "s2, dense or both (both: speedup column)")
      ->capture_default_str()
      ->check(CLI::IsMember({"s2", "dense", "both"}));
  app.add_option("--dir", o.dir, "fwd, bwd or both (both: fwd, bwd and fwd+bwd rows)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fwd", "bwd", "both"}));
  app.add_option("--iters", o.iters, "timed runs (median reported)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed runs first (at least 1 is always done)")
      ->capture_default_str();
  app.add_option("--budget-s", o.budget_s,
                 "cap on the timed seconds of each (N, mode) measurement: when the first "
                 "warm-up run shows --iters would take longer, fewer runs (>= 3 timed, warm-up "
                 "<= budget/4); 0 = always --iters/--warmup")
      ->capture_default_str();
  app.add_option("--mask-form", o.mask_form,
                 "s2 (official segments, no wrap) or s2-roll (paper pseudocode, wrap-around)")
      ->capture_default_str()
      ->check(CLI::IsMember({"s2", "s2-roll"}));
  app.add_option("--impl", o.impl,
                 "kernel: simt (CUDA cores), tc (tensor cores; Hopper kernels on sm_90), "
                 "tc-atomic (tc with the atomic-dQ backward on sm_90) or tc-sm80 (tensor "
                 "cores, mma.sync everywhere)")
      ->capture_default_str()
      ->check(CLI::IsMember({"simt", "tc", "tc-atomic", "tc-sm80"}));
  app.add_option("--attention-kernel", o.attention_kernel,
                 "the kernels by the training tools' names instead of --impl: simt, tc-sm80, "
                 "tc-sm90, tc-sm90-atomic-dq (an error where they cannot run) or auto")
      ->check(CLI::IsMember({"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}));
  app.add_option("--json", o.json_path,
                 "also write the rows as JSON (with device, driver/runtime, date, $LL_COMMIT)");
  app.add_flag("--markdown", o.markdown,
               "also print the rows as a markdown table for bench/RESULTS.md "
               "(card | date | commit | N | G | heads | hd | dir | mode | ms | TFLOP/s | speedup; "
               "commit from $LL_COMMIT)");
  app.add_flag("--self-check", o.self_check,
               "check the visible-pair (FLOP) count against brute force on the CPU and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (o.self_check) return self_check();

  LL_CHECK(!o.ns.empty(), "--n needs at least one sequence length");
  for (const int64_t n : o.ns) LL_CHECK(n >= 1, "--n: sequence length {} must be positive", n);
  LL_CHECK(o.heads >= 1, "--heads must be positive, got {}", o.heads);
  LL_CHECK(o.kv_heads >= 0 && (o.kv_heads == 0 || o.heads % o.kv_heads == 0),
           "--kv-heads {} must divide --heads {}", o.kv_heads, o.heads);
  LL_CHECK(o.mode == "dense" || o.heads % 2 == 0,
           "S2-Attn shifts half of the heads: --heads must be even, got {}", o.heads);
  LL_CHECK(o.g == 0 || (o.g >= 2 && o.g % 2 == 0), "--g must be even and at least 2, got {}", o.g);
  LL_CHECK(o.ratio > 0.0, "--ratio must be positive, got {}", o.ratio);
  LL_CHECK(o.batch >= 1, "--batch must be at least 1, got {}", o.batch);
  LL_CHECK(o.iters >= 1 && o.warmup >= 0 && o.budget_s >= 0,
           "--iters >= 1, --warmup >= 0, --budget-s >= 0");
#if defined(LL_HAVE_CUDA)
  return run_bench(o);
#else
  std::fprintf(stderr,
               "bench_s2attn: this build has no CUDA backend (nvcc was not found or "
               "-DLL_ENABLE_CUDA=OFF); rebuild with CUDA to benchmark (--self-check works "
               "without it)\n");
  return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("bench_s2attn", [&] { return run(argc, argv); });
}
