// A host stand-in for NCCL in the emulated CUDA build (LL_CUDA_BACKEND_EMULATED), so that the
// NCCL communicator, the shard transport and the context-parallel exchanges run in CI. The ranks
// of a communicator are threads of one process, each on its own emulated device (NCCL needs one
// GPU per rank; cudaSetDevice(rank) on each thread), found through a registry keyed by the
// ncclUniqueId; an id made by another process is refused (no cross-process transport).
// Declarations: tests/cuda_emu/fake/nccl/nccl.h (NCCL's own). docs/subsystems/simt-emulator.md.
//
// - Every call (or every ncclGroupStart/End batch, per communicator) is one operation on its
//   stream in the stand-in runtime (fake_cuda_runtime.h): it runs in the stream's order, reads
//   its inputs only once its stream reaches it, and stalls the stream until every rank taking
//   part has reached its own part; the rank that completes a part moves the data for all ranks.
// - Collectives are matched by their order on each communicator (the k-th collective of every
//   rank), point-to-point calls by (sender, receiver, k-th between them), as NCCL does. A group
//   arrives as a whole, so sends and receives batched in one group never deadlock.
// - Reductions combine the ranks in rank order, ((r0 + r1) + r2) + ..., each step rounded to the
//   element type (bf16: computed in fp32 and rounded to nearest even, as each hop of NCCL's ring
//   stores bf16). Real NCCL's order depends on its algorithm; only exact sums compare bitwise.
// - Mismatched calls (another collective, count, type, root, or a send/recv of another size)
//   become an asynchronous ncclInvalidUsage on every rank, with a message, instead of the hang or
//   garbage of real NCCL; ncclCommAbort on one rank gives the others ncclRemoteError, and the
//   stalled operations of every rank let their streams go on (their outputs are not written).
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "tests/cuda_emu/fake/fake_cuda_runtime.h"

namespace {

// Lock order: the runtime's lock (held while a stream runs an operation), then this one. No
// runtime call is made while this one is held.
std::mutex& nccl_mutex() {
  static std::mutex m;
  return m;
}
std::condition_variable& joined_cv() {
  static std::condition_variable cv;
  return cv;
}

thread_local std::string g_last_error;
ncclResult_t fail(ncclResult_t result, std::string text) {
  g_last_error = std::move(text);
  return result;
}

constexpr char kIdMagic[] = "ll-emu-nccl";

enum class Kind { AllReduce, Reduce, ReduceScatter, AllGather, Broadcast, Send, Recv };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::AllReduce:
      return "ncclAllReduce";
    case Kind::Reduce:
      return "ncclReduce";
    case Kind::ReduceScatter:
      return "ncclReduceScatter";
    case Kind::AllGather:
      return "ncclAllGather";
    case Kind::Broadcast:
      return "ncclBroadcast";
    case Kind::Send:
      return "ncclSend";
    case Kind::Recv:
      return "ncclRecv";
  }
  return "?";
}

bool is_p2p(Kind k) { return k == Kind::Send || k == Kind::Recv; }

// Bytes per element of the types the stand-in reduces and moves; 0: not supported.
size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    default:
      return 0;  // fp16 and fp8: not needed by the engine, not emulated
  }
}

// One rank's side of a collective or of a point-to-point transfer.
struct Call {
  Kind kind = Kind::AllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;  // NCCL's count argument (per rank block for reduce-scatter / all-gather)
  ncclDataType_t type = ncclFloat32;
  ncclRedOp_t op = ncclSum;
  int root = 0;  // root, or peer for send / recv
  int rank = 0;
};

// What the ranks of one collective (calls [world], by rank) or transfer (calls [2]: the send,
// the receive) share; `done` once executed.
struct Part {
  int expected = 0;
  int arrived = 0;
  bool done = false;
  std::vector<Call> calls;
};

// The ranks of one communicator.
struct Clique {
  explicit Clique(int w)
      : world(w), joined(size_t(w), false), devices(size_t(w), -1), next_collective(size_t(w), 0) {}
  int world;
  std::vector<bool> joined;  // [world]
  int joined_count = 0;
  std::vector<int> devices;          // [world]
  ncclResult_t error = ncclSuccess;  // the first failure (abort, mismatch, bad setup); sticky
  std::string error_text;
  std::vector<uint64_t> next_collective;                  // [world]
  std::map<uint64_t, std::shared_ptr<Part>> collectives;  // by order, until executed
  std::map<std::tuple<int, int, uint64_t>, std::shared_ptr<Part>> transfers;  // (src, dst, k)
  std::map<std::pair<int, int>, uint64_t> sends, recvs;  // (src, dst) -> calls so far

  bool complete() const { return joined_count == world; }
  void set_error(ncclResult_t result, std::string text) {
    if (error != ncclSuccess) return;
    error = result;
    error_text = std::move(text);
  }
};

// What the stream operations of one rank share with its communicator (which may go first).
struct RankState {
  int pending = 0;                 // operations enqueued and not done
  std::set<cudaStream_t> streams;  // where they were enqueued (finalize advances them)
};

std::map<std::string, std::shared_ptr<Clique>>& registry() {
  static std::map<std::string, std::shared_ptr<Clique>> r;
  return r;
}

std::string id_key(const ncclUniqueId& id) { return std::string(id.internal, sizeof(id.internal)); }

// ---- Element arithmetic: acc = acc (op) x, elementwise, rounded to the type at every step.

uint16_t bf16_round(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float bf16_value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f = 0.0f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
T combine(T a, T b, ncclRedOp_t op) {
  switch (op) {
    case ncclProd:
      return T(a * b);
    case ncclMax:
      return a < b ? b : a;
    case ncclMin:
      return b < a ? b : a;
    default:
      return T(a + b);
  }
}

template <typename T>
void combine_into(std::byte* acc, const std::byte* x, size_t n, ncclRedOp_t op) {
  for (size_t i = 0; i < n; ++i) {
    T a, b;
    std::memcpy(&a, acc + i * sizeof(T), sizeof(T));
    std::memcpy(&b, x + i * sizeof(T), sizeof(T));
    const T c = combine(a, b, op);
    std::memcpy(acc + i * sizeof(T), &c, sizeof(T));
  }
}

void combine_bf16(std::byte* acc, const std::byte* x, size_t n, ncclRedOp_t op) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t a, b;
    std::memcpy(&a, acc + i * 2, 2);
    std::memcpy(&b, x + i * 2, 2);
    const uint16_t c = bf16_round(combine(bf16_value(a), bf16_value(b), op));
    std::memcpy(acc + i * 2, &c, 2);
  }
}

void combine_buffers(std::byte* acc, const std::byte* x, size_t n, ncclDataType_t t,
                     ncclRedOp_t op) {
  switch (t) {
    case ncclInt8:
      return combine_into<int8_t>(acc, x, n, op);
    case ncclUint8:
      return combine_into<uint8_t>(acc, x, n, op);
    case ncclInt32:
      return combine_into<int32_t>(acc, x, n, op);
    case ncclUint32:
      return combine_into<uint32_t>(acc, x, n, op);
    case ncclInt64:
      return combine_into<int64_t>(acc, x, n, op);
    case ncclUint64:
      return combine_into<uint64_t>(acc, x, n, op);
    case ncclFloat32:
      return combine_into<float>(acc, x, n, op);
    case ncclFloat64:
      return combine_into<double>(acc, x, n, op);
    case ncclBfloat16:
      return combine_bf16(acc, x, n, op);
    default:
      return;  // refused when the call was made
  }
}

std::vector<std::byte> snapshot(const void* p, size_t bytes) {
  const auto* b = static_cast<const std::byte*>(p);
  return std::vector<std::byte>(b, b + bytes);
}

std::string describe(const Call& c) {
  return fmt::format("{} of {} elements of type {} (op {}, root/peer {})", kind_name(c.kind),
                     c.count, int(c.type), int(c.op), c.root);
}

// Moves the data of a collective every rank has reached. Inputs are copied first, so in-place
// calls and any aliasing between ranks' buffers read what was there before.
void execute_collective(Clique& cl, uint64_t order, Part& part) {
  const Call& first = part.calls[0];
  for (const Call& c : part.calls) {
    if (c.kind != first.kind || c.count != first.count || c.type != first.type ||
        c.op != first.op ||
        (c.kind != Kind::AllReduce && c.kind != Kind::ReduceScatter && c.kind != Kind::AllGather &&
         c.root != first.root)) {
      cl.set_error(ncclInvalidUsage,
                   fmt::format("emulated NCCL: collective #{} does not match across ranks: rank 0 "
                               "called {}, rank {} called {}",
                               order, describe(first), c.rank, describe(c)));
      return;
    }
  }
  const int w = cl.world;
  const size_t es = type_size(first.type);
  const size_t n = first.count;
  const size_t block = n * es;
  switch (first.kind) {
    case Kind::AllReduce:
    case Kind::Reduce:
    case Kind::ReduceScatter: {
      const size_t bytes = first.kind == Kind::ReduceScatter ? block * size_t(w) : block;
      std::vector<std::byte> acc = snapshot(part.calls[0].send, bytes);
      for (int r = 1; r < w; ++r) {
        const std::vector<std::byte> x = snapshot(part.calls[size_t(r)].send, bytes);
        combine_buffers(acc.data(), x.data(), bytes / es, first.type, first.op);
      }
      for (int r = 0; r < w; ++r) {
        const Call& c = part.calls[size_t(r)];
        if (first.kind == Kind::AllReduce) std::memcpy(c.recv, acc.data(), block);
        if (first.kind == Kind::Reduce && r == first.root) std::memcpy(c.recv, acc.data(), block);
        if (first.kind == Kind::ReduceScatter)
          std::memcpy(c.recv, acc.data() + size_t(r) * block, block);
      }
      return;
    }
    case Kind::AllGather: {
      std::vector<std::vector<std::byte>> in;
      for (int r = 0; r < w; ++r) in.push_back(snapshot(part.calls[size_t(r)].send, block));
      for (int p = 0; p < w; ++p)
        for (int r = 0; r < w; ++r)
          std::memcpy(static_cast<std::byte*>(part.calls[size_t(p)].recv) + size_t(r) * block,
                      in[size_t(r)].data(), block);
      return;
    }
    case Kind::Broadcast: {
      const std::vector<std::byte> in = snapshot(part.calls[size_t(first.root)].send, block);
      for (int r = 0; r < w; ++r) std::memcpy(part.calls[size_t(r)].recv, in.data(), block);
      return;
    }
    default:
      return;
  }
}

void execute_transfer(Clique& cl, Part& part) {
  const Call& s = part.calls[0];
  const Call& r = part.calls[1];
  if (s.count != r.count || s.type != r.type) {
    cl.set_error(ncclInvalidUsage,
                 fmt::format("emulated NCCL: rank {} sends {} elements of type {} to rank {}, "
                             "which receives {} elements of type {}",
                             s.rank, s.count, int(s.type), r.rank, r.count, int(r.type)));
    return;
  }
  std::memmove(r.recv, s.send, s.count * type_size(s.type));
}

// One operation on a stream: the parts this rank takes part in, launched together.
struct Launch {
  std::shared_ptr<Clique> clique;
  std::shared_ptr<RankState> rank_state;
  std::vector<std::pair<uint64_t, std::shared_ptr<Part>>> parts;  // (collective order or 0, part)
  bool arrived = false;
  bool finished = false;
};

// The stream reached the launch (the runtime's lock is held): arrive once, execute what this
// arrival completes, and report whether every part is done.
bool try_run(Launch& l) {
  const std::lock_guard<std::mutex> lock(nccl_mutex());
  Clique& cl = *l.clique;
  bool done = cl.error != ncclSuccess;  // aborted or failed: the stream goes on, nothing written
  if (!done) {
    if (!l.arrived) {
      l.arrived = true;
      for (auto& [order, part] : l.parts) {
        if (++part->arrived < part->expected) continue;
        if (part->calls.size() == 2 && is_p2p(part->calls[0].kind)) {
          execute_transfer(cl, *part);
        } else {
          execute_collective(cl, order, *part);
        }
        part->done = true;
      }
    }
    done = cl.error != ncclSuccess;
    if (!done) {
      done = true;
      for (auto& [order, part] : l.parts) done = done && part->done;
    }
  }
  if (done && !l.finished) {
    l.finished = true;
    --l.rank_state->pending;
  }
  return done;
}

struct GroupedCall {
  ncclComm_t comm;
  cudaStream_t stream;
  Call call;
};
thread_local int g_group_depth = 0;
thread_local std::vector<GroupedCall> g_group;
thread_local ncclResult_t g_group_error = ncclSuccess;

}  // namespace

struct ncclComm {
  std::shared_ptr<Clique> clique;
  std::shared_ptr<RankState> state = std::make_shared<RankState>();
  int rank = 0;
  int device = 0;
  bool blocking = true;
  bool finalizing = false;
};

namespace {

// Registers `calls` (one rank's, in order) with the clique and queues them on `stream` as one
// operation.
ncclResult_t launch(ncclComm_t comm, cudaStream_t stream, const std::vector<Call>& calls) {
  auto l = std::make_shared<Launch>();
  const char* what = calls.size() == 1 ? kind_name(calls[0].kind) : "NCCL group";
  {
    const std::lock_guard<std::mutex> lock(nccl_mutex());
    Clique& cl = *comm->clique;
    l->clique = comm->clique;
    l->rank_state = comm->state;
    for (const Call& c : calls) {
      if (!is_p2p(c.kind)) {
        const uint64_t order = cl.next_collective[size_t(comm->rank)]++;
        std::shared_ptr<Part>& part = cl.collectives[order];
        if (!part) {
          part = std::make_shared<Part>();
          part->expected = cl.world;
          part->calls.resize(size_t(cl.world));
        }
        part->calls[size_t(comm->rank)] = c;
        l->parts.emplace_back(order, part);
        continue;
      }
      const int src = c.kind == Kind::Send ? comm->rank : c.root;
      const int dst = c.kind == Kind::Send ? c.root : comm->rank;
      const uint64_t k = (c.kind == Kind::Send ? cl.sends : cl.recvs)[{src, dst}]++;
      std::shared_ptr<Part>& part = cl.transfers[{src, dst, k}];
      if (!part) {
        part = std::make_shared<Part>();
        part->expected = 2;
        part->calls.resize(2);
      }
      part->calls[c.kind == Kind::Send ? 0 : 1] = c;
      l->parts.emplace_back(0, part);
    }
    // Every rank has registered once the part is complete on this side too: drop the keys.
    for (auto it = cl.collectives.begin(); it != cl.collectives.end();) {
      bool all = true;
      for (int r = 0; r < cl.world; ++r) all = all && cl.next_collective[size_t(r)] > it->first;
      it = all ? cl.collectives.erase(it) : std::next(it);
    }
    for (auto it = cl.transfers.begin(); it != cl.transfers.end();) {
      const auto [src, dst, k] = it->first;
      const bool both = cl.sends[{src, dst}] > k && cl.recvs[{src, dst}] > k;
      it = both ? cl.transfers.erase(it) : std::next(it);
    }
    ++comm->state->pending;
    comm->state->streams.insert(stream);
  }
  const cudaError_t e = ll_emu_enqueue_stalling(stream, what, [l] { return try_run(*l); });
  if (e != cudaSuccess) {
    return fail(ncclUnhandledCudaError,
                fmt::format("emulated NCCL: queuing {} on its stream failed: {}", what,
                            cudaGetErrorString(e)));
  }
  return ncclSuccess;
}

bool is_device_memory(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// Checks one call and launches it, or keeps it for ncclGroupEnd inside a group.
ncclResult_t submit(ncclComm_t comm, cudaStream_t stream, Call c) {
  ncclResult_t result = ncclSuccess;
  const char* name = kind_name(c.kind);
  if (comm == nullptr) {
    result = fail(ncclInvalidArgument, fmt::format("{}: comm is null", name));
  } else if (type_size(c.type) == 0) {
    result = fail(ncclInvalidArgument,
                  fmt::format("{}: data type {} is not emulated (integers, fp32, fp64, bf16)", name,
                              int(c.type)));
  } else if (int(c.op) < 0 || int(c.op) > int(ncclMin)) {
    result = fail(
        ncclInvalidArgument,
        fmt::format("{}: reduction op {} is not emulated (sum, prod, max, min)", name, int(c.op)));
  } else {
    int world = 0;
    bool complete = false;
    {
      const std::lock_guard<std::mutex> lock(nccl_mutex());
      world = comm->clique->world;
      complete = comm->clique->complete();
    }
    const bool rooted =
        c.kind != Kind::AllReduce && c.kind != Kind::ReduceScatter && c.kind != Kind::AllGather;
    const bool needs_send = c.kind != Kind::Recv && (c.kind != Kind::Broadcast || c.rank == c.root);
    const bool needs_recv = c.kind != Kind::Send && (c.kind != Kind::Reduce || c.rank == c.root);
    const int stream_device = ll_emu_stream_device(stream);
    if (!complete) {
      result =
          fail(ncclInvalidUsage, fmt::format("{}: the communicator is not initialized yet (poll "
                                             "ncclCommGetAsyncError until ncclSuccess)",
                                             name));
    } else if (rooted && (c.root < 0 || c.root >= world)) {
      result =
          fail(ncclInvalidArgument, fmt::format("{}: {} {} outside a world of {}", name,
                                                is_p2p(c.kind) ? "peer" : "root", c.root, world));
    } else if (c.count > 0 && needs_send && !is_device_memory(c.send)) {
      result = fail(ncclInvalidArgument,
                    fmt::format("{}: sendbuff {} is not device memory", name, c.send));
    } else if (c.count > 0 && needs_recv && !is_device_memory(c.recv)) {
      result = fail(ncclInvalidArgument, fmt::format("{}: recvbuff {} is not device memory", name,
                                                     static_cast<const void*>(c.recv)));
    } else if (stream_device != comm->device) {
      result = fail(ncclInvalidArgument,
                    fmt::format("{}: the stream is {} but the communicator's device is {}", name,
                                stream_device < 0 ? std::string("unknown")
                                                  : fmt::format("on device {}", stream_device),
                                comm->device));
    } else if (c.count == 0) {
      return ncclSuccess;  // nothing moves (every rank passes the same count)
    }
  }
  if (result != ncclSuccess) {
    if (g_group_depth > 0 && g_group_error == ncclSuccess) g_group_error = result;
    return result;
  }
  if (g_group_depth > 0) {
    g_group.push_back({comm, stream, c});
    return ncclSuccess;
  }
  return launch(comm, stream, {c});
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (version == nullptr) return fail(ncclInvalidArgument, "ncclGetVersion: version is null");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == nullptr) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is null");
  static std::mutex m;
  static uint64_t counter = 0;
  static std::random_device device;
  const std::lock_guard<std::mutex> lock(m);
  *id = ncclUniqueId{};
  std::memcpy(id->internal, kIdMagic, sizeof(kIdMagic));
  const int32_t pid = int32_t(getpid());
  const uint64_t serial = ++counter;
  const uint64_t salt = (uint64_t(device()) << 32) ^ device();
  std::memcpy(id->internal + 16, &pid, sizeof(pid));
  std::memcpy(id->internal + 24, &serial, sizeof(serial));
  std::memcpy(id->internal + 32, &salt, sizeof(salt));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommInitRankConfig: comm is null");
  *comm = nullptr;
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    return fail(ncclInvalidArgument,
                fmt::format("ncclCommInitRankConfig: rank {} of {} ranks", rank, nranks));
  }
  bool blocking = true;
  if (config != nullptr) {
    if (config->magic != 0xcafebeef)
      return fail(ncclInvalidArgument,
                  "ncclCommInitRankConfig: config not initialized with "
                  "NCCL_CONFIG_INITIALIZER");
    blocking = config->blocking != 0;  // NCCL_CONFIG_UNDEF_INT: blocking, NCCL's default
  }
  if (std::memcmp(id.internal, kIdMagic, sizeof(kIdMagic)) != 0)
    return fail(ncclInvalidArgument, "ncclCommInitRankConfig: not an id of ncclGetUniqueId");
  int32_t pid = 0;
  std::memcpy(&pid, id.internal + 16, sizeof(pid));
  if (pid != int32_t(getpid())) {
    return fail(ncclInvalidUsage,
                fmt::format("ncclCommInitRankConfig: the unique id was made by process {}; the "
                            "emulated NCCL connects the ranks of one process (threads, one "
                            "emulated device each) only",
                            pid));
  }
  int device = 0;
  (void)cudaGetDevice(&device);

  auto c = std::make_unique<ncclComm>();
  c->rank = rank;
  c->device = device;
  c->blocking = blocking;
  std::unique_lock<std::mutex> lock(nccl_mutex());
  std::shared_ptr<Clique>& entry = registry()[id_key(id)];
  if (!entry) entry = std::make_shared<Clique>(nranks);
  const std::shared_ptr<Clique> cl = entry;
  if (cl->world != nranks) {
    return fail(ncclInvalidArgument,
                fmt::format("ncclCommInitRankConfig: rank {} says {} ranks, another rank said {}",
                            rank, nranks, cl->world));
  }
  if (cl->joined[size_t(rank)])
    return fail(ncclInvalidArgument,
                fmt::format("ncclCommInitRankConfig: rank {} joined this id twice", rank));
  cl->joined[size_t(rank)] = true;
  cl->devices[size_t(rank)] = device;
  ++cl->joined_count;
  if (cl->complete()) {
    registry().erase(id_key(id));  // an id is good for one communicator
    for (int a = 0; a < nranks; ++a)
      for (int b = a + 1; b < nranks; ++b)
        if (cl->devices[size_t(a)] == cl->devices[size_t(b)])
          cl->set_error(ncclInvalidUsage,
                        fmt::format("emulated NCCL: ranks {} and {} both use device {} (NCCL "
                                    "needs one GPU per rank: cudaSetDevice on each rank's thread "
                                    "first)",
                                    a, b, cl->devices[size_t(a)]));
    joined_cv().notify_all();
  }
  c->clique = cl;
  *comm = c.release();
  if (!blocking) return cl->complete() ? cl->error : ncclInProgress;
  joined_cv().wait(lock, [&] { return cl->complete() || cl->error != ncclSuccess; });
  if (cl->error != ncclSuccess) g_last_error = cl->error_text;
  return cl->error;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  if (comm == nullptr || state == nullptr)
    return fail(ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
  std::vector<cudaStream_t> streams;
  {
    const std::lock_guard<std::mutex> lock(nccl_mutex());
    const Clique& cl = *comm->clique;
    if (cl.error != ncclSuccess) {
      g_last_error = cl.error_text;
      *state = cl.error;
      return ncclSuccess;
    }
    if (!cl.complete()) {
      *state = ncclInProgress;
      return ncclSuccess;
    }
    if (!comm->finalizing || comm->state->pending == 0) {
      *state = ncclSuccess;
      return ncclSuccess;
    }
    streams.assign(comm->state->streams.begin(), comm->state->streams.end());
  }
  // Finalizing: a GPU would run the queued operations by itself; the lazy runtime is asked to.
  for (cudaStream_t s : streams) (void)cudaStreamQuery(s);
  (void)cudaGetLastError();  // a stream destroyed meanwhile is not this call's business
  const std::lock_guard<std::mutex> lock(nccl_mutex());
  *state = comm->clique->error != ncclSuccess ? comm->clique->error
           : comm->state->pending == 0        ? ncclSuccess
                                              : ncclInProgress;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommFinalize: comm is null");
  std::vector<cudaStream_t> streams;
  {
    const std::lock_guard<std::mutex> lock(nccl_mutex());
    comm->finalizing = true;
    if (!comm->blocking) return comm->state->pending == 0 ? ncclSuccess : ncclInProgress;
    streams.assign(comm->state->streams.begin(), comm->state->streams.end());
  }
  for (cudaStream_t s : streams) (void)cudaStreamSynchronize(s);
  (void)cudaGetLastError();
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;  // queued operations keep what they share with the other ranks
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  {
    const std::lock_guard<std::mutex> lock(nccl_mutex());
    Clique& cl = *comm->clique;
    cl.set_error(
        ncclRemoteError,
        fmt::format("emulated NCCL: rank {} aborted the communicator (ncclCommAbort)", comm->rank));
    for (auto it = registry().begin(); it != registry().end();) {
      it = it->second == comm->clique ? registry().erase(it) : std::next(it);
    }
    joined_cv().notify_all();
  }
  delete comm;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return g_last_error.c_str(); }

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (comm == nullptr || count == nullptr) return fail(ncclInvalidArgument, "null argument");
  *count = comm->clique->world;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (comm == nullptr || device == nullptr) return fail(ncclInvalidArgument, "null argument");
  *device = comm->device;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (comm == nullptr || rank == nullptr) return fail(ncclInvalidArgument, "null argument");
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::AllReduce, sendbuff, recvbuff, count, datatype, op, 0, comm ? comm->rank : 0});
}
ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::Reduce, sendbuff, recvbuff, count, datatype, op, root, comm ? comm->rank : 0});
}
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, 0, comm ? comm->rank : 0});
}
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, stream,
                {Kind::AllGather, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0,
                 comm ? comm->rank : 0});
}
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::Broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, comm ? comm->rank : 0});
}
ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::Send, sendbuff, nullptr, count, datatype, ncclSum, peer, comm ? comm->rank : 0});
}
ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return submit(
      comm, stream,
      {Kind::Recv, nullptr, recvbuff, count, datatype, ncclSum, peer, comm ? comm->rank : 0});
}

ncclResult_t ncclGroupStart(void) {
  if (g_group_depth++ == 0) {
    g_group.clear();
    g_group_error = ncclSuccess;
  }
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
  if (g_group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd: no matching ncclGroupStart");
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<GroupedCall> calls = std::move(g_group);
  g_group.clear();
  if (g_group_error != ncclSuccess) return g_group_error;  // nothing of the group is launched
  // One launch per communicator, its calls in order, on its one stream.
  std::vector<ncclComm_t> comms;
  for (const GroupedCall& g : calls)
    if (std::find(comms.begin(), comms.end(), g.comm) == comms.end()) comms.push_back(g.comm);
  std::vector<std::pair<cudaStream_t, std::vector<Call>>> launches(comms.size());  // by comm
  for (const GroupedCall& g : calls) {
    auto& [stream, mine] =
        launches[size_t(std::find(comms.begin(), comms.end(), g.comm) - comms.begin())];
    if (!mine.empty() && g.stream != stream) {
      return fail(ncclInvalidUsage,
                  "ncclGroupEnd: the emulated NCCL takes one stream per communicator in a group");
    }
    stream = g.stream;
    mine.push_back(g.call);
  }
  for (size_t i = 0; i < comms.size(); ++i) {
    const ncclResult_t r = launch(comms[i], launches[i].first, launches[i].second);
    if (r != ncclSuccess) return r;
  }
  return ncclSuccess;
}

}  // extern "C"
