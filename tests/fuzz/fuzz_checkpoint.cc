// Fuzzes the whole loader: format detection, zip reading, the restricted unpickler, tensor
// materialisation and safetensors. A modex::Error is the expected outcome for bad input; any
// other exception, crash, leak or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/pytorch/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    modex::Checkpoint ck = modex::load_checkpoint_from_memory(data, size, "fuzz");
    // Touch every byte of every tensor so a view past its buffer shows up under ASan.
    uint64_t sum = 0;
    for (const auto& [name, tensor] : ck.weights.entries()) {
      const uint8_t* p = tensor.raw();
      for (size_t i = 0; i < tensor.nbytes(); ++i) sum += p[i];
      sum += name.size();
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const modex::Error&) {
  }
  return 0;
}
