// Sizes people type (--device-memory, --host-memory) and the host's available memory.
#include <doctest/doctest.h>

#include "common/byte_size.h"
#include "common/error.h"

using ll::parse_byte_size;

TEST_CASE("sizes with K, M, G, T are powers of 1024, with or without B or iB") {
  const int64_t gib = int64_t(1) << 30;
  CHECK(parse_byte_size("80GB", "x") == 80 * gib);
  CHECK(parse_byte_size("80 GiB", "x") == 80 * gib);
  CHECK(parse_byte_size("80g", "x") == 80 * gib);
  CHECK(parse_byte_size("1.5TB", "x") == 3 * (int64_t(1) << 39));
  CHECK(parse_byte_size("4096MB", "x") == 4 * gib);
  CHECK(parse_byte_size("64K", "x") == 65536);
  CHECK(parse_byte_size("123456", "x") == 123456);
  CHECK(parse_byte_size("7B", "x") == 7);
}

TEST_CASE("anything else is refused, naming the option") {
  for (const char* bad : {"", "GB", "80XB", "eighty", "-1GB", "0", "0.1", "nanGB", "1e30TB"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(parse_byte_size(bad, "--device-memory"),
                         doctest::Contains("--device-memory"), ll::Error);
  }
}

TEST_CASE("the host's available memory is read from /proc/meminfo") {
  const int64_t available = ll::host_memory_available();
  CHECK(available > (int64_t(1) << 20));  // every machine that runs the tests has a MiB
}
