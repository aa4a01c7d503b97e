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

inline uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

Image resample_horizontal(const Image& in, int out_w) {
  const Coefficients c = precompute(in.width, out_w);
  Image out;
  out.width = out_w;
  out.height = in.height;
  out.channels = 3;
  out.pixels.resize(static_cast<size_t>(out_w) * in.height * 3);
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = in.pixels.data() + static_cast<size_t>(y) * in.width * 3;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * out_w * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[2 * static_cast<size_t>(xx)], xmax = c.bounds[2 * static_cast<size_t>(xx) + 1];
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      int64_t s0 = int64_t{1} << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < xmax; ++x) {
        const uint8_t* p = row + static_cast<size_t>(x + xmin) * 3;
        s0 += p[0] * int64_t{k[x]};
        s1 += p[1] * int64_t{k[x]};
        s2 += p[2] * int64_t{k[x]};
      }
      dst[3 * xx] = clip8(s0);
      dst[3 * xx + 1] = clip8(s1);
      dst[3 * xx + 2] = clip8(s2);
    }
  }
  return out;
}

Image resample_vertical(const Image& in, int out_h) {
  const Coefficients c = precompute(in.height, out_h);
  Image out;
  out.width = in.width;
  out.height = out_h;
  out.channels = 3;
  const size_t row_len = static_cast<size_t>(in.width) * 3;
  out.pixels.resize(row_len * out_h);
  std::vector<int64_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[2 * static_cast<size_t>(yy)], ymax = c.bounds[2 * static_cast<size_t>(yy) + 1];
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), int64_t{1} << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* row = in.pixels.data() + static_cast<size_t>(y + ymin) * row_len;
      const int64_t w = k[y];
      for (size_t i = 0; i < row_len; ++i) acc[i] += row[i] * w;
    }
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(yy) * row_len;
    for (size_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
  }
  return out;
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
  const bool horizontal = width != image.width, vertical = height != image.height;
  if (!horizontal && !vertical) return image;
  if (!vertical) return resample_horizontal(image, static_cast<int>(width));
  if (!horizontal) return resample_vertical(image, static_cast<int>(height));
  return resample_vertical(resample_horizontal(image, static_cast<int>(width)), static_cast<int>(height));
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
  Image resized;
  int64_t pad_top = 0, pad_left = 0, crop_top = 0, crop_left = 0;
  if (p.resize == Preprocess::Resize::kResize) {
    resized = resize_bilinear(image, p.width, p.height);
  } else {
    // torchvision Resize(int): the shorter side becomes s, the longer int(s * long / short).
    const int64_t s = p.effective_resize_size();
    const int64_t w = image.width, h = image.height;
    const int64_t short_side = std::min(w, h), long_side = std::max(w, h);
    const int64_t new_long = static_cast<int64_t>(static_cast<double>(s) * static_cast<double>(long_side) /
                                                  static_cast<double>(short_side));
    const int64_t new_w = w <= h ? s : new_long, new_h = w <= h ? new_long : s;
    resized = resize_bilinear(image, new_w, new_h);
    // torchvision CenterCrop: pad with zeros when the crop is larger, then round((H - h) / 2).
    int64_t ph = resized.height, pw = resized.width;
    if (p.width > pw || p.height > ph) {
      if (p.width > pw) pad_left = (p.width - pw) / 2, pw = p.width;
      if (p.height > ph) pad_top = (p.height - ph) / 2, ph = p.height;
    }
    crop_top = half_to_even(ph - p.height);
    crop_left = half_to_even(pw - p.width);
  }
  const int64_t H = p.height, W = p.width;
  const bool nchw = p.layout == Preprocess::Layout::kNCHW;
  auto pixel = [&](int64_t y, int64_t x, int c) -> uint8_t {
    const int64_t sy = y + crop_top - pad_top, sx = x + crop_left - pad_left;
    if (sy < 0 || sx < 0 || sy >= resized.height || sx >= resized.width) return 0;
    return resized.at(static_cast<int>(sy), static_cast<int>(sx), c);
  };
  auto index = [&](int64_t y, int64_t x, int c) -> size_t {
    return static_cast<size_t>(nchw ? (c * H + y) * W + x : (y * W + x) * 3 + c);
  };
  if (p.output == Preprocess::Output::kUInt8) {
    auto* out = static_cast<uint8_t*>(dst);
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int c = 0; c < 3; ++c) out[index(y, x, c)] = pixel(y, x, c);
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
  auto* out = static_cast<float*>(dst);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) out[index(y, x, c)] = lut[c][pixel(y, x, c)];
}

Tensor preprocess(const Image& image, const Preprocess& p) {
  Tensor t = Tensor::empty(p.output == Preprocess::Output::kUInt8 ? DType::kUInt8 : DType::kFloat32, p.shape(1));
  preprocess_into(image, p, t.raw_mutable());
  return t;
}

}  // namespace modex::image
