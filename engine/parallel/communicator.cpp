#include "engine/parallel/communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/error.h"
#if defined(LL_HAVE_MPI)
#include "engine/parallel/mpi_communicator.h"
#endif

namespace ll::dist {

void check_shard_sizes(const char* collective, std::span<const int64_t> shard_sizes, int world_size,
                       int rank, size_t full_size, size_t shard_size) {
  LL_CHECK(shard_sizes.size() == size_t(world_size),
           "{}: {} shard sizes given for a world of {} ranks", collective, shard_sizes.size(),
           world_size);
  int64_t total = 0;
  for (size_t r = 0; r < shard_sizes.size(); ++r) {
    LL_CHECK(shard_sizes[r] >= 0, "{}: shard {} has negative size {}", collective, r,
             shard_sizes[r]);
    total += shard_sizes[r];
  }
  LL_CHECK(uint64_t(total) == full_size,
           "{}: the shards hold {} elements but the full buffer has {}", collective, total,
           full_size);
  LL_CHECK(uint64_t(shard_sizes[size_t(rank)]) == shard_size,
           "{}: rank {}'s shard holds {} elements but its buffer has {}", collective, rank,
           shard_sizes[size_t(rank)], shard_size);
}

void SingleProcessCommunicator::all_reduce_sum(std::span<double>, const std::string&) {}

void SingleProcessCommunicator::reduce_scatter_sum(std::span<const float> full,
                                                   std::span<float> shard,
                                                   std::span<const int64_t> shard_sizes,
                                                   const std::string&) {
  check_shard_sizes("reduce_scatter_sum", shard_sizes, 1, 0, full.size(), shard.size());
  std::copy(full.begin(), full.end(), shard.begin());
}

void SingleProcessCommunicator::reduce_sum(std::span<const float> send, std::span<float> recv,
                                           int root, const std::string&) {
  check_reduce_buffers(send, recv, root, 1, 0);
  std::copy(send.begin(), send.end(), recv.begin());
}

void SingleProcessCommunicator::all_gather(std::span<const float> shard, std::span<float> full,
                                           std::span<const int64_t> shard_sizes,
                                           const std::string&) {
  check_shard_sizes("all_gather", shard_sizes, 1, 0, full.size(), shard.size());
  std::copy(shard.begin(), shard.end(), full.begin());
}

void SingleProcessCommunicator::broadcast(std::span<std::byte>, int root, const std::string&) {
  LL_CHECK(root == 0, "broadcast: root rank {} does not exist in a world of 1", root);
}

std::vector<uint64_t> SingleProcessCommunicator::all_gather_u64(uint64_t value,
                                                                const std::string&) {
  return {value};
}

void SingleProcessCommunicator::barrier(const std::string&) {}

void Communicator::exchange(std::span<const PeerSend>, std::span<const PeerRecv>,
                            const std::string& context) {
  fail("the {} communicator has no point-to-point exchange ({})", backend_name(), context);
}

void check_exchange(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                    int world_size, int rank, const std::string& context) {
  for (const PeerSend& s : sends)
    LL_CHECK(s.peer >= 0 && s.peer < world_size, "exchange ({}): rank {} sends to rank {} of {}",
             context, rank, s.peer, world_size);
  for (const PeerRecv& r : recvs)
    LL_CHECK(r.peer >= 0 && r.peer < world_size,
             "exchange ({}): rank {} receives from rank {} of {}", context, rank, r.peer,
             world_size);
  // Messages to itself pair up in order here; other ranks' lengths are checked on arrival.
  std::vector<size_t> to_self, from_self;
  for (const PeerSend& s : sends)
    if (s.peer == rank) to_self.push_back(s.data.size());
  for (const PeerRecv& r : recvs)
    if (r.peer == rank) from_self.push_back(r.data.size());
  LL_CHECK(to_self == from_self,
           "exchange ({}): rank {} sends {} messages to itself and receives {}, or their lengths "
           "differ",
           context, rank, to_self.size(), from_self.size());
}

void SingleProcessCommunicator::exchange(std::span<const PeerSend> sends,
                                         std::span<const PeerRecv> recvs,
                                         const std::string& context) {
  check_exchange(sends, recvs, 1, 0, context);
  for (size_t i = 0; i < sends.size(); ++i)
    std::copy(sends[i].data.begin(), sends[i].data.end(), recvs[i].data.begin());
}

void SingleProcessCommunicator::abort_world(const std::string& message, int exit_code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::exit(exit_code);
}

void check_reduce_buffers(std::span<const float> send, std::span<float> recv, int root,
                          int world_size, int rank) {
  LL_CHECK(root >= 0 && root < world_size,
           "reduce_sum: root rank {} does not exist in a world of {}", root, world_size);
  if (rank != root) return;
  LL_CHECK(recv.size() == send.size(),
           "reduce_sum: the root's receive buffer holds {} values for {} sent", recv.size(),
           send.size());
  const float* s = send.data();
  const float* r = recv.data();
  LL_CHECK(send.empty() || s + send.size() <= r || r + recv.size() <= s,
           "reduce_sum: the send and receive buffers overlap");
}

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options) {
  if (launched_by_mpi()) {
#if defined(LL_HAVE_MPI)
    return std::make_unique<MpiCommunicator>(options);
#else
    fail(
        "this process was launched by mpirun, but this build has no MPI (configured with "
        "-DLL_ENABLE_MPI=OFF): install Open MPI (make setup) and rebuild");
#endif
  }
  return std::make_unique<SingleProcessCommunicator>();
}

}  // namespace ll::dist
