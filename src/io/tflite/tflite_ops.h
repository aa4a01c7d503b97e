// TFLite format constants shared by the writer and the reader: builtin operator codes (values fixed
// by the format), their names, and the fixed strings modex writes (signature key, metadata names).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace modex::tflite_io {

inline constexpr uint32_t kSchemaVersion = 3;
inline constexpr const char* kFileIdentifier = "TFL3";
inline constexpr const char* kSubgraphName = "main";
inline constexpr const char* kSignatureKey = "serving_default";
// Metadata entries: modex's JSON (architecture, class names, preprocessing, source hash) and the
// runtime version string TFLite's converter also writes (16 bytes, zero padded).
inline constexpr const char* kModexMetadataName = "modex_metadata";
inline constexpr const char* kMinRuntimeVersionName = "min_runtime_version";
inline constexpr size_t kMinRuntimeVersionBytes = 16;

// The builtin operators modex writes or reads, numbered as the format numbers them.
enum class BuiltinOp : int32_t {
  kAdd = 0,
  kAveragePool2d = 1,
  kConcatenation = 2,
  kConv2d = 3,
  kDepthwiseConv2d = 4,
  kDequantize = 6,
  kFullyConnected = 9,
  kLogistic = 14,
  kMaxPool2d = 17,
  kMul = 18,
  kRelu = 19,
  kReluN1To1 = 20,
  kRelu6 = 21,
  kReshape = 22,
  kSoftmax = 25,
  kTanh = 28,
  kCustom = 32,
  kPad = 34,
  kTranspose = 39,
  kMean = 40,
  kSub = 41,
  kDiv = 42,
  kSqueeze = 43,
  kSplit = 49,
  kPrelu = 54,
  kMaximum = 55,
  kMinimum = 57,
  kPadV2 = 60,
  kLeakyRelu = 98,
  kQuantize = 114,
  kHardSwish = 117,
  kBatchMatMul = 126,
};

// The format's name for a builtin code ("CONV_2D"): the ops above plus others common in converted
// vision models, so that errors about unsupported ops name them; "BUILTIN_<code>" otherwise.
std::string builtin_op_name(int32_t code);
inline std::string builtin_op_name(BuiltinOp op) {
  return builtin_op_name(static_cast<int32_t>(op));
}

}  // namespace modex::tflite_io
