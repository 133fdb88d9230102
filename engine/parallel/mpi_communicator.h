#pragma once
// The Communicator over MPI (Open MPI from Debian): one rank per process started by mpirun.
//
// MPI is initialised by the first instance (MPI_THREAD_FUNNELED: only the main thread calls MPI,
// OpenMP threads never do) and finalised when the last one is destroyed; it cannot be
// initialised again in the same process. Collectives run on a duplicate of MPI_COMM_WORLD with
// MPI_ERRORS_RETURN, start nonblocking (MPI_Iallreduce, MPI_Ireduce_scatter, MPI_Ireduce,
// MPI_Iallgatherv, MPI_Ibcast, MPI_Iallgather, MPI_Ibarrier) and are polled with MPI_Test until
// the timeout (see communicator.h for what happens then). MPI counts are ints: a buffer of
// more than 2^31 - 1 elements is refused with a clear error.
//
// Ending: a communicator destroyed after a failed collective, or while an exception leaves its
// scope in a world of more than one rank, calls MPI_Abort (the other ranks cannot go on
// without this one, and MPI_Finalize would wait for them); otherwise it finalises MPI.
#include <mpi.h>

#include <string>

#include "engine/parallel/communicator.h"

namespace ll::dist {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const CommunicatorOptions& options);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend_name() const override { return "MPI"; }
  double timeout_s() const { return timeout_s_; }

  void all_reduce_sum(std::span<double> values, const std::string& context) override;
  void reduce_scatter_sum(std::span<const float> full, std::span<float> shard,
                          std::span<const int64_t> shard_sizes,
                          const std::string& context) override;
  void reduce_sum(std::span<const float> send, std::span<float> recv, int root,
                  const std::string& context) override;
  void all_gather(std::span<const float> shard, std::span<float> full,
                  std::span<const int64_t> shard_sizes, const std::string& context) override;
  void broadcast(std::span<std::byte> bytes, int root, const std::string& context) override;
  std::vector<uint64_t> all_gather_u64(uint64_t value, const std::string& context) override;
  void barrier(const std::string& context) override;
  void exchange(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                const std::string& context) override;
  [[noreturn]] void abort_world(const std::string& message, int exit_code) override;

 private:
  // Throws the stored failure when an earlier collective failed.
  void require_usable(const char* collective, const std::string& context) const;
  // Turns an MPI error code into ll::Error (MPI_Error_string) and marks the communicator failed.
  void check(int code, const char* collective, const std::string& context);
  // Polls `request` until it completes or the timeout passes (then throws).
  void wait(MPI_Request& request, const char* collective, const std::string& context);

  MPI_Comm comm_ = MPI_COMM_NULL;  // duplicate of MPI_COMM_WORLD, errors returned
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  double timeout_s_ = 600.0;
  std::string failure_;  // the first failed collective's message; non-empty = unusable
};

}  // namespace ll::dist
