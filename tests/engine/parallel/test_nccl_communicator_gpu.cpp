// The NCCL communicator (engine/parallel/cuda/nccl_communicator.h) on device buffers.
//
// World of one (any machine with a GPU): every collective is a copy, checked bitwise against
// the host values with outputs poisoned (NaN bytes) beforehand so that an element left unwritten
// fails; pack_padded / unpack_padded against the host reference (engine/parallel/nccl_padding.h)
// with the uneven shards of a 3-rank layout; bad arguments become ll::Error and leave the
// communicator usable; a collective stuck behind a stalled stream times out, names rank, collective
// and context, and leaves the communicator aborted; and the collectives' time is accumulated and
// printed as the "NCCL timing:" line that scripts/gpu_check.sh copies into its report.
//
// Several ranks (only where MPI is built, mpirun exists and the machine has >= 2 GPUs; skipped
// with a message otherwise): this executable runs itself under `mpirun -np 2`, one GPU per rank,
// and each rank checks reduce-scatter (uneven shards through the padding), all-gather,
// all-reduce and broadcast against values it computes for all ranks, then a rank that skips a
// collective makes the other time out and end the run.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/nccl_padding.h"
#include "engine/parallel/shard_layout.h"
#include "tests/engine/parallel/mpirun_util.h"
#include "tests/engine/parallel/nccl_test_util.h"
#include "tests/error_text.h"
#include "tests/gpu_skip.h"

#if defined(LL_HAVE_NCCL)
#include <cuda_runtime.h>

#include "engine/parallel/cuda/nccl_communicator.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/nccl_check.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

namespace {

constexpr const char* kChildVariable = "LL_NCCL_TEST_CHILD";

std::string child_mode() { return ll::test::child_mode(kChildVariable); }

using ll::test::require_gpu_and_nccl;

}  // namespace

#if defined(LL_HAVE_NCCL)
namespace {

using ll::dist::NcclCollective;
using ll::dist::NcclCommunicator;
using ll::dist::NcclElement;
using ll::dist::NcclOptions;
using ll::dist::NcclPadding;
using ll::dist::ShardLayout;
using ll::test::DeviceBuffer;

using ll::test::rank_contribution;
using ll::test::seconds_since;

using ll::test::contains;

using ll::test::error_of;

// A non-blocking stream like the CUDA backend's, destroyed after the test's communicator.
struct Stream {
  cudaStream_t handle = nullptr;
  Stream() { LL_CUDA_CHECK(cudaStreamCreateWithFlags(&handle, cudaStreamNonBlocking)); }
  ~Stream() {
    (void)cudaStreamSynchronize(handle);
    (void)cudaStreamDestroy(handle);
  }
};

void sync(cudaStream_t stream) { LL_CUDA_CHECK(cudaStreamSynchronize(stream)); }

std::vector<float> random_floats(std::mt19937_64& rng, size_t n) {
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// The helpers' cudaMemset / cudaMemcpy run on the legacy default stream, which a non-blocking
// stream does not wait for: these finish them before any collective is enqueued.
template <typename T>
DeviceBuffer<T> poisoned_buffer(size_t n) {
  DeviceBuffer<T> d(n);
  d.poison();
  ll::test::device_sync();
  return d;
}

template <typename T>
DeviceBuffer<T> upload_now(const std::vector<T>& values) {
  DeviceBuffer<T> d = ll::test::upload(values);
  ll::test::device_sync();
  return d;
}

DeviceBuffer<ll::test::bf16> upload_bf16_now(const std::vector<float>& values) {
  DeviceBuffer<ll::test::bf16> d = ll::test::upload_bf16(values);
  ll::test::device_sync();
  return d;
}

}  // namespace
#endif

TEST_CASE("NCCL world of one: every collective copies exactly, padding packs like the host") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  ll::dist::SingleProcessCommunicator host;
  Stream stream;
  NcclCommunicator comm(host, stream.handle, NcclOptions{.timeout_s = 60.0});
  CHECK(comm.rank() == 0);
  CHECK(comm.world_size() == 1);
  CHECK(comm.device() == 0);
  std::mt19937_64 rng(20241126);

  // Trainable-tensor sizes like a tiny model's (odd, one empty) plus a large one.
  const ShardLayout layout({7, 0, 12, 3, 100003}, 1);
  const NcclPadding padding(layout.shard_sizes());
  REQUIRE(padding.block_size() == layout.total_size());
  const size_t total = size_t(layout.total_size());

  SUBCASE("reduce_scatter_sum and all_gather, fp32 and bf16, bitwise") {
    const std::vector<float> values = random_floats(rng, total);  // [T]
    auto d_full = upload_now(values);                             // [W * B] = [T]
    auto d_shard = poisoned_buffer<float>(total);                 // [B]
    comm.reduce_scatter_sum(d_full.get(), d_shard.get(), padding, NcclElement::F32, "test rs");
    comm.wait("test rs");
    CHECK_MESSAGE(same_bytes(download(d_shard), values), "reduce-scattered fp32 shard differs");

    auto d_gathered = poisoned_buffer<float>(total);  // [W * B]
    comm.all_gather(d_shard.get(), d_gathered.get(), padding, NcclElement::F32, "test ag");
    comm.wait("test ag");
    CHECK_MESSAGE(same_bytes(download(d_gathered), values), "all-gathered fp32 buffer differs");

    const std::vector<float> rounded = round_bf16(values);
    auto d_full_bf16 = upload_bf16_now(rounded);          // [T] bf16
    auto d_shard_bf16 = poisoned_buffer<bf16>(total);     // [B] bf16
    auto d_gathered_bf16 = poisoned_buffer<bf16>(total);  // [T] bf16
    comm.reduce_scatter_sum(d_full_bf16.get(), d_shard_bf16.get(), padding, NcclElement::BF16,
                            "test rs bf16");
    comm.all_gather(d_shard_bf16.get(), d_gathered_bf16.get(), padding, NcclElement::BF16,
                    "test ag bf16");
    comm.wait("test bf16");  // one wait for two collectives
    CHECK(same_bytes(download_bf16(d_shard_bf16), rounded));
    CHECK(same_bytes(download_bf16(d_gathered_bf16), rounded));

    const auto& rs = comm.totals(NcclCollective::ReduceScatterSum);
    const auto& ag = comm.totals(NcclCollective::AllGather);
    CHECK(rs.calls == 2);
    CHECK(ag.calls == 2);
    CHECK(rs.bytes == int64_t(total) * (4 + 2));
    CHECK(ag.bytes == int64_t(total) * (4 + 2));
    CHECK(rs.seconds > 0.0);
    CHECK(ag.seconds > 0.0);
    CHECK(comm.totals(NcclCollective::Broadcast).calls == 0);
    const std::string summary = comm.timing_summary();
    CHECK(contains(summary, "reduce_scatter_sum 2 calls"));
    CHECK(contains(summary, "all_gather 2 calls"));
    CHECK(!contains(summary, "broadcast"));
  }

  SUBCASE("all_reduce_sum (fp64, fp32) and broadcast in place") {
    std::vector<double> norms = {1.5, -2.25, 1e-300, 3e300, 0.1};  // [5]
    auto d_norms = upload_now(norms);
    comm.all_reduce_sum(d_norms.get(), int64_t(norms.size()), NcclElement::F64, "test norms");
    const std::vector<float> small = random_floats(rng, 1001);  // [1001]
    auto d_small = upload_now(small);
    comm.all_reduce_sum(d_small.get(), int64_t(small.size()), NcclElement::F32, "test small");
    const std::vector<float> params = random_floats(rng, 4099);  // [4099]
    auto d_params = upload_now(params);
    comm.broadcast(d_params.get(), int64_t(params.size()), NcclElement::F32, 0, "test bcast");
    comm.wait("test all_reduce and broadcast");
    CHECK(same_bytes(download(d_norms), norms));
    CHECK(same_bytes(download(d_small), small));
    CHECK(same_bytes(download(d_params), params));
    CHECK(comm.totals(NcclCollective::AllReduceSum).calls == 2);
    CHECK(comm.totals(NcclCollective::AllReduceSum).bytes == 5 * 8 + 1001 * 4);
    CHECK(comm.totals(NcclCollective::Broadcast).bytes == 4099 * 4);
    // Empty buffers are no collectives at all.
    comm.all_reduce_sum(nullptr, 0, NcclElement::F64, "test empty");
    comm.wait("test empty");
    CHECK(comm.totals(NcclCollective::AllReduceSum).calls == 2);
  }

  SUBCASE("pack_padded / unpack_padded with a 3-rank layout's uneven shards") {
    for (const int64_t t : {int64_t(100025), int64_t(100026), int64_t(5), int64_t(2)}) {
      INFO("T " << t);
      const NcclPadding uneven(ShardLayout({t}, 3).shard_sizes());
      const std::vector<float> flat = random_floats(rng, size_t(t));  // [T]
      const std::vector<float> want = ll::dist::pad_flat<float>(flat, uneven, 0.0f);
      auto d_flat = upload_now(flat);
      auto d_padded = poisoned_buffer<float>(size_t(uneven.padded_size()));  // [3 * B]
      comm.pack_padded(d_flat.get(), d_padded.get(), uneven, NcclElement::F32);
      auto d_back = poisoned_buffer<float>(size_t(t));  // [T]
      comm.unpack_padded(d_padded.get(), d_back.get(), uneven, NcclElement::F32);
      sync(stream.handle);
      CHECK_MESSAGE(same_bytes(download(d_padded), want), "packed buffer differs from the host");
      CHECK_MESSAGE(same_bytes(download(d_back), flat), "unpacked buffer differs");
    }
  }
#endif
}

TEST_CASE("NCCL bad arguments become ll::Error and leave the communicator usable") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  // The check macro itself: an NCCL error code becomes a message with the call and NCCL's text.
  const std::string macro = error_of([] { LL_NCCL_CHECK(ncclResult_t(ncclInvalidArgument)); });
  CHECK(contains(macro, "test_nccl_communicator_gpu.cpp:"));
  CHECK(contains(macro, "ncclResult_t(ncclInvalidArgument) failed: "));
  CHECK(contains(macro, ncclGetErrorString(ncclInvalidArgument)));
  CHECK(error_of([] { LL_NCCL_CHECK(ncclResult_t(ncclInProgress)); }) == "<no error>");

  ll::dist::SingleProcessCommunicator host;
  Stream stream;
  CHECK(contains(error_of([&] { NcclCommunicator c(host, stream.handle, {.timeout_s = -1.0}); }),
                 "timeout must be a positive number of seconds, got -1"));
  CHECK(contains(error_of([&] { NcclCommunicator c(host, stream.handle, {.device = 99}); }),
                 "rank 0 (local rank 0) needs GPU 99 for NCCL, but this node has"));

  NcclCommunicator comm(host, stream.handle, NcclOptions{.timeout_s = 60.0});
  const NcclPadding one(std::vector<int64_t>{16});
  const NcclPadding two(std::vector<int64_t>{8, 8});
  auto d_a = poisoned_buffer<float>(16);
  auto d_b = poisoned_buffer<float>(16);
  std::vector<float> host_buffer(16, 1.0f);
  CHECK(contains(error_of([&] {
                   comm.reduce_scatter_sum(host_buffer.data(), d_b.get(), one, NcclElement::F32,
                                           "step 3 gradients");
                 }),
                 "rank 0: reduce_scatter_sum (step 3 gradients): the full (input) buffer is not "
                 "device memory"));
  CHECK(contains(error_of([&] {
                   comm.all_gather(d_a.get(), d_b.get(), two, NcclElement::F32, "step 3 params");
                 }),
                 "all_gather (step 3 params): the padding describes 2 shards but the world has 1"));
  CHECK(contains(error_of([&] {
                   comm.all_gather(d_a.get(), nullptr, one, NcclElement::F32, "step 3 params");
                 }),
                 "the full (output) buffer is null"));
  CHECK(contains(error_of([&] { comm.broadcast(d_a.get(), 16, NcclElement::F32, 1, "weights"); }),
                 "broadcast (weights): root rank 1 does not exist in a world of 1"));
  CHECK(contains(error_of([&] { comm.all_reduce_sum(d_a.get(), 16, NcclElement::BF16, "norm"); }),
                 "all_reduce_sum (norm): bf16 elements are not supported (fp32 or fp64)"));
  CHECK(contains(error_of([&] { comm.all_reduce_sum(d_a.get(), -1, NcclElement::F32, "norm"); }),
                 "negative count -1"));
  CHECK(contains(error_of([&] {
                   comm.reduce_scatter_sum(d_a.get(), d_b.get(), one, NcclElement::F64, "grads");
                 }),
                 "fp64 elements are not supported (fp32 or bf16)"));

  // None of these reached NCCL: the communicator still works.
  CHECK(comm.failure().empty());
  const std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  auto d_values = upload_now(values);
  comm.reduce_scatter_sum(d_values.get(), d_b.get(), one, NcclElement::F32, "after errors");
  comm.wait("after errors");
  CHECK(same_bytes(download(d_b), values));
#endif
}

TEST_CASE("NCCL collective timing on a LoRA+-sized fp32 buffer (world of one)") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  constexpr int kRepeats = 5;
  const int64_t total = int64_t(1) << 25;  // 32 Mi fp32 = 128 MiB, a 7B LoRA+ run's scale / 4
  ll::dist::SingleProcessCommunicator host;
  Stream stream;
  NcclCommunicator comm(host, stream.handle, NcclOptions{.timeout_s = 60.0});
  const NcclPadding padding(std::vector<int64_t>{total});
  std::vector<float> values(static_cast<size_t>(total));  // [T]
  for (int64_t i = 0; i < total; ++i) values[size_t(i)] = rank_contribution(0, i);
  auto d_full = upload_now(values);                         // [T]
  auto d_shard = poisoned_buffer<float>(size_t(total));     // [B]
  auto d_gathered = poisoned_buffer<float>(size_t(total));  // [T]
  // One untimed round: NCCL connects lazily on first use.
  comm.reduce_scatter_sum(d_full.get(), d_shard.get(), padding, NcclElement::F32, "warm-up");
  comm.all_gather(d_shard.get(), d_gathered.get(), padding, NcclElement::F32, "warm-up");
  comm.wait("warm-up");
  const auto warm_rs = comm.totals(NcclCollective::ReduceScatterSum);
  const auto warm_ag = comm.totals(NcclCollective::AllGather);
  for (int i = 0; i < kRepeats; ++i) {
    comm.reduce_scatter_sum(d_full.get(), d_shard.get(), padding, NcclElement::F32, "timing");
    comm.all_gather(d_shard.get(), d_gathered.get(), padding, NcclElement::F32, "timing");
  }
  comm.wait("timing");
  CHECK(same_bytes(download(d_gathered), values));
  const auto& rs = comm.totals(NcclCollective::ReduceScatterSum);
  const auto& ag = comm.totals(NcclCollective::AllGather);
  CHECK(rs.calls == kRepeats + 1);
  CHECK(ag.calls == kRepeats + 1);
  const double rs_ms = (rs.seconds - warm_rs.seconds) * 1e3 / kRepeats;
  const double ag_ms = (ag.seconds - warm_ag.seconds) * 1e3 / kRepeats;
  CHECK(rs_ms > 0.0);
  CHECK(ag_ms > 0.0);
  const double gib = double(total) * 4 / double(1 << 30);
  const auto info = ll::cuda::device_info(comm.device());
  int version = 0;  // the library's, e.g. 22803 for 2.28.3
  LL_NCCL_CHECK(ncclGetVersion(&version));
  std::printf(
      "NCCL timing: %s, NCCL %d, world of 1, %lld fp32 (%.0f MiB): reduce_scatter_sum "
      "%.3f ms (%.0f GiB/s), all_gather %.3f ms (%.0f GiB/s), mean of %d; totals: %s\n",
      info.name.c_str(), version, static_cast<long long>(total), gib * 1024, rs_ms,
      gib / (rs_ms * 1e-3), ag_ms, gib / (ag_ms * 1e-3), kRepeats, comm.timing_summary().c_str());
  std::fflush(stdout);
#endif
}

// Last of the world-of-one cases: an aborted communicator leaves nothing behind that a later
// case could trip over, but if it did, only this case would show it.
TEST_CASE("NCCL collective stuck behind a stalled stream times out and aborts") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  constexpr double kTimeout = 0.5;
  ll::dist::SingleProcessCommunicator host;
  Stream stream;
  auto d_full = poisoned_buffer<float>(1024);   // [1024]
  auto d_shard = poisoned_buffer<float>(1024);  // [1024]
  {
    NcclCommunicator comm(host, stream.handle, NcclOptions{.timeout_s = kTimeout});
    // A host function that blocks the stream plays the rank that never arrives. It lets go
    // 0.5 s after the timeout (3 s at most): aborting NCCL frees device memory, which waits for
    // the stream, so the stall must end soon after the timeout for the abort to return.
    static std::atomic<bool> release{false};
    release = false;
    LL_CUDA_CHECK(cudaLaunchHostFunc(
        stream.handle,
        [](void*) {
          const auto start = std::chrono::steady_clock::now();
          while (!release && seconds_since(start) < 3.0)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        },
        nullptr));
    const NcclPadding one(std::vector<int64_t>{1024});
    comm.reduce_scatter_sum(d_full.get(), d_shard.get(), one, NcclElement::F32,
                            "step 12 gradients");
    std::thread releaser([] {
      std::this_thread::sleep_for(std::chrono::duration<double>(kTimeout + 0.5));
      release = true;
    });
    const auto start = std::chrono::steady_clock::now();
    const std::string message = error_of([&] { comm.wait("step 12 gradients"); });
    const double waited = seconds_since(start);
    releaser.join();
    CHECK(message ==
          "rank 0: reduce_scatter_sum (step 12 gradients) did not complete within 0.5 s: another "
          "rank died or hangs");
    CHECK(waited >= kTimeout);
    CHECK(waited < kTimeout + 2.5);  // the timeout, then the abort (waits for the stall's end)
    CHECK(comm.failure() == message);
    CHECK(contains(
        error_of([&] { comm.all_reduce_sum(d_full.get(), 4, NcclElement::F32, "step 13"); }),
        "rank 0: all_reduce_sum (step 13) cannot run after an earlier NCCL failure "
        "(rank 0: reduce_scatter_sum (step 12 gradients) did not complete"));
  }
  // The abandoned collective may still write its buffers: let the stream drain before they go.
  sync(stream.handle);
#endif
}

// ---- Several ranks: the children (run under mpirun by the case at the end; they return at
// once otherwise).

TEST_CASE("nccl child: collectives") {
  if (child_mode() != "collectives") return;
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  auto host = ll::dist::make_communicator({.timeout_s = 60.0});
  const int world = host->world_size();
  const int rank = host->rank();
  REQUIRE(world >= 2);
  LL_CUDA_CHECK(cudaSetDevice(host->local_rank()));  // the stream belongs to this rank's GPU
  Stream stream;
  {
    NcclCommunicator comm(*host, stream.handle, NcclOptions{.timeout_s = 60.0});
    CHECK(comm.rank() == rank);
    CHECK(comm.world_size() == world);
    CHECK(comm.device() == host->local_rank());

    // Uneven shards (T odd) through the padding: flat -> padded -> reduce-scatter.
    const ShardLayout layout({7, 0, 12, 3, 100003}, world);
    const NcclPadding padding(layout.shard_sizes());
    const int64_t total = layout.total_size();
    const int64_t block = padding.block_size();
    const auto range = layout.shard_range(rank);
    std::vector<float> full(static_cast<size_t>(total));  // [T], this rank's gradients
    for (int64_t i = 0; i < total; ++i) full[size_t(i)] = rank_contribution(rank, i);
    auto d_full = upload_now(full);
    auto d_padded = poisoned_buffer<float>(size_t(padding.padded_size()));  // [W * B]
    auto d_shard = poisoned_buffer<float>(size_t(block));                   // [B]
    comm.pack_padded(d_full.get(), d_padded.get(), padding, NcclElement::F32);
    comm.reduce_scatter_sum(d_padded.get(), d_shard.get(), padding, NcclElement::F32,
                            "test gradients");
    comm.wait("test gradients");
    const std::vector<float> shard = download(d_shard);
    int64_t wrong = 0;
    for (int64_t k = 0; k < range.size(); ++k) {
      float expected = 0.0f;
      for (int r = 0; r < world; ++r) expected += rank_contribution(r, range.begin + k);
      wrong += !(shard[size_t(k)] == expected);
    }
    for (int64_t k = range.size(); k < block; ++k) wrong += !(shard[size_t(k)] == 0.0f);  // padding
    CHECK_MESSAGE(wrong == 0, wrong << " of " << block << " reduce-scattered elements wrong");

    // The mean of each shard, all-gathered and unpacked: every rank holds the whole mean.
    std::vector<float> mean_shard(size_t(block), 0.0f);  // [B]
    for (int64_t k = 0; k < range.size(); ++k)
      mean_shard[size_t(k)] = shard[size_t(k)] / float(world);
    auto d_mean_shard = upload_now(mean_shard);
    auto d_gathered = poisoned_buffer<float>(size_t(padding.padded_size()));  // [W * B]
    auto d_mean = poisoned_buffer<float>(size_t(total));                      // [T]
    comm.all_gather(d_mean_shard.get(), d_gathered.get(), padding, NcclElement::F32,
                    "test parameters");
    comm.unpack_padded(d_gathered.get(), d_mean.get(), padding, NcclElement::F32);
    comm.wait("test parameters");
    sync(stream.handle);  // the unpack copies follow the collective on the stream
    const std::vector<float> mean = download(d_mean);
    wrong = 0;
    for (int64_t i = 0; i < total; ++i) {
      float sum = 0.0f;
      for (int r = 0; r < world; ++r) sum += rank_contribution(r, i);
      wrong += !(mean[size_t(i)] == sum / float(world));
    }
    CHECK_MESSAGE(wrong == 0, wrong << " of " << total << " all-gathered elements wrong");

    // all_reduce_sum over fp64: values[i] = (rank + 1) * (i + 1) + 2^-rank, exact sums.
    std::vector<double> values(5);  // [5]
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = (rank + 1) * double(i + 1) + std::ldexp(1.0, -rank);
    auto d_values = upload_now(values);
    comm.all_reduce_sum(d_values.get(), int64_t(values.size()), NcclElement::F64, "test norms");
    // broadcast from the last rank: everyone ends with its values.
    const int root = world - 1;
    std::vector<float> params(777);  // [777]
    for (size_t i = 0; i < params.size(); ++i) params[i] = float(rank * 1000 + int(i));
    auto d_params = upload_now(params);
    comm.broadcast(d_params.get(), int64_t(params.size()), NcclElement::F32, root, "test bcast");
    comm.wait("test all_reduce and broadcast");
    const std::vector<double> reduced = download(d_values);
    for (size_t i = 0; i < values.size(); ++i) {
      double expected = double(i + 1) * world * (world + 1) / 2.0;
      for (int r = 0; r < world; ++r) expected += std::ldexp(1.0, -r);
      CHECK(reduced[i] == expected);
    }
    const std::vector<float> got = download(d_params);
    wrong = 0;
    for (size_t i = 0; i < got.size(); ++i) wrong += !(got[i] == float(root * 1000 + int(i)));
    CHECK_MESSAGE(wrong == 0, wrong << " broadcast elements differ from root's");
    std::printf("rank %d NCCL timing: %s\n", rank, comm.timing_summary().c_str());
  }
  host->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d\n", rank, world);
  std::fflush(stdout);
#endif
}

TEST_CASE("nccl child: timeout") {
  if (child_mode() != "timeout") return;
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  constexpr double kTimeout = 2.0;
  auto host = ll::dist::make_communicator({.timeout_s = 60.0});
  LL_CUDA_CHECK(cudaSetDevice(host->local_rank()));
  Stream stream;
  NcclCommunicator comm(*host, stream.handle, NcclOptions{.timeout_s = kTimeout});
  std::vector<double> norm = {1.0};  // [1]
  auto d_norm = upload_now(norm);
  comm.all_reduce_sum(d_norm.get(), 1, NcclElement::F64, "step 11 gradient norm");  // connects
  comm.wait("step 11 gradient norm");
  if (comm.rank() == 1) {
    // This rank "hangs": it never joins the next all-reduce. abort_world on rank 0 ends it.
    std::this_thread::sleep_for(std::chrono::seconds(30));
    std::printf("HUNG_RANK_WAS_NOT_STOPPED\n");
    std::fflush(stdout);
    std::_Exit(0);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string message = error_of([&] {
    comm.all_reduce_sum(d_norm.get(), 1, NcclElement::F64, "step 12 gradient norm");
    comm.wait("step 12 gradient norm");
  });
  const double waited = seconds_since(start);
  CHECK(message ==
        "rank 0: all_reduce_sum (step 12 gradient norm) did not complete within 2 s: "
        "another rank died or hangs");
  if (contains(message, "did not complete within 2 s") && waited >= kTimeout &&
      waited < kTimeout + 3.0)
    std::printf("TIMEOUT_OK rank 0 waited %.2f s\n", waited);
  std::fflush(stdout);
  host->abort_world(message, 3);
#endif
}

// ---- Several ranks: the parent.

#if defined(LL_HAVE_NCCL) && defined(LL_HAVE_MPI)
namespace {

using ll::test::MpiRun;

// Runs this executable's child case `mode` as `ranks` MPI processes.
MpiRun run_under_mpirun(int ranks, const std::string& mode) {
  return ll::test::run_self_under_mpirun(ranks, fmt::format("{}={}", kChildVariable, mode),
                                         "nccl child: " + mode, 90);
}

}  // namespace
#endif

TEST_CASE("NCCL across 2 GPUs under mpirun: collectives, and a hung rank times out") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
#if !defined(LL_HAVE_MPI)
  std::printf(
      "SKIP (this case only): multi-rank NCCL needs the MPI communicator; this build has "
      "none (LL_ENABLE_MPI=OFF)\n");
  return;
#elif defined(LL_CUDA_BACKEND_EMULATED)
  std::printf(
      "SKIP (this case only): the emulated NCCL connects ranks on threads of one process, not "
      "MPI processes (tests/cuda_emu/fake/test_fake_nccl_gpu.cpp runs several ranks)\n");
  return;
#else
  if (ll::cuda::device_count() < 2) {
    std::printf("SKIP (this case only): multi-rank NCCL needs 2 GPUs, this machine has %d\n",
                ll::cuda::device_count());
    return;
  }
  if (!ll::test::have_mpirun()) {
    std::printf("SKIP (this case only): mpirun not found; install openmpi-bin\n");
    return;
  }
  {
    const MpiRun run = run_under_mpirun(2, "collectives");
    INFO("mpirun exited with " << run.exit_code << " after " << run.seconds << " s; output:\n"
                               << run.output);
    CHECK(run.exit_code == 0);
    CHECK(contains(run.output, "CHILD_OK rank 0 of 2"));
    CHECK(contains(run.output, "CHILD_OK rank 1 of 2"));
    std::printf("%s", run.output.c_str());
  }
  {
    const MpiRun run = run_under_mpirun(2, "timeout");
    INFO("mpirun exited with " << run.exit_code << " after " << run.seconds << " s; output:\n"
                               << run.output);
    CHECK(contains(run.output, "TIMEOUT_OK rank 0"));
    CHECK(contains(run.output,
                   "rank 0: all_reduce_sum (step 12 gradient norm) did not complete "
                   "within 2 s: another rank died or hangs"));
    CHECK(run.exit_code == 3);  // abort_world's code, passed on by mpirun
    CHECK(!contains(run.output, "HUNG_RANK_WAS_NOT_STOPPED"));
    CHECK(run.seconds < 25.0);  // the hung rank sleeps 30 s: it was stopped
  }
#endif
#endif
}
