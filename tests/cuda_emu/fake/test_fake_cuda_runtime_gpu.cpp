// The emulated build's stand-in CUDA runtime (fake_cuda_runtime.cpp): lazy streams ordered only
// by events and synchronizations, the hazard check on frees, pinned host memory. A "gpu" test
// because it needs the emulated CUDA build; elsewhere it skips.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

#if defined(LL_CUDA_BACKEND_EMULATED)
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "tests/cuda_emu/fake/fake_cuda_runtime.h"
#include "tests/error_text.h"

namespace {

using ll::test::contains;
using ll::test::error_of;

// A stream, device and pinned buffers of n bytes, freed at the end of a case.
struct Fixture {
  static constexpr size_t n = 64;
  cudaStream_t a = nullptr, b = nullptr;
  unsigned char* dev = nullptr;
  unsigned char* pinned = nullptr;
  Fixture() {
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
    LL_CUDA_CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
    LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dev), n));
    LL_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), n));
  }
  ~Fixture() {
    (void)cudaDeviceSynchronize();
    (void)cudaFree(dev);
    (void)cudaFreeHost(pinned);
    (void)cudaStreamDestroy(a);
    (void)cudaStreamDestroy(b);
    (void)cudaGetLastError();
  }
};

bool all_bytes(const unsigned char* p, size_t n, unsigned char value) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != value) return false;
  return true;
}

}  // namespace

TEST_CASE("fake runtime: a queued copy has not run until its stream is ordered") {
  Fixture f;
  std::memset(f.pinned, 7, f.n);
  LL_CUDA_CHECK(cudaMemcpyAsync(f.dev, f.pinned, f.n, cudaMemcpyHostToDevice, f.a));
  CHECK(ll_emu_queued_ops(f.a) == 1);
  CHECK(all_bytes(f.dev, f.n, 0xff));  // new memory is poison; the copy waits
  LL_CUDA_CHECK(cudaStreamSynchronize(f.a));
  CHECK(ll_emu_queued_ops(f.a) == 0);
  CHECK(all_bytes(f.dev, f.n, 7));

  // Into pageable memory the copy is done when the call returns (after the stream's queue),
  // and from pageable memory the source is read at the call.
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 3, f.n, f.a));
  std::vector<unsigned char> page(f.n, 0);
  LL_CUDA_CHECK(cudaMemcpyAsync(page.data(), f.dev, f.n, cudaMemcpyDeviceToHost, f.a));
  CHECK(all_bytes(page.data(), f.n, 3));
  std::vector<unsigned char> source(f.n, 9);
  LL_CUDA_CHECK(cudaMemcpyAsync(f.dev, source.data(), f.n, cudaMemcpyHostToDevice, f.a));
  source.assign(f.n, 1);  // CUDA staged the old contents
  CHECK(all_bytes(f.dev, f.n, 3));
  LL_CUDA_CHECK(ll_emu_run_stream(f.a));  // what a kernel launch on the stream does first
  CHECK(all_bytes(f.dev, f.n, 9));
}

TEST_CASE("fake runtime: only events order two streams") {
  Fixture f;
  cudaEvent_t e = nullptr;
  LL_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  unsigned char* other = nullptr;
  LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&other), f.n));
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 1, f.n, f.a));
  LL_CUDA_CHECK(cudaEventRecord(e, f.a));
  LL_CUDA_CHECK(cudaMemsetAsync(other, 2, f.n, f.a));  // after the event's mark
  // Stream b copies what stream a wrote up to the event; a's later work still waits.
  LL_CUDA_CHECK(cudaStreamWaitEvent(f.b, e, 0));
  LL_CUDA_CHECK(cudaMemcpyAsync(f.pinned, f.dev, f.n, cudaMemcpyDeviceToHost, f.b));
  CHECK(ll_emu_queued_ops(f.a) == 1);
  CHECK(ll_emu_queued_ops(f.b) == 1);
  LL_CUDA_CHECK(cudaStreamSynchronize(f.b));
  CHECK(all_bytes(f.pinned, f.n, 1));
  CHECK(ll_emu_queued_ops(f.a) == 1);
  CHECK(all_bytes(other, f.n, 0xff));
  LL_CUDA_CHECK(cudaStreamSynchronize(f.a));
  CHECK(all_bytes(other, f.n, 2));

  // Without the event, b's copy would read whatever a had run by then: the copy is refused
  // as a race with a's queued memset, and so is a memset over b's queued copy.
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 4, f.n, f.a));
  const std::string race = error_of(
      [&] { LL_CUDA_CHECK(cudaMemcpyAsync(f.pinned, f.dev, f.n, cudaMemcpyDeviceToHost, f.b)); });
  CHECK(contains(race, "cudaErrorIllegalState"));
  CHECK(contains(race, "a cudaMemcpyAsync on stream"));
  CHECK(contains(race, "and a cudaMemsetAsync still queued on stream"));
  CHECK(contains(race, "no event between them"));
  CHECK(ll_emu_queued_ops(f.b) == 0);
  LL_CUDA_CHECK(cudaStreamSynchronize(f.a));
  LL_CUDA_CHECK(cudaMemcpyAsync(f.pinned, f.dev, f.n, cudaMemcpyDeviceToHost, f.b));
  // Both reading the same bytes is no race.
  LL_CUDA_CHECK(cudaMemcpyAsync(other, f.dev, f.n, cudaMemcpyDeviceToDevice, f.a));
  CHECK(cudaMemsetAsync(f.dev, 0, 1, f.a) == cudaErrorIllegalState);
  CHECK(cudaMemsetAsync(f.pinned + 8, 0, 1, f.a) == cudaErrorIllegalState);
  std::vector<unsigned char> page(f.n);
  CHECK(cudaMemcpyAsync(page.data(), f.pinned, f.n, cudaMemcpyHostToHost, f.a) ==
        cudaErrorIllegalState);
  (void)cudaGetLastError();
  LL_CUDA_CHECK(cudaStreamSynchronize(f.b));
  CHECK(all_bytes(f.pinned, f.n, 4));
  LL_CUDA_CHECK(cudaStreamSynchronize(f.a));
  CHECK(all_bytes(other, f.n, 4));
  LL_CUDA_CHECK(cudaFree(other));

  // A query reports not ready once while the work is pending, then runs it.
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 5, f.n, f.a));
  LL_CUDA_CHECK(cudaEventRecord(e, f.a));
  CHECK(cudaEventQuery(e) == cudaErrorNotReady);
  CHECK(cudaGetLastError() == cudaSuccess);  // not an error
  CHECK(cudaEventQuery(e) == cudaSuccess);
  CHECK(all_bytes(f.dev, f.n, 5));
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 6, f.n, f.a));
  LL_CUDA_CHECK(cudaEventRecord(e, f.a));
  LL_CUDA_CHECK(cudaEventSynchronize(e));
  CHECK(all_bytes(f.dev, f.n, 6));

  // The null stream runs every queue first, then its operation.
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 8, f.n, f.a));
  LL_CUDA_CHECK(cudaMemcpyAsync(f.pinned, f.dev, f.n, cudaMemcpyDeviceToHost, nullptr));
  CHECK(all_bytes(f.pinned, f.n, 8));
  CHECK(ll_emu_queued_ops(nullptr) == 0);
  LL_CUDA_CHECK(cudaEventDestroy(e));
}

TEST_CASE("fake runtime: freeing memory a queued operation on another stream uses is an error") {
  Fixture f;
  LL_CUDA_CHECK(cudaMemsetAsync(f.dev, 1, f.n, f.a));
  LL_CUDA_CHECK(cudaStreamSynchronize(f.a));
  unsigned char* d2 = nullptr;
  LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d2), f.n));
  LL_CUDA_CHECK(cudaMemcpyAsync(d2, f.dev, f.n, cudaMemcpyDeviceToDevice, f.b));
  // Stream-ordered on stream a, which never waited for b's copy of d2's source... and target.
  const std::string e = error_of([&] { LL_CUDA_CHECK(cudaFreeAsync(d2, f.a)); });
  CHECK(contains(e, "cudaErrorIllegalState"));
  CHECK(contains(e, "cudaFreeAsync of 64 bytes"));
  CHECK(contains(e, "cudaMemcpyAsync queued on stream"));
  CHECK(contains(e, "still writes them"));
  CHECK(ll_emu_queued_ops(f.b) == 0);  // the copy ran before the memory went
  // The next synchronizing call reports it too (a destructor may have swallowed the first).
  CHECK(cudaStreamSynchronize(f.b) == cudaErrorIllegalState);
  CHECK(cudaStreamSynchronize(f.b) == cudaSuccess);

  // Pinned memory a queued copy writes, freed on the host.
  LL_CUDA_CHECK(cudaMemcpyAsync(f.pinned, f.dev, f.n, cudaMemcpyDeviceToHost, f.b));
  unsigned char* keep = f.pinned;
  f.pinned = nullptr;
  CHECK(cudaFreeHost(keep) == cudaErrorIllegalState);
  CHECK(contains(cudaGetErrorString(cudaErrorIllegalState), "cudaFreeHost"));
  CHECK(cudaDeviceSynchronize() == cudaErrorIllegalState);

  // Freed after the same stream's queued work, or after an event the other stream waited for:
  // in order, no error.
  unsigned char* d3 = nullptr;
  LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&d3), f.n, f.a));
  LL_CUDA_CHECK(cudaMemsetAsync(d3, 0, f.n, f.a));
  LL_CUDA_CHECK(cudaFreeAsync(d3, f.a));
  LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&d3), f.n, f.a));
  cudaEvent_t done = nullptr;
  LL_CUDA_CHECK(cudaEventCreate(&done));
  LL_CUDA_CHECK(cudaMemcpyAsync(d3, f.dev, f.n, cudaMemcpyDeviceToDevice, f.b));
  LL_CUDA_CHECK(cudaEventRecord(done, f.b));
  LL_CUDA_CHECK(cudaStreamWaitEvent(f.a, done, 0));
  LL_CUDA_CHECK(cudaFreeAsync(d3, f.a));
  LL_CUDA_CHECK(cudaEventDestroy(done));
  LL_CUDA_CHECK(cudaDeviceSynchronize());
  (void)cudaGetLastError();
}

TEST_CASE("fake runtime: pinned host memory is counted apart and reported as host memory") {
  const size_t before = ll_emu_pinned_bytes();
  size_t free0 = 0, total = 0;
  LL_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  void* p = nullptr;
  void* q = nullptr;
  LL_CUDA_CHECK(cudaMallocHost(&p, 1000));
  LL_CUDA_CHECK(cudaHostAlloc(&q, 24, cudaHostAllocDefault));
  CHECK(ll_emu_pinned_bytes() == before + 1024);
  size_t free1 = 0;
  LL_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  CHECK(free1 == free0);  // device memory untouched

  void* d = nullptr;
  LL_CUDA_CHECK(cudaMalloc(&d, 16));
  int on_stack = 0;
  cudaPointerAttributes attr{};
  LL_CUDA_CHECK(cudaPointerGetAttributes(&attr, static_cast<char*>(p) + 10));
  CHECK(attr.type == cudaMemoryTypeHost);
  LL_CUDA_CHECK(cudaPointerGetAttributes(&attr, d));
  CHECK(attr.type == cudaMemoryTypeDevice);
  LL_CUDA_CHECK(cudaPointerGetAttributes(&attr, &on_stack));
  CHECK(attr.type == cudaMemoryTypeUnregistered);

  // Copies check their direction against where the pointers live.
  CHECK(cudaMemcpyAsync(p, d, 16, cudaMemcpyHostToDevice, nullptr) ==
        cudaErrorInvalidMemcpyDirection);
  CHECK(cudaMemcpy(d, p, 16, cudaMemcpyDeviceToDevice) == cudaErrorInvalidMemcpyDirection);
  LL_CUDA_CHECK(cudaMemcpy(p, d, 16, cudaMemcpyDefault));
  (void)cudaGetLastError();

  CHECK(cudaFreeHost(d) == cudaErrorInvalidValue);  // device memory is not pinned memory
  (void)cudaGetLastError();
  LL_CUDA_CHECK(cudaFreeHost(p));
  LL_CUDA_CHECK(cudaFreeHost(q));
  LL_CUDA_CHECK(cudaFree(d));
  CHECK(ll_emu_pinned_bytes() == before);
  void* huge = nullptr;
  CHECK(cudaMallocHost(&huge, size_t(1) << 40) == cudaErrorMemoryAllocation);
  (void)cudaGetLastError();
}

#else
TEST_CASE("fake CUDA runtime (skipped)") {
  std::printf(
      "SKIP: the fake CUDA runtime is the emulated build's (-DLL_CUDA_BACKEND_EMULATED=ON)\n");
  std::fflush(stdout);
  std::exit(77);
}
#endif
