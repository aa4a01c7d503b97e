#include "core/dtype.h"

#include <array>

namespace modex {
namespace {
struct DTypeInfo {
  std::string_view name;
  size_t size;
};
constexpr std::array kInfo = {
#define MODEX_X(e, n, s) DTypeInfo{n, s},
    MODEX_DTYPES(MODEX_X)
#undef MODEX_X
};
}  // namespace

size_t dtype_size(DType t) { return kInfo[static_cast<size_t>(t)].size; }
std::string_view dtype_name(DType t) { return kInfo[static_cast<size_t>(t)].name; }
std::optional<DType> dtype_from_name(std::string_view name) {
  for (size_t i = 0; i < kInfo.size(); ++i)
    if (kInfo[i].name == name) return static_cast<DType>(i);
  return std::nullopt;
}
bool is_float(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16 ||
         t == DType::kFloat64;
}

}  // namespace modex
