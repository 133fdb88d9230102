#pragma once
// Choosing and constructing the backend a tool runs on.
#include <memory>
#include <string>

#include "kernels/attention_kernel.h"
#include "kernels/backend.h"

namespace ll {

// "auto" -> Cuda when this build has the CUDA backend and a GPU is visible, else Cpu; "cpu" and
// "cuda" as named; anything else is an ll::Error.
BackendKind resolve_device(const std::string& device);

// The backend for `device` (auto|cpu|cuda). --device cuda without a CUDA build or without a
// visible GPU is an ll::Error saying which. `gpu`: which visible GPU the CUDA backend takes (a
// data-parallel rank's local rank: one GPU per rank); past the last one is an ll::Error.
// `attention`: the CUDA backend's training attention family (--attention-kernel; resolved and
// checked against the device there); the CPU backend takes only auto.
std::unique_ptr<Backend> make_backend(const std::string& device, int gpu = 0,
                                      AttentionKernel attention = AttentionKernel::Auto);

// One line for logs: "cpu (N threads)" or the GPU's name, compute capability and memory, and
// the attention family.
std::string describe_backend(const Backend& backend);

}  // namespace ll
