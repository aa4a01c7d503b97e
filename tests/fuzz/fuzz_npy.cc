// Fuzzes the .npy reader, and re-encodes what it accepts (which must read back identically).
// Seeds: arrays written by numpy.save (corpus/fuzz_npy).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "core/error.h"
#include "io/dataset/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    modex::Tensor t = modex::npy::decode(std::span<const uint8_t>(data, size), "fuzz");
    const std::string again = modex::npy::encode(t);
    modex::Tensor back = modex::npy::decode(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(again.data()), again.size()), "again");
    if (back.shape() != t.shape() || back.dtype() != t.dtype() || std::memcmp(back.raw(), t.raw(), t.nbytes()) != 0) {
      __builtin_trap();
    }
  } catch (const modex::Error&) {
  }
  return 0;
}
