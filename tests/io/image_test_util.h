// Helpers for the image and dataset tests: a minimal BMP encoder (BMP is the one format whose
// bytes are simple enough to build by hand, so tests can make valid and damaged images without
// Python) and a temporary folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/image/image.h"
#include "io_test_util.h"

namespace modex::test {

inline void put_u16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xff);
  s += static_cast<char>((v >> 8) & 0xff);
}
inline void put_u32(std::string& s, uint32_t v) {
  put_u16(s, v & 0xffff);
  put_u16(s, v >> 16);
}

// A 24-bit bottom-up BMP of an RGB image.
inline std::string encode_bmp24(const image::Image& img) {
  const uint32_t stride = (static_cast<uint32_t>(img.width) * 3 + 3) / 4 * 4;
  std::string s = "BM";
  put_u32(s, 54 + stride * img.height);
  put_u32(s, 0);
  put_u32(s, 54);
  put_u32(s, 40);
  put_u32(s, static_cast<uint32_t>(img.width));
  put_u32(s, static_cast<uint32_t>(img.height));
  put_u16(s, 1);
  put_u16(s, 24);
  for (int i = 0; i < 6; ++i) put_u32(s, 0);
  for (int y = img.height - 1; y >= 0; --y) {
    std::string row;
    for (int x = 0; x < img.width; ++x) {
      row += static_cast<char>(img.at(y, x, 2));
      row += static_cast<char>(img.at(y, x, 1));
      row += static_cast<char>(img.at(y, x, 0));
    }
    row.resize(stride, '\0');
    s += row;
  }
  return s;
}

inline image::Image solid_image(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  image::Image img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < img.pixels.size(); i += 3) img.pixels[i] = r, img.pixels[i + 1] = g, img.pixels[i + 2] = b;
  return img;
}

inline image::Image pattern_image(int w, int h, uint32_t seed) {
  image::Image img;
  img.width = w;
  img.height = h;
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.pixels.push_back(static_cast<uint8_t>((x * 7 + y * 3 + c * 50 + rng() % 16) & 0xff));
  return img;
}

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("modex_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace modex::test
