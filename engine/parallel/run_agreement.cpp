#include "engine/parallel/run_agreement.h"

#include <vector>

#include "common/error.h"

namespace ll::dist {

uint64_t fnv1a_64(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV offset basis
  for (unsigned char byte : text) {
    hash ^= byte;
    hash *= 0x100000001b3ull;  // FNV prime
  }
  return hash;
}

void check_ranks_agree(Communicator& communicator, uint64_t hash, const std::string& what) {
  const std::vector<uint64_t> hashes =
      communicator.all_gather_u64(hash, fmt::format("checking that all ranks agree on {}", what));
  std::vector<std::string> differing;  // "rank R (hash 0x...)"
  for (size_t r = 1; r < hashes.size(); ++r) {
    if (hashes[r] != hashes[0])
      differing.push_back(fmt::format("rank {} (hash {:#018x})", r, hashes[r]));
  }
  if (differing.empty()) return;
  std::string ranks;
  for (size_t i = 0; i < differing.size(); ++i) {
    ranks += (i == 0 ? "" : i + 1 == differing.size() ? " and " : ", ") + differing[i];
  }
  fail(
      "rank {}: {} {} from rank 0 (hash {:#018x}) in {}: every rank must run the same command "
      "on the same files",
      communicator.rank(), ranks, differing.size() == 1 ? "differs" : "differ", hashes[0], what);
}

}  // namespace ll::dist
