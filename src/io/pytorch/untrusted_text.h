// Text taken from a file (names, keys, codes) on its way into an error message: control
// characters escaped so a hostile file cannot drive the user's terminal, and length capped.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace modex::pytorch {

inline std::string printable(std::string_view s, size_t max_length = 200) {
  std::string out;
  out.reserve(s.size() < max_length ? s.size() : max_length);
  for (size_t i = 0; i < s.size() && i < max_length; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_length) out += "...";
  return out;
}

}  // namespace modex::pytorch
