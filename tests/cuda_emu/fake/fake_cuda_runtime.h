#pragma once
// Hooks of the emulated build's stand-in CUDA runtime (fake_cuda_runtime.cpp) beyond the CUDA
// API. Its streams are lazy: async copies and memsets wait in their stream's queue until
// something orders them (an event, a synchronization, or an op that runs at once on the same
// stream, which first calls ll_emu_run_stream). docs/subsystems/simt-emulator.md describes it.
#include <cuda_runtime_api.h>

#include <cstddef>

extern "C" {

// Runs what `stream` has queued (null stream: every stream's queue). Everything that executes
// at once on a stream (an emulated kernel launch, the fake cuBLASLt matmul) calls this first.
cudaError_t ll_emu_run_stream(cudaStream_t stream);
// Operations queued on `stream` and not run yet (tests).
size_t ll_emu_queued_ops(cudaStream_t stream);
// Bytes of pinned host memory (cudaMallocHost / cudaHostAlloc) now allocated (tests).
size_t ll_emu_pinned_bytes();
}
