// Preprocessing: torchvision's Resize + CenterCrop + ToTensor + Normalize semantics (the resize
// itself is checked bit-exactly against Pillow in image_decode_test; the whole pipeline against
// torchvision in tests/oracle/test_calib.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "image_test_util.h"
#include "io/image/preprocess.h"

namespace modex {
namespace {

using image::Image;
using image::Preprocess;

TEST(Preprocess, DefaultsAreImageNet224) {
  Preprocess p;
  EXPECT_EQ(p.effective_resize_size(), 256);
  EXPECT_EQ(p.shape(2), (Dims{2, 3, 224, 224}));
  p.layout = Preprocess::Layout::kNHWC;
  EXPECT_EQ(p.shape(1), (Dims{1, 224, 224, 3}));
}

TEST(Preprocess, FromExportMetadata) {
  // The keys `modex export` writes (export_command.cc preprocessing_json).
  auto m = nlohmann::json::parse(R"({"input_size": 299, "resize": "resize_center_crop", "resize_size": 341,
      "layout": "NCHW", "color": "RGB", "scale": 0.00392156862745098, "mean": [0.5, 0.5, 0.5],
      "std": [0.25, 0.5, 1.0], "normalization_source": "checkpoint config"})");
  Preprocess p = Preprocess::from_metadata(m);
  EXPECT_EQ(p.width, 299);
  EXPECT_EQ(p.height, 299);
  EXPECT_EQ(p.effective_resize_size(), 341);
  EXPECT_EQ(p.resize, Preprocess::Resize::kResizeCenterCrop);
  EXPECT_FLOAT_EQ(p.std[0], 0.25f);
  EXPECT_FLOAT_EQ(p.scale, 1.0f / 255.0f);
  p = Preprocess::from_metadata(nlohmann::json::parse(R"({"input_size": [96, 128], "resize": "resize", "layout": "NHWC"})"));
  EXPECT_EQ(p.height, 96);
  EXPECT_EQ(p.width, 128);
  EXPECT_EQ(p.resize, Preprocess::Resize::kResize);
  EXPECT_EQ(p.layout, Preprocess::Layout::kNHWC);
  for (const char* bad : {R"({"input_size": -1})", R"({"input_size": [1, 2, 3]})", R"({"resize": "crop"})",
                          R"({"mean": [1, 2]})", R"({"std": [1, 0, 1]})", R"({"layout": "CHW"})", R"([1])",
                          R"({"input_size": "224"})", R"({"color": "BGR"})"}) {
    EXPECT_THROW(Preprocess::from_metadata(nlohmann::json::parse(bad)), Error) << bad;
  }
}

TEST(Preprocess, NormalisesLikeToTensorAndNormalize) {
  Preprocess p;
  p.width = p.height = 4;
  p.resize = Preprocess::Resize::kResize;
  Tensor t = image::preprocess(test::solid_image(4, 4, 0, 128, 255), p);
  ASSERT_EQ(t.shape(), (Dims{1, 3, 4, 4}));
  auto v = t.values<float>();
  EXPECT_FLOAT_EQ(v[0], (0.0f - 0.485f) / 0.229f);
  EXPECT_FLOAT_EQ(v[16], (128.0f / 255.0f - 0.456f) / 0.224f);
  EXPECT_FLOAT_EQ(v[47], (1.0f - 0.406f) / 0.225f);
}

TEST(Preprocess, LayoutsAndDtypesHoldTheSamePixels) {
  Image img = test::pattern_image(40, 30, 3);
  Preprocess p;
  p.width = 20;
  p.height = 16;
  Tensor nchw = image::preprocess(img, p);
  p.layout = Preprocess::Layout::kNHWC;
  Tensor nhwc = image::preprocess(img, p);
  p.output = Preprocess::Output::kUInt8;
  Tensor u8 = image::preprocess(img, p);
  ASSERT_EQ(nhwc.shape(), (Dims{1, 16, 20, 3}));
  ASSERT_EQ(u8.dtype(), DType::kUInt8);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 20; ++x)
      for (int c = 0; c < 3; ++c) {
        const float a = nchw.values<float>()[static_cast<size_t>((c * 16 + y) * 20 + x)];
        const float b = nhwc.values<float>()[static_cast<size_t>((y * 20 + x) * 3 + c)];
        const uint8_t u = u8.values<uint8_t>()[static_cast<size_t>((y * 20 + x) * 3 + c)];
        ASSERT_EQ(a, b);
        ASSERT_FLOAT_EQ(a, (u / 255.0f - p.mean[static_cast<size_t>(c)]) / p.std[static_cast<size_t>(c)]);
      }
}

TEST(Preprocess, CenterCropRoundsHalvesToEvenLikeTorchvision) {
  // 257 x 256 with resize_size 256: no resize (shorter side already 256, longer int(256*257/256)
  // = 257), then round((257 - 224) / 2) = round(16.5) = 16 in Python.
  Image img = test::pattern_image(257, 256, 5);
  Preprocess p;
  p.output = Preprocess::Output::kUInt8;
  p.layout = Preprocess::Layout::kNHWC;
  Tensor t = image::preprocess(img, p);
  auto v = t.values<uint8_t>();
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(v[static_cast<size_t>(c)], img.at(16, 16, c));
    EXPECT_EQ(v[static_cast<size_t>((223 * 224 + 223) * 3 + c)], img.at(239, 239, c));
  }
  // 259 wide: round(17.5) = 18.
  img = test::pattern_image(259, 256, 6);
  t = image::preprocess(img, p);
  EXPECT_EQ(t.values<uint8_t>()[0], img.at(16, 18, 0));
}

TEST(Preprocess, CropLargerThanTheImagePadsWithZeros) {
  Preprocess p;
  p.width = p.height = 8;
  p.resize_size = 4;
  p.output = Preprocess::Output::kUInt8;
  p.layout = Preprocess::Layout::kNHWC;
  Tensor t = image::preprocess(test::solid_image(4, 4, 9, 9, 9), p);
  auto v = t.values<uint8_t>();
  EXPECT_EQ(v[0], 0);                          // padding (2 on each side)
  EXPECT_EQ(v[static_cast<size_t>((2 * 8 + 2) * 3)], 9);  // first image pixel
  EXPECT_EQ(v[static_cast<size_t>((5 * 8 + 5) * 3)], 9);
  EXPECT_EQ(v[static_cast<size_t>((6 * 8 + 6) * 3)], 0);
}

// preprocess resizes only the window of the image the crop keeps; it must equal resizing the
// whole image (checked against Pillow in image_decode_test) and then cropping or padding.
TEST(Preprocess, ResizesOnlyTheCropButEqualsResizingTheWholeImage) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int w = 1 + static_cast<int>(rng() % 90), h = 1 + static_cast<int>(rng() % 90);
    Image img = test::pattern_image(w, h, static_cast<uint32_t>(trial));
    Preprocess p;
    p.width = 1 + static_cast<int64_t>(rng() % 60);
    p.height = 1 + static_cast<int64_t>(rng() % 60);
    p.resize = rng() % 4 ? Preprocess::Resize::kResizeCenterCrop : Preprocess::Resize::kResize;
    p.resize_size = rng() % 2 ? 0 : 1 + static_cast<int64_t>(rng() % 80);  // some smaller than the crop: padding
    p.layout = Preprocess::Layout::kNHWC;
    p.output = Preprocess::Output::kUInt8;
    Image resized;
    if (p.resize == Preprocess::Resize::kResize) {
      resized = image::resize_bilinear(img, p.width, p.height);
    } else {
      const int64_t s = p.effective_resize_size();
      const int64_t longer = static_cast<int64_t>(static_cast<double>(s) * std::max(w, h) / std::min(w, h));
      resized = image::resize_bilinear(img, w <= h ? s : longer, w <= h ? longer : s);
    }
    // torchvision CenterCrop: zero padding up to the crop size, then round((H - h) / 2) with
    // Python's ties to even.
    const int64_t pad_x = std::max<int64_t>(0, (p.width - resized.width) / 2);
    const int64_t pad_y = std::max<int64_t>(0, (p.height - resized.height) / 2);
    const int64_t big_w = std::max<int64_t>(resized.width, p.width), big_h = std::max<int64_t>(resized.height, p.height);
    auto round_half_even = [](int64_t twice) { return twice / 2 + (twice % 2 && (twice / 2) % 2); };
    const int64_t off_x = round_half_even(big_w - p.width) - pad_x, off_y = round_half_even(big_h - p.height) - pad_y;
    Tensor t = image::preprocess(img, p);
    auto v = t.values<uint8_t>();
    for (int64_t y = 0; y < p.height; ++y)
      for (int64_t x = 0; x < p.width; ++x)
        for (int c = 0; c < 3; ++c) {
          const int64_t sy = y + off_y, sx = x + off_x;
          const bool inside = sy >= 0 && sx >= 0 && sy < resized.height && sx < resized.width;
          const uint8_t want = inside ? resized.at(static_cast<int>(sy), static_cast<int>(sx), c) : 0;
          ASSERT_EQ(v[static_cast<size_t>((y * p.width + x) * 3 + c)], want)
              << w << "x" << h << " -> " << p.width << "x" << p.height << " resize_size " << p.resize_size << " at " << y << "," << x;
        }
  }
}

TEST(Preprocess, ResizeOfAConstantImageIsConstant) {
  Image out = image::resize_bilinear(test::solid_image(1000, 3, 200, 100, 50), 7, 300);
  ASSERT_EQ(out.width, 7);
  ASSERT_EQ(out.height, 300);
  for (size_t i = 0; i < out.pixels.size(); i += 3) {
    ASSERT_EQ(out.pixels[i], 200);
    ASSERT_EQ(out.pixels[i + 1], 100);
    ASSERT_EQ(out.pixels[i + 2], 50);
  }
  EXPECT_THROW(image::resize_bilinear(out, 0, 5), Error);
}

}  // namespace
}  // namespace modex
