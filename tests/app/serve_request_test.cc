// `modex serve` request parsing: content types, multipart bodies, ?top=, model specs.
#include "app/serve/request.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace modex::app::serve {
namespace {

// The smallest bytes that pass format detection (decoding is tested with the image decoders).
const std::string kJpeg = std::string("\xff\xd8\xff\xe0", 4) + "rest of a jpeg";
const std::string kPng = std::string("\x89PNG\r\n\x1a\n", 8) + "rest of a png";

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const HttpError& e) {
    return e.status();
  }
  return 200;
}

std::string multipart(const std::string& boundary, const std::vector<std::array<std::string, 4>>& parts) {
  std::string body = "preamble to ignore\r\n";
  for (const auto& [name, filename, type, data] : parts) {
    body += "--" + boundary + "\r\n";
    body += "Content-Disposition: form-data; name=\"" + name + "\"";
    if (!filename.empty()) body += "; filename=\"" + filename + "\"";
    body += "\r\n";
    if (!type.empty()) body += "Content-Type: " + type + "\r\n";
    body += "\r\n" + data + "\r\n";
  }
  return body + "--" + boundary + "--\r\nepilogue";
}

TEST(ServeRequest, MediaTypeAndParameters) {
  EXPECT_EQ(media_type("Image/JPEG; charset=binary"), "image/jpeg");
  EXPECT_EQ(media_type("  multipart/form-data ; boundary=x"), "multipart/form-data");
  EXPECT_EQ(media_type(""), "");
  EXPECT_EQ(header_parameter("multipart/form-data; boundary=abc", "boundary"), "abc");
  EXPECT_EQ(header_parameter("multipart/form-data; BOUNDARY=\"a;b c\"", "boundary"), "a;b c");
  EXPECT_EQ(header_parameter("form-data; name=\"image\"; filename=\"x\\\"y.jpg\"", "filename"), "x\"y.jpg");
  EXPECT_EQ(header_parameter("form-data; filename=\"a.jpg\"; name=image", "name"), "image");
  EXPECT_EQ(header_parameter("form-data; novalue; name=z", "name"), "z");
  EXPECT_EQ(header_parameter("form-data", "name"), "");
}

TEST(ServeRequest, RawUploads) {
  for (const char* type : {"image/jpeg", "image/png", "application/octet-stream", "", "IMAGE/JPEG; q=1"}) {
    ImageUpload up = extract_image(type, kJpeg);
    EXPECT_EQ(up.bytes, kJpeg) << type;
    EXPECT_EQ(up.filename, "");
  }
  EXPECT_EQ(extract_image("image/png", kPng).bytes, kPng);
}

TEST(ServeRequest, StatusCodesForBadUploads) {
  EXPECT_EQ(status_of([] { extract_image("text/plain", kJpeg); }), 415);
  EXPECT_EQ(status_of([] { extract_image("application/json", "{}"); }), 415);
  EXPECT_EQ(status_of([] { extract_image("application/x-www-form-urlencoded", kJpeg); }), 415);
  EXPECT_EQ(status_of([] { extract_image("image/gif", "GIF89a"); }), 415);
  EXPECT_EQ(status_of([] { extract_image("image/jpeg", ""); }), 400);
  EXPECT_EQ(status_of([] { extract_image("image/jpeg", "this is not an image"); }), 400);
  EXPECT_EQ(status_of([] { extract_image("multipart/form-data", "x"); }), 400);  // no boundary
}

TEST(ServeRequest, MultipartPicksTheImagePart) {
  std::string body = multipart("XyZ", {{"comment", "", "", "hello"}, {"image", "cat.jpg", "image/jpeg", kJpeg}});
  ImageUpload up = extract_image("multipart/form-data; boundary=XyZ", body);
  EXPECT_EQ(up.bytes, kJpeg);
  EXPECT_EQ(up.filename, "cat.jpg");

  // No "image"/"file" field: the first part with a filename.
  body = multipart("b", {{"note", "", "text/plain", "n"}, {"upload", "p.png", "", kPng}});
  EXPECT_EQ(extract_image("multipart/form-data; boundary=b", body).bytes, kPng);

  // A lone part without a filename.
  body = multipart("b", {{"whatever", "", "", kPng}});
  EXPECT_EQ(extract_image("multipart/form-data; boundary=\"b\"", body).bytes, kPng);

  // Binary data with CR/LF and dashes inside is kept byte for byte.
  std::string tricky = kPng + std::string("\r\n--not-the-boundary\r\n\0\xff", 25);
  body = multipart("realboundary", {{"file", "t.png", "application/octet-stream", tricky}});
  EXPECT_EQ(extract_image("multipart/form-data; boundary=realboundary", body).bytes, tricky);
}

TEST(ServeRequest, MultipartErrors) {
  const char* ct = "multipart/form-data; boundary=b";
  std::string good = multipart("b", {{"image", "a.jpg", "image/jpeg", kJpeg}});
  // A wrongly typed part is 415; a non-image part 400.
  EXPECT_EQ(status_of([&] { extract_image(ct, multipart("b", {{"image", "a.txt", "text/plain", "hi"}})); }), 415);
  EXPECT_EQ(status_of([&] { extract_image(ct, multipart("b", {{"image", "a.jpg", "image/jpeg", "hi"}})); }), 400);
  // Several parts, none recognisable.
  EXPECT_EQ(status_of([&] { extract_image(ct, multipart("b", {{"a", "", "", kJpeg}, {"b", "", "", kJpeg}})); }), 400);
  // No closing delimiter (a truncated upload), missing boundary, unterminated headers.
  EXPECT_EQ(status_of([&] { extract_image(ct, good.substr(0, good.size() - 20)); }), 400);
  EXPECT_EQ(status_of([&] { extract_image("multipart/form-data; boundary=zz", good); }), 400);
  EXPECT_EQ(status_of([&] { extract_image(ct, "--b\r\nContent-Disposition: form-data; name=image"); }), 400);
  EXPECT_EQ(status_of([&] { extract_image(ct, "--b\r\nno colon here\r\n\r\ndata\r\n--b--"); }), 400);
  EXPECT_EQ(status_of([&] { extract_image(ct, "--bXX"); }), 400);
  EXPECT_EQ(status_of([&] { extract_image(ct, "--b--"); }), 400);  // no parts at all
  EXPECT_EQ(status_of([&] { extract_image("multipart/form-data; boundary=" + std::string(71, 'a'), good); }), 400);
  // Too many parts.
  std::string many = "";
  for (int i = 0; i < 100; ++i) many += "--b\r\n\r\nx\r\n";
  many += "--b--";
  EXPECT_EQ(status_of([&] { extract_image(ct, many); }), 400);
}

TEST(ServeRequest, ParseMultipartParts) {
  std::string body = "--q\r\nContent-Disposition: form-data; name=\"a\"\r\ncontent-type: Image/PNG\r\n\r\n1\r\n"
                     "--q \t\r\n\r\n22\r\n--q--";
  auto parts = parse_multipart(body, "q");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "a");
  EXPECT_EQ(parts[0].content_type, "image/png");
  EXPECT_EQ(parts[0].data, "1");
  EXPECT_EQ(parts[1].name, "");
  EXPECT_EQ(parts[1].data, "22");
}

TEST(ServeRequest, Top) {
  EXPECT_EQ(parse_top("", 5), 5);
  EXPECT_EQ(parse_top("1"), 1);
  EXPECT_EQ(parse_top("1000"), 1000);
  for (const char* bad : {"0", "-1", "1001", "abc", "3x", " 3", "99999999999999999999"})
    EXPECT_EQ(status_of([&] { parse_top(bad); }), 400) << bad;
}

TEST(ServeRequest, ModelSpecs) {
  ModelSpec a = parse_model_spec("/models/mobilenet_v2.onnx");
  EXPECT_EQ(a.name, "mobilenet_v2");
  EXPECT_EQ(a.path, "/models/mobilenet_v2.onnx");
  ModelSpec b = parse_model_spec("fast=/m/x=y.tflite");
  EXPECT_EQ(b.name, "fast");
  EXPECT_EQ(b.path, "/m/x=y.tflite");
  EXPECT_THROW(parse_model_spec("name="), Error);
  EXPECT_THROW(parse_model_spec("bad name=x.onnx"), Error);
  EXPECT_THROW(parse_model_spec("=x.onnx"), Error);
  EXPECT_THROW(parse_model_spec("a/b=x.onnx"), Error);
}

}  // namespace
}  // namespace modex::app::serve
