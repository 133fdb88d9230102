// Context-parallel attention on the CPU across MPI ranks: each rank holds one part of the
// window, exchanges the key/value halos the plan names (engine/parallel/context_halo.h), runs the
// CPU attention over its part and returns the key/value gradients to their owners. Every rank
// checks its rows against the whole window computed alone: outputs, log-sum-exps and query
// gradients bit for bit, its keys' gradients within 1e-6 of the largest (other parts' terms
// added in part order), and the values it sent and received equal the plan's count. Under
// mpirun -np 2, 3 and 4 (skips without mpirun).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "engine/parallel/communicator.h"
#include "engine/parallel/context_exchange.h"
#include "engine/parallel/context_halo.h"
#include "kernels/cpu/attention.h"
#include "tests/engine/parallel/context_attention_check.h"
#include "tests/engine/parallel/mpirun_util.h"

namespace {

using namespace ll;
using namespace ll::dist;

constexpr const char* kChildVariable = "LL_CONTEXT_HALO_CHILD";

using Shape = ll::test::AttnShape;

// One shape on this rank's part.
void check_part(Communicator& comm, const Shape& s) {
  CAPTURE(int(s.mode));
  CAPTURE(s.n);
  CAPTURE(s.g);
  CAPTURE(s.hkv);
  const int parts = comm.world_size(), p = comm.rank();
  const ll::test::WholeWindow w = ll::test::whole_window(s);
  const AttentionPattern& whole = w.mask;
  const int64_t qrow = w.qrow, kvrow = w.kvrow;
  const std::vector<float>&q = w.q, &k = w.k, &v = w.v, &dout = w.dout;
  const std::vector<float>&out = w.out, &lse = w.lse, &dq = w.dq, &dk = w.dk, &dv = w.dv;

  const ContextExchange ex = plan_context_exchange(whole, s.hkv, parts);
  const ContextPart part = ex.parts[size_t(p)];
  ContextHalo halo(comm, ex, p, 0, s.hkv, s.hd);
  const int64_t nq = part.size(), nk = halo.key_rows();
  const std::vector<float> kp(k.begin() + part.begin * kvrow, k.begin() + part.end * kvrow);
  const std::vector<float> vp(v.begin() + part.begin * kvrow, v.begin() + part.end * kvrow);
  std::vector<float> kbuf(size_t(nk * kvrow)), vbuf(kbuf.size());
  halo.gather(kp, vp, kbuf, vbuf, "keys");

  AttentionPattern mask = whole;
  mask.query_offset = part.begin;
  mask.key_offset = halo.key_begin();
  mask.window_part = true;
  const float* qp = q.data() + part.begin * qrow;
  std::vector<float> op(size_t(nq * qrow)), lp(size_t(s.h * nq));
  cpu::attention_forward(op.data(), lp.data(), qp, kbuf.data(), vbuf.data(), nq, s.h, s.hkv, s.hd,
                         mask);
  std::vector<float> dqp(op.size()), dkbuf(kbuf.size()), dvbuf(vbuf.size());
  cpu::attention_backward(dqp.data(), dkbuf.data(), dvbuf.data(), dout.data() + part.begin * qrow,
                          qp, kbuf.data(), vbuf.data(), op.data(), lp.data(), nq, s.h, s.hkv, s.hd,
                          mask);
  std::vector<float> dkp(kp.size()), dvp(vp.size());
  halo.return_gradients(dkbuf, dvbuf, dkp, dvp, "key gradients");

  CHECK(std::equal(op.begin(), op.end(), out.begin() + part.begin * qrow));
  CHECK(std::equal(dqp.begin(), dqp.end(), dq.begin() + part.begin * qrow));
  bool lse_equal = true;
  for (int64_t h = 0; h < s.h; ++h)
    for (int64_t i = 0; i < nq; ++i)
      lse_equal &= lp[size_t(h * nq + i)] == lse[size_t(h * s.n + part.begin + i)];
  CHECK(lse_equal);
  double scale = 0.0, diff = 0.0;
  for (size_t i = 0; i < dk.size(); ++i)
    scale = std::max(scale, std::max(std::fabs(double(dk[i])), std::fabs(double(dv[i]))));
  for (size_t i = 0; i < dkp.size(); ++i) {
    const size_t g = size_t(part.begin * kvrow) + i;
    diff = std::max(diff, std::fabs(double(dkp[i]) - double(dk[g])));
    diff = std::max(diff, std::fabs(double(dvp[i]) - double(dv[g])));
  }
  CAPTURE(diff);
  CHECK(diff <= 1e-6 * scale);
  // The halo and its gradients, nothing more: what the plan counts.
  CHECK(halo.values_received() == ex.received_kv_elements(p, s.hd) + ex.sent_kv_elements(p, s.hd));
  CHECK(halo.values_sent() == ex.sent_kv_elements(p, s.hd) + ex.received_kv_elements(p, s.hd));
}

void check_all_shapes(Communicator& comm) {
  for (const AttnMode mode : {AttnMode::Dense, AttnMode::S2}) {
    check_part(comm, {mode, 48, 8, 4, 2, 8});   // N/C a multiple of G (C = 2, 3)
    check_part(comm, {mode, 48, 24, 4, 4, 8});  // N/C below G
    check_part(comm, {mode, 37, 10, 4, 1, 8});  // ragged parts and groups, one kv head
  }
}

}  // namespace

TEST_CASE("context halo child") {
  if (ll::test::child_mode(kChildVariable) != "halo") return;
  auto comm = make_communicator(CommunicatorOptions{.timeout_s = 30.0});
  check_all_shapes(*comm);
  comm->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d\n", comm->rank(), comm->world_size());
  std::fflush(stdout);
}

TEST_CASE("a world of one: the halo is empty and the part is the window") {
  if (!ll::test::child_mode(kChildVariable).empty()) return;
  SingleProcessCommunicator one;
  check_all_shapes(one);
}

TEST_CASE("context-parallel attention under mpirun with 2, 3 and 4 ranks") {
  if (!ll::test::child_mode(kChildVariable).empty()) return;
  ll::test::require_mpirun();
  for (int ranks : {2, 3, 4}) {
    const ll::test::MpiRun run = ll::test::run_self_under_mpirun(
        ranks, fmt::format("{}=halo", kChildVariable), "context halo child");
    INFO("mpirun -np " << ranks << " exited with " << run.exit_code << "; output:\n" << run.output);
    CHECK(run.exit_code == 0);
    for (int r = 0; r < ranks; ++r)
      CHECK(run.output.find(fmt::format("CHILD_OK rank {} of {}", r, ranks)) != std::string::npos);
  }
}
