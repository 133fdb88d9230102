// Context switch for the emulator's fibers (see fiber_switch.h).
#include "tests/cuda_emu/fiber_switch.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
// ll_emu_switch(void** save_sp, void* load_sp): pushes the System V callee-saved registers and
// the SSE / x87 control words, stores rsp, loads the other stack and pops its state; `ret`
// continues where that context last switched away (or at its entry function).
asm(R"(
  .text
  .p2align 4
  .globl ll_emu_switch
  .type ll_emu_switch, @function
ll_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ll_emu_switch, .-ll_emu_switch
)");
extern "C" void ll_emu_switch(void** save_sp, void* load_sp);
#endif

namespace ll::cuda::emu {

#if defined(__x86_64__)

void fiber_init(FiberContext& fiber, char* stack, size_t bytes, void (*entry)()) {
  // From the 16-byte aligned top down: a zero fake return address (so entry starts with
  // rsp = 8 mod 16, as after a call), entry's address for `ret`, rbp rbx r12 r13 r14 r15 (zero),
  // then the control words (this thread's current ones).
  auto top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;
  *--slot = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--slot = 0;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  *--slot = 0;
  std::memcpy(reinterpret_cast<char*>(slot), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(slot) + 4, &fpcw, 2);
  fiber.sp = slot;
}

void fiber_switch(FiberContext& from, FiberContext& to) { ll_emu_switch(&from.sp, to.sp); }

#else

void fiber_init(FiberContext& fiber, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&fiber.uc);
  fiber.uc.uc_stack.ss_sp = stack;
  fiber.uc.uc_stack.ss_size = bytes;
  fiber.uc.uc_link = nullptr;
  makecontext(&fiber.uc, entry, 0);
}

void fiber_switch(FiberContext& from, FiberContext& to) { swapcontext(&from.uc, &to.uc); }

#endif

}  // namespace ll::cuda::emu
