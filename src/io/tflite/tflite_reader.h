// .tflite -> summary (any valid model) and NHWC IR graph (the float models modex can represent).
//
// Everything in the file is untrusted. Before any field is read the whole flatbuffer goes through
// flatbuffers' Verifier (every offset, vector and string in bounds); then the model is checked as
// a whole: schema version, tensor / buffer / operator-code indices in range, buffer sizes equal to
// numel x itemsize, shape signatures consistent, every operator input produced before it is read,
// every tensor produced once. Errors name the operator index, its builtin name and the tensor.
//
// The IR graph is NHWC (Conv/pools with Layout::kNHWC, weights [O, kH, kW, I/groups]) and undoes
// the writer's lowerings so that write -> read gives back the graph: SAME/VALID become explicit
// pads, a PAD (zeros) or PADV2 (lowest float) feeding only a VALID convolution or pool is folded
// into its pads, float16 weights behind DEQUANTIZE become float32 constants, LOGISTIC + MUL is
// SiLU, chained MINIMUM/MAXIMUM with scalar bounds is one Clip.
//
// Quantized (int8/uint8) models become the int8 IR: each tensor's QuantizationParameters are its
// value's quant (depthwise filters [1, kH, kW, O] quantized along dim 3 become [O, kH, kW, 1]
// along axis 0), QUANTIZE / DEQUANTIZE of activations are Quantize / Dequantize nodes, fused
// RELU / RELU6 stay fused (they clamp in the quantized domain), and an int8 constant behind a
// DEQUANTIZE (weights-only quantization) is folded to a float32 constant like float16 weights.
// Quantization parameters are checked (one zero point per scale, scales positive and finite,
// zero points inside the type, per-channel sizes, int8 symmetric weights, int32 biases).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "ir/graph.h"

namespace modex::tflite_io {

struct TfliteTensorInfo {
  std::string name;
  std::string
      type;  // dtype name ("float32", "int8", ...), or "tflite_type_<n>" when modex has none
  std::vector<int32_t> shape;
  std::vector<int32_t> shape_signature;  // empty when the file has none
  bool constant = false;                 // backed by buffer data
  // Quantization parameters (real = (q - zero_point) * scale), per tensor or per channel along
  // quantized_dimension; empty when the tensor is not quantized.
  std::vector<float> scale;
  std::vector<int64_t> zero_point;
  int32_t quantized_dimension = 0;
};

struct TfliteOpInfo {
  std::string op;  // builtin name ("CONV_2D"), or "CUSTOM:<code>"
  int32_t version = 1;
  std::vector<int32_t> inputs;  // -1: omitted optional input
  std::vector<int32_t> outputs;
};

struct TfliteSignature {
  std::string key;
  std::vector<std::pair<std::string, int32_t>> inputs;  // name -> tensor index
  std::vector<std::pair<std::string, int32_t>> outputs;
};

// What a .tflite holds (subgraph 0), for `modex inspect`.
struct TfliteSummary {
  uint32_t version = 0;
  std::string description;
  size_t subgraph_count = 0;
  std::vector<TfliteTensorInfo> tensors;
  std::vector<TfliteOpInfo> ops;
  std::vector<int32_t> inputs;
  std::vector<int32_t> outputs;
  std::vector<TfliteSignature> signatures;
  std::map<std::string, std::string> metadata;  // entry name -> its buffer's bytes
  std::string min_runtime_version;              // the entry's string, without its zero padding
  std::string modex_metadata;                   // the `modex_metadata` JSON, when present
};

struct TfliteModel {
  ir::Graph graph;
  TfliteSummary summary;
};

// Validates and summarises any TFLite model, including quantized ones and ops modex cannot
// convert. Throws Error (kInvalidInput) for files that are not valid TFLite.
TfliteSummary inspect_tflite(const std::shared_ptr<Buffer>& file);

// Validates and converts to an NHWC IR graph. Graph inputs and outputs take their signature
// names; graph.metadata gets the `modex_metadata` JSON's top-level entries (strings as is, other
// values as JSON text). Constants view `file` where aligned. Throws Error: kInvalidInput for
// invalid files, kUnsupported (naming operator index and op) for what the IR cannot represent.
TfliteModel parse_tflite(std::shared_ptr<Buffer> file);
TfliteModel read_tflite(const std::filesystem::path& path);

}  // namespace modex::tflite_io
