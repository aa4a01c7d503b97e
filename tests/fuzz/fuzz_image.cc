// Fuzzes image decoding (format detection, JPEG via libjpeg-turbo, PNG via libpng, the BMP
// parser, EXIF orientation) and preprocessing of whatever decodes, under a small pixel limit so
// big-but-valid headers cannot exhaust memory. Seeds: small files from
// tests/io/image_make_fixtures.py (corpus/fuzz_image).
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    modex::image::DecodeOptions options;
    options.max_pixels = 1 << 18;
    modex::image::Image img = modex::image::decode_image(std::span<const uint8_t>(data, size), "fuzz", options);
    if (img.pixels.size() != static_cast<size_t>(img.width) * img.height * 3) __builtin_trap();
    modex::image::Preprocess p;
    p.width = p.height = 8;
    p.resize_size = 9;
    modex::Tensor t = modex::image::preprocess(img, p);
    volatile float sink = t.values<float>()[0];
    (void)sink;
  } catch (const modex::Error&) {
  }
  return 0;
}
