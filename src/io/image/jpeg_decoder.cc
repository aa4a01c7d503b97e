// JPEG through libjpeg-turbo. libjpeg reports errors by calling error_exit, which must not return:
// it longjmps back to run_decoder, whose caller turns the saved message into modex::Error. Only
// plain data lives in the frames a longjmp crosses (libjpeg's own and the callbacks below).
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <cstring>

#include <jerror.h>
#include <jpeglib.h>

#include <fmt/format.h>

#include "core/error.h"
#include "io/image/decoders.h"

namespace modex::image::detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;  // first, so libjpeg's pointer to it is also a pointer to this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) are corrupt-data reports libjpeg recovers from by inventing pixels. A file
// that ends early would come out grey at the bottom: treat it as the error it is (Pillow refuses
// truncated files too). Other recoverable damage is tolerated like every other decoder does.
void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) {
    cinfo->err->num_warnings++;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) on_error(cinfo);
  }
}

enum class Status { kOk, kLibraryError, kTooLarge, kUnsupportedColor };

struct Job {
  std::span<const uint8_t> bytes;
  const std::string* name;
  const DecodeOptions* options;
  Image image;
  std::vector<uint8_t> row;
  int orientation = 1;
  int64_t width = 0, height = 0;
  int color_space = 0;
};

// Pillow's CMYK -> RGB conversion (MULDIV255 rounding), applied to inverted (Adobe) CMYK as
// libjpeg delivers it: Pillow reads CMYK JPEGs as "CMYK;I", i.e. c = 255 - stored.
inline uint8_t cmyk_channel(int stored_c, int stored_k) {
  const int c = 255 - stored_c;
  const int nk = stored_k;  // 255 - k where k = 255 - stored_k
  const int tmp = c * nk + 128;
  const int v = nk - (((tmp >> 8) + tmp) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Everything libjpeg may longjmp out of. cinfo outlives it (the caller destroys it).
Status run_decoder(jpeg_decompress_struct& cinfo, ErrorManager& err, Job& job) {
  if (setjmp(err.jump)) return Status::kLibraryError;
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, job.bytes.data(), static_cast<unsigned long>(job.bytes.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
  jpeg_read_header(&cinfo, TRUE);

  job.width = cinfo.image_width;
  job.height = cinfo.image_height;
  if (job.width <= 0 || job.height <= 0 || job.width * job.height > job.options->max_pixels) return Status::kTooLarge;

  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) {
      job.orientation = exif_orientation({m->data + 6, m->data_length - 6});
      break;
    }
  }

  job.color_space = cinfo.jpeg_color_space;
  int components;
  switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; components = 1; break;
    case JCS_CMYK:
    case JCS_YCCK: cinfo.out_color_space = JCS_CMYK; components = 4; break;
    case JCS_RGB:
    case JCS_YCbCr: cinfo.out_color_space = JCS_RGB; components = 3; break;
    default: return Status::kUnsupportedColor;
  }
  jpeg_start_decompress(&cinfo);
  if (cinfo.output_components != components || cinfo.output_width != job.width || cinfo.output_height != job.height) {
    return Status::kUnsupportedColor;
  }
  const size_t w = cinfo.output_width;
  job.image.width = static_cast<int>(w);
  job.image.height = static_cast<int>(cinfo.output_height);
  job.image.channels = 3;
  job.image.pixels.resize(w * cinfo.output_height * 3);
  job.row.resize(w * static_cast<size_t>(components));
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* out = job.image.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * w * 3;
    JSAMPROW rowp = components == 3 ? out : job.row.data();
    if (jpeg_read_scanlines(&cinfo, &rowp, 1) != 1) {  // only on suspension, impossible with a memory source
      std::snprintf(err.message, sizeof err.message, "decoder stopped at row %u", cinfo.output_scanline);
      return Status::kLibraryError;
    }
    if (components == 1) {
      for (size_t x = 0; x < w; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = job.row[x];
    } else if (components == 4) {
      for (size_t x = 0; x < w; ++x) {
        const uint8_t* p = &job.row[4 * x];
        for (int c = 0; c < 3; ++c) out[3 * x + c] = cmyk_channel(p[c], p[3]);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  return Status::kOk;
}

struct DecompressGuard {
  jpeg_decompress_struct* cinfo;
  ~DecompressGuard() { jpeg_destroy_decompress(cinfo); }
};

}  // namespace

Image decode_jpeg(std::span<const uint8_t> bytes, const std::string& name, const DecodeOptions& options, int& orientation) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  err.message[0] = '\0';
  DecompressGuard guard{&cinfo};
  Job job;
  job.bytes = bytes;
  job.name = &name;
  job.options = &options;
  switch (run_decoder(cinfo, err, job)) {
    case Status::kOk: break;
    case Status::kLibraryError: throw Error(fmt::format("corrupt JPEG: {}", err.message)).file(name);
    case Status::kTooLarge:
      check_dimensions(job.width, job.height, name, options);
      throw Error("JPEG size check disagrees with check_dimensions", ErrorKind::kInternal).file(name);
    case Status::kUnsupportedColor:
      throw Error(fmt::format("unsupported JPEG colour space {}", job.color_space), ErrorKind::kUnsupported).file(name);
  }
  orientation = job.orientation;
  return std::move(job.image);
}

}  // namespace modex::image::detail
