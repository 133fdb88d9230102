// Activation offload on the CPU backend (tests/kernels/backend_offload_cases.h): host tensors
// counted apart, copies bit-exact and in order, ticket misuse rejected. The CUDA backend runs
// the same cases in cuda/test_backend_offload_gpu.cpp.
#include <doctest/doctest.h>

#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/backend_offload_cases.h"

namespace cases = ll::test::offload_cases;

TEST_CASE("cpu backend: allocate_host counts host bytes apart from backend memory") {
  ll::CpuBackend b;
  cases::host_memory_counted_apart(b);
}

TEST_CASE("cpu backend: copy_async round trip device -> host -> device is bit-exact") {
  ll::CpuBackend b;
  cases::round_trip_bit_exact(b);
}

TEST_CASE("cpu backend: copy_async copies what the ops queued before it wrote") {
  ll::CpuBackend b;
  cases::copy_async_after_queued_ops(b);
}

TEST_CASE("cpu backend: ops queued after wait_copy see the copy done") {
  ll::CpuBackend b;
  cases::wait_copy_orders_later_ops(b);
}

TEST_CASE("cpu backend: a ticket waited twice or never handed out is an error") {
  ll::CpuBackend b;
  cases::misuse_is_an_error(b);
}
