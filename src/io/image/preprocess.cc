#include "io/image/preprocess.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace modex::image {
namespace {

// Pillow's Resample.c, restated: weights of a triangle filter stretched by the downscale factor,
// normalised, then rounded to fixed point with 22 fractional bits; each pass rounds to 8 bits.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;  // per output index: first input index, count
  std::vector<int32_t> weights;  // ksize per output index
};

Coefficients precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // bilinear support 1
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(static_cast<size_t>(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      const double w = t < 1.0 ? 1.0 - t : 0.0;
      k[static_cast<size_t>(x)] = w;
      total += w;
    }
    for (int x = 0; x < xmax; ++x) {
      double w = total != 0.0 ? k[static_cast<size_t>(x)] / total : k[static_cast<size_t>(x)];
      c.weights[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                                                                     : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[2 * static_cast<size_t>(xx)] = xmin;
    c.bounds[2 * static_cast<size_t>(xx) + 1] = xmax;
  }
  return c;
}

// Pillow sums in 32-bit ints (8bpc): the largest sum, 2^21 + 255 * (2^22 + ksize / 2), fits.
inline uint8_t clip8(int32_t v) {
  if (v >= (int32_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// The window [x0, x0 + w) x [y0, y0 + h) of an image resized to out_w x out_h with Pillow's two
// passes (horizontal, then vertical, each rounding to 8 bits), computed without the rest of it:
// the horizontal pass runs only on the input rows the window's output rows read, and only for
// the window's columns. A centre crop keeps about 70 % of a resized photo, and preprocessing is
// what `modex batch` spends beside inference. Calls emit(row, pixels) for each of the window's
// rows, top first, with w RGB pixels valid until the next call.
template <class Emit>
void resize_window(const Image& in, int out_w, int out_h, int x0, int w, int y0, int h, Emit&& emit) {
  const bool horizontal = out_w != in.width, vertical = out_h != in.height;
  const size_t in_stride = static_cast<size_t>(in.width) * 3, line = static_cast<size_t>(w) * 3;
  const Coefficients cv = vertical ? precompute(in.height, out_h) : Coefficients{};
  // Input rows [r0, r1) feed the window's output rows.
  int r0 = y0, r1 = y0 + h;
  if (vertical) {
    r0 = cv.bounds[2 * static_cast<size_t>(y0)];
    r1 = 0;
    for (int yy = y0; yy < y0 + h; ++yy)
      r1 = std::max(r1, cv.bounds[2 * static_cast<size_t>(yy)] + cv.bounds[2 * static_cast<size_t>(yy) + 1]);
  }
  // Horizontally resampled rows r0..r1 of the window's columns; without a horizontal pass the
  // input rows themselves.
  std::vector<uint8_t> rows;
  if (horizontal) {
    const Coefficients ch = precompute(in.width, out_w);
    rows.resize(static_cast<size_t>(r1 - r0) * line);
    for (int r = r0; r < r1; ++r) {
      const uint8_t* src = in.pixels.data() + static_cast<size_t>(r) * in_stride;
      uint8_t* dst = rows.data() + static_cast<size_t>(r - r0) * line;
      for (int xx = x0; xx < x0 + w; ++xx) {
        const int xmin = ch.bounds[2 * static_cast<size_t>(xx)], xmax = ch.bounds[2 * static_cast<size_t>(xx) + 1];
        const int32_t* k = &ch.weights[static_cast<size_t>(xx) * ch.ksize];
        const uint8_t* p = src + static_cast<size_t>(xmin) * 3;
        int32_t s0 = int32_t{1} << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < xmax; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        *dst++ = clip8(s0);
        *dst++ = clip8(s1);
        *dst++ = clip8(s2);
      }
    }
  }
  auto row = [&](int r) -> const uint8_t* {
    return horizontal ? rows.data() + static_cast<size_t>(r - r0) * line
                      : in.pixels.data() + static_cast<size_t>(r) * in_stride + static_cast<size_t>(x0) * 3;
  };
  if (!vertical) {
    for (int yy = y0; yy < y0 + h; ++yy) emit(yy - y0, row(yy));
    return;
  }
  std::vector<int32_t> acc(line);
  std::vector<uint8_t> out(line);
  for (int yy = y0; yy < y0 + h; ++yy) {
    const int ymin = cv.bounds[2 * static_cast<size_t>(yy)], ymax = cv.bounds[2 * static_cast<size_t>(yy) + 1];
    const int32_t* k = &cv.weights[static_cast<size_t>(yy) * cv.ksize];
    std::fill(acc.begin(), acc.end(), int32_t{1} << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* src = row(ymin + y);
      const int32_t wy = k[y];
      for (size_t i = 0; i < line; ++i) acc[i] += src[i] * wy;
    }
    for (size_t i = 0; i < line; ++i) out[i] = clip8(acc[i]);
    emit(yy - y0, out.data());
  }
}

// Python's round() for the halves CenterCrop produces: ties to even.
int64_t half_to_even(int64_t twice) {
  const int64_t q = twice / 2;
  if (twice % 2 == 0) return q;
  return q % 2 == 0 ? q : q + 1;
}

std::array<float, 3> three_floats(const nlohmann::json& v, const char* key) {
  check(v.is_array() && v.size() == 3, fmt::format("preprocessing.{} must be a list of 3 numbers", key));
  std::array<float, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    check(v[i].is_number(), fmt::format("preprocessing.{} must be a list of 3 numbers", key));
    out[i] = v[i].get<float>();
  }
  return out;
}

int64_t positive_int(const nlohmann::json& v, const char* key) {
  check(v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= 65536,
        fmt::format("preprocessing.{} must be a positive integer (at most 65536)", key));
  return v.get<int64_t>();
}

}  // namespace

Image resize_bilinear(const Image& image, int64_t width, int64_t height) {
  check(width > 0 && height > 0 && width <= 65536 && height <= 65536,
        fmt::format("cannot resize to {}x{}", width, height));
  check(image.channels == 3 && image.pixels.size() == static_cast<size_t>(image.width) * image.height * 3,
        "resize_bilinear expects an RGB image", ErrorKind::kInternal);
  if (width == image.width && height == image.height) return image;
  Image out;
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.channels = 3;
  const size_t line = static_cast<size_t>(width) * 3;
  out.pixels.resize(line * static_cast<size_t>(height));
  resize_window(image, out.width, out.height, 0, out.width, 0, out.height,
                [&](int y, const uint8_t* px) { std::memcpy(out.pixels.data() + static_cast<size_t>(y) * line, px, line); });
  return out;
}

int64_t Preprocess::effective_resize_size() const {
  if (resize_size > 0) return resize_size;
  check(crop_ratio > 0 && crop_ratio <= 1, fmt::format("crop ratio {} is not in (0, 1]", crop_ratio));
  // Truncated like `modex export` writes it (int(224 * 256 / 224) = 256); the epsilon keeps
  // 224 / (224 / 256) = 255.99999... from truncating to 255.
  return static_cast<int64_t>(static_cast<double>(std::max(width, height)) / crop_ratio + 1e-6);
}

Dims Preprocess::shape(int64_t batch) const {
  return layout == Layout::kNCHW ? Dims{batch, 3, height, width} : Dims{batch, height, width, 3};
}

Preprocess Preprocess::from_metadata(const nlohmann::json& m) {
  check(m.is_object(), "preprocessing metadata must be a JSON object");
  Preprocess p;
  if (m.contains("input_size")) {
    const auto& s = m["input_size"];
    if (s.is_array()) {
      check(s.size() == 2, "preprocessing.input_size must be an integer or [height, width]");
      p.height = positive_int(s[0], "input_size");
      p.width = positive_int(s[1], "input_size");
    } else {
      p.height = p.width = positive_int(s, "input_size");
    }
  }
  if (m.contains("resize")) {
    const auto& r = m["resize"];
    check(r.is_string() && (r == "resize" || r == "resize_center_crop"),
          "preprocessing.resize must be \"resize\" or \"resize_center_crop\"");
    p.resize = r == "resize" ? Resize::kResize : Resize::kResizeCenterCrop;
  }
  if (m.contains("resize_size") && !m["resize_size"].is_null()) p.resize_size = positive_int(m["resize_size"], "resize_size");
  if (m.contains("mean")) p.mean = three_floats(m["mean"], "mean");
  if (m.contains("std")) {
    p.std = three_floats(m["std"], "std");
    for (float s : p.std) check(s > 0 && std::isfinite(s), "preprocessing.std values must be positive");
  }
  if (m.contains("scale")) {
    check(m["scale"].is_number() && m["scale"].get<double>() > 0, "preprocessing.scale must be a positive number");
    p.scale = m["scale"].get<float>();
  }
  if (m.contains("layout")) {
    const auto& l = m["layout"];
    check(l.is_string() && (l == "NCHW" || l == "NHWC"), "preprocessing.layout must be \"NCHW\" or \"NHWC\"");
    p.layout = l == "NCHW" ? Layout::kNCHW : Layout::kNHWC;
  }
  if (m.contains("color")) check(m["color"] == "RGB", "preprocessing.color: only RGB input is supported", ErrorKind::kUnsupported);
  return p;
}

void preprocess_into(const Image& image, const Preprocess& p, void* dst) {
  check(p.width > 0 && p.height > 0 && p.width <= 65536 && p.height <= 65536,
        fmt::format("invalid model input size {}x{}", p.width, p.height));
  check(image.channels == 3 && image.width > 0 && image.height > 0 &&
            image.pixels.size() == static_cast<size_t>(image.width) * image.height * 3,
        "preprocess expects an RGB image", ErrorKind::kInternal);
  // The resized size, and where output pixel (y, x) is in it: (y + off_y, x + off_x).
  int64_t new_w = p.width, new_h = p.height, off_y = 0, off_x = 0;
  if (p.resize == Preprocess::Resize::kResizeCenterCrop) {
    // torchvision Resize(int): the shorter side becomes s, the longer int(s * long / short).
    const int64_t s = p.effective_resize_size();
    const int64_t w = image.width, h = image.height;
    const int64_t short_side = std::min(w, h), long_side = std::max(w, h);
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(s) * static_cast<double>(long_side) /
                                                  static_cast<double>(short_side));
    new_w = w <= h ? s : new_long;
    new_h = w <= h ? new_long : s;
    check(new_w <= 65536 && new_h <= 65536, fmt::format("cannot resize to {}x{}", new_w, new_h));
    // torchvision CenterCrop: pad with zeros when the crop is larger, then round((H - h) / 2).
    const int64_t pad_left = p.width > new_w ? (p.width - new_w) / 2 : 0;
    const int64_t pad_top = p.height > new_h ? (p.height - new_h) / 2 : 0;
    off_x = half_to_even(std::max(new_w, p.width) - p.width) - pad_left;
    off_y = half_to_even(std::max(new_h, p.height) - p.height) - pad_top;
  }
  const int64_t H = p.height, W = p.width;
  // The window of the resized image that lands in the output; the rest of the output is padding.
  const int64_t x0 = std::max<int64_t>(0, off_x), x1 = std::min(new_w, W + off_x);
  const int64_t y0 = std::max<int64_t>(0, off_y), y1 = std::min(new_h, H + off_y);
  const bool padded = x0 - off_x > 0 || x1 - off_x < W || y0 - off_y > 0 || y1 - off_y < H;
  const bool nchw = p.layout == Preprocess::Layout::kNCHW;
  const size_t plane = static_cast<size_t>(H * W);

  // Writes a row of the window (x1 - x0 RGB pixels) at output row y, column x0 - off_x, through
  // value(channel, pixel), and padding's value everywhere else.
  auto fill = [&](auto* out, auto value) {
    if (padded) {
      for (int c = 0; c < 3; ++c) {
        const auto v = value(c, 0);
        if (nchw) std::fill_n(out + c * plane, plane, v);
        else for (size_t i = static_cast<size_t>(c); i < 3 * plane; i += 3) out[i] = v;
      }
    }
    if (x1 <= x0 || y1 <= y0) return;
    const size_t w = static_cast<size_t>(x1 - x0);
    resize_window(image, static_cast<int>(new_w), static_cast<int>(new_h), static_cast<int>(x0), static_cast<int>(w),
                  static_cast<int>(y0), static_cast<int>(y1 - y0), [&](int r, const uint8_t* px) {
                    const size_t at = static_cast<size_t>((y0 - off_y + r) * W + (x0 - off_x));
                    if (nchw) {
                      for (size_t c = 0; c < 3; ++c) {
                        auto* o = out + c * plane + at;
                        for (size_t i = 0; i < w; ++i) o[i] = value(static_cast<int>(c), px[3 * i + c]);
                      }
                    } else {
                      auto* o = out + 3 * at;
                      for (size_t i = 0; i < 3 * w; i += 3)
                        for (size_t c = 0; c < 3; ++c) o[i + c] = value(static_cast<int>(c), px[i + c]);
                    }
                  });
  };
  if (p.output == Preprocess::Output::kUInt8) {
    fill(static_cast<uint8_t*>(dst), [](int, uint8_t v) { return v; });
    return;
  }
  for (float s : p.std) check(s != 0.0f, "normalisation std must not be zero");
  // ToTensor then Normalize, per 8-bit value: (v * scale - mean) / std in float32 like torchvision.
  float lut[3][256];
  const bool divide = p.scale == 1.0f / 255.0f;  // torchvision divides by 255: bit-identical
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = divide ? static_cast<float>(v) / 255.0f : static_cast<float>(v) * p.scale;
      lut[c][v] = (x - p.mean[static_cast<size_t>(c)]) / p.std[static_cast<size_t>(c)];
    }
  }
  fill(static_cast<float*>(dst), [&](int c, uint8_t v) { return lut[c][v]; });
}

Tensor preprocess(const Image& image, const Preprocess& p) {
  Tensor t = Tensor::empty(p.output == Preprocess::Output::kUInt8 ? DType::kUInt8 : DType::kFloat32, p.shape(1));
  preprocess_into(image, p, t.raw_mutable());
  return t;
}

}  // namespace modex::image
