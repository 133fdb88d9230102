#pragma once
// Memory sizes people type and the host memory this machine has.
#include <cstdint>
#include <string>
#include <string_view>

namespace ll {

// "80GB", "80 GiB", "512G", "1.5TB", "4096MB", "123456" (bytes) -> bytes. K/M/G/T with or without
// a trailing B or iB all mean powers of 1024, as GPU and RAM sizes are quoted ("an 80 GB card"
// has 80 GiB). Throws ll::Error naming `what` for anything else or a size below 1 byte.
int64_t parse_byte_size(std::string_view text, std::string_view what);

// MemAvailable of /proc/meminfo in bytes: what the host can give a new allocation without
// swapping (-1 where it cannot be read).
int64_t host_memory_available();

}  // namespace ll
