#include "data/pcre2_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/error.h"

namespace ll {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? fmt::format("PCRE2 error {}", code) : std::string(reinterpret_cast<char*>(buffer));
}

}  // namespace

struct Pcre2Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string where;
  ~Impl() { pcre2_code_free(code); }
};

Pcre2Regex::Pcre2Regex(std::string_view pattern, const std::string& where)
    : impl_(std::make_unique<Impl>()) {
  impl_->where = where;
  int error = 0;
  PCRE2_SIZE offset = 0;
  // UCP: \s, \w, \d and POSIX classes follow Unicode properties, as Oniguruma's do in the
  // library. NO_UTF_CHECK at match time only: the pattern itself is checked here.
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  LL_CHECK(impl_->code != nullptr, "{}: PCRE2 rejects the regex at offset {}: {} (pattern: {})",
           where, offset, pcre2_message(error), pattern);
  // JIT is an optimisation: without it (unsupported CPU, no executable memory) matching still
  // works in the interpreter.
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

Pcre2Regex::~Pcre2Regex() = default;
Pcre2Regex::Pcre2Regex(Pcre2Regex&&) noexcept = default;
Pcre2Regex& Pcre2Regex::operator=(Pcre2Regex&&) noexcept = default;

std::vector<std::pair<size_t, size_t>> Pcre2Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
      pcre2_match_data_create_from_pattern(impl_->code, nullptr), &pcre2_match_data_free);
  LL_CHECK(md != nullptr, "{}: out of memory for PCRE2 match data", impl_->where);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(impl_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.get(),
                         nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter has more room
      rc = pcre2_match(impl_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       md.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    LL_CHECK(rc >= 0, "{}: PCRE2 failed on a text of {} bytes: {}", impl_->where, text.size(),
             pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      start = e;
    } else {  // empty match: skip one character
      if (b >= text.size()) break;
      start = b + 1;
      while (start < text.size() && (uint8_t(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
  return out;
}

}  // namespace ll
