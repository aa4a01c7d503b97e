// Operator kinds and their typed attributes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"

namespace modex::ir {

// Activations that can be fused into the op that produces their input (Conv, Gemm, Add, ...).
enum class Activation : uint8_t { kNone, kRelu, kRelu6, kHardSwish, kSigmoid, kSilu };
std::string_view activation_name(Activation a);

// Memory layout of a spatial op's activations (and a Conv's weight): NCHW with weights
// [O, I/groups, kH, kW] as in PyTorch/ONNX, or NHWC with weights [O, kH, kW, I/groups] as in
// TFLite/XNNPACK. convert_to_nhwc rewrites graphs from the first to the second.
enum class Layout : uint8_t { kNCHW, kNHWC };

struct NoAttrs {
  bool operator==(const NoAttrs&) const = default;
};

// A Conv's optional fourth input, `residual` (the output's shape), is added to the convolution's
// result before the activation: y = act(conv(x, w) + b + residual). Only the runtime writes it
// (fusing a ResNet's Add into the convolution before it, so that the sum is made while the tile
// is in cache); the readers never produce it and the writers refuse it.
struct ConvAttrs {
  std::vector<int64_t> kernel;     // [kH, kW]
  std::vector<int64_t> strides{1, 1};
  std::vector<int64_t> pads{0, 0, 0, 0};  // [top, left, bottom, right] (ONNX order: begins, ends)
  std::vector<int64_t> dilations{1, 1};
  int64_t groups = 1;
  Activation activation = Activation::kNone;
  Layout layout = Layout::kNCHW;
  bool operator==(const ConvAttrs&) const = default;
};

struct BatchNormAttrs {
  float epsilon = 1e-5f;
  bool operator==(const BatchNormAttrs&) const = default;
};

struct GemmAttrs {
  Activation activation = Activation::kNone;
  bool operator==(const GemmAttrs&) const = default;
};

// Add/Sub/Mul/Div: an activation may be fused into the result (TFLite's ADD/MUL support it).
struct BinaryAttrs {
  Activation activation = Activation::kNone;
  bool operator==(const BinaryAttrs&) const = default;
};

struct ClipAttrs {
  float min = 0.0f;
  float max = 6.0f;
  bool operator==(const ClipAttrs&) const = default;
};

struct LeakyReluAttrs {
  float alpha = 0.01f;
  bool operator==(const LeakyReluAttrs&) const = default;
};

struct HardSigmoidAttrs {
  float alpha = 0.2f;
  float beta = 0.5f;
  bool operator==(const HardSigmoidAttrs&) const = default;
};

struct PoolAttrs {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides{1, 1};
  std::vector<int64_t> pads{0, 0, 0, 0};  // [top, left, bottom, right]
  std::vector<int64_t> dilations{1, 1};
  bool ceil_mode = false;
  bool count_include_pad = false;  // AveragePool only
  Layout layout = Layout::kNCHW;
  bool operator==(const PoolAttrs&) const = default;
};

struct ReduceAttrs {
  std::vector<int64_t> axes;
  bool keepdims = true;
  bool operator==(const ReduceAttrs&) const = default;
};

struct FlattenAttrs {
  int64_t axis = 1;
  bool operator==(const FlattenAttrs&) const = default;
};

struct ReshapeAttrs {
  std::vector<int64_t> shape;
  bool operator==(const ReshapeAttrs&) const = default;
};

struct AxesAttrs {
  std::vector<int64_t> axes;
  bool operator==(const AxesAttrs&) const = default;
};

struct TransposeAttrs {
  std::vector<int64_t> perm;
  bool operator==(const TransposeAttrs&) const = default;
};

struct AxisAttrs {
  int64_t axis = 1;
  bool operator==(const AxisAttrs&) const = default;
};

struct PadAttrs {
  std::vector<int64_t> pads;  // ONNX order: all begins, then all ends
  float value = 0.0f;
  bool operator==(const PadAttrs&) const = default;
};

// Quantize: the integer type produced; the scale and zero point are the output value's quant.
struct QuantizeAttrs {
  DType dtype = DType::kInt8;
  bool operator==(const QuantizeAttrs&) const = default;
};

enum class OpKind : uint16_t {
#define MODEX_OP(name, attrs) k##name,
#include "ir/ops.def"
#undef MODEX_OP
};

inline constexpr size_t kOpCount = 0
#define MODEX_OP(name, attrs) +1
#include "ir/ops.def"
#undef MODEX_OP
    ;

using OpAttrs = std::variant<NoAttrs, ConvAttrs, BatchNormAttrs, GemmAttrs, BinaryAttrs, ClipAttrs,
                             LeakyReluAttrs, HardSigmoidAttrs, PoolAttrs, ReduceAttrs,
                             FlattenAttrs, ReshapeAttrs, AxesAttrs, TransposeAttrs, AxisAttrs,
                             PadAttrs, QuantizeAttrs>;

std::string_view op_name(OpKind op);
std::optional<OpKind> op_from_name(std::string_view name);
// The attribute value an op is created with when none is given.
OpAttrs default_attrs(OpKind op);
// True when attrs holds the alternative the op's definition names.
bool attrs_match(OpKind op, const OpAttrs& attrs);
bool is_elementwise_unary(OpKind op);
bool is_elementwise_binary(OpKind op);

}  // namespace modex::ir
