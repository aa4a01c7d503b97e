#include <sstream>
#include <type_traits>

#include "ir/graph.h"

namespace modex::ir {
namespace {

std::string ints(const std::vector<int64_t>& v) { return dims_to_string(v); }

std::string attrs_text(const OpAttrs& attrs) {
  return std::visit(
      [](const auto& a) -> std::string {
        using T = std::decay_t<decltype(a)>;
        std::ostringstream s;
        if constexpr (std::is_same_v<T, ConvAttrs>) {
          s << "kernel=" << ints(a.kernel) << " strides=" << ints(a.strides) << " pads=" << ints(a.pads);
          if (a.dilations != std::vector<int64_t>(a.dilations.size(), 1)) s << " dilations=" << ints(a.dilations);
          if (a.groups != 1) s << " groups=" << a.groups;
          if (a.activation != Activation::kNone) s << " activation=" << activation_name(a.activation);
          if (a.layout == Layout::kNHWC) s << " nhwc";
        } else if constexpr (std::is_same_v<T, PoolAttrs>) {
          s << "kernel=" << ints(a.kernel) << " strides=" << ints(a.strides) << " pads=" << ints(a.pads);
          if (a.ceil_mode) s << " ceil_mode";
          if (a.count_include_pad) s << " count_include_pad";
          if (a.layout == Layout::kNHWC) s << " nhwc";
        } else if constexpr (std::is_same_v<T, BatchNormAttrs>) {
          s << "epsilon=" << a.epsilon;
        } else if constexpr (std::is_same_v<T, GemmAttrs> || std::is_same_v<T, BinaryAttrs>) {
          if (a.activation != Activation::kNone) s << "activation=" << activation_name(a.activation);
        } else if constexpr (std::is_same_v<T, ClipAttrs>) {
          s << "min=" << a.min << " max=" << a.max;
        } else if constexpr (std::is_same_v<T, LeakyReluAttrs>) {
          s << "alpha=" << a.alpha;
        } else if constexpr (std::is_same_v<T, HardSigmoidAttrs>) {
          s << "alpha=" << a.alpha << " beta=" << a.beta;
        } else if constexpr (std::is_same_v<T, ReduceAttrs>) {
          s << "axes=" << ints(a.axes) << " keepdims=" << a.keepdims;
        } else if constexpr (std::is_same_v<T, FlattenAttrs> || std::is_same_v<T, AxisAttrs>) {
          s << "axis=" << a.axis;
        } else if constexpr (std::is_same_v<T, ReshapeAttrs>) {
          s << "shape=" << ints(a.shape);
        } else if constexpr (std::is_same_v<T, AxesAttrs>) {
          s << "axes=" << ints(a.axes);
        } else if constexpr (std::is_same_v<T, TransposeAttrs>) {
          s << "perm=" << ints(a.perm);
        } else if constexpr (std::is_same_v<T, PadAttrs>) {
          s << "pads=" << ints(a.pads) << " value=" << a.value;
        } else if constexpr (std::is_same_v<T, QuantizeAttrs>) {
          s << "dtype=" << dtype_name(a.dtype);
        }
        return s.str();
      },
      attrs);
}

// "int8[1,8]{s=0.0235,zp=-128}" or "int8[8,3,3,3]{per-channel axis 0, 8 scales}".
std::string type_text(const Value& v) {
  std::string t = std::string(dtype_name(v.dtype)) + shape_to_string(v.shape);
  if (v.quant) {
    std::ostringstream s;
    if (v.quant->per_channel())
      s << "{per-channel axis " << v.quant->axis << ", " << v.quant->scale.size() << " scales}";
    else if (!v.quant->scale.empty())
      s << "{s=" << v.quant->scale[0] << ",zp=" << (v.quant->zero_point.empty() ? 0 : v.quant->zero_point[0]) << "}";
    t += s.str();
  }
  return t;
}

}  // namespace

std::string dump(const Graph& g, bool with_constants) {
  std::ostringstream s;
  s << "graph(";
  for (size_t i = 0; i < g.inputs().size(); ++i) {
    const Value& v = g.value(g.inputs()[i]);
    s << (i ? ", " : "") << "%" << v.name << ": " << type_text(v);
  }
  s << ") {\n";
  if (with_constants)
    for (const Value& v : g.values())
      if (v.is_constant()) s << "  const %" << v.name << ": " << type_text(v) << "\n";
  for (const Node& n : g.nodes()) {
    if (n.dead) continue;
    s << "  ";
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      const Value& v = g.value(n.outputs[i]);
      s << (i ? ", " : "") << "%" << v.name << ": " << type_text(v);
    }
    s << " = " << op_name(n.op) << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      s << (i ? ", " : "");
      if (n.inputs[i] == kNoValue) {
        s << "_";
        continue;
      }
      const Value& v = g.value(n.inputs[i]);
      s << "%" << v.name;
      if (v.is_constant()) s << "<" << shape_to_string(v.shape) << ">";
    }
    s << ")";
    std::string a = attrs_text(n.attrs);
    if (!a.empty()) s << " {" << a << "}";
    s << "\n";
  }
  s << "  return ";
  for (size_t i = 0; i < g.outputs().size(); ++i) s << (i ? ", " : "") << "%" << g.value(g.outputs()[i]).name;
  s << "\n}\n";
  return s.str();
}

}  // namespace modex::ir
