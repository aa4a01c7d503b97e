// Per-format decoders behind decode_image (image.cc dispatches on the magic bytes). Each returns
// 8-bit RGB before EXIF orientation and reports the orientation it found (1 when none).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "io/image/image.h"

namespace modex::image::detail {

Image decode_jpeg(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options, int& orientation);
Image decode_png(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options, int& orientation);
Image decode_bmp(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options);

// Throws (naming the file) when width x height is not a sane, allowed image size.
void check_dimensions(int64_t width, int64_t height, const std::string& name, const DecodeOptions& options);

}  // namespace modex::image::detail
