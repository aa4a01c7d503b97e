#include "io/image/image.h"

#include <fmt/format.h>

#include <cstring>

#include "core/error.h"
#include "core/file_util.h"
#include "io/image/decoders.h"

namespace modex::image {

std::string_view format_name(Format f) {
  switch (f) {
    case Format::kJpeg: return "JPEG";
    case Format::kPng: return "PNG";
    case Format::kBmp: return "BMP";
    case Format::kUnknown: return "unknown";
  }
  return "unknown";
}

Format detect_format(std::span<const uint8_t> b) {
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return Format::kJpeg;
  if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) return Format::kPng;
  if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') return Format::kBmp;
  return Format::kUnknown;
}

namespace {

// Names the formats people most often feed by mistake, for a better message than "unknown".
std::string describe_unknown(std::span<const uint8_t> b) {
  auto starts = [&](std::string_view magic) {
    return b.size() >= magic.size() && std::memcmp(b.data(), magic.data(), magic.size()) == 0;
  };
  if (starts("GIF8")) return "GIF";
  if (starts("RIFF") && b.size() >= 12 && std::memcmp(b.data() + 8, "WEBP", 4) == 0) return "WebP";
  if (starts("II*") || starts("MM\0*")) return "TIFF";
  if (b.size() >= 12 && std::memcmp(b.data() + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
  return "";
}

}  // namespace

namespace detail {

void check_dimensions(int64_t width, int64_t height, const std::string& name, const DecodeOptions& options) {
  if (width <= 0 || height <= 0) throw Error(fmt::format("image has invalid size {}x{}", width, height)).file(name);
  // Both factors fit in 32 bits here (every format stores them in at most 32), so no overflow.
  if (width > (int64_t{1} << 31) || height > (int64_t{1} << 31) || width * height > options.max_pixels) {
    throw Error(fmt::format("image is {}x{} = {} pixels, more than the limit of {}", width, height, width * height,
                            options.max_pixels),
                ErrorKind::kUnsafe)
        .file(name)
        .hint("raise the pixel limit (DecodeOptions::max_pixels) if this image is genuine");
  }
}

}  // namespace detail

int exif_orientation(std::span<const uint8_t> t) {
  if (t.size() < 8) return 1;
  bool little;
  if (t[0] == 'I' && t[1] == 'I') {
    little = true;
  } else if (t[0] == 'M' && t[1] == 'M') {
    little = false;
  } else {
    return 1;
  }
  auto u16 = [&](size_t off) -> uint32_t {
    return little ? (t[off] | (t[off + 1] << 8)) : ((t[off] << 8) | t[off + 1]);
  };
  auto u32 = [&](size_t off) -> uint32_t {
    return little ? (u16(off) | (u16(off + 2) << 16)) : ((u16(off) << 16) | u16(off + 2));
  };
  if (u16(2) != 42) return 1;
  const uint64_t ifd = u32(4);
  if (ifd + 2 > t.size()) return 1;
  const uint32_t count = u16(static_cast<size_t>(ifd));
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t entry = ifd + 2 + uint64_t{12} * i;
    if (entry + 12 > t.size()) return 1;
    const size_t e = static_cast<size_t>(entry);
    if (u16(e) != 0x0112) continue;
    const uint32_t type = u16(e + 2);
    uint32_t value = 0;
    if (type == 3) {
      value = u16(e + 8);  // SHORT, left-justified in the value field
    } else if (type == 4) {
      value = u32(e + 8);
    }
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

Image apply_orientation(const Image& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int w = in.width, h = in.height, c = in.channels;
  const bool swap = orientation >= 5;
  Image out;
  out.width = swap ? h : w;
  out.height = swap ? w : h;
  out.channels = c;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sy = y, sx = x;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;
        case 3: sy = h - 1 - y; sx = w - 1 - x; break;
        case 4: sy = h - 1 - y; break;
        case 5: sy = x; sx = y; break;                    // transpose
        case 6: sy = h - 1 - x; sx = y; break;            // rotate 90 clockwise
        case 7: sy = h - 1 - x; sx = w - 1 - y; break;    // transverse
        case 8: sy = x; sx = w - 1 - y; break;            // rotate 90 counter-clockwise
      }
      const uint8_t* src = &in.pixels[(static_cast<size_t>(sy) * w + sx) * c];
      uint8_t* dst = &out.pixels[(static_cast<size_t>(y) * out.width + x) * c];
      std::memcpy(dst, src, static_cast<size_t>(c));
    }
  }
  return out;
}

Image decode_image(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options) {
  int orientation = 1;
  Image img;
  switch (detect_format(bytes)) {
    case Format::kJpeg: img = detail::decode_jpeg(bytes, name, options, orientation); break;
    case Format::kPng: img = detail::decode_png(bytes, name, options, orientation); break;
    case Format::kBmp: img = detail::decode_bmp(bytes, name, options); break;
    case Format::kUnknown: {
      if (bytes.empty()) throw Error("image file is empty").file(name);
      std::string what = describe_unknown(bytes);
      if (!what.empty()) {
        throw Error(what + " images are not supported", ErrorKind::kUnsupported).file(name).hint("convert to JPEG, PNG or BMP");
      }
      throw Error("not a JPEG, PNG or BMP image (unrecognised magic bytes)").file(name);
    }
  }
  if (options.apply_exif_orientation && orientation != 1) img = apply_orientation(img, orientation);
  return img;
}

Image load_image(const std::filesystem::path& path, const DecodeOptions& options) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes, path.string(), options);
}

}  // namespace modex::image
