#pragma once
// Cross-entropy over one chunk of fp32 logits on the GPU, the middle of the chunked fused
// classifier (per chunk of R tokens: logits [R, V] = x @ lm_head^T by cuBLASLt, then this,
// then the GEMMs that read the bf16 gradient it leaves in place). Same semantics as the
// per-row part of ll::cpu::classifier_forward_backward (kernels/cpu/cross_entropy.h), except
// that bad rows are reported through a device status word instead of an exception.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda {

// Status bits OR-ed into *status by cross_entropy_chunk.
inline constexpr int kCrossEntropyNonFinite = 1;  // a labelled row's loss is not finite
inline constexpr int kCrossEntropyBadTarget = 2;  // a target >= vocab (row skipped)

// logits: [rows, vocab] fp32, row-major, contiguous (row r at logits + r * vocab), device.
// targets: [rows] int32, device; target < 0 = unlabelled. Callers guarantee target < vocab
// (validated on the host); a target >= vocab is treated as unlabelled AND sets status bit 2.
// losses: [rows] fp32 out, device: logsumexp(row) - row[target] (natural log, fp32 math with
// the row max subtracted) for labelled rows, 0 otherwise.
// When write_grad: afterwards the storage of row r (its first vocab * 2 bytes) holds the bf16
// gradient of (loss_scale * sum of labelled losses) w.r.t. that row's logits,
// bf16(loss_scale * (softmax(row) - onehot(target))), all zeros for unlabelled rows. Seen as
// a bf16 matrix it is [rows, vocab] with leading dimension 2 * vocab elements, starting at
// (__nv_bfloat16*)logits. The fp32 logits are destroyed (the second half of each row's bytes
// is left unspecified). When !write_grad the logits are only read.
// status: a device int; bit 1 (kCrossEntropyNonFinite) is OR-ed in when a labelled row holds
// a NaN or +-Inf logit (its loss is then NaN and, with write_grad, its gradient row is NaN
// too, so the failure also reaches the gradient norm), bit 2 (kCrossEntropyBadTarget) for an
// out-of-range target. Never cleared here. May be null (nothing reported).
// Deterministic: the same inputs give bitwise the same losses and gradient every run.
// Fast path: logits 16-byte aligned and vocab % 4 == 0 (Llama-2's 32000); otherwise scalar.
// rows == 0 does nothing.
void cross_entropy_chunk(float* losses, float* logits, const int32_t* targets, int64_t rows,
                         int64_t vocab, float loss_scale, bool write_grad, int* status,
                         cudaStream_t stream);

}  // namespace ll::cuda
