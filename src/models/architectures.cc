#include "models/architectures.h"

#include <algorithm>

namespace modex::models {

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
  if (min_value == 0) min_value = divisor;
  // int(v + divisor / 2) // divisor * divisor, in Python's float arithmetic.
  auto d = static_cast<double>(divisor);
  int64_t new_v = std::max(min_value, static_cast<int64_t>(v + d / 2) / divisor * divisor);
  if (static_cast<double>(new_v) < 0.9 * v) new_v += divisor;
  return new_v;
}

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> kArchitectures = [] {
    std::vector<Architecture> all;
    add_resnets(all);
    add_efficientnets(all);
    add_mobilenets(all);
    return all;
  }();
  return kArchitectures;
}

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture& a : architectures())
    if (a.name == name) return &a;
  return nullptr;
}

}  // namespace modex::models
