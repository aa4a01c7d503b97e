#include "io/tflite/tflite_schema.h"

#include <array>
#include <utility>

namespace modex::tflite_io {
namespace {

constexpr std::array<std::pair<DType, fb::TensorType>, 9> kTypes = {{
    {DType::kFloat32, fb::TensorType::FLOAT32},
    {DType::kFloat16, fb::TensorType::FLOAT16},
    {DType::kFloat64, fb::TensorType::FLOAT64},
    {DType::kInt32, fb::TensorType::INT32},
    {DType::kInt64, fb::TensorType::INT64},
    {DType::kInt16, fb::TensorType::INT16},
    {DType::kInt8, fb::TensorType::INT8},
    {DType::kUInt8, fb::TensorType::UINT8},
    {DType::kBool, fb::TensorType::BOOL},
}};

}  // namespace

std::optional<fb::TensorType> tensor_type_for(DType dtype) {
  for (const auto& [d, t] : kTypes)
    if (d == dtype) return t;
  return std::nullopt;
}

std::optional<DType> dtype_for(fb::TensorType type) {
  for (const auto& [d, t] : kTypes)
    if (t == type) return d;
  return std::nullopt;
}

}  // namespace modex::tflite_io
