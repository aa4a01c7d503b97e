// What the CPU (and the OS) let the native kernels use, and the limit tests and users may set.
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

#include "runtime/kernels/native_math.h"

namespace modex::runtime {
namespace {

// Linux's request for permission to use a dynamically enabled state component (AMX's 8 KB tile
// data is one): without it the first tile instruction faults.
constexpr long kArchReqXcompPerm = 0x1023;
constexpr long kXfeatureXtiledata = 18;

bool cpu_has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

bool cpu_has_amx_int8() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool tile = edx & (1u << 24), int8 = edx & (1u << 25);
  return tile && int8 && cpu_has_avx512() && syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

native::Isa limit_from_environment() {
  const char* v = std::getenv("MODEX_MAX_ISA");
  const std::string_view s = v ? v : "";
  if (s == "avx2") return native::Isa::kAvx2;
  if (s == "avx512") return native::Isa::kAvx512;
  return native::Isa::kAmx;
}

std::atomic<int>& limit() {
  static std::atomic<int> l{static_cast<int>(limit_from_environment())};
  return l;
}

}  // namespace

bool native::cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

bool native::isa_enabled(Isa isa) {
  if (static_cast<int>(isa) > limit().load()) return false;
  switch (isa) {
    case Isa::kAvx2:
      return cpu_has_avx2_fma();
    case Isa::kAvx512: {
      static const bool ok = cpu_has_avx2_fma() && cpu_has_avx512();
      return ok;
    }
    case Isa::kAmx: {
      static const bool ok = cpu_has_avx2_fma() && cpu_has_amx_int8();
      return ok;
    }
  }
  return false;
}

void native::set_max_isa(Isa isa) { limit().store(static_cast<int>(isa)); }

}  // namespace modex::runtime
