#pragma once
// Hooks of the emulated build's stand-in CUDA runtime (fake_cuda_runtime.cpp) beyond the CUDA
// API. Its streams are lazy: async copies and memsets wait in their stream's queue until
// something orders them (an event, a synchronization, or an op that runs at once on the same
// stream, which first calls ll_emu_run_stream). docs/subsystems/simt-emulator.md describes it.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

extern "C" {

// Runs what `stream` has queued (null stream: every stream's queue). Everything that executes
// at once on a stream (an emulated kernel launch, the fake cuBLASLt matmul) calls this first.
cudaError_t ll_emu_run_stream(cudaStream_t stream);
// Operations queued on `stream` and not run yet (tests).
size_t ll_emu_queued_ops(cudaStream_t stream);
// Bytes of pinned host memory (cudaMallocHost / cudaHostAlloc) now allocated (tests).
size_t ll_emu_pinned_bytes();
}

// For the stand-in NCCL (fake_nccl.cpp): queues on `stream` an operation that may stall.
// `try_run` is called, under the runtime's lock, each time the stream reaches it, until it
// returns true (done); while it returns false the stream stops there. Null stream: the call
// returns once it is done.
cudaError_t ll_emu_enqueue_stalling(cudaStream_t stream, const char* what,
                                    std::function<bool()> try_run);
// The device a stream belongs to (the current device for the null stream; -1: no such stream).
int ll_emu_stream_device(cudaStream_t stream);
