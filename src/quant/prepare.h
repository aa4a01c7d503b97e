// Before calibration: rewrites a float NHWC graph (what passes::convert_to_nhwc produces) so that
// every op maps 1:1 to a TFLite int8 builtin, and every tensor the int8 model will hold exists as
// a float value whose range can be observed.
//   SiLU (an op, or fused)            -> Sigmoid, Mul(x, sigmoid)
//   fused Sigmoid / HardSwish         -> the op without it, then a standalone Sigmoid / HardSwish
//   HardSigmoid(alpha, beta)          -> Mul(x, 6 alpha), Add(6 beta) with fused ReLU6, Mul(1/6)
//                                        (the first Mul is dropped when 6 alpha == 1)
//   Identity                          -> removed
// Fused ReLU and ReLU6 stay fused (TFLite clamps them in the quantized domain). The value that
// held an op's result keeps its name for the rewritten result, so float and int8 graphs match by
// name. Ops with no int8 TFLite form throw Error (kUnsupported) naming the node.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"

namespace modex::quant {

struct PreparedGraph {
  ir::Graph graph;
  // The values whose ranges calibration must observe, in graph order: the graph inputs and the
  // outputs of every op whose int8 params are its own (needs_range). Sigmoid outputs are not
  // among them, so an engine may run Sigmoid + Mul as one SiLU while calibrating.
  std::vector<std::string> observe;
};

// True for ops whose int8 output has their input's params: they move or select values without
// changing their scale (pools, reshapes, Transpose, Pad, Identity). The quantizer gives their
// outputs the input's params, so calibration does not observe them.
bool keeps_input_params(ir::OpKind op);
// False for those and for ops whose int8 output params are fixed (Sigmoid, Softmax).
bool needs_range(ir::OpKind op);

PreparedGraph prepare_for_int8(const ir::Graph& nhwc_float);

// True for the ops the quantizer handles (after preparation).
bool has_int8_form(const ir::Node& n);

}  // namespace modex::quant
