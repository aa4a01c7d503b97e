// Helpers shared by the engine tests: random tensors and the f32 comparison with a named tolerance.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "core/tensor.h"
#include "runtime/kernels/native_math.h"

namespace modex::runtime_test {

// Kernels created while one lives use no instruction set beyond `isa` (then every one again), so
// that tests run each variant the machine has.
struct IsaLimit {
  explicit IsaLimit(runtime::native::Isa isa) { runtime::native::set_max_isa(isa); }
  ~IsaLimit() { runtime::native::set_max_isa(runtime::native::Isa::kAmx); }
  IsaLimit(const IsaLimit&) = delete;
  IsaLimit& operator=(const IsaLimit&) = delete;
};

// f32 results of different kernels: max |a - b| within this fraction of max(1, max |reference|).
inline constexpr float kF32Tolerance = 1e-5f;

inline Tensor random_tensor(Dims shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

inline ::testing::AssertionResult close(const Tensor& want, const Tensor& got, float tolerance = kF32Tolerance) {
  if (want.shape() != got.shape())
    return ::testing::AssertionFailure() << "shape " << dims_to_string(got.shape()) << " != " << dims_to_string(want.shape());
  auto a = want.to_float_vector(), b = got.to_float_vector();
  float scale = 1.0f, worst = 0.0f;
  size_t at = 0;
  for (float v : a) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    float d = std::abs(a[i] - b[i]);
    if (!(d <= worst)) {  // also catches NaN
      worst = std::isnan(d) ? INFINITY : d;
      at = i;
    }
  }
  if (worst <= tolerance * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max error " << worst << " at element " << at << " (want " << a[at] << ", got "
                                       << b[at] << "), allowed " << tolerance * scale;
}

inline ::testing::AssertionResult bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.nbytes() != b.nbytes() || std::memcmp(a.raw(), b.raw(), a.nbytes()) != 0)
    return ::testing::AssertionFailure() << "tensors differ";
  return ::testing::AssertionSuccess();
}

}  // namespace modex::runtime_test
