// Activation offload and token tiles on the CUDA backend (tests/model/activation_schedule_check.h):
// the saved block inputs go to pinned host memory on the copy stream and come back one layer
// ahead, ordered by events only, so a run with offload is bit for bit the run without (in the
// emulated build the stand-in runtime runs the copy stream lazily: a missing wait would show
// here as wrong data). Tiles: the same rows in the emulated build, whose GEMM does not depend on
// the matrix height; on a GPU cuBLASLt may pick another algorithm per height, so bf16 bounds.
// The host bytes and the device peak against the plan.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "model/memory_plan.h"
#include "tests/model/activation_schedule_check.h"

namespace {

using namespace ll;
using namespace ll::test;

std::vector<ScheduleCase> cases() {
  ScheduleCase s2;
  s2.config = schedule_config();
  ScheduleCase sft_dense = s2;
  sft_dense.mode = AttnMode::Dense;
  sft_dense.sft = true;
  return {s2, sft_dense};
}

}  // namespace

TEST_CASE("CUDA: activation offload changes no bit of a training run") {
  ll::test::require_gpu();
  for (const ScheduleCase& cs : cases()) {
    CAPTURE(int(cs.mode));
    CudaBackend base_backend;
    const ScheduleRun base = run_schedule(base_backend, cs, 0, 0);
    for (const int64_t offloaded : {2, 3}) {
      CAPTURE(offloaded);
      CudaBackend backend;
      const ScheduleRun run = run_schedule(backend, cs, 0, offloaded);
      check_identical(base, run);
      // Pinned host buffers of [N, D] bf16 for the offloaded layers, kept for the next step.
      CHECK(run.memory.host_in_use == offloaded * cs.n * cs.config.hidden_size * 2);
    }
  }
}

TEST_CASE("CUDA: token tiles give the same rows") {
  ll::test::require_gpu();
  for (const ScheduleCase& cs : cases()) {
    CAPTURE(int(cs.mode));
    CudaBackend whole_backend;
    const ScheduleRun whole = run_schedule(whole_backend, cs, 0, 0);
    CudaBackend backend;
    const ScheduleRun run = run_schedule(backend, cs, 5, 3);
    if (ll::test::emulated_gpu()) {
      CHECK(run.losses[0] == whole.losses[0]);
    } else {
      CHECK(run.losses[0] == doctest::Approx(whole.losses[0]).epsilon(1e-3));
    }
    // Parameter gradients are fp32 sums over tokens regrouped per tile; on a GPU the bf16
    // activations of another GEMM algorithm differ by an ulp as well.
    const double bound = ll::test::emulated_gpu() ? 1e-4 : 2e-2;
    for (size_t s = 0; s < whole.grads.size(); ++s) {
      const double d = max_rel_diff(whole.grads[s], run.grads[s]);
      CAPTURE(d);
      CHECK(d <= bound);
    }
  }
}

TEST_CASE("CUDA: the plan equals the device peak and the pinned host bytes") {
  ll::test::require_gpu();
  ScheduleCase cs;
  cs.config = schedule_config();
  cs.steps = 1;
  CudaBackend backend;
  const ScheduleRun run = run_schedule(backend, cs, 8, 3);
  MemoryPlanInput in;
  in.config = cs.config;
  in.lora = schedule_setup().lora;
  in.seq_len = cs.n;
  in.classifier_chunk = 16;
  in.backend = backend.traits();
  in.tile_tokens = 8;
  in.offloaded_layers = 3;
  const MemoryPlan plan = plan_training_memory(in);
  CHECK(run.memory.host_peak == plan.host_bytes);
  // Byte for byte: the backward's per-call scratch the plan leaves out (the norm and bias
  // gradients' partial sums, kernels/cuda/rmsnorm.cu) lives inside one op, never beside the
  // attention backward's workspace, which the plan counts and which is larger here.
  MESSAGE("plan " << plan.total() << " bytes, cuda backend peak " << run.memory.peak);
  CHECK(run.memory.peak == plan.total());
}

#else
TEST_CASE("CUDA activation schedule") { ll::test::require_gpu(); }
#endif
