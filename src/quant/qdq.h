// int8 ONNX in QDQ form, the form ONNX Runtime's static quantizer writes: the float ops stay in
// the graph, and the tensors between them round-trip through int8.
//   - activations: a Quantize -> Dequantize pair (per-tensor, asymmetric int8) on the graph input
//     and after every op output, placed after a fused activation (the ONNX writer emits the
//     activation as its own node, so the pair follows it);
//   - ops that move values without changing them (MaxPool, Reshape, Flatten, Squeeze, Unsqueeze,
//     Transpose, Identity) reuse their input's scale and zero point, as ORT's quantizer does, so
//     its QDQ fusion can drop the pair around them;
//   - Conv/Gemm weights: int8 constants, symmetric ([-127, 127], zero point 0), per output
//     channel (axis 0), feeding a Dequantize;
//   - Conv/Gemm biases: int32 constants with scale input_scale * weight_scale[c], zero point 0,
//     feeding a Dequantize;
//   - the graph outputs (logits) stay float unless QdqOptions::quantize_outputs.
// The export's call: quant::to_qdq(optimised_nchw_graph, ranges, QdqOptions{opset}).
// Written to ONNX, Quantize/Dequantize become QuantizeLinear/DequantizeLinear (opset >= 13, for the
// per-channel `axis`).
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"
#include "quant/calibration.h"

namespace modex::quant {

struct QdqOptions {
  int opset = 13;           // the ONNX opset the graph is meant for; per-channel weights need >= 13
  bool per_channel = true;  // per-tensor weights when false
  // A QDQ pair on the graph outputs too, as ORT's quantizer does. Off by default: the logits are
  // the product, and rounding them (or clipping them, with percentile/entropy ranges, exactly
  // where the largest logit decides the class) costs accuracy for no gain; the last Gemm then
  // runs in float. Measured on efficientnet_b0 (Fashion-MNIST, 1,000 images): 0.7 points.
  bool quantize_outputs = false;
  // Weights in [-64, 64] (7 bits) instead of [-127, 127], ORT's `reduce_range`: ORT's int8
  // kernels on x86 without VNNI (AVX2) add pairs of u8 x s8 products in int16, which saturates
  // when full-range weights meet large activations.
  bool reduce_range = false;
};

// Scale and zero point of an asymmetric int8 activation covering `r` (widened to include 0, so
// that zero is exact, as ORT and TFLite require): scale = (max - min) / 255,
// zero_point = round(-128 - min / scale). A range of width 0 gets scale 1.
ir::QuantParams activation_params(TensorRange r);

// Symmetric int8 quantization of a float weight [O, ...]: per slice along axis 0 when
// `per_channel`, else one scale. scale = max|w| / qmax (1 for an all-zero slice), values rounded
// half away from zero and clamped to [-qmax, qmax]. Returns the int8 tensor; `params` receives the
// scales (zero points 0, axis 0).
Tensor quantize_weight_symmetric(const Tensor& w, bool per_channel, ir::QuantParams& params,
                                 int qmax = 127);

// int32 bias with scale input_scale * weight_scale[c] (one weight scale broadcasts), zero point 0;
// values beyond int32 saturate.
Tensor quantize_bias(const Tensor& b, float input_scale, const ir::QuantParams& weight_params,
                     ir::QuantParams& params);

// The float values whose calibrated ranges to_qdq needs, in graph order: the graph inputs and the
// outputs of every op that does not pass its input's parameters through. Throws Error
// (kUnsupported) for a graph that is already quantized.
std::vector<std::string> qdq_calibration_values(const ir::Graph& g);

// The QDQ graph of a float NCHW graph (the optimised graph the ONNX writer takes). `ranges` is
// keyed by value name and must cover qdq_calibration_values(g); a Relu/ReLU6 fused into its
// producer may instead be covered by the producer's range, clamped (what a RangeMap calibrated
// on the fused graph holds). A Relu/ReLU6 that is the sole consumer of a Conv/Gemm/binary op is
// fused into it, so the pair follows the activation (zero point -128: ORT then fuses op,
// activation and pair into one int8 kernel). Op outputs keep their names;
// the pair after value X produces X_QuantizeLinear_Output and X_DequantizeLinear_Output, except on
// a graph output, which keeps its name on the Dequantize output (the op's result becomes
// X_QuantizeLinear_Input). Throws Error naming the value when a range is missing or not finite,
// and for graphs that are already quantized.
//
// Calibrate `g` itself (run it with the values qdq_calibration_values lists as outputs), not the
// TFLite graph: there SiLU/Sigmoid/HardSwish are fused and then decomposed, and the fused result
// carries the producer's name, so a name such as a Conv's would hold the post-activation range
// where the QDQ graph needs the pre-activation one.
ir::Graph to_qdq(const ir::Graph& g, const RangeMap& ranges, const QdqOptions& options = {});

}  // namespace modex::quant
