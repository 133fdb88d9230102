#include "data/hf_normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "common/error.h"

namespace ll {

PatternReplacer::PatternReplacer(const hf::Pattern& pattern, std::string content,
                                 const std::string& where)
    : content_(std::move(content)) {
  if (pattern.regex) {
    regex_ = std::make_unique<Pcre2Regex>(pattern.text, where);
  } else {
    literal_ = pattern.text;
  }
}

std::string PatternReplacer::apply(const std::string& text) const {
  std::string out;
  size_t done = 0;
  if (regex_) {
    for (const auto& [b, e] : regex_->find_all(text)) {
      out.append(text, done, b - done);
      out += content_;
      done = e;
    }
  } else {
    for (size_t at = text.find(literal_); at != std::string::npos; at = text.find(literal_, done)) {
      out.append(text, done, at - done);
      out += content_;
      done = at + literal_.size();
    }
  }
  out.append(text, done, std::string::npos);
  return out;
}

struct HfNormalizer::Step {
  hf::Normalizer::Kind kind;
  const icu::Normalizer2* unicode = nullptr;  // NF* (owned by ICU)
  std::string prepend;
  std::unique_ptr<PatternReplacer> replace;
};

HfNormalizer::HfNormalizer(const std::vector<hf::Normalizer>& steps, const std::string& name) {
  using Kind = hf::Normalizer::Kind;
  for (size_t i = 0; i < steps.size(); ++i) {
    const hf::Normalizer& n = steps[i];
    Step s{n.kind, nullptr, n.prepend, nullptr};
    UErrorCode status = U_ZERO_ERROR;
    switch (n.kind) {
      case Kind::Nfc:
        s.unicode = icu::Normalizer2::getNFCInstance(status);
        break;
      case Kind::Nfd:
        s.unicode = icu::Normalizer2::getNFDInstance(status);
        break;
      case Kind::Nfkc:
        s.unicode = icu::Normalizer2::getNFKCInstance(status);
        break;
      case Kind::Nfkd:
        s.unicode = icu::Normalizer2::getNFKDInstance(status);
        break;
      case Kind::Prepend:
        break;
      case Kind::Replace:
        s.replace = std::make_unique<PatternReplacer>(
            n.pattern, n.content, fmt::format("{}: normalizer (step {}) Replace pattern", name, i));
        break;
    }
    LL_CHECK(U_SUCCESS(status), "{}: normalizer step {}: ICU has no Unicode normalizer: {}", name,
             i, u_errorName(status));
    steps_.push_back(std::move(s));
  }
}

HfNormalizer::~HfNormalizer() = default;
HfNormalizer::HfNormalizer(HfNormalizer&&) noexcept = default;
HfNormalizer& HfNormalizer::operator=(HfNormalizer&&) noexcept = default;

void HfNormalizer::apply(std::string& text) const {
  for (const Step& s : steps_) {
    if (s.unicode != nullptr) {
      UErrorCode status = U_ZERO_ERROR;
      const icu::UnicodeString in = icu::UnicodeString::fromUTF8(text);
      if (s.unicode->isNormalized(in, status) && U_SUCCESS(status)) continue;
      status = U_ZERO_ERROR;
      const icu::UnicodeString out = s.unicode->normalize(in, status);
      LL_CHECK(U_SUCCESS(status), "tokenizer: Unicode normalization failed: {}",
               u_errorName(status));
      text.clear();
      out.toUTF8String(text);
    } else if (s.replace) {
      text = s.replace->apply(text);
    } else if (!text.empty()) {  // Prepend leaves an empty piece empty
      text = s.prepend + text;
    }
  }
}

}  // namespace ll
