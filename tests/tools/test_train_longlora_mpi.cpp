// ./train_longlora under `mpirun -np W` on the CPU backend (tiny fixture model, -ctx 64):
// W ranks with --grad-accum k train what one process with --grad-accum W*k trains (losses,
// gradient norms and final weights within 1e-6, --shuffle off and on, W = 2 and 3: uneven
// shards); sharded checkpoints resume bit for bit with the same world size and continue the
// same run with another (3 -> 2, 3 -> 1, 1 -> 2); a rank that hangs or dies ends the run
// within the timeout, naming the rank or the step, and the last committed checkpoint resumes
// in one process; ranks started with different options are refused, naming the rank.
// Every rank runs with OMP_NUM_THREADS=1. Skips (exit 77) where mpirun is not installed.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/train/checkpoint.h"
#include "engine/train/metrics_log.h"
#include "model/formats/adapter_io.h"
#include "tests/engine/parallel/mpirun_util.h"
#include "tests/test_paths.h"

namespace {

namespace fs = std::filesystem;

using Run = ll::test::MpiRun;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

using ll::test::require_mpirun;

Run shell(const std::string& command) { return ll::test::run_shell(command); }

// The command prefix for `ranks` processes (1: no mpirun at all, a plain run); coreutils'
// timeout keeps a broken run from hanging the suite.
std::string launcher(int ranks, const std::string& env = "") {
  return "OMP_NUM_THREADS=1 " + env + (env.empty() ? "" : " ") +
         ll::test::mpirun_prefix(ranks, 60, /*plain_single=*/true);
}

const std::string kTool = ll::test::binary_path("train_longlora");

fs::path make_data(const fs::path& dir) {
  std::mt19937 rng(321);
  std::uniform_int_distribution<int32_t> tok(3, 511);
  const fs::path path = dir / "train.bin";
  std::ofstream f(path, std::ios::binary);
  for (int i = 0; i < 64 * 40; ++i) {  // 40 windows of 64: a learnable pattern with noise
    const uint16_t v = uint16_t(i % 7 == 0 ? tok(rng) : 3 + (i * 5) % 40);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path;
}

// The run's options, --grad-accum and the output directory aside.
std::string base_args(const fs::path& data, const std::string& shuffle) {
  return fmt::format(
      "-m {} --data {} --data-format raw-u16 -ctx 64 --lr 1e-4 --warmup 1 --seed 7 "
      "--device cpu --shuffle {}",
      ll::test::source_path("tests/fixtures/tiny_llama"), data.string(), shuffle);
}

Run train(int ranks, int64_t grad_accum, const std::string& args, const fs::path& out,
          const std::string& extra = "", const std::string& env = "") {
  return shell(fmt::format("{}{} {} --grad-accum {} --out {} {}", launcher(ranks, env), kTool, args,
                           grad_accum, out.string(), extra));
}

std::vector<ll::StepMetrics> steps_of(const fs::path& out) {
  return ll::MetricsLog::read_steps((out / "metrics.jsonl").string());
}

double relative_error(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Steps [from, to] of `run` against the reference: loss and gradient norm within tol.
void check_losses(const fs::path& run, const fs::path& reference, int64_t from, int64_t to,
                  double tol) {
  const auto got = steps_of(run), want = steps_of(reference);
  for (int64_t step = from; step <= to; ++step) {
    const ll::StepMetrics* g = nullptr;
    const ll::StepMetrics* w = nullptr;
    for (const auto& m : got) g = m.step == step ? &m : g;
    for (const auto& m : want) w = m.step == step ? &m : w;
    REQUIRE_MESSAGE(g != nullptr, run.string() << " has no step " << step);
    REQUIRE(w != nullptr);
    INFO(run.string() << " step " << step << ": loss " << g->loss << " vs " << w->loss
                      << ", grad norm " << g->grad_norm << " vs " << w->grad_norm);
    CHECK(relative_error(g->loss, w->loss) <= tol);
    CHECK(relative_error(g->grad_norm, w->grad_norm) <= tol);
    CHECK(g->tokens == w->tokens);
  }
}

// The final adapter's trained weights, all tensors together: ||a - b|| / ||b|| <= tol (0: bit
// for bit). Each tensor alone within 10 x tol: a LoRA B matrix starts at zero, so its error is
// relative to a few AdamW updates, where fp32 summation order shows most (AdamW divides
// gradients that cancel to near zero by their own magnitude).
void check_weights(const fs::path& run, const fs::path& reference, double tol, int tensors = 22) {
  const ll::AdapterDir a = ll::read_adapter_dir(run.string());
  const ll::AdapterDir b = ll::read_adapter_dir(reference.string());
  int compared = 0;
  double diff_all = 0.0, norm_all = 0.0, worst = 0.0;  // worst: the largest tensor's, reported
  using Tensors = std::map<std::string, ll::HostTensor>;
  const std::pair<const Tensors*, const Tensors*> pairs[] = {
      {&a.lora_tensors, &b.lora_tensors}, {&a.trainable_params, &b.trainable_params}};
  for (const auto& maps : pairs) {
    REQUIRE(maps.first->size() == maps.second->size());
    for (const auto& [name, want] : *maps.second) {
      const auto it = maps.first->find(name);
      REQUIRE_MESSAGE(it != maps.first->end(), name);
      REQUIRE(it->second.values.size() == want.values.size());
      double diff = 0.0, norm = 0.0;
      for (size_t i = 0; i < want.values.size(); ++i) {
        const double d = double(it->second.values[i]) - double(want.values[i]);
        diff += d * d;
        norm += double(want.values[i]) * double(want.values[i]);
      }
      INFO(run.string() << " " << name << ": relative error " << std::sqrt(diff / norm));
      worst = std::max(worst, std::sqrt(diff / norm));
      if (tol == 0.0) {
        CHECK(it->second.values == want.values);
      } else {
        CHECK(std::sqrt(diff) <= 10 * tol * std::sqrt(norm));
      }
      diff_all += diff;
      norm_all += norm;
      ++compared;
    }
  }
  CHECK(compared == tensors);  // tiny_llama: 16 LoRA matrices, embeddings and 5 norms
  MESSAGE(run.string() << ": relative weight error " << std::sqrt(diff_all / norm_all)
                       << ", largest of one tensor " << worst);
  CHECK(std::sqrt(diff_all) <= tol * std::sqrt(norm_all));
}

// A copy of `checkpoint` as the only one in a fresh output directory, to resume from.
fs::path fresh_out_with(const fs::path& checkpoint, const fs::path& out) {
  fs::remove_all(out);
  fs::create_directories(out);
  fs::copy(checkpoint, out / checkpoint.filename(), fs::copy_options::recursive);
  return out;
}

}  // namespace

TEST_CASE("W ranks x --grad-accum k train what one process with W*k does; checkpoints re-shard") {
  require_mpirun();
  const fs::path dir = ll::test::fresh_temp_dir("train_mpi");
  const fs::path data = make_data(dir);
  for (const std::string shuffle : {"off", "on"}) {
    CAPTURE(shuffle);
    const std::string args = base_args(data, shuffle) + " --steps 4 --save-every 2";
    const fs::path single = dir / ("single_" + shuffle), two = dir / ("two_" + shuffle),
                   three = dir / ("three_" + shuffle);
    for (const auto& [ranks, k, out] :
         {std::tuple{1, 6, single}, std::tuple{2, 3, two}, std::tuple{3, 2, three}}) {
      const Run r = train(ranks, k, args, out);
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      if (ranks > 1) {
        CHECK(contains(r.output, fmt::format("data parallel  {} ranks (MPI; collectives: MPI (host "
                                             "memory)), {} windows per rank and step = 6 per step",
                                             ranks, k)));
        // Rank 0 alone prints the setup and summary.
        CHECK(r.output.find("model          ") == r.output.rfind("model          "));
        CHECK(r.output.find("done           ") == r.output.rfind("done           "));
      }
    }
    check_losses(two, single, 1, 4, 1e-6);
    check_losses(three, single, 1, 4, 1e-6);
    check_weights(two, single, 1e-6);
    check_weights(three, single, 1e-6);
    // The sharded checkpoint: a shard per rank and the manifest.
    const fs::path ck3 = three / "checkpoint-00000002";
    for (int r = 0; r < 3; ++r)
      CHECK(fs::exists(ck3 / fmt::format("optimizer_shard-{:05d}-of-00003.safetensors", r)));
    CHECK(fs::exists(ck3 / "checkpoint_manifest.json"));
    CHECK_FALSE(fs::exists(ck3 / "optimizer_state.safetensors"));
    if (shuffle == "off") continue;

    // Same world size: bit for bit.
    const fs::path again = fresh_out_with(ck3, dir / "three_again");
    Run r = train(3, 2, args, again, "--resume");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    check_losses(again, three, 3, 4, 0.0);
    check_weights(again, three, 0.0);
    // 3 ranks -> 2 ranks, 3 ranks -> one process, one process -> 2 ranks: the same run.
    const fs::path to_two = fresh_out_with(ck3, dir / "three_to_two");
    r = train(2, 3, args, to_two, "--resume");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.output, "resume         from"));
    check_losses(to_two, single, 3, 4, 1e-6);
    check_weights(to_two, single, 1e-6);
    const fs::path to_one = fresh_out_with(ck3, dir / "three_to_one");
    r = train(1, 6, args, to_one, "--resume");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    check_losses(to_one, single, 3, 4, 1e-6);
    check_weights(to_one, single, 1e-6);
    const fs::path one_to_two = fresh_out_with(single / "checkpoint-00000002", dir / "one_to_two");
    r = train(2, 3, args, one_to_two, "--resume");
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    check_losses(one_to_two, single, 3, 4, 1e-6);
    check_weights(one_to_two, single, 1e-6);
    // Another global batch is another run.
    const fs::path other = fresh_out_with(ck3, dir / "other_batch");
    r = train(2, 2, args, other, "--resume");
    CHECK(r.exit_code != 0);
    CHECK(contains(r.output,
                   "it was trained with 6 sequences per step (--grad-accum 2 on 3 "
                   "ranks), this run has 4 (--grad-accum 2 on 2 ranks)"));
  }
  fs::remove_all(dir);
}

TEST_CASE("--sft: 2 ranks x 2 examples train what one process with 4 does (HF averaging)") {
  require_mpirun();
  const fs::path dir = ll::test::fresh_temp_dir("train_mpi_sft");
  // Examples of different lengths: the step's loss is the mean of the 4 examples' mean losses.
  const std::string args = fmt::format(
      "-m {} --sft {} -ctx 128 --lr 1e-3 --warmup 0 --seed 3 --device cpu --shuffle on --steps 3",
      ll::test::source_path("models/kjv-tiny"),
      ll::test::source_path("tests/fixtures/sft/tiny_alpaca.json"));
  const Run one = train(1, 4, args, dir / "one");
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  const Run two = train(2, 2, args, dir / "two");
  INFO(two.output);
  REQUIRE(two.exit_code == 0);
  // The data warnings once, from rank 0.
  CHECK(two.output.find("warning: 2 of 9 records were skipped") ==
        two.output.rfind("warning: 2 of 9 records were skipped"));
  check_losses(dir / "two", dir / "one", 1, 3, 1e-6);
  check_weights(dir / "two", dir / "one", 1e-6, 42);  // kjv-tiny: 32 LoRA, embeddings, 9 norms
  fs::remove_all(dir);
}

TEST_CASE("a rank that hangs or dies ends the run; the last committed checkpoint resumes") {
  require_mpirun();
  const fs::path dir = ll::test::fresh_temp_dir("train_mpi_fault");
  const fs::path data = make_data(dir);
  const std::string args = base_args(data, "on") + " --steps 4 --save-every 1 --dist-timeout 2";

  SUBCASE("hang: the others time out, naming the step") {
    const fs::path out = dir / "hang";
    const Run r = train(2, 3, args, out, "", "LL_TEST_DIST_FAULT=1:2:hang");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.seconds < 30.0);
    // Rank 0 waits in the first gradient bucket its backward hands over (the model's head).
    CHECK(contains(r.output,
                   "train_longlora: error: rank 0: reduce_sum (step 2 gradients) did "
                   "not complete within 2 s: another rank died or hangs; the last good "
                   "checkpoint is"));
  }
  SUBCASE("kill: mpirun ends the run, naming the rank") {
    const fs::path out = dir / "kill";
    const Run r = train(2, 3, args, out, "", "LL_TEST_DIST_FAULT=1:2:kill");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.seconds < 30.0);
    CHECK(contains(r.output, "process rank 1"));
  }
  for (const char* name : {"hang", "kill"}) {
    const fs::path out = dir / name;
    if (!fs::exists(out)) continue;
    // Step 1 was committed; nothing of step 2 counts.
    const auto latest = ll::latest_checkpoint(out.string());
    REQUIRE(latest.has_value());
    CHECK(fs::path(*latest).filename() == "checkpoint-00000001");
    const ll::Checkpoint ck = ll::read_checkpoint(*latest);
    CHECK(ck.state.world_size == 2);
    CHECK(ck.shards.size() == 2);
    // One process continues it.
    const Run r = train(1, 6, base_args(data, "on") + " --steps 2", out, "--resume");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(contains(r.output, "resume         from"));
  }
  fs::remove_all(dir);
}

TEST_CASE("ranks started with different options are refused, naming the rank") {
  require_mpirun();
  const fs::path dir = ll::test::fresh_temp_dir("train_mpi_agree");
  const fs::path data = make_data(dir);
  // Rank 1 gets another --seed through a wrapper script.
  const fs::path wrapper = dir / "wrapper.sh";
  {
    std::ofstream f(wrapper);
    f << "#!/bin/sh\nif [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then exec \"$@\" --seed 8; fi\n"
         "exec \"$@\"\n";
  }
  fs::permissions(wrapper, fs::perms::owner_all);
  std::string args = base_args(data, "off");
  // The default seed (42) on ranks 0 and 2, 8 on rank 1.
  args.erase(args.find(" --seed 7"), std::string(" --seed 7").size());
  const Run r = shell(fmt::format("{}{} {} {} --steps 2 --grad-accum 1 --out {}", launcher(3),
                                  wrapper.string(), kTool, args, (dir / "out").string()));
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(contains(r.output, "rank 1 (hash"));
  CHECK(contains(r.output, "differs from rank 0"));
  CHECK_FALSE(contains(r.output, "rank 2 (hash"));
  CHECK(contains(r.output, "every rank must run the same command on the same files"));
  fs::remove_all(dir);
}

TEST_CASE("--dry-run --world-size shows the per-rank footprint") {
  const Run r = shell(fmt::format("{} -m {} -ctx 64 --device cpu --dry-run --world-size 3", kTool,
                                  ll::test::source_path("tests/fixtures/tiny_llama")));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // tiny_llama with LoRA r 8 on q,k,v,o and LoRA+: 40256 trained elements, 13419 per rank;
  // moments 2 x 40256 x 4 bytes = 314.50 KiB, shards 4 x 13419 x 4 = 209.67 KiB.
  CHECK(contains(r.output, "data parallel    3 ranks"));
  CHECK(contains(r.output, "per rank: AdamW moments 314.50 KiB replaced by shards 209.67 KiB"));
  CHECK(contains(r.output, "at most 13419 of 40256 elements"));
  const Run one = shell(fmt::format("{} -m {} -ctx 64 --device cpu --dry-run", kTool,
                                    ll::test::source_path("tests/fixtures/tiny_llama")));
  CHECK_FALSE(contains(one.output, "data parallel"));
}
