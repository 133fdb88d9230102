// A host stand-in for the CUDA runtime API calls the engine makes, for the emulated CUDA build
// (LL_CUDA_BACKEND_EMULATED): "device" memory is host memory, every stream operation runs at once
// on the calling thread (kernels through the SIMT emulator, kernels/cuda/kernel_launch.cuh), so
// streams and events only order what is already ordered. One device, reported as an 80 GiB
// sm_90 part. New allocations are filled with 0xFF bytes (NaN as bf16 and fp32) so code that
// reads memory it never wrote fails visibly, as it could on a GPU. Declarations come from the
// toolkit's cuda_runtime_api.h, so the signatures are the real ones.
#include <cuda_runtime_api.h>

#include "tests/cuda_emu/simt_emulator.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace {

constexpr size_t kTotalBytes = size_t(80) << 30;
constexpr size_t kAlign = 256;  // cudaMalloc's alignment

struct Allocations {
  std::mutex mu;
  std::map<const char*, size_t> live;  // base -> bytes
  size_t in_use = 0;
};
Allocations& allocations() {
  static Allocations a;
  return a;
}

thread_local cudaError_t g_last_error = cudaSuccess;
cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

cudaError_t allocate(void** ptr, size_t bytes) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  if (a.in_use + bytes > kTotalBytes) return fail(cudaErrorMemoryAllocation);
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, rounded);
  a.live[static_cast<const char*>(p)] = bytes;
  a.in_use += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  const auto it = a.live.find(static_cast<const char*>(ptr));
  if (it == a.live.end()) return fail(cudaErrorInvalidValue);
  a.in_use -= it->second;
  a.live.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

bool is_device(const void* p) {
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.upper_bound(static_cast<const char*>(p));
  if (it == a.live.begin()) return false;
  --it;
  return static_cast<const char*>(p) < it->first + it->second + (it->second == 0);
}

struct Event {
  double ms = 0.0;  // host clock at the last record
};
double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

int g_device = 0;

}  // namespace

extern "C" {

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = g_device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr || device != 0) return fail(cudaErrorInvalidValue);
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
  if (value == nullptr || device != 0) return fail(cudaErrorInvalidValue);
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
  Allocations& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  *total_bytes = kTotalBytes;
  *free_bytes = kTotalBytes - a.in_use;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes); }
cudaError_t CUDARTAPI cudaFree(void* ptr) { return release(ptr); }
cudaError_t CUDARTAPI cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) {
  return allocate(ptr, bytes);
}
cudaError_t CUDARTAPI cudaFreeAsync(void* ptr, cudaStream_t) { return release(ptr); }
cudaError_t CUDARTAPI cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (pool == nullptr || device != 0) return fail(cudaErrorInvalidValue);
  static int token;
  *pool = reinterpret_cast<cudaMemPool_t>(&token);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) {
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  if (attr == nullptr) return fail(cudaErrorInvalidValue);
  *attr = cudaPointerAttributes{};
  attr->type = is_device(ptr) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  attr->device = 0;
  attr->devicePointer = is_device(ptr) ? const_cast<void*>(ptr) : nullptr;
  attr->hostPointer = is_device(ptr) ? nullptr : const_cast<void*>(ptr);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  if (n > 0 && (dst == nullptr || src == nullptr)) return fail(cudaErrorInvalidValue);
  if (n > 0) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                                      cudaStream_t) {
  return cudaMemcpy(dst, src, n, kind);
}
cudaError_t CUDARTAPI cudaMemset(void* dst, int value, size_t n) {
  if (n > 0 && dst == nullptr) return fail(cudaErrorInvalidValue);
  if (n > 0) std::memset(dst, value, n);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t) {
  return cudaMemset(dst, value, n);
}
cudaError_t CUDARTAPI cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width,
                                        size_t height, cudaStream_t) {
  if (width > pitch && height > 1) return fail(cudaErrorInvalidValue);
  for (size_t r = 0; r < height; ++r)
    std::memset(static_cast<char*>(dst) + r * pitch, value, width);
  return cudaSuccess;
}

// Streams: everything already ran when it was enqueued.
cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t* s) {
  if (s == nullptr) return fail(cudaErrorInvalidValue);
  *s = reinterpret_cast<cudaStream_t>(new int(0));
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  return cudaStreamCreate(s);
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<int*>(s);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) {
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaLaunchHostFunc(cudaStream_t, cudaHostFn_t fn, void* user_data) {
  if (fn == nullptr) return fail(cudaErrorInvalidValue);
  fn(user_data);
  return cudaSuccess;
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
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  reinterpret_cast<Event*>(e)->ms = now_ms();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr || start == nullptr || end == nullptr) return fail(cudaErrorInvalidValue);
  *ms = float(reinterpret_cast<Event*>(end)->ms - reinterpret_cast<Event*>(start)->ms);
  return cudaSuccess;
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
    default:
      return "unknown error (emulated runtime)";
  }
}

}  // extern "C"
