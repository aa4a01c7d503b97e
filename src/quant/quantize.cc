#include "quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "quant/prepare.h"

namespace modex::quant {
namespace {

using ir::OpKind;
using ir::ValueId;

constexpr float kFixedScale = 1.0f / 256.0f;  // LOGISTIC / SOFTMAX int8 output
constexpr int64_t kFixedZeroPoint = -128;

ir::QuantParams per_tensor(float scale, int64_t zp) { return ir::QuantParams{{scale}, {zp}, 0}; }

Error node_error(const ir::Node& n, const std::string& msg, ErrorKind kind = ErrorKind::kUnsupported) {
  Error e(msg, kind);
  e.node(n.name).op(std::string(ir::op_name(n.op)));
  return e;
}

class Quantizer {
 public:
  Quantizer(const ir::Graph& src, const RangeMap& ranges, const QuantizeOptions& options)
      : src_(src), ranges_(ranges), options_(options), map_(src.values().size(), ir::kNoValue) {}

  ir::Graph run() {
    out_.metadata = src_.metadata;
    for (ValueId in : src_.inputs()) map_input(in);
    for (const ir::Node& n : src_.nodes())
      if (!n.dead) quantize_node(n);
    for (ValueId o : src_.outputs()) map_output(o);
    ir::verify(out_);
    return std::move(out_);
  }

 private:
  TensorRange range_of(ValueId v) const {
    const std::string& name = src_.value(v).name;
    auto it = ranges_.find(name);
    if (it == ranges_.end())
      throw Error("no calibration range for this value", ErrorKind::kInternal).tensor(name).hint("calibrate every value prepare_for_int8 lists");
    return it->second;
  }

  ValueId mapped(ValueId v) {
    ValueId& m = map_[static_cast<size_t>(v)];
    if (m != ir::kNoValue) return m;
    const ir::Value& val = src_.value(v);
    if (!val.is_constant()) throw Error("value used before it is produced", ErrorKind::kInternal).tensor(val.name);
    // A constant operand of Add/Mul: int8 over its own range.
    std::vector<float> x = val.constant.to_float_vector();
    TensorRange r{0.0f, 0.0f};
    for (float f : x) {
      r.min = std::min(r.min, f);
      r.max = std::max(r.max, f);
    }
    ir::QuantParams p = activation_params(r);
    Tensor q = Tensor::empty(DType::kInt8, val.constant.shape());
    int8_t* d = q.data_mutable<int8_t>();
    for (size_t i = 0; i < x.size(); ++i) d[i] = static_cast<int8_t>(quantize_value(x[i], p.scale[0], p.zero_point[0], -128, 127));
    m = out_.add_constant(val.name, std::move(q));
    out_.value(m).quant = p;
    return m;
  }

  ir::QuantParams params(ValueId new_id) const {  // a copy: adding values moves them
    const ir::Value& v = out_.value(new_id);
    if (!v.quant) throw Error("value without quantization parameters", ErrorKind::kInternal).tensor(v.name);
    return *v.quant;
  }

  ValueId add(const ir::Node& n, OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs, const ir::QuantParams& p,
              const std::string& name) {
    ValueId v = out_.add_node1(op, std::move(attrs), std::move(inputs), name);
    out_.value(v).quant = p;
    return v;
  }

  void map_input(ValueId in) {
    const ir::Value& v = src_.value(in);
    ir::QuantParams p = activation_params(range_of(in));
    switch (options_.io_type) {
      case IoType::kInt8: {
        ValueId q = out_.add_input(v.name, DType::kInt8, v.shape);
        out_.value(q).quant = p;
        map_[static_cast<size_t>(in)] = q;
        return;
      }
      case IoType::kUInt8: {
        ValueId u = out_.add_input(v.name, DType::kUInt8, v.shape);
        out_.value(u).quant = per_tensor(p.scale[0], p.zero_point[0] + 128);
        ValueId q = out_.add_node1(OpKind::kQuantize, ir::QuantizeAttrs{DType::kInt8}, {u}, v.name + "/int8");
        out_.value(q).quant = p;
        map_[static_cast<size_t>(in)] = q;
        return;
      }
      case IoType::kFloat32: {
        ValueId f = out_.add_input(v.name, v.dtype, v.shape);
        ValueId q = out_.add_node1(OpKind::kQuantize, ir::QuantizeAttrs{DType::kInt8}, {f}, v.name + "/int8");
        out_.value(q).quant = p;
        map_[static_cast<size_t>(in)] = q;
        return;
      }
    }
  }

  void map_output(ValueId o) {
    ValueId q = mapped(o);
    if (options_.io_type == IoType::kInt8) {
      out_.add_output(q);
      return;
    }
    const std::string name = out_.value(q).name;
    out_.set_output_name(q, name + "/int8");
    ValueId r;
    if (options_.io_type == IoType::kUInt8) {
      const ir::QuantParams p = params(q);
      r = out_.add_node1(OpKind::kQuantize, ir::QuantizeAttrs{DType::kUInt8}, {q}, name);
      out_.value(r).quant = per_tensor(p.scale[0], p.zero_point[0] + 128);
    } else {
      r = out_.add_node1(OpKind::kDequantize, ir::NoAttrs{}, {q}, name);
    }
    out_.add_output(r);
  }

  // Conv [O, kH, kW, I/g] per-channel, Gemm [O, I] per-tensor; the int32 bias to match.
  void quantize_weighted(const ir::Node& n) {
    ValueId x = mapped(n.inputs[0]);
    const float sx = params(x).scale[0];
    const ir::Value& w = src_.value(n.inputs[1]);
    if (!w.is_constant()) throw node_error(n, "int8 convolutions and fully connected layers need constant weights");
    const bool conv = n.op == OpKind::kConv;
    const int64_t O = w.constant.dim(0);
    const int64_t per = w.constant.numel() / std::max<int64_t>(O, 1);
    std::vector<float> wv = w.constant.to_float_vector();
    std::vector<float> bias(static_cast<size_t>(O), 0.0f);
    const bool has_bias = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue;
    if (has_bias) {
      const ir::Value& b = src_.value(n.inputs[2]);
      if (!b.is_constant() || b.constant.numel() != O) throw node_error(n, "int8 export needs a constant bias of one value per output");
      bias = b.constant.to_float_vector();
    }
    // Scales: max|w| / 127, per output channel for Conv; floored so the int32 bias cannot overflow.
    std::vector<float> sw;
    auto scale_for = [&](float amax, float bmax) {
      return std::max(weight_scale(amax), bmax / (sx * static_cast<float>(1 << 30)));
    };
    if (conv) {
      for (int64_t o = 0; o < O; ++o) {
        float amax = 0;
        for (int64_t i = 0; i < per; ++i) amax = std::max(amax, std::abs(wv[static_cast<size_t>(o * per + i)]));
        sw.push_back(scale_for(amax, std::abs(bias[static_cast<size_t>(o)])));
      }
    } else {
      float amax = 0, bmax = 0;
      for (float f : wv) amax = std::max(amax, std::abs(f));
      for (float f : bias) bmax = std::max(bmax, std::abs(f));
      sw.push_back(scale_for(amax, bmax));
    }
    Tensor qw = Tensor::empty(DType::kInt8, w.constant.shape());
    int8_t* dw = qw.data_mutable<int8_t>();
    for (int64_t o = 0; o < O; ++o) {
      const float s = sw[conv ? static_cast<size_t>(o) : 0];
      for (int64_t i = 0; i < per; ++i) {
        const size_t k = static_cast<size_t>(o * per + i);
        dw[k] = static_cast<int8_t>(quantize_value(wv[k], s, 0, -127, 127));
      }
    }
    ir::QuantParams wp;
    wp.axis = 0;
    wp.scale = sw;
    wp.zero_point.assign(sw.size(), 0);
    ValueId wq = out_.add_constant(w.name, std::move(qw));
    out_.value(wq).quant = wp;

    Tensor qb = Tensor::empty(DType::kInt32, {O});
    int32_t* db = qb.data_mutable<int32_t>();
    ir::QuantParams bp;
    bp.axis = 0;
    for (float s : sw) bp.scale.push_back(sx * s);
    bp.zero_point.assign(bp.scale.size(), 0);
    for (int64_t o = 0; o < O; ++o) {
      const float s = bp.scale[conv ? static_cast<size_t>(o) : 0];
      db[o] = quantize_value(bias[static_cast<size_t>(o)], s, 0, std::numeric_limits<int32_t>::min() + 1,
                             std::numeric_limits<int32_t>::max());
    }
    const std::string bias_name = has_bias ? src_.value(n.inputs[2]).name : src_.value(n.outputs[0]).name + "/bias";
    ValueId bq = out_.add_constant(bias_name, std::move(qb));
    out_.value(bq).quant = bp;

    const ValueId y = n.outputs[0];
    set(y, add(n, n.op, n.attrs, {x, wq, bq}, activation_params(range_of(y)), src_.value(y).name));
  }

  void set(ValueId src_value, ValueId new_value) { map_[static_cast<size_t>(src_value)] = new_value; }

  void quantize_node(const ir::Node& n) {
    if (n.outputs.size() != 1) throw node_error(n, "multi-output ops have no int8 form");
    const ValueId y = n.outputs[0];
    const std::string& name = src_.value(y).name;
    if (keeps_input_params(n.op)) {
      if (n.op == OpKind::kPad && n.attr<ir::PadAttrs>().value != 0.0f)
        throw node_error(n, "int8 padding pads with the zero point (real 0) only");
      const ValueId x = mapped(n.inputs[0]);
      set(y, n.op == OpKind::kIdentity ? x : add(n, n.op, n.attrs, {x}, params(x), name));
      return;
    }
    switch (n.op) {
      case OpKind::kConv:
      case OpKind::kGemm:
        quantize_weighted(n);
        return;
      case OpKind::kAdd:
      case OpKind::kMul: {
        const auto& a = n.attr<ir::BinaryAttrs>();
        if (a.activation != ir::Activation::kNone && a.activation != ir::Activation::kRelu && a.activation != ir::Activation::kRelu6)
          throw node_error(n, "fused activation has no int8 form; run prepare_for_int8 first", ErrorKind::kInternal);
        ValueId a0 = mapped(n.inputs[0]), a1 = mapped(n.inputs[1]);
        set(y, add(n, n.op, n.attrs, {a0, a1}, activation_params(range_of(y)), name));
        return;
      }
      case OpKind::kConcat: {
        // One set of params for all inputs and the output: the output's range covers every input.
        const ir::QuantParams p = activation_params(range_of(y));
        std::vector<ValueId> ins;
        for (ValueId in : n.inputs) {
          ValueId q = mapped(in);
          if (params(q) != p) {
            ValueId r = out_.add_node1(OpKind::kQuantize, ir::QuantizeAttrs{DType::kInt8}, {q}, out_.value(q).name + "/requantized");
            out_.value(r).quant = p;
            q = r;
          }
          ins.push_back(q);
        }
        set(y, add(n, n.op, n.attrs, ins, p, name));
        return;
      }
      case OpKind::kSigmoid:
      case OpKind::kSoftmax: {
        ValueId x = mapped(n.inputs[0]);
        set(y, add(n, n.op, n.attrs, {x}, per_tensor(kFixedScale, kFixedZeroPoint), name));
        return;
      }
      case OpKind::kReduceMean:
      case OpKind::kHardSwish:
      case OpKind::kRelu:
      case OpKind::kClip: {
        ValueId x = mapped(n.inputs[0]);
        set(y, add(n, n.op, n.attrs, {x}, activation_params(range_of(y)), name));
        return;
      }
      default:
        throw node_error(n, "no int8 TFLite form for this op");
    }
  }

  const ir::Graph& src_;
  const RangeMap& ranges_;
  QuantizeOptions options_;
  ir::Graph out_;
  std::vector<ValueId> map_;
};

}  // namespace

std::string_view io_type_name(IoType t) {
  switch (t) {
    case IoType::kInt8: return "int8";
    case IoType::kUInt8: return "uint8";
    case IoType::kFloat32: return "float32";
  }
  return "?";
}

IoType parse_io_type(std::string_view name) {
  for (IoType t : {IoType::kInt8, IoType::kUInt8, IoType::kFloat32})
    if (io_type_name(t) == name) return t;
  throw Error("unknown io type '" + std::string(name) + "'").hint("use int8, uint8 or float32");
}

float weight_scale(float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  return amax / 127.0f;
}

int32_t quantize_value(float x, float scale, int64_t zero_point, int32_t lo, int32_t hi) {
  const double q = std::round(static_cast<double>(x) / static_cast<double>(scale)) + static_cast<double>(zero_point);
  if (!(q >= lo)) return lo;  // also NaN
  if (q > hi) return hi;
  return static_cast<int32_t>(q);
}

ir::Graph quantize_int8(const ir::Graph& prepared, const RangeMap& ranges, const QuantizeOptions& options) {
  for (const ir::Node& n : prepared.nodes())
    if (!n.dead && !has_int8_form(n)) throw node_error(n, "no int8 TFLite form for this op; run prepare_for_int8 first");
  return Quantizer(prepared, ranges, options).run();
}

}  // namespace modex::quant
