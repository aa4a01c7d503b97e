// Fuzzes the TFLite reader: validation and summary of any bytes, then conversion to the IR and a
// walk over every constant the graph ends up with. Only modex::Error may escape the reader.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "io/tflite/tflite_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The reader takes 64-byte aligned storage, as read_tflite provides; libFuzzer's data is not.
  std::shared_ptr<modex::Buffer> file = modex::Buffer::allocate(size);
  if (size) std::memcpy(file->data(), data, size);
  try {
    modex::tflite_io::TfliteSummary summary = modex::tflite_io::inspect_tflite(file);
    size_t sink = summary.tensors.size() + summary.ops.size() + summary.metadata.size();
    modex::tflite_io::TfliteModel model = modex::tflite_io::parse_tflite(file);
    for (const modex::ir::Value& v : model.graph.values()) {
      if (!v.is_constant()) continue;
      const uint8_t* p = v.constant.raw();
      for (size_t i = 0; i < v.constant.nbytes(); ++i) sink += p[i];
    }
    sink += modex::ir::dump(model.graph).size();
    volatile size_t keep = sink;
    (void)keep;
  } catch (const modex::Error&) {
  }
  return 0;
}
