// Attention over context-parallel parts on the CPU kernels: each part's queries attend to its
// own keys plus exactly the keys and values the exchange plan (engine/parallel/context_exchange.h)
// sends it, in a key buffer that starts where its earliest received key does. Every key row the
// plan does not send is NaN, so a read of one would show. The parts' outputs, log-sum-exps and
// query gradients equal the whole window's rows bit for bit (the same keys in the same order);
// the key and value gradients, summed over the parts by their owners, equal the whole window's
// within 1e-6 of their largest (the same terms, grouped per part).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"
#include "engine/parallel/context_exchange.h"
#include "kernels/cpu/attention.h"
#include "tests/engine/parallel/context_attention_check.h"

namespace {

using namespace ll;
using namespace ll::dist;

struct Shape {
  ll::test::AttnShape attn;
  int parts;
};

void check_parts(const Shape& shape) {
  const ll::test::AttnShape& s = shape.attn;
  CAPTURE(int(s.mode));
  CAPTURE(s.n);
  CAPTURE(s.g);
  CAPTURE(s.hkv);
  CAPTURE(shape.parts);
  const ll::test::WholeWindow w = ll::test::whole_window(s);
  const AttentionPattern& whole_mask = w.mask;
  const int64_t qrow = w.qrow, kvrow = w.kvrow;
  const std::vector<float>&q = w.q, &k = w.k, &v = w.v, &dout = w.dout;
  const std::vector<float>&out = w.out, &lse = w.lse, &dq = w.dq, &dk = w.dk, &dv = w.dv;

  const ContextExchange ex = plan_context_exchange(whole_mask, s.hkv, shape.parts);
  std::vector<double> dk_sum(k.size(), 0.0), dv_sum(v.size(), 0.0);  // the owners' sums
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int p = 0; p < shape.parts; ++p) {
    const ContextPart part = ex.parts[size_t(p)];
    int64_t key_begin = part.begin;
    for (const KeyTransfer& t : ex.transfers)
      if (t.to == p) key_begin = std::min(key_begin, t.begin);
    const int64_t nq = part.size(), nk = part.end - key_begin;
    // The part's keys and values: its own rows, the received (kv head, position) pairs, NaN
    // elsewhere.
    std::vector<float> kp(size_t(nk * kvrow), nan), vp(size_t(nk * kvrow), nan);
    std::vector<bool> held(size_t(nk * s.hkv), false);
    auto take = [&](int64_t pos, int64_t kv) {
      const int64_t row = pos - key_begin;
      for (int64_t d = 0; d < s.hd; ++d) {
        kp[size_t(row * kvrow + kv * s.hd + d)] = k[size_t(pos * kvrow + kv * s.hd + d)];
        vp[size_t(row * kvrow + kv * s.hd + d)] = v[size_t(pos * kvrow + kv * s.hd + d)];
      }
      held[size_t(row * s.hkv + kv)] = true;
    };
    for (int64_t pos = part.begin; pos < part.end; ++pos)
      for (int64_t kv = 0; kv < s.hkv; ++kv) take(pos, kv);
    for (const KeyTransfer& t : ex.transfers)
      if (t.to == p)
        for (int64_t pos = t.begin; pos < t.end; ++pos)
          for (int64_t kv = t.kv_head_begin; kv < t.kv_head_end; ++kv) take(pos, kv);

    AttentionPattern mask = whole_mask;
    mask.query_offset = part.begin;
    mask.key_offset = key_begin;
    mask.window_part = true;
    const float* qp = q.data() + part.begin * qrow;
    std::vector<float> op(size_t(nq * qrow)), lp(size_t(s.h * nq));
    cpu::attention_forward(op.data(), lp.data(), qp, kp.data(), vp.data(), nq, s.h, s.hkv, s.hd,
                           mask);
    bool rows_equal = true;
    for (int64_t i = 0; i < nq * qrow; ++i)
      rows_equal &= op[size_t(i)] == out[size_t(part.begin * qrow + i)];
    for (int64_t h = 0; h < s.h; ++h)
      for (int64_t i = 0; i < nq; ++i)
        rows_equal &= lp[size_t(h * nq + i)] == lse[size_t(h * s.n + part.begin + i)];
    CHECK(rows_equal);

    std::vector<float> dqp(op.size()), dkp(kp.size()), dvp(vp.size());
    cpu::attention_backward(dqp.data(), dkp.data(), dvp.data(), dout.data() + part.begin * qrow, qp,
                            kp.data(), vp.data(), op.data(), lp.data(), nq, s.h, s.hkv, s.hd, mask);
    bool dq_equal = true;
    for (int64_t i = 0; i < nq * qrow; ++i)
      dq_equal &= dqp[size_t(i)] == dq[size_t(part.begin * qrow + i)];
    CHECK(dq_equal);
    // Gradients of the keys this part holds go to their owners; rows it does not hold get none.
    bool unheld_zero = true;
    for (int64_t row = 0; row < nk; ++row) {
      for (int64_t kv = 0; kv < s.hkv; ++kv) {
        for (int64_t d = 0; d < s.hd; ++d) {
          const size_t at = size_t(row * kvrow + kv * s.hd + d);
          if (!held[size_t(row * s.hkv + kv)]) {
            unheld_zero &= dkp[at] == 0.0f && dvp[at] == 0.0f;
            continue;
          }
          const size_t global = size_t((row + key_begin) * kvrow + kv * s.hd + d);
          dk_sum[global] += double(dkp[at]);
          dv_sum[global] += double(dvp[at]);
        }
      }
    }
    CHECK(unheld_zero);
  }
  double scale = 0.0, diff = 0.0;
  for (size_t i = 0; i < dk.size(); ++i) {
    scale = std::max({scale, std::fabs(double(dk[i])), std::fabs(double(dv[i]))});
    diff = std::max(
        {diff, std::fabs(dk_sum[i] - double(dk[i])), std::fabs(dv_sum[i] - double(dv[i]))});
  }
  CAPTURE(diff);
  CAPTURE(scale);
  CHECK(diff <= 1e-6 * scale);
}

}  // namespace

TEST_CASE("attention over context-parallel parts equals the whole window's rows") {
  for (const AttnMode mode : {AttnMode::Dense, AttnMode::S2}) {
    for (const int parts : {2, 3, 4}) {
      // N/C a multiple of G; N/C below G; ragged parts and groups; GQA and MHA.
      check_parts({{mode, 48, 8, 4, 2, 8}, parts});
      check_parts({{mode, 48, 24, 4, 4, 8}, parts});
      check_parts({{mode, 37, 10, 4, 1, 8}, parts});
    }
  }
}

TEST_CASE("a part without the keys its mask needs, or of the roll form, is refused") {
  const int64_t h = 2, hd = 4, nq = 4;
  AttentionPattern m{AttnMode::S2, 16, 8, h};
  m.query_offset = 8;
  m.key_offset = 8;  // the shifted head at position 8 sees keys from 4
  m.window_part = true;
  std::vector<float> q(size_t(nq * h * hd), 1.0f), kv(q.size(), 1.0f), out(q.size());
  CHECK_THROWS_WITH_AS(
      cpu::attention_forward(out.data(), nullptr, q.data(), kv.data(), kv.data(), nq, h, h, hd, m),
      doctest::Contains("head 1 at window position 8 sees keys from 4"), Error);
  m.mode = AttnMode::S2Roll;
  CHECK_THROWS_WITH_AS(
      cpu::attention_forward(out.data(), nullptr, q.data(), kv.data(), kv.data(), nq, h, h, hd, m),
      doctest::Contains("the roll form's wrap-around"), Error);
}
