// The int8 reference kernels: TFLite's reference integer semantics (the source of truth for the
// XNNPACK int8 kernels and the contract LiteRT is checked against). As in tflite-micro, a node is
// prepared once (quantization parameters checked, fixed-point multipliers, activation ranges and
// lookup tables computed) and then run without checks.
//
// Fixed-point arithmetic follows TFLite's reference kernels exactly: QuantizeMultiplier (a Q31
// multiplier and a power-of-two shift, rounded half away from zero), then
// MultiplyByQuantizedMultiplier = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << l, m),
// r).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "ir/graph.h"

namespace modex::runtime::q8 {

// A real multiplier as a Q31 fixed-point value and a shift (> 0: left).
struct Multiplier {
  int32_t value = 0;
  int shift = 0;
};
Multiplier quantize_multiplier(double real);
int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t rounding_divide_by_pot(int32_t x, int exponent);
int32_t multiply_by_quantized_multiplier(int32_t x, Multiplier m);

// Per-tensor affine params of an int8/uint8 value.
struct Affine {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// The integer output range of a fused activation (kNone, kRelu, kRelu6) for an output with
// params `out` and dtype `dtype` (TFLite's CalculateActivationRangeQuantized).
std::pair<int32_t, int32_t> activation_range(ir::Activation a, const Affine& out, DType dtype);

// True when the node computes on quantized values (a quantized data input, or Quantize/Dequantize).
bool is_quantized_node(const ir::Graph& g, const ir::Node& n);

// Everything a quantized node needs at run time, computed once from the graph.
struct Prepared {
  ir::Node node;
  std::vector<Affine> in;  // per input (per-tensor params; identity for non-quantized)
  Affine out;
  DType in_dtype = DType::kInt8, out_dtype = DType::kInt8;
  int32_t act_min = -128, act_max = 127;
  // Conv / Gemm: one multiplier per output channel (or one).
  std::vector<Multiplier> channel;
  // Add: TFLite's left shift 20 and per-input multipliers; Mul/Mean/Relu/requantize: `output`.
  int left_shift = 0;
  Multiplier input1, input2, output;
  // HardSwish: TFLite's int16 fixed-point multipliers.
  int16_t hs_output_mult = 0, hs_reluish_mult = 0;
  int hs_output_exp = 0, hs_reluish_exp = 0;
  // Logistic, HardSwish, Relu, Clip, Silu: a 256-entry table indexed by the input's bit pattern.
  std::array<int8_t, 256> lut{};
  // Silu (the engine's fused Mul(x, Sigmoid(x))): the Sigmoid's table.
  std::array<int8_t, 256> gate{};
  // Softmax: exp(-input_scale * (max - x)) indexed as TFLite's optimized kernel does.
  std::array<float, 256> exp_table{};
  int64_t axis = 0;  // Softmax / Concat, normalised
  int32_t pad_value = 0;
  std::vector<bool> reduced;  // ReduceMean
};

// Validates the node's quantization (throws Error naming node and op) and precomputes.
Prepared prepare(const ir::Graph& g, const ir::Node& n);
// Runs a prepared node. Inputs and output have the node's concrete shapes and dtypes.
void run(const Prepared& p, std::span<const Tensor> inputs, Tensor& output);

// Float <-> int8/uint8 with TFLite's semantics (round half away from zero, clamp).
void quantize(const Tensor& x, const Affine& q, Tensor& y);
void dequantize(const Tensor& x, const Affine& q, Tensor& y);

}  // namespace modex::runtime::q8
