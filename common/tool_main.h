#pragma once
// The shared outer shell of every command-line tool: bad input becomes one clear
// "error: ..." line on stderr and exit status 1, never a crash or an uncaught exception.
#include <functional>

namespace ll {

// Runs body(); returns its exit code, or 1 after printing the error of an ll::Error,
// std::bad_alloc or other std::exception.
int run_tool(const char* tool_name, const std::function<int()>& body);

}  // namespace ll
