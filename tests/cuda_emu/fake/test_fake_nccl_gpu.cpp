// The emulated build's stand-in NCCL (fake_nccl.cpp): several ranks on threads, one emulated
// device each. Every collective and point-to-point pattern the engine and issue 20 use, checked
// exactly (values whose sums are exact in every order); the stream order of the lazy runtime (a
// collective reads what was queued before it, a consumer after an event sees its result); and a
// rank that never joins: the others stall, time out through NcclCommunicator's timeout path,
// abort, and the aborted communicator gives the others ncclRemoteError. A "gpu" test because it
// needs the emulated CUDA build; elsewhere it skips.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

#if defined(LL_CUDA_BACKEND_EMULATED)
#include <cuda_runtime.h>
#include <nccl.h>

#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/cuda/nccl_communicator.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/nccl_check.h"
#include "tests/cuda_emu/fake/fake_cuda_runtime.h"
#include "tests/error_text.h"

namespace {

using ll::test::contains;
using ll::test::error_of;

// Rank r's value i: small multiples of 1/4, exact in fp32, fp64 and bf16 sums of a few ranks.
float value(int rank, size_t i) { return float(int((i * 5 + size_t(rank) * 11) % 13) - 6) / 4.0f; }

template <typename T>
T* device_array(size_t n) {
  void* p = nullptr;
  LL_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return static_cast<T*>(p);
}
template <typename T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  LL_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
template <typename T>
void upload(T* d, const std::vector<T>& h) {
  LL_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
uint16_t bf16_bits(float f) {  // exact for the values above
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// Runs body(rank, comm, stream) on `world` threads, rank r on device r, after a nonblocking
// NCCL setup; returns each rank's failure text ("" when it passed).
std::vector<std::string> run_ranks(int world,
                                   const std::function<void(int, ncclComm_t, cudaStream_t)>& body) {
  ncclUniqueId id{};
  LL_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<std::string> failures(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      failures[size_t(r)] = error_of([&] {
        LL_CUDA_CHECK(cudaSetDevice(r));
        cudaStream_t stream = nullptr;
        LL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
        config.blocking = 0;
        ncclComm_t comm = nullptr;
        LL_NCCL_CHECK(ncclCommInitRankConfig(&comm, world, id, r, &config));
        ncclResult_t state = ncclInProgress;
        while (state == ncclInProgress) LL_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
        LL_NCCL_CHECK(state);
        body(r, comm, stream);
        LL_NCCL_CHECK(ncclCommFinalize(comm));
        state = ncclInProgress;
        while (state == ncclInProgress) LL_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
        LL_NCCL_CHECK(state);
        LL_NCCL_CHECK(ncclCommDestroy(comm));
        LL_CUDA_CHECK(cudaStreamDestroy(stream));
      });
    });
  }
  for (std::thread& t : threads) t.join();
  for (std::string& f : failures)
    if (f == "<no error>") f.clear();
  return failures;
}

void check_ranks(const std::vector<std::string>& failures) {
  for (size_t r = 0; r < failures.size(); ++r) {
    INFO("rank " << r);
    CHECK(failures[r] == "");
  }
}

#define RANK_CHECK(cond) LL_CHECK(cond, "rank {}: {} is false", rank, #cond)

}  // namespace

TEST_CASE("fake NCCL: every collective on 3 ranks, fp32 / fp64 / bf16, exact") {
  constexpr int kWorld = 3;
  constexpr size_t kN = 1001;
  check_ranks(run_ranks(kWorld, [](int rank, ncclComm_t comm, cudaStream_t stream) {
    std::vector<float> mine(kN), sum(kN);
    for (size_t i = 0; i < kN; ++i) {
      mine[i] = value(rank, i);
      for (int r = 0; r < kWorld; ++r) sum[i] += value(r, i);
    }
    float* send = device_array<float>(kN);
    float* recv = device_array<float>(kN * kWorld);
    upload(send, mine);
    // all-reduce, out of place and in place
    LL_NCCL_CHECK(ncclAllReduce(send, recv, kN, ncclFloat32, ncclSum, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    RANK_CHECK(download(recv, kN) == sum);
    LL_NCCL_CHECK(ncclAllReduce(send, send, kN, ncclFloat32, ncclSum, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    RANK_CHECK(download(send, kN) == sum);
    upload(send, mine);
    // reduce to rank 1 (the others' recv untouched: still poison)
    LL_CUDA_CHECK(cudaMemset(recv, 0xff, kN * 4));
    LL_NCCL_CHECK(ncclReduce(send, recv, kN, ncclFloat32, ncclSum, 1, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> reduced = download(recv, kN);
    if (rank == 1) RANK_CHECK(reduced == sum);
    if (rank != 1) RANK_CHECK(std::isnan(reduced[0]) && std::isnan(reduced[kN - 1]));
    // reduce-scatter of [W * B] blocks and all-gather back
    constexpr size_t kB = kN / kWorld + 1;
    std::vector<float> full(kB * kWorld);
    for (size_t i = 0; i < full.size(); ++i) full[i] = value(rank, i);
    float* d_full = device_array<float>(full.size());
    float* d_block = device_array<float>(kB);
    upload(d_full, full);
    LL_NCCL_CHECK(ncclReduceScatter(d_full, d_block, kB, ncclFloat32, ncclSum, comm, stream));
    LL_NCCL_CHECK(ncclAllGather(d_block, d_full, kB, ncclFloat32, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> gathered = download(d_full, full.size());
    for (size_t i = 0; i < full.size(); ++i) {
      float s = 0.0f;
      for (int r = 0; r < kWorld; ++r) s += value(r, i);
      RANK_CHECK(gathered[i] == s);
    }
    // broadcast from rank 2
    std::vector<float> params(kN);
    for (size_t i = 0; i < kN; ++i) params[i] = float(rank * 10000 + int(i));
    upload(send, params);
    LL_NCCL_CHECK(ncclBroadcast(send, recv, kN, ncclFloat32, 2, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> got = download(recv, kN);
    for (size_t i = 0; i < kN; ++i) RANK_CHECK(got[i] == float(20000 + int(i)));
    // fp64 and bf16 all-reduce
    double* d64 = device_array<double>(5);
    upload(d64, std::vector<double>{1.0 * rank, 0.5, -2.0, 1e300, std::ldexp(1.0, -rank)});
    LL_NCCL_CHECK(ncclAllReduce(d64, d64, 5, ncclFloat64, ncclSum, comm, stream));
    std::vector<uint16_t> h16(kN);
    for (size_t i = 0; i < kN; ++i) h16[i] = bf16_bits(value(rank, i));
    uint16_t* d16 = device_array<uint16_t>(kN);
    upload(d16, h16);
    LL_NCCL_CHECK(ncclAllReduce(d16, d16, kN, ncclBfloat16, ncclSum, comm, stream));
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<double> r64 = download(d64, 5);
    RANK_CHECK(r64[0] == 3.0 && r64[1] == 1.5 && r64[2] == -6.0 && r64[3] == 3e300 &&
               r64[4] == 1.75);
    const std::vector<uint16_t> r16 = download(d16, kN);
    for (size_t i = 0; i < kN; ++i) RANK_CHECK(r16[i] == bf16_bits(sum[i]));
    for (void* p : {static_cast<void*>(send), static_cast<void*>(recv), static_cast<void*>(d_full),
                    static_cast<void*>(d_block), static_cast<void*>(d64), static_cast<void*>(d16)})
      LL_CUDA_CHECK(cudaFree(p));
  }));
}

TEST_CASE("fake NCCL: send/recv in one group: a ring and a halo exchange, exact") {
  constexpr int kWorld = 4;
  constexpr size_t kRows = 6, kCols = 5, kHalo = 2;  // a rank's part [kRows, kCols]; halo rows
  check_ranks(run_ranks(kWorld, [](int rank, ncclComm_t comm, cudaStream_t stream) {
    // Ring: every rank sends its part to r+1 and receives r-1's, in one group (without the group
    // every rank's send would wait for a receive queued behind it).
    std::vector<float> part(kRows * kCols);
    for (size_t i = 0; i < part.size(); ++i) part[i] = float(rank * 1000 + int(i));
    float* d_part = device_array<float>(part.size());
    float* d_from_left = device_array<float>(part.size());
    upload(d_part, part);
    const int right = (rank + 1) % kWorld, left = (rank + kWorld - 1) % kWorld;
    LL_NCCL_CHECK(ncclGroupStart());
    LL_NCCL_CHECK(ncclSend(d_part, part.size(), ncclFloat32, right, comm, stream));
    LL_NCCL_CHECK(ncclRecv(d_from_left, part.size(), ncclFloat32, left, comm, stream));
    LL_NCCL_CHECK(ncclGroupEnd());
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> ring = download(d_from_left, part.size());
    for (size_t i = 0; i < ring.size(); ++i) RANK_CHECK(ring[i] == float(left * 1000 + int(i)));
    // Halo: rank r sends its last kHalo rows to r+1 (the last rank sends nothing, rank 0
    // receives nothing), as S2-Attn's shifted half needs the previous rank's last G/2 keys.
    float* d_halo = device_array<float>(kHalo * kCols);
    LL_CUDA_CHECK(cudaMemset(d_halo, 0, kHalo * kCols * 4));
    LL_NCCL_CHECK(ncclGroupStart());
    if (rank + 1 < kWorld)
      LL_NCCL_CHECK(ncclSend(d_part + (kRows - kHalo) * kCols, kHalo * kCols, ncclFloat32, rank + 1,
                             comm, stream));
    if (rank > 0)
      LL_NCCL_CHECK(ncclRecv(d_halo, kHalo * kCols, ncclFloat32, rank - 1, comm, stream));
    LL_NCCL_CHECK(ncclGroupEnd());
    LL_CUDA_CHECK(cudaStreamSynchronize(stream));
    const std::vector<float> halo = download(d_halo, kHalo * kCols);
    for (size_t i = 0; i < halo.size(); ++i) {
      const float want =
          rank == 0 ? 0.0f : float((rank - 1) * 1000 + int((kRows - kHalo) * kCols + i));
      RANK_CHECK(halo[i] == want);
    }
    for (void* p :
         {static_cast<void*>(d_part), static_cast<void*>(d_from_left), static_cast<void*>(d_halo)})
      LL_CUDA_CHECK(cudaFree(p));
  }));
}

TEST_CASE("fake NCCL: a collective runs in its stream's order on the lazy runtime") {
  constexpr int kWorld = 2;
  constexpr size_t kN = 64;
  check_ranks(run_ranks(kWorld, [](int rank, ncclComm_t comm, cudaStream_t stream) {
    float* pinned = nullptr;
    LL_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), kN * 4));
    for (size_t i = 0; i < kN; ++i) pinned[i] = value(rank, i);
    float* d = device_array<float>(kN);
    cudaStream_t consumer = nullptr;
    cudaEvent_t done = nullptr;
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking));
    LL_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    // The input arrives by a queued copy: the collective must read it, not the poison before.
    LL_CUDA_CHECK(cudaMemcpyAsync(d, pinned, kN * 4, cudaMemcpyHostToDevice, stream));
    LL_NCCL_CHECK(ncclAllReduce(d, d, kN, ncclFloat32, ncclSum, comm, stream));
    LL_CUDA_CHECK(cudaEventRecord(done, stream));
    RANK_CHECK(ll_emu_queued_ops(stream) == 2);  // nothing ran yet: nothing ordered it
    // A consumer stream after the event copies the result out.
    LL_CUDA_CHECK(cudaStreamWaitEvent(consumer, done, 0));
    LL_CUDA_CHECK(cudaMemcpyAsync(pinned, d, kN * 4, cudaMemcpyDeviceToHost, consumer));
    LL_CUDA_CHECK(cudaStreamSynchronize(consumer));
    for (size_t i = 0; i < kN; ++i) RANK_CHECK(pinned[i] == value(0, i) + value(1, i));
    LL_CUDA_CHECK(cudaEventDestroy(done));
    LL_CUDA_CHECK(cudaStreamDestroy(consumer));
    LL_CUDA_CHECK(cudaFree(d));
    LL_CUDA_CHECK(cudaFreeHost(pinned));
  }));
}

TEST_CASE("fake NCCL: bad calls are errors with a message; mismatched calls fail every rank") {
  // One thread, one rank: argument errors.
  check_ranks(run_ranks(1, [](int rank, ncclComm_t comm, cudaStream_t stream) {
    std::vector<float> host(4, 1.0f);
    RANK_CHECK(ncclAllReduce(host.data(), host.data(), 4, ncclFloat32, ncclSum, comm, stream) ==
               ncclInvalidArgument);
    RANK_CHECK(contains(ncclGetLastError(comm), "sendbuff"));
    RANK_CHECK(contains(ncclGetLastError(comm), "is not device memory"));
    float* d = device_array<float>(4);
    RANK_CHECK(ncclSend(d, 4, ncclFloat32, 1, comm, stream) == ncclInvalidArgument);
    RANK_CHECK(contains(ncclGetLastError(comm), "peer 1 outside a world of 1"));
    RANK_CHECK(ncclAllReduce(d, d, 4, ncclFloat16, ncclSum, comm, stream) == ncclInvalidArgument);
    LL_CUDA_CHECK(cudaFree(d));
  }));
  // Two ranks on one device: NCCL needs one GPU per rank.
  ncclUniqueId id{};
  LL_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<ncclResult_t> states(2, ncclSuccess);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      LL_CUDA_CHECK(cudaSetDevice(0));
      ncclComm_t comm = nullptr;
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      (void)ncclCommInitRankConfig(&comm, 2, id, r, &config);
      ncclResult_t state = ncclInProgress;
      while (state == ncclInProgress) (void)ncclCommGetAsyncError(comm, &state);
      states[size_t(r)] = state;
      if (r == 0) CHECK(contains(ncclGetLastError(comm), "ranks 0 and 1 both use device 0"));
      (void)ncclCommAbort(comm);
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(states[0] == ncclInvalidUsage);
  CHECK(states[1] == ncclInvalidUsage);
}

// A Communicator of threads for NcclCommunicator's setup (the unique id's broadcast) and the
// end of a test; nothing else is needed.
struct ThreadWorld {
  explicit ThreadWorld(int w) : world(w), sync(w), bytes(1 + sizeof(ncclUniqueId)) {}
  int world;
  std::barrier<> sync;
  std::vector<std::byte> bytes;
};
class ThreadCommunicator final : public ll::dist::Communicator {
 public:
  ThreadCommunicator(ThreadWorld& w, int rank) : w_(w), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return w_.world; }
  int local_rank() const override { return rank_; }
  std::string backend_name() const override { return "threads"; }
  void broadcast(std::span<std::byte> bytes, int root, const std::string&) override {
    if (rank_ == root) std::memcpy(w_.bytes.data(), bytes.data(), bytes.size());
    w_.sync.arrive_and_wait();
    if (rank_ != root) std::memcpy(bytes.data(), w_.bytes.data(), bytes.size());
    w_.sync.arrive_and_wait();
  }
  void barrier(const std::string&) override { w_.sync.arrive_and_wait(); }
  void all_reduce_sum(std::span<double>, const std::string&) override { unused(); }
  void reduce_scatter_sum(std::span<const float>, std::span<float>, std::span<const int64_t>,
                          const std::string&) override {
    unused();
  }
  void reduce_sum(std::span<const float>, std::span<float>, int, const std::string&) override {
    unused();
  }
  void all_gather(std::span<const float>, std::span<float>, std::span<const int64_t>,
                  const std::string&) override {
    unused();
  }
  std::vector<uint64_t> all_gather_u64(uint64_t, const std::string&) override { unused(); }
  [[noreturn]] void abort_world(const std::string&, int) override { unused(); }

 private:
  [[noreturn]] static void unused() { ll::fail("ThreadCommunicator: not used by this test"); }
  ThreadWorld& w_;
  int rank_;
};

TEST_CASE("fake NCCL: a rank that never joins a collective: the others time out and abort") {
  constexpr double kTimeout = 0.5;
  ThreadWorld world(2);
  std::vector<std::string> messages(2);
  std::vector<double> waited(2, 0.0);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      messages[size_t(r)] = error_of([&] {
        LL_CUDA_CHECK(cudaSetDevice(r));
        ThreadCommunicator host(world, r);
        cudaStream_t stream = nullptr;
        LL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        double* d = device_array<double>(1);
        upload(d, std::vector<double>{1.0 + r});
        {
          ll::dist::NcclCommunicator comm(host, stream, {.timeout_s = kTimeout});
          comm.all_reduce_sum(d, 1, ll::dist::NcclElement::F64, "step 11 gradient norm");
          comm.wait("step 11 gradient norm");
          LL_CHECK(download(d, 1)[0] == 3.0, "rank {}: step 11 sum wrong", r);
          if (r == 0) {
            // Rank 0 "hangs": it never joins step 12. Rank 1 times out and aborts; afterwards
            // rank 0's communicator reports the abort as a remote error.
            host.barrier("rank 1 timed out");
            comm.all_reduce_sum(d, 1, ll::dist::NcclElement::F64, "step 12 (late)");
            comm.wait("step 12 (late)");  // throws: the communicator was aborted by rank 1
          }
          const auto start = std::chrono::steady_clock::now();
          const std::string message = error_of([&] {
            comm.all_reduce_sum(d, 1, ll::dist::NcclElement::F64, "step 12 gradient norm");
            comm.wait("step 12 gradient norm");
          });
          waited[1] =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          LL_CUDA_CHECK(cudaStreamSynchronize(stream));  // the aborted collective let it go
          host.barrier("rank 1 timed out");
          throw ll::Error(message);
        }
      });
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(messages[1] ==
        "rank 1: all_reduce_sum (step 12 gradient norm) did not complete within 0.5 s: another "
        "rank died or hangs");
  CHECK(waited[1] >= kTimeout);
  CHECK(waited[1] < kTimeout + 2.0);
  INFO(messages[0]);
  CHECK(contains(messages[0], "rank 0: wait (step 12 (late)) failed: remote process exited"));
  CHECK(contains(messages[0], "rank 1 aborted the communicator"));
}

#else

TEST_CASE("fake NCCL: needs the emulated CUDA build") {
  std::printf(
      "SKIP: the stand-in NCCL is part of the emulated CUDA build only "
      "(-DLL_CUDA_BACKEND_EMULATED=ON)\n");
  std::fflush(stdout);
  std::exit(77);
}

#endif
