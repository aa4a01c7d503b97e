// Decoding checked against Pillow: tests/io/image_make_fixtures.py (the io_image_fixtures CTest
// fixture) writes every format variant with Pillow's pixels as .npy; modex must match exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"
#include "image_test_util.h"
#include "io/dataset/npy.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using image::Image;

image::DecodeOptions no_exif() {
  image::DecodeOptions o;
  o.apply_exif_orientation = false;
  return o;
}
image::DecodeOptions limit(int64_t pixels) {
  image::DecodeOptions o;
  o.max_pixels = pixels;
  return o;
}

// Beside (not inside) data/io: make_fixtures.py recreates that folder from scratch.
fs::path fixture_dir() { return fs::path(MODEX_TEST_DATA_DIR) / "io_images"; }

nlohmann::json manifest() {
  std::ifstream in(fixture_dir() / "manifest.json");
  EXPECT_TRUE(in.good()) << "missing image fixtures in " << fixture_dir();
  return nlohmann::json::parse(in);
}

// Largest absolute difference between an image and an [H, W, 3] uint8 reference (256 when the
// shapes differ).
int max_diff(const Image& img, const Tensor& ref) {
  if (ref.rank() != 3 || ref.dim(0) != img.height || ref.dim(1) != img.width || ref.dim(2) != 3) return 256;
  int d = 0;
  auto v = ref.values<uint8_t>();
  for (size_t i = 0; i < v.size(); ++i) d = std::max(d, std::abs(int{v[i]} - int{img.pixels[i]}));
  return d;
}

TEST(ImageDecode, EveryFixtureMatchesPillow) {
  int decoded = 0, refused = 0, resized = 0;
  for (const auto& c : manifest()) {
    const std::string name = c["name"];
    const fs::path file = fixture_dir() / c["file"].get<std::string>();
    SCOPED_TRACE(name);
    if (c["error"].get<bool>()) {
      try {
        image::load_image(file);
        ADD_FAILURE() << name << " decoded but should have been refused";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << "error does not name the file: " << e.what();
        ++refused;
      }
      continue;
    }
    Image img = image::load_image(file);
    EXPECT_EQ(img.channels, 3);
    Tensor ref = npy::read(fixture_dir() / c["ref"].get<std::string>());
    EXPECT_EQ(max_diff(img, ref), 0) << name << " differs from Pillow";
    ++decoded;
    for (const auto& r : c["resize"]) {
      Tensor rref = npy::read(fixture_dir() / r[2].get<std::string>());
      Image out = image::resize_bilinear(img, r[0].get<int64_t>(), r[1].get<int64_t>());
      EXPECT_EQ(max_diff(out, rref), 0) << name << " resized to " << r[0] << "x" << r[1] << " differs from Pillow";
      ++resized;
    }
  }
  EXPECT_GE(decoded, 30);
  EXPECT_GE(refused, 12);
  EXPECT_GE(resized, 10);
}

TEST(ImageDecode, ExifOrientationsFollowPillow) {
  // Covered pixel-exactly by the fixtures; here: orientations 5-8 swap width and height.
  for (int o = 1; o <= 8; ++o) {
    Image img = image::load_image(fixture_dir() / ("exif_orientation_" + std::to_string(o) + ".jpg"));
    EXPECT_EQ(img.width, o >= 5 ? 23 : 37) << o;
    Image raw = image::load_image(fixture_dir() / ("exif_orientation_" + std::to_string(o) + ".jpg"), no_exif());
    EXPECT_EQ(raw.width, 37);
  }
}

TEST(ImageDecode, PixelLimitIsCheckedBeforeDecoding) {
  for (const char* f : {"big.jpg", "big.png"}) {
    try {
      image::load_image(fixture_dir() / f, limit(300 * 200 - 1));
      ADD_FAILURE() << f;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUnsafe);
      EXPECT_NE(std::string(e.what()).find("60000 pixels"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(image::load_image(fixture_dir() / f, limit(300 * 200)));
  }
}

uint32_t crc32(std::span<const uint8_t> b) {
  uint32_t c = 0xffffffff;
  for (uint8_t v : b) {
    c ^= v;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

// Headers claiming enormous images, with no pixel data: refused from the header alone.
TEST(ImageDecode, DecompressionBombHeadersAreRefused) {
  // PNG: IHDR of 100000 x 100000.
  std::vector<uint8_t> png = read_file_bytes(fixture_dir() / "rgb.png");
  png[16] = 0, png[17] = 0x01, png[18] = 0x86, png[19] = 0xa0;  // width
  png[20] = 0, png[21] = 0x01, png[22] = 0x86, png[23] = 0xa0;  // height
  const uint32_t crc = crc32(std::span(png).subspan(12, 17));  // "IHDR" + 13 bytes
  for (int i = 0; i < 4; ++i) png[29 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  // BMP: 40000 x -40000 (top-down).
  std::string bmp = test::encode_bmp24(test::solid_image(2, 2, 1, 2, 3));
  const int32_t w = 40000, h = -40000;
  std::memcpy(bmp.data() + 18, &w, 4);
  std::memcpy(bmp.data() + 22, &h, 4);
  // JPEG: SOF0 of 65500 x 65500.
  std::vector<uint8_t> jpg = read_file_bytes(fixture_dir() / "rgb_q90.jpg");
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {
    if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
      jpg[i + 5] = 0xff, jpg[i + 6] = 0xdc, jpg[i + 7] = 0xff, jpg[i + 8] = 0xdc;
      break;
    }
  }
  auto expect_unsafe = [](std::span<const uint8_t> b, const char* what) {
    try {
      image::decode_image(b, what);
      ADD_FAILURE() << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUnsafe) << what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos);
    }
  };
  expect_unsafe(png, "bomb.png");
  expect_unsafe(test::as_bytes(bmp), "bomb.bmp");
  expect_unsafe(jpg, "bomb.jpg");
}

TEST(ImageDecode, BmpVariantsBuiltByHand) {
  // 16-bit 5-6-5 bit fields, top-down, 2x1: pure red and pure blue.
  std::string s = "BM";
  test::put_u32(s, 0);
  test::put_u32(s, 0);
  test::put_u32(s, 66);
  test::put_u32(s, 40);
  test::put_u32(s, 2);
  test::put_u32(s, static_cast<uint32_t>(-1));
  test::put_u16(s, 1);
  test::put_u16(s, 16);
  test::put_u32(s, 3);  // BI_BITFIELDS
  for (int i = 0; i < 5; ++i) test::put_u32(s, 0);
  test::put_u32(s, 0xf800);
  test::put_u32(s, 0x07e0);
  test::put_u32(s, 0x001f);
  test::put_u16(s, 0xf800);
  test::put_u16(s, 0x001f);
  Image img = image::decode_image(test::as_bytes(s), "565.bmp");
  ASSERT_EQ(img.width, 2);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{255, 0, 0, 0, 0, 255}));
  // RLE is refused as unsupported, naming the file.
  s[30] = 1;
  try {
    image::decode_image(test::as_bytes(s), "rle.bmp");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("rle.bmp"), std::string::npos);
  }
}

TEST(ImageDecode, OwnBmpEncoderRoundTrips) {
  for (int w : {1, 2, 3, 5, 8}) {
    Image img = test::pattern_image(w, 3, static_cast<uint32_t>(w));
    Image back = image::decode_image(test::as_bytes(test::encode_bmp24(img)), "x.bmp");
    EXPECT_EQ(back.pixels, img.pixels) << w;
  }
}

TEST(ImageDecode, EveryTruncationOfABmpIsAnError) {
  const std::string bmp = test::encode_bmp24(test::pattern_image(5, 4, 1));
  for (size_t n = 0; n < bmp.size() - 1; ++n) {  // the last pad byte may go: the pixels are complete
    EXPECT_THROW(image::decode_image(test::as_bytes(bmp.substr(0, n)), "t.bmp"), Error) << n;
  }
}

TEST(ImageDecode, UnknownFormatsAreNamed) {
  const std::string webp("RIFF\x10\0\0\0WEBPVP8 ", 16);
  try {
    image::decode_image(test::as_bytes(webp), "a.webp");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("WebP"), std::string::npos);
  }
}

TEST(ExifOrientation, MalformedBlocksMeanNoRotation) {
  // "II", 42, IFD at 8, one entry: Orientation SHORT 1 = 6.
  std::vector<uint8_t> t = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0};
  EXPECT_EQ(image::exif_orientation(t), 6);
  std::vector<uint8_t> mm = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0};
  EXPECT_EQ(image::exif_orientation(mm), 8);
  for (size_t n = 0; n < t.size() - 2; ++n) {  // the value's high bytes are not needed
    EXPECT_EQ(image::exif_orientation(std::span(t).first(n)), n >= 20 ? 6 : 1) << n;
  }
  auto bad = t;
  bad[4] = 0xff;  // IFD offset past the end
  EXPECT_EQ(image::exif_orientation(bad), 1);
  bad = t;
  bad[18] = 9;  // out of range
  EXPECT_EQ(image::exif_orientation(bad), 1);
  bad = t;
  bad[8] = 0xff, bad[9] = 0xff;  // 65535 entries claimed, none of them Orientation
  bad[10] = 0x13;
  EXPECT_EQ(image::exif_orientation(bad), 1);
}

TEST(ExifOrientation, TransformsComposeLikeTheSpecSays) {
  Image img = test::pattern_image(4, 3, 7);
  // 3 = 2 then 4 (mirror both ways); 6 applied four times... is the identity after 8, 6 once more.
  Image r180 = image::apply_orientation(image::apply_orientation(img, 2), 4);
  EXPECT_EQ(r180.pixels, image::apply_orientation(img, 3).pixels);
  Image cw = image::apply_orientation(img, 6), ccw = image::apply_orientation(img, 8);
  EXPECT_EQ(cw.width, 3);
  EXPECT_EQ(image::apply_orientation(cw, 8).pixels, img.pixels);
  EXPECT_EQ(image::apply_orientation(ccw, 6).pixels, img.pixels);
  EXPECT_EQ(image::apply_orientation(image::apply_orientation(img, 5), 5).pixels, img.pixels);
  EXPECT_EQ(image::apply_orientation(image::apply_orientation(img, 7), 7).pixels, img.pixels);
}

}  // namespace
}  // namespace modex
