#pragma once
// Every rank of a data-parallel run must train the same model with the same options on the same
// data; a rank started with another file or flag would silently train something else. At start,
// each rank hashes a description of what it runs (model fingerprint, run options, data list) and
// the ranks compare hashes.
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/parallel/communicator.h"

namespace ll::dist {

// 64-bit FNV-1a of the bytes of `text`: stable across machines and builds (unlike std::hash).
uint64_t fnv1a_64(std::string_view text);

// All ranks gather every rank's `hash`; returns when they are all equal, otherwise throws
// ll::Error on every rank naming the ranks that differ from rank 0, `what` was compared and
// the hashes, e.g. "rank 2 differs from rank 0 in model/config/data (hash 0x... vs 0x...): every
// rank must run the same command on the same files".
void check_ranks_agree(Communicator& communicator, uint64_t hash, const std::string& what);

}  // namespace ll::dist
