#include "io/dataset/npy.h"

#include <fmt/format.h>

#include <cstring>
#include <string_view>

#include "core/error.h"
#include "core/file_util.h"

namespace modex::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

struct DescrEntry {
  DType dtype;
  const char* descr;
};
// numpy's names; byte-sized types have no byte order ('|').
constexpr DescrEntry kDescrs[] = {
    {DType::kFloat32, "<f4"}, {DType::kFloat64, "<f8"}, {DType::kFloat16, "<f2"}, {DType::kInt8, "|i1"},
    {DType::kUInt8, "|u1"},   {DType::kInt16, "<i2"},   {DType::kUInt16, "<u2"},  {DType::kInt32, "<i4"},
    {DType::kUInt32, "<u4"},  {DType::kInt64, "<i8"},   {DType::kUInt64, "<u8"},  {DType::kBool, "|b1"},
};

const char* descr_of(DType t) {
  for (const auto& e : kDescrs) {
    if (e.dtype == t) return e.descr;
  }
  throw Error(fmt::format("{} tensors cannot be written as .npy", dtype_name(t)), ErrorKind::kUnsupported);
}

// A tiny parser for the header's Python dict literal: {'descr': '<f4', 'fortran_order': False,
// 'shape': (1, 3), }. Only what numpy writes is accepted.
class HeaderParser {
 public:
  HeaderParser(std::string_view s, const std::string& name) : s_(s), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("malformed .npy header: {} at offset {}", what, pos_)).file(name_);
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }
  bool consume(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!consume(c)) fail(fmt::format("expected '{}'", c));
  }
  std::string string_literal() {
    skip_space();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a string");
    const char q = s_[pos_++];
    const size_t end = s_.find(q, pos_);
    if (end == std::string_view::npos) fail("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  std::string word() {
    skip_space();
    const size_t start = pos_;
    while (pos_ < s_.size() && std::isalpha(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    return std::string(s_.substr(start, pos_ - start));
  }
  int64_t integer() {
    skip_space();
    int64_t v = 0;
    const size_t start = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      if (v > (INT64_MAX - 9) / 10) fail("dimension too large");
      v = v * 10 + (s_[pos_++] - '0');
    }
    if (pos_ == start) fail("expected a dimension");
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 longs
    return v;
  }
  Dims shape() {
    expect('(');
    Dims d;
    while (!consume(')')) {
      if (d.size() >= 32) fail("too many dimensions");
      d.push_back(integer());
      if (!consume(',')) {
        expect(')');
        break;
      }
    }
    return d;
  }
  bool at_end() {
    skip_space();
    return pos_ >= s_.size();
  }

 private:
  std::string_view s_;
  const std::string& name_;
  size_t pos_ = 0;
};

}  // namespace

std::string encode(const Tensor& t) {
  std::string shape;
  for (int64_t d : t.shape()) shape += fmt::format("{}, ", d);
  if (t.rank() == 1) {
    shape.pop_back();  // (n,)
  } else if (t.rank() > 1) {
    shape.resize(shape.size() - 2);
  }
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr_of(t.dtype()), shape);
  // Pad with spaces so the data starts 64-byte aligned (what numpy writes), newline last.
  const size_t unpadded = kMagicSize + 2 + 2 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  check(dict.size() <= 0xffff, "tensor rank too large for an .npy v1.0 header", ErrorKind::kUnsupported);
  std::string out(kMagic, kMagicSize);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  if (t.numel() > 0) out.append(reinterpret_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

void write(const std::filesystem::path& path, const Tensor& t) {
  const std::string bytes = encode(t);
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

Tensor decode(std::span<const uint8_t> b, const std::string& name) {
  if (b.size() < kMagicSize + 4 || std::memcmp(b.data(), kMagic, kMagicSize) != 0) {
    throw Error("not an .npy file (bad magic)").file(name);
  }
  const uint8_t major = b[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = b[8] | (size_t{b[9]} << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) throw Error("truncated .npy header").file(name);
    header_len = b[8] | (size_t{b[9]} << 8) | (size_t{b[10]} << 16) | (size_t{b[11]} << 24);
    header_start = 12;
  } else {
    throw Error(fmt::format("unsupported .npy format version {}.{}", major, b[7]), ErrorKind::kUnsupported).file(name);
  }
  if (header_len > b.size() - header_start) throw Error("truncated .npy header").file(name);
  const std::string_view header(reinterpret_cast<const char*>(b.data() + header_start), header_len);

  HeaderParser p(header, name);
  std::optional<std::string> descr;
  std::optional<bool> fortran;
  std::optional<Dims> shape;
  p.expect('{');
  while (!p.consume('}')) {
    const std::string key = p.string_literal();
    p.expect(':');
    if (key == "descr") {
      descr = p.string_literal();
    } else if (key == "fortran_order") {
      const std::string w = p.word();
      if (w != "True" && w != "False") p.fail("fortran_order must be True or False");
      fortran = w == "True";
    } else if (key == "shape") {
      shape = p.shape();
    } else {
      p.fail(fmt::format("unexpected key '{}'", key));
    }
    if (!p.consume(',')) {
      p.expect('}');
      break;
    }
  }
  if (!p.at_end()) p.fail("trailing characters");
  if (!descr || !fortran || !shape) throw Error("malformed .npy header: descr, fortran_order and shape are required").file(name);
  if (*fortran) throw Error("Fortran-ordered .npy arrays are not supported", ErrorKind::kUnsupported).file(name);
  std::optional<DType> dtype;
  std::string d = *descr;
  if (d.size() == 3 && d[0] == '=') d[0] = '<';  // native order on the little-endian hosts modex runs on
  if (d.size() == 3 && (d[1] == 'i' || d[1] == 'u' || d[1] == 'b') && d[2] == '1') d[0] = '|';
  for (const auto& e : kDescrs) {
    if (d == e.descr) dtype = e.dtype;
  }
  if (!dtype) throw Error(fmt::format("unsupported .npy dtype '{}'", *descr), ErrorKind::kUnsupported).file(name);

  int64_t numel;
  try {
    numel = checked_numel(*shape);
  } catch (Error& e) {
    throw e.file(name);
  }
  const size_t data_start = header_start + header_len;
  const uint64_t esize = dtype_size(*dtype);
  if (static_cast<uint64_t>(numel) > (b.size() - data_start) / esize || static_cast<uint64_t>(numel) * esize != b.size() - data_start) {
    throw Error(fmt::format("truncated or oversized .npy data: shape {} of {} needs {} bytes, the file has {}",
                            dims_to_string(*shape), dtype_name(*dtype),
                            static_cast<uint64_t>(numel) <= UINT64_MAX / esize ? static_cast<uint64_t>(numel) * esize : UINT64_MAX,
                            b.size() - data_start))
        .file(name);
  }
  Tensor t = Tensor::empty(*dtype, *shape);
  if (numel > 0) std::memcpy(t.raw_mutable(), b.data() + data_start, t.nbytes());
  return t;
}

Tensor read(const std::filesystem::path& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode(bytes, path.string());
}

}  // namespace modex::npy
