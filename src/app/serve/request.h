// The request side of `modex serve` without any HTTP library: where the image bytes are in a
// body (raw upload or multipart/form-data), which content types are accepted, the `?top=` value,
// and the command-line specs of models and routes. Everything here reads untrusted bytes, is
// bounds-checked, and reports problems as HttpError with the status the client should get.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace modex::app::serve {

// A request the server refuses: the HTTP status and a message for the JSON error body.
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& message, int retry_after_seconds = 0)
      : std::runtime_error(message), status_(status), retry_after_(retry_after_seconds) {}
  int status() const { return status_; }
  int retry_after_seconds() const { return retry_after_; }  // 0: no Retry-After header

 private:
  int status_;
  int retry_after_;
};

// "Image/JPEG; charset=x" -> "image/jpeg".
std::string media_type(std::string_view content_type);
// A parameter of a Content-Type or Content-Disposition value (quoted or not), "" when absent.
std::string header_parameter(std::string_view header_value, std::string_view name);

struct MultipartPart {
  std::string name;           // Content-Disposition's name
  std::string filename;       // Content-Disposition's filename ("" for plain fields)
  std::string content_type;   // the part's media type, "" when not given
  std::string_view data;      // a view into the body
};

inline constexpr size_t kMaxMultipartParts = 64;

// RFC 2046/7578 multipart body split into parts (views into `body`). Throws HttpError(400) on a
// malformed body: missing delimiters, unterminated headers, no closing delimiter, too many parts.
std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view boundary);

struct ImageUpload {
  std::string_view bytes;  // a view into the request body
  std::string filename;    // from the multipart part, "" for raw uploads
};

// The image in a predict request. Raw bodies: Content-Type image/jpeg, image/png, image/bmp,
// application/octet-stream or none. multipart/form-data: the part named "image" or "file", else
// the first part with a filename, else the only part. Throws HttpError 415 for another content
// type, 400 for an empty body, a malformed multipart body or bytes that are not JPEG/PNG/BMP.
ImageUpload extract_image(std::string_view content_type, std::string_view body);

inline constexpr int kMaxTop = 1000;
// The `?top=` value: "" gives `fallback`; otherwise an integer 1..kMaxTop (HttpError 400).
int parse_top(std::string_view value, int fallback = 5);

// `name=path` or `path` (the name is then the file stem). Throws modex::Error on an empty name
// or path, or a name with characters outside [A-Za-z0-9._-].
struct ModelSpec {
  std::string name;
  std::string path;
};
ModelSpec parse_model_spec(std::string_view spec);
bool valid_model_name(std::string_view name);

}  // namespace modex::app::serve
