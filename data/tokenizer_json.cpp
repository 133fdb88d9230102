#include "data/tokenizer_json.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "data/utf8.h"

namespace ll::hf {

namespace {

using json = nlohmann::json;

constexpr uintmax_t kMaxFileBytes = uintmax_t(1) << 30;  // real ones are under 20 MB

// Typed access to the fields of one JSON object; messages name the file and the field path
// ("model.vocab", "added_tokens[3].id").
class Fields {
 public:
  Fields(const json& object, std::string path, const std::string& file)
      : o_(object), path_(std::move(path)), file_(file) {
    LL_CHECK(o_.is_object(), "{}: {}: expected an object, got {}", file_, path_, o_.type_name());
  }

  std::string at(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  bool has(const char* key) const { return o_.contains(key) && !o_.at(key).is_null(); }
  const json& get(const char* key) const {
    LL_CHECK(o_.contains(key), "{}: {}: missing", file_, at(key));
    return o_.at(key);
  }
  std::string str(const char* key) const {
    const json& v = get(key);
    LL_CHECK(v.is_string(), "{}: {}: expected a string, got {}", file_, at(key), v.type_name());
    const std::string s = v.get<std::string>();
    return s;
  }
  std::optional<std::string> opt_str(const char* key) const {
    if (!has(key)) return std::nullopt;
    return str(key);
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = o_.at(key);
    LL_CHECK(v.is_boolean(), "{}: {}: expected true or false, got {}", file_, at(key),
             v.type_name());
    return v.get<bool>();
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi) const {
    return checked_integer(get(key), at(key), lo, hi);
  }
  int64_t checked_integer(const json& v, const std::string& where, int64_t lo, int64_t hi) const {
    LL_CHECK(v.is_number_integer(), "{}: {}: expected an integer, got {}", file_, where,
             v.is_number() ? "a fraction or a huge number" : v.type_name());
    // Integers beyond int64 parse as unsigned (or as floats, refused above).
    LL_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(hi),
             "{}: {}: {} is out of range [{}, {}]", file_, where, v.dump(), lo, hi);
    const int64_t x = v.get<int64_t>();
    LL_CHECK(x >= lo && x <= hi, "{}: {}: {} is out of range [{}, {}]", file_, where, x, lo, hi);
    return x;
  }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }

 private:
  const json& o_;
  std::string path_;
  const std::string& file_;
};

std::string type_of(const Fields& f) { return f.str("type"); }

Pattern read_pattern(const Fields& f) {
  const Fields p(f.get("pattern"), f.at("pattern"), f.file());
  Pattern out;
  if (p.has("Regex")) {
    out.regex = true;
    out.text = p.str("Regex");
  } else if (p.has("String")) {
    out.text = p.str("String");
    LL_CHECK(!out.text.empty(), "{}: {}: an empty String pattern matches nothing useful", f.file(),
             p.at("String"));
  } else {
    fail("{}: {}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", f.file(), f.at("pattern"));
  }
  return out;
}

// One character (code point) as UTF-8.
std::string one_char(const Fields& f, const char* key) {
  const std::string s = f.str(key);
  LL_CHECK(!s.empty() && utf8::valid_sequence_length(s, 0) == s.size(),
           "{}: {}: expected one character, got \"{}\"", f.file(), f.at(key), s);
  return s;
}

PrependScheme read_prepend_scheme(const Fields& f) {
  if (!f.has("prepend_scheme")) {
    // Files from before prepend_scheme existed carry add_prefix_space instead.
    return f.boolean("add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
  }
  const std::string s = f.str("prepend_scheme");
  if (s == "always") return PrependScheme::Always;
  if (s == "first") return PrependScheme::First;
  if (s == "never") return PrependScheme::Never;
  fail("{}: {}: unknown prepend_scheme \"{}\" (always, first or never)", f.file(),
       f.at("prepend_scheme"), s);
}

void read_normalizer(const json& j, const std::string& path, const std::string& file,
                     std::vector<Normalizer>& out) {
  if (j.is_null()) return;
  const Fields f(j, path, file);
  const std::string type = type_of(f);
  Normalizer n;
  if (type == "Sequence") {
    const json& list = f.get("normalizers");
    LL_CHECK(list.is_array(), "{}: {}: expected an array", file, f.at("normalizers"));
    for (size_t i = 0; i < list.size(); ++i)
      read_normalizer(list[i], fmt::format("{}[{}]", f.at("normalizers"), i), file, out);
    return;
  } else if (type == "NFC") {
    n.kind = Normalizer::Kind::Nfc;
  } else if (type == "NFD") {
    n.kind = Normalizer::Kind::Nfd;
  } else if (type == "NFKC") {
    n.kind = Normalizer::Kind::Nfkc;
  } else if (type == "NFKD") {
    n.kind = Normalizer::Kind::Nfkd;
  } else if (type == "Prepend") {
    n.kind = Normalizer::Kind::Prepend;
    n.prepend = f.str("prepend");
  } else if (type == "Replace") {
    n.kind = Normalizer::Kind::Replace;
    n.pattern = read_pattern(f);
    n.content = f.str("content");
  } else {
    fail(
        "{}: {}.type: the normalizer \"{}\" is not supported (supported: Sequence, NFC, NFD, "
        "NFKC, NFKD, Prepend, Replace)",
        file, path, type);
  }
  out.push_back(std::move(n));
}

SplitBehavior read_behavior(const Fields& f) {
  const std::string s = f.str("behavior");
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  fail("{}: {}: unknown split behavior \"{}\"", f.file(), f.at("behavior"), s);
}

void read_pre_tokenizer(const json& j, const std::string& path, const std::string& file,
                        std::vector<PreTokenizer>& out) {
  if (j.is_null()) return;
  const Fields f(j, path, file);
  const std::string type = type_of(f);
  PreTokenizer p;
  if (type == "Sequence") {
    const json& list = f.get("pretokenizers");
    LL_CHECK(list.is_array(), "{}: {}: expected an array", file, f.at("pretokenizers"));
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(list[i], fmt::format("{}[{}]", f.at("pretokenizers"), i), file, out);
    return;
  } else if (type == "Split") {
    p.kind = PreTokenizer::Kind::Split;
    p.pattern = read_pattern(f);
    p.behavior = read_behavior(f);
    p.invert = f.boolean("invert", false);
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::ByteLevel;
    p.add_prefix_space = f.boolean("add_prefix_space", true);
    p.use_regex = f.boolean("use_regex", true);
    f.boolean("trim_offsets", true);  // offsets only: checked for type, no effect on ids
  } else if (type == "Metaspace") {
    p.kind = PreTokenizer::Kind::Metaspace;
    p.replacement = one_char(f, "replacement");
    p.prepend_scheme = read_prepend_scheme(f);
    p.split = f.boolean("split", true);
  } else {
    fail(
        "{}: {}.type: the pre-tokenizer \"{}\" is not supported (supported: Sequence, Split, "
        "ByteLevel, Metaspace)",
        file, path, type);
  }
  out.push_back(std::move(p));
}

void read_decoder(const json& j, const std::string& path, const std::string& file,
                  std::vector<Decoder>& out) {
  const Fields f(j, path, file);
  const std::string type = type_of(f);
  Decoder d;
  if (type == "Sequence") {
    const json& list = f.get("decoders");
    LL_CHECK(list.is_array(), "{}: {}: expected an array", file, f.at("decoders"));
    for (size_t i = 0; i < list.size(); ++i)
      read_decoder(list[i], fmt::format("{}[{}]", f.at("decoders"), i), file, out);
    return;
  } else if (type == "ByteLevel") {
    d.kind = Decoder::Kind::ByteLevel;
  } else if (type == "Replace") {
    d.kind = Decoder::Kind::Replace;
    d.pattern = read_pattern(f);
    d.content = f.str("content");
  } else if (type == "ByteFallback") {
    d.kind = Decoder::Kind::ByteFallback;
  } else if (type == "Fuse") {
    d.kind = Decoder::Kind::Fuse;
  } else if (type == "Strip") {
    d.kind = Decoder::Kind::Strip;
    d.content = one_char(f, "content");
    d.start = f.integer("start", 0, 1 << 20);
    d.stop = f.integer("stop", 0, 1 << 20);
  } else if (type == "Metaspace") {
    d.kind = Decoder::Kind::Metaspace;
    d.replacement = one_char(f, "replacement");
    d.prepend_scheme = read_prepend_scheme(f);
  } else {
    fail(
        "{}: {}.type: the decoder \"{}\" is not supported (supported: Sequence, ByteLevel, "
        "Replace, ByteFallback, Fuse, Strip, Metaspace)",
        file, path, type);
  }
  out.push_back(std::move(d));
}

// post_processor: only whether a single sequence starts with a special token matters (the
// family's BOS); the processors that add anything else are refused.
void read_post_processor(const json& j, const std::string& path, const std::string& file,
                         std::optional<std::string>& prefix) {
  if (j.is_null()) return;
  const Fields f(j, path, file);
  const std::string type = type_of(f);
  if (type == "Sequence") {
    const json& list = f.get("processors");
    LL_CHECK(list.is_array(), "{}: {}: expected an array", file, f.at("processors"));
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(list[i], fmt::format("{}[{}]", f.at("processors"), i), file, prefix);
  } else if (type == "TemplateProcessing") {
    const json& single = f.get("single");
    LL_CHECK(single.is_array(), "{}: {}: expected an array", file, f.at("single"));
    if (!single.empty() && single[0].is_object() && single[0].contains("SpecialToken")) {
      const Fields s(single[0].at("SpecialToken"), f.at("single") + "[0].SpecialToken", file);
      prefix = s.str("id");
    }
  } else if (type != "ByteLevel") {
    fail(
        "{}: {}.type: the post-processor \"{}\" is not supported (supported: ByteLevel, "
        "TemplateProcessing, Sequence)",
        file, path, type);
  }
}

BpeModel read_model(const json& j, const std::string& file) {
  const Fields f(j, "model", file);
  // Old files omit the type of a BPE model; other models have no "merges".
  const std::string type = f.has("type") ? type_of(f) : f.has("merges") ? "BPE" : "";
  LL_CHECK(type == "BPE",
           "{}: model.type: the model \"{}\" is not supported (only BPE: the byte-level form of "
           "Llama-3/Qwen2.5/Mistral-Nemo and the byte-fallback form of Llama-2)",
           file, type.empty() ? "(none)" : type);
  BpeModel m;
  if (f.has("dropout")) {
    const json& d = f.get("dropout");
    LL_CHECK(d.is_number() && d.get<double>() == 0.0,
             "{}: model.dropout: BPE dropout ({}) makes encoding random; only null or 0 is "
             "supported",
             file, d.dump());
  }
  m.unk_token = f.opt_str("unk_token");
  m.continuing_subword_prefix = f.opt_str("continuing_subword_prefix").value_or("");
  m.end_of_word_suffix = f.opt_str("end_of_word_suffix").value_or("");
  m.fuse_unk = f.boolean("fuse_unk", false);
  m.byte_fallback = f.boolean("byte_fallback", false);
  m.ignore_merges = f.boolean("ignore_merges", false);

  const json& vocab = f.get("vocab");
  LL_CHECK(vocab.is_object(), "{}: model.vocab: expected an object of piece: id, got {}", file,
           vocab.type_name());
  LL_CHECK(!vocab.empty(), "{}: model.vocab: empty", file);
  m.vocab.reserve(vocab.size());
  std::unordered_map<int64_t, std::string> seen;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string where = fmt::format("model.vocab[\"{}\"]", it.key());
    const int64_t id = f.checked_integer(it.value(), where, 0, kMaxTokenId);
    const auto [prev, fresh] = seen.emplace(id, it.key());
    LL_CHECK(fresh, "{}: {}: id {} is also the id of \"{}\"; every piece needs its own id", file,
             where, id, prev->second);
    m.vocab.emplace_back(it.key(), int32_t(id));
  }
  if (m.unk_token) {
    LL_CHECK(vocab.contains(*m.unk_token), "{}: model.unk_token: \"{}\" is not in model.vocab",
             file, *m.unk_token);
  }

  const json& merges = f.get("merges");
  LL_CHECK(merges.is_array(), "{}: model.merges: expected an array, got {}", file,
           merges.type_name());
  m.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& mj = merges[i];
    std::pair<std::string, std::string> merge;
    if (mj.is_string()) {  // "a b": exactly one space, as the library requires
      const std::string s = mj.get<std::string>();
      const size_t sp = s.find(' ');
      LL_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
               "{}: model.merges[{}]: \"{}\" is not two pieces separated by one space", file, i, s);
      merge = {s.substr(0, sp), s.substr(sp + 1)};
    } else {
      LL_CHECK(mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string(),
               "{}: model.merges[{}]: expected \"a b\" or [\"a\", \"b\"], got {}", file, i,
               mj.dump().substr(0, 80));
      merge = {mj[0].get<std::string>(), mj[1].get<std::string>()};
    }
    for (const std::string* piece : {&merge.first, &merge.second}) {
      LL_CHECK(vocab.contains(*piece), "{}: model.merges[{}]: \"{}\" is not in model.vocab", file,
               i, *piece);
    }
    m.merges.push_back(std::move(merge));
  }
  return m;
}

std::vector<AddedToken> read_added_tokens(const json& j, const std::string& file) {
  std::vector<AddedToken> out;
  if (j.is_null()) return out;
  LL_CHECK(j.is_array(), "{}: added_tokens: expected an array, got {}", file, j.type_name());
  std::unordered_map<std::string, int32_t> by_content;
  std::unordered_map<int32_t, std::string> by_id;
  for (size_t i = 0; i < j.size(); ++i) {
    const Fields f(j[i], fmt::format("added_tokens[{}]", i), file);
    AddedToken t;
    t.id = int32_t(f.integer("id", 0, kMaxTokenId));
    t.content = f.str("content");
    LL_CHECK(!t.content.empty(), "{}: {}: empty content", file, f.at("content"));
    LL_CHECK(utf8::is_valid(t.content), "{}: {}: not valid UTF-8", file, f.at("content"));
    t.single_word = f.boolean("single_word", false);
    t.lstrip = f.boolean("lstrip", false);
    t.rstrip = f.boolean("rstrip", false);
    t.special = f.boolean("special", false);
    t.normalized = f.boolean("normalized", !t.special);
    const auto [c, fresh_content] = by_content.emplace(t.content, t.id);
    LL_CHECK(fresh_content, "{}: {}: \"{}\" is listed twice", file, f.path(), t.content);
    const auto [d, fresh_id] = by_id.emplace(t.id, t.content);
    LL_CHECK(fresh_id, "{}: {}: id {} is also the id of added token \"{}\"", file, f.at("id"), t.id,
             d->second);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& name) {
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON (truncated or damaged?) at byte {}: {}", name, e.byte, e.what());
  }
  const Fields top(doc, "", name);
  if (top.has("version")) {
    const std::string v = top.str("version");
    LL_CHECK(v == "1.0",
             "{}: version: \"{}\" is not a tokenizer.json version this engine reads "
             "(1.0)",
             name, v);
  }
  TokenizerJson t;
  t.model = read_model(top.get("model"), name);
  read_normalizer(top.has("normalizer") ? top.get("normalizer") : json(), "normalizer", name,
                  t.normalizers);
  read_pre_tokenizer(top.has("pre_tokenizer") ? top.get("pre_tokenizer") : json(), "pre_tokenizer",
                     name, t.pre_tokenizers);
  if (top.has("decoder")) {
    t.has_decoder = true;
    read_decoder(top.get("decoder"), "decoder", name, t.decoders);
  }
  read_post_processor(top.has("post_processor") ? top.get("post_processor") : json(),
                      "post_processor", name, t.template_prefix_token);
  t.added_tokens =
      read_added_tokens(top.has("added_tokens") ? top.get("added_tokens") : json(), name);
  return t;
}

TokenizerJson read_tokenizer_json(const std::string& path) {
  std::error_code ec;
  LL_CHECK(std::filesystem::is_regular_file(path, ec), "{}: no such tokenizer.json file", path);
  const uintmax_t size = std::filesystem::file_size(path, ec);
  LL_CHECK(!ec && size <= kMaxFileBytes, "{}: {} bytes is too large for a tokenizer.json", path,
           size);
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot read: {}", path, std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LL_CHECK(!in.bad(), "{}: cannot read: {}", path, std::strerror(errno));
  return parse_tokenizer_json(text, path);
}

}  // namespace ll::hf
