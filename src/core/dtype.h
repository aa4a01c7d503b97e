#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace modex {

#define MODEX_DTYPES(X)            \
  X(Float32, "float32", 4)         \
  X(Float16, "float16", 2)         \
  X(BFloat16, "bfloat16", 2)       \
  X(Float64, "float64", 8)         \
  X(Int8, "int8", 1)               \
  X(UInt8, "uint8", 1)             \
  X(Int16, "int16", 2)             \
  X(UInt16, "uint16", 2)           \
  X(Int32, "int32", 4)             \
  X(UInt32, "uint32", 4)           \
  X(Int64, "int64", 8)             \
  X(UInt64, "uint64", 8)           \
  X(Bool, "bool", 1)

enum class DType : uint8_t {
#define MODEX_X(e, n, s) k##e,
  MODEX_DTYPES(MODEX_X)
#undef MODEX_X
};

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
bool is_float(DType t);

}  // namespace modex
