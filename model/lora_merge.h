#pragma once
// Folding an adapter into its base model, for export: every LoRA pair becomes part of the
// linear weight it adapts (W [out, in] += alpha / r * B [out, r] @ A [r, in]) and the trained
// base tensors ("LoRA+": embeddings, norms) replace the base model's. The merged model computes
// what base + adapter computes, with plain Llama layers that any Llama runtime can load.
#include "model/formats/adapter_io.h"
#include "model/llama_weights.h"

namespace ll {

// Merges `adapter` into `weights` in place. The products are accumulated in double on the host
// (OpenMP over rows) and rounded once. With tie_word_embeddings and a trained embed_tokens, the
// model is untied (the frozen lm_head is kept, as training saw it).
// Throws ll::Error, before changing anything, for a tensor name the model does not have, a
// shape that differs from the model's (naming the tensor and both shapes: "adapter for another
// base model?"), an A without its B, or A and B ranks that disagree with each other or with r;
// and, with `weights` then partly merged, for a merged value that is not finite.
void merge_adapter(LlamaWeights& weights, const AdapterDir& adapter);

}  // namespace ll
