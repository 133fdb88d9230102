// The NCCL shard transport (engine/parallel/cuda/nccl_shard_transport.h) and the grouped reduce
// under it (NcclCommunicator::reduce_sum), on the CUDA backend's tensors.
//
// World of one (any machine with a GPU): buckets of the flat gradient in a shuffled order (empty
// ones and the whole range included) land bitwise in the gradient shard, which is poisoned with
// NaN first so that an element left unwritten fails; the reduce is ordered after backend work
// still running when it starts, and the backend reads the shard after finish_reduces without
// any other synchronisation; all_gather copies the shard; the timing summary names the grouped
// reduce and its exposed time; bad dtypes, shapes and ranges are ll::Error and leave the
// transport usable; a reduce stuck behind a stalled backend stream times out and the transport
// is destroyed cleanly.
//
// Several ranks (only where MPI is built, mpirun exists and the machine has >= 2 GPUs; skipped
// with a message otherwise): this executable runs itself under `mpirun -np 2`, one GPU per rank;
// each rank reduces buckets that cut across the shard boundary and checks its shard against
// sums it computes for all ranks, then all-gathers uneven shards through the padded path.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/shard_layout.h"
#include "engine/parallel/shard_transport.h"
#include "tests/engine/parallel/mpirun_util.h"
#include "tests/engine/parallel/nccl_test_util.h"
#include "tests/error_text.h"
#include "tests/gpu_skip.h"

#if defined(LL_HAVE_NCCL)
#include <cuda_runtime.h>

#include "engine/parallel/cuda/nccl_communicator.h"
#include "engine/parallel/cuda/nccl_shard_transport.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#endif

namespace {

constexpr const char* kChildVariable = "LL_NCCL_TRANSPORT_TEST_CHILD";

std::string child_mode() { return ll::test::child_mode(kChildVariable); }

using ll::test::require_gpu_and_nccl;

}  // namespace

#if defined(LL_HAVE_NCCL)
namespace {

using ll::CudaBackend;
using ll::DType;
using ll::OwnedTensor;
using ll::Tensor;
using ll::dist::FlatRange;
using ll::dist::NcclShardTransport;
using ll::dist::ShardLayout;
using ll::dist::ShardTransport;

using ll::test::contains;

using ll::test::rank_contribution;
using ll::test::seconds_since;

using ll::test::error_of;

// An F32 vector [n] on the backend holding `values` (synchronous upload).
OwnedTensor put(CudaBackend& gpu, const std::vector<float>& values) {
  OwnedTensor t = gpu.allocate({int64_t(values.size())}, DType::F32);
  gpu.upload_f32(*t, values.data());
  return t;
}

// Downloads on the backend's stream: sees what the transport ordered before it, nothing else.
std::vector<float> get(CudaBackend& gpu, const Tensor& t) {
  std::vector<float> values(size_t(t.numel()));  // [n]
  gpu.download_f32(values.data(), t);
  return values;
}

// NaN bytes, written on the backend's stream (ordered like any backend op).
void poison(CudaBackend& gpu, const Tensor& t) {
  LL_CUDA_CHECK(cudaMemsetAsync(t.data, 0xFF, t.nbytes(), gpu.stream()));
}

// The tensors' boundaries as buckets [begin, end), plus empty ones, in a shuffled order.
std::vector<FlatRange> shuffled_buckets(const ShardLayout& layout, std::mt19937_64& rng) {
  std::vector<FlatRange> buckets;
  for (int t = 0; t < layout.tensor_count(); ++t) {
    const int64_t begin = layout.tensor_offset(t);
    buckets.push_back({begin, begin + layout.tensor_sizes()[size_t(t)]});  // may be empty
  }
  buckets.push_back({0, 0});
  buckets.push_back({layout.total_size(), layout.total_size()});
  std::shuffle(buckets.begin(), buckets.end(), rng);
  return buckets;
}

}  // namespace
#endif

TEST_CASE("NCCL shard transport, world of one: buckets reduce bitwise into the shard") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using ll::test::same_bytes;
  CudaBackend gpu(0);
  ll::dist::SingleProcessCommunicator host;
  // Trainable-tensor sizes like a tiny model's: odd, one empty, one large.
  const ShardLayout layout({7, 0, 12, 3, 100003, 1, 4096}, 1);
  const int64_t total = layout.total_size();
  auto transport = ll::dist::make_nccl_shard_transport(gpu, host, layout, {.timeout_s = 60.0});
  CHECK(contains(transport->name(), "NCCL 2."));
  CHECK(contains(transport->name(), " on GPU 0"));

  int64_t reduces = 0;  // non-empty start_reduce calls: one reduce_sum each
  for (const uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const std::vector<float> values = ll::test::random_uniform(rng, size_t(total), -3.0f, 3.0f);
    OwnedTensor flat_grad = put(gpu, values);                    // [T]
    OwnedTensor grad_shard = gpu.allocate({total}, DType::F32);  // [T]: the one shard

    // Buckets in a shuffled order, as a backward finishes them.
    poison(gpu, *grad_shard);
    for (const FlatRange& b : shuffled_buckets(layout, rng)) {
      transport->start_reduce(*flat_grad, b.begin, b.end, *grad_shard, "test buckets");
      reduces += b.size() > 0;
    }
    transport->finish_reduces("test buckets");
    CHECK_MESSAGE(same_bytes(get(gpu, *grad_shard), values), "bucketed reduce differs");

    // The whole range at once.
    poison(gpu, *grad_shard);
    transport->start_reduce(*flat_grad, 0, total, *grad_shard, "test whole");
    reduces += 1;
    transport->finish_reduces("test whole");
    CHECK_MESSAGE(same_bytes(get(gpu, *grad_shard), values), "whole-range reduce differs");

    // all_gather: the flat buffer receives the shard (in a world of one, a copy).
    OwnedTensor gathered = gpu.allocate({total}, DType::F32);  // [T]
    poison(gpu, *gathered);
    transport->all_gather(*grad_shard, *gathered, "test gather");
    CHECK_MESSAGE(same_bytes(get(gpu, *gathered), values), "all-gathered buffer differs");
  }

  {
    // Gradients still being written on the backend's stream when the reduce starts: the reduce
    // waits for them. (A 4 Mi-element add takes long enough to lose a race.)
    const ShardLayout big_layout({int64_t(1) << 22, 3}, 1);
    const int64_t big = big_layout.total_size();
    auto big_transport =
        ll::dist::make_nccl_shard_transport(gpu, host, big_layout, {.timeout_s = 60.0});
    std::mt19937_64 rng(31);
    const std::vector<float> big_values = ll::test::random_uniform(rng, size_t(big));
    OwnedTensor addend = put(gpu, big_values);                // [T]
    OwnedTensor big_grad = gpu.allocate({big}, DType::F32);   // [T]
    OwnedTensor big_shard = gpu.allocate({big}, DType::F32);  // [T]
    gpu.fill_zero(*big_grad);
    poison(gpu, *big_shard);
    gpu.add_inplace(*big_grad, *addend);  // 0 + x = x exactly
    big_transport->start_reduce(*big_grad, 0, big, *big_shard, "test ordering");
    big_transport->finish_reduces("test ordering");
    CHECK_MESSAGE(same_bytes(get(gpu, *big_shard), big_values),
                  "the reduce did not wait for the backend's gradients");
  }

  std::vector<double> norms = {1.5, -2.25, 1e-300};  // [3], host values
  transport->all_reduce_sum(norms, "test norm");
  CHECK(norms == std::vector<double>{1.5, -2.25, 1e-300});

  auto& nccl_transport = dynamic_cast<NcclShardTransport&>(*transport);
  CHECK(nccl_transport.reduce_seconds() > 0.0);
  CHECK(nccl_transport.exposed_seconds() >= 0.0);
  CHECK(nccl_transport.host_wait_seconds() > 0.0);
  const std::string summary = transport->timing_summary();
  MESSAGE("timing: " << summary);
  CHECK(contains(summary, "NCCL all_gather 2 calls, "));
  CHECK(contains(summary, fmt::format("; reduce_sum {} calls, ", reduces)));
  CHECK(contains(summary, "reduces exposed "));
  CHECK(contains(summary, "hidden behind compute); host waited "));
#endif
}

TEST_CASE("NCCL reduce_sum groups several pieces into one collective (world of one)") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  using namespace ll::test;
  using ll::dist::NcclCollective;
  using ll::dist::NcclElement;
  using ll::dist::NcclReducePiece;
  ll::dist::SingleProcessCommunicator host;
  cudaStream_t stream = nullptr;
  LL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    ll::dist::NcclCommunicator comm(host, stream, {.timeout_s = 60.0});
    std::mt19937_64 rng(99);
    const std::vector<float> values = random_uniform(rng, 3000);  // [3000]
    DeviceBuffer<float> d_values = upload(values);
    DeviceBuffer<float> d_out(3000);
    d_out.poison();
    const std::vector<double> doubles = {1.0, -2.5, 1e-310};  // [3], a denormal included
    DeviceBuffer<double> d_doubles = upload(doubles);
    DeviceBuffer<double> d_doubles_out(3);
    d_doubles_out.poison();
    device_sync();  // the helpers ran on the legacy stream, which a non-blocking one ignores
    // Out of order, one empty (null buffers allowed when empty).
    const std::vector<NcclReducePiece> pieces = {
        {d_values.get() + 2000, d_out.get() + 2000, 1000, 0},
        {nullptr, nullptr, 0, 0},
        {d_values.get(), d_out.get(), 1500, 0},
        {d_values.get() + 1500, d_out.get() + 1500, 500, 0},
    };
    comm.reduce_sum(pieces, NcclElement::F32, "test pieces");
    const NcclReducePiece one{d_doubles.get(), d_doubles_out.get(), 3, 0};
    comm.reduce_sum({&one, 1}, NcclElement::F64, "test doubles");
    comm.reduce_sum({}, NcclElement::F32, "test nothing");  // no collective at all
    comm.wait("test pieces");
    CHECK(same_bytes(download(d_out), values));
    CHECK(same_bytes(download(d_doubles_out), doubles));
    const auto& totals = comm.totals(NcclCollective::ReduceSum);
    CHECK(totals.calls == 2);
    CHECK(totals.bytes == 3000 * 4 + 3 * 8);
    CHECK(totals.seconds > 0.0);
    CHECK(contains(comm.timing_summary(), "reduce_sum 2 calls"));
    CHECK(std::string(ll::dist::nccl_collective_name(NcclCollective::ReduceSum)) == "reduce_sum");

    // Bad pieces never reach NCCL.
    std::vector<float> host_buffer(16);
    const NcclReducePiece bad_root{d_values.get(), d_out.get(), 16, 1};
    CHECK(contains(error_of([&] {
                     comm.reduce_sum({&bad_root, 1}, NcclElement::F32, "g");
                   }),
                   "rank 0: reduce_sum (g): piece 0 has root rank 1, which does not exist in a "
                   "world of 1"));
    const NcclReducePiece negative{d_values.get(), d_out.get(), -1, 0};
    CHECK(contains(error_of([&] {
                     comm.reduce_sum({&negative, 1}, NcclElement::F32, "g");
                   }),
                   "piece 0 has negative count -1"));
    const NcclReducePiece on_host{host_buffer.data(), d_out.get(), 16, 0};
    CHECK(contains(error_of([&] {
                     comm.reduce_sum({&on_host, 1}, NcclElement::F32, "g");
                   }),
                   "reduce_sum (g): the send (input) buffer is not device memory"));
    const NcclReducePiece no_recv{d_values.get(), nullptr, 16, 0};
    CHECK(contains(error_of([&] {
                     comm.reduce_sum({&no_recv, 1}, NcclElement::F32, "g");
                   }),
                   "reduce_sum (g): the recv (output) buffer is null"));
    CHECK(comm.failure().empty());
    CHECK(comm.totals(NcclCollective::ReduceSum).calls == 2);
  }
  LL_CUDA_CHECK(cudaStreamSynchronize(stream));
  LL_CUDA_CHECK(cudaStreamDestroy(stream));
#endif
}

TEST_CASE("NCCL shard transport: bad dtypes, shapes, ranges and backends are ll::Error") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_HAVE_NCCL)
  CudaBackend gpu(0);
  ll::dist::SingleProcessCommunicator host;
  const ShardLayout layout({10, 6}, 1);
  CHECK(contains(error_of([&] {
                   ll::CpuBackend cpu;
                   ll::dist::make_nccl_shard_transport(cpu, host, layout, {});
                 }),
                 "the NCCL shard transport needs the CUDA backend's device memory, got the cpu "
                 "backend"));
  CHECK(contains(error_of([&] {
                   ll::dist::make_nccl_shard_transport(gpu, host, ShardLayout({10, 6}, 2), {});
                 }),
                 "rank 0: NCCL shard transport: the shard layout is for 2 ranks but the world "
                 "has 1"));

  // The engine's factory picks this transport for the CUDA backend.
  CHECK(contains(ll::dist::make_shard_transport(gpu, host, layout)->name(), "NCCL "));

  auto transport = ll::dist::make_nccl_shard_transport(gpu, host, layout, {.timeout_s = 60.0});
  const std::vector<float> values = {1, 2,  3,  4,  5,  6,  7,  8,
                                     9, 10, 11, 12, 13, 14, 15, 16};  // [16]
  OwnedTensor grad = put(gpu, values);                                // [16]
  OwnedTensor shard = gpu.allocate({16}, DType::F32);                 // [16]
  OwnedTensor grad_bf16 = gpu.allocate({16}, DType::BF16);            // wrong dtype
  OwnedTensor long_grad = gpu.allocate({17}, DType::F32);             // wrong size
  OwnedTensor square = gpu.allocate({4, 4}, DType::F32);              // wrong rank
  const std::string ctx = "step 3 gradients";
  auto reduce = [&](const Tensor& g, int64_t b, int64_t e, const Tensor& s) {
    return error_of([&] { transport->start_reduce(g, b, e, s, ctx); });
  };
  CHECK(contains(reduce(*grad_bf16, 0, 16, *shard),
                 "rank 0: start_reduce (step 3 gradients): the flat gradient must be F32, got "
                 "BF16"));
  CHECK(contains(reduce(*long_grad, 0, 16, *shard),
                 "start_reduce (step 3 gradients): the flat gradient must have shape [16], got "
                 "[17]"));
  CHECK(contains(reduce(*grad, 0, 16, *square),
                 "the gradient shard must have shape [16], got [4, 4]"));
  CHECK(contains(reduce(*grad, 5, 3, *shard),
                 "start_reduce (step 3 gradients): the range [5, 3) is not inside the flat "
                 "gradient [0, 16)"));
  CHECK(contains(reduce(*grad, 0, 17, *shard), "the range [0, 17) is not inside"));
  CHECK(contains(reduce(*grad, -1, 4, *shard), "the range [-1, 4) is not inside"));
  CHECK(contains(error_of([&] { transport->all_gather(*shard, *long_grad, "params"); }),
                 "all_gather (params): the flat buffer must have shape [16], got [17]"));
  CHECK(contains(error_of([&] { transport->all_gather(*grad_bf16, *grad, "params"); }),
                 "all_gather (params): the shard must be F32, got BF16"));

  // Nothing reached NCCL: the transport still works.
  poison(gpu, *shard);
  transport->start_reduce(*grad, 3, 16, *shard, ctx);
  transport->start_reduce(*grad, 0, 3, *shard, ctx);
  transport->finish_reduces(ctx);
  CHECK(ll::test::same_bytes(get(gpu, *shard), values));
  transport->finish_reduces("nothing pending");  // no reduce since the last: returns at once
#endif
}

// ---- Several ranks: the child (run under mpirun by the case at the end; returns at once
// otherwise).

TEST_CASE("nccl transport child: buckets") {
  if (child_mode() != "buckets") return;
#if defined(LL_HAVE_NCCL)
  auto host = ll::dist::make_communicator({.timeout_s = 60.0});
  const int world = host->world_size();
  const int rank = host->rank();
  REQUIRE(world >= 2);
  {
    CudaBackend gpu(host->local_rank());
    // T odd: uneven shards, so all_gather goes through the padded buffers.
    const ShardLayout layout({7, 0, 12, 3, 100003, 5}, world);
    const int64_t total = layout.total_size();
    const FlatRange own = layout.shard_range(rank);
    auto transport = ll::dist::make_nccl_shard_transport(gpu, *host, layout, {.timeout_s = 60.0});
    std::vector<float> full(static_cast<size_t>(total));  // [T], this rank's gradients
    for (int64_t i = 0; i < total; ++i) full[size_t(i)] = rank_contribution(rank, i);
    OwnedTensor flat_grad = put(gpu, full);                           // [T]
    OwnedTensor grad_shard = gpu.allocate({own.size()}, DType::F32);  // [shard]
    poison(gpu, *grad_shard);
    // The same shuffled buckets on every rank (same seed); the large tensor's crosses shards.
    std::mt19937_64 rng(2024);
    for (const FlatRange& b : shuffled_buckets(layout, rng))
      transport->start_reduce(*flat_grad, b.begin, b.end, *grad_shard, "test buckets");
    transport->finish_reduces("test buckets");
    const std::vector<float> shard = get(gpu, *grad_shard);
    int64_t wrong = 0;
    for (int64_t k = 0; k < own.size(); ++k) {
      float expected = 0.0f;
      for (int r = 0; r < world; ++r) expected += rank_contribution(r, own.begin + k);
      wrong += !(shard[size_t(k)] == expected);
    }
    CHECK_MESSAGE(wrong == 0, wrong << " of " << own.size() << " reduced elements wrong");

    // all_gather of uneven shards: shard value of flat index i is i / 4 on every rank.
    std::vector<float> mine(static_cast<size_t>(own.size()));  // [shard]
    for (int64_t k = 0; k < own.size(); ++k) mine[size_t(k)] = float(own.begin + k) / 4.0f;
    OwnedTensor master = put(gpu, mine);                   // [shard]
    OwnedTensor flat = gpu.allocate({total}, DType::F32);  // [T]
    poison(gpu, *flat);
    transport->all_gather(*master, *flat, "test parameters");
    const std::vector<float> gathered = get(gpu, *flat);
    wrong = 0;
    for (int64_t i = 0; i < total; ++i) wrong += !(gathered[size_t(i)] == float(i) / 4.0f);
    CHECK_MESSAGE(wrong == 0, wrong << " of " << total << " gathered elements wrong");

    std::vector<double> norm = {double(rank + 1)};  // [1]
    transport->all_reduce_sum(norm, "test norm");
    CHECK(norm[0] == double(world) * (world + 1) / 2.0);
    std::printf("rank %d %s: %s\n", rank, transport->name().c_str(),
                transport->timing_summary().c_str());
  }
  host->barrier("end of test");
  std::printf("CHILD_OK rank %d of %d\n", rank, world);
  std::fflush(stdout);
#endif
}

TEST_CASE("NCCL shard transport across 2 GPUs under mpirun") {
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
  const ll::test::MpiRun run = ll::test::run_self_under_mpirun(
      2, fmt::format("{}=buckets", kChildVariable), "nccl transport child: buckets", 90);
  INFO("mpirun exited with " << run.exit_code << " after " << run.seconds << " s; output:\n"
                             << run.output);
  CHECK(run.exit_code == 0);
  CHECK(contains(run.output, "CHILD_OK rank 0 of 2"));
  CHECK(contains(run.output, "CHILD_OK rank 1 of 2"));
  std::printf("%s", run.output.c_str());
#endif
#endif
}

// Last of all the cases: an aborted communicator leaves nothing behind that a later case could
// trip over, but if it did, only this case would show it.
TEST_CASE("NCCL shard transport: a reduce stuck behind a stalled backend stream times out") {
  if (!child_mode().empty()) return;
  require_gpu_and_nccl();
#if defined(LL_CUDA_BACKEND_EMULATED)
  // The emulated runtime orders streams by running the waited-for stream at cudaStreamWaitEvent:
  // the stalling host function runs inside start_reduce, on this thread, and nothing is left to
  // time out. tests/cuda_emu/fake/test_fake_nccl_gpu.cpp times out a rank that never joins.
  std::printf(
      "SKIP (this case only): the emulated runtime's event waits run the backend stream at once, "
      "so its stall cannot outlast start_reduce\n");
  return;
#endif
#if defined(LL_HAVE_NCCL)
  constexpr double kTimeout = 0.5;
  CudaBackend gpu(0);
  ll::dist::SingleProcessCommunicator host;
  const ShardLayout layout({1000, 28}, 1);
  OwnedTensor grad = gpu.allocate({1028}, DType::F32);   // [T]
  OwnedTensor shard = gpu.allocate({1028}, DType::F32);  // [T]
  gpu.fill_zero(*grad);
  std::string message;
  double waited = 0.0;
  {
    auto transport =
        ll::dist::make_nccl_shard_transport(gpu, host, layout, {.timeout_s = kTimeout});
    // A host function that blocks the backend's stream plays a backward that never ends (the
    // reduce waits for it). It lets go 0.5 s after the timeout (3 s at most): aborting NCCL
    // frees device memory, which waits for the streams.
    static std::atomic<bool> release{false};
    release = false;
    LL_CUDA_CHECK(cudaLaunchHostFunc(
        gpu.stream(),
        [](void*) {
          const auto start = std::chrono::steady_clock::now();
          while (!release && seconds_since(start) < 3.0)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        },
        nullptr));
    transport->start_reduce(*grad, 0, 1028, *shard, "step 12 gradients");
    std::thread releaser([] {
      std::this_thread::sleep_for(std::chrono::duration<double>(kTimeout + 0.5));
      release = true;
    });
    const auto start = std::chrono::steady_clock::now();
    message = error_of([&] { transport->finish_reduces("step 12 backward"); });
    waited = seconds_since(start);
    releaser.join();
    CHECK(contains(transport->timing_summary(), "NCCL"));  // still answers after the failure
    CHECK(contains(error_of([&] { transport->start_reduce(*grad, 0, 4, *shard, "step 13"); }),
                   "cannot run after an earlier NCCL failure"));
  }  // destroyed after the failure: no hang, no throw
  CHECK(contains(message, "rank 0: reduce_sum (step 12 gradients, flat [0, 1028))"));
  CHECK(contains(message, "did not complete within 0.5 s: another rank died or hangs"));
  CHECK(waited >= kTimeout);
  CHECK(waited < kTimeout + 2.5);
  gpu.synchronize();  // the stall is over; the backend still works
  std::vector<float> zeros(1028, 0.0f);
  CHECK(get(gpu, *grad) == zeros);
#endif
}
