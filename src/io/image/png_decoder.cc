// PNG through libpng. Like libjpeg, libpng reports errors through a callback that must not
// return: it longjmps back to run_decoder and the caller throws modex::Error with the message.
#include <png.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/image/decoders.h"

namespace modex::image::detail {
namespace {

enum class Status { kOk, kLibraryError, kTooLarge, kBadLayout };

struct Job {
  std::span<const uint8_t> bytes;
  size_t pos = 0;
  const DecodeOptions* options;
  char message[256] = {0};
  int64_t width = 0, height = 0;
  int channels = 0;
  int orientation = 1;
  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
};

void on_error(png_structp png, png_const_charp msg) {
  auto* job = static_cast<Job*>(png_get_error_ptr(png));
  std::snprintf(job->message, sizeof job->message, "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep out, size_t n) {
  auto* job = static_cast<Job*>(png_get_io_ptr(png));
  if (n > job->bytes.size() - job->pos) png_error(png, "file is truncated");
  std::memcpy(out, job->bytes.data() + job->pos, n);
  job->pos += n;
}

Status run_decoder(png_structp png, png_infop info, Job& job) {
  if (setjmp(png_jmpbuf(png))) return Status::kLibraryError;
  png_set_read_fn(png, &job, on_read);
  // libpng's own limits (1M x 1M by default) would reject some images check_dimensions allows.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  // Checksums stop a fuzzer at the first chunk; skip them in fuzzing builds only.
  png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#ifdef PNG_IGNORE_ADLER32
  png_set_option(png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
#endif
  png_read_info(png, info);
  png_uint_32 w = 0, h = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  job.width = w;
  job.height = h;
  if (job.width <= 0 || job.height <= 0 || job.width * job.height > job.options->max_pixels) return Status::kTooLarge;

#ifdef PNG_eXIf_SUPPORTED
  png_bytep exif = nullptr;
  png_uint_32 exif_size = 0;
  if (png_get_eXIf_1(png, info, &exif_size, &exif) != 0 && exif) job.orientation = exif_orientation({exif, exif_size});
#endif

  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((color_type & PNG_COLOR_MASK_COLOR) == 0 && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);  // the high byte, as Pillow does for 16-bit RGB
  png_set_interlace_handling(png);
  png_read_update_info(png, info);

  job.channels = png_get_channels(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  if (job.channels < 1 || job.channels > 4 || png_get_bit_depth(png, info) != 8 || rowbytes != w * size_t(job.channels)) {
    return Status::kBadLayout;
  }
  job.raw.resize(rowbytes * h);
  job.rows.resize(h);
  for (size_t y = 0; y < h; ++y) job.rows[y] = job.raw.data() + y * rowbytes;
  png_read_image(png, job.rows.data());
  // Trailing chunks (and IEND) are not read: an image whose pixels are complete is usable.
  return Status::kOk;
}

struct ReadGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~ReadGuard() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

}  // namespace

Image decode_png(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options, int& orientation) {
  Job job;
  job.bytes = bytes;
  job.options = &options;
  ReadGuard guard;
  guard.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, on_error, on_warning);
  if (!guard.png) throw Error("libpng initialisation failed", ErrorKind::kInternal).file(name);
  guard.info = png_create_info_struct(guard.png);
  if (!guard.info) throw Error("libpng initialisation failed", ErrorKind::kInternal).file(name);
  switch (run_decoder(guard.png, guard.info, job)) {
    case Status::kOk: break;
    case Status::kLibraryError: throw Error(fmt::format("corrupt PNG: {}", job.message)).file(name);
    case Status::kTooLarge:
      check_dimensions(job.width, job.height, name, options);
      throw Error("PNG size check disagrees with check_dimensions", ErrorKind::kInternal).file(name);
    case Status::kBadLayout:
      throw Error(fmt::format("unexpected PNG pixel layout ({} channels)", job.channels), ErrorKind::kUnsupported).file(name);
  }
  orientation = job.orientation;
  Image img;
  img.width = static_cast<int>(job.width);
  img.height = static_cast<int>(job.height);
  img.channels = 3;
  const size_t n = static_cast<size_t>(job.width) * static_cast<size_t>(job.height);
  if (job.channels == 3) {
    img.pixels = std::move(job.raw);
    return img;
  }
  img.pixels.resize(n * 3);
  const int c = job.channels;
  const uint8_t* src = job.raw.data();
  uint8_t* dst = img.pixels.data();
  for (size_t i = 0; i < n; ++i, src += c, dst += 3) {
    if (c <= 2) {  // gray or gray + alpha
      dst[0] = dst[1] = dst[2] = src[0];
    } else {  // RGBA: alpha dropped
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return img;
}

}  // namespace modex::image::detail
