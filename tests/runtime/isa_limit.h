// Test helper: kernels created while an IsaLimit lives use no instruction set beyond its own, so a
// test can run the narrower variants of a kernel on a machine that has the wider ones.
#pragma once

#include "runtime/kernels/native_math.h"

namespace modex::test {

struct IsaLimit {
  explicit IsaLimit(runtime::native::Isa isa) { runtime::native::set_max_isa(isa); }
  ~IsaLimit() { runtime::native::set_max_isa(runtime::native::Isa::kAmx); }
  IsaLimit(const IsaLimit&) = delete;
  IsaLimit& operator=(const IsaLimit&) = delete;
};

}  // namespace modex::test
