#pragma once
// The attention kernel family a training run uses, in its records: the metrics log's
// "attention" event and the note a resume prints when its checkpoint was trained with another
// family (allowed: every family computes the same attention, to rounding).
#include <string>

#include "kernels/attention_kernel.h"

namespace ll {

// The body of the metrics log's "attention" event: the requested --attention-kernel, the family
// that runs (resolved) and, when resuming, the one the checkpoint recorded ("" = none), e.g.
// "\"requested\": \"auto\", \"kernel\": \"simt\", \"checkpoint_kernel\": \"tc-sm80\"".
std::string attention_event_fields(const std::string& requested, AttentionKernel kernel,
                                   const std::string& checkpoint_kernel);

// "" when the checkpoint recorded no family or this one; else one line saying both.
std::string attention_resume_note(const std::string& checkpoint_kernel, AttentionKernel kernel);

}  // namespace ll
