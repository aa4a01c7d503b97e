// Graph rewrites. Each pass edits the graph in place and returns whether it changed anything;
// none changes what the graph computes (beyond float rounding where weights are folded).
#pragma once

#include "ir/graph.h"

namespace modex::passes {

// Conv -> BatchNorm (and Gemm -> BatchNorm over features) become one Conv/Gemm with rescaled
// weights and bias, when the BatchNorm is the only consumer and all parameters are constant.
bool fold_batchnorm(ir::Graph& g);

// Evaluates nodes whose inputs are all constants (shape arithmetic, reshapes, element-wise
// math) and replaces them by constants. Ops without an evaluator are left alone.
bool fold_constants(ir::Graph& g);

// Identity/Dropout-like nodes are bypassed, dead nodes and unused values dropped.
bool eliminate_dead_code(ir::Graph& g);

// Relu / ReLU6 (Clip 0..6) / HardSwish / Sigmoid / Silu following a Conv, Gemm or binary
// element-wise op with no other consumer become that op's fused activation.
bool fuse_activation(ir::Graph& g);

struct NhwcOptions {
  // Keep the graph input [N,3,H,W] and transpose once inside (--nchw-input); by default the
  // input itself becomes [N,H,W,3], the TFLite convention.
  bool nchw_input = false;
};

// Rewrites an NCHW graph so every 4-D activation is NHWC: Conv/pool weights and attributes change
// layout, global pooling becomes ReduceMean over [1,2], standalone BatchNorm becomes Mul+Add,
// axis attributes and broadcast constants are permuted. A Transpose is inserted only where an op
// cannot follow the layout (e.g. flattening a map with spatial extent). Graph outputs keep their
// logical NCHW meaning.
void convert_to_nhwc(ir::Graph& g, const NhwcOptions& options = {});

struct PipelineOptions {
  bool fuse_activations = false;  // ONNX output keeps activations as separate nodes
};

// The standard pipeline: fold BN, fold constants, (fuse), remove dead code, verify.
void optimize(ir::Graph& g, const PipelineOptions& options = {});

}  // namespace modex::passes
