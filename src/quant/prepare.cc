#include "quant/prepare.h"

#include <cmath>
#include <functional>
#include <set>


namespace modex::quant {
namespace {

using ir::OpKind;
using ir::ValueId;

bool int8_activation(ir::Activation a) {
  return a == ir::Activation::kNone || a == ir::Activation::kRelu || a == ir::Activation::kRelu6;
}

ir::Activation* fused_slot(ir::Node& n) {
  switch (n.op) {
    case OpKind::kConv: return &n.attr<ir::ConvAttrs>().activation;
    case OpKind::kGemm: return &n.attr<ir::GemmAttrs>().activation;
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: return &n.attr<ir::BinaryAttrs>().activation;
    default: return nullptr;
  }
}

Error no_int8_form(const ir::Node& n, const std::string& why) {
  Error e(why, ErrorKind::kUnsupported);
  e.node(n.name).op(std::string(ir::op_name(n.op)));
  e.hint("int8 export supports Conv, Gemm, Add, Mul, pools, ReduceMean, reshapes, Transpose, Pad, Concat, "
         "ReLU/ReLU6, Sigmoid, SiLU, HardSigmoid, HardSwish and Softmax; use --quantize float16 or dynamic");
  return e;
}

ValueId scalar(ir::Graph& g, const std::string& name, float v) {
  return g.add_constant(name, Tensor::from_floats({1}, std::span<const float>(&v, 1)));
}

// Rewrites the graph so that what read `from` reads `to`, except the nodes listed (the new ones
// computing `to` from `from`).
void redirect(ir::Graph& g, ValueId from, ValueId to, const std::set<ir::NodeId>& except) {
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    if (except.count(static_cast<ir::NodeId>(k))) continue;
    ir::Node& n = g.node(static_cast<ir::NodeId>(k));
    if (n.dead) continue;
    for (ValueId& in : n.inputs)
      if (in == from) in = to;
  }
  // Graph outputs: replace_all_uses also touches node inputs, which are already redirected.
  std::vector<ValueId> outs = g.outputs();
  for (ValueId o : outs)
    if (o == from) {
      g.replace_all_uses(from, to);
      // Undo it on the new nodes, which must keep reading `from`.
      for (ir::NodeId k : except)
        for (ValueId& in : g.node(k).inputs)
          if (in == to) in = from;
      break;
    }
}

// Builds act(x) as int8-friendly ops; the result is named `name`. Returns it and the new nodes.
ValueId build_activation(ir::Graph& g, ValueId x, ir::Activation act, const std::string& name, std::set<ir::NodeId>& made) {
  auto node = [&](OpKind op, ir::OpAttrs attrs, std::vector<ValueId> ins, const std::string& nm) {
    ValueId v = g.add_node1(op, std::move(attrs), std::move(ins), nm);
    made.insert(g.value(v).producer);
    return v;
  };
  switch (act) {
    case ir::Activation::kSigmoid: return node(OpKind::kSigmoid, ir::NoAttrs{}, {x}, name);
    case ir::Activation::kHardSwish: return node(OpKind::kHardSwish, ir::NoAttrs{}, {x}, name);
    case ir::Activation::kSilu: {
      ValueId s = node(OpKind::kSigmoid, ir::NoAttrs{}, {x}, name + "/sigmoid");
      return node(OpKind::kMul, ir::BinaryAttrs{}, {x, s}, name);
    }
    case ir::Activation::kRelu: return node(OpKind::kRelu, ir::NoAttrs{}, {x}, name);
    case ir::Activation::kRelu6: return node(OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}, {x}, name);
    case ir::Activation::kNone: break;
  }
  throw Error("no activation to build", ErrorKind::kInternal).tensor(name);
}

ValueId build_hard_sigmoid(ir::Graph& g, ValueId x, const ir::HardSigmoidAttrs& a, const std::string& name,
                           std::set<ir::NodeId>& made) {
  // max(0, min(1, alpha x + beta)) = relu6(6 alpha x + 6 beta) / 6
  auto node = [&](OpKind op, ir::OpAttrs attrs, std::vector<ValueId> ins, const std::string& nm) {
    ValueId v = g.add_node1(op, std::move(attrs), std::move(ins), nm);
    made.insert(g.value(v).producer);
    return v;
  };
  ValueId t = x;
  const float six_alpha = 6.0f * a.alpha;
  if (std::abs(six_alpha - 1.0f) > 1e-6f)
    t = node(OpKind::kMul, ir::BinaryAttrs{}, {x, scalar(g, name + "/six_alpha", six_alpha)}, name + "/scaled");
  ValueId u = node(OpKind::kAdd, ir::BinaryAttrs{ir::Activation::kRelu6}, {t, scalar(g, name + "/six_beta", 6.0f * a.beta)},
                   name + "/relu6");
  return node(OpKind::kMul, ir::BinaryAttrs{}, {u, scalar(g, name + "/one_sixth", 1.0f / 6.0f)}, name);
}

// The live part of g with nodes in topological order (the rewrites above append nodes that feed
// earlier ones), Identity nodes bypassed, every value under its old name.
ir::Graph rebuilt_in_order(const ir::Graph& g) {
  ir::Graph out;
  out.metadata = g.metadata;
  std::vector<ValueId> map(g.values().size(), ir::kNoValue);
  for (ValueId in : g.inputs()) map[static_cast<size_t>(in)] = out.add_input(g.value(in).name, g.value(in).dtype, g.value(in).shape);
  std::vector<char> state(g.nodes().size(), 0);
  std::function<void(ValueId)> visit = [&](ValueId v) {
    if (v == ir::kNoValue || map[static_cast<size_t>(v)] != ir::kNoValue) return;
    const ir::Value& val = g.value(v);
    if (val.is_constant()) {
      map[static_cast<size_t>(v)] = out.add_constant(val.name, val.constant);
      return;
    }
    if (val.producer < 0) throw Error("value has no producer", ErrorKind::kInternal).tensor(val.name);
    const ir::Node& n = g.node(val.producer);
    if (n.dead || state[static_cast<size_t>(val.producer)] == 1)
      throw Error("graph rewrite left a dangling or cyclic value", ErrorKind::kInternal).tensor(val.name);
    state[static_cast<size_t>(val.producer)] = 1;
    for (ValueId in : n.inputs) visit(in);
    if (n.op == OpKind::kIdentity) {
      map[static_cast<size_t>(v)] = map[static_cast<size_t>(n.inputs[0])];
    } else {
      if (n.outputs.size() != 1) throw Error("multi-output ops have no int8 form", ErrorKind::kUnsupported).node(n.name);
      std::vector<ValueId> ins;
      for (ValueId in : n.inputs) ins.push_back(in == ir::kNoValue ? ir::kNoValue : map[static_cast<size_t>(in)]);
      map[static_cast<size_t>(v)] = out.add_node1(n.op, n.attrs, ins, val.name);
    }
    state[static_cast<size_t>(val.producer)] = 2;
  };
  for (ValueId o : g.outputs()) {
    visit(o);
    ValueId m = map[static_cast<size_t>(o)];
    out.add_output(m);
    if (out.value(m).name != g.value(o).name) out.set_output_name(m, g.value(o).name);
  }
  return out;
}

}  // namespace

bool keeps_input_params(ir::OpKind op) {
  switch (op) {
    case OpKind::kMaxPool:
    case OpKind::kAveragePool:
    case OpKind::kReshape:
    case OpKind::kFlatten:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kTranspose:
    case OpKind::kPad:
    case OpKind::kIdentity:
      return true;
    default:
      return false;
  }
}

bool needs_range(ir::OpKind op) {
  return !keeps_input_params(op) && op != OpKind::kSigmoid && op != OpKind::kSoftmax;  // fixed output params
}

bool has_int8_form(const ir::Node& n) {
  switch (n.op) {
    case OpKind::kConv: {
      const auto& a = n.attr<ir::ConvAttrs>();
      return a.layout == ir::Layout::kNHWC && int8_activation(a.activation);
    }
    case OpKind::kGemm: return int8_activation(n.attr<ir::GemmAttrs>().activation);
    case OpKind::kAdd:
    case OpKind::kMul: return int8_activation(n.attr<ir::BinaryAttrs>().activation);
    case OpKind::kMaxPool:
    case OpKind::kAveragePool: return n.attr<ir::PoolAttrs>().layout == ir::Layout::kNHWC;
    case OpKind::kClip: {
      const auto& a = n.attr<ir::ClipAttrs>();
      return a.min == 0.0f && (a.max == 6.0f || std::isinf(a.max));
    }
    case OpKind::kPad: return n.attr<ir::PadAttrs>().value == 0.0f;
    case OpKind::kReshape:
    case OpKind::kFlatten:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kTranspose:
    case OpKind::kConcat:
    case OpKind::kReduceMean:
    case OpKind::kHardSwish:
    case OpKind::kSigmoid:
    case OpKind::kSoftmax:
    case OpKind::kRelu:
    case OpKind::kIdentity: return true;
    default: return false;
  }
}

PreparedGraph prepare_for_int8(const ir::Graph& source) {
  PreparedGraph out;
  ir::Graph& g = out.graph;
  g = source;
  for (ValueId in : g.inputs())
    if (g.value(in).dtype != DType::kFloat32)
      throw Error("int8 quantization starts from a float32 graph; this input is " + std::string(dtype_name(g.value(in).dtype)),
                  ErrorKind::kUnsupported)
          .tensor(g.value(in).name);
  const size_t original = g.nodes().size();
  for (size_t k = 0; k < original; ++k) {
    const ir::NodeId id = static_cast<ir::NodeId>(k);
    if (g.node(id).dead) continue;
    const OpKind op = g.node(id).op;
    if (op == OpKind::kQuantize || op == OpKind::kDequantize)
      throw no_int8_form(g.node(id), "the graph is already quantized");
    if (ir::Activation* slot = fused_slot(g.node(id)); slot && !int8_activation(*slot)) {
      // The op computes without the activation; the activation follows as its own ops.
      const ir::Activation act = *slot;
      *slot = ir::Activation::kNone;
      const ValueId x = g.node(id).outputs[0];
      const std::string name = g.value(x).name;
      g.set_output_name(x, name + "/pre_activation");
      std::set<ir::NodeId> made;
      ValueId y = build_activation(g, x, act, name, made);
      redirect(g, x, y, made);
    } else if (op == OpKind::kSilu || op == OpKind::kHardSigmoid) {
      const ValueId x = g.node(id).inputs[0];
      const ValueId y = g.node(id).outputs[0];
      const std::string name = g.value(y).name;
      const ir::OpAttrs attrs = g.node(id).attrs;
      g.node(id).dead = true;
      g.set_output_name(y, name + "/replaced");
      std::set<ir::NodeId> made;
      ValueId z = op == OpKind::kSilu ? build_activation(g, x, ir::Activation::kSilu, name, made)
                                      : build_hard_sigmoid(g, x, std::get<ir::HardSigmoidAttrs>(attrs), name, made);
      redirect(g, y, z, made);
    }
  }
  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    if (!has_int8_form(n)) {
      std::string why = "no int8 TFLite form for this op";
      if (n.op == OpKind::kClip) why = "only Clip(0, 6) and Clip(0, inf) have an int8 TFLite form";
      if (n.op == OpKind::kPad) why = "int8 padding pads with the zero point; only zero-valued padding is supported";
      if (n.op == OpKind::kConv && n.attr<ir::ConvAttrs>().layout != ir::Layout::kNHWC)
        why = "int8 quantization needs an NHWC graph (run passes::convert_to_nhwc first)";
      throw no_int8_form(n, why);
    }
  }
  g = rebuilt_in_order(g);
  ir::verify(g);
  for (ValueId in : g.inputs()) out.observe.push_back(g.value(in).name);
  for (const ir::Node& n : g.nodes())
    if (needs_range(n.op))
      for (ValueId o : n.outputs) out.observe.push_back(g.value(o).name);
  return out;
}

}  // namespace modex::quant
