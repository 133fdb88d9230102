// The world of one (what a plain ./train_longlora gets): collectives are copies, sizes are still
// checked, and no MPI is initialised. Also the run-agreement hash against FNV-1a's published
// test vectors.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#if defined(LL_HAVE_MPI)
#include "engine/parallel/mpi_communicator.h"
#endif
#include "engine/parallel/run_agreement.h"

using namespace ll::dist;

TEST_CASE("make_communicator outside mpirun is a world of one that never starts MPI") {
  REQUIRE_MESSAGE(!launched_by_mpi(), "run this test directly, not under mpirun");
  const auto communicator = make_communicator();
  CHECK(communicator->backend_name() == "single process");
  CHECK(communicator->rank() == 0);
  CHECK(communicator->world_size() == 1);
  CHECK(communicator->local_rank() == 0);
#if defined(LL_HAVE_MPI)  // a build without MPI (-DLL_ENABLE_MPI=OFF) cannot start it at all
  int initialised = 1;
  MPI_Initialized(&initialised);  // allowed before MPI_Init
  CHECK(initialised == 0);
#endif
}

TEST_CASE("single-process collectives copy and check their sizes") {
  SingleProcessCommunicator communicator;
  std::vector<double> sums = {1.5, -2.0, 3.25};  // [3]
  communicator.all_reduce_sum(sums, "test");
  CHECK(sums == std::vector<double>{1.5, -2.0, 3.25});

  const std::vector<float> full = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};  // [5]
  const std::vector<int64_t> shard_sizes = {5};                    // [world]
  std::vector<float> shard(5, -1.0f);                              // [5]
  communicator.reduce_scatter_sum(full, shard, shard_sizes, "test");
  CHECK(shard == full);
  std::vector<float> gathered(5, -1.0f);  // [5]
  communicator.all_gather(shard, gathered, shard_sizes, "test");
  CHECK(gathered == full);

  CHECK(communicator.all_gather_u64(0xfeedbeefcafe1234ull, "test") ==
        std::vector<uint64_t>{0xfeedbeefcafe1234ull});
  std::vector<std::byte> bytes(4, std::byte{7});
  communicator.broadcast(bytes, 0, "test");
  CHECK(bytes == std::vector<std::byte>(4, std::byte{7}));
  communicator.barrier("test");

  CHECK_THROWS_WITH_AS(communicator.broadcast(bytes, 1, "test"),
                       "broadcast: root rank 1 does not exist in a world of 1", ll::Error);
  std::vector<float> short_shard(4);  // [4]
  CHECK_THROWS_WITH_AS(communicator.reduce_scatter_sum(full, short_shard, shard_sizes, "test"),
                       "reduce_scatter_sum: rank 0's shard holds 5 elements but its buffer has 4",
                       ll::Error);
  CHECK_THROWS_WITH_AS(communicator.all_gather(shard, gathered, std::vector<int64_t>{2, 3}, "test"),
                       "all_gather: 2 shard sizes given for a world of 1 ranks", ll::Error);
  CHECK_THROWS_WITH_AS(communicator.all_gather(shard, gathered, std::vector<int64_t>{4}, "test"),
                       "all_gather: the shards hold 4 elements but the full buffer has 5",
                       ll::Error);
}

TEST_CASE("FNV-1a matches its published test vectors; one rank always agrees with itself") {
  CHECK(fnv1a_64("") == 0xcbf29ce484222325ull);
  CHECK(fnv1a_64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a_64("foobar") == 0x85944171f73967e8ull);
  SingleProcessCommunicator communicator;
  CHECK_NOTHROW(
      check_ranks_agree(communicator, fnv1a_64("model.bin ctx 512"), "model/config/data"));
}

#if defined(LL_HAVE_MPI)
TEST_CASE("a non-positive MPI timeout is refused before MPI starts") {
  CHECK_THROWS_WITH_AS(MpiCommunicator(CommunicatorOptions{.timeout_s = 0.0}),
                       "communication timeout must be a positive number of seconds, got 0",
                       ll::Error);
  int initialised = 1;
  MPI_Initialized(&initialised);
  CHECK(initialised == 0);
}
#endif
