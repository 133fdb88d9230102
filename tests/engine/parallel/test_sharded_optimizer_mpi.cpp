// The sharded AdamW step in real multi-process runs. Run directly (by ctest), the parent test
// cases start this same executable under `mpirun -np 2` and `-np 3` (uneven shards that cut
// through tensors) with LL_DIST_TEST_CHILD naming the child case, and check mpirun's exit status
// and output.
//
// Each child rank fills its gradients with rank-dependent deterministic values, runs several
// sharded steps (clipping active on some), and after every step compares its parameters with a
// single-process reference it computes itself: the mean of every rank's gradients (from the
// same formula) fed to gradient_norm + adamw_update_all on its own copy of the parameters.
// Relative error <= 1e-6, and all ranks must hold identical bytes. Gradients are reported in
// buckets (the backward hook's way) on two steps of three, whole at the step on the third.
//
// Resume across world sizes: a 3-rank run writes each rank's optimizer shard (and rank 0 the
// full parameters) after step 3, as a checkpoint would; a 2-rank run reads the three shards,
// rebuilds the full moments (checked against the reference's), re-shards them for 2 ranks and
// continues; its steps must still equal the reference (3 ranks' mean gradients for steps 1-3,
// then 2 ranks' for steps 4-6).
// Skips (exit 77) only where mpirun is not installed (scripts/setup.sh installs openmpi-bin).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/run_agreement.h"
#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/optimizer_step.h"
#include "kernels/cpu/cpu_backend.h"
#include "optim/grad_clip.h"
#include "tests/data/scratch.h"
#include "tests/engine/parallel/mpirun_util.h"

using namespace ll;
using namespace ll::dist;
using ll::test::MpiRun;
using ll::test::require_mpirun;

namespace {

constexpr const char* kChildVariable = "LL_DIST_TEST_CHILD";
constexpr const char* kSaveDirVariable = "LL_DIST_TEST_SAVE_DIR";      // write shards after step 3
constexpr const char* kResumeDirVariable = "LL_DIST_TEST_RESUME_DIR";  // read them, go on at 4
constexpr const char* kResumeWorldVariable = "LL_DIST_TEST_RESUME_WORLD";  // their world size
constexpr int64_t kSteps = 6;
constexpr int64_t kSaveAfterStep = 3;
constexpr double kTolerance = 1e-6;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

// ---- The run's data, a function of (rank, step, tensor, element) only.

// Odd sizes: with T = 337, 2 ranks hold 169 + 168 and 3 ranks 113 + 112 + 112 elements, so
// every shard boundary cuts a tensor.
const std::vector<std::vector<int64_t>> kShapes = {{7}, {100}, {1}, {33, 5}, {64}};
// T = 2 < 3 ranks: rank 2's shard is empty.
const std::vector<std::vector<int64_t>> kTinyShapes = {{2}};

uint64_t mix(uint64_t x) {  // SplitMix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// In [0, 1), from the element's coordinates.
double uniform(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  return double(mix(mix(mix(mix(a) ^ b) ^ c) ^ d) >> 11) * 0x1.0p-53;
}

// Rank `rank`'s gradient of element j of tensor t in step `step`: full-mantissa values of one
// sign across ranks (no cancellation in the sum) and magnitude 0.25..1.5, so the gradient norm
// is about 10 and clipping at 1 is active.
float gradient(int rank, int64_t step, size_t tensor, int64_t j) {
  const double u = uniform(1, uint64_t(step), tensor, uint64_t(j));
  const double sign = uniform(2, uint64_t(step), tensor, uint64_t(j)) < 0.5 ? -1.0 : 1.0;
  const double rank_factor = 1.0 + 0.1 * rank + 0.05 * double((step + rank) % 3);
  return float(sign * (0.25 + 0.75 * u) * rank_factor);
}

// Clipping at 1 (active), 0 (off), 0.3 (active), 100 (inactive), 0.5 and 2 (active).
double max_grad_norm(int64_t step) {
  constexpr double kMaxNorms[] = {1.0, 0.0, 0.3, 100.0, 0.5, 2.0};
  return kMaxNorms[step - 1];
}
double learning_rate(int64_t step) { return 1e-2 / double(step); }
AdamWConfig adamw_config() {
  AdamWConfig config;
  config.weight_decay = 0.01;
  return config;
}

// Parameters as the CPU model makes them (value shares the master), with deterministic masters
// and non-zero moments.
std::vector<TrainableParam> make_params(Backend& backend,
                                        const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<TrainableParam> params;
  for (size_t t = 0; t < shapes.size(); ++t) {
    TrainableParam p;
    p.name = "param" + std::to_string(t);
    p.shape = shapes[t];
    p.master = backend.allocate(p.shape, DType::F32);
    p.value = p.master;
    p.grad = backend.allocate(p.shape, DType::F32);
    p.exp_avg = backend.allocate(p.shape, DType::F32);
    p.exp_avg_sq = backend.allocate(p.shape, DType::F32);
    const size_t n = size_t(p.master->numel());
    std::vector<float> master(n), m(n), v(n);  // [n] each
    for (size_t j = 0; j < n; ++j) {
      master[j] = float(2.0 * uniform(3, t, j, 0) - 1.0);
      m[j] = float(0.2 * uniform(4, t, j, 0) - 0.1);
      v[j] = float(0.01 * uniform(5, t, j, 0));
    }
    backend.upload_f32(*p.master, master.data());
    backend.upload_f32(*p.exp_avg, m.data());
    backend.upload_f32(*p.exp_avg_sq, v.data());
    params.push_back(std::move(p));
  }
  return params;
}

void set_rank_gradients(Backend& backend, std::vector<TrainableParam>& params, int rank,
                        int64_t step) {
  for (size_t t = 0; t < params.size(); ++t) {
    std::vector<float> g(size_t(params[t].grad->numel()));  // [n]
    for (size_t j = 0; j < g.size(); ++j) g[j] = gradient(rank, step, t, int64_t(j));
    backend.upload_f32(*params[t].grad, g.data());
  }
}

// The mean over `world` ranks' gradients, summed in double: what one process with all the
// ranks' micro-batches accumulates.
void set_mean_gradients(Backend& backend, std::vector<TrainableParam>& params, int world,
                        int64_t step) {
  for (size_t t = 0; t < params.size(); ++t) {
    std::vector<float> g(size_t(params[t].grad->numel()));  // [n]
    for (size_t j = 0; j < g.size(); ++j) {
      double sum = 0.0;
      for (int r = 0; r < world; ++r) sum += gradient(r, step, t, int64_t(j));
      g[j] = float(sum / world);
    }
    backend.upload_f32(*params[t].grad, g.data());
  }
}

// One single-process step; returns the gradient norm and whether it clipped.
double reference_step(Backend& backend, std::vector<TrainableParam>& params, int world,
                      int64_t step, bool& clipped) {
  set_mean_gradients(backend, params, world, step);
  const double norm = gradient_norm(backend, params);
  const double coefficient = clip_coefficient(norm, max_grad_norm(step));
  clipped = coefficient < 1.0;
  adamw_update_all(backend, params, adamw_config(), learning_rate(step), step, float(coefficient));
  return norm;
}

std::vector<float> host(Backend& backend, const OwnedTensor& t) {
  std::vector<float> values(size_t(t->numel()));  // [numel]
  backend.download_f32(values.data(), *t);
  return values;
}

std::vector<float> flat_state(Backend& backend, const std::vector<TrainableParam>& params,
                              OwnedTensor TrainableParam::*which) {
  std::vector<float> flat;  // [T]
  for (const TrainableParam& p : params) {
    const std::vector<float> v = host(backend, p.*which);
    flat.insert(flat.end(), v.begin(), v.end());
  }
  return flat;
}

// ||a - b|| / ||b|| over the vectors; every element also within atol + rtol |b|. NaN fails.
double relative_error(const std::vector<float>& a, const std::vector<float>& b, int64_t& bad) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0, ref = 0.0;
  bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    diff += d * d;
    ref += double(b[i]) * double(b[i]);
    if (!(std::fabs(d) <= 1e-7 + kTolerance * std::fabs(double(b[i])))) ++bad;
  }
  return ref > 0.0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

// Returns the relative error (for the log).
double check_close(const std::vector<float>& got, const std::vector<float>& want,
                   const std::string& what) {
  int64_t bad = 0;
  const double error = relative_error(got, want, bad);
  CHECK_MESSAGE(error <= kTolerance, what << ": relative error " << error);
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " elements outside 1e-7 + 1e-6 |ref|");
  return error;
}

// Every rank holds the same bytes: FNV-1a of the flat masters, gathered and compared.
void check_identical_on_all_ranks(Communicator& comm, const std::vector<float>& flat,
                                  const std::string& what) {
  const uint64_t hash = fnv1a_64(
      std::string_view(reinterpret_cast<const char*>(flat.data()), flat.size() * sizeof(float)));
  const std::vector<uint64_t> hashes = comm.all_gather_u64(hash, what);
  for (size_t r = 0; r < hashes.size(); ++r)
    CHECK_MESSAGE(hashes[r] == hashes[0], what << ": rank " << r << " differs from rank 0");
}

// ---- The shard files a checkpoint would hold (a test format: sizes, then the floats).

std::string shard_path(const std::string& dir, int rank) {
  return fmt::format("{}/optimizer-shard-{}.bin", dir, rank);
}

void write_floats(std::ofstream& out, const std::vector<float>& values) {
  const int64_t n = int64_t(values.size());
  out.write(reinterpret_cast<const char*>(&n), sizeof n);
  out.write(reinterpret_cast<const char*>(values.data()), std::streamsize(n * sizeof(float)));
}

std::vector<float> read_floats(std::ifstream& in) {
  int64_t n = -1;
  in.read(reinterpret_cast<char*>(&n), sizeof n);
  REQUIRE((in.good() && n >= 0 && n < 1000000));
  std::vector<float> values(static_cast<size_t>(n));  // [n]
  in.read(reinterpret_cast<char*>(values.data()), std::streamsize(n * sizeof(float)));
  REQUIRE(in.good());
  return values;
}

void write_shard(const std::string& path, const OptimizerShard& shard) {
  std::ofstream out(path, std::ios::binary);
  const int32_t header[2] = {shard.rank, shard.world_size};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  write_floats(out, shard.master);
  write_floats(out, shard.exp_avg);
  write_floats(out, shard.exp_avg_sq);
  REQUIRE(out.good());
}

OptimizerShard read_shard(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), path);
  int32_t header[2] = {-1, -1};
  in.read(reinterpret_cast<char*>(header), sizeof header);
  OptimizerShard shard;
  shard.rank = header[0];
  shard.world_size = header[1];
  shard.master = read_floats(in);
  shard.exp_avg = read_floats(in);
  shard.exp_avg_sq = read_floats(in);
  return shard;
}

// ---- The child run.

// Reports the gradients as a backward would, varying with the step: one tensor at a time from
// the last, pairs of neighbours from the last, or none (step() reduces everything). Buckets cut
// across shard boundaries, so one bucket is reduced to several roots.
void report_buckets(ShardedOptimizer& optimizer, int tensors, int64_t step) {
  const std::string context = fmt::format("step {}", step);
  if (step % 3 == 1) {
    for (int t = tensors - 1; t >= 0; --t) optimizer.gradients_ready(std::vector<int>{t}, context);
  } else if (step % 3 == 2) {
    for (int t = tensors - 1; t >= 1; t -= 2)
      optimizer.gradients_ready(std::vector<int>{t - 1, t}, context);
  }
}

// Runs the sharded steps first_step..kSteps on this rank and compares each with the reference.
// Returns how many reference steps clipped.
int run_and_compare(Communicator& comm, CpuBackend& backend, ShardedOptimizer& optimizer,
                    std::vector<TrainableParam>& params, std::vector<TrainableParam>& reference,
                    int64_t first_step, const std::string& save_dir) {
  const int world = comm.world_size();
  const int rank = comm.rank();
  int clipped_steps = 0;
  for (int64_t step = first_step; step <= kSteps; ++step) {
    CAPTURE(step);
    set_rank_gradients(backend, params, rank, step);
    report_buckets(optimizer, int(params.size()), step);
    const double norm = optimizer.step(adamw_config(), learning_rate(step), step,
                                       max_grad_norm(step), fmt::format("step {}", step));
    bool clipped = false;
    const double reference_norm = reference_step(backend, reference, world, step, clipped);
    clipped_steps += clipped;
    CHECK_MESSAGE(std::fabs(norm - reference_norm) <= kTolerance * reference_norm,
                  "norm " << norm << " vs reference " << reference_norm);

    const std::vector<float> masters = flat_state(backend, params, &TrainableParam::master);
    const std::vector<float> want = flat_state(backend, reference, &TrainableParam::master);
    const double error = check_close(masters, want, fmt::format("step {} master weights", step));
    check_close(flat_state(backend, params, &TrainableParam::value), want,
                fmt::format("step {} values", step));
    check_identical_on_all_ranks(comm, masters, fmt::format("step {} master weights", step));

    // This rank's moments against the reference's slice.
    const OptimizerShard shard = optimizer.export_shard();
    const FlatRange range = optimizer.layout().shard_range(rank);
    auto slice = [&](const std::vector<float>& full) {
      return std::vector<float>(full.begin() + range.begin, full.begin() + range.end);
    };
    check_close(shard.master, slice(want), fmt::format("step {} master shard", step));
    check_close(shard.exp_avg, slice(flat_state(backend, reference, &TrainableParam::exp_avg)),
                fmt::format("step {} exp_avg shard", step));
    check_close(shard.exp_avg_sq,
                slice(flat_state(backend, reference, &TrainableParam::exp_avg_sq)),
                fmt::format("step {} exp_avg_sq shard", step));
    std::printf(
        "rank %d of %d: step %lld norm %.9g (reference %.9g)%s, weights' relative "
        "error %.2g\n",
        rank, world, static_cast<long long>(step), norm, reference_norm, clipped ? " clipped" : "",
        error);

    if (!save_dir.empty() && step == kSaveAfterStep) {
      // A checkpoint: every rank its optimizer shard, rank 0 the full parameters.
      write_shard(shard_path(save_dir, rank), shard);
      if (rank == 0) {
        std::ofstream out(save_dir + "/params.bin", std::ios::binary);
        write_floats(out, masters);
        REQUIRE(out.good());
      }
      comm.barrier("after writing the shards");
    }
  }
  return clipped_steps;
}

// Loads the shards a `from_world`-rank run wrote after kSaveAfterStep and checks them against
// the reference; returns this rank's re-sharded state after loading params.bin into `params`.
OptimizerShard resume_from(const std::string& dir, int from_world, CpuBackend& backend,
                           std::vector<TrainableParam>& params,
                           const std::vector<TrainableParam>& reference, const ShardLayout& to,
                           int rank) {
  std::vector<OptimizerShard> shards;
  for (int r = 0; r < from_world; ++r) shards.push_back(read_shard(shard_path(dir, r)));
  const ShardLayout from(to.tensor_sizes(), from_world);
  const OptimizerShard full = full_optimizer_state(from, shards);
  check_close(full.master, flat_state(backend, reference, &TrainableParam::master),
              "rebuilt full masters");
  check_close(full.exp_avg, flat_state(backend, reference, &TrainableParam::exp_avg),
              "rebuilt full exp_avg");
  check_close(full.exp_avg_sq, flat_state(backend, reference, &TrainableParam::exp_avg_sq),
              "rebuilt full exp_avg_sq");
  const std::vector<std::vector<float>> per_tensor = split_by_tensor(from, full.exp_avg);
  for (size_t t = 0; t < params.size(); ++t)
    check_close(per_tensor[t], host(backend, reference[t].exp_avg), params[t].name + " exp_avg");

  std::ifstream in(dir + "/params.bin", std::ios::binary);
  const std::vector<float> masters = read_floats(in);
  REQUIRE(int64_t(masters.size()) == to.total_size());
  for (size_t t = 0; t < params.size(); ++t)
    backend.upload_f32(*params[t].master, masters.data() + to.tensor_offset(int(t)));

  const OptimizerShard mine = reshard_optimizer_state(from, shards, to, rank);
  // The shards' masters and rank 0's parameters are the same bytes (the all-gather made them so).
  const FlatRange range = to.shard_range(rank);
  CHECK(mine.master ==
        std::vector<float>(masters.begin() + range.begin, masters.begin() + range.end));
  return mine;
}

void child_steps(const std::vector<std::vector<int64_t>>& shapes) {
  auto comm = make_communicator(CommunicatorOptions{.timeout_s = 30.0});
  REQUIRE(comm->backend_name() == "MPI");
  CpuBackend backend;
  std::vector<TrainableParam> params = make_params(backend, shapes);
  std::vector<TrainableParam> reference = make_params(backend, shapes);
  const std::string save_dir = environment(kSaveDirVariable);
  const std::string resume_dir = environment(kResumeDirVariable);

  int64_t first_step = 1;
  int clipped_steps = 0;
  if (!resume_dir.empty()) {
    // The reference replays the earlier run: its world's mean gradients up to the checkpoint.
    const int from_world = std::atoi(environment(kResumeWorldVariable).c_str());
    REQUIRE(from_world >= 1);
    for (int64_t step = 1; step <= kSaveAfterStep; ++step) {
      bool clipped = false;
      reference_step(backend, reference, from_world, step, clipped);
      clipped_steps += clipped;
    }
    std::vector<int64_t> sizes;
    for (const TrainableParam& p : params) sizes.push_back(p.master->numel());
    const OptimizerShard mine = resume_from(resume_dir, from_world, backend, params, reference,
                                            ShardLayout(sizes, comm->world_size()), comm->rank());
    ShardedOptimizer optimizer(backend, *comm, params);
    optimizer.import_shard(mine);
    first_step = kSaveAfterStep + 1;
    clipped_steps += run_and_compare(*comm, backend, optimizer, params, reference, first_step, "");
  } else {
    ShardedOptimizer optimizer(backend, *comm, params);
    clipped_steps = run_and_compare(*comm, backend, optimizer, params, reference, 1, save_dir);
  }
  CHECK(clipped_steps >= 2);  // the test exercises clipping
  comm->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d (%d clipped steps)\n", comm->rank(), comm->world_size(),
              clipped_steps);
  std::fflush(stdout);
}

// ---- The parent: mpirun.

// Runs this executable's child case `mode` as `ranks` MPI processes with extra environment
// `env` ("A=1 B=2"); one OpenMP thread per rank (the ranks share few cores).
MpiRun run_under_mpirun(int ranks, const std::string& mode, const std::string& env = "") {
  return ll::test::run_self_under_mpirun(
      ranks, fmt::format("{}={} OMP_NUM_THREADS=1 {}", kChildVariable, mode, env),
      "mpi child: " + mode);
}

void check_run(const MpiRun& run, int ranks) {
  INFO("mpirun -np " << ranks << " exited with " << run.exit_code << " after " << run.seconds
                     << " s; output:\n"
                     << run.output);
  CHECK(run.exit_code == 0);
  for (int r = 0; r < ranks; ++r)
    CHECK(contains(run.output, fmt::format("CHILD_OK rank {} of {}", r, ranks)));
}

}  // namespace

TEST_CASE("mpi child: steps") {
  if (environment(kChildVariable) != "steps") return;  // only under mpirun, started below
  child_steps(kShapes);
}

TEST_CASE("mpi child: tiny") {
  if (environment(kChildVariable) != "tiny") return;
  child_steps(kTinyShapes);
}

TEST_CASE("sharded AdamW under mpirun -np 2 and -np 3 equals one process with the mean gradient") {
  if (!environment(kChildVariable).empty()) return;
  require_mpirun();
  for (int ranks : {2, 3}) check_run(run_under_mpirun(ranks, "steps"), ranks);
  // Fewer elements than ranks: rank 2 owns nothing but still takes part in every collective.
  check_run(run_under_mpirun(3, "tiny"), 3);
}

TEST_CASE("optimizer shards written by 3 ranks resume on 2 ranks and continue the same run") {
  if (!environment(kChildVariable).empty()) return;
  require_mpirun();
  const ll::test::ScratchDir dir("sharded_resume");
  const std::string save = fmt::format("{}='{}'", kSaveDirVariable, dir.path().string());
  check_run(run_under_mpirun(3, "steps", save), 3);
  for (int r = 0; r < 3; ++r) REQUIRE(std::filesystem::exists(shard_path(dir.path().string(), r)));
  const std::string resume =
      fmt::format("{}='{}' {}=3", kResumeDirVariable, dir.path().string(), kResumeWorldVariable);
  check_run(run_under_mpirun(2, "steps", resume), 2);
}
