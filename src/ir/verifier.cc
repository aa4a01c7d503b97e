#include <cmath>
#include <set>

#include "ir/graph.h"

namespace modex::ir {

void verify(const Graph& g) {
  const auto& values = g.values();
  const auto& nodes = g.nodes();
  auto in_range = [&](ValueId v) { return v >= 0 && static_cast<size_t>(v) < values.size(); };
  std::vector<bool> defined(values.size(), false);
  for (ValueId in : g.inputs()) {
    if (!in_range(in)) throw Error("graph input id out of range", ErrorKind::kInternal);
    defined[static_cast<size_t>(in)] = true;
  }
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].is_constant()) {
      defined[i] = true;
      const auto dims = to_dims(values[i].shape);
      if (!dims || *dims != values[i].constant.shape() || values[i].dtype != values[i].constant.dtype())
        throw Error("constant's declared type/shape differs from its data", ErrorKind::kInternal).tensor(values[i].name);
    }
  for (const Value& v : values) {
    if (!v.quant) continue;
    const QuantParams& q = *v.quant;
    if (v.dtype != DType::kInt8 && v.dtype != DType::kUInt8 && v.dtype != DType::kInt32)
      throw Error("quantization parameters on a " + std::string(dtype_name(v.dtype)) + " value", ErrorKind::kInternal).tensor(v.name);
    if (q.scale.empty() || q.scale.size() != q.zero_point.size())
      throw Error("quantization needs as many zero points as scales (at least one)", ErrorKind::kInternal).tensor(v.name);
    for (float sc : q.scale)
      if (!(sc > 0.0f) || !std::isfinite(sc))
        throw Error("quantization scale must be positive and finite", ErrorKind::kInternal).tensor(v.name);
    if (q.per_channel()) {
      if (q.axis < 0 || static_cast<size_t>(q.axis) >= v.shape.size() || !v.shape[static_cast<size_t>(q.axis)].is_static() ||
          v.shape[static_cast<size_t>(q.axis)].value != static_cast<int64_t>(q.scale.size()))
        throw Error("per-channel quantization has " + std::to_string(q.scale.size()) + " scales for axis " +
                        std::to_string(q.axis) + " of " + shape_to_string(v.shape),
                    ErrorKind::kInternal)
            .tensor(v.name);
    }
  }
  std::set<std::string> names;
  for (const Value& v : values)
    if (!names.insert(v.name).second) throw Error("duplicate value name", ErrorKind::kInternal).tensor(v.name);

  for (size_t k = 0; k < nodes.size(); ++k) {
    const Node& n = nodes[k];
    if (n.dead) continue;
    auto fail = [&](const std::string& msg) {
      Error e(msg, ErrorKind::kInternal);
      e.node(n.name).op(std::string(op_name(n.op)));
      return e;
    };
    if (!attrs_match(n.op, n.attrs)) throw fail("attributes of the wrong type");
    for (ValueId in : n.inputs) {
      if (in == kNoValue) continue;
      if (!in_range(in)) throw fail("input id out of range");
      if (!defined[static_cast<size_t>(in)])
        throw fail("reads '" + values[static_cast<size_t>(in)].name + "' before it is produced (not topologically sorted or dangling)");
    }
    for (ValueId out : n.outputs) {
      if (!in_range(out)) throw fail("output id out of range");
      if (defined[static_cast<size_t>(out)]) throw fail("output '" + values[static_cast<size_t>(out)].name + "' produced twice");
      if (values[static_cast<size_t>(out)].producer != static_cast<NodeId>(k)) throw fail("output's producer link is wrong");
      defined[static_cast<size_t>(out)] = true;
    }
    std::vector<OutputInfo> outs = infer_node_outputs(g, n);
    if (outs.size() != n.outputs.size()) throw fail("output count differs from the op's shape function");
    for (size_t i = 0; i < outs.size(); ++i) {
      const Value& v = values[static_cast<size_t>(n.outputs[i])];
      if (v.dtype != outs[i].dtype || v.shape != outs[i].shape)
        throw fail("stored type of '" + v.name + "' " + std::string(dtype_name(v.dtype)) + shape_to_string(v.shape) +
                   " differs from inferred " + std::string(dtype_name(outs[i].dtype)) + shape_to_string(outs[i].shape));
    }
  }
  if (g.outputs().empty()) throw Error("graph has no outputs", ErrorKind::kInternal);
  for (ValueId o : g.outputs()) {
    if (!in_range(o)) throw Error("graph output id out of range", ErrorKind::kInternal);
    if (!defined[static_cast<size_t>(o)])
      throw Error("graph output is never produced", ErrorKind::kInternal).tensor(values[static_cast<size_t>(o)].name);
  }
}

}  // namespace modex::ir
