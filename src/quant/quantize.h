// The int8 quantize pass: a prepared float NHWC graph (prepare.h) and calibrated ranges become a
// full-integer graph in the IR's int8 contract:
//   activations   int8, per-tensor, asymmetric; scale = (max - min) / 255 over the range widened
//                 to include 0, zero point rounding -128 - min / scale
//   Conv weights  int8 symmetric per-channel (axis 0), values in [-127, 127]
//   Gemm weights  int8 symmetric per-tensor
//   biases        int32, scale input_scale * weight_scale[c], zero point 0
//   constants of Add/Mul: int8 per-tensor over their own range
//   pools, reshapes, transpose, pad: the input's params; concat: requantized to the output's
//   Sigmoid, Softmax: fixed 1/256, zero point -128; ReduceMean, HardSwish, Relu, Clip, Add,
//   Mul: their own calibrated params
// Every value keeps its float name. Model I/O follows QuantizeOptions::io_type.
#pragma once

#include <cstdint>
#include <string_view>

#include "ir/graph.h"
#include "quant/calibration.h"
#include "quant/qdq.h"  // activation_params: the same activation params for TFLite int8 and QDQ ONNX

namespace modex::quant {

enum class IoType { kInt8, kUInt8, kFloat32 };
std::string_view io_type_name(IoType t);
IoType parse_io_type(std::string_view name);  // "int8" | "uint8" | "float32"

struct QuantizeOptions {
  IoType io_type = IoType::kInt8;
};

// Symmetric int8 scale for weights whose largest magnitude is amax (never zero).
float weight_scale(float amax);
// round(x / scale) + zero_point, rounded half away from zero and clamped to [lo, hi].
int32_t quantize_value(float x, float scale, int64_t zero_point, int32_t lo, int32_t hi);

// Throws Error when a value lacks a range or an op has no int8 form.
ir::Graph quantize_int8(const ir::Graph& prepared, const RangeMap& ranges, const QuantizeOptions& options = {});

}  // namespace modex::quant
