#pragma once
// The SIMT emulator's launcher for kernels whose host launch sequence is a template over the
// launcher (`launch(name, kernel, grid, block, smem, args...)`, as kernels/cuda/kernel_launch.cuh's
// StreamLauncher on the GPU): each launch runs in the emulator and is recorded with its counts.
#include <string>
#include <utility>
#include <vector>

#include "tests/cuda_emu/simt_emulator.h"

namespace ll::cuda::emu {

// What one kernel launch of a sequence did.
struct KernelRun {
  std::string kernel;
  LaunchStats stats;
};

struct EmuLauncher {
  std::vector<KernelRun>* runs = nullptr;  // appended to when set
  // When non-zero, grid.x is capped at this many blocks, so that grid-stride loops take
  // several turns (the launch sequences' own grids usually cover the work in one).
  unsigned max_grid_x = 0;

  template <typename... P, typename... A>
  void operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                  A&&... args) const {
    if (max_grid_x != 0 && grid.x > max_grid_x) grid.x = max_grid_x;
    const LaunchStats s = launch(name, kernel, grid, block, smem, std::forward<A>(args)...);
    if (runs != nullptr) runs->push_back({name, s});
  }
};

}  // namespace ll::cuda::emu
