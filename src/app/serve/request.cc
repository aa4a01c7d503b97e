#include "app/serve/request.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <span>

#include "core/error.h"
#include "io/image/image.h"

namespace modex::app::serve {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// What a raw body or a multipart part may declare itself as.
bool image_media_type(std::string_view type) {
  return type.empty() || type == "image/jpeg" || type == "image/jpg" || type == "image/pjpeg" || type == "image/png" ||
         type == "image/bmp" || type == "image/x-ms-bmp" || type == "image/x-bmp" || type == "application/octet-stream";
}

// Content-Type value for messages: printable ASCII only, at most 100 characters.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 100)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 100) out += "...";
  return out;
}

const std::string_view kAccepted =
    "send the image as the body with Content-Type image/jpeg, image/png, image/bmp or application/octet-stream, "
    "or as a multipart/form-data upload (field \"image\")";

}  // namespace

std::string media_type(std::string_view content_type) {
  std::string_view t = trim(content_type.substr(0, content_type.find(';')));
  std::string out(t);
  for (char& c : out) c = lower(c);
  return out;
}

std::string header_parameter(std::string_view value, std::string_view name) {
  // Walk "type; a=b; c="d;e"" parameter by parameter, honouring quotes.
  size_t i = value.find(';');
  while (i != std::string_view::npos && i < value.size()) {
    ++i;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    size_t eq = i;
    while (eq < value.size() && value[eq] != '=' && value[eq] != ';') ++eq;
    std::string_view key = trim(value.substr(i, eq - i));
    if (eq >= value.size() || value[eq] == ';') {
      i = eq < value.size() ? eq : std::string_view::npos;
      continue;
    }
    size_t v = eq + 1;
    while (v < value.size() && (value[v] == ' ' || value[v] == '\t')) ++v;
    std::string val;
    size_t next;
    if (v < value.size() && value[v] == '"') {
      size_t j = v + 1;
      while (j < value.size() && value[j] != '"') {
        if (value[j] == '\\' && j + 1 < value.size()) ++j;
        val += value[j];
        ++j;
      }
      next = value.find(';', std::min(j, value.size()));
    } else {
      next = value.find(';', v);
      val = std::string(trim(value.substr(v, next == std::string_view::npos ? std::string_view::npos : next - v)));
    }
    if (iequals(key, name)) return val;
    i = next;
  }
  return "";
}

std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view boundary) {
  if (boundary.empty() || boundary.size() > 70)
    throw HttpError(400, "multipart/form-data needs a boundary parameter of 1 to 70 characters");
  const std::string delimiter = "--" + std::string(boundary);
  // The first delimiter starts the body or follows a preamble line.
  size_t pos;
  if (body.substr(0, delimiter.size()) == delimiter) {
    pos = 0;
  } else {
    pos = body.find("\r\n" + delimiter);
    if (pos == std::string_view::npos) throw HttpError(400, "malformed multipart body: the boundary never occurs");
    pos += 2;
  }
  const std::string separator = "\r\n" + delimiter;
  std::vector<MultipartPart> parts;
  while (true) {
    pos += delimiter.size();
    if (body.substr(pos, 2) == "--") return parts;  // closing delimiter (an epilogue is ignored)
    // Transport padding, then CRLF.
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n") throw HttpError(400, "malformed multipart body: no line break after a boundary");
    pos += 2;
    if (parts.size() >= kMaxMultipartParts)
      throw HttpError(400, fmt::format("multipart body has more than {} parts", kMaxMultipartParts));
    size_t headers_end = body.find("\r\n\r\n", pos);
    size_t data_start;
    if (body.substr(pos, 2) == "\r\n") {  // a part without headers
      headers_end = pos;
      data_start = pos + 2;
    } else {
      if (headers_end == std::string_view::npos)
        throw HttpError(400, "malformed multipart body: a part's headers are not terminated");
      data_start = headers_end + 4;
    }
    MultipartPart part;
    std::string_view headers = body.substr(pos, headers_end - pos);
    while (!headers.empty()) {
      size_t eol = headers.find("\r\n");
      std::string_view line = headers.substr(0, eol);
      headers = eol == std::string_view::npos ? std::string_view() : headers.substr(eol + 2);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) throw HttpError(400, "malformed multipart body: a part header has no ':'");
      std::string_view key = trim(line.substr(0, colon)), value = trim(line.substr(colon + 1));
      if (iequals(key, "content-disposition")) {
        part.name = header_parameter(value, "name");
        part.filename = header_parameter(value, "filename");
      } else if (iequals(key, "content-type")) {
        part.content_type = media_type(value);
      }
    }
    size_t end = body.find(separator, data_start);
    if (end == std::string_view::npos)
      throw HttpError(400, "malformed multipart body: a part is not followed by a boundary (truncated upload?)");
    part.data = body.substr(data_start, end - data_start);
    parts.push_back(std::move(part));
    pos = end + 2;
  }
}

ImageUpload extract_image(std::string_view content_type, std::string_view body) {
  std::string type = media_type(content_type);
  ImageUpload up;
  if (type == "multipart/form-data") {
    std::vector<MultipartPart> parts = parse_multipart(body, header_parameter(content_type, "boundary"));
    const MultipartPart* chosen = nullptr;
    for (const auto& p : parts)
      if (!chosen && (p.name == "image" || p.name == "file")) chosen = &p;
    for (const auto& p : parts)
      if (!chosen && !p.filename.empty()) chosen = &p;
    if (!chosen && parts.size() == 1) chosen = &parts[0];
    if (!chosen)
      throw HttpError(400, fmt::format("multipart upload has {} parts and none is named \"image\" or \"file\" or carries "
                                       "a filename",
                                       parts.size()));
    if (!image_media_type(chosen->content_type))
      throw HttpError(415, fmt::format("the uploaded part has content type {}; {}", printable(chosen->content_type), kAccepted));
    up.bytes = chosen->data;
    up.filename = chosen->filename;
  } else if (image_media_type(type)) {
    up.bytes = body;
  } else {
    throw HttpError(415, fmt::format("unsupported content type {}; {}", printable(type), kAccepted));
  }
  if (up.bytes.empty()) throw HttpError(400, "the request carries no image (empty body)");
  auto format = image::detect_format(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(up.bytes.data()), up.bytes.size()));
  if (format == image::Format::kUnknown)
    throw HttpError(400, fmt::format("the upload ({} bytes) is not a JPEG, PNG or BMP image", up.bytes.size()));
  return up;
}

int parse_top(std::string_view value, int fallback) {
  if (value.empty()) return fallback;
  int top = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), top);
  if (ec != std::errc() || end != value.data() + value.size() || top < 1 || top > kMaxTop)
    throw HttpError(400, fmt::format("top must be an integer from 1 to {}, got '{}'", kMaxTop, printable(value)));
  return top;
}

bool valid_model_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

ModelSpec parse_model_spec(std::string_view spec) {
  ModelSpec m;
  size_t eq = spec.find('=');
  if (eq != std::string_view::npos) {
    m.name = std::string(spec.substr(0, eq));
    m.path = std::string(spec.substr(eq + 1));
  } else {
    m.path = std::string(spec);
    m.name = std::filesystem::path(m.path).stem().string();
  }
  if (m.path.empty()) throw Error(fmt::format("model '{}': no file given (use NAME=PATH or PATH)", spec));
  if (!valid_model_name(m.name))
    throw Error(fmt::format("model name '{}' (from '{}') must be 1-128 characters of A-Z a-z 0-9 . _ -", m.name, spec))
        .hint("name it explicitly: NAME=PATH");
  return m;
}

}  // namespace modex::app::serve
