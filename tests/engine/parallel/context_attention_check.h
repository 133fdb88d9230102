#pragma once
// The whole-window attention the context-parallel tests compare their parts against: random
// q, k, v and output gradient, and the CPU kernels' forward and backward over the window.
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/attention_pattern.h"
#include "kernels/cpu/attention.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test {

struct AttnShape {
  AttnMode mode;
  int64_t n, g, h, hkv, hd;
};

struct WholeWindow {
  AttentionPattern mask;
  int64_t qrow = 0, kvrow = 0;              // values per token of q (and out), of k and v
  std::vector<float> q, k, v, dout;         // [N, H, hd], [N, Hkv, hd] x 2, [N, H, hd]
  std::vector<float> out, lse, dq, dk, dv;  // the forward's and the backward's results
};

inline WholeWindow whole_window(const AttnShape& s) {
  WholeWindow w;
  w.mask = AttentionPattern{s.mode, s.n, s.mode == AttnMode::Dense ? 0 : s.g, s.h};
  w.qrow = s.h * s.hd;
  w.kvrow = s.hkv * s.hd;
  std::mt19937_64 rng(20261208);
  w.q = random_uniform(rng, size_t(s.n * w.qrow));
  w.k = random_uniform(rng, size_t(s.n * w.kvrow));
  w.v = random_uniform(rng, size_t(s.n * w.kvrow));
  w.dout = random_uniform(rng, size_t(s.n * w.qrow));
  w.out.resize(w.q.size());
  w.lse.resize(size_t(s.h * s.n));
  cpu::attention_forward(w.out.data(), w.lse.data(), w.q.data(), w.k.data(), w.v.data(), s.n, s.h,
                         s.hkv, s.hd, w.mask);
  w.dq.resize(w.q.size());
  w.dk.resize(w.k.size());
  w.dv.resize(w.v.size());
  cpu::attention_backward(w.dq.data(), w.dk.data(), w.dv.data(), w.dout.data(), w.q.data(),
                          w.k.data(), w.v.data(), w.out.data(), w.lse.data(), s.n, s.h, s.hkv, s.hd,
                          w.mask);
  return w;
}

}  // namespace ll::test
