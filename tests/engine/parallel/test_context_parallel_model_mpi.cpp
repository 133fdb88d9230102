// A LoRA+ training step of the whole model split over context-parallel ranks on the CPU
// backend (model/key_value_exchange.h over engine/parallel/context_attention.h): every rank
// holds one part of the window, its attention receives the other parts' keys and values the
// exchange plan names, and labels cross the part boundaries (a part's last token predicts the
// next part's first). Summed over the ranks, the losses and every trained tensor's gradient
// equal one process's step on the whole window (the loss to 1e-6: every row is computed the same
// way, but OpenBLAS picks its kernel by matrix height, and the parts cut the classifier's chunks
// and the projections at other rows; gradients within 1e-5 of the largest: sums over tokens
// grouped per part as well), for S2-Attn
// with N/C a multiple of G, below G and ragged, dense attention, and with token tiles and
// activation offload on the parts. Under mpirun -np 2, 3 and 4 (skips without mpirun).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/parallel/communicator.h"
#include "engine/parallel/context_attention.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/llama_model.h"
#include "tests/engine/parallel/mpirun_util.h"
#include "tests/model/activation_schedule_check.h"

namespace {

using namespace ll;
using namespace ll::dist;

constexpr const char* kChildVariable = "LL_CONTEXT_MODEL_CHILD";

struct Case {
  AttnMode mode;
  int64_t n, g;
  int64_t tile = 0, offloaded = 0;  // on the parts
};

std::vector<double> all_grads(Backend& backend, const LlamaModel& model) {
  std::vector<double> out;
  for (const TrainableParam& p : model.params()) {
    const std::vector<float> g = ll::test::download_all(backend, *p.grad);
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

void check_case(Communicator& comm, const Case& cs) {
  CAPTURE(int(cs.mode));
  CAPTURE(cs.n);
  CAPTURE(cs.g);
  CAPTURE(cs.tile);
  const LlamaConfig config = ll::test::schedule_config();
  CpuBackend backend;
  LlamaModel model(backend, random_llama_weights(config, 3, 0.1f), ll::test::schedule_setup());
  std::vector<int32_t> tokens(size_t(cs.n)), targets(size_t(cs.n));
  for (int64_t i = 0; i < cs.n; ++i) tokens[size_t(i)] = int32_t((i * i * 5 + 3 * i) % 61);
  for (int64_t i = 0; i < cs.n; ++i) targets[size_t(i)] = i + 1 < cs.n ? tokens[size_t(i + 1)] : -1;
  ForwardSpec spec;
  spec.attn_mode = cs.mode;
  spec.group_size = cs.mode == AttnMode::Dense ? 0 : cs.g;
  spec.classifier_chunk = 16;

  // One process, the whole window.
  model.zero_grads();
  const LossSum whole = model.forward_backward(tokens, targets, spec, 1.0f);
  const std::vector<double> whole_grads = all_grads(backend, model);

  // This rank's part, its halo over the communicator.
  const AttentionPattern mask{cs.mode, cs.n, spec.group_size, config.num_attention_heads};
  HostKeyValueExchange cx(
      comm, plan_context_exchange(mask, config.num_key_value_heads, comm.world_size()), comm.rank(),
      0, config.num_key_value_heads, config.head_dim());
  ForwardSpec part = spec;
  part.position_offset = cx.part_begin();
  part.context = &cx;
  part.tile_tokens = cs.tile;
  part.offloaded_layers = cs.offloaded;
  const auto b = tokens.begin() + cx.part_begin(), t = targets.begin() + cx.part_begin();
  const std::vector<int32_t> part_tokens(b, b + cx.part_tokens()),
      part_targets(t, t + cx.part_tokens());
  model.zero_grads();
  const LossSum mine = model.forward_backward(part_tokens, part_targets, part, 1.0f);
  std::vector<double> sums = all_grads(backend, model);
  sums.push_back(mine.sum);
  sums.push_back(double(mine.count));
  comm.all_reduce_sum(sums, "context-parallel step");
  const double count = sums.back();
  sums.pop_back();
  const double loss = sums.back();
  sums.pop_back();
  CHECK(count == double(whole.count));
  CHECK(std::fabs(loss - whole.sum) <= 1e-6 * std::fabs(whole.sum));
  double scale = 0.0, diff = 0.0;
  for (size_t i = 0; i < sums.size(); ++i) {
    scale = std::max(scale, std::fabs(whole_grads[i]));
    diff = std::max(diff, std::fabs(sums[i] - whole_grads[i]));
  }
  CAPTURE(diff);
  CAPTURE(scale);
  CHECK(diff <= 1e-5 * scale);
}

}  // namespace

TEST_CASE("context-parallel model child") {
  if (ll::test::child_mode(kChildVariable) != "model") return;
  auto comm = make_communicator(CommunicatorOptions{.timeout_s = 60.0});
  check_case(*comm, {AttnMode::S2, 48, 8});   // N/C a multiple of G for C = 2, 3
  check_case(*comm, {AttnMode::S2, 48, 24});  // N/C below G
  check_case(*comm, {AttnMode::S2, 37, 10});  // ragged parts and groups
  check_case(*comm, {AttnMode::Dense, 37, 0});
  check_case(*comm, {AttnMode::S2, 48, 8, 5, 2});  // tiles and offload on the parts
  comm->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d\n", comm->rank(), comm->world_size());
  std::fflush(stdout);
}

TEST_CASE("a LoRA+ step split over 2, 3 and 4 context-parallel ranks equals one process's") {
  if (!ll::test::child_mode(kChildVariable).empty()) return;
  ll::test::require_mpirun();
  for (int ranks : {2, 3, 4}) {
    const ll::test::MpiRun run = ll::test::run_self_under_mpirun(
        ranks, fmt::format("{}=model", kChildVariable), "context-parallel model child", 120);
    INFO("mpirun -np " << ranks << " exited with " << run.exit_code << "; output:\n" << run.output);
    CHECK(run.exit_code == 0);
    for (int r = 0; r < ranks; ++r)
      CHECK(run.output.find(fmt::format("CHILD_OK rank {} of {}", r, ranks)) != std::string::npos);
  }
}
