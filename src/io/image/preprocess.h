// Image -> model input tensor, the way torchvision's classification transforms do it on a PIL
// image: Resize (bilinear, antialiased: Pillow's separable triangle filter whose support grows
// with the downscale factor, computed in Pillow's 8-bit fixed point so results match it), an
// optional CenterCrop, ToTensor (x / 255) and Normalize(mean, std).
#pragma once

#include <array>
#include <cstdint>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"
#include "io/image/image.h"

namespace modex::image {

struct Preprocess {
  enum class Resize { kResize, kResizeCenterCrop };
  enum class Layout { kNCHW, kNHWC };
  enum class Output { kFloat32, kUInt8 };

  int64_t width = 224, height = 224;  // the model input
  Resize resize = Resize::kResizeCenterCrop;
  // kResizeCenterCrop: the shorter side is resized to resize_size (0: max(width, height) /
  // crop_ratio, truncated, i.e. 256 for 224) and the centre width x height cut out.
  double crop_ratio = 224.0 / 256.0;
  int64_t resize_size = 0;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  float scale = 1.0f / 255.0f;
  Layout layout = Layout::kNCHW;
  // kUInt8 keeps the resized pixels as they are (no scale or normalisation), for models that
  // take raw 0..255 input.
  Output output = Output::kFloat32;

  // From modex's "preprocessing" metadata (what `modex export` embeds): input_size (int or
  // [h, w]), resize ("resize" | "resize_center_crop"), resize_size, mean, std, scale, layout
  // ("NCHW" | "NHWC"). Missing keys keep their defaults; malformed values throw modex::Error.
  static Preprocess from_metadata(const nlohmann::json& metadata);

  int64_t effective_resize_size() const;
  Dims shape(int64_t batch = 1) const;  // [N,3,H,W] or [N,H,W,3]
};

// Bilinear antialiased resize of an RGB image to width x height (Pillow's Image.resize with
// BILINEAR, bit-exact for 8-bit images).
Image resize_bilinear(const Image& image, int64_t width, int64_t height);

// [1,3,H,W] or [1,H,W,3], float32 or uint8.
Tensor preprocess(const Image& image, const Preprocess& p);
// Writes the same values into dst (p.shape(1) elements of the output dtype), for batching.
void preprocess_into(const Image& image, const Preprocess& p, void* dst);

}  // namespace modex::image
