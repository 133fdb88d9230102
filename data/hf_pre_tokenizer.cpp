#include "data/hf_pre_tokenizer.h"

#include "common/error.h"
#include "data/byte_level.h"

namespace ll {

namespace {

// GPT-2's pattern, which ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Span {
  size_t begin, end;
  bool match;
};

// The library's SplitDelimiterBehavior applied to matched/unmatched spans.
std::vector<Span> apply_behavior(std::vector<Span> spans, hf::SplitBehavior behavior) {
  using B = hf::SplitBehavior;
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case B::Isolated:
      return spans;
    case B::Removed:
      for (const Span& s : spans)
        if (!s.match) out.push_back(s);
      return out;
    case B::MergedWithPrevious:
      for (const Span& s : spans) {
        if (s.match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.match;
      }
      return out;
    case B::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->match;
      }
      return {out.rbegin(), out.rend()};
    case B::Contiguous:
      for (const Span& s : spans) {
        if (s.match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.match;
      }
      return out;
  }
  return spans;
}

// Matched and unmatched spans covering `text`.
std::vector<Span> spans_of(const std::vector<std::pair<size_t, size_t>>& matches, size_t size,
                           bool invert) {
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) spans.push_back(Span{prev, b, invert});
    spans.push_back(Span{b, e, !invert});
    prev = e;
  }
  if (prev != size) spans.push_back(Span{prev, size, invert});
  return spans;
}

std::vector<std::pair<size_t, size_t>> find_literal(std::string_view text, std::string_view lit) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t at = text.find(lit); at != std::string_view::npos;
       at = text.find(lit, at + lit.size()))
    out.emplace_back(at, at + lit.size());
  return out;
}

}  // namespace

struct HfPreTokenizer::Step {
  hf::PreTokenizer spec;
  std::unique_ptr<Pcre2Regex> regex;  // Split with a Regex pattern; ByteLevel with use_regex
};

HfPreTokenizer::HfPreTokenizer(const std::vector<hf::PreTokenizer>& steps,
                               const std::string& name) {
  for (size_t i = 0; i < steps.size(); ++i) {
    Step s{steps[i], nullptr};
    const std::string where = fmt::format("{}: pre_tokenizer (step {})", name, i);
    if (s.spec.kind == hf::PreTokenizer::Kind::Split && s.spec.pattern.regex) {
      s.regex = std::make_unique<Pcre2Regex>(s.spec.pattern.text, where + " Split pattern");
    } else if (s.spec.kind == hf::PreTokenizer::Kind::ByteLevel && s.spec.use_regex) {
      s.regex = std::make_unique<Pcre2Regex>(kGpt2Regex, where + " ByteLevel regex");
    }
    steps_.push_back(std::move(s));
  }
}

HfPreTokenizer::~HfPreTokenizer() = default;
HfPreTokenizer::HfPreTokenizer(HfPreTokenizer&&) noexcept = default;
HfPreTokenizer& HfPreTokenizer::operator=(HfPreTokenizer&&) noexcept = default;

void HfPreTokenizer::run(std::string piece, bool at_start,
                         const std::function<void(std::string_view)>& word) const {
  run_from(0, std::move(piece), at_start, word);
}

void HfPreTokenizer::run_from(size_t step, std::string piece, bool at_start,
                              const std::function<void(std::string_view)>& word) const {
  if (piece.empty()) return;
  if (step == steps_.size()) {
    word(piece);
    return;
  }
  const Step& s = steps_[step];
  using Kind = hf::PreTokenizer::Kind;
  std::vector<Span> spans;
  switch (s.spec.kind) {
    case Kind::Split: {
      const auto matches =
          s.regex ? s.regex->find_all(piece) : find_literal(piece, s.spec.pattern.text);
      spans = apply_behavior(spans_of(matches, piece.size(), s.spec.invert), s.spec.behavior);
      break;
    }
    case Kind::ByteLevel: {
      if (s.spec.add_prefix_space && piece[0] != ' ') piece = " " + piece;
      if (s.regex) {
        spans = spans_of(s.regex->find_all(piece), piece.size(), false);
      } else {
        spans.push_back(Span{0, piece.size(), false});
      }
      for (const Span& sp : spans) {
        if (sp.end > sp.begin)
          run_from(step + 1,
                   byte_level::encode(std::string_view(piece).substr(sp.begin, sp.end - sp.begin)),
                   at_start && sp.begin == 0, word);
      }
      return;
    }
    case Kind::Metaspace: {
      const std::string& rep = s.spec.replacement;
      std::string text;
      text.reserve(piece.size() + rep.size());
      for (char c : piece) {
        if (c == ' ') {
          text += rep;
        } else {
          text += c;
        }
      }
      const bool prepend = s.spec.prepend_scheme == hf::PrependScheme::Always ||
                           (s.spec.prepend_scheme == hf::PrependScheme::First && at_start);
      if (prepend && !std::string_view(text).starts_with(rep)) text = rep + text;
      piece = std::move(text);
      if (s.spec.split) {
        spans = apply_behavior(spans_of(find_literal(piece, rep), piece.size(), false),
                               hf::SplitBehavior::MergedWithNext);
      } else {
        spans.push_back(Span{0, piece.size(), false});
      }
      break;
    }
  }
  for (const Span& sp : spans) {
    if (sp.end > sp.begin)
      run_from(step + 1, piece.substr(sp.begin, sp.end - sp.begin), at_start && sp.begin == 0,
               word);
  }
}

}  // namespace ll
