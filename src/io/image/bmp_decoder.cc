// BMP: own parser, every offset and size checked against the file. Handles the uncompressed
// variants image tools write: 1/4/8-bit palette, 16/24/32-bit direct colour (BI_RGB and
// BI_BITFIELDS masks), bottom-up and top-down rows, OS/2 and Windows V1-V5 headers. RLE and
// embedded JPEG/PNG are refused as unsupported.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include "core/error.h"
#include "io/image/decoders.h"

namespace modex::image::detail {
namespace {

constexpr uint32_t kBiRgb = 0, kBiBitfields = 3, kBiAlphaBitfields = 6;

class Reader {
 public:
  Reader(std::span<const uint8_t> b, const std::string& name) : b_(b), name_(name) {}
  void need(uint64_t off, uint64_t n, const char* what) const {
    if (off > b_.size() || n > b_.size() - off) {
      throw Error(fmt::format("truncated BMP: {} needs bytes {}..{} of a {}-byte file", what, off, off + n, b_.size())).file(name_);
    }
  }
  uint32_t u16(uint64_t off) const {
    need(off, 2, "header");
    return b_[off] | (b_[off + 1] << 8);
  }
  uint32_t u32(uint64_t off) const { return u16(off) | (u16(off + 2) << 16); }
  int32_t i32(uint64_t off) const { return static_cast<int32_t>(u32(off)); }
  const uint8_t* at(uint64_t off) const { return b_.data() + off; }

 private:
  std::span<const uint8_t> b_;
  const std::string& name_;
};

// A channel described by a bit mask, scaled to 0..255.
struct Channel {
  uint32_t mask = 0;
  int shift = 0;
  uint64_t max = 0;
  explicit Channel(uint32_t m) : mask(m) {
    if (m) {
      shift = std::countr_zero(m);
      max = (uint64_t{m} >> shift);
    }
  }
  uint8_t operator()(uint32_t px) const {
    if (!max) return 0;
    const uint64_t v = (uint64_t{px} & mask) >> shift;
    return static_cast<uint8_t>(std::min<uint64_t>(255, (v * 255 + max / 2) / max));
  }
};

}  // namespace

Image decode_bmp(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options) {
  Reader r(bytes, name);
  const uint32_t data_offset = r.u32(10);
  const uint32_t header_size = r.u32(14);
  int64_t width, height;
  uint32_t bpp, compression = kBiRgb, colors_used = 0;
  uint32_t palette_entry_size = 4;
  if (header_size == 12) {  // OS/2 BITMAPCOREHEADER
    width = r.u16(18);
    height = r.u16(20);
    bpp = r.u16(24);
    palette_entry_size = 3;
  } else if (header_size >= 40 && header_size <= 1024) {
    width = r.i32(18);
    height = r.i32(22);
    bpp = r.u16(28);
    compression = r.u32(30);
    colors_used = r.u32(46);
  } else {
    throw Error(fmt::format("unsupported BMP header size {}", header_size), ErrorKind::kUnsupported).file(name);
  }
  const bool top_down = height < 0;
  if (top_down) height = -height;  // int64: INT32_MIN negates safely
  check_dimensions(width, height, name, options);

  Channel red(0x00ff0000), green(0x0000ff00), blue(0x000000ff);
  if (bpp == 16) red = Channel(0x7c00), green = Channel(0x03e0), blue = Channel(0x001f);
  if (compression == kBiBitfields || compression == kBiAlphaBitfields) {
    if (bpp != 16 && bpp != 32) throw Error(fmt::format("BMP bit-field masks with {} bits per pixel", bpp)).file(name);
    // Masks follow a 40-byte header, or sit inside a larger one at the same place.
    red = Channel(r.u32(54));
    green = Channel(r.u32(58));
    blue = Channel(r.u32(62));
  } else if (compression != kBiRgb) {
    throw Error(fmt::format("compressed BMP (compression {}) is not supported", compression), ErrorKind::kUnsupported)
        .file(name)
        .hint("save it uncompressed, or as PNG");
  }
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) {
    throw Error(fmt::format("unsupported BMP bit depth {}", bpp), ErrorKind::kUnsupported).file(name);
  }

  // Palette: after the header (and after the masks of a 40-byte BI_BITFIELDS header).
  std::vector<std::array<uint8_t, 3>> palette;
  if (bpp <= 8) {
    const uint32_t max_colors = 1u << bpp;
    const uint32_t n = colors_used == 0 || colors_used > max_colors ? max_colors : colors_used;
    const uint64_t start = 14 + uint64_t{header_size};
    // Some writers leave the palette short when the pixel data starts early: use what is there.
    const uint64_t room = data_offset > start ? (data_offset - start) / palette_entry_size : 0;
    const uint64_t count = std::min<uint64_t>(n, room);
    r.need(start, count * palette_entry_size, "palette");
    palette.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      const uint8_t* p = r.at(start + i * palette_entry_size);
      palette[i] = {p[2], p[1], p[0]};
    }
  }

  const uint64_t stride = (static_cast<uint64_t>(width) * bpp + 31) / 32 * 4;
  // The last row needs only its pixels, not its padding (some writers drop the final pad).
  const uint64_t last_row = (static_cast<uint64_t>(width) * bpp + 7) / 8;
  r.need(data_offset, stride * static_cast<uint64_t>(height - 1) + last_row, "pixel data");

  Image img;
  img.width = static_cast<int>(width);
  img.height = static_cast<int>(height);
  img.channels = 3;
  img.pixels.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  for (int64_t y = 0; y < height; ++y) {
    const int64_t file_row = top_down ? y : height - 1 - y;
    const uint8_t* row = r.at(data_offset + static_cast<uint64_t>(file_row) * stride);
    uint8_t* out = img.pixels.data() + static_cast<size_t>(y) * static_cast<size_t>(width) * 3;
    for (int64_t x = 0; x < width; ++x, out += 3) {
      switch (bpp) {
        case 1:
        case 4:
        case 8: {
          const uint64_t bit = static_cast<uint64_t>(x) * bpp;
          const uint32_t index = (row[bit / 8] >> (8 - bpp - bit % 8)) & ((1u << bpp) - 1);
          if (index < palette.size()) {
            std::memcpy(out, palette[index].data(), 3);
          } else {
            out[0] = out[1] = out[2] = 0;  // index past a short palette: black
          }
          break;
        }
        case 16: {
          const uint32_t px = row[2 * x] | (row[2 * x + 1] << 8);
          out[0] = red(px), out[1] = green(px), out[2] = blue(px);
          break;
        }
        case 24:
          out[0] = row[3 * x + 2], out[1] = row[3 * x + 1], out[2] = row[3 * x];
          break;
        case 32: {
          const uint8_t* p = row + 4 * x;
          const uint32_t px = p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24);
          out[0] = red(px), out[1] = green(px), out[2] = blue(px);
          break;
        }
      }
    }
  }
  return img;
}

}  // namespace modex::image::detail
