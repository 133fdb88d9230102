#pragma once
// Collectives between the ranks of a data-parallel run, as the sharded optimizer needs them.
// `mpirun -np W ./train_longlora ...` gives W ranks; a plain run is a world of one and never
// initialises MPI (make_communicator() decides from mpirun's environment). The trained
// parameters are one flat fp32 vector split into W contiguous shards (shard_layout.h).
// Failure: every collective is polled until `timeout_s`, then throws ll::Error naming the rank
// and `context`; the communicator is unusable afterwards and the process must end through
// abort_world(). Design: docs/subsystems/data-parallel.md.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ll::dist {

// One message of a point-to-point exchange: fp32 values to or from rank `peer`.
struct PeerSend {
  int peer = 0;
  std::span<const float> data;
};
struct PeerRecv {
  int peer = 0;
  std::span<float> data;
};

struct CommunicatorOptions {
  // How long one collective may wait for the other ranks before the run is declared broken.
  // Generous by default: a step's backward pass on a slow rank is legitimate waiting.
  double timeout_s = 600.0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Rank among the processes on this node (picks the GPU).
  virtual int local_rank() const = 0;
  // "single process" or "MPI", for logs.
  virtual std::string backend_name() const = 0;

  // values[i] = sum over ranks of values[i], in place, on every rank. [n] fp64.
  virtual void all_reduce_sum(std::span<double> values, const std::string& context) = 0;

  // full: [T] fp32, this rank's contribution (e.g. its gradients); shard: [shard_sizes[rank]]
  // fp32, receives the sum over ranks of this rank's slice of `full`. The caller divides by W
  // for the mean.
  virtual void reduce_scatter_sum(std::span<const float> full, std::span<float> shard,
                                  std::span<const int64_t> shard_sizes,
                                  const std::string& context) = 0;

  // send: [n] fp32, this rank's contribution (same n on every rank); recv: [n] fp32 on `root`,
  // receives the sum over ranks (other ranks may pass an empty span). send and recv must not
  // overlap. The sharded optimizer's bucketed gradient reduction
  // (engine/parallel/shard_transport.h).
  virtual void reduce_sum(std::span<const float> send, std::span<float> recv, int root,
                          const std::string& context) = 0;

  // shard: [shard_sizes[rank]] fp32, this rank's slice; full: [T] fp32, receives every rank's
  // slice in rank order.
  virtual void all_gather(std::span<const float> shard, std::span<float> full,
                          std::span<const int64_t> shard_sizes, const std::string& context) = 0;

  // bytes: [n] on every rank (same n everywhere); on return every rank holds root's bytes.
  virtual void broadcast(std::span<std::byte> bytes, int root, const std::string& context) = 0;

  // One value per rank, gathered on every rank: result [world_size], rank order.
  virtual std::vector<uint64_t> all_gather_u64(uint64_t value, const std::string& context) = 0;

  virtual void barrier(const std::string& context) = 0;

  // Point to point (context parallelism's halos): this rank's sends and receives of one
  // exchange, all posted at once; returns when all of them completed. The k-th message from rank
  // a to rank b in an exchange is b's k-th receive from a (same length). A rank may send to and
  // receive from itself. Buffers must not overlap. Communicators without point-to-point (test
  // stand-ins) throw ll::Error naming themselves.
  virtual void exchange(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                        const std::string& context);

  // Prints `message` on stderr (one line, prefixed by nothing: callers name the rank) and ends
  // every rank of the run with `exit_code`. For the error path of tools under mpirun.
  [[noreturn]] virtual void abort_world(const std::string& message, int exit_code) = 0;
};

// A world of one: rank 0 of 1, every collective is a copy or nothing. Makes no MPI call.
class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend_name() const override { return "single process"; }
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
};

// The checks every exchange makes: peers exist, and (for messages to and from this rank itself)
// the k-th send matches the k-th receive in length. Throws ll::Error naming `context`.
void check_exchange(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                    int world_size, int rank, const std::string& context);

// True when this process was started by mpirun / a PMI launcher (OMPI_COMM_WORLD_SIZE,
// PMI_SIZE or PMIX_RANK in the environment).
bool launched_by_mpi();

// The MPI communicator when launched_by_mpi(), otherwise a SingleProcessCommunicator. MPI can be
// initialised once per process: a second MPI communicator throws ll::Error.
std::unique_ptr<Communicator> make_communicator(const CommunicatorOptions& options = {});

// Checks shared by the implementations: shard_sizes has world_size non-negative entries that sum
// to full_size, and shard_size == shard_sizes[rank]. Throws ll::Error naming `collective`.
void check_shard_sizes(const char* collective, std::span<const int64_t> shard_sizes, int world_size,
                       int rank, size_t full_size, size_t shard_size);

// Checks shared by the implementations of reduce_sum: root exists, recv holds send.size()
// values on the root, and the buffers do not overlap. Throws ll::Error.
void check_reduce_buffers(std::span<const float> send, std::span<float> recv, int root,
                          int world_size, int rank);

}  // namespace ll::dist
