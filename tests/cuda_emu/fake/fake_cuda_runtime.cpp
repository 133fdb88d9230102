// A host stand-in for the CUDA runtime API calls the engine makes, for the emulated CUDA build
// (LL_CUDA_BACKEND_EMULATED). "Device" memory is host memory; eight devices, each reported as an
// 80 GiB sm_90 part (one memory pool counts all of them). The current device is per thread, as in
// CUDA, and each stream belongs to the device current when it was made: the null stream and
// device-wide synchronization order the current device's streams only, so that ranks on threads
// (one device each, as NCCL needs; the stand-in NCCL, fake_nccl.cpp) do not wait for each other.
// New allocations are filled with 0xFF bytes (NaN as bf16 and fp32) so code that reads memory it
// never wrote fails visibly, as it could on a GPU. Declarations come from the toolkit's
// cuda_runtime_api.h, so the signatures are the real ones.
//
// Streams are lazy, so that a missing event or synchronization shows in CI as it would on a GPU
// (docs/subsystems/simt-emulator.md):
// - cudaMemcpyAsync, cudaMemsetAsync, cudaMemset2DAsync and cudaLaunchHostFunc on a stream wait
//   in that stream's queue. Copies to pageable host memory (or between pageable buffers) run at
//   once after the stream's queue, and copies from pageable memory read their source at once,
//   as CUDA documents for pageable memory; device and pinned memory wait.
// - What executes at once on a stream (an emulated kernel, the fake cuBLASLt matmul,
//   cudaMallocAsync and cudaFreeAsync) first runs that stream's queue (ll_emu_run_stream).
// - Across streams only events order: cudaEventRecord marks the stream's queue position;
//   cudaStreamWaitEvent, cudaEventSynchronize and cudaEventQuery (cudaErrorNotReady once, while
//   work is pending) run that stream up to the mark. cudaStreamSynchronize runs one queue;
//   cudaDeviceSynchronize, cudaMemcpy, cudaMemset and cudaStreamDestroy run theirs or all (of
//   the current device). cudaStreamQuery runs what it can without waiting.
// - The null stream (and cudaStreamLegacy / cudaStreamPerThread) is not lazy: an operation on
//   it runs every queue of the device first, then runs at once, the strictest order the legacy
//   stream has.
// - An operation may stall (a stand-in NCCL collective waiting for the other ranks, enqueued by
//   ll_emu_enqueue_stalling): the stream stops there. Queries report it not ready; whatever must
//   see the stream reach a point (a synchronization, an event wait, a kernel launch after it)
//   blocks the calling thread, letting go of the runtime and advancing every stream meanwhile,
//   until the stall ends (a thread that waits 300 s prints what it waits for and aborts).
// - Races: an async copy or memset issued on one stream that uses bytes an operation still
//   queued on another stream uses, either writing, returns cudaErrorIllegalState (its error
//   string names both): the eager event waits above make any such pair unordered. Kernels
//   say nothing of the memory they touch; their races show as wrong values instead.
// - Freeing memory (cudaFree, cudaFreeAsync, cudaFreeHost) that an operation still queued on
//   another stream reads or writes is an error: the call returns cudaErrorIllegalState, whose
//   error string names the memory, the operation and the stream, and the next synchronizing
//   call returns it too (a stream-ordered free's error is easily lost in a destructor). The
//   queues run before the memory goes, so the emulator itself never touches freed memory.
//   (On a GPU cudaFree and cudaFreeHost wait for the device, but the engine frees
//   stream-ordered, and its Backend contract asks for the wait, so both are held to it here.)
// Pinned host memory (cudaMallocHost, cudaHostAlloc) is counted apart from device memory and
// reported as cudaMemoryTypeHost; async copies check that their direction (cudaMemcpyKind)
// matches where the pointers live.
#include <cuda_runtime_api.h>

#include "tests/cuda_emu/fake/fake_cuda_runtime.h"
#include "tests/cuda_emu/simt_emulator.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr size_t kTotalBytes = size_t(80) << 30;
constexpr size_t kPinnedLimit = size_t(64) << 30;  // pinning more fails (cudaErrorMemoryAllocation)
constexpr size_t kAlign = 256;                     // cudaMalloc's alignment
constexpr int kDevices = 8;                        // one node's worth, as the paper's runs
constexpr double kStallLimitS = 300.0;  // a thread blocked this long on a stall aborts the test

// One lock for memory, streams and events; recursive, since a host function run from a queue
// may call back into the runtime. The depth tells a wait on a stalled stream whether it may let
// go of the lock (only when this thread holds it once).
std::recursive_mutex& runtime_mutex() {
  static std::recursive_mutex m;
  return m;
}
thread_local int g_lock_depth = 0;
class Lock {
 public:
  explicit Lock(std::recursive_mutex& m) : m_(m) {
    m_.lock();
    ++g_lock_depth;
  }
  ~Lock() {
    --g_lock_depth;
    m_.unlock();
  }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  std::recursive_mutex& m_;
};

thread_local cudaError_t g_last_error = cudaSuccess;
cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

// ---- Memory: device and pinned allocations, base -> bytes.

struct Allocations {
  std::map<const char*, size_t> device, pinned;
  size_t device_bytes = 0, pinned_bytes = 0;
};
Allocations& allocations() {
  static Allocations a;
  return a;
}

enum class Space { Pageable, Device, Pinned };

bool inside(const std::map<const char*, size_t>& live, const void* p) {
  auto it = live.upper_bound(static_cast<const char*>(p));
  if (it == live.begin()) return false;
  --it;
  return static_cast<const char*>(p) < it->first + it->second + (it->second == 0);
}

Space space_of(const void* p) {
  const Allocations& a = allocations();
  if (inside(a.device, p)) return Space::Device;
  if (inside(a.pinned, p)) return Space::Pinned;
  return Space::Pageable;
}

cudaError_t allocate(void** ptr, size_t bytes, bool pinned) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  Allocations& a = allocations();
  const Lock lock(runtime_mutex());
  size_t& in_use = pinned ? a.pinned_bytes : a.device_bytes;
  if (in_use + bytes > (pinned ? kPinnedLimit : kTotalBytes))
    return fail(cudaErrorMemoryAllocation);
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, rounded);
  (pinned ? a.pinned : a.device)[static_cast<const char*>(p)] = bytes;
  in_use += bytes;
  *ptr = p;
  return cudaSuccess;
}

// ---- Streams: each a queue of operations not run yet.

struct Range {
  const char* begin = nullptr;
  size_t bytes = 0;
  bool overlaps(const char* b, size_t n) const {
    return bytes > 0 && n > 0 && begin < b + n && b < begin + bytes;
  }
  bool overlaps(const Range& r) const { return overlaps(r.begin, r.bytes); }
};
struct Op {
  std::function<void()> run;
  const char* what;
  Range reads, writes;
  std::function<bool()> try_run = {};  // set instead of run by an operation that may stall:
                                       // false = not done yet (it stays at the queue's front)
};
struct Stream {
  uint64_t serial;  // never reused, so events outlive their stream safely
  int device = 0;
  std::deque<Op> queue;  // not run yet, in order
  uint64_t enqueued = 0;
  uint64_t done = 0;
};
struct Event {
  double ms = 0.0;      // host clock at the last record
  uint64_t stream = 0;  // serial of the stream recorded on; 0: nothing to wait for
  uint64_t mark = 0;    // that stream's enqueued count at the record
};

std::map<uint64_t, std::unique_ptr<Stream>>& streams() {
  static std::map<uint64_t, std::unique_ptr<Stream>> s;
  return s;
}
uint64_t g_next_serial = 1;

// A freeing call found a queued operation still using the memory: its description, and
// whether the next synchronizing call still has to report it.
std::string g_hazard_text;
bool g_hazard_pending = false;

bool is_null_stream(cudaStream_t h) {
  return h == nullptr || h == cudaStreamLegacy || h == cudaStreamPerThread;
}

thread_local int g_device = 0;  // the current device, per thread as in CUDA

Stream* lookup(cudaStream_t h) {
  for (auto& [serial, s] : streams())
    if (reinterpret_cast<cudaStream_t>(s.get()) == h) return s.get();
  return nullptr;
}

// Runs s's queue up to `mark` as far as it can without waiting; true when it got there (false:
// an operation stalled).
bool advance(Stream& s, uint64_t mark) {
  while (s.done < mark && !s.queue.empty()) {
    Op op = std::move(s.queue.front());
    s.queue.pop_front();
    if (op.try_run) {
      if (!op.try_run()) {
        s.queue.push_front(std::move(op));
        return false;
      }
    } else {
      op.run();
    }
    ++s.done;
  }
  return true;
}

// Advances every stream of every device as far as it can (what a GPU does by itself).
void advance_everything() {
  for (auto& [serial, s] : streams()) advance(*s, s->enqueued);
}

// Runs the stream with `serial` up to `mark`, waiting out stalls (file comment): the lock is let
// go between tries so that other threads (the other ranks) can enqueue what ends the stall.
void run_until_serial(uint64_t serial, uint64_t mark) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const auto it = streams().find(serial);
    if (it == streams().end() || advance(*it->second, mark))
      return;  // a destroyed stream ran it all
    advance_everything();
    if (advance(*it->second, mark)) return;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (g_lock_depth != 1 || waited > kStallLimitS) {
      std::fprintf(
          stderr,
          "emulated runtime: stream %llu is stalled at a %s %s; aborting (a stalled "
          "collective waits for ranks that never joined it)\n",
          static_cast<unsigned long long>(serial), it->second->queue.front().what,
          g_lock_depth != 1 ? "inside a host function, which cannot wait for it" : "for 300 s");
      std::abort();
    }
    runtime_mutex().unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(waited < 1e-3 ? 10 : 200));
    runtime_mutex().lock();
  }
}

void run_until(Stream& s, uint64_t mark) {
  if (!advance(s, mark)) run_until_serial(s.serial, mark);
}

// Runs every queue of the current device.
void run_all() {
  std::vector<std::pair<uint64_t, uint64_t>> marks;  // (serial, enqueued): streams may go meanwhile
  for (auto& [serial, s] : streams())
    if (s->device == g_device) marks.emplace_back(serial, s->enqueued);
  for (const auto& [serial, mark] : marks) {
    const auto it = streams().find(serial);
    if (it != streams().end()) run_until(*it->second, mark);
  }
}

// Runs the queue of stream h (every queue of the device for the null stream).
cudaError_t run_stream(cudaStream_t h) {
  if (is_null_stream(h)) {
    run_all();
    return cudaSuccess;
  }
  Stream* s = lookup(h);
  if (s == nullptr) return fail(cudaErrorInvalidResourceHandle);
  run_until(*s, s->enqueued);
  return cudaSuccess;
}

// op, issued on stream `self`, against the operations still queued on the other streams: one
// that uses the same bytes, either of them writing, races it, since nothing orders the two (a
// wait on an event recorded after the queued one would have run it already).
cudaError_t check_race(const Stream& self, const Op& op) {
  for (auto& [serial, s] : streams()) {
    if (s.get() == &self) continue;
    for (const Op& q : s->queue) {
      const bool writes = op.writes.overlaps(q.reads) || op.writes.overlaps(q.writes);
      if (!writes && !op.reads.overlaps(q.writes)) continue;
      const Range& shared = writes ? op.writes : op.reads;
      char text[512];
      std::snprintf(text, sizeof(text),
                    "emulated runtime: a %s on stream %llu and a %s still queued on stream %llu "
                    "use the same bytes (near %p), one of them writing, with no event between "
                    "them (record an event after the first and make the other stream wait)",
                    op.what, static_cast<unsigned long long>(self.serial), q.what,
                    static_cast<unsigned long long>(serial),
                    static_cast<const void*>(shared.begin));
      g_hazard_text = text;
      return fail(cudaErrorIllegalState);
    }
  }
  return cudaSuccess;
}

// Queues op on stream h; on the null stream runs it at once, after every queue of the device.
cudaError_t enqueue(cudaStream_t h, Op op) {
  if (is_null_stream(h)) {
    run_all();
    if (!op.try_run) {
      op.run();
      return cudaSuccess;
    }
    // A stalling operation on the null stream: a stream of its own that is waited for.
    auto own = std::make_unique<Stream>();
    own->serial = g_next_serial++;
    own->device = g_device;
    own->queue.push_back(std::move(op));
    own->enqueued = 1;
    const uint64_t serial = own->serial;
    streams()[serial] = std::move(own);
    run_until_serial(serial, 1);
    streams().erase(serial);
    return cudaSuccess;
  }
  Stream* s = lookup(h);
  if (s == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = check_race(*s, op); e != cudaSuccess) return e;
  s->queue.push_back(std::move(op));
  ++s->enqueued;
  return cudaSuccess;
}

void run_event(const Event& e) {
  if (e.stream == 0) return;
  run_until_serial(e.stream, e.mark);  // a destroyed stream ran it all
}

bool event_pending(const Event& e) {
  if (e.stream == 0) return false;
  const auto it = streams().find(e.stream);
  return it != streams().end() && it->second->done < e.mark;
}

// The error a freeing call reported, once more for the next synchronizing call.
cudaError_t take_hazard() {
  if (!g_hazard_pending) return cudaSuccess;
  g_hazard_pending = false;
  return fail(cudaErrorIllegalState);
}

// Frees the allocation at ptr from `live` for `call`: an operation still queued on a stream
// other than `freeing` (any stream when null) that uses its bytes is an error (file comment).
cudaError_t release(std::map<const char*, size_t>& live, size_t& in_use, void* ptr,
                    const Stream* freeing, const char* call) {
  if (ptr == nullptr) return cudaSuccess;
  const auto it = live.find(static_cast<const char*>(ptr));
  if (it == live.end()) return fail(cudaErrorInvalidValue);
  const char* base = it->first;
  const size_t bytes = it->second;
  cudaError_t result = cudaSuccess;
  for (auto& [serial, s] : streams()) {
    if (s.get() == freeing || result != cudaSuccess) continue;
    for (const Op& op : s->queue) {
      const bool reads = op.reads.overlaps(base, bytes), writes = op.writes.overlaps(base, bytes);
      if (!reads && !writes) continue;
      char text[512];
      std::snprintf(text, sizeof(text),
                    "emulated runtime: %s of %zu bytes at %p while a %s queued on stream %llu "
                    "still %s them (that stream must be waited for, with an event or a "
                    "synchronization, before the memory is freed)",
                    call, bytes, static_cast<const void*>(base), op.what,
                    static_cast<unsigned long long>(serial), writes ? "writes" : "reads");
      g_hazard_text = text;
      g_hazard_pending = true;
      result = fail(cudaErrorIllegalState);
      break;
    }
  }
  if (result != cudaSuccess) {
    // The queued operations (on any device) run before the memory goes.
    std::vector<std::pair<uint64_t, uint64_t>> marks;
    for (auto& [serial, s] : streams()) marks.emplace_back(serial, s->enqueued);
    for (const auto& [serial, mark] : marks) run_until_serial(serial, mark);
  }
  // Found again: waiting for a stall lets other threads allocate and free meanwhile.
  const auto again = live.find(base);
  if (again == live.end()) return fail(cudaErrorInvalidValue);
  in_use -= bytes;
  live.erase(again);
  std::free(ptr);
  return result;
}

// Whether kind matches where dst and src live (cudaMemcpyDefault: anything).
bool direction_matches(Space dst, Space src, cudaMemcpyKind kind) {
  const bool dst_host = dst != Space::Device, src_host = src != Space::Device;
  switch (kind) {
    case cudaMemcpyHostToHost:
      return dst_host && src_host;
    case cudaMemcpyHostToDevice:
      return !dst_host && src_host;
    case cudaMemcpyDeviceToHost:
      return dst_host && !src_host;
    case cudaMemcpyDeviceToDevice:
      return !dst_host && !src_host;
    case cudaMemcpyDefault:
      return true;
  }
  return false;
}

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

extern "C" {

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = kDevices;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (device < 0 || device >= kDevices) return fail(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = g_device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr || device < 0 || device >= kDevices) return fail(cudaErrorInvalidValue);
  *prop = cudaDeviceProp{};
  std::strncpy(prop->name, "SIMT emulator (host CPU)", sizeof(prop->name) - 1);
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->totalGlobalMem = kTotalBytes;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->maxThreadsPerBlock = 1024;
  prop->warpSize = 32;
  prop->regsPerBlock = 65536;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr || device < 0 || device >= kDevices) return fail(cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = 227 * 1024;
      break;
    default:
      *value = 0;
      break;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDriverGetVersion(int* v) {
  if (v == nullptr) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* v) {
  if (v == nullptr) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  *total_bytes = kTotalBytes;
  *free_bytes = kTotalBytes - allocations().device_bytes;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, false); }
cudaError_t CUDARTAPI cudaFree(void* ptr) {
  const Lock lock(runtime_mutex());
  Allocations& a = allocations();
  return release(a.device, a.device_bytes, ptr, nullptr, "cudaFree");
}
cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  const cudaError_t e = run_stream(stream);
  return e != cudaSuccess ? e : allocate(ptr, bytes, false);
}
cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  const cudaError_t e = run_stream(stream);
  if (e != cudaSuccess) return e;
  Allocations& a = allocations();
  const Stream* freeing = is_null_stream(stream) ? nullptr : lookup(stream);
  return release(a.device, a.device_bytes, ptr, freeing, "cudaFreeAsync");
}
cudaError_t CUDARTAPI cudaMallocHost(void** ptr, size_t bytes) {
  return allocate(ptr, bytes, true);
}
cudaError_t CUDARTAPI cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  return allocate(ptr, bytes, true);
}
cudaError_t CUDARTAPI cudaFreeHost(void* ptr) {
  const Lock lock(runtime_mutex());
  Allocations& a = allocations();
  return release(a.pinned, a.pinned_bytes, ptr, nullptr, "cudaFreeHost");
}
cudaError_t CUDARTAPI cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (pool == nullptr || device < 0 || device >= kDevices) return fail(cudaErrorInvalidValue);
  static int token;
  *pool = reinterpret_cast<cudaMemPool_t>(&token);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) {
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (attr == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  const Space space = space_of(ptr);
  void* p = const_cast<void*>(ptr);
  *attr = cudaPointerAttributes{};
  attr->device = 0;
  switch (space) {
    case Space::Device:
      attr->type = cudaMemoryTypeDevice;
      attr->devicePointer = p;
      break;
    case Space::Pinned:  // mapped into the device's address space (UVA)
      attr->type = cudaMemoryTypeHost;
      attr->devicePointer = p;
      attr->hostPointer = p;
      break;
    case Space::Pageable:
      attr->type = cudaMemoryTypeUnregistered;
      attr->hostPointer = p;
      break;
  }
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  if (!direction_matches(space_of(dst), space_of(src), kind))
    return fail(cudaErrorInvalidMemcpyDirection);
  run_all();
  std::memmove(dst, src, n);
  return take_hazard();
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                                      cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  const Space dst_space = space_of(dst), src_space = space_of(src);
  if (!direction_matches(dst_space, src_space, kind)) return fail(cudaErrorInvalidMemcpyDirection);
  if (dst_space == Space::Pageable) {
    // Into pageable memory CUDA returns once the copy is done: after the stream's queue.
    if (const cudaError_t e = run_stream(stream); e != cudaSuccess) return e;
    if (const Stream* s = is_null_stream(stream) ? nullptr : lookup(stream); s != nullptr) {
      const Op copy{
          {}, "cudaMemcpyAsync", {static_cast<const char*>(src), n}, {static_cast<char*>(dst), n}};
      if (const cudaError_t e = check_race(*s, copy); e != cudaSuccess) return e;
    }
    std::memmove(dst, src, n);
    return cudaSuccess;
  }
  char* d = static_cast<char*>(dst);
  if (src_space == Space::Pageable) {
    // From pageable memory CUDA stages the source at once; the write waits its turn.
    std::vector<char> staged(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    return enqueue(
        stream, {[d, staged = std::move(staged)] { std::memcpy(d, staged.data(), staged.size()); },
                 "cudaMemcpyAsync",
                 {},
                 {d, n}});
  }
  const char* s = static_cast<const char*>(src);
  return enqueue(stream, {[d, s, n] { std::memmove(d, s, n); }, "cudaMemcpyAsync", {s, n}, {d, n}});
}
cudaError_t CUDARTAPI cudaMemset(void* dst, int value, size_t n) {
  if (n == 0) return cudaSuccess;
  if (dst == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  run_all();
  std::memset(dst, value, n);
  return take_hazard();
}
cudaError_t CUDARTAPI cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (dst == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  char* d = static_cast<char*>(dst);
  return enqueue(stream,
                 {[d, value, n] { std::memset(d, value, n); }, "cudaMemsetAsync", {}, {d, n}});
}
cudaError_t CUDARTAPI cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width,
                                        size_t height, cudaStream_t stream) {
  if (width > pitch && height > 1) return fail(cudaErrorInvalidValue);
  if (width == 0 || height == 0) return cudaSuccess;
  if (dst == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  char* d = static_cast<char*>(dst);
  const size_t span = (height - 1) * pitch + width;
  return enqueue(stream, {[=] {
                            for (size_t r = 0; r < height; ++r)
                              std::memset(d + r * pitch, value, width);
                          },
                          "cudaMemset2DAsync",
                          {},
                          {d, span}});
}

cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t* s) {
  if (s == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  auto stream = std::make_unique<Stream>();
  stream->serial = g_next_serial++;
  stream->device = g_device;
  *s = reinterpret_cast<cudaStream_t>(stream.get());
  streams()[stream->serial] = std::move(stream);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  return cudaStreamCreate(s);
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t h) {
  const Lock lock(runtime_mutex());
  Stream* s = lookup(h);
  if (s == nullptr) return fail(cudaErrorInvalidResourceHandle);
  const uint64_t serial = s->serial;
  run_until(*s, s->enqueued);  // CUDA finishes a destroyed stream's work
  streams().erase(serial);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamQuery(cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  if (is_null_stream(stream)) {
    bool done = true;
    for (auto& [serial, s] : streams())
      if (s->device == g_device) done = advance(*s, s->enqueued) && done;
    return done ? cudaSuccess : cudaErrorNotReady;
  }
  Stream* s = lookup(stream);
  if (s == nullptr) return fail(cudaErrorInvalidResourceHandle);
  return advance(*s, s->enqueued) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  const cudaError_t e = run_stream(stream);
  return e != cudaSuccess ? e : take_hazard();
}
cudaError_t CUDARTAPI cudaDeviceSynchronize() {
  const Lock lock(runtime_mutex());
  run_all();
  return take_hazard();
}
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t e, unsigned int) {
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  const Lock lock(runtime_mutex());
  if (!is_null_stream(stream) && lookup(stream) == nullptr)
    return fail(cudaErrorInvalidResourceHandle);
  // Everything queued on `stream` later runs after the event: running the event's stream up
  // to its mark now is one such order.
  run_event(*reinterpret_cast<Event*>(e));
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  if (fn == nullptr) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  return enqueue(stream, {[fn, user_data] { fn(user_data); }, "cudaLaunchHostFunc", {}, {}});
}

cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* e) {
  if (e == nullptr) return fail(cudaErrorInvalidValue);
  *e = reinterpret_cast<cudaEvent_t>(new Event);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  return cudaEventCreate(e);
}
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<Event*>(e);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  const Lock lock(runtime_mutex());
  Event& ev = *reinterpret_cast<Event*>(e);
  if (is_null_stream(stream)) {
    run_all();
    ev.stream = 0;
  } else {
    Stream* s = lookup(stream);
    if (s == nullptr) return fail(cudaErrorInvalidResourceHandle);
    ev.stream = s->serial;
    ev.mark = s->enqueued;
  }
  ev.ms = now_ms();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t e) {
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  const Lock lock(runtime_mutex());
  run_event(*reinterpret_cast<Event*>(e));
  return take_hazard();
}
cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t e) {
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  const Lock lock(runtime_mutex());
  const Event& ev = *reinterpret_cast<Event*>(e);
  if (!event_pending(ev)) return cudaSuccess;
  // Not ready this time (not an error: no last error); the work runs as far as it can without
  // waiting, so the next query succeeds unless an operation stalled.
  const auto it = streams().find(ev.stream);
  if (it != streams().end()) advance(*it->second, ev.mark);
  return cudaErrorNotReady;
}
cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr || start == nullptr || end == nullptr) return fail(cudaErrorInvalidValue);
  *ms = float(reinterpret_cast<Event*>(end)->ms - reinterpret_cast<Event*>(start)->ms);
  return cudaSuccess;
}

cudaError_t ll_emu_run_stream(cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  return run_stream(stream);
}
size_t ll_emu_queued_ops(cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  if (!is_null_stream(stream)) {
    const Stream* s = lookup(stream);
    return s == nullptr ? 0 : s->queue.size();
  }
  size_t n = 0;
  for (auto& [serial, s] : streams()) n += s->queue.size();
  return n;
}
size_t ll_emu_pinned_bytes() {
  const Lock lock(runtime_mutex());
  return allocations().pinned_bytes;
}

// Kernels run through the emulator's launcher (kernel_launch.cuh); nothing else launches.
cudaError_t CUDARTAPI cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) {
  return cudaSuccess;
}
// Every kernel is built for the emulator's sm_90 (the Hopper kernels included).
cudaError_t CUDARTAPI cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  if (attr == nullptr || func == nullptr) return fail(cudaErrorInvalidValue);
  *attr = cudaFuncAttributes{};
  attr->binaryVersion = 90;
  attr->ptxVersion = 90;
  attr->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
// The driver entry point of the bulk tensor copy descriptors is the emulator's encoder.
cudaError_t CUDARTAPI cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int,
                                                       unsigned long long,
                                                       cudaDriverEntryPointQueryResult* status) {
  if (symbol == nullptr || fn == nullptr) return fail(cudaErrorInvalidValue);
  const bool known = std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0;
  *fn = known ? reinterpret_cast<void*>(&ll::cuda::emu::tensor_map_encode_tiled) : nullptr;
  if (status != nullptr)
    *status = known ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaLaunchKernel(const void*, dim3, dim3, void**, size_t, cudaStream_t) {
  return fail(cudaErrorNotSupported);
}

cudaError_t CUDARTAPI cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t CUDARTAPI cudaPeekAtLastError() { return g_last_error; }
const char* CUDARTAPI cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    default:
      return "cudaError (emulated runtime)";
  }
}
const char* CUDARTAPI cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorNotSupported:
      return "operation not supported (emulated runtime)";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy (emulated runtime: the cudaMemcpyKind does not "
             "match where the pointers live)";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorIllegalState:
      return g_hazard_text.empty() ? "operation not permitted in this state"
                                   : g_hazard_text.c_str();
    default:
      return "unknown error (emulated runtime)";
  }
}

}  // extern "C"

// C++ hooks (fake_cuda_runtime.h).
cudaError_t ll_emu_enqueue_stalling(cudaStream_t stream, const char* what,
                                    std::function<bool()> try_run) {
  if (!try_run) return fail(cudaErrorInvalidValue);
  const Lock lock(runtime_mutex());
  return enqueue(stream, {{}, what, {}, {}, std::move(try_run)});
}
int ll_emu_stream_device(cudaStream_t stream) {
  const Lock lock(runtime_mutex());
  if (is_null_stream(stream)) return g_device;
  const Stream* s = lookup(stream);
  return s == nullptr ? -1 : s->device;
}
