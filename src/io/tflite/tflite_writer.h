// NHWC IR -> TFLite flatbuffer (schema version 3, file identifier "TFL3").
//
// Full-integer graphs (quant::quantize_int8's output) are written as they are: INT8/UINT8/INT32
// tensors carry QuantizationParameters (per-channel filters with quantized_dimension 0, depthwise
// filters re-laid out to [1, kH, kW, O] with quantized_dimension 3), Quantize/Dequantize become
// QUANTIZE/DEQUANTIZE, and op versions are the int8 ones.
//
// Input contract (what convert_to_nhwc produces): Conv and pools in NHWC layout with weights
// [O, kH, kW, I/groups]; activations rank <= 4 with static sizes except a dynamic batch (dim 0 of
// the graph inputs), written as 1 in `shape` and -1 in `shape_signature`. Every node maps through
// one table {IR op -> emitter}; explicit pads become SAME/VALID or an explicit PAD (see
// tflite_padding.h), fused ReLU/ReLU6 stay fused, other fused activations follow as their own ops.
//
// The file carries a `serving_default` signature, a `modex_metadata` JSON entry and the
// `min_runtime_version` entry; op versions are the ones the TFLite runtime registers for the
// operand types and options used; weight buffers are 16-byte aligned.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "core/file_util.h"
#include "ir/graph.h"

namespace modex::tflite_io {

enum class WeightFormat : uint8_t {
  kFloat32,
  // Every float constant the IR graph holds (filters, biases, broadcast operands) is stored as
  // FLOAT16 and followed by a DEQUANTIZE to float32, the form of TFLite's float16 quantization.
  // Values beyond the float16 range are clamped to +-65504.
  kFloat16,
  // Weights-only int8 ("dynamic range"): every float filter and fully connected weight (rank >= 2
  // with at least kDynamicMinElements values) is stored as INT8, symmetric per output channel
  // (quantized_dimension 0, or 3 for depthwise filters), and followed by a DEQUANTIZE to float32;
  // biases and small operands stay float32, activations are float32.
  kInt8Dynamic,
};

inline constexpr int64_t kDynamicMinElements = 1024;

struct TfliteWriteOptions {
  WeightFormat weights = WeightFormat::kFloat32;
  // Stored as the `modex_metadata` entry; must be a JSON object (architecture, class names,
  // preprocessing, source hash, ... as the caller chooses).
  std::string metadata_json = "{}";
  // Model.description; "modex <version>" when empty.
  std::string description;
  // Signature names of the graph's input and output when it has exactly one of each; graphs with
  // several use the values' names.
  std::string input_key = "image";
  std::string output_key = "logits";
};

// The model's bytes. Throws Error (kUnsupported naming the node and op) for graphs outside the
// input contract, before anything is written.
std::string to_tflite_bytes(const ir::Graph& g, const TfliteWriteOptions& options);

// Writes into an open AtomicFile without committing it, so a caller can commit several outputs
// together. Returns the byte count.
size_t write_tflite_to(const ir::Graph& g, AtomicFile& file, const TfliteWriteOptions& options);

// Writes `path` atomically (nothing is left behind on error). Returns the file size.
size_t write_tflite(const ir::Graph& g, const std::filesystem::path& path,
                    const TfliteWriteOptions& options);

}  // namespace modex::tflite_io
