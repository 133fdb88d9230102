#pragma once
// Choosing and constructing the backend a tool runs on.
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace ll {

// "auto" -> "cuda" when this build has the CUDA backend and a GPU is visible, else "cpu";
// "cpu" and "cuda" are returned as given; anything else is an ll::Error.
std::string resolve_device(const std::string& device);

// The backend for `device` (auto|cpu|cuda). --device cuda without a CUDA build or without a
// visible GPU is an ll::Error saying which. `gpu`: which visible GPU the CUDA backend takes (a
// data-parallel rank's local rank: one GPU per rank); past the last one is an ll::Error.
std::unique_ptr<Backend> make_backend(const std::string& device, int gpu = 0);

// One line for logs: "cpu (N threads)" or the GPU's name, compute capability and memory.
std::string describe_backend(const Backend& backend);

}  // namespace ll
