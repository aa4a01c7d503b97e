// The reference kernels: plain, obviously-correct float32 implementations of every IR op, in both
// layouts. Each writes into a caller-provided output of the op's inferred shape, so the same
// functions serve run_reference (which allocates per node) and the engine (which hands out views
// of its arena). They do no validation: shapes were checked when the graph was built.
#pragma once

#include <span>

#include "ir/graph.h"

namespace modex::runtime::ref {

float apply_activation(ir::Activation a, float x);

// residual (optional, y's shape): added to the rounded convolution before the activation.
void conv(const Tensor& x, const Tensor& w, const Tensor* b, const ir::ConvAttrs& a, Tensor& y,
          const Tensor* residual = nullptr);
void pool(const Tensor& x, const ir::PoolAttrs& a, bool max, Tensor& y);
void gemm(const Tensor& x, const Tensor& w, const Tensor* b, ir::Activation act, Tensor& y);
// numpy matmul (1-D operands promoted, batch dims broadcast).
void matmul(const Tensor& a, const Tensor& b, Tensor& y);
void batch_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, const Tensor& mean, const Tensor& var,
                float epsilon, Tensor& y);
// Add/Sub/Mul/Div/PRelu with numpy broadcasting (and a fused activation for the first four).
void binary(ir::OpKind op, ir::Activation act, const Tensor& a, const Tensor& b, Tensor& y);
// Element-wise unary ops (Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Silu, Tanh).
void unary(const ir::Node& n, const Tensor& x, Tensor& y);
// Mean over the axes flagged in `reduced` (y has the keepdims element count).
void reduce_mean(const Tensor& x, const std::vector<bool>& reduced, Tensor& y);
void softmax(const Tensor& x, int64_t axis, Tensor& y);
void concat(std::span<const Tensor> xs, int64_t axis, Tensor& y);
void pad(const Tensor& x, const ir::PadAttrs& a, Tensor& y);
void transpose(const Tensor& x, const std::vector<int64_t>& perm, Tensor& y);
// Flatten/Reshape/Squeeze/Unsqueeze/Identity: y gets x's elements (a copy unless they alias).
void copy(const Tensor& x, Tensor& y);

// Runs node `n` on `inputs` (undefined tensors for omitted optional inputs) into `output`, which
// has the node's inferred output shape.
void run_node(const ir::Node& n, std::span<const Tensor> inputs, Tensor& output);

}  // namespace modex::runtime::ref
