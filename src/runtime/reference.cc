#include "runtime/reference.h"

#include "runtime/kernels/reference_int8.h"
#include "runtime/kernels/reference_kernels.h"

namespace modex::runtime {

std::vector<Tensor> run_reference(const ir::Graph& graph, const std::vector<Tensor>& inputs) {
  if (inputs.size() != graph.inputs().size())
    throw Error("expected " + std::to_string(graph.inputs().size()) + " inputs, got " + std::to_string(inputs.size()));
  std::map<std::string, int64_t> bindings;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ir::Value& v = graph.value(graph.inputs()[i]);
    if (static_cast<size_t>(inputs[i].rank()) != v.shape.size())
      throw Error("input rank " + std::to_string(inputs[i].rank()) + " does not match " + ir::shape_to_string(v.shape)).tensor(v.name);
    for (size_t d = 0; d < v.shape.size(); ++d) {
      const ir::Dim& dim = v.shape[d];
      int64_t got = inputs[i].shape()[d];
      if (dim.is_static() && dim.value != got)
        throw Error("input shape " + dims_to_string(inputs[i].shape()) + " does not match " + ir::shape_to_string(v.shape)).tensor(v.name);
      if (!dim.is_static() && !dim.symbol.empty()) bindings[dim.symbol] = got;
    }
  }
  ir::Graph g = graph;
  g.infer_shapes(bindings);

  std::vector<Tensor> vals(g.values().size());
  for (size_t i = 0; i < g.values().size(); ++i)
    if (g.values()[i].is_constant())
      vals[i] = g.values()[i].quant ? g.values()[i].constant : g.values()[i].constant.to(DType::kFloat32);
  // Quantized (int8/uint8) inputs are taken as they are; the rest as float32.
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ir::Value& v = g.value(g.inputs()[i]);
    vals[static_cast<size_t>(g.inputs()[i])] = v.quant ? inputs[i] : inputs[i].to(DType::kFloat32);
    if (v.quant && inputs[i].dtype() != v.dtype)
      throw Error("input is " + std::string(dtype_name(inputs[i].dtype())) + ", expected " + std::string(dtype_name(v.dtype))).tensor(v.name);
  }

  std::vector<Tensor> in;
  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    in.clear();
    for (ir::ValueId v : n.inputs) in.push_back(v == ir::kNoValue ? Tensor() : vals[static_cast<size_t>(v)]);
    Dims os = *ir::to_dims(g.value(n.outputs[0]).shape);
    Tensor y;
    switch (n.op) {
      case ir::OpKind::kFlatten:
      case ir::OpKind::kReshape:
      case ir::OpKind::kSqueeze:
      case ir::OpKind::kUnsqueeze:
      case ir::OpKind::kIdentity: y = in[0].reshaped(os); break;  // views share the input's storage
      default:
        if (q8::is_quantized_node(g, n)) {
          y = Tensor::zeros(g.value(n.outputs[0]).dtype, os);
          q8::run(q8::prepare(g, n), in, y);
        } else {
          y = Tensor::zeros(DType::kFloat32, os);
          ref::run_node(n, in, y);
        }
        break;
    }
    vals[static_cast<size_t>(n.outputs[0])] = std::move(y);
  }
  std::vector<Tensor> outs;
  for (ir::ValueId o : g.outputs()) outs.push_back(vals[static_cast<size_t>(o)]);
  return outs;
}

}  // namespace modex::runtime
