#pragma once
// The tokenizer.json fixtures (tests/reference/make_tokenizer_json_fixtures.py): their
// directories, the two texts, and the hash the expected ids are stored as.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "tests/data/scratch.h"

namespace ll::test {

inline std::string tokenizer_json_dir(const std::string& name) {
  return std::string(LL_SOURCE_DIR) + "/tests/fixtures/tokenizer_json/" + name;
}
inline const std::vector<std::string>& tokenizer_json_names() {
  static const std::vector<std::string> names{"llama3", "qwen2", "nemo", "llama2_legacy",
                                              "llama2_metaspace"};
  return names;
}

// The King James Bible as the fixture script read it: `bible gen1:1-rev22:21` (bible-kjv).
inline std::string kjv_text() {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen("bible gen1:1-rev22:21 2>/dev/null", "r"), pclose);
  std::string text;
  char buf[1 << 16];
  size_t n = 0;
  while (p && (n = fread(buf, 1, sizeof(buf), p.get())) > 0) text.append(buf, n);
  LL_CHECK(text.size() > 4000000,
           "the KJV text is missing: install Debian's bible-kjv (scripts/setup.sh)");
  return text;
}

inline std::string stress_text() { return read_file(tokenizer_json_dir("stress.txt")); }

// FNV-1a 64 over bytes, as hex (the script's fnv1a64).
inline std::string fnv1a64(const void* data, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}
// Over ids as little-endian uint32.
inline std::string ids_fnv1a64(const int* ids, size_t n) {
  std::vector<uint32_t> u(ids, ids + n);
  return fnv1a64(u.data(), u.size() * 4);
}

}  // namespace ll::test
