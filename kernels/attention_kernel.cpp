#include "kernels/attention_kernel.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <optional>

#include <fmt/format.h>

#include "common/error.h"

namespace ll {
namespace {

constexpr std::array<AttentionKernel, 5> kAll = {AttentionKernel::Auto, AttentionKernel::Simt,
                                                 AttentionKernel::TcSm80, AttentionKernel::TcSm90,
                                                 AttentionKernel::TcSm90AtomicDq};

bool is_denied(AttentionKernel kernel, const std::vector<AttentionKernel>& denied) {
  auto has = [&](AttentionKernel k) {
    return std::find(denied.begin(), denied.end(), k) != denied.end();
  };
  return has(kernel) || (kernel == AttentionKernel::TcSm90AtomicDq && has(AttentionKernel::TcSm90));
}

// The kernel named `name`, if any.
std::optional<AttentionKernel> find_attention_kernel(std::string_view name) {
  for (AttentionKernel k : kAll)
    if (attention_kernel_name(k) == name) return k;
  return std::nullopt;
}

// The explicit families `pred` accepts, as "simt, tc-sm80".
template <typename Pred>
std::string families_where(Pred pred) {
  std::string out;
  for (AttentionKernel k : kAll) {
    if (k == AttentionKernel::Auto || !pred(k)) continue;
    if (!out.empty()) out += ", ";
    out += attention_kernel_name(k);
  }
  return out;
}

}  // namespace

const char* const kAttentionKernelHelp =
    "training attention kernels on the CUDA backend: auto (the best family that has passed on "
    "this device class: simt today), simt (CUDA cores, any head dim), tc-sm80 (mma.sync tensor "
    "cores, head dims 64/128), tc-sm90 (Hopper wgmma + TMA, needs an sm_90a build), "
    "tc-sm90-atomic-dq (tc-sm90 with the faster, not bitwise reproducible atomic-dQ backward); "
    "the CPU backend takes only auto";

std::string_view attention_kernel_name(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::Auto:
      return "auto";
    case AttentionKernel::Simt:
      return "simt";
    case AttentionKernel::TcSm80:
      return "tc-sm80";
    case AttentionKernel::TcSm90:
      return "tc-sm90";
    case AttentionKernel::TcSm90AtomicDq:
      return "tc-sm90-atomic-dq";
  }
  return "?";
}

AttentionKernel parse_attention_kernel(std::string_view name) {
  if (const std::optional<AttentionKernel> k = find_attention_kernel(name)) return *k;
  fail("--attention-kernel must be one of {}, got '{}'", attention_kernel_names(), name);
}

std::string attention_kernel_names() {
  std::string out;
  for (AttentionKernel k : kAll) {
    if (!out.empty()) out += '|';
    out += attention_kernel_name(k);
  }
  return out;
}

std::string describe_attention_kernel(AttentionKernel kernel) {
  const char* what = "";
  switch (kernel) {
    case AttentionKernel::Auto:
      what = "the backend's choice";
      break;
    case AttentionKernel::Simt:
      what = "CUDA cores";
      break;
    case AttentionKernel::TcSm80:
      what = "mma.sync tensor cores, head dims 64/128";
      break;
    case AttentionKernel::TcSm90:
      what = "Hopper wgmma + TMA, head dims 64/128; S2Roll on mma.sync";
      break;
    case AttentionKernel::TcSm90AtomicDq:
      what = "Hopper wgmma + TMA, atomic-dQ backward, head dims 64/128; S2Roll on mma.sync";
      break;
  }
  return fmt::format("{} ({})", attention_kernel_name(kernel), what);
}

// The tensor-core families stay opt-in until they have passed the GPU check on every device
// class (scripts/gpu_check.sh runs the training step under each family).
AttentionKernel attention_kernel_auto() { return AttentionKernel::Simt; }

bool attention_kernel_has_head_dim(AttentionKernel kernel, int64_t head_dim) {
  if (kernel == AttentionKernel::Auto || kernel == AttentionKernel::Simt) return true;
  return head_dim == 64 || head_dim == 128;
}

void check_attention_kernel_head_dim(AttentionKernel kernel, int64_t head_dim) {
  LL_CHECK(attention_kernel_has_head_dim(kernel, head_dim),
           "--attention-kernel {}: its kernels take head dims 64 and 128, this model has head "
           "dim {}; families for it: {} (or auto)",
           attention_kernel_name(kernel), head_dim, families_where([&](AttentionKernel k) {
             return attention_kernel_has_head_dim(k, head_dim);
           }));
}

bool attention_kernel_available(AttentionKernel kernel, const AttentionDeviceSupport& device,
                                std::string* why) {
  auto no = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return false;
  };
  if (kernel == AttentionKernel::Auto) return no("auto is not a family");
  if (is_denied(kernel, device.denied)) return no("turned off by LL_ATTENTION_KERNEL_DENY");
  if (device.sm_major < 8)
    return no(fmt::format("the device is sm_{}{}; the CUDA backend needs sm_80 or newer",
                          device.sm_major, device.sm_minor));
  if (kernel == AttentionKernel::Simt || kernel == AttentionKernel::TcSm80) return true;
  // TcSm90, TcSm90AtomicDq: the sm_90a kernels.
  if (device.sm_major != 9)
    return no(fmt::format("it needs a compute capability 9.x (Hopper) device, this one is sm_{}{}",
                          device.sm_major, device.sm_minor));
  if (!device.sm90a_code)
    return no("this binary has no sm_90a code (build with CMAKE_CUDA_ARCHITECTURES including 90a)");
  if (!device.tensor_map_encoder) return no("the driver does not encode TMA tensor maps");
  return true;
}

AttentionKernel resolve_attention_kernel(AttentionKernel requested,
                                         const AttentionDeviceSupport& device) {
  const AttentionKernel kernel =
      requested == AttentionKernel::Auto ? attention_kernel_auto() : requested;
  std::string why;
  LL_CHECK(attention_kernel_available(kernel, device, &why),
           "--attention-kernel {}: not possible on this device ({}); possible here: {} (or auto)",
           attention_kernel_name(kernel), why, families_where([&](AttentionKernel k) {
             return attention_kernel_available(k, device);
           }));
  return kernel;
}

std::vector<AttentionKernel> attention_kernels_denied_from_env() {
  const char* env = std::getenv("LL_ATTENTION_KERNEL_DENY");
  std::vector<AttentionKernel> denied;
  if (env == nullptr) return denied;
  const std::string_view all(env);
  size_t start = 0;
  while (start <= all.size()) {
    const size_t comma = std::min(all.find(',', start), all.size());
    const std::string_view name = all.substr(start, comma - start);
    if (!name.empty()) {
      const std::optional<AttentionKernel> k = find_attention_kernel(name);
      LL_CHECK(k && *k != AttentionKernel::Auto,
               "LL_ATTENTION_KERNEL_DENY={}: '{}' is not one of {}", env, name,
               families_where([](AttentionKernel) { return true; }));
      denied.push_back(*k);
    }
    start = comma + 1;
  }
  return denied;
}

}  // namespace ll
