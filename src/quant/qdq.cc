#include "quant/qdq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <unordered_map>

namespace modex::quant {
namespace {

using ir::OpKind;
using ir::ValueId;

// Ops whose output is a selection or rearrangement of their input's elements: quantizing the
// output with the input's parameters loses nothing.
bool passes_params_through(OpKind op) {
  switch (op) {
    case OpKind::kMaxPool:
    case OpKind::kReshape:
    case OpKind::kFlatten:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kTranspose:
    case OpKind::kIdentity:
      return true;
    default:
      return false;
  }
}

// For each node, the Relu / ReLU6 (Clip 0..6) node it absorbs, or -1: the sole consumer of a
// Conv/Gemm/binary op's output that is no graph output. The QDQ pair then follows the
// activation, whose range starts at 0 (zero point -128), which is what lets ORT drop the
// activation and fuse the op into one int8 kernel; a pair between the op and the activation
// would spend half the int8 levels on values the activation discards.
std::vector<ir::NodeId> absorbed_activations(const ir::Graph& g) {
  std::vector<ir::NodeId> absorbed(g.nodes().size(), -1);
  const auto consumers = g.consumers();
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    const ir::Node& n = g.node(static_cast<ir::NodeId>(k));
    if (n.dead || n.outputs.size() != 1) continue;
    ir::Activation current;
    if (n.op == OpKind::kConv)
      current = n.attr<ir::ConvAttrs>().activation;
    else if (n.op == OpKind::kGemm)
      current = n.attr<ir::GemmAttrs>().activation;
    else if (ir::is_elementwise_binary(n.op))
      current = n.attr<ir::BinaryAttrs>().activation;
    else
      continue;
    const ValueId o = n.outputs[0];
    if (current != ir::Activation::kNone || g.is_graph_output(o) ||
        consumers[static_cast<size_t>(o)].size() != 1)
      continue;
    const ir::NodeId c = consumers[static_cast<size_t>(o)][0];
    const ir::Node& act = g.node(c);
    const bool relu6 = act.op == OpKind::kClip && act.attr<ir::ClipAttrs>().min == 0.0f &&
                       act.attr<ir::ClipAttrs>().max == 6.0f;
    if ((act.op == OpKind::kRelu || relu6) && act.inputs.size() == 1) absorbed[k] = c;
  }
  return absorbed;
}

ir::Activation activation_of(const ir::Node& act) {
  return act.op == OpKind::kRelu ? ir::Activation::kRelu : ir::Activation::kRelu6;
}

void refuse_quantized(const ir::Graph& g) {
  for (const ir::Node& n : g.nodes())
    if (!n.dead && (n.op == OpKind::kQuantize || n.op == OpKind::kDequantize))
      throw Error(
          "the graph is already quantized (it has " + std::string(ir::op_name(n.op)) + " nodes)",
          ErrorKind::kUnsupported)
          .node(n.name)
          .op(std::string(ir::op_name(n.op)));
  for (const ir::Value& v : g.values())
    if (v.quant)
      throw Error("the graph is already quantized", ErrorKind::kUnsupported).tensor(v.name);
}

bool is_quantizable(const ir::Value& v) { return v.dtype == DType::kFloat32 && !v.is_constant(); }

class QdqBuilder {
 public:
  QdqBuilder(const ir::Graph& src, const RangeMap& ranges, const QdqOptions& options)
      : src_(src),
        ranges_(ranges),
        options_(options),
        map_(src.values().size(), ir::kNoValue),
        params_(src.values().size()) {}

  ir::Graph run() {
    refuse_quantized(src_);
    absorbed_ = absorbed_activations(src_);
    std::vector<bool> skip(src_.nodes().size(), false);
    for (ir::NodeId a : absorbed_)
      if (a >= 0) skip[static_cast<size_t>(a)] = true;
    out_.metadata = src_.metadata;
    for (ValueId in : src_.inputs()) {
      const ir::Value& v = src_.value(in);
      ValueId id = out_.add_input(v.name, v.dtype, v.shape);
      map_[static_cast<size_t>(in)] = id;
      if (is_quantizable(v)) quantize_activation(in, params_for(in), false);
    }
    for (size_t k = 0; k < src_.nodes().size(); ++k) {
      const ir::Node& n = src_.node(static_cast<ir::NodeId>(k));
      if (!n.dead && !skip[k]) rewrite(n, absorbed_[k] >= 0 ? &src_.node(absorbed_[k]) : nullptr);
    }
    for (ValueId o : src_.outputs()) out_.add_output(map_[static_cast<size_t>(o)]);
    ir::verify(out_);
    return std::move(out_);
  }

 private:
  // The params of an absorbed Relu/ReLU6's output: its own range, else the range of its input
  // clamped the way the activation clamps (exact for min/max ranges). The second form is what a
  // RangeMap calibrated on a graph with the activation already fused holds: there the fused
  // result carries the producer's name.
  ir::QuantParams params_for_activation(const ir::Node& act) {
    const ValueId y = act.outputs[0], x = act.inputs[0];
    if (ranges_.count(src_.value(y).name) || !ranges_.count(src_.value(x).name))
      return params_for(y);
    TensorRange r = ranges_.at(src_.value(x).name);
    const float hi = act.op == OpKind::kRelu ? std::numeric_limits<float>::infinity() : 6.0f;
    r.min = std::clamp(r.min, 0.0f, hi);
    r.max = std::clamp(r.max, 0.0f, hi);
    return params_for(y, &r);
  }

  ir::QuantParams params_for(ValueId v, const TensorRange* given = nullptr) {
    const ir::Value& val = src_.value(v);
    auto it = given ? ranges_.end() : ranges_.find(val.name);
    if (given) {
      if (!std::isfinite(given->min) || !std::isfinite(given->max) || given->min > given->max)
        throw Error("calibrated range of value '" + val.name + "' is not a finite interval",
                    ErrorKind::kInvalidInput)
            .tensor(val.name);
      return activation_params(*given);
    }
    if (it == ranges_.end())
      throw Error("no calibrated range for value '" + val.name + "'", ErrorKind::kInvalidInput)
          .tensor(val.name)
          .hint("calibrate every value qdq_calibration_values() lists");
    if (!std::isfinite(it->second.min) || !std::isfinite(it->second.max) ||
        it->second.min > it->second.max)
      throw Error("calibrated range [" + std::to_string(it->second.min) + ", " +
                      std::to_string(it->second.max) + "] of value '" + val.name +
                      "' is not a finite interval",
                  ErrorKind::kInvalidInput)
          .tensor(val.name);
    return activation_params(it->second);
  }

  // A value name nothing holds yet (the writer's names are derived, so they could collide).
  std::string fresh(const std::string& base) const {
    std::string s = base;
    for (int i = 1; out_.find_value(s); ++i) s = base + "_" + std::to_string(i);
    return s;
  }

  // Inserts the Quantize -> Dequantize pair after source value v (already mapped); consumers then
  // read the Dequantize output.
  void quantize_activation(ValueId v, const ir::QuantParams& p, bool graph_output) {
    const std::string name = src_.value(v).name;
    ValueId x = map_[static_cast<size_t>(v)];
    if (graph_output) out_.set_output_name(x, fresh(name + "_QuantizeLinear_Input"));
    ValueId q = out_.add_node1(OpKind::kQuantize, ir::QuantizeAttrs{DType::kInt8}, {x},
                               name + "_QuantizeLinear");
    out_.set_output_name(q, fresh(name + "_QuantizeLinear_Output"));
    out_.value(q).quant = p;
    ValueId dq =
        out_.add_node1(OpKind::kDequantize, ir::NoAttrs{}, {q}, name + "_DequantizeLinear");
    out_.set_output_name(dq, graph_output ? name : fresh(name + "_DequantizeLinear_Output"));
    map_[static_cast<size_t>(v)] = dq;
    params_[static_cast<size_t>(v)] = p;
  }

  // A float constant as the op reads it: weights and biases of Conv/Gemm through int8/int32 and a
  // Dequantize, anything else as is.
  ValueId constant(ValueId v) {
    ValueId& m = map_[static_cast<size_t>(v)];
    if (m == ir::kNoValue) {
      const ir::Value& val = src_.value(v);
      m = out_.add_constant(val.name, val.constant);
    }
    return m;
  }

  ValueId weight(ValueId v) {
    auto it = weights_.find(v);
    if (it != weights_.end()) return it->second;
    const ir::Value& val = src_.value(v);
    ir::QuantParams p;
    Tensor q = quantize_weight_symmetric(val.constant, options_.per_channel, p,
                                         options_.reduce_range ? 64 : 127);
    ValueId c = out_.add_constant(val.name + "_quantized", std::move(q));
    out_.value(c).quant = p;
    weight_params_[v] = p;
    ValueId dq =
        out_.add_node1(OpKind::kDequantize, ir::NoAttrs{}, {c}, val.name + "_DequantizeLinear");
    out_.set_output_name(dq, fresh(val.name + "_DequantizeLinear_Output"));
    weights_[v] = dq;
    return dq;
  }

  ValueId bias(ValueId b, ValueId w, ValueId x) {
    const ir::Value& val = src_.value(b);
    const ir::QuantParams& in = *params_[static_cast<size_t>(x)];
    ir::QuantParams p;
    Tensor q = quantize_bias(val.constant, in.scale[0], weight_params_.at(w), p);
    ValueId c = out_.add_constant(val.name + "_quantized", std::move(q));
    out_.value(c).quant = p;
    ValueId dq =
        out_.add_node1(OpKind::kDequantize, ir::NoAttrs{}, {c}, val.name + "_DequantizeLinear");
    out_.set_output_name(dq, fresh(val.name + "_DequantizeLinear_Output"));
    return dq;
  }

  // `act`: the Relu/ReLU6 node fused into n; n's result then takes the activation's output.
  void rewrite(const ir::Node& n, const ir::Node* act) {
    const bool has_weights = n.op == OpKind::kConv || n.op == OpKind::kGemm;
    std::vector<ValueId> ins;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      ValueId in = n.inputs[i];
      if (in == ir::kNoValue) {
        ins.push_back(ir::kNoValue);
        continue;
      }
      const ir::Value& v = src_.value(in);
      const bool quantized_input =
          n.inputs[0] != ir::kNoValue && params_[static_cast<size_t>(n.inputs[0])].has_value();
      if (has_weights && i == 1 && v.is_constant() && v.dtype == DType::kFloat32 &&
          v.constant.rank() >= 1) {
        ins.push_back(weight(in));
      } else if (has_weights && i == 2 && v.is_constant() && v.dtype == DType::kFloat32 &&
                 quantized_input && weight_params_.count(n.inputs[1]) && v.constant.rank() == 1) {
        ins.push_back(bias(in, n.inputs[1], n.inputs[0]));
      } else if (v.is_constant()) {
        ins.push_back(constant(in));
      } else {
        ins.push_back(map_[static_cast<size_t>(in)]);
      }
    }
    ir::OpAttrs attrs = n.attrs;
    std::vector<ValueId> results = n.outputs;
    if (act) {
      const ir::Activation a = activation_of(*act);
      if (n.op == OpKind::kConv)
        std::get<ir::ConvAttrs>(attrs).activation = a;
      else if (n.op == OpKind::kGemm)
        std::get<ir::GemmAttrs>(attrs).activation = a;
      else
        std::get<ir::BinaryAttrs>(attrs).activation = a;
      results = act->outputs;
    }
    std::vector<ValueId> outs =
        out_.add_node(n.op, attrs, ins, n.name, static_cast<int>(n.outputs.size()));
    for (size_t i = 0; i < outs.size(); ++i) {
      out_.set_output_name(outs[i], src_.value(results[i]).name);
      map_[static_cast<size_t>(results[i])] = outs[i];
    }
    for (ValueId o : results) {
      const ir::Value& v = src_.value(o);
      if (!is_quantizable(v)) continue;
      bool graph_output = src_.is_graph_output(o);
      if (graph_output && !options_.quantize_outputs) continue;
      std::optional<ir::QuantParams> through;
      if (passes_params_through(n.op) && !n.inputs.empty() && n.inputs[0] != ir::kNoValue)
        through = params_[static_cast<size_t>(n.inputs[0])];
      quantize_activation(o,
                          through ? *through
                          : act   ? params_for_activation(*act)
                                  : params_for(o),
                          graph_output);
    }
  }

  const ir::Graph& src_;
  const RangeMap& ranges_;
  QdqOptions options_;
  ir::Graph out_;
  std::vector<ValueId> map_;                            // source value -> what consumers read
  std::vector<std::optional<ir::QuantParams>> params_;  // source activation -> its int8 params
  std::unordered_map<ValueId, ValueId> weights_;        // source weight -> its Dequantize output
  std::unordered_map<ValueId, ir::QuantParams> weight_params_;
  std::vector<ir::NodeId> absorbed_;
};

}  // namespace

ir::QuantParams activation_params(TensorRange r) {
  const double lo = std::min<double>(r.min, 0.0), hi = std::max<double>(r.max, 0.0);
  double scale = (hi - lo) / 255.0;
  ir::QuantParams p;
  if (!(scale >= static_cast<double>(std::numeric_limits<float>::min()))) {
    p.scale = {1.0f};
    p.zero_point = {0};
    return p;
  }
  const float s = static_cast<float>(scale);
  double zp = std::round(-128.0 - lo / static_cast<double>(s));
  p.scale = {s};
  p.zero_point = {static_cast<int64_t>(std::clamp(zp, -128.0, 127.0))};
  return p;
}

Tensor quantize_weight_symmetric(const Tensor& w, bool per_channel, ir::QuantParams& params,
                                 int qmax) {
  if (qmax < 1 || qmax > 127)
    throw Error("int8 weight range must be within [1, 127]", ErrorKind::kInternal);
  const double hi = qmax;
  if (w.rank() < 1 || w.dim(0) < 1)
    throw Error("weight must have at least one output channel", ErrorKind::kInternal);
  const std::vector<float> x = w.to_float_vector();
  const int64_t channels = per_channel ? w.dim(0) : 1;
  const int64_t inner = w.numel() / channels;
  Tensor q = Tensor::zeros(DType::kInt8, w.shape());
  int8_t* out = q.data_mutable<int8_t>();
  params = {};
  params.axis = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const float* src = x.data() + c * inner;
    float amax = 0.0f;
    for (int64_t i = 0; i < inner; ++i) amax = std::max(amax, std::fabs(src[i]));
    float scale = amax > 0.0f && std::isfinite(amax) ? amax / static_cast<float>(qmax) : 1.0f;
    if (!(scale >= std::numeric_limits<float>::min())) scale = 1.0f;
    for (int64_t i = 0; i < inner; ++i) {
      double v = std::round(static_cast<double>(src[i]) / scale);
      out[c * inner + i] = static_cast<int8_t>(std::clamp(v, -hi, hi));
    }
    params.scale.push_back(scale);
    params.zero_point.push_back(0);
  }
  return q;
}

Tensor quantize_bias(const Tensor& b, float input_scale, const ir::QuantParams& weight_params,
                     ir::QuantParams& params) {
  const std::vector<float> x = b.to_float_vector();
  const int64_t n = b.numel();
  if (weight_params.scale.size() != 1 && static_cast<int64_t>(weight_params.scale.size()) != n)
    throw Error("bias has " + std::to_string(n) + " elements but the weight " +
                    std::to_string(weight_params.scale.size()) + " scales",
                ErrorKind::kInternal);
  Tensor q = Tensor::zeros(DType::kInt32, b.shape());
  int32_t* out = q.data_mutable<int32_t>();
  params = {};
  params.axis = 0;
  const bool per_channel = weight_params.scale.size() > 1;
  for (int64_t c = 0; c < (per_channel ? n : 1); ++c) {
    float s = input_scale * weight_params.scale[static_cast<size_t>(c)];
    if (!(s >= std::numeric_limits<float>::min())) s = std::numeric_limits<float>::min();
    params.scale.push_back(s);
    params.zero_point.push_back(0);
  }
  constexpr double kLo = std::numeric_limits<int32_t>::min(),
                   kHi = std::numeric_limits<int32_t>::max();
  for (int64_t i = 0; i < n; ++i) {
    double v = std::round(static_cast<double>(x[static_cast<size_t>(i)]) /
                          params.scale[per_channel ? static_cast<size_t>(i) : 0]);
    out[i] = static_cast<int32_t>(std::clamp(v, kLo, kHi));
  }
  return q;
}

std::vector<std::string> qdq_calibration_values(const ir::Graph& g) {
  // Mirrors QdqBuilder: a pass-through op's output needs no range when its input is quantized.
  refuse_quantized(g);
  std::vector<std::string> names;
  std::vector<bool> quantized(g.values().size(), false);
  for (ValueId in : g.inputs())
    if (is_quantizable(g.value(in))) {
      names.push_back(g.value(in).name);
      quantized[static_cast<size_t>(in)] = true;
    }
  const std::vector<ir::NodeId> absorbed = absorbed_activations(g);
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    const ir::Node& n = g.node(static_cast<ir::NodeId>(k));
    if (n.dead || absorbed[k] >= 0)
      continue;  // the absorbing activation's output is listed instead
    const bool through = passes_params_through(n.op) && !n.inputs.empty() &&
                         n.inputs[0] != ir::kNoValue && quantized[static_cast<size_t>(n.inputs[0])];
    for (ValueId o : n.outputs) {
      if (!is_quantizable(g.value(o))) continue;
      quantized[static_cast<size_t>(o)] = true;
      if (!through) names.push_back(g.value(o).name);
    }
  }
  return names;
}

ir::Graph to_qdq(const ir::Graph& g, const RangeMap& ranges, const QdqOptions& options) {
  if (options.opset < 13 && options.per_channel)
    throw Error(
        "per-channel int8 weights in ONNX need opset >= 13, not " + std::to_string(options.opset),
        ErrorKind::kUnsupported)
        .hint("use --opset 13 or later");
  return QdqBuilder(g, ranges, options).run();
}

}  // namespace modex::quant
