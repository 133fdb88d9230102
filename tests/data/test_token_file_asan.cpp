// Hostile token files under AddressSanitizer/UBSan: random damage to a valid shard, random
// bytes as raw-u16, and damaged .jsonl. Every case must open cleanly or throw ll::Error;
// a crash, an out-of-bounds read or another exception type fails.
#include <doctest/doctest.h>

#include <random>

#include "data/shard_format.h"
#include "data/text_sources.h"
#include "data/token_file.h"
#include "tests/data/scratch.h"

namespace {

// Opens and, when that works, reads everything; returns true if an ll::Error was thrown.
bool open_and_read(const std::string& path, ll::TokenFileFormat format, int64_t vocab) {
  try {
    const auto tf = ll::TokenFile::open(path, format, vocab);
    const std::vector<int32_t> ids = tf.read(0, tf.size());
    for (int32_t id : ids) REQUIRE((id >= 0 && id < vocab));
    return false;
  } catch (const ll::Error&) {
    return true;
  }
}

}  // namespace

TEST_CASE("randomly damaged shards open cleanly or throw ll::Error") {
  ll::test::ScratchDir dir("fuzz");
  const std::string good_path = dir.file("good.shard");
  {
    ll::ShardWriter w(good_path, 300);
    std::vector<int> ids(257);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int(i * 7 % 300);
    w.append(ids);
    w.commit();
  }
  const std::string good = ll::test::read_file(good_path);
  const std::string path = dir.file("damaged.shard");
  std::mt19937 rng(std::random_device{}());
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string b = good;
    switch (trial % 4) {
      case 0:  // flip bytes, mostly in the header
        for (int k = 0; k < 3; ++k) b[rng() % (k == 0 ? 64 : b.size())] = char(rng());
        break;
      case 1:  // truncate anywhere
        b.resize(rng() % b.size());
        break;
      case 2:  // random header fields, including huge counts
        for (size_t off : {8u, 12u, 16u, 24u}) {
          if (rng() % 2) b[off + rng() % 4] = char(rng());
        }
        break;
      default:  // append junk
        b += std::string(1 + rng() % 9, char(rng()));
        break;
    }
    ll::test::write_file(path, b);
    rejected += open_and_read(path, ll::TokenFileFormat::Shard, 300 - int64_t(rng() % 2) * 100);
  }
  CHECK(rejected > 300);
}

TEST_CASE("random bytes as raw-u16 open cleanly or throw ll::Error") {
  ll::test::ScratchDir dir("fuzz");
  const std::string path = dir.file("random.bin");
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    std::string b(rng() % 64, '\0');
    for (char& c : b) c = char(rng() % 4 == 0 ? rng() : 0);
    ll::test::write_file(path, b);
    open_and_read(path, ll::TokenFileFormat::RawU16, 1 + int64_t(rng() % 70000));
  }
}

TEST_CASE("damaged .jsonl reads cleanly or throws ll::Error") {
  ll::test::ScratchDir dir("fuzz");
  const std::string good =
      "{\"text\": \"a \\u00e9 \\ud83d\\ude00\"}\n{\"text\": \"b\", \"x\": [1, {}]}\n";
  const std::string path = dir.file("d.jsonl");
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 300; ++trial) {
    std::string b = good;
    for (int k = 0; k < 2; ++k) b[rng() % b.size()] = char(rng());
    ll::test::write_file(path, b);
    try {
      ll::DocumentReader reader({path});
      ll::Document doc;
      while (reader.next(doc)) {
      }
    } catch (const ll::Error&) {
    }
  }
}
