#include "model/formats/json_header.h"

#include <set>
#include <vector>

#include "common/error.h"

namespace ll {

size_t find_invalid_utf8(const uint8_t* s, size_t size) {
  size_t i = 0;
  while (i < size) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;  // a continuation byte or 0xf8..0xff where a sequence must start
    }
    if (size - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return size;
}

nlohmann::json parse_json_header(const uint8_t* bytes, size_t size, const std::string& path,
                                 const char* what) {
  using nlohmann::json;
  const size_t bad = find_invalid_utf8(bytes, size);
  LL_CHECK(bad == size,
           "{}: {} is not valid UTF-8 (byte 0x{:02x} at header offset {}); the file is damaged "
           "or not a model file",
           path, what, bad < size ? bytes[bad] : 0, bad);
  // One key set per open object; the first repeated key is reported after parsing so that no
  // exception crosses the parser.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string() &&
            !open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  json doc;
  const char* text = reinterpret_cast<const char*>(bytes);
  try {
    doc = json::parse(text, text + size, callback);
  } catch (const json::exception& e) {
    fail("{}: {} is not valid JSON ({}); the file is damaged or not a model file", path, what,
         e.what());
  }
  LL_CHECK(duplicate.empty(),
           "{}: {} has a duplicate key \"{}\" (a tensor or field listed twice); the file is "
           "damaged",
           path, what, duplicate);
  return doc;
}

std::vector<int64_t> parse_shape(const nlohmann::json* shape, const std::string& path,
                                 const std::string& tensor) {
  LL_CHECK(shape != nullptr && shape->is_array(),
           "{}: tensor \"{}\" has no shape list; the file is damaged", path, tensor);
  constexpr uint64_t kLimit = uint64_t(1) << 60;
  std::vector<int64_t> out;
  uint64_t product = 1;  // zeros counted as one
  for (const nlohmann::json& d : *shape) {
    LL_CHECK(d.is_number_integer(),
             "{}: tensor \"{}\" has a non-integer shape dimension ({}); the file is damaged", path,
             tensor, d.dump());
    LL_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0,
             "{}: tensor \"{}\" has a negative shape dimension ({}); the file is damaged", path,
             tensor, d.dump());
    const uint64_t dim = d.get<uint64_t>();
    LL_CHECK(dim < kLimit && !__builtin_mul_overflow(product, dim == 0 ? 1 : dim, &product) &&
                 product < kLimit,
             "{}: tensor \"{}\" shape {} overflows the element count; the file is damaged", path,
             tensor, shape->dump());
    out.push_back(int64_t(dim));
  }
  return out;
}

}  // namespace ll
