#pragma once
// Errors the user can act on. Code that detects bad input throws ll::Error with a message
// naming the file or value and what to do; tools catch it, print it and exit non-zero.
#include <fmt/format.h>
#include <stdexcept>
#include <string>
#include <utility>

namespace ll {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace ll

// LL_CHECK(cond, "format {}", args...): throw ll::Error with the message when cond is false.
#define LL_CHECK(cond, ...)               \
  do {                                    \
    if (!(cond)) ::ll::fail(__VA_ARGS__); \
  } while (0)
