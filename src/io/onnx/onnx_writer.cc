#include "io/onnx/onnx_writer.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/wire_format_lite.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "core/file_util.h"

namespace modex::onnx_io {
namespace {

using ir::OpKind;

Error write_error(const ir::Node& n, const std::string& msg, ErrorKind kind = ErrorKind::kUnsupported) {
  Error e(msg, kind);
  e.node(n.name).op(std::string(ir::op_name(n.op)));
  return e;
}

int onnx_dtype(DType t) {
  using TP = onnx::TensorProto;
  switch (t) {
    case DType::kFloat32: return TP::FLOAT;
    case DType::kFloat16: return TP::FLOAT16;
    case DType::kBFloat16: return TP::BFLOAT16;
    case DType::kFloat64: return TP::DOUBLE;
    case DType::kInt8: return TP::INT8;
    case DType::kUInt8: return TP::UINT8;
    case DType::kInt16: return TP::INT16;
    case DType::kUInt16: return TP::UINT16;
    case DType::kInt32: return TP::INT32;
    case DType::kUInt32: return TP::UINT32;
    case DType::kInt64: return TP::INT64;
    case DType::kUInt64: return TP::UINT64;
    case DType::kBool: return TP::BOOL;
  }
  return TP::UNDEFINED;
}

void set_type(onnx::ValueInfoProto* vi, const ir::Value& v) {
  vi->set_name(v.name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx_dtype(v.dtype));
  auto* shape = tt->mutable_shape();
  for (const ir::Dim& d : v.shape) {
    auto* dim = shape->add_dim();
    if (d.is_static())
      dim->set_dim_value(d.value);
    else if (!d.symbol.empty())
      dim->set_dim_param(d.symbol);
  }
}

class Emitter {
 public:
  Emitter(ir::Graph& g, onnx::GraphProto* gp, int opset) : g_(g), gp_(gp), opset_(opset) {}

  int opset() const { return opset_; }
  const ir::Graph& graph() const { return g_; }
  const std::string& name(ir::ValueId v) const { return g_.value(v).name; }

  onnx::NodeProto* node(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                        const std::string& node_name) {
    auto* n = gp_->add_node();
    n->set_op_type(op);
    n->set_name(unique_node_name(node_name));
    for (auto& i : inputs) n->add_input(i);
    for (auto& o : outputs) n->add_output(o);
    return n;
  }

  std::string fresh(const std::string& base) {
    std::string s = base;
    for (int i = 1; g_.find_value(s) || extra_names_.count(s); ++i) s = base + "_" + std::to_string(i);
    extra_names_.insert({s, 0});
    return s;
  }

  // A small initializer created by the writer (Clip bounds, Reshape shapes, axes).
  std::string int64_initializer(const std::string& base, const std::vector<int64_t>& values, bool scalar = false) {
    std::string nm = fresh(base);
    auto* t = gp_->add_initializer();
    t->set_name(nm);
    t->set_data_type(onnx::TensorProto::INT64);
    if (!scalar) t->add_dims(static_cast<int64_t>(values.size()));
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8));
    return nm;
  }
  std::string float_scalar_initializer(const std::string& base, float v) {
    std::string nm = fresh(base);
    auto* t = gp_->add_initializer();
    t->set_name(nm);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(&v), 4));
    return nm;
  }

  // The scale and zero-point initializers of quantized value v (created once, shared by the
  // QuantizeLinear producing v and the DequantizeLinear reading it): a scalar pair per tensor, or
  // 1-D along the axis per channel. The zero point has v's integer type.
  std::pair<std::string, std::string> quant_initializers(ir::ValueId v) {
    auto it = quant_names_.find(v);
    if (it != quant_names_.end()) return it->second;
    const ir::Value& val = g_.value(v);
    const ir::QuantParams& q = *val.quant;
    const bool per_channel = q.per_channel();
    std::string scale = fresh(val.name + "_scale");
    auto* s = gp_->add_initializer();
    s->set_name(scale);
    s->set_data_type(onnx::TensorProto::FLOAT);
    if (per_channel) s->add_dims(static_cast<int64_t>(q.scale.size()));
    s->set_raw_data(std::string(reinterpret_cast<const char*>(q.scale.data()), q.scale.size() * sizeof(float)));
    std::string zp = fresh(val.name + "_zero_point");
    auto* z = gp_->add_initializer();
    z->set_name(zp);
    z->set_data_type(onnx_dtype(val.dtype));
    if (per_channel) z->add_dims(static_cast<int64_t>(q.zero_point.size()));
    std::string bytes;
    for (int64_t x : q.zero_point) {
      if (val.dtype == DType::kInt8) {
        int8_t b = static_cast<int8_t>(x);
        bytes.append(reinterpret_cast<const char*>(&b), 1);
      } else if (val.dtype == DType::kUInt8) {
        uint8_t b = static_cast<uint8_t>(x);
        bytes.append(reinterpret_cast<const char*>(&b), 1);
      } else {
        int32_t b = static_cast<int32_t>(x);
        bytes.append(reinterpret_cast<const char*>(&b), 4);
      }
    }
    z->set_raw_data(bytes);
    return quant_names_[v] = {scale, zp};
  }

  // Writes `act` applied to `in` as separate node(s) producing `out`.
  void activation(ir::Activation act, const std::string& in, const std::string& out, const std::string& base) {
    switch (act) {
      case ir::Activation::kNone: node("Identity", {in}, {out}, base); break;
      case ir::Activation::kRelu: node("Relu", {in}, {out}, base + "/relu"); break;
      case ir::Activation::kRelu6: clip(in, out, 0.0f, 6.0f, base + "/relu6"); break;
      case ir::Activation::kSigmoid: node("Sigmoid", {in}, {out}, base + "/sigmoid"); break;
      case ir::Activation::kSilu: {
        std::string s = fresh(base + "/silu_sigmoid");
        node("Sigmoid", {in}, {s}, base + "/silu_sigmoid");
        node("Mul", {in, s}, {out}, base + "/silu");
        break;
      }
      case ir::Activation::kHardSwish:
        if (opset_ >= 14) {
          node("HardSwish", {in}, {out}, base + "/hardswish");
        } else {
          std::string hs = fresh(base + "/hardswish_gate");
          hard_sigmoid(in, hs, 1.0f / 6.0f, 0.5f, base + "/hardswish_gate");
          node("Mul", {in, hs}, {out}, base + "/hardswish");
        }
        break;
    }
  }

  void clip(const std::string& in, const std::string& out, float lo, float hi, const std::string& base) {
    node("Clip", {in, float_scalar_initializer(base + "/min", lo), float_scalar_initializer(base + "/max", hi)}, {out},
         base);
  }

  void hard_sigmoid(const std::string& in, const std::string& out, float alpha, float beta, const std::string& base) {
    auto* n = node("HardSigmoid", {in}, {out}, base);
    add_float(n, "alpha", alpha);
    add_float(n, "beta", beta);
  }

  // Emits `op` producing the node's output, followed by the fused activation when present.
  onnx::NodeProto* with_activation(const ir::Node& n, const std::string& op, std::vector<std::string> inputs,
                                   ir::Activation act) {
    const std::string& out = name(n.outputs[0]);
    if (act == ir::Activation::kNone) return node(op, std::move(inputs), {out}, n.name);
    std::string pre = fresh(out + "/pre_activation");
    auto* p = node(op, std::move(inputs), {pre}, n.name);
    activation(act, pre, out, n.name);
    return p;
  }

  static void add_ints(onnx::NodeProto* n, const std::string& nm, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(nm);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void add_int(onnx::NodeProto* n, const std::string& nm, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(nm);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void add_float(onnx::NodeProto* n, const std::string& nm, float v) {
    auto* a = n->add_attribute();
    a->set_name(nm);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  std::vector<std::string> input_names(const ir::Node& n) {
    std::vector<std::string> v;
    for (ir::ValueId i : n.inputs) v.push_back(i == ir::kNoValue ? std::string() : name(i));
    while (!v.empty() && v.back().empty()) v.pop_back();
    return v;
  }

 private:
  std::string unique_node_name(const std::string& base) {
    std::string s = base;
    for (int i = 1; node_names_.count(s); ++i) s = base + "_" + std::to_string(i);
    node_names_.insert({s, 0});
    return s;
  }

  ir::Graph& g_;
  onnx::GraphProto* gp_;
  int opset_;
  std::unordered_map<std::string, int> extra_names_;
  std::unordered_map<std::string, int> node_names_;
  std::unordered_map<ir::ValueId, std::pair<std::string, std::string>> quant_names_;
};

using Builder = std::function<void(Emitter&, const ir::Node&)>;

void require_nchw(const ir::Node& n, ir::Layout layout) {
  if (layout != ir::Layout::kNCHW) throw write_error(n, "ONNX has no NHWC form of this op; write ONNX before convert_to_nhwc", ErrorKind::kInternal);
}

void emit_conv(Emitter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::ConvAttrs>();
  require_nchw(n, a.layout);
  if (n.inputs.size() > 3) throw write_error(n, "a convolution with a residual input is runtime-only; ONNX has none", ErrorKind::kInternal);
  auto* p = e.with_activation(n, "Conv", e.input_names(n), a.activation);
  Emitter::add_ints(p, "kernel_shape", a.kernel);
  Emitter::add_ints(p, "strides", a.strides);
  Emitter::add_ints(p, "pads", a.pads);
  Emitter::add_ints(p, "dilations", a.dilations);
  Emitter::add_int(p, "group", a.groups);
}

void emit_pool(Emitter& e, const ir::Node& n) {
  const auto& a = n.attr<ir::PoolAttrs>();
  require_nchw(n, a.layout);
  bool max = n.op == OpKind::kMaxPool;
  auto* p = e.node(max ? "MaxPool" : "AveragePool", e.input_names(n), {e.name(n.outputs[0])}, n.name);
  Emitter::add_ints(p, "kernel_shape", a.kernel);
  Emitter::add_ints(p, "strides", a.strides);
  Emitter::add_ints(p, "pads", a.pads);
  if (a.ceil_mode) Emitter::add_int(p, "ceil_mode", 1);
  if (max) {
    Emitter::add_ints(p, "dilations", a.dilations);
  } else {
    for (int64_t d : a.dilations)
      if (d != 1) throw write_error(n, "AveragePool with dilations needs opset 19; modex writes opsets 11-17");
    if (a.count_include_pad) Emitter::add_int(p, "count_include_pad", 1);
  }
}

// QuantizeLinear / DequantizeLinear carry the quantized value's params as inputs; per-channel
// params add `axis` (opset >= 13, checked in build_model).
void emit_quantize_linear(Emitter& e, const ir::Node& n) {
  const bool quantize = n.op == OpKind::kQuantize;
  ir::ValueId q = quantize ? n.outputs[0] : n.inputs[0];
  const ir::Value& v = e.graph().value(q);
  if (!v.quant) throw write_error(n, "quantized value '" + v.name + "' has no scale and zero point", ErrorKind::kInternal);
  if (quantize && v.dtype != DType::kInt8 && v.dtype != DType::kUInt8)
    throw write_error(n, "QuantizeLinear produces int8 or uint8, not " + std::string(dtype_name(v.dtype)));
  auto [scale, zp] = e.quant_initializers(q);
  auto* p = e.node(quantize ? "QuantizeLinear" : "DequantizeLinear", {e.name(n.inputs[0]), scale, zp},
                   {e.name(n.outputs[0])}, n.name);
  if (v.quant->per_channel()) Emitter::add_int(p, "axis", v.quant->axis);
}

void emit_axes_op(Emitter& e, const ir::Node& n, const char* op) {
  const auto& axes = n.attr<ir::AxesAttrs>().axes;
  std::vector<std::string> in = e.input_names(n);
  if (e.opset() >= 13) {
    if (!axes.empty()) in.push_back(e.int64_initializer(n.name + "/axes", axes));
    e.node(op, in, {e.name(n.outputs[0])}, n.name);
  } else {
    auto* p = e.node(op, in, {e.name(n.outputs[0])}, n.name);
    if (!axes.empty()) Emitter::add_ints(p, "axes", axes);
  }
}

const std::unordered_map<OpKind, Builder>& builders() {
  static const std::unordered_map<OpKind, Builder> table = {
      {OpKind::kConv, emit_conv},
      {OpKind::kQuantize, emit_quantize_linear},
      {OpKind::kDequantize, emit_quantize_linear},
      {OpKind::kMaxPool, emit_pool},
      {OpKind::kAveragePool, emit_pool},
      {OpKind::kBatchNorm,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.node("BatchNormalization", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         Emitter::add_float(p, "epsilon", n.attr<ir::BatchNormAttrs>().epsilon);
       }},
      {OpKind::kGemm,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.with_activation(n, "Gemm", e.input_names(n), n.attr<ir::GemmAttrs>().activation);
         Emitter::add_int(p, "transB", 1);
       }},
      {OpKind::kMatMul, [](Emitter& e, const ir::Node& n) { e.node("MatMul", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kRelu, [](Emitter& e, const ir::Node& n) { e.node("Relu", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kSigmoid, [](Emitter& e, const ir::Node& n) { e.node("Sigmoid", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kTanh, [](Emitter& e, const ir::Node& n) { e.node("Tanh", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kIdentity, [](Emitter& e, const ir::Node& n) { e.node("Identity", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kPRelu, [](Emitter& e, const ir::Node& n) { e.node("PRelu", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kGlobalAveragePool,
       [](Emitter& e, const ir::Node& n) { e.node("GlobalAveragePool", e.input_names(n), {e.name(n.outputs[0])}, n.name); }},
      {OpKind::kClip,
       [](Emitter& e, const ir::Node& n) {
         const auto& a = n.attr<ir::ClipAttrs>();
         e.clip(e.name(n.inputs[0]), e.name(n.outputs[0]), a.min, a.max, n.name);
       }},
      {OpKind::kLeakyRelu,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.node("LeakyRelu", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         Emitter::add_float(p, "alpha", n.attr<ir::LeakyReluAttrs>().alpha);
       }},
      {OpKind::kHardSigmoid,
       [](Emitter& e, const ir::Node& n) {
         const auto& a = n.attr<ir::HardSigmoidAttrs>();
         e.hard_sigmoid(e.name(n.inputs[0]), e.name(n.outputs[0]), a.alpha, a.beta, n.name);
       }},
      {OpKind::kHardSwish,
       [](Emitter& e, const ir::Node& n) {
         e.activation(ir::Activation::kHardSwish, e.name(n.inputs[0]), e.name(n.outputs[0]), n.name);
       }},
      {OpKind::kSilu,
       [](Emitter& e, const ir::Node& n) { e.activation(ir::Activation::kSilu, e.name(n.inputs[0]), e.name(n.outputs[0]), n.name); }},
      {OpKind::kAdd, [](Emitter& e, const ir::Node& n) { e.with_activation(n, "Add", e.input_names(n), n.attr<ir::BinaryAttrs>().activation); }},
      {OpKind::kSub, [](Emitter& e, const ir::Node& n) { e.with_activation(n, "Sub", e.input_names(n), n.attr<ir::BinaryAttrs>().activation); }},
      {OpKind::kMul, [](Emitter& e, const ir::Node& n) { e.with_activation(n, "Mul", e.input_names(n), n.attr<ir::BinaryAttrs>().activation); }},
      {OpKind::kDiv, [](Emitter& e, const ir::Node& n) { e.with_activation(n, "Div", e.input_names(n), n.attr<ir::BinaryAttrs>().activation); }},
      {OpKind::kReduceMean,
       [](Emitter& e, const ir::Node& n) {
         const auto& a = n.attr<ir::ReduceAttrs>();
         auto* p = e.node("ReduceMean", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         if (!a.axes.empty()) Emitter::add_ints(p, "axes", a.axes);
         Emitter::add_int(p, "keepdims", a.keepdims ? 1 : 0);
       }},
      {OpKind::kFlatten,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.node("Flatten", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         Emitter::add_int(p, "axis", n.attr<ir::FlattenAttrs>().axis);
       }},
      {OpKind::kReshape,
       [](Emitter& e, const ir::Node& n) {
         std::string shape = e.int64_initializer(n.name + "/shape", n.attr<ir::ReshapeAttrs>().shape);
         e.node("Reshape", {e.name(n.inputs[0]), shape}, {e.name(n.outputs[0])}, n.name);
       }},
      {OpKind::kSqueeze, [](Emitter& e, const ir::Node& n) { emit_axes_op(e, n, "Squeeze"); }},
      {OpKind::kUnsqueeze, [](Emitter& e, const ir::Node& n) { emit_axes_op(e, n, "Unsqueeze"); }},
      {OpKind::kTranspose,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.node("Transpose", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         const auto& perm = n.attr<ir::TransposeAttrs>().perm;
         if (!perm.empty()) Emitter::add_ints(p, "perm", perm);
       }},
      {OpKind::kConcat,
       [](Emitter& e, const ir::Node& n) {
         auto* p = e.node("Concat", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         Emitter::add_int(p, "axis", n.attr<ir::AxisAttrs>().axis);
       }},
      {OpKind::kSoftmax,
       [](Emitter& e, const ir::Node& n) {
         // Below opset 13 only a last-axis softmax is written (check_softmax_axis).
         int64_t axis = n.attr<ir::AxisAttrs>().axis;
         auto* p = e.node("Softmax", e.input_names(n), {e.name(n.outputs[0])}, n.name);
         Emitter::add_int(p, "axis", axis);
       }},
      {OpKind::kPad,
       [](Emitter& e, const ir::Node& n) {
         const auto& a = n.attr<ir::PadAttrs>();
         std::string pads = e.int64_initializer(n.name + "/pads", a.pads);
         std::string value = e.float_scalar_initializer(n.name + "/value", a.value);
         auto* p = e.node("Pad", {e.name(n.inputs[0]), pads, value}, {e.name(n.outputs[0])}, n.name);
         auto* mode = p->add_attribute();
         mode->set_name("mode");
         mode->set_type(onnx::AttributeProto::STRING);
         mode->set_s("constant");
       }},
  };
  return table;
}

void check_softmax_axis(const ir::Graph& g, const ir::Node& n, int opset) {
  if (n.op != OpKind::kSoftmax || opset >= 13) return;
  int64_t axis = n.attr<ir::AxisAttrs>().axis;
  int64_t rank = static_cast<int64_t>(g.value(n.inputs[0]).shape.size());
  if (axis != -1 && axis != rank - 1)
    throw write_error(n, "Softmax over a non-last axis needs opset >= 13 (use --opset 13)");
}

// ONNX holds int8 models in QDQ form only: integers go through QuantizeLinear/DequantizeLinear,
// every other op computes in float. Per-channel DequantizeLinear (`axis`) needs opset 13, so any
// quantized graph is written at 13 or later.
void check_quantized(const ir::Graph& g, const ir::Node& n, int opset) {
  const bool qdq = n.op == OpKind::kQuantize || n.op == OpKind::kDequantize;
  if (qdq && opset < 13)
    throw write_error(n, "quantized ONNX (QuantizeLinear/DequantizeLinear) needs opset >= 13, not " + std::to_string(opset))
        .hint("use --opset 13 or later");
  if (qdq) return;
  for (ir::ValueId v : n.inputs)
    if (v != ir::kNoValue && g.value(v).quant)
      throw write_error(n, "input '" + g.value(v).name +
                               "' is quantized: ONNX output holds int8 models in QDQ form only (float ops between "
                               "QuantizeLinear/DequantizeLinear pairs)");
}

int ir_version_for(int opset) { return opset <= 14 ? 7 : 8; }

// How the graph's constants reach the file: moved into the proto (to_onnx_bytes, where the model
// is in memory anyway), or left out of it and written from the graph's buffers one at a time
// (write_onnx_to), so that the weights and libonnx's checker never occupy memory together.
enum class Weights { kInProto, kStreamed };

struct Model {
  onnx::ModelProto proto;
  // Initializers [first_streamed, end) have name, type and dims but no data yet; streamed[i] is
  // the graph value whose bytes belong to initializer first_streamed + i.
  int first_streamed = 0;
  std::vector<ir::ValueId> streamed;
};

Model build_model(ir::Graph& g, const OnnxWriteOptions& options, Weights weights) {
  if (options.opset < kMinOpset || options.opset > kMaxOpset)
    throw Error("opset " + std::to_string(options.opset) + " is not supported; choose " + std::to_string(kMinOpset) +
                "-" + std::to_string(kMaxOpset));
  Model built;
  onnx::ModelProto& model = built.proto;
  model.set_ir_version(ir_version_for(options.opset));
  model.set_producer_name("modex");
  model.set_producer_version(MODEX_VERSION);
  if (!options.doc_string.empty()) model.set_doc_string(options.doc_string);
  auto* op = model.add_opset_import();
  op->set_domain("");
  op->set_version(options.opset);
  for (const auto& [k, v] : options.metadata) {
    auto* p = model.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  auto* gp = model.mutable_graph();
  gp->set_name(options.graph_name);

  for (ir::ValueId in : g.inputs()) set_type(gp->add_input(), g.value(in));
  for (ir::ValueId out : g.outputs()) set_type(gp->add_output(), g.value(out));

  Emitter e(g, gp, options.opset);
  const auto& table = builders();
  std::vector<bool> used(g.values().size(), false);
  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    for (ir::ValueId v : n.inputs)
      if (v != ir::kNoValue) used[static_cast<size_t>(v)] = true;
    check_softmax_axis(g, n, options.opset);
    check_quantized(g, n, options.opset);
    auto it = table.find(n.op);
    if (it == table.end()) throw write_error(n, "no ONNX form for this op");
    it->second(e, n);
  }
  for (ir::ValueId out : g.outputs()) used[static_cast<size_t>(out)] = true;

  // Initializers last: each constant's bytes move into the proto (or are copied and released
  // right away), so the weights exist once, not twice. Streamed ones get their bytes at write time.
  // Those in memory come first: written and released before any still to be read is read, so
  // the two are never all held at once (a checkpoint's classifier, say, after the folded convs).
  std::vector<ir::ValueId> constants;
  for (size_t i = 0; i < g.values().size(); ++i)
    if (g.value(static_cast<ir::ValueId>(i)).is_constant() && used[i]) constants.push_back(static_cast<ir::ValueId>(i));
  std::stable_partition(constants.begin(), constants.end(), [&](ir::ValueId id) { return g.value(id).constant.in_memory(); });
  built.first_streamed = gp->initializer_size();
  for (ir::ValueId i : constants) {
    ir::Value& v = g.value(i);
    auto* t = gp->add_initializer();
    t->set_name(v.name);
    t->set_data_type(onnx_dtype(v.dtype));
    for (int64_t d : v.constant.shape()) t->add_dims(d);
    if (weights == Weights::kStreamed)
      built.streamed.push_back(i);
    else
      t->set_raw_data(v.constant.take_bytes());  // moved, not copied, when the graph owns it alone
  }
  return built;
}

void check_model(onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
    onnx::ShapeInferenceOptions opts{/*check_type=*/true, /*error_mode=*/1, /*enable_data_propagation=*/false};
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), opts);
  } catch (const std::exception& ex) {
    throw Error(std::string("the ONNX checker rejected the model modex built: ") + ex.what(), ErrorKind::kInternal);
  }
  // Inference filled value_info for every intermediate; it was only needed for the check.
  model.mutable_graph()->clear_value_info();
}

using google::protobuf::io::CodedOutputStream;
using google::protobuf::internal::WireFormatLite;

constexpr size_t kMaxProtoBytes = static_cast<size_t>(INT32_MAX);

// The serialized fields of `m` numbered below and above `field`. Protobuf writes fields in
// number order, so `below + <field> + above` is the message's serialization. The fields are
// swapped out and back, not copied.
std::pair<std::string, std::string> fields_around(google::protobuf::Message& m, int field) {
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> set, below_fields, above_fields;
  r->ListFields(m, &set);
  for (const auto* f : set) {
    if (f->number() < field) below_fields.push_back(f);
    if (f->number() > field) above_fields.push_back(f);
  }
  std::unique_ptr<google::protobuf::Message> below(m.New()), above(m.New());
  r->SwapFields(&m, below.get(), below_fields);
  r->SwapFields(&m, above.get(), above_fields);
  std::pair<std::string, std::string> bytes{below->SerializeAsString(), above->SerializeAsString()};
  r->SwapFields(&m, below.get(), below_fields);
  r->SwapFields(&m, above.get(), above_fields);
  return bytes;
}

// A length-delimited field of n bytes (field numbers below 16 have one-byte tags).
size_t length_delimited_size(size_t n) { return 1 + CodedOutputStream::VarintSize64(n) + n; }

constexpr uint32_t kGraphTag = WireFormatLite::MakeTag(onnx::ModelProto::kGraphFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kInitializerTag =
    WireFormatLite::MakeTag(onnx::GraphProto::kInitializerFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
constexpr uint32_t kRawDataTag =
    WireFormatLite::MakeTag(onnx::TensorProto::kRawDataFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
static_assert(kGraphTag < 128 && kInitializerTag < 128 && kRawDataTag < 128, "length_delimited_size counts one-byte tags");

// Each initializer's GraphProto field size: its proto, plus the raw_data of a streamed one.
std::vector<size_t> initializer_sizes(Model& m, ir::Graph& g) {
  onnx::GraphProto& gp = *m.proto.mutable_graph();
  std::vector<size_t> sizes;
  for (int i = 0; i < gp.initializer_size(); ++i) {
    size_t size = gp.initializer(i).ByteSizeLong();  // also caches the sizes for SerializeWithCachedSizes
    if (i >= m.first_streamed) size += length_delimited_size(g.value(m.streamed[static_cast<size_t>(i - m.first_streamed)]).constant.nbytes());
    if (size > kMaxProtoBytes)
      throw Error("initializer '" + gp.initializer(i).name() + "' is larger than 2 GB, which ONNX protobuf files cannot hold",
                  ErrorKind::kUnsupported);
    sizes.push_back(size);
  }
  return sizes;
}

template <typename Emit>
void write_coded(int fd, Emit&& emit) {
  google::protobuf::io::FileOutputStream stream(fd, 256 << 10);
  {
    CodedOutputStream coded(&stream);
    // Aliasing lets the weight bytes go to write() straight from the graph's buffers, instead of
    // being copied through the stream's buffer in 8 KB pieces.
    coded.EnableAliasing(true);
    emit(coded);
    if (coded.HadError()) throw Error("cannot write ONNX file", ErrorKind::kIo);
  }
  if (!stream.Flush()) throw Error("cannot write ONNX file", ErrorKind::kIo);
}

// Writes the initializers (as GraphProto fields) at the file's position `at`, each streamed
// constant from its graph buffer, released right after. The streamed initializers are left
// referring to where their bytes now sit (data_location EXTERNAL: location, offset, length), so
// that the checker can run on the model without the weights in memory.
void write_initializers(Model& m, ir::Graph& g, const std::vector<size_t>& sizes, AtomicFile& file, size_t at) {
  onnx::GraphProto& gp = *m.proto.mutable_graph();
  const std::string location = std::filesystem::absolute(file.temp_path()).string();
  write_coded(file.fd(), [&](CodedOutputStream& coded) {
    for (int i = 0; i < gp.initializer_size(); ++i) {
      onnx::TensorProto& t = *gp.mutable_initializer(i);
      coded.WriteTag(kInitializerTag);
      coded.WriteVarint64(sizes[static_cast<size_t>(i)]);
      t.SerializeWithCachedSizes(&coded);
      if (i < m.first_streamed) continue;
      Tensor& data = g.value(m.streamed[static_cast<size_t>(i - m.first_streamed)]).constant;
      coded.WriteTag(kRawDataTag);
      coded.WriteVarint64(data.nbytes());
      const size_t offset = at + static_cast<size_t>(coded.ByteCount());
      coded.WriteRawMaybeAliased(data.raw(), static_cast<int>(data.nbytes()));
      t.set_data_location(onnx::TensorProto::EXTERNAL);
      for (auto [key, value] : {std::pair{"location", location}, std::pair{"offset", std::to_string(offset)},
                                std::pair{"length", std::to_string(data.nbytes())}}) {
        auto* e = t.add_external_data();
        e->set_key(key);
        e->set_value(value);
      }
      data = Tensor();  // written: the graph lets go of it
    }
  });
}

// Appends n bytes of `from`, starting at `offset`, to `to`: in the kernel where it can.
void append_file(int from, off_t offset, int to, size_t n) {
  while (n > 0) {
    ssize_t k = ::copy_file_range(from, &offset, to, nullptr, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;  // not supported here (or an error the loop below reports)
    n -= static_cast<size_t>(k);
  }
  std::vector<char> buffer(std::min<size_t>(n, 256 << 10));
  while (n > 0) {
    ssize_t k = ::pread(from, buffer.data(), std::min(n, buffer.size()), offset);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) throw Error("cannot write ONNX file", ErrorKind::kIo);
    for (ssize_t done = 0; done < k;) {
      ssize_t w = ::write(to, buffer.data() + done, static_cast<size_t>(k - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) throw Error("cannot write ONNX file", ErrorKind::kIo);
      done += w;
    }
    offset += k;
    n -= static_cast<size_t>(k);
  }
}

// The model's bytes up to its first initializer.
struct Head {
  std::string model_head, graph_head;
  size_t graph_size = 0;
  size_t size() const { return model_head.size() + 1 + CodedOutputStream::VarintSize64(graph_size) + graph_head.size(); }
  void write(CodedOutputStream& c) const {
    c.WriteString(model_head);
    c.WriteTag(kGraphTag);
    c.WriteVarint64(graph_size);
    c.WriteString(graph_head);
  }
};

}  // namespace

std::string to_onnx_bytes(ir::Graph& g, const OnnxWriteOptions& options) {
  onnx::ModelProto model = build_model(g, options, Weights::kInProto).proto;
  check_model(model);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error("ONNX serialisation failed (model larger than 2 GB?)", ErrorKind::kUnsupported);
  return bytes;
}

size_t write_onnx_to(ir::Graph& g, AtomicFile& file, const OnnxWriteOptions& options) {
  Model m = build_model(g, options, Weights::kStreamed);
  onnx::GraphProto& gp = *m.proto.mutable_graph();
  // Protobuf writes fields in number order: the graph's initializers come before its outputs,
  // the graph before the model's opset imports and metadata.
  Head head;
  auto [model_head, model_tail] = fields_around(m.proto, onnx::ModelProto::kGraphFieldNumber);
  auto [graph_head, graph_tail] = fields_around(gp, onnx::GraphProto::kInitializerFieldNumber);
  head.model_head = std::move(model_head);
  head.graph_head = std::move(graph_head);
  const std::vector<size_t> sizes = initializer_sizes(m, g);
  size_t initializers = 0;
  for (size_t n : sizes) initializers += length_delimited_size(n);
  auto total = [&](size_t tail) {
    head.graph_size = head.graph_head.size() + initializers + tail;
    const size_t size = head.model_head.size() + length_delimited_size(head.graph_size) + model_tail.size();
    if (size > kMaxProtoBytes)
      throw Error("the model is larger than 2 GB, which ONNX protobuf files cannot hold", ErrorKind::kUnsupported);
    return size;
  };
  size_t size = total(graph_tail.size());
  write_coded(file.fd(), [&](CodedOutputStream& c) { head.write(c); });
  const size_t at = head.size();
  write_initializers(m, g, sizes, file, at);

  // Checked with the weights already out of memory. Of the initializers' data the checker sees
  // that it exists, where it was just written (as it sees, of raw_data, that it is there, never
  // its values); shape inference reads their types and dims.
  check_model(m.proto);
  // What inference added to the graph's outputs is written too, as when the model was checked
  // whole. Usually that leaves the graph's size as it was; when not, the head is rewritten and
  // the initializers moved behind it.
  graph_tail = fields_around(gp, onnx::GraphProto::kInitializerFieldNumber).second;
  const size_t new_size = total(graph_tail.size());
  if (new_size != size) {
    size = new_size;
    AtomicFile moved(std::filesystem::path(file.temp_path().string() + ".initializers"));
    append_file(file.fd(), static_cast<off_t>(at), moved.fd(), initializers);
    if (::ftruncate(file.fd(), 0) != 0 || ::lseek(file.fd(), 0, SEEK_SET) != 0) throw Error("cannot write ONNX file", ErrorKind::kIo);
    write_coded(file.fd(), [&](CodedOutputStream& c) { head.write(c); });
    append_file(moved.fd(), 0, file.fd(), initializers);
  }
  write_coded(file.fd(), [&](CodedOutputStream& c) {
    c.WriteString(graph_tail);
    c.WriteString(model_tail);
  });
  return size;
}

size_t write_onnx(ir::Graph& g, const std::filesystem::path& path, const OnnxWriteOptions& options) {
  AtomicFile f(path);
  size_t size;
  try {
    size = write_onnx_to(g, f, options);
  } catch (Error& e) {
    e.file(path.string());
    throw;
  }
  f.commit();
  return size;
}

}  // namespace modex::onnx_io
