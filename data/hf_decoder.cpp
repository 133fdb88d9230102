#include "data/hf_decoder.h"

#include <charconv>

#include "common/error.h"
#include "data/byte_level.h"
#include "data/utf8.h"

namespace ll {

namespace {

using Tokens = std::vector<std::string>;

Tokens byte_level_decode(const Tokens& tokens) {
  std::string bytes;
  for (const std::string& t : tokens) {
    std::string mine;  // the token's bytes, when every character stands for one
    bool all = true;
    for (size_t i = 0; i < t.size() && all;) {
      const size_t n = utf8::valid_sequence_length(t, i);
      const auto b = n == 0 ? std::nullopt : byte_level::byte_of(utf8::decode_at(t, i, n));
      if (b) {
        mine += char(*b);
      } else {
        all = false;
      }
      i += n == 0 ? 1 : n;
    }
    bytes += all ? mine : t;
  }
  return {utf8::make_valid(bytes)};
}

Tokens byte_fallback_decode(const Tokens& tokens) {
  Tokens out;
  std::string pending;  // bytes of consecutive <0xNN> tokens
  const auto flush = [&] {
    if (pending.empty()) return;
    if (utf8::is_valid(pending)) {
      out.push_back(pending);
    } else {  // one U+FFFD per byte, as the library does
      for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
    }
    pending.clear();
  };
  for (const std::string& t : tokens) {
    unsigned value = 0;
    const bool is_byte = t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
                         std::from_chars(t.data() + 3, t.data() + 5, value, 16).ptr == t.data() + 5;
    if (is_byte) {
      pending += char(value);
    } else {
      flush();
      out.push_back(t);
    }
  }
  flush();
  return out;
}

// Strip: cut up to `start` leading and `stop` trailing copies of one character per token.
Tokens strip_decode(const Tokens& tokens, const std::string& c, int64_t start, int64_t stop) {
  Tokens out;
  for (const std::string& t : tokens) {
    std::string_view v = t;
    for (int64_t k = 0; k < start && v.starts_with(c); ++k) v.remove_prefix(c.size());
    for (int64_t k = 0; k < stop && v.ends_with(c); ++k) v.remove_suffix(c.size());
    out.emplace_back(v);
  }
  return out;
}

Tokens metaspace_decode(const Tokens& tokens, const std::string& rep, hf::PrependScheme scheme) {
  Tokens out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string s;
    const std::string& t = tokens[i];
    for (size_t at = 0; at < t.size();) {
      if (std::string_view(t).substr(at).starts_with(rep)) {
        // The first token's replacement characters are the prepended ones: dropped.
        if (!(i == 0 && scheme != hf::PrependScheme::Never)) s += ' ';
        at += rep.size();
      } else {
        s += t[at++];
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

struct HfDecoder::Step {
  hf::Decoder spec;
  std::unique_ptr<PatternReplacer> replace;
};

HfDecoder::HfDecoder(bool has_decoder, const std::vector<hf::Decoder>& steps,
                     const std::string& name)
    : has_decoder_(has_decoder) {
  for (size_t i = 0; i < steps.size(); ++i) {
    Step s{steps[i], nullptr};
    if (s.spec.kind == hf::Decoder::Kind::Replace) {
      s.replace = std::make_unique<PatternReplacer>(
          s.spec.pattern, s.spec.content,
          fmt::format("{}: decoder (step {}) Replace pattern", name, i));
    }
    steps_.push_back(std::move(s));
  }
}

HfDecoder::~HfDecoder() = default;
HfDecoder::HfDecoder(HfDecoder&&) noexcept = default;
HfDecoder& HfDecoder::operator=(HfDecoder&&) noexcept = default;

std::string HfDecoder::decode(Tokens tokens) const {
  using Kind = hf::Decoder::Kind;
  std::string out;
  if (!has_decoder_) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  for (const Step& s : steps_) {
    switch (s.spec.kind) {
      case Kind::ByteLevel:
        tokens = byte_level_decode(tokens);
        break;
      case Kind::Replace:
        for (std::string& t : tokens) t = s.replace->apply(t);
        break;
      case Kind::ByteFallback:
        tokens = byte_fallback_decode(tokens);
        break;
      case Kind::Fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {std::move(all)};
        break;
      }
      case Kind::Strip:
        tokens = strip_decode(tokens, s.spec.content, s.spec.start, s.spec.stop);
        break;
      case Kind::Metaspace:
        tokens = metaspace_decode(tokens, s.spec.replacement, s.spec.prepend_scheme);
        break;
    }
  }
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace ll
