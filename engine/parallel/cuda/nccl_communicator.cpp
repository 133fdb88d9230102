#include "engine/parallel/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/nccl_check.h"

namespace ll::dist {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Spin briefly (most polls succeed within microseconds), then sleep so that a waiting rank
// leaves the CPU to the NCCL proxy thread and to other ranks on the same machine.
void pause_while_polling(double waited) {
  if (waited < 2e-3) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

std::string describe(const char* collective, const std::string& context) {
  return context.empty() ? std::string(collective) : fmt::format("{} ({})", collective, context);
}

ncclDataType_t nccl_type(NcclElement element) {
  switch (element) {
    case NcclElement::F32:
      return ncclFloat32;
    case NcclElement::BF16:
      return ncclBfloat16;
    case NcclElement::F64:
      return ncclFloat64;
  }
  fail("unknown NCCL element type {}", int(element));
}

const std::byte* bytes_at(const void* base, int64_t elements, size_t element_size) {
  return static_cast<const std::byte*>(base) + size_t(elements) * element_size;
}
std::byte* bytes_at(void* base, int64_t elements, size_t element_size) {
  return static_cast<std::byte*>(base) + size_t(elements) * element_size;
}

// A collective enqueued but not yet waited for, with the events around it on the stream.
struct PendingCollective {
  NcclCollective kind = NcclCollective::AllReduceSum;
  int64_t bytes = 0;
  std::string context;
  cudaEvent_t start = nullptr;
  cudaEvent_t end = nullptr;
};

}  // namespace

size_t nccl_element_size(NcclElement element) {
  switch (element) {
    case NcclElement::F32:
      return 4;
    case NcclElement::BF16:
      return 2;
    case NcclElement::F64:
      return 8;
  }
  fail("unknown NCCL element type {}", int(element));
}

const char* nccl_element_name(NcclElement element) {
  switch (element) {
    case NcclElement::F32:
      return "fp32";
    case NcclElement::BF16:
      return "bf16";
    case NcclElement::F64:
      return "fp64";
  }
  return "unknown";
}

const char* nccl_collective_name(NcclCollective collective) {
  switch (collective) {
    case NcclCollective::ReduceScatterSum:
      return "reduce_scatter_sum";
    case NcclCollective::AllGather:
      return "all_gather";
    case NcclCollective::AllReduceSum:
      return "all_reduce_sum";
    case NcclCollective::Broadcast:
      return "broadcast";
    case NcclCollective::ReduceSum:
      return "reduce_sum";
  }
  return "unknown collective";
}

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;  // null before setup and after an abort
  cudaStream_t stream = nullptr;
  int rank = 0;
  int world = 1;
  int device = 0;
  double timeout_s = 600.0;
  std::string failure;                     // the first failure's message; non-empty = unusable
  std::vector<PendingCollective> pending;  // enqueue order
  std::vector<cudaEvent_t> spare_events;   // recycled after wait()
  std::array<NcclCollectiveTotals, kNcclCollectiveKinds> totals{};

  // Aborts NCCL (so that no rank waits on this one's half-done collectives) and throws.
  [[noreturn]] void abort_with(std::string message) {
    if (comm != nullptr) {
      (void)ncclCommAbort(comm);
      comm = nullptr;
    }
    failure = std::move(message);
    throw Error(failure);
  }

  void require_usable(const char* collective, const std::string& context) const {
    if (!failure.empty()) {
      fail("rank {}: {} cannot run after an earlier NCCL failure ({})", rank,
           describe(collective, context), failure);
    }
  }

  // A synchronous NCCL result: anything but success / in progress aborts.
  void check(ncclResult_t result, const char* what, const std::string& context) {
    if (result == ncclSuccess || result == ncclInProgress) return;
    abort_with(fmt::format("rank {}: {} failed: {}", rank, describe(what, context),
                           nccl::describe_result(result, comm)));
  }

  // After a call returned ncclInProgress: NCCL requires polling the communicator's state until
  // it leaves ncclInProgress before any other NCCL call.
  void settle(const char* what, const std::string& context) {
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm, &state), what, context);
      if (state == ncclSuccess) return;
      check(state, what, context);
      const double waited = seconds_since(start);
      if (waited > timeout_s) {
        abort_with(
            fmt::format("rank {}: {} did not complete within {:g} s: another rank died or "
                        "hangs",
                        rank, describe(what, context), timeout_s));
      }
      pause_while_polling(waited);
    }
  }

  cudaEvent_t take_event() {
    if (!spare_events.empty()) {
      cudaEvent_t event = spare_events.back();
      spare_events.pop_back();
      return event;
    }
    cudaEvent_t event = nullptr;
    LL_CUDA_CHECK(cudaEventCreate(&event));  // timing enabled: totals need elapsed times
    return event;
  }

  // NCCL reads and writes these through the GPU: a host pointer would fail inside a kernel.
  void check_device_buffer(const void* pointer, int64_t bytes, const char* role,
                           NcclCollective kind, const std::string& context) const {
    if (bytes == 0) return;
    const std::string what = describe(nccl_collective_name(kind), context);
    LL_CHECK(pointer != nullptr, "rank {}: {}: the {} buffer is null", rank, what, role);
    cudaPointerAttributes attributes{};
    const cudaError_t status = cudaPointerGetAttributes(&attributes, pointer);
    if (status != cudaSuccess) (void)cudaGetLastError();  // not sticky; clear it
    LL_CHECK(status == cudaSuccess && (attributes.type == cudaMemoryTypeDevice ||
                                       attributes.type == cudaMemoryTypeManaged),
             "rank {}: {}: the {} buffer is not device memory (NCCL needs GPU buffers)", rank, what,
             role);
  }

  void check_padding(const NcclPadding& padding, NcclCollective kind,
                     const std::string& context) const {
    LL_CHECK(padding.world_size() == world,
             "rank {}: {}: the padding describes {} shards but the world has {} ranks", rank,
             describe(nccl_collective_name(kind), context), padding.world_size(), world);
  }

  // Enqueues one collective between two timing events; `call` makes the NCCL call.
  template <typename Call>
  void enqueue(NcclCollective kind, int64_t bytes, const std::string& context, Call&& call) {
    const char* name = nccl_collective_name(kind);
    PendingCollective p{kind, bytes, context, take_event(), take_event()};
    try {
      LL_CUDA_CHECK(cudaEventRecord(p.start, stream));
      const ncclResult_t result = call();
      check(result, name, context);
      if (result == ncclInProgress) settle(name, context);
      LL_CUDA_CHECK(cudaEventRecord(p.end, stream));
    } catch (...) {
      spare_events.push_back(p.start);  // destroyed with the communicator
      spare_events.push_back(p.end);
      throw;
    }
    pending.push_back(std::move(p));
  }

  // Finalises NCCL without throwing; false when it failed or timed out (then the caller aborts).
  bool try_finalize() noexcept {
    ncclResult_t result = ncclCommFinalize(comm);
    if (result != ncclSuccess && result != ncclInProgress) return false;
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) return false;
      if (state == ncclSuccess) return true;
      if (state != ncclInProgress) return false;
      const double waited = seconds_since(start);
      if (waited > timeout_s) return false;
      pause_while_polling(waited);
    }
  }
};

NcclCommunicator::NcclCommunicator(Communicator& host, cudaStream_t stream,
                                   const NcclOptions& options)
    : st_(std::make_unique<State>()) {
  State& s = *st_;
  s.rank = host.rank();
  s.world = host.world_size();
  s.stream = stream;
  s.timeout_s = options.timeout_s;
  LL_CHECK(std::isfinite(s.timeout_s) && s.timeout_s > 0.0,
           "NCCL communication timeout must be a positive number of seconds, got {}", s.timeout_s);
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver: report it as no GPU below
    device_count = 0;
  }
  s.device = options.device >= 0 ? options.device : host.local_rank();
  LL_CHECK(s.device < device_count,
           "rank {} (local rank {}) needs GPU {} for NCCL, but this node has {} GPU(s): start at "
           "most one rank per GPU",
           s.rank, host.local_rank(), s.device, device_count);
  LL_CUDA_CHECK(cudaSetDevice(s.device));

  // Rank 0's unique id reaches the others over the host communicator; a leading status byte
  // tells them when rank 0 could not create one, instead of leaving them to time out.
  std::array<std::byte, 1 + sizeof(ncclUniqueId)> message{};  // [status, id bytes]
  ncclUniqueId id{};
  std::string id_error;
  if (s.rank == 0) {
    const ncclResult_t result = ncclGetUniqueId(&id);
    if (result == ncclSuccess) {
      message[0] = std::byte{1};
      std::memcpy(message.data() + 1, &id, sizeof(id));
    } else {
      id_error = nccl::describe_result(result);
    }
  }
  host.broadcast(message, 0, "NCCL unique id");
  if (!id_error.empty()) fail("rank 0: ncclGetUniqueId failed: {}", id_error);
  LL_CHECK(message[0] == std::byte{1},
           "rank {}: rank 0 could not create the NCCL unique id (see rank 0's message)", s.rank);
  std::memcpy(&id, message.data() + 1, sizeof(id));

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; we poll, so nothing hangs past the timeout
  const std::string context = fmt::format("{} ranks, GPU {}", s.world, s.device);
  s.check(ncclCommInitRankConfig(&s.comm, s.world, id, s.rank, &config), "NCCL setup", context);
  if (s.comm == nullptr) fail("rank {}: NCCL setup ({}) returned no communicator", s.rank, context);
  s.settle("NCCL setup", context);
}

NcclCommunicator::~NcclCommunicator() {
  State& s = *st_;
  if (s.comm != nullptr) {
    // Finalising waits for the other ranks; when this one leaves on an error they may never
    // come, so abort instead.
    const bool leaving_on_error = std::uncaught_exceptions() > 0 && s.world > 1;
    if (!leaving_on_error && s.try_finalize()) {
      (void)ncclCommDestroy(s.comm);
    } else {
      (void)ncclCommAbort(s.comm);
    }
    s.comm = nullptr;
  }
  // Destroying an event still pending on the stream is allowed: CUDA releases it when done.
  for (const PendingCollective& p : s.pending) {
    (void)cudaEventDestroy(p.start);
    (void)cudaEventDestroy(p.end);
  }
  for (cudaEvent_t event : s.spare_events) (void)cudaEventDestroy(event);
}

int NcclCommunicator::rank() const { return st_->rank; }
int NcclCommunicator::world_size() const { return st_->world; }
int NcclCommunicator::device() const { return st_->device; }
cudaStream_t NcclCommunicator::stream() const { return st_->stream; }
double NcclCommunicator::timeout_s() const { return st_->timeout_s; }
const std::string& NcclCommunicator::failure() const { return st_->failure; }

void NcclCommunicator::reduce_scatter_sum(const void* padded_full, void* padded_shard,
                                          const NcclPadding& padding, NcclElement element,
                                          const std::string& context) {
  State& s = *st_;
  const NcclCollective kind = NcclCollective::ReduceScatterSum;
  s.require_usable(nccl_collective_name(kind), context);
  s.check_padding(padding, kind, context);
  LL_CHECK(element == NcclElement::F32 || element == NcclElement::BF16,
           "rank {}: {}: {} elements are not supported (fp32 or bf16)", s.rank,
           describe(nccl_collective_name(kind), context), nccl_element_name(element));
  const size_t size = nccl_element_size(element);
  const int64_t block_bytes = padding.block_size() * int64_t(size);
  s.check_device_buffer(padded_full, block_bytes * s.world, "full (input)", kind, context);
  s.check_device_buffer(padded_shard, block_bytes, "shard (output)", kind, context);
  if (padding.block_size() == 0) return;  // every shard empty: nothing moves
  s.enqueue(kind, block_bytes * s.world, context, [&] {
    return ncclReduceScatter(padded_full, padded_shard, size_t(padding.block_size()),
                             nccl_type(element), ncclSum, s.comm, s.stream);
  });
}

void NcclCommunicator::all_gather(const void* padded_shard, void* padded_full,
                                  const NcclPadding& padding, NcclElement element,
                                  const std::string& context) {
  State& s = *st_;
  const NcclCollective kind = NcclCollective::AllGather;
  s.require_usable(nccl_collective_name(kind), context);
  s.check_padding(padding, kind, context);
  LL_CHECK(element == NcclElement::F32 || element == NcclElement::BF16,
           "rank {}: {}: {} elements are not supported (fp32 or bf16)", s.rank,
           describe(nccl_collective_name(kind), context), nccl_element_name(element));
  const size_t size = nccl_element_size(element);
  const int64_t block_bytes = padding.block_size() * int64_t(size);
  s.check_device_buffer(padded_shard, block_bytes, "shard (input)", kind, context);
  s.check_device_buffer(padded_full, block_bytes * s.world, "full (output)", kind, context);
  if (padding.block_size() == 0) return;
  s.enqueue(kind, block_bytes * s.world, context, [&] {
    return ncclAllGather(padded_shard, padded_full, size_t(padding.block_size()),
                         nccl_type(element), s.comm, s.stream);
  });
}

void NcclCommunicator::all_reduce_sum(void* values, int64_t count, NcclElement element,
                                      const std::string& context) {
  State& s = *st_;
  const NcclCollective kind = NcclCollective::AllReduceSum;
  s.require_usable(nccl_collective_name(kind), context);
  LL_CHECK(count >= 0, "rank {}: {}: negative count {}", s.rank,
           describe(nccl_collective_name(kind), context), count);
  LL_CHECK(element == NcclElement::F32 || element == NcclElement::F64,
           "rank {}: {}: {} elements are not supported (fp32 or fp64)", s.rank,
           describe(nccl_collective_name(kind), context), nccl_element_name(element));
  const int64_t bytes = count * int64_t(nccl_element_size(element));
  s.check_device_buffer(values, bytes, "values", kind, context);
  if (count == 0) return;
  s.enqueue(kind, bytes, context, [&] {
    return ncclAllReduce(values, values, size_t(count), nccl_type(element), ncclSum, s.comm,
                         s.stream);
  });
}

void NcclCommunicator::broadcast(void* buffer, int64_t count, NcclElement element, int root,
                                 const std::string& context) {
  State& s = *st_;
  const NcclCollective kind = NcclCollective::Broadcast;
  s.require_usable(nccl_collective_name(kind), context);
  LL_CHECK(root >= 0 && root < s.world, "rank {}: {}: root rank {} does not exist in a world of {}",
           s.rank, describe(nccl_collective_name(kind), context), root, s.world);
  LL_CHECK(count >= 0, "rank {}: {}: negative count {}", s.rank,
           describe(nccl_collective_name(kind), context), count);
  const int64_t bytes = count * int64_t(nccl_element_size(element));
  s.check_device_buffer(buffer, bytes, "data", kind, context);
  if (count == 0) return;
  s.enqueue(kind, bytes, context, [&] {
    return ncclBroadcast(buffer, buffer, size_t(count), nccl_type(element), root, s.comm, s.stream);
  });
}

void NcclCommunicator::reduce_sum(std::span<const NcclReducePiece> pieces, NcclElement element,
                                  const std::string& context) {
  State& s = *st_;
  const NcclCollective kind = NcclCollective::ReduceSum;
  s.require_usable(nccl_collective_name(kind), context);
  const size_t size = nccl_element_size(element);
  int64_t bytes = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const NcclReducePiece& p = pieces[i];
    LL_CHECK(p.root >= 0 && p.root < s.world,
             "rank {}: {}: piece {} has root rank {}, which does not exist in a world of {}",
             s.rank, describe(nccl_collective_name(kind), context), i, p.root, s.world);
    LL_CHECK(p.count >= 0, "rank {}: {}: piece {} has negative count {}", s.rank,
             describe(nccl_collective_name(kind), context), i, p.count);
    const int64_t piece_bytes = p.count * int64_t(size);
    s.check_device_buffer(p.send, piece_bytes, "send (input)", kind, context);
    if (p.root == s.rank)
      s.check_device_buffer(p.recv, piece_bytes, "recv (output)", kind, context);
    bytes += piece_bytes;
  }
  if (bytes == 0) return;  // every piece empty: nothing moves
  s.enqueue(kind, bytes, context, [&] {
    // Inside a group the ncclReduce calls only record their work; ncclGroupEnd launches it all
    // (and, the communicator being nonblocking, may return ncclInProgress: enqueue settles it).
    ncclResult_t result = ncclGroupStart();
    if (result != ncclSuccess) return result;
    for (const NcclReducePiece& p : pieces) {
      if (p.count == 0) continue;
      // recvbuff is only used on the root; NCCL accepts null elsewhere.
      result = ncclReduce(p.send, p.root == s.rank ? p.recv : nullptr, size_t(p.count),
                          nccl_type(element), ncclSum, p.root, s.comm, s.stream);
      if (result != ncclSuccess && result != ncclInProgress) break;
    }
    // Always close the group, even after a failed call: an open group would hold back every
    // later NCCL call of this thread (the abort included).
    const ncclResult_t ended = ncclGroupEnd();
    return result != ncclSuccess && result != ncclInProgress ? result : ended;
  });
}

void NcclCommunicator::pack_padded(const void* flat, void* padded, const NcclPadding& padding,
                                   NcclElement element) {
  State& s = *st_;
  const size_t size = nccl_element_size(element);
  if (padding.is_flat()) {
    if (flat != padded && padding.flat_size() > 0) {
      LL_CUDA_CHECK(cudaMemcpyAsync(padded, flat, size_t(padding.flat_size()) * size,
                                    cudaMemcpyDeviceToDevice, s.stream));
    }
    return;
  }
  for (int r = 0; r < padding.world_size(); ++r) {
    const int64_t n = padding.shard_size(r);
    std::byte* block = bytes_at(padded, padding.padded_offset(r), size);
    if (n > 0) {
      LL_CUDA_CHECK(cudaMemcpyAsync(block, bytes_at(flat, padding.flat_offset(r), size),
                                    size_t(n) * size, cudaMemcpyDeviceToDevice, s.stream));
    }
    const int64_t pad = padding.block_size() - n;
    if (pad > 0) {
      LL_CUDA_CHECK(cudaMemsetAsync(block + size_t(n) * size, 0, size_t(pad) * size, s.stream));
    }
  }
}

void NcclCommunicator::unpack_padded(const void* padded, void* flat, const NcclPadding& padding,
                                     NcclElement element) {
  State& s = *st_;
  const size_t size = nccl_element_size(element);
  if (padding.is_flat()) {
    if (flat != padded && padding.flat_size() > 0) {
      LL_CUDA_CHECK(cudaMemcpyAsync(flat, padded, size_t(padding.flat_size()) * size,
                                    cudaMemcpyDeviceToDevice, s.stream));
    }
    return;
  }
  for (int r = 0; r < padding.world_size(); ++r) {
    const int64_t n = padding.shard_size(r);
    if (n == 0) continue;
    LL_CUDA_CHECK(cudaMemcpyAsync(bytes_at(flat, padding.flat_offset(r), size),
                                  bytes_at(padded, padding.padded_offset(r), size),
                                  size_t(n) * size, cudaMemcpyDeviceToDevice, s.stream));
  }
}

void NcclCommunicator::wait(const std::string& context) {
  State& s = *st_;
  s.require_usable("wait", context);
  if (s.pending.empty()) return;
  // The last collective's end event rather than the whole stream: work the caller enqueued
  // after the collectives is not waited for.
  const cudaEvent_t last = s.pending.back().end;
  const auto start = Clock::now();
  for (;;) {
    const cudaError_t query = cudaEventQuery(last);
    if (query == cudaSuccess) break;
    if (query != cudaErrorNotReady) {
      s.abort_with(fmt::format("rank {}: waiting for {} failed on the GPU: {}", s.rank,
                               context.empty() ? "collectives" : context,
                               cudaGetErrorString(query)));
    }
    ncclResult_t state = ncclSuccess;
    s.check(ncclCommGetAsyncError(s.comm, &state), "wait", context);
    s.check(state, "wait", context);
    const double waited = seconds_since(start);
    if (waited > s.timeout_s) {
      // Name the first collective still running: that is where the other ranks are missing.
      const PendingCollective* stuck = &s.pending.back();
      for (const PendingCollective& p : s.pending) {
        if (cudaEventQuery(p.end) == cudaErrorNotReady) {
          stuck = &p;
          break;
        }
      }
      std::string what = describe(nccl_collective_name(stuck->kind), stuck->context);
      if (!context.empty() && context != stuck->context)
        what += fmt::format(", waiting for {}", context);
      s.abort_with(
          fmt::format("rank {}: {} did not complete within {:g} s: another rank died or "
                      "hangs",
                      s.rank, what, s.timeout_s));
    }
    pause_while_polling(waited);
  }
  for (const PendingCollective& p : s.pending) {
    float ms = 0.0f;
    LL_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.end));
    NcclCollectiveTotals& t = s.totals[size_t(p.kind)];
    t.calls += 1;
    t.bytes += p.bytes;
    t.seconds += double(ms) * 1e-3;
    s.spare_events.push_back(p.start);
    s.spare_events.push_back(p.end);
  }
  s.pending.clear();
}

const NcclCollectiveTotals& NcclCommunicator::totals(NcclCollective collective) const {
  const int index = int(collective);
  LL_CHECK(index >= 0 && index < kNcclCollectiveKinds, "unknown NCCL collective {}", index);
  return st_->totals[size_t(index)];
}

std::string NcclCommunicator::timing_summary() const {
  std::string text;
  for (int k = 0; k < kNcclCollectiveKinds; ++k) {
    const NcclCollectiveTotals& t = st_->totals[size_t(k)];
    if (t.calls == 0) continue;
    if (!text.empty()) text += "; ";
    text +=
        fmt::format("{} {} calls, {:.1f} MiB, {:.3f} ms", nccl_collective_name(NcclCollective(k)),
                    t.calls, double(t.bytes) / (1 << 20), t.seconds * 1e3);
  }
  return text.empty() ? std::string("no collectives") : text;
}

}  // namespace ll::dist
