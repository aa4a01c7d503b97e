// Still images from untrusted bytes: JPEG (libjpeg-turbo), PNG (libpng) and BMP (own parser),
// always decoded to 8-bit RGB, top row first, EXIF orientation applied. Every size is checked
// against the header before anything is allocated; corrupt or truncated data throws modex::Error
// naming the file, never aborts.
//
// Conversions, chosen to match what Pillow's Image.open(...).convert("RGB") gives (the reference
// the calibration and prediction data is compared against):
//   grayscale           -> R = G = B
//   alpha (RGBA, LA)    -> dropped, not composited (Pillow's RGBA->RGB conversion does the same)
//   16-bit PNG samples  -> the high byte (what Pillow does for 16-bit RGB; for 16-bit grayscale
//                          Pillow clamps the 16-bit value to 255 instead, which modex does not copy)
//   CMYK / YCCK JPEG    -> Adobe (inverted) CMYK, converted with Pillow's integer formula
//   palette             -> the palette colours (a tRNS chunk's alpha is dropped)
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace modex::image {

enum class Format { kUnknown, kJpeg, kPng, kBmp };
std::string_view format_name(Format f);
// From the magic bytes; kUnknown when none matches.
Format detect_format(std::span<const uint8_t> bytes);

struct DecodeOptions {
  // Images with more pixels than this are refused from their header (decompression bombs).
  int64_t max_pixels = 100'000'000;
  // Rotate/flip as the EXIF Orientation tag says (JPEG APP1 and PNG eXIf).
  bool apply_exif_orientation = true;
};

struct Image {
  int width = 0;
  int height = 0;
  int channels = 3;             // always 3 (RGB) after decode_image
  std::vector<uint8_t> pixels;  // row-major, interleaved, height * width * channels bytes

  uint8_t at(int y, int x, int c) const {
    return pixels[(static_cast<size_t>(y) * width + x) * channels + c];
  }
};

// name is used in error messages only (usually the file path).
Image decode_image(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options = {});
Image load_image(const std::filesystem::path& path, const DecodeOptions& options = {});

// EXIF Orientation (1-8) from a TIFF-structured EXIF block (starting at "II"/"MM"); 1 when the
// block is malformed or carries no Orientation tag. Exposed for tests.
int exif_orientation(std::span<const uint8_t> tiff);
// Applies an EXIF orientation (what Pillow's ImageOps.exif_transpose does).
Image apply_orientation(const Image& image, int orientation);

}  // namespace modex::image
