// Text inputs for tokenization: .txt, .jsonl and directories, and their error messages.
#include <doctest/doctest.h>

#include "data/text_sources.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;
using ll::test::write_file;

namespace {

std::vector<ll::Document> read_all(const std::vector<std::string>& inputs) {
  ll::DocumentReader reader(inputs);
  std::vector<ll::Document> docs;
  ll::Document doc;
  while (reader.next(doc)) docs.push_back(doc);
  return docs;
}

std::vector<std::string> texts(const std::vector<ll::Document>& docs) {
  std::vector<std::string> out;
  for (const auto& d : docs) out.push_back(d.text);
  return out;
}

}  // namespace

TEST_CASE("jsonl: one document per line, blank lines skipped, other fields ignored") {
  ll::test::ScratchDir dir("text");
  const std::string path = dir.file("docs.jsonl");
  write_file(path,
             "{\"text\": \"first doc\", \"meta\": {\"source\": \"x\"}}\n"
             "\n"
             "   \r\n"
             "{\"id\": 3, \"text\": \"line\\nbreak and \\u00e9\"}\r\n"
             "{\"text\": \"\"}\n"
             "{\"text\": \"no final newline\"}");
  ll::DocumentReader reader({path});
  std::vector<ll::Document> docs;
  ll::Document doc;
  while (reader.next(doc)) docs.push_back(doc);
  CHECK(texts(docs) ==
        std::vector<std::string>{"first doc", "line\nbreak and \xc3\xa9", "", "no final newline"});
  CHECK(docs[0].source == path + ":1");
  CHECK(docs[1].source == path + ":4");
  CHECK(reader.files() == std::vector<std::string>{path});
  CHECK(reader.input_bytes_total() == int64_t(ll::test::read_file(path).size()));
  CHECK(reader.text_bytes() == int64_t(9 + 17 + 16));
  CHECK_FALSE(reader.next(doc));  // stays at the end
}

TEST_CASE("txt: the whole file is one document, bytes unchanged") {
  ll::test::ScratchDir dir("text");
  const std::string body = "Chapter 1\n\nIt was a dark and stormy night.\n\xe2\x9c\x93\n";
  write_file(dir.file("book.txt"), body);
  const auto docs = read_all({dir.file("book.txt")});
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].text == body);
  CHECK(docs[0].source == dir.file("book.txt"));
}

TEST_CASE("a named file without .jsonl is plain text (e.g. /usr/share/common-licenses/GPL-3)") {
  ll::test::ScratchDir dir("text");
  write_file(dir.file("GPL-3"), "GNU GENERAL PUBLIC LICENSE\n");
  write_file(dir.file("notes.md"), "# notes\n");
  CHECK(texts(read_all({dir.file("GPL-3"), dir.file("notes.md")})) ==
        std::vector<std::string>{"GNU GENERAL PUBLIC LICENSE\n", "# notes\n"});

  write_file(dir.file("utf16.txt"), std::string("h\0i\0", 4));
  const std::string msg = error_of([&] { read_all({dir.file("utf16.txt")}); });
  CHECK(contains(msg, dir.file("utf16.txt")));
  CHECK(contains(msg, "byte 1 is NUL"));
}

TEST_CASE("directories: recursive, sorted, only .txt/.jsonl, hidden names skipped") {
  ll::test::ScratchDir dir("text");
  write_file(dir.file("corpus/b.txt"), "B");
  write_file(dir.file("corpus/a/z.jsonl"), "{\"text\": \"AZ1\"}\n{\"text\": \"AZ2\"}\n");
  write_file(dir.file("corpus/a/y.TXT"), "AY");
  write_file(dir.file("corpus/c.md"), "not text input");
  write_file(dir.file("corpus/.hidden.txt"), "hidden");
  write_file(dir.file("corpus/.cache/x.txt"), "cached");
  write_file(dir.file("single.txt"), "S");

  CHECK(ll::expand_text_inputs({dir.file("corpus"), dir.file("single.txt")}) ==
        std::vector<std::string>{dir.file("corpus/a/y.TXT"), dir.file("corpus/a/z.jsonl"),
                                 dir.file("corpus/b.txt"), dir.file("single.txt")});
  CHECK(texts(read_all({dir.file("corpus"), dir.file("single.txt")})) ==
        std::vector<std::string>{"AY", "AZ1", "AZ2", "B", "S"});
}

TEST_CASE("jsonl errors name the file and the line") {
  ll::test::ScratchDir dir("text");
  const std::string path = dir.file("bad.jsonl");
  auto error_after_reading = [&](const std::string& content) {
    write_file(path, content);
    return error_of([&] { read_all({path}); });
  };

  SUBCASE("malformed line") {
    const std::string msg = error_after_reading(
        "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n{\"text\": \"x\"}\n");
    CHECK(contains(msg, path + ":3"));
    CHECK(contains(msg, "malformed JSON"));
  }
  SUBCASE("missing text field") {
    const std::string msg = error_after_reading("{\"text\": \"ok\"}\n{\"content\": \"x\"}\n");
    CHECK(contains(msg, path + ":2"));
    CHECK(contains(msg, "no \"text\" field"));
  }
  SUBCASE("text is not a string") {
    const std::string msg = error_after_reading("{\"text\": 12}\n");
    CHECK(contains(msg, path + ":1"));
    CHECK(contains(msg, "number"));
  }
  SUBCASE("line is not an object") {
    const std::string msg = error_after_reading("[\"text\"]\n");
    CHECK(contains(msg, path + ":1"));
    CHECK(contains(msg, "array"));
  }
}

TEST_CASE("bad inputs: missing path, binary formats, directory without text") {
  ll::test::ScratchDir dir("text");
  std::string msg = error_of([&] { ll::expand_text_inputs({dir.file("nope.txt")}); });
  CHECK(contains(msg, dir.file("nope.txt")));
  CHECK(contains(msg, "no such file"));

  for (const char* name : {"data.parquet", "alpaca.json", "corpus.jsonl.gz"}) {
    write_file(dir.file(name), "PAR1");
    msg = error_of([&] { ll::expand_text_inputs({dir.file(name)}); });
    CHECK(contains(msg, dir.file(name)));
    CHECK(contains(msg, ".jsonl"));
  }

  write_file(dir.file("empty/readme.md"), "x");
  msg = error_of([&] { ll::expand_text_inputs({dir.file("empty")}); });
  CHECK(contains(msg, dir.file("empty")));
  CHECK(contains(msg, "no .txt or .jsonl"));

  CHECK(contains(error_of([] { ll::expand_text_inputs({}); }), "no input"));
}
