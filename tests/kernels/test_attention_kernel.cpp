// The --attention-kernel choice (kernels/attention_kernel.h) as pure host logic: names, head
// dims, what a device class and binary can run, and the clear errors for impossible choices,
// for the device classes the GPU check meets (A100, H100 with and without sm_90a code).
#include <doctest/doctest.h>

#include <string>

#include "common/error.h"
#include "kernels/attention_kernel.h"
#include "tests/scoped_env.h"

namespace {

using ll::AttentionDeviceSupport;
using ll::AttentionKernel;
using ll::test::ScopedEnv;

constexpr AttentionKernel kFamilies[] = {AttentionKernel::Simt, AttentionKernel::TcSm80,
                                         AttentionKernel::TcSm90, AttentionKernel::TcSm90AtomicDq};

AttentionDeviceSupport a100() { return {8, 0, false, true, {}}; }
AttentionDeviceSupport h100() { return {9, 0, true, true, {}}; }
// An H100 running a binary built for plain sm_90 (or only sm_80): same binaryVersion, but the
// Hopper kernels' bodies are empty there; the probe kernel says so.
AttentionDeviceSupport h100_without_sm90a() { return {9, 0, false, true, {}}; }

}  // namespace

TEST_CASE("attention kernel names round-trip; anything else lists them") {
  for (AttentionKernel k : {AttentionKernel::Auto, AttentionKernel::Simt, AttentionKernel::TcSm80,
                            AttentionKernel::TcSm90, AttentionKernel::TcSm90AtomicDq})
    CHECK(ll::parse_attention_kernel(ll::attention_kernel_name(k)) == k);
  CHECK(ll::attention_kernel_names() == "auto|simt|tc-sm80|tc-sm90|tc-sm90-atomic-dq");
  CHECK_THROWS_WITH_AS(ll::parse_attention_kernel("tc"),
                       "--attention-kernel must be one of "
                       "auto|simt|tc-sm80|tc-sm90|tc-sm90-atomic-dq, got 'tc'",
                       ll::Error);
  CHECK(ll::attention_kernel_auto() == AttentionKernel::Simt);  // until tc passes everywhere
  CHECK(ll::describe_attention_kernel(AttentionKernel::TcSm90).find("S2Roll on mma.sync") !=
        std::string::npos);
}

TEST_CASE("head dims: simt and auto take any, the tensor-core families 64 and 128 only") {
  for (int64_t hd : {16, 32, 64, 96, 128, 256}) {
    CAPTURE(hd);
    CHECK(ll::attention_kernel_has_head_dim(AttentionKernel::Auto, hd));
    CHECK(ll::attention_kernel_has_head_dim(AttentionKernel::Simt, hd));
    for (AttentionKernel k :
         {AttentionKernel::TcSm80, AttentionKernel::TcSm90, AttentionKernel::TcSm90AtomicDq})
      CHECK(ll::attention_kernel_has_head_dim(k, hd) == (hd == 64 || hd == 128));
  }
  CHECK_NOTHROW(ll::check_attention_kernel_head_dim(AttentionKernel::TcSm80, 128));
  CHECK_THROWS_WITH_AS(ll::check_attention_kernel_head_dim(AttentionKernel::TcSm90, 32),
                       "--attention-kernel tc-sm90: its kernels take head dims 64 and 128, this "
                       "model has head dim 32; families for it: simt (or auto)",
                       ll::Error);
}

TEST_CASE("what each device class runs, and auto resolves to simt on every one") {
  for (const AttentionDeviceSupport& d : {a100(), h100(), h100_without_sm90a()}) {
    CHECK(ll::resolve_attention_kernel(AttentionKernel::Auto, d) == AttentionKernel::Simt);
    CHECK(ll::attention_kernel_available(AttentionKernel::Simt, d));
    CHECK(ll::attention_kernel_available(AttentionKernel::TcSm80, d));
  }
  for (AttentionKernel k : kFamilies) {
    CAPTURE(ll::attention_kernel_name(k));
    CHECK(ll::attention_kernel_available(k, h100()));
    CHECK(ll::resolve_attention_kernel(k, h100()) == k);
  }
  std::string why;
  CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::Auto, h100(), &why));
  CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::TcSm90, {7, 5, false, true, {}}));
  AttentionDeviceSupport no_encoder = h100();
  no_encoder.tensor_map_encoder = false;
  CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::TcSm90, no_encoder, &why));
  CHECK(why == "the driver does not encode TMA tensor maps");
}

TEST_CASE("an impossible choice names what is missing and what is possible") {
  CHECK_THROWS_WITH_AS(ll::resolve_attention_kernel(AttentionKernel::TcSm90, a100()),
                       "--attention-kernel tc-sm90: not possible on this device (it needs a "
                       "compute capability 9.x (Hopper) device, this one is sm_80); possible "
                       "here: simt, tc-sm80 (or auto)",
                       ll::Error);
  CHECK_THROWS_WITH_AS(
      ll::resolve_attention_kernel(AttentionKernel::TcSm90AtomicDq, h100_without_sm90a()),
      "--attention-kernel tc-sm90-atomic-dq: not possible on this device (this binary has no "
      "sm_90a code (build with CMAKE_CUDA_ARCHITECTURES including 90a)); possible here: simt, "
      "tc-sm80 (or auto)",
      ll::Error);
  const AttentionDeviceSupport turing = {7, 5, false, false, {}};
  CHECK_THROWS_WITH_AS(ll::resolve_attention_kernel(AttentionKernel::Simt, turing),
                       doctest::Contains("the CUDA backend needs sm_80 or newer"), ll::Error);
}

TEST_CASE("LL_ATTENTION_KERNEL_DENY turns families off (tc-sm90 takes its atomic-dQ form along)") {
  {
    ScopedEnv deny("LL_ATTENTION_KERNEL_DENY", nullptr);
    CHECK(ll::attention_kernels_denied_from_env().empty());
  }
  {
    ScopedEnv deny("LL_ATTENTION_KERNEL_DENY", "");
    CHECK(ll::attention_kernels_denied_from_env().empty());
  }
  {
    ScopedEnv deny("LL_ATTENTION_KERNEL_DENY", "tc-sm90-atomic-dq");
    AttentionDeviceSupport d = h100();
    d.denied = ll::attention_kernels_denied_from_env();
    CHECK(ll::attention_kernel_available(AttentionKernel::TcSm90, d));
    std::string why;
    CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::TcSm90AtomicDq, d, &why));
    CHECK(why == "turned off by LL_ATTENTION_KERNEL_DENY");
  }
  {
    ScopedEnv deny("LL_ATTENTION_KERNEL_DENY", "tc-sm90,simt");
    AttentionDeviceSupport d = h100();
    d.denied = ll::attention_kernels_denied_from_env();
    CHECK(d.denied.size() == 2);
    CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::TcSm90, d));
    CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::TcSm90AtomicDq, d));
    CHECK_FALSE(ll::attention_kernel_available(AttentionKernel::Simt, d));
    CHECK(ll::attention_kernel_available(AttentionKernel::TcSm80, d));
    CHECK_THROWS_WITH_AS(ll::resolve_attention_kernel(AttentionKernel::TcSm90, d),
                         "--attention-kernel tc-sm90: not possible on this device (turned off by "
                         "LL_ATTENTION_KERNEL_DENY); possible here: tc-sm80 (or auto)",
                         ll::Error);
  }
  {
    ScopedEnv deny("LL_ATTENTION_KERNEL_DENY", "tc-sm90,hopper");
    CHECK_THROWS_WITH_AS(ll::attention_kernels_denied_from_env(),
                         doctest::Contains("LL_ATTENTION_KERNEL_DENY=tc-sm90,hopper: 'hopper' is "
                                           "not one of"),
                         ll::Error);
  }
}
