#include "engine/parallel/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>
#include <vector>

#include "common/error.h"

namespace ll::dist {

namespace {

// MPI may be initialised once per process; these track who did it and how many live
// communicators still need it.
bool g_initialised_here = false;
int g_live_instances = 0;

std::string describe(const char* collective, const std::string& context) {
  return context.empty() ? std::string(collective) : fmt::format("{} ({})", collective, context);
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return fmt::format("MPI error {}", code);
  return std::string(text, size_t(length));
}

int mpi_count(int64_t n, const char* collective) {
  LL_CHECK(n <= INT_MAX,
           "{}: {} elements exceed MPI's count limit of {} per call; the buffer would have to be "
           "split",
           collective, n, INT_MAX);
  return int(n);
}

// The node-local rank: Open MPI says it directly; otherwise rank among the processes that share
// memory with this one.
int find_local_rank(MPI_Comm comm, int rank) {
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    char* end = nullptr;
    const long value = std::strtol(env, &end, 10);
    LL_CHECK(end != env && *end == '\0' && value >= 0 && value < INT_MAX,
             "OMPI_COMM_WORLD_LOCAL_RANK is '{}', not a rank number", env);
    return int(value);
  }
  MPI_Comm node = MPI_COMM_NULL;
  int code = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  LL_CHECK(code == MPI_SUCCESS, "MPI_Comm_split_type failed: {}", mpi_error_text(code));
  int local = 0;
  code = MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  LL_CHECK(code == MPI_SUCCESS, "MPI_Comm_rank failed: {}", mpi_error_text(code));
  return local;
}

}  // namespace

MpiCommunicator::MpiCommunicator(const CommunicatorOptions& options)
    : timeout_s_(options.timeout_s) {
  LL_CHECK(std::isfinite(timeout_s_) && timeout_s_ > 0.0,
           "communication timeout must be a positive number of seconds, got {}", timeout_s_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  LL_CHECK(!finalized,
           "MPI was already finalised in this process and cannot be started again: create one "
           "MPI communicator per process");
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    // MPI_Init aborts the process itself on failure (no error handler exists yet).
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    g_initialised_here = true;
  }
  // Errors are returned from here on, so that they become messages instead of aborts.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int code = MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
  LL_CHECK(code == MPI_SUCCESS, "MPI_Comm_dup failed: {}", mpi_error_text(code));
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &world_size_);
  try {
    local_rank_ = find_local_rank(comm_, rank_);
  } catch (...) {
    MPI_Comm_free(&comm_);
    throw;
  }
  ++g_live_instances;
}

MpiCommunicator::~MpiCommunicator() {
  const bool leaving_on_error = std::uncaught_exceptions() > 0 && world_size_ > 1;
  if (!failure_.empty() || leaving_on_error) {
    std::fprintf(stderr, "rank %d: %s; ending every rank of the run\n", rank_,
                 failure_.empty() ? "leaving on an error" : "a collective failed");
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
  }
  MPI_Comm_free(&comm_);
  if (--g_live_instances == 0 && g_initialised_here) MPI_Finalize();
}

void MpiCommunicator::require_usable(const char* collective, const std::string& context) const {
  if (!failure_.empty()) {
    fail("rank {}: {} cannot run after an earlier failure ({})", rank_,
         describe(collective, context), failure_);
  }
}

void MpiCommunicator::check(int code, const char* collective, const std::string& context) {
  if (code == MPI_SUCCESS) return;
  failure_ = fmt::format("rank {}: {} failed: {}", rank_, describe(collective, context),
                         mpi_error_text(code));
  throw Error(failure_);
}

void MpiCommunicator::wait(MPI_Request& request, const char* collective,
                           const std::string& context) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    // MPI_Test also drives the progress of nonblocking collectives.
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), collective, context);
    if (done) return;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > timeout_s_) {
      failure_ =
          fmt::format("rank {}: {} did not complete within {:g} s: another rank died or hangs",
                      rank_, describe(collective, context), timeout_s_);
      throw Error(failure_);
    }
    // Spin (yielding the core) for the first second: a nonblocking collective only advances
    // inside MPI_Test, and a large one (a 7B embedding's gradients) needs thousands of rounds,
    // so sleeping between tests would make it crawl. Past a second the others are still
    // computing: sleep so that waiting ranks leave the cores to them (several ranks may share a
    // machine's cores).
    if (waited < 1.0) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

void MpiCommunicator::all_reduce_sum(std::span<double> values, const std::string& context) {
  const char* name = "all_reduce_sum";
  require_usable(name, context);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(MPI_IN_PLACE, values.data(), mpi_count(int64_t(values.size()), name),
                       MPI_DOUBLE, MPI_SUM, comm_, &request),
        name, context);
  wait(request, name, context);
}

void MpiCommunicator::reduce_scatter_sum(std::span<const float> full, std::span<float> shard,
                                         std::span<const int64_t> shard_sizes,
                                         const std::string& context) {
  const char* name = "reduce_scatter_sum";
  require_usable(name, context);
  check_shard_sizes(name, shard_sizes, world_size_, rank_, full.size(), shard.size());
  mpi_count(int64_t(full.size()), name);
  std::vector<int> counts(shard_sizes.begin(), shard_sizes.end());  // [world_size]
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ireduce_scatter(full.data(), shard.data(), counts.data(), MPI_FLOAT, MPI_SUM, comm_,
                            &request),
        name, context);
  wait(request, name, context);
}

void MpiCommunicator::reduce_sum(std::span<const float> send, std::span<float> recv, int root,
                                 const std::string& context) {
  const char* name = "reduce_sum";
  require_usable(name, context);
  check_reduce_buffers(send, recv, root, world_size_, rank_);
  MPI_Request request = MPI_REQUEST_NULL;
  check(
      MPI_Ireduce(send.data(), rank_ == root ? recv.data() : nullptr,
                  mpi_count(int64_t(send.size()), name), MPI_FLOAT, MPI_SUM, root, comm_, &request),
      name, context);
  wait(request, name, context);
}

void MpiCommunicator::all_gather(std::span<const float> shard, std::span<float> full,
                                 std::span<const int64_t> shard_sizes, const std::string& context) {
  const char* name = "all_gather";
  require_usable(name, context);
  check_shard_sizes(name, shard_sizes, world_size_, rank_, full.size(), shard.size());
  mpi_count(int64_t(full.size()), name);                             // displacements are ints too
  std::vector<int> counts(static_cast<size_t>(world_size_));         // [world_size]
  std::vector<int> displacements(static_cast<size_t>(world_size_));  // [world_size]
  int offset = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    counts[r] = int(shard_sizes[r]);
    displacements[r] = offset;
    offset += counts[r];
  }
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallgatherv(shard.data(), counts[size_t(rank_)], MPI_FLOAT, full.data(), counts.data(),
                        displacements.data(), MPI_FLOAT, comm_, &request),
        name, context);
  wait(request, name, context);
}

void MpiCommunicator::broadcast(std::span<std::byte> bytes, int root, const std::string& context) {
  const char* name = "broadcast";
  require_usable(name, context);
  LL_CHECK(root >= 0 && root < world_size_,
           "broadcast: root rank {} does not exist in a world of {}", root, world_size_);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibcast(bytes.data(), mpi_count(int64_t(bytes.size()), name), MPI_BYTE, root, comm_,
                   &request),
        name, context);
  wait(request, name, context);
}

std::vector<uint64_t> MpiCommunicator::all_gather_u64(uint64_t value, const std::string& context) {
  const char* name = "all_gather_u64";
  require_usable(name, context);
  std::vector<uint64_t> values(static_cast<size_t>(world_size_));  // [world_size]
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Iallgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, comm_, &request),
        name, context);
  wait(request, name, context);
  return values;
}

void MpiCommunicator::barrier(const std::string& context) {
  const char* name = "barrier";
  require_usable(name, context);
  MPI_Request request = MPI_REQUEST_NULL;
  check(MPI_Ibarrier(comm_, &request), name, context);
  wait(request, name, context);
}

void MpiCommunicator::exchange(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                               const std::string& context) {
  const char* name = "exchange";
  require_usable(name, context);
  check_exchange(sends, recvs, world_size_, rank_, context);
  // One tag: MPI keeps the order of messages between two ranks on one communicator, which is
  // the pairing the exchange promises. Receives are posted first.
  std::vector<MPI_Request> requests(recvs.size() + sends.size(), MPI_REQUEST_NULL);
  for (size_t i = 0; i < recvs.size(); ++i)
    check(MPI_Irecv(recvs[i].data.data(), mpi_count(int64_t(recvs[i].data.size()), name), MPI_FLOAT,
                    recvs[i].peer, 0, comm_, &requests[i]),
          name, context);
  for (size_t i = 0; i < sends.size(); ++i)
    check(MPI_Isend(sends[i].data.data(), mpi_count(int64_t(sends[i].data.size()), name), MPI_FLOAT,
                    sends[i].peer, 0, comm_, &requests[recvs.size() + i]),
          name, context);
  for (MPI_Request& r : requests) wait(r, name, context);
}

void MpiCommunicator::abort_world(const std::string& message, int exit_code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace ll::dist
