// TokenFile: the paper's raw uint16 streams, format names and range reads.
#include <doctest/doctest.h>

#include <cstring>

#include "data/shard_format.h"
#include "data/token_file.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;

namespace {

std::string u16_bytes(const std::vector<uint16_t>& ids) {
  std::string b(ids.size() * 2, '\0');
  std::memcpy(b.data(), ids.data(), b.size());
  return b;
}

}  // namespace

TEST_CASE("format names") {
  CHECK(ll::token_file_format_from_name("shard") == ll::TokenFileFormat::Shard);
  CHECK(ll::token_file_format_from_name("raw-u16") == ll::TokenFileFormat::RawU16);
  const std::string msg = error_of([] { ll::token_file_format_from_name("u16"); });
  CHECK(contains(msg, "\"u16\""));
  CHECK(contains(msg, "raw-u16"));
}

TEST_CASE("raw-u16 stream round trip (little-endian, ids up to 65535)") {
  ll::test::ScratchDir dir("raw");
  const std::string path = dir.file("validation.bin");
  const std::vector<uint16_t> ids{1, 2, 31999, 0, 65535, 42};
  ll::test::write_file(path, u16_bytes(ids));
  // The bytes are little-endian on disk: 31999 = 0x7CFF.
  CHECK(ll::test::read_file(path).substr(4, 2) == std::string("\xff\x7c"));

  const auto tf = ll::TokenFile::open(path, ll::TokenFileFormat::RawU16, 65536);
  CHECK(tf.path() == path);
  REQUIRE(tf.size() == 6);
  CHECK(tf.read(0, 6) == std::vector<int32_t>{1, 2, 31999, 0, 65535, 42});
  int32_t two[2];
  tf.read(4, 2, two);
  CHECK(two[0] == 65535);
  CHECK(two[1] == 42);
  CHECK(tf.read(6, 0).empty());

  for (auto [start, count] : {std::pair<int64_t, int64_t>{5, 2}, {-1, 1}, {0, -1}, {7, 0}}) {
    const std::string msg = error_of([&] { tf.read(start, count); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "holds 6 tokens"));
  }
}

TEST_CASE("raw-u16: odd size, out-of-vocabulary id and a shard given as raw are rejected") {
  ll::test::ScratchDir dir("raw");
  const std::string path = dir.file("bad.bin");

  ll::test::write_file(path, u16_bytes({1, 2, 3}) + "x");
  std::string msg =
      error_of([&] { ll::TokenFile::open(path, ll::TokenFileFormat::RawU16, 32000); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "7 bytes is odd"));

  ll::test::write_file(path, u16_bytes({1, 2, 3, 31999, 32000, 5}));
  msg = error_of([&] { ll::TokenFile::open(path, ll::TokenFileFormat::RawU16, 32000); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "token 4 has id 32000"));
  CHECK(contains(msg, "32000 ids"));
  CHECK(contains(msg, "--tokenizer"));
  // The same file is fine for a model with a larger vocabulary (e.g. 32001 with a pad token).
  CHECK(ll::TokenFile::open(path, ll::TokenFileFormat::RawU16, 32001).size() == 6);

  const std::string shard = dir.file("t.shard");
  ll::ShardWriter w(shard, 512);
  w.append(std::vector<int>{1, 2, 3});
  w.commit();
  msg = error_of([&] { ll::TokenFile::open(shard, ll::TokenFileFormat::RawU16, 65536); });
  CHECK(contains(msg, shard));
  CHECK(contains(msg, "format shard"));

  msg = error_of(
      [&] { ll::TokenFile::open(dir.file("missing.bin"), ll::TokenFileFormat::RawU16, 512); });
  CHECK(contains(msg, "missing.bin"));
}

TEST_CASE("an empty raw-u16 file has no tokens") {
  ll::test::ScratchDir dir("raw");
  const std::string path = dir.file("empty.bin");
  ll::test::write_file(path, "");
  CHECK(ll::TokenFile::open(path, ll::TokenFileFormat::RawU16, 512).size() == 0);
}
