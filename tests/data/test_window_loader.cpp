// WindowLoader: window contents, file order and shuffled order (a permutation per epoch fixed by
// seed and epoch), resume by seek(), epoch rollover, several files and directories, raw-u16
// files, and the errors for short data and bad positions.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/random.h"
#include "data/shard_format.h"
#include "data/window_loader.h"
#include "tests/data/scratch.h"
#include "tests/test_paths.h"

using ll::LoaderPosition;
using ll::TokenFileFormat;
using ll::WindowLoader;
using ll::test::contains;
using ll::test::error_of;

namespace {

constexpr int64_t kVocab = 1000;

std::vector<int> random_ids(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(0, vocab - 1);
  std::vector<int> ids(n);
  for (int& id : ids) id = dist(rng);
  return ids;
}

// A shard of n random ids; returns the ids.
std::vector<int> write_shard(const std::string& path, size_t n, uint32_t seed) {
  std::vector<int> ids = random_ids(n, int(kVocab), seed);
  ll::ShardWriter w(path, kVocab);
  w.append(ids);
  w.commit();
  return ids;
}

std::vector<int32_t> slice(const std::vector<int>& ids, int64_t start, int64_t n) {
  return std::vector<int32_t>(ids.begin() + start, ids.begin() + start + n);
}

// A temporary directory from fresh_temp_dir, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) : path(ll::test::fresh_temp_dir("window_" + name)) {}
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Reads `count` windows, returning the global window numbers in visiting order (checked against
// the contents the loader returns).
std::vector<int64_t> read_order(WindowLoader& loader, int64_t count,
                                const std::vector<std::vector<int32_t>>& window_contents) {
  std::vector<int64_t> order;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t w = loader.window_at(loader.position());
    const std::vector<int32_t> got = loader.next();
    REQUIRE(w >= 0);
    REQUIRE(w < int64_t(window_contents.size()));
    CHECK(got == window_contents[size_t(w)]);
    order.push_back(w);
  }
  return order;
}

bool is_permutation_of_all(std::vector<int64_t> order, int64_t w) {
  std::sort(order.begin(), order.end());
  std::vector<int64_t> all(static_cast<size_t>(w));
  std::iota(all.begin(), all.end(), int64_t(0));
  return order == all;
}

// The documented order, computed here from common/random.h: Fisher-Yates over 0..W-1 with
// SplitMix64 seeded with derive_seed(seed, epoch).
std::vector<int64_t> documented_order(uint64_t seed, int64_t epoch, int64_t w) {
  std::vector<int64_t> order(static_cast<size_t>(w));
  std::iota(order.begin(), order.end(), int64_t(0));
  ll::SplitMix64 rng{ll::derive_seed(seed, uint64_t(epoch))};
  for (int64_t i = w - 1; i >= 1; --i) {
    const int64_t j = int64_t(rng.below(uint64_t(i) + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

}  // namespace

TEST_CASE("one file, no shuffle: window k is tokens [k*N, (k+1)*N), in order, then rollover") {
  TempDir dir("single");
  const std::string path = dir.file("train.shard");
  const std::vector<int> ids = write_shard(path, 1000, 1);
  const int64_t n = 64;
  WindowLoader loader({path}, TokenFileFormat::Shard, kVocab, n, /*shuffle=*/false, 7);
  CHECK(loader.window_tokens() == n);
  CHECK(loader.windows_per_epoch() == 15);  // 1000 / 64; the 40-token tail is not used
  CHECK(loader.total_tokens() == 1000);
  CHECK(loader.position() == LoaderPosition{0, 0});
  for (int64_t k = 0; k < 15; ++k) {
    CAPTURE(k);
    CHECK(loader.window_at(loader.position()) == k);
    CHECK(loader.next() == slice(ids, k * n, n));
  }
  // Rollover: the next epoch starts again at window 0.
  CHECK(loader.position() == LoaderPosition{1, 0});
  CHECK(loader.next() == slice(ids, 0, n));
  CHECK(loader.position() == LoaderPosition{1, 1});
  CHECK(loader.window_at({5, 3}) == 3);
}

TEST_CASE("a file that is exactly whole windows uses its last token") {
  TempDir dir("exact");
  const std::string path = dir.file("t.shard");
  const std::vector<int> ids = write_shard(path, 128, 2);
  WindowLoader loader({path}, TokenFileFormat::Shard, kVocab, 32, false, 0);
  CHECK(loader.windows_per_epoch() == 4);
  for (int k = 0; k < 4; ++k) CHECK(loader.next() == slice(ids, 32 * k, 32));
  // A window as long as the whole file.
  WindowLoader whole({path}, TokenFileFormat::Shard, kVocab, 128, true, 3);
  CHECK(whole.windows_per_epoch() == 1);
  CHECK(whole.next() == slice(ids, 0, 128));
  CHECK(whole.next() == slice(ids, 0, 128));
  CHECK(whole.position() == LoaderPosition{2, 0});
}

TEST_CASE("shuffle: each epoch a permutation fixed by (seed, epoch)") {
  TempDir dir("shuffle");
  const std::string path = dir.file("train.shard");
  const int64_t n = 16;
  const std::vector<int> ids = write_shard(path, 16 * 50 + 5, 3);
  const int64_t w = 50;
  std::vector<std::vector<int32_t>> contents;
  for (int64_t k = 0; k < w; ++k) contents.push_back(slice(ids, k * n, n));

  WindowLoader a({path}, TokenFileFormat::Shard, kVocab, n, /*shuffle=*/true, 1234);
  REQUIRE(a.windows_per_epoch() == w);
  const std::vector<int64_t> e0 = read_order(a, w, contents);
  CHECK(a.position() == LoaderPosition{1, 0});
  const std::vector<int64_t> e1 = read_order(a, w, contents);
  const std::vector<int64_t> e2 = read_order(a, w, contents);
  CHECK(is_permutation_of_all(e0, w));
  CHECK(is_permutation_of_all(e1, w));
  CHECK(is_permutation_of_all(e2, w));
  CHECK(e0 != e1);
  CHECK(e1 != e2);
  std::vector<int64_t> identity(static_cast<size_t>(w));
  std::iota(identity.begin(), identity.end(), int64_t(0));
  CHECK(e0 != identity);

  // The order is the documented Fisher-Yates / SplitMix64 one.
  CHECK(e0 == documented_order(1234, 0, w));
  CHECK(e1 == documented_order(1234, 1, w));
  CHECK(e2 == documented_order(1234, 2, w));

  // Same seed, same order; another seed, another order.
  WindowLoader same({path}, TokenFileFormat::Shard, kVocab, n, true, 1234);
  CHECK(read_order(same, w, contents) == e0);
  WindowLoader other({path}, TokenFileFormat::Shard, kVocab, n, true, 1235);
  const std::vector<int64_t> o0 = read_order(other, w, contents);
  CHECK(is_permutation_of_all(o0, w));
  CHECK(o0 != e0);

  // window_at answers for any epoch without moving the loader.
  const LoaderPosition before = a.position();
  for (int64_t i = 0; i < w; ++i) CHECK(a.window_at({1, i}) == e1[size_t(i)]);
  CHECK(a.window_at({0, 7}) == e0[7]);
  CHECK(a.position() == before);
}

TEST_CASE("shuffle spreads windows over positions") {
  // Over many epochs every window comes first sometimes (a broken shuffle that leaves the
  // first element in place, or a fixed permutation, fails this).
  TempDir dir("spread");
  const std::string path = dir.file("t.shard");
  write_shard(path, 10 * 4, 4);
  WindowLoader loader({path}, TokenFileFormat::Shard, kVocab, 4, true, 99);
  REQUIRE(loader.windows_per_epoch() == 10);
  std::vector<int> first(10, 0);
  for (int64_t e = 0; e < 500; ++e) ++first[size_t(loader.window_at({e, 0}))];
  for (int c : first) {
    CHECK(c > 20);  // expected 50 each
    CHECK(c < 90);
  }
}

TEST_CASE("resume: seek to a saved position reproduces the uninterrupted stream") {
  TempDir dir("resume");
  const std::string a_path = dir.file("a.shard"), b_path = dir.file("b.shard");
  write_shard(a_path, 333, 5);
  write_shard(b_path, 200, 6);
  for (bool shuffle : {true, false}) {
    CAPTURE(shuffle);
    const std::vector<std::string> paths{a_path, b_path};
    WindowLoader straight(paths, TokenFileFormat::Shard, kVocab, 20, shuffle, 42);
    const int64_t w = straight.windows_per_epoch();
    CHECK(w == 16 + 10);
    std::vector<std::vector<int32_t>> stream;
    std::vector<LoaderPosition> positions;
    for (int64_t i = 0; i < 3 * w + 5; ++i) {
      positions.push_back(straight.position());
      stream.push_back(straight.next());
    }
    // Restart at several saved positions (mid-epoch, at an epoch boundary, later epochs) with
    // a fresh loader, as a resumed run does.
    for (size_t k : {size_t(0), size_t(11), size_t(w), size_t(w + 1), size_t(2 * w + 25)}) {
      CAPTURE(k);
      WindowLoader resumed(paths, TokenFileFormat::Shard, kVocab, 20, shuffle, 42);
      resumed.seek(positions[k]);
      CHECK(resumed.position() == positions[k]);
      for (size_t i = k; i < stream.size(); ++i) REQUIRE(resumed.next() == stream[i]);
      CHECK(resumed.position() == straight.position());
    }
    // Seeking backwards in the same loader (its cached epoch order is another epoch's).
    straight.seek(positions[3]);
    for (size_t i = 3; i < 3 + size_t(w); ++i) REQUIRE(straight.next() == stream[i]);
  }
}

TEST_CASE("several files: windows numbered in file order, never crossing a file") {
  TempDir dir("multi");
  const int64_t n = 64;
  const std::vector<int> a = write_shard(dir.file("a.shard"), 300, 7);  // 4 windows
  const std::vector<int> b = write_shard(dir.file("b.shard"), 130, 8);  // 2 windows
  const std::vector<int> s = write_shard(dir.file("s.shard"), 50, 9);   // shorter: 0 windows
  const std::vector<int> c = write_shard(dir.file("c.shard"), 64, 10);  // 1 window
  WindowLoader loader(
      {dir.file("a.shard"), dir.file("b.shard"), dir.file("s.shard"), dir.file("c.shard")},
      TokenFileFormat::Shard, kVocab, n, false, 0);
  CHECK(loader.windows_per_epoch() == 7);
  CHECK(loader.total_tokens() == 300 + 130 + 50 + 64);
  const std::vector<std::vector<int32_t>> want{slice(a, 0, n),   slice(a, 64, n), slice(a, 128, n),
                                               slice(a, 192, n), slice(b, 0, n),  slice(b, 64, n),
                                               slice(c, 0, n)};
  for (size_t k = 0; k < want.size(); ++k) {
    CAPTURE(k);
    CHECK(loader.next() == want[k]);
  }
  CHECK(loader.position() == LoaderPosition{1, 0});

  // Shuffled, the same 7 windows each epoch.
  WindowLoader shuffled(
      {dir.file("a.shard"), dir.file("b.shard"), dir.file("s.shard"), dir.file("c.shard")},
      TokenFileFormat::Shard, kVocab, n, true, 5);
  for (int epoch = 0; epoch < 3; ++epoch)
    CHECK(is_permutation_of_all(read_order(shuffled, 7, want), 7));
}

TEST_CASE("a directory: every regular file, sorted by name, not recursive") {
  TempDir dir("dir");
  const std::filesystem::path data = dir.path / "data";
  std::filesystem::create_directories(data / "nested");
  // Written out of name order; the nested file must not be read.
  const std::vector<int> c = write_shard((data / "c.shard").string(), 40, 11);
  const std::vector<int> a = write_shard((data / "a.shard").string(), 40, 12);
  const std::vector<int> b = write_shard((data / "b.shard").string(), 40, 13);
  write_shard((data / "nested" / "z.shard").string(), 400, 14);
  const int64_t n = 20;

  WindowLoader loader({data.string()}, TokenFileFormat::Shard, kVocab, n, false, 0);
  CHECK(loader.windows_per_epoch() == 6);
  CHECK(loader.total_tokens() == 120);
  for (const std::vector<int>* f : {&a, &b, &c}) {
    CHECK(loader.next() == slice(*f, 0, n));
    CHECK(loader.next() == slice(*f, n, n));
  }

  // A directory and a file together, in the order given.
  const std::string extra = dir.file("extra.shard");
  const std::vector<int> e = write_shard(extra, 20, 15);
  WindowLoader mixed({extra, data.string()}, TokenFileFormat::Shard, kVocab, n, false, 0);
  CHECK(mixed.windows_per_epoch() == 7);
  CHECK(mixed.next() == slice(e, 0, n));
  CHECK(mixed.next() == slice(a, 0, n));

  // A damaged file in the directory is an error naming it, not skipped.
  ll::test::write_file((data / "d.shard").string(), "not a shard");
  const std::string msg = error_of(
      [&] { WindowLoader bad({data.string()}, TokenFileFormat::Shard, kVocab, n, false, 0); });
  CHECK(contains(msg, "d.shard"));
}

TEST_CASE("raw-u16 files (the paper's .bin format)") {
  TempDir dir("raw");
  const std::string path = dir.file("validation.bin");
  std::vector<uint16_t> ids(100);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = uint16_t(65535 - 611 * i);
  std::string bytes(ids.size() * 2, '\0');
  std::memcpy(bytes.data(), ids.data(), bytes.size());
  ll::test::write_file(path, bytes);

  WindowLoader loader({path}, TokenFileFormat::RawU16, 65536, 30, false, 0);
  CHECK(loader.windows_per_epoch() == 3);
  CHECK(loader.total_tokens() == 100);
  for (int k = 0; k < 3; ++k) {
    const std::vector<int32_t> got = loader.next();
    REQUIRE(got.size() == 30);
    for (int i = 0; i < 30; ++i) CHECK(got[size_t(i)] == int32_t(ids[size_t(30 * k + i)]));
  }
  // Ids beyond the model's vocabulary are rejected when the loader opens the file.
  const std::string msg =
      error_of([&] { WindowLoader l({path}, TokenFileFormat::RawU16, 32000, 30, false, 0); });
  CHECK(contains(msg, "validation.bin"));
  CHECK(contains(msg, "32000"));
}

TEST_CASE("data shorter than one window is an error that says what to do") {
  TempDir dir("short");
  write_shard(dir.file("one.shard"), 50, 16);
  const std::string one = error_of([&] {
    WindowLoader l({dir.file("one.shard")}, TokenFileFormat::Shard, kVocab, 64, true, 0);
  });
  CAPTURE(one);
  CHECK(contains(one, "one.shard"));
  CHECK(contains(one, "50 tokens"));
  CHECK(contains(one, "-ctx 64"));
  CHECK(contains(one, "smaller -ctx"));
  CHECK(contains(one, "more data"));

  // Several files: 100 tokens in all, but each one shorter than the window.
  write_shard(dir.file("two.shard"), 50, 17);
  const std::string two = error_of([&] {
    WindowLoader l({dir.file("one.shard"), dir.file("two.shard")}, TokenFileFormat::Shard, kVocab,
                   64, true, 0);
  });
  CAPTURE(two);
  CHECK(contains(two, "100 tokens"));
  CHECK(contains(two, "-ctx 64"));
  CHECK(contains(two, "smaller -ctx"));
  CHECK(contains(two, "more data"));

  // Fewer in all than one window, over two files.
  const std::string both = error_of([&] {
    WindowLoader l({dir.file("one.shard"), dir.file("two.shard")}, TokenFileFormat::Shard, kVocab,
                   1000, true, 0);
  });
  CAPTURE(both);
  CHECK(contains(both, "100 tokens"));
  CHECK(contains(both, "-ctx 1000"));
  CHECK(contains(both, "smaller -ctx"));

  // An empty file.
  ll::test::write_file(dir.file("empty.bin"), "");
  const std::string empty = error_of([&] {
    WindowLoader l({dir.file("empty.bin")}, TokenFileFormat::RawU16, kVocab, 8, true, 0);
  });
  CAPTURE(empty);
  CHECK(contains(empty, "0 tokens"));
  CHECK(contains(empty, "-ctx 8"));
}

TEST_CASE("missing data: no paths, a missing path, an empty directory, a bad window size") {
  TempDir dir("missing");
  CHECK_THROWS_AS(WindowLoader({}, TokenFileFormat::Shard, kVocab, 8, true, 0), ll::Error);

  const std::string missing = error_of([&] {
    WindowLoader l({dir.file("nope.shard")}, TokenFileFormat::Shard, kVocab, 8, true, 0);
  });
  CHECK(contains(missing, "nope.shard"));
  CHECK(contains(missing, "no such file"));

  std::filesystem::create_directories(dir.path / "empty");
  const std::string empty = error_of([&] {
    WindowLoader l({(dir.path / "empty").string()}, TokenFileFormat::Shard, kVocab, 8, true, 0);
  });
  CHECK(contains(empty, "empty"));
  CHECK(contains(empty, "no files"));

  // A directory holding only a subdirectory has no files to read either.
  std::filesystem::create_directories(dir.path / "only_sub" / "sub");
  write_shard((dir.path / "only_sub" / "sub" / "x.shard").string(), 100, 18);
  CHECK_THROWS_AS(
      WindowLoader({(dir.path / "only_sub").string()}, TokenFileFormat::Shard, kVocab, 8, true, 0),
      ll::Error);

  write_shard(dir.file("ok.shard"), 100, 19);
  CHECK_THROWS_AS(WindowLoader({dir.file("ok.shard")}, TokenFileFormat::Shard, kVocab, 0, true, 0),
                  ll::Error);
  CHECK_THROWS_AS(WindowLoader({dir.file("ok.shard")}, TokenFileFormat::Shard, kVocab, -5, true, 0),
                  ll::Error);
}

TEST_CASE("out-of-range positions are rejected and leave the loader where it was") {
  TempDir dir("seek");
  write_shard(dir.file("t.shard"), 100, 20);
  for (bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    WindowLoader loader({dir.file("t.shard")}, TokenFileFormat::Shard, kVocab, 10, shuffle, 1);
    REQUIRE(loader.windows_per_epoch() == 10);
    loader.next();
    const LoaderPosition at{0, 1};
    REQUIRE(loader.position() == at);
    CHECK_THROWS_AS(loader.seek({0, 10}), ll::Error);
    CHECK_THROWS_AS(loader.seek({0, -1}), ll::Error);
    CHECK_THROWS_AS(loader.seek({-1, 0}), ll::Error);
    CHECK_THROWS_AS(loader.seek({3, 1000}), ll::Error);
    CHECK_THROWS_AS(loader.window_at({0, 10}), ll::Error);
    CHECK(loader.position() == at);
    const std::string msg = error_of([&] { loader.seek({2, 10}); });
    CHECK(contains(msg, "10 windows"));
    loader.seek({7, 9});  // the last window of a later epoch is fine
    CHECK(loader.position() == LoaderPosition{7, 9});
    loader.next();
    CHECK(loader.position() == LoaderPosition{8, 0});
  }
}
