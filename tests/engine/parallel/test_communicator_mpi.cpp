// The MPI communicator in real multi-process runs. Run directly (by ctest), the parent test
// cases start this same executable under `mpirun -np 2` and `-np 3` (uneven shards) with
// LL_DIST_TEST_CHILD naming the child case to run, and check mpirun's exit status and output.
// Each child rank checks every collective against values it computes itself for all ranks
// (closed-form sums of rank-dependent data), run agreement, and the timeout: one rank skips a
// collective and the other must get the timeout error within the timeout + slack, then end
// every rank with abort_world.
// Skips (exit 77) only where mpirun is not installed (scripts/setup.sh installs openmpi-bin).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/run_agreement.h"
#include "engine/parallel/shard_layout.h"
#include "tests/engine/parallel/mpirun_util.h"

using namespace ll::dist;
using ll::test::MpiRun;
using ll::test::require_mpirun;

namespace {

constexpr const char* kChildVariable = "LL_DIST_TEST_CHILD";
constexpr double kTimeoutTestSeconds = 2.0;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Which child case this process runs ("" in the parent).
std::string child_mode() { return ll::test::child_mode(kChildVariable); }

using ll::test::rank_contribution;
using ll::test::seconds_since;

// Runs this executable's child case `mode` as `ranks` MPI processes.
MpiRun run_under_mpirun(int ranks, const std::string& mode) {
  return ll::test::run_self_under_mpirun(ranks, fmt::format("{}={}", kChildVariable, mode),
                                         "mpi child: " + mode);
}

void check_collectives(Communicator& communicator) {
  const int world = communicator.world_size();
  const int rank = communicator.rank();

  // all_reduce_sum over doubles: values[i] = (rank + 1) * (i + 1) + 2^-rank.
  std::vector<double> values(5);  // [5]
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = (rank + 1) * double(i + 1) + std::ldexp(1.0, -rank);
  communicator.all_reduce_sum(values, "test all_reduce_sum");
  for (size_t i = 0; i < values.size(); ++i) {
    double expected = double(i + 1) * world * (world + 1) / 2.0;
    for (int r = 0; r < world; ++r) expected += std::ldexp(1.0, -r);
    CHECK(values[i] == expected);
  }

  // reduce_scatter_sum then all_gather over uneven shards (sizes 7, 0, 12, 3 and a large
  // tensor that makes MPI use its multi-round algorithms), then the mean round trip.
  const ShardLayout layout({7, 0, 12, 3, 100003}, world);
  const std::vector<int64_t> shard_sizes = layout.shard_sizes();
  const auto range = layout.shard_range(rank);
  std::vector<float> full(size_t(layout.total_size()));  // [T], this rank's gradients
  for (int64_t i = 0; i < layout.total_size(); ++i) full[size_t(i)] = rank_contribution(rank, i);
  std::vector<float> shard(size_t(range.size()), std::nanf(""));  // [shard_size]
  communicator.reduce_scatter_sum(full, shard, shard_sizes, "test reduce_scatter_sum");
  int64_t wrong = 0;
  for (int64_t k = 0; k < range.size(); ++k) {
    float expected = 0.0f;
    for (int r = 0; r < world; ++r) expected += rank_contribution(r, range.begin + k);
    if (!(shard[size_t(k)] == expected)) ++wrong;
  }
  CHECK_MESSAGE(wrong == 0, wrong << " of " << range.size() << " reduce-scattered elements wrong");

  for (float& x : shard) x /= float(world);  // the mean, as the optimizer will take it
  std::vector<float> gathered(full.size(), std::nanf(""));  // [T]
  communicator.all_gather(shard, gathered, shard_sizes, "test all_gather");
  wrong = 0;
  for (int64_t i = 0; i < layout.total_size(); ++i) {
    float sum = 0.0f;
    for (int r = 0; r < world; ++r) sum += rank_contribution(r, i);
    if (!(gathered[size_t(i)] == sum / float(world))) ++wrong;
  }
  CHECK_MESSAGE(wrong == 0, wrong << " of " << gathered.size() << " gathered elements wrong");

  // all_gather places each rank's shard at its offset: shards filled with their owner's rank.
  std::vector<float> owner_shard(size_t(range.size()), float(rank));  // [shard_size]
  communicator.all_gather(owner_shard, gathered, shard_sizes, "test all_gather owners");
  for (int r = 0; r < world; ++r) {
    const auto owned = layout.shard_range(r);
    int64_t misplaced = 0;
    for (int64_t i = owned.begin; i < owned.end; ++i) misplaced += gathered[size_t(i)] != float(r);
    CHECK_MESSAGE(misplaced == 0,
                  "rank " << r << "'s shard misplaced in " << misplaced << " elements");
  }

  // broadcast from the last rank.
  const int root = world - 1;
  std::vector<std::byte> bytes(37);  // [37]
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = std::byte(rank == root ? (i * 31 + 5) & 0xff : 0xee);
  communicator.broadcast(bytes, root, "test broadcast");
  for (size_t i = 0; i < bytes.size(); ++i) CHECK(bytes[i] == std::byte((i * 31 + 5) & 0xff));

  // all_gather_u64: one value per rank, high bit included.
  const auto gathered_u64 = communicator.all_gather_u64(
      0x1234000000000000ull + uint64_t(rank * rank) + (rank % 2 ? 1ull << 63 : 0), "test u64");
  REQUIRE(gathered_u64.size() == size_t(world));
  for (int r = 0; r < world; ++r)
    CHECK(gathered_u64[size_t(r)] ==
          0x1234000000000000ull + uint64_t(r * r) + (r % 2 ? 1ull << 63 : 0));
  communicator.barrier("test barrier");

  // Bad arguments are refused on every rank before any rank enters MPI.
  const std::string bad_root = fmt::format("root rank {} does not exist", world);
  CHECK_THROWS_WITH_AS(communicator.broadcast(bytes, world, "test"),
                       doctest::Contains(bad_root.c_str()), ll::Error);
  const std::string bad_sizes = fmt::format("1 shard sizes given for a world of {} ranks", world);
  CHECK_THROWS_WITH_AS(
      communicator.reduce_scatter_sum(full, shard, std::vector<int64_t>{layout.total_size()}, "t"),
      doctest::Contains(bad_sizes.c_str()), ll::Error);
}

void check_agreement(Communicator& communicator) {
  const uint64_t same = fnv1a_64("model kjv-tiny | ctx 512 | data bible.shard");
  CHECK_NOTHROW(check_ranks_agree(communicator, same, "model/config/data"));
  // Rank 1 was started with other options.
  const uint64_t rank1 = fnv1a_64("model kjv-tiny | ctx 1024 | data bible.shard");
  const uint64_t mine = communicator.rank() == 1 ? rank1 : same;
  try {
    check_ranks_agree(communicator, mine, "model/config/data");
    FAIL("rank 1's different hash was not detected");
  } catch (const ll::Error& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(contains(message, fmt::format("rank {}: rank 1 (hash {:#018x}) differs from rank 0 "
                                        "(hash {:#018x})",
                                        communicator.rank(), rank1, same)));
    CHECK(contains(message,
                   "in model/config/data: every rank must run the same command on the same files"));
    CHECK(!contains(message, "rank 2 (hash"));
  }
}

}  // namespace

TEST_CASE("mpi child: collectives") {
  if (child_mode() != "collectives") return;  // only under mpirun, started by the case below
  auto communicator = make_communicator(CommunicatorOptions{.timeout_s = 30.0});
  REQUIRE(communicator->backend_name() == "MPI");
  REQUIRE(std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr);
  CHECK(communicator->world_size() == std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")));
  CHECK(communicator->rank() == std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")));
  CHECK(communicator->local_rank() == communicator->rank());  // one node
  check_collectives(*communicator);
  check_agreement(*communicator);
  communicator->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d\n", communicator->rank(), communicator->world_size());
  std::fflush(stdout);
}

TEST_CASE("mpi child: timeout") {
  if (child_mode() != "timeout") return;
  auto communicator = make_communicator(CommunicatorOptions{.timeout_s = kTimeoutTestSeconds});
  communicator->barrier("start");
  if (communicator->rank() == 1) {
    // This rank "hangs": it never joins the all-reduce. abort_world on rank 0 ends it.
    std::this_thread::sleep_for(std::chrono::seconds(30));
    std::printf("HUNG_RANK_WAS_NOT_STOPPED\n");
    std::fflush(stdout);
    std::_Exit(0);
  }
  std::vector<double> gradient_norm = {1.0};  // [1]
  const auto start = std::chrono::steady_clock::now();
  std::string message;
  try {
    communicator->all_reduce_sum(gradient_norm, "step 12 gradients");
  } catch (const ll::Error& e) {
    message = e.what();
  }
  const double waited = seconds_since(start);
  CHECK(message ==
        "rank 0: all_reduce_sum (step 12 gradients) did not complete within 2 s: "
        "another rank died or hangs");
  CHECK(waited >= kTimeoutTestSeconds);
  CHECK(waited < kTimeoutTestSeconds + 3.0);
  // The communicator is unusable now; a later call says why.
  CHECK_THROWS_WITH_AS(
      communicator->barrier("step 13"),
      doctest::Contains("barrier (step 13) cannot run after an earlier failure (rank 0: "
                        "all_reduce_sum (step 12 gradients) did not complete"),
      ll::Error);
  if (message.find("did not complete within 2 s") != std::string::npos && waited >= 2.0 &&
      waited < 5.0)
    std::printf("TIMEOUT_OK rank 0 waited %.2f s\n", waited);
  std::fflush(stdout);
  communicator->abort_world(message, 3);
}

TEST_CASE("collectives under mpirun with 2 ranks and 3 ranks (uneven shards)") {
  if (!child_mode().empty()) return;
  require_mpirun();
  for (int ranks : {2, 3}) {
    const MpiRun run = run_under_mpirun(ranks, "collectives");
    INFO("mpirun -np " << ranks << " exited with " << run.exit_code << " after " << run.seconds
                       << " s; output:\n"
                       << run.output);
    CHECK(run.exit_code == 0);
    for (int r = 0; r < ranks; ++r)
      CHECK(contains(run.output, fmt::format("CHILD_OK rank {} of {}", r, ranks)));
  }
}

TEST_CASE("a rank that hangs makes the others fail within the timeout, and abort_world ends all") {
  if (!child_mode().empty()) return;
  require_mpirun();
  const MpiRun run = run_under_mpirun(2, "timeout");
  INFO("mpirun exited with " << run.exit_code << " after " << run.seconds << " s; output:\n"
                             << run.output);
  CHECK(contains(run.output, "TIMEOUT_OK rank 0"));
  CHECK(contains(run.output,
                 "rank 0: all_reduce_sum (step 12 gradients) did not complete within 2 s: "
                 "another rank died or hangs"));
  CHECK(run.exit_code == 3);  // abort_world's code, passed on by mpirun
  CHECK(!contains(run.output, "HUNG_RANK_WAS_NOT_STOPPED"));
  // The hung rank sleeps 30 s: the whole run ending well before shows that it was stopped.
  CHECK(run.seconds < kTimeoutTestSeconds + 15.0);
}
