#pragma once
// The attention kernels a CUDA run trains with (forward and backward): one typed choice, given
// as --attention-kernel on every tool that runs a model and resolved once when the backend is
// made. The CPU backend has one attention kernel and takes only auto. Pure host code: the
// checks run (and are tested) without a GPU; kernels/cuda/attention_device_support.h fills in
// what a GPU and this binary can run.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ll {

enum class AttentionKernel {
  Auto,            // the best kernel that has passed on this device class: today Simt
  Simt,            // CUDA cores (kernels/cuda/attention.cu), any head dim, deterministic
  TcSm80,          // mma.sync tensor cores, head dims 64 and 128, sm_80 and newer
  TcSm90,          // Hopper wgmma + TMA, head dims 64 and 128, a 9.x device and sm_90a code;
                   // S2Roll masks run on the TcSm80 kernels (the Hopper ones lack the roll)
  TcSm90AtomicDq,  // TcSm90 whose backward sums dQ with fp32 atomics into an [N, H, hd]
                   // accumulator (faster; dQ's last bits vary from run to run)
};

// "auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq".
std::string_view attention_kernel_name(AttentionKernel kernel);
// The kernel of one of those names; anything else is an ll::Error listing them.
AttentionKernel parse_attention_kernel(std::string_view name);
// "auto|simt|tc-sm80|tc-sm90|tc-sm90-atomic-dq", for help texts and errors.
std::string attention_kernel_names();

// The --attention-kernel help text of every tool that runs a model.
extern const char* const kAttentionKernelHelp;

// For setup lines: "tc-sm80 (mma.sync tensor cores, head dims 64/128)".
std::string describe_attention_kernel(AttentionKernel kernel);

// What auto runs: the best family that has passed the GPU check on every device class.
AttentionKernel attention_kernel_auto();

// Whether the family has kernels for this head dim (Auto and Simt: every one).
bool attention_kernel_has_head_dim(AttentionKernel kernel, int64_t head_dim);
// An ll::Error naming the family, the head dim and the families that have it, where the family
// lacks it (an explicit choice never falls back silently).
void check_attention_kernel_head_dim(AttentionKernel kernel, int64_t head_dim);

// What a GPU and this binary can run.
struct AttentionDeviceSupport {
  int sm_major = 0, sm_minor = 0;       // compute capability
  bool sm90a_code = false;              // the loaded code was compiled for sm_90a (probe kernel)
  bool tensor_map_encoder = false;      // the driver encodes TMA tensor maps
  std::vector<AttentionKernel> denied;  // turned off by LL_ATTENTION_KERNEL_DENY
};

// Whether `kernel` (not Auto) runs there; if not and `why` is given, what is missing.
bool attention_kernel_available(AttentionKernel kernel, const AttentionDeviceSupport& device,
                                std::string* why = nullptr);
// The family a run uses: auto -> attention_kernel_auto(); an explicit family the device cannot
// run is an ll::Error saying what is missing and which families are possible there.
AttentionKernel resolve_attention_kernel(AttentionKernel requested,
                                         const AttentionDeviceSupport& device);

// LL_ATTENTION_KERNEL_DENY=name[,name...]: families treated as unavailable on this machine
// (tc-sm90 implies tc-sm90-atomic-dq). The one override, for scripts/gpu_check.sh: when a
// family's smoke run fails, the rest of the check runs without it. Unset or empty: none; an
// unknown name is an ll::Error.
std::vector<AttentionKernel> attention_kernels_denied_from_env();

}  // namespace ll
