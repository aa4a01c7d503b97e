#include <cmath>

#include "passes/passes.h"

namespace modex::passes {
namespace {

// The weight as a float32 tensor that may be changed in place: taken out of the graph when
// this node is its only user and nothing else shares the storage (folding then costs no
// memory), copied otherwise.
Tensor take_writable_f32(ir::Graph& g, ir::ValueId w, size_t users) {
  if (users == 1) {
    Tensor t = std::move(g.value(w).constant);
    Tensor f = t.to(DType::kFloat32);
    t = Tensor();
    if (f.unique()) return f;
    return f.clone();
  }
  return g.value(w).constant.to(DType::kFloat32).clone();
}

}  // namespace

bool fold_batchnorm(ir::Graph& g) {
  bool changed = false;
  auto consumers = g.consumers();
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    ir::Node& bn = g.node(static_cast<ir::NodeId>(k));
    if (bn.dead || bn.op != ir::OpKind::kBatchNorm) continue;
    ir::ValueId x = bn.inputs[0];
    ir::NodeId pid = g.value(x).producer;
    if (pid < 0) continue;
    ir::Node& prod = g.node(pid);
    bool conv = prod.op == ir::OpKind::kConv && prod.attr<ir::ConvAttrs>().activation == ir::Activation::kNone;
    bool gemm = prod.op == ir::OpKind::kGemm && prod.attr<ir::GemmAttrs>().activation == ir::Activation::kNone &&
                g.value(x).shape.size() == 2;
    if (!conv && !gemm) continue;
    if (consumers[static_cast<size_t>(x)].size() != 1 || g.is_graph_output(x)) continue;
    bool all_const = g.value(prod.inputs[1]).is_constant();
    if (prod.inputs.size() > 2 && prod.inputs[2] != ir::kNoValue) all_const &= g.value(prod.inputs[2]).is_constant();
    for (size_t i = 1; i < 5; ++i) all_const &= g.value(bn.inputs[i]).is_constant();
    if (!all_const) continue;

    float eps = bn.attr<ir::BatchNormAttrs>().epsilon;
    std::vector<float> gamma = g.value(bn.inputs[1]).constant.to_float_vector();
    std::vector<float> beta = g.value(bn.inputs[2]).constant.to_float_vector();
    std::vector<float> mean = g.value(bn.inputs[3]).constant.to_float_vector();
    std::vector<float> var = g.value(bn.inputs[4]).constant.to_float_vector();
    const Tensor& w_in = g.value(prod.inputs[1]).constant;
    int64_t out_c = w_in.dim(0);
    if (static_cast<int64_t>(gamma.size()) != out_c || out_c == 0) continue;
    int64_t per_channel = w_in.numel() / out_c;

    std::vector<float> bias(static_cast<size_t>(out_c), 0.0f);
    if (prod.inputs.size() > 2 && prod.inputs[2] != ir::kNoValue) bias = g.value(prod.inputs[2]).constant.to_float_vector();
    Tensor w = take_writable_f32(g, prod.inputs[1], consumers[static_cast<size_t>(prod.inputs[1])].size());
    float* wd = w.data_mutable<float>();
    std::vector<float> new_bias(static_cast<size_t>(out_c));
    for (int64_t c = 0; c < out_c; ++c) {
      size_t ci = static_cast<size_t>(c);
      // Computed in double so the folded weights round once, as close to PyTorch's eval math as
      // float32 storage allows.
      double scale = static_cast<double>(gamma[ci]) / std::sqrt(static_cast<double>(var[ci]) + eps);
      float* row = wd + c * per_channel;
      for (int64_t i = 0; i < per_channel; ++i) row[i] = static_cast<float>(row[i] * scale);
      new_bias[ci] = static_cast<float>((static_cast<double>(bias[ci]) - mean[ci]) * scale + beta[ci]);
    }
    std::string base = prod.name;
    ir::ValueId w_id = g.add_constant(base + ".weight_folded", std::move(w));
    ir::ValueId b_id = g.add_constant(base + ".bias_folded", Tensor::from_floats({out_c}, new_bias));
    // add_constant may reallocate the value table but not the node table; re-fetch anyway.
    ir::Node& p = g.node(pid);
    p.inputs.resize(3);
    p.inputs[1] = w_id;
    p.inputs[2] = b_id;
    ir::ValueId bn_out = g.node(static_cast<ir::NodeId>(k)).outputs[0];
    g.replace_value(bn_out, x);  // graph outputs keep their names
    g.node(static_cast<ir::NodeId>(k)).dead = true;
    consumers = g.consumers();
    changed = true;
  }
  if (changed) g.compact();
  return changed;
}

}  // namespace modex::passes
