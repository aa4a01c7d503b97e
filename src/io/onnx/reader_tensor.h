// ONNX TensorProto -> Tensor for the importer: dtypes, raw_data and typed fields, external data,
// and the element conversions ONNX Cast performs. Everything here reads untrusted bytes: sizes
// are checked before anything is allocated or copied.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/tensor.h"

namespace modex::onnx_io::reader {

// Limits on sizes read from a file. A dim above 2^31 - 1 cannot be a classifier's (TFLite dims
// are int32); bounding dims, attributes and element counts keeps every size computation in the
// importer and in IR shape inference far from int64 overflow.
inline constexpr int64_t kMaxDim = INT32_MAX;
inline constexpr int64_t kMaxElements = int64_t{1} << 50;

// modex's dtype for an ONNX TensorProto::DataType, or nullopt (string, complex, undefined...).
std::optional<DType> dtype_from_onnx(int32_t data_type);
// "FLOAT", "COMPLEX64", ... or the number when ONNX has no such type.
std::string onnx_dtype_name(int32_t data_type);

// The tensor's data, from raw_data, the typed field its dtype uses, or external data resolved in
// `external_data_dir` (empty: external data is refused). Errors name the tensor.
Tensor tensor_from_proto(const onnx::TensorProto& proto,
                         const std::filesystem::path& external_data_dir);

// Element values of any dtype. Integers keep their exact value (uint64 above INT64_MAX as its
// two's-complement bit pattern); floats are read as double.
int64_t int_element(const Tensor& t, int64_t i);
double float_element(const Tensor& t, int64_t i);

// ONNX Cast: float -> float rounds (overflow gives ±inf), float -> integer truncates toward zero
// and refuses NaN/inf/out-of-range values (ONNX leaves them undefined), integer -> integer wraps,
// anything -> bool is `!= 0`.
Tensor cast_tensor(const Tensor& t, DType to);

}  // namespace modex::onnx_io::reader
