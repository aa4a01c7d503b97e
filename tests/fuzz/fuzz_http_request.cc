// Fuzzes what `modex serve` does with a predict request's untrusted parts before inference:
// the Content-Type header (media type, boundary parameter), the body (raw image or
// multipart/form-data with its part headers), the ?top= value, and decoding of the extracted
// image under a small pixel limit. Input layout: "<content-type>\n<top>\n<body>"; seeds in
// corpus/fuzz_http_request.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "app/serve/request.h"
#include "core/error.h"
#include "io/image/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t a = in.find('\n');
  if (a == std::string_view::npos) return 0;
  size_t b = in.find('\n', a + 1);
  if (b == std::string_view::npos) return 0;
  std::string_view content_type = in.substr(0, a), top = in.substr(a + 1, b - a - 1), body = in.substr(b + 1);
  using modex::app::serve::HttpError;
  try {
    int k = modex::app::serve::parse_top(top);
    if (k < 1 || k > modex::app::serve::kMaxTop) __builtin_trap();
  } catch (const HttpError& e) {
    if (e.status() != 400) __builtin_trap();
  }
  (void)modex::app::serve::header_parameter(content_type, "boundary");
  try {
    modex::app::serve::ImageUpload up = modex::app::serve::extract_image(content_type, body);
    // The upload is a view into the body.
    if (up.bytes.empty() || up.bytes.data() < body.data() || up.bytes.data() + up.bytes.size() > body.data() + body.size())
      __builtin_trap();
    modex::image::DecodeOptions options;
    options.max_pixels = 1 << 16;
    modex::image::Image img = modex::image::decode_image(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(up.bytes.data()), up.bytes.size()), "fuzz", options);
    if (img.pixels.size() != static_cast<size_t>(img.width) * img.height * 3) __builtin_trap();
  } catch (const HttpError& e) {
    if (e.status() != 400 && e.status() != 415) __builtin_trap();
  } catch (const modex::Error&) {
  }
  return 0;
}
