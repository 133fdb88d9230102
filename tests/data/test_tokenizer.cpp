// The SentencePiece wrapper on the committed fixture (tests/reference/make_tokenizer.py).
#include <doctest/doctest.h>

#include "data/tokenizer.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;

TEST_CASE("fixture tokenizer has Llama-2's special ids and a 512-piece vocabulary") {
  const ll::Tokenizer tok(ll::test::fixture_tokenizer());
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
}

TEST_CASE("encode matches the Python sentencepiece reference and decodes back") {
  const ll::Tokenizer tok(ll::test::fixture_tokenizer());
  // Ids from python sentencepiece 0.2 on the same model (an independent implementation).
  CHECK(tok.encode("the license") == std::vector<int>{267, 310, 306});
  CHECK(tok.encode("héllo ✓") == std::vector<int>{406, 198, 172, 355, 431, 428, 229, 159, 150});

  for (const std::string text : {"Hello world, 12345", "héllo ✓ — ünïcode via byte fallback",
                                 "Line one.\nLine two.", "the GNU General Public License"}) {
    const std::vector<int> ids = tok.encode(text);
    REQUIRE(!ids.empty());
    CHECK(ids.front() != tok.bos_id());  // callers add BOS/EOS
    CHECK(ids.back() != tok.eos_id());
    for (int id : ids) CHECK((id >= 0 && id < tok.vocab_size()));
    CHECK(tok.decode(ids) == text);
  }
  CHECK(tok.encode("").empty());
}

TEST_CASE("a moved tokenizer keeps working") {
  ll::Tokenizer a(ll::test::fixture_tokenizer());
  ll::Tokenizer b(std::move(a));
  CHECK(b.encode("the license").size() == 3);
}

TEST_CASE("missing or bad tokenizer files and out-of-range ids are reported") {
  ll::test::ScratchDir dir("tokenizer");
  const std::string missing = dir.file("nope/tokenizer.model");
  std::string msg = error_of([&] { ll::Tokenizer t(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "--tokenizer"));

  const std::string junk = dir.file("tokenizer.model");
  ll::test::write_file(junk, "this is not a protobuf \xff\xfe");
  msg = error_of([&] { ll::Tokenizer t(junk); });
  CHECK(contains(msg, junk));
  CHECK(contains(msg, "SentencePiece"));

  const ll::Tokenizer tok(ll::test::fixture_tokenizer());
  msg = error_of([&] { tok.decode({5, 512}); });
  CHECK(contains(msg, "512"));
  CHECK(contains(msg, "position 1"));
}
