#include "io/onnx/reader_tensor.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/half.h"

namespace modex::onnx_io::reader {
namespace {

namespace fs = std::filesystem;
using TP = onnx::TensorProto;

static_assert(std::endian::native == std::endian::little,
              "raw_data is little-endian; the importer copies it as is");

Error tensor_error(const onnx::TensorProto& t, const std::string& msg,
                   ErrorKind kind = ErrorKind::kInvalidInput) {
  Error e(msg, kind);
  e.tensor(t.name());
  return e;
}

// numel * itemsize, or an error when that cannot be a size in memory.
size_t byte_size(const onnx::TensorProto& t, int64_t numel, DType dtype) {
  size_t item = dtype_size(dtype);
  if (static_cast<uint64_t>(numel) > std::numeric_limits<size_t>::max() / item)
    throw tensor_error(t, "has too many elements (" + std::to_string(numel) + ")");
  return static_cast<size_t>(numel) * item;
}

std::string shape_text(const onnx::TensorProto& t) {
  return dims_to_string(Dims(t.dims().begin(), t.dims().end()));
}

// Copies a typed repeated field (float_data, int64_data, ...) into a tensor of the same element
// type.
template <typename Field>
void copy_same(const Field& field, Tensor& out) {
  if (!field.empty()) std::memcpy(out.raw_mutable(), field.data(), out.nbytes());
}

// int32_data carries every dtype narrower than 32 bits (and float16/bfloat16 as bit patterns);
// a value outside the dtype's range means a corrupt file.
template <typename T>
void copy_narrow(const onnx::TensorProto& t, Tensor& out, int64_t lo, int64_t hi) {
  T* dst = out.data_mutable<T>();
  for (int i = 0; i < t.int32_data_size(); ++i) {
    int64_t v = t.int32_data(i);
    if (v < lo || v > hi)
      throw tensor_error(t, "int32_data value " + std::to_string(v) + " does not fit " +
                                std::string(dtype_name(out.dtype())));
    dst[i] = static_cast<T>(v);
  }
}

// The typed field ONNX stores each dtype in.
enum class Field { kFloat, kInt32, kInt64, kDouble, kUInt64 };

Field field_for(DType t) {
  switch (t) {
    case DType::kFloat32:
      return Field::kFloat;
    case DType::kFloat64:
      return Field::kDouble;
    case DType::kInt64:
      return Field::kInt64;
    case DType::kUInt32:
    case DType::kUInt64:
      return Field::kUInt64;
    default:
      return Field::kInt32;
  }
}

int field_count(const onnx::TensorProto& t, Field f) {
  switch (f) {
    case Field::kFloat:
      return t.float_data_size();
    case Field::kInt32:
      return t.int32_data_size();
    case Field::kInt64:
      return t.int64_data_size();
    case Field::kDouble:
      return t.double_data_size();
    case Field::kUInt64:
      return t.uint64_data_size();
  }
  return 0;
}

Tensor from_typed_fields(const onnx::TensorProto& t, DType dtype, const Dims& dims, int64_t numel) {
  Field f = field_for(dtype);
  int total = t.float_data_size() + t.int32_data_size() + t.int64_data_size() +
              t.double_data_size() + t.uint64_data_size() + t.string_data_size();
  int count = field_count(t, f);
  if (total != count)
    throw tensor_error(t, "stores " + std::string(dtype_name(dtype)) +
                              " data in a typed field other than the one ONNX defines for it");
  if (count != numel)
    throw tensor_error(t, "has " + std::to_string(count) +
                              " values in its typed data field but shape " + shape_text(t) +
                              " needs " + std::to_string(numel));
  Tensor out = Tensor::zeros(dtype, dims);
  switch (dtype) {
    case DType::kFloat32:
      copy_same(t.float_data(), out);
      break;
    case DType::kFloat64:
      copy_same(t.double_data(), out);
      break;
    case DType::kInt64:
      copy_same(t.int64_data(), out);
      break;
    case DType::kUInt64:
      copy_same(t.uint64_data(), out);
      break;
    case DType::kUInt32: {
      uint32_t* dst = out.data_mutable<uint32_t>();
      for (int i = 0; i < count; ++i) {
        uint64_t v = t.uint64_data(i);
        if (v > std::numeric_limits<uint32_t>::max())
          throw tensor_error(t, "uint64_data value " + std::to_string(v) + " does not fit uint32");
        dst[i] = static_cast<uint32_t>(v);
      }
      break;
    }
    case DType::kInt32:
      copy_same(t.int32_data(), out);
      break;
    case DType::kInt16:
      copy_narrow<int16_t>(t, out, INT16_MIN, INT16_MAX);
      break;
    case DType::kUInt16:
    case DType::kFloat16:
    case DType::kBFloat16:
      copy_narrow<uint16_t>(t, out, 0, UINT16_MAX);
      break;
    case DType::kInt8:
      copy_narrow<int8_t>(t, out, INT8_MIN, INT8_MAX);
      break;
    case DType::kUInt8:
      copy_narrow<uint8_t>(t, out, 0, UINT8_MAX);
      break;
    case DType::kBool:
      copy_narrow<uint8_t>(t, out, 0, 1);
      break;
  }
  return out;
}

uint64_t parse_external_number(const onnx::TensorProto& t, const std::string& key,
                               const std::string& text) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    throw tensor_error(t, "external data " + key + " '" + text + "' is not a non-negative integer");
  return v;
}

// A location must name a file inside `dir`: relative, without `..`, and (after resolving
// symlinks) still below the folder, so a model cannot make modex read arbitrary files.
fs::path resolve_location(const onnx::TensorProto& t, const fs::path& dir,
                          const std::string& location) {
  fs::path rel(location);
  if (location.empty() || location.find('\0') != std::string::npos)
    throw tensor_error(t, "external data location is empty or invalid");
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory())
    throw tensor_error(t,
                       "external data location '" + location +
                           "' is an absolute path; it must be relative to the model's folder",
                       ErrorKind::kUnsafe);
  for (const fs::path& part : rel)
    if (part == "..")
      throw tensor_error(t, "external data location '" + location + "' leaves the model's folder",
                         ErrorKind::kUnsafe);
  std::error_code ec;
  fs::path base = fs::canonical(dir, ec);
  if (ec)
    throw tensor_error(
        t, "cannot resolve the external data folder " + dir.string() + ": " + ec.message(),
        ErrorKind::kIo);
  fs::path full = fs::weakly_canonical(base / rel, ec);
  if (ec)
    throw tensor_error(
        t, "cannot resolve external data file " + (dir / rel).string() + ": " + ec.message(),
        ErrorKind::kIo);
  auto [b, f] = std::mismatch(base.begin(), base.end(), full.begin(), full.end());
  if (b != base.end())
    throw tensor_error(t,
                       "external data location '" + location +
                           "' resolves outside the model's folder (" + full.string() + ")",
                       ErrorKind::kUnsafe);
  return full;
}

Tensor from_external_data(const onnx::TensorProto& t, DType dtype, const Dims& dims, int64_t numel,
                          const fs::path& dir) {
  if (dir.empty())
    throw tensor_error(t,
                       "uses external data, which is only read when importing from a file (or with "
                       "external_data_dir set)",
                       ErrorKind::kUnsupported);
  if (t.has_raw_data() || field_count(t, field_for(dtype)) > 0)
    throw tensor_error(t, "has both external data and inline data");
  std::string location;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  for (const auto& kv : t.external_data()) {
    if (kv.key() == "location")
      location = kv.value();
    else if (kv.key() == "offset")
      offset = parse_external_number(t, "offset", kv.value());
    else if (kv.key() == "length")
      length = parse_external_number(t, "length", kv.value());
    else if (kv.key() !=
             "checksum")  // an optional SHA-1 of the bytes; the size checks below suffice
      throw tensor_error(t, "unknown external data key '" + kv.key() + "'",
                         ErrorKind::kUnsupported);
  }
  size_t nbytes = byte_size(t, numel, dtype);
  if (length && *length != nbytes)
    throw tensor_error(t, "external data length " + std::to_string(*length) +
                              " does not match shape " + shape_text(t) + " of " +
                              std::string(dtype_name(dtype)) + " (" + std::to_string(nbytes) +
                              " bytes)");
  fs::path file = resolve_location(t, dir, location);
  std::error_code ec;
  uint64_t file_size = fs::file_size(file, ec);
  if (ec)
    throw tensor_error(t, "cannot read external data file " + file.string() + ": " + ec.message(),
                       ErrorKind::kIo);
  if (offset > file_size || nbytes > file_size - offset)
    throw tensor_error(t, "external data [" + std::to_string(offset) + ", +" +
                              std::to_string(nbytes) + ") lies beyond the end of " + file.string() +
                              " (" + std::to_string(file_size) + " bytes)");
  Tensor out = Tensor::zeros(dtype, dims);
  std::ifstream in(file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  if (nbytes)
    in.read(reinterpret_cast<char*>(out.raw_mutable()), static_cast<std::streamsize>(nbytes));
  if (!in) throw tensor_error(t, "cannot read external data from " + file.string(), ErrorKind::kIo);
  return out;
}

template <typename T>
T load(const Tensor& t, int64_t i) {
  T v;
  std::memcpy(&v, t.raw() + static_cast<size_t>(i) * sizeof(T), sizeof(T));
  return v;
}

template <typename T>
void store(Tensor& t, int64_t i, T v) {
  std::memcpy(t.raw_mutable() + static_cast<size_t>(i) * sizeof(T), &v, sizeof(T));
}

bool is_integer(DType t) { return !is_float(t); }

// A double as the float type `to`, with overflow going to ±inf as IEEE conversion does
// (a plain static_cast of an out-of-range double is undefined behaviour).
void store_float(Tensor& out, int64_t i, double v) {
  auto narrow = [](double x) -> float {
    if (std::isfinite(x) && std::fabs(x) > std::numeric_limits<float>::max())
      return x > 0 ? std::numeric_limits<float>::infinity()
                   : -std::numeric_limits<float>::infinity();
    return static_cast<float>(x);
  };
  switch (out.dtype()) {
    case DType::kFloat32:
      store<float>(out, i, narrow(v));
      break;
    case DType::kFloat64:
      store<double>(out, i, v);
      break;
    case DType::kFloat16:
      store<uint16_t>(out, i, f32_to_f16(narrow(v)));
      break;
    case DType::kBFloat16:
      store<uint16_t>(out, i, f32_to_bf16(narrow(v)));
      break;
    default:
      break;
  }
}

void store_int(Tensor& out, int64_t i, int64_t v) {
  // Integer -> integer conversion is modular in C++20, matching what runtimes do.
  switch (out.dtype()) {
    case DType::kInt8:
      store<int8_t>(out, i, static_cast<int8_t>(v));
      break;
    case DType::kUInt8:
      store<uint8_t>(out, i, static_cast<uint8_t>(v));
      break;
    case DType::kInt16:
      store<int16_t>(out, i, static_cast<int16_t>(v));
      break;
    case DType::kUInt16:
      store<uint16_t>(out, i, static_cast<uint16_t>(v));
      break;
    case DType::kInt32:
      store<int32_t>(out, i, static_cast<int32_t>(v));
      break;
    case DType::kUInt32:
      store<uint32_t>(out, i, static_cast<uint32_t>(v));
      break;
    case DType::kInt64:
      store<int64_t>(out, i, v);
      break;
    case DType::kUInt64:
      store<uint64_t>(out, i, static_cast<uint64_t>(v));
      break;
    case DType::kBool:
      store<uint8_t>(out, i, v != 0);
      break;
    default:
      break;
  }
}

// Range of an integer dtype as doubles, for checking float -> int conversions.
std::pair<double, double> int_range(DType t) {
  switch (t) {
    case DType::kInt8:
      return {INT8_MIN, INT8_MAX};
    case DType::kUInt8:
      return {0, UINT8_MAX};
    case DType::kInt16:
      return {INT16_MIN, INT16_MAX};
    case DType::kUInt16:
      return {0, UINT16_MAX};
    case DType::kInt32:
      return {INT32_MIN, INT32_MAX};
    case DType::kUInt32:
      return {0, UINT32_MAX};
    // 2^63 and 2^64 are exact doubles; the bounds are exclusive above.
    case DType::kInt64:
      return {-9223372036854775808.0, 9223372036854775807.0};
    case DType::kUInt64:
      return {0, 18446744073709551615.0};
    default:
      return {0, 1};
  }
}

}  // namespace

std::optional<DType> dtype_from_onnx(int32_t data_type) {
  switch (data_type) {
    case TP::FLOAT:
      return DType::kFloat32;
    case TP::UINT8:
      return DType::kUInt8;
    case TP::INT8:
      return DType::kInt8;
    case TP::UINT16:
      return DType::kUInt16;
    case TP::INT16:
      return DType::kInt16;
    case TP::INT32:
      return DType::kInt32;
    case TP::INT64:
      return DType::kInt64;
    case TP::BOOL:
      return DType::kBool;
    case TP::FLOAT16:
      return DType::kFloat16;
    case TP::DOUBLE:
      return DType::kFloat64;
    case TP::UINT32:
      return DType::kUInt32;
    case TP::UINT64:
      return DType::kUInt64;
    case TP::BFLOAT16:
      return DType::kBFloat16;
    default:
      return std::nullopt;
  }
}

std::string onnx_dtype_name(int32_t data_type) {
  if (TP::DataType_IsValid(data_type))
    return TP::DataType_Name(static_cast<TP::DataType>(data_type));
  return "data type " + std::to_string(data_type);
}

Tensor tensor_from_proto(const onnx::TensorProto& proto, const fs::path& external_data_dir) {
  if (proto.has_segment())
    throw tensor_error(proto, "segmented tensors are not supported", ErrorKind::kUnsupported);
  std::optional<DType> dtype = dtype_from_onnx(proto.data_type());
  if (!dtype)
    throw tensor_error(proto, onnx_dtype_name(proto.data_type()) + " tensors are not supported",
                       ErrorKind::kUnsupported);
  Dims dims(proto.dims().begin(), proto.dims().end());
  int64_t numel = 0;
  try {
    numel = checked_numel(dims);
  } catch (Error& e) {
    e.tensor(proto.name());
    throw;
  }
  for (int64_t d : dims)
    if (d > kMaxDim)
      throw tensor_error(proto,
                         "dim " + std::to_string(d) + " is too large (the limit is 2^31 - 1)");
  if (proto.data_location() == TP::EXTERNAL)
    return from_external_data(proto, *dtype, dims, numel, external_data_dir);
  if (proto.external_data_size() > 0)
    throw tensor_error(proto, "has external_data entries but data_location is not EXTERNAL");
  if (proto.has_raw_data()) {
    if (field_count(proto, Field::kFloat) + field_count(proto, Field::kInt32) +
            field_count(proto, Field::kInt64) + field_count(proto, Field::kDouble) +
            field_count(proto, Field::kUInt64) + proto.string_data_size() >
        0)
      throw tensor_error(proto, "has both raw_data and a typed data field");
    size_t nbytes = byte_size(proto, numel, *dtype);
    if (proto.raw_data().size() != nbytes)
      throw tensor_error(proto, "raw_data has " + std::to_string(proto.raw_data().size()) +
                                    " bytes but shape " + shape_text(proto) + " of " +
                                    std::string(dtype_name(*dtype)) + " needs " +
                                    std::to_string(nbytes));
    Tensor out = Tensor::zeros(*dtype, dims);
    if (nbytes) std::memcpy(out.raw_mutable(), proto.raw_data().data(), nbytes);
    return out;
  }
  return from_typed_fields(proto, *dtype, dims, numel);
}

int64_t int_element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kInt8:
      return load<int8_t>(t, i);
    case DType::kUInt8:
      return load<uint8_t>(t, i);
    case DType::kInt16:
      return load<int16_t>(t, i);
    case DType::kUInt16:
      return load<uint16_t>(t, i);
    case DType::kInt32:
      return load<int32_t>(t, i);
    case DType::kUInt32:
      return load<uint32_t>(t, i);
    case DType::kInt64:
      return load<int64_t>(t, i);
    case DType::kUInt64:
      return static_cast<int64_t>(load<uint64_t>(t, i));
    case DType::kBool:
      return load<uint8_t>(t, i) != 0;
    default:
      break;
  }
  throw Error("int_element on a float tensor", ErrorKind::kInternal);
}

double float_element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat32:
      return load<float>(t, i);
    case DType::kFloat64:
      return load<double>(t, i);
    case DType::kFloat16:
      return f16_to_f32(load<uint16_t>(t, i));
    case DType::kBFloat16:
      return bf16_to_f32(load<uint16_t>(t, i));
    case DType::kUInt64:
      return static_cast<double>(load<uint64_t>(t, i));
    default:
      return static_cast<double>(int_element(t, i));
  }
}

Tensor cast_tensor(const Tensor& t, DType to) {
  if (t.dtype() == to) return t;
  Tensor out = Tensor::zeros(to, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (is_float(to)) {
      store_float(out, i, float_element(t, i));
    } else if (is_integer(t.dtype())) {
      store_int(out, i, int_element(t, i));
    } else if (to == DType::kBool) {
      store_int(out, i, float_element(t, i) != 0.0);
    } else {
      double v = std::trunc(float_element(t, i));
      auto [lo, hi] = int_range(to);
      // hi is exclusive for the 64-bit types, where it rounds up to a power of two.
      bool wide = to == DType::kInt64 || to == DType::kUInt64;
      if (!std::isfinite(v) || v < lo || (wide ? v >= hi : v > hi))
        throw Error("cannot cast " + std::to_string(float_element(t, i)) + " to " +
                    std::string(dtype_name(to)) + ": out of range");
      if (to == DType::kUInt64)
        store<uint64_t>(out, i, static_cast<uint64_t>(v));
      else
        store_int(out, i, static_cast<int64_t>(v));
    }
  }
  return out;
}

}  // namespace modex::onnx_io::reader
