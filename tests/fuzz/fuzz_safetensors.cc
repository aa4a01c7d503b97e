// Fuzzes the safetensors parser directly (format detection would reject most mutations of the
// length prefix before the parser saw them), then the metadata-to-config conversion.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/pytorch/checkpoint_layout.h"
#include "io/pytorch/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    std::shared_ptr<modex::Buffer> file = modex::Buffer::allocate(size);
    if (size) std::memcpy(file->data(), data, size);
    modex::safetensors::File parsed = modex::safetensors::parse(file);
    uint64_t sum = 0;
    for (const auto& [name, tensor] : parsed.weights.entries()) {
      const uint8_t* p = tensor.raw();
      for (size_t i = 0; i < tensor.nbytes(); ++i) sum += p[i];
    }
    volatile uint64_t sink = sum;
    (void)sink;
    modex::CheckpointConfig config = modex::pytorch::config_from_metadata(parsed.metadata);
    (void)config;
    std::vector<std::string> stripped;
    modex::pytorch::strip_wrapper_prefixes(parsed.weights, stripped);
  } catch (const modex::Error&) {
  }
  return 0;
}
