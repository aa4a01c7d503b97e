// Fuzzes the ONNX importer: protobuf parsing, model/graph validation, initializers (raw and typed
// fields), the op table with its attribute checks, the shape-chain evaluator and IR shape
// inference. A modex::Error is the expected outcome for bad input; any other exception, crash,
// leak or sanitizer report is a bug. External data is refused from memory, so no file is read.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/onnx/onnx_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    modex::ir::Graph g = modex::onnx_io::import_onnx_from_memory(data, size, "fuzz.onnx");
    // Touch every byte of every constant so a view past its buffer shows up under ASan.
    uint64_t sum = 0;
    for (const auto& v : g.values()) {
      if (!v.is_constant()) continue;
      const uint8_t* p = v.constant.raw();
      for (size_t i = 0; i < v.constant.nbytes(); ++i) sum += p[i];
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const modex::Error&) {
  }
  return 0;
}
