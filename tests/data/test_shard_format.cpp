// Token shards: writer/reader round trips, the header layout, and every kind of damage.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "data/shard_format.h"
#include "data/token_file.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;

namespace {

std::vector<int> random_ids(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(0, vocab - 1);
  std::vector<int> ids(n);
  for (int& id : ids) id = dist(rng);
  if (n > 1) ids[n - 1] = vocab - 1;  // the largest legal id must survive
  return ids;
}

template <typename T>
T field(const std::string& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

template <typename T>
void set_field(std::string& bytes, size_t offset, T v) {
  std::memcpy(bytes.data() + offset, &v, sizeof(T));
}

// A valid shard of `n` ids for vocabulary 1000 (u16), as bytes.
std::string make_shard(const std::string& path, size_t n) {
  ll::ShardWriter w(path, 1000);
  w.append(random_ids(n, 1000, 7));
  w.commit();
  return ll::test::read_file(path);
}

}  // namespace

TEST_CASE("FNV-1a 64 matches the published test vectors") {
  CHECK(ll::fnv1a64("", 0) == 0xcbf29ce484222325ull);
  CHECK(ll::fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(ll::fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
  // Streaming in pieces gives the same hash.
  CHECK(ll::fnv1a64("bar", 3, ll::fnv1a64("foo", 3)) == 0x85944171f73967e8ull);
}

TEST_CASE("shard round trip: u16 chosen for a small vocabulary, u32 when forced or needed") {
  ll::test::ScratchDir dir("shard");
  struct Case {
    int64_t vocab;
    int force;
    int expect_bytes;
  };
  for (const Case c : {Case{512, 0, 2}, Case{65536, 0, 2}, Case{512, 4, 4}, Case{70000, 0, 4},
                       Case{32000, 2, 2}}) {
    CAPTURE(c.vocab);
    CAPTURE(c.force);
    const std::string path = dir.file("rt.shard");
    const std::vector<int> ids = random_ids(1001, int(c.vocab), uint32_t(c.vocab + c.force));
    {
      ll::ShardWriter w(path, c.vocab, c.force);
      CHECK(w.bytes_per_token() == c.expect_bytes);
      // Appends in uneven pieces, as the tokenize tool does per document.
      w.append(ids.data(), 1);
      w.append(ids.data() + 1, 600);
      w.append(ids.data() + 601, 0);
      w.append(ids.data() + 601, ids.size() - 601);
      CHECK(w.n_tokens() == int64_t(ids.size()));
      w.commit();
      CHECK(w.n_tokens() == int64_t(ids.size()));
    }
    CHECK(std::filesystem::file_size(path) == 64 + ids.size() * size_t(c.expect_bytes));

    const std::string bytes = ll::test::read_file(path);
    CHECK(bytes.substr(0, 8) == "LLTOKSHD");
    CHECK(field<uint32_t>(bytes, 8) == 1);
    CHECK(field<uint32_t>(bytes, 12) == uint32_t(c.expect_bytes));
    CHECK(field<uint64_t>(bytes, 16) == ids.size());
    CHECK(field<uint64_t>(bytes, 24) == uint64_t(c.vocab));
    CHECK(field<uint64_t>(bytes, 32) == ll::fnv1a64(bytes.data() + 64, bytes.size() - 64));
    CHECK(bytes.substr(40, 24) == std::string(24, '\0'));

    const auto tf = ll::TokenFile::open(path, ll::TokenFileFormat::Shard, c.vocab);
    REQUIRE(tf.size() == int64_t(ids.size()));
    const std::vector<int32_t> back = tf.read(0, tf.size());
    CHECK(std::vector<int>(back.begin(), back.end()) == ids);
    CHECK(tf.read(600, 3) == std::vector<int32_t>{ids[600], ids[601], ids[602]});
  }
}

TEST_CASE("an empty shard is valid") {
  ll::test::ScratchDir dir("shard");
  const std::string path = dir.file("empty.shard");
  ll::ShardWriter w(path, 512);
  w.commit();
  CHECK(std::filesystem::file_size(path) == 64);
  CHECK(ll::TokenFile::open(path, ll::TokenFileFormat::Shard, 512).size() == 0);
}

TEST_CASE("the writer rejects ids outside the vocabulary and leaves no file without commit") {
  ll::test::ScratchDir dir("shard");
  const std::string path = dir.file("w.shard");
  {
    ll::ShardWriter w(path, 512);
    w.append(std::vector<int>{1, 2, 3});
    std::string msg = error_of([&] { w.append(std::vector<int>{4, 512}); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "token 4"));
    CHECK(contains(msg, "id 512"));
    msg = error_of([&] { w.append(std::vector<int>{-1}); });
    CHECK(contains(msg, "id -1"));
  }
  CHECK(std::filesystem::is_empty(dir.path()));  // neither the shard nor its temporary

  CHECK(contains(error_of([&] { ll::ShardWriter w(path, 70000, 2); }), "--dtype u32"));
  CHECK(contains(error_of([&] { ll::ShardWriter w(path, 512, 3); }), "got 3"));
  CHECK(contains(error_of([&] { ll::ShardWriter w(path, 0); }), path));
}

TEST_CASE("damaged shards are rejected with the file name and what is wrong") {
  ll::test::ScratchDir dir("shard");
  const std::string good_path = dir.file("good.shard");
  const std::string good = make_shard(good_path, 100);
  const std::string path = dir.file("bad.shard");
  auto open_damaged = [&](const std::string& bytes) {
    ll::test::write_file(path, bytes);
    return error_of([&] { ll::TokenFile::open(path, ll::TokenFileFormat::Shard, 1000); });
  };
  REQUIRE(error_of([&] { ll::TokenFile::open(good_path, ll::TokenFileFormat::Shard, 1000); }) ==
          "<no error>");

  SUBCASE("bad magic") {
    std::string b = good;
    b[0] = 'X';
    const std::string msg = open_damaged(b);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "LLTOKSHD"));
    CHECK(contains(msg, "raw-u16"));
  }
  SUBCASE("empty file") { CHECK(contains(open_damaged(""), path)); }
  SUBCASE("truncated header") {
    const std::string msg = open_damaged(good.substr(0, 40));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "truncated"));
  }
  SUBCASE("unsupported version") {
    std::string b = good;
    set_field<uint32_t>(b, 8, 2);
    const std::string msg = open_damaged(b);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "version 2"));
    CHECK(contains(msg, "supported versions: 1"));
  }
  SUBCASE("bad token size") {
    std::string b = good;
    set_field<uint32_t>(b, 12, 3);
    const std::string msg = open_damaged(b);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "3 bytes per token"));
  }
  SUBCASE("truncated tokens") {
    const std::string msg = open_damaged(good.substr(0, good.size() - 3));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "truncated"));
    CHECK(contains(msg, "100 tokens"));
  }
  SUBCASE("huge count cannot overflow the size check") {
    std::string b = good;
    set_field<uint64_t>(b, 16, ~uint64_t(0));
    CHECK(contains(open_damaged(b), "truncated"));
  }
  SUBCASE("trailing bytes") {
    const std::string msg = open_damaged(good + "xy");
    CHECK(contains(msg, path));
    CHECK(contains(msg, "2 trailing bytes"));
  }
  SUBCASE("checksum mismatch") {
    std::string b = good;
    b[64 + 2 * 50] ^= 0x01;  // one bit of token 50
    const std::string msg = open_damaged(b);
    CHECK(contains(msg, path));
    CHECK(contains(msg, "checksum mismatch"));
  }
  SUBCASE("id outside the reader's vocabulary") {
    const std::vector<int> ids{5, 17, 511, 700, 3};
    ll::ShardWriter w(path, 1000);
    w.append(ids);
    w.commit();
    const std::string msg =
        error_of([&] { ll::TokenFile::open(path, ll::TokenFileFormat::Shard, 512); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "token 3 has id 700"));
    CHECK(contains(msg, "512 ids"));
    CHECK(contains(msg, "made for a vocabulary of 1000"));
    CHECK(contains(msg, "tokenizer"));
  }
}
