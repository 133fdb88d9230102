#pragma once
// Minimal cooperative context switching for the SIMT emulator's fibers (one per emulated GPU
// thread). On x86-64 a few instructions save the callee-saved registers and swap stacks
// (swapcontext would also make a signal-mask system call per switch, most of the emulator's
// time); elsewhere it falls back to ucontext.
#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace ll::cuda::emu {

struct FiberContext {
#if defined(__x86_64__)
  void* sp = nullptr;  // saved stack pointer (registers are on the stack below it)
#else
  ucontext_t uc{};
#endif
};

// Prepares `fiber` to run entry() on [stack, stack + bytes) when first switched to. entry
// must never return (it switches away for good instead).
void fiber_init(FiberContext& fiber, char* stack, size_t bytes, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void fiber_switch(FiberContext& from, FiberContext& to);

}  // namespace ll::cuda::emu
