// Activation offload and token tiles on the CPU backend (tests/model/activation_schedule_check.h):
// offload moves the saved block inputs through host buffers and staging copies, so everything
// is bit for bit the same. Tiles split the row-wise stages: in exact arithmetic nothing
// changes, but in fp32 two things may: the sums over tokens of parameter gradients are grouped
// per tile, and OpenBLAS picks its kernel by matrix size (a one-row product is a gemv, small
// products take its small-matrix path), so a row's dot products may be summed in another order
// for another tile height. Both stay within a few ulps of the terms (1e-6 relative here); the
// emulated CUDA build, whose GEMM does not depend on the size, checks the rows bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "tests/error_text.h"
#include "tests/model/activation_schedule_check.h"

namespace {

using namespace ll;
using namespace ll::test;

std::vector<ScheduleCase> cases() {
  std::vector<ScheduleCase> out;
  ScheduleCase s2;
  s2.config = schedule_config();
  out.push_back(s2);  // S2-Attn, 37 tokens in groups of 4 (ragged last group)
  ScheduleCase dense = s2;
  dense.mode = AttnMode::Dense;
  out.push_back(dense);
  ScheduleCase sft = s2;
  sft.sft = true;
  out.push_back(sft);
  ScheduleCase roll = s2;
  roll.mode = AttnMode::S2Roll;
  roll.n = 32;
  out.push_back(roll);
  return out;
}

}  // namespace

TEST_CASE("activation offload changes no bit of a training run") {
  for (const ScheduleCase& cs : cases()) {
    CAPTURE(int(cs.mode));
    CAPTURE(cs.sft);
    CpuBackend backend;
    const ScheduleRun base = run_schedule(backend, cs, 0, 0);
    for (const int64_t offloaded : {1, 2, 3}) {
      CAPTURE(offloaded);
      CpuBackend b;
      const ScheduleRun run = run_schedule(b, cs, 0, offloaded);
      check_identical(base, run);
      // Host buffers of [N, D] fp32 for the offloaded layers, kept for the next step.
      CHECK(run.memory.host_in_use == offloaded * cs.n * cs.config.hidden_size * 4);
    }
    CpuBackend b1, b2;
    check_identical(run_schedule(b1, cs, 5, 0), run_schedule(b2, cs, 5, 3));
  }
}

TEST_CASE("token tiles: the same rows, parameter gradients summed tile by tile") {
  for (const ScheduleCase& cs : cases()) {
    CAPTURE(int(cs.mode));
    CAPTURE(cs.sft);
    CpuBackend backend;
    const ScheduleRun whole = run_schedule(backend, cs, 0, 0);
    // A tile that divides nothing (ragged last tile), one row, and a tile as long as the
    // sequence (the whole schedule itself).
    for (const int64_t tile : {5, 1, 16, 37}) {
      CAPTURE(tile);
      CpuBackend b;
      const ScheduleRun run = run_schedule(b, cs, tile, 0);
      // The first step's loss is the forward alone: row-wise, up to OpenBLAS's kernel choice.
      CHECK(run.losses[0] == doctest::Approx(whole.losses[0]).epsilon(1e-6));
      // fp32 sums over the tokens grouped per tile: differences of a few ulps of the terms.
      for (size_t s = 0; s < whole.grads.size(); ++s) {
        const double d = max_rel_diff(whole.grads[s], run.grads[s]);
        CAPTURE(d);
        CHECK(d <= 1e-5);
      }
      CHECK(run.losses[1] == doctest::Approx(whole.losses[1]).epsilon(1e-6));
      // AdamW divides by the root of the second moment: a parameter whose gradient sums to
      // nearly zero moves by up to lr either way when that sum is regrouped. So the trained
      // values agree elementwise within 2 x lr per step, and all but a few elements closely.
      size_t loose = 0;
      for (size_t i = 0; i < whole.trained.size(); ++i) {
        const double d = std::fabs(double(whole.trained[i]) - double(run.trained[i]));
        CHECK(d <= 2 * kScheduleLr * double(cs.steps));
        if (d > 1e-5 * std::max(1.0, std::fabs(double(whole.trained[i])))) ++loose;
      }
      CAPTURE(loose);
      CHECK(loose * 100 <= whole.trained.size());
      if (tile >= cs.n) check_identical(whole, run);
    }
  }
}

TEST_CASE("bad schedules are refused") {
  ScheduleCase cs;
  cs.config = schedule_config();
  CpuBackend backend;
  CHECK_THROWS_WITH_AS(run_schedule(backend, cs, 0, 4),
                       doctest::Contains("4 offloaded layers: a model of 4 layers offloads at "
                                         "most 3"),
                       Error);
  CHECK_THROWS_WITH_AS(run_schedule(backend, cs, -1, 0), doctest::Contains("token tiles of -1"),
                       Error);
}
