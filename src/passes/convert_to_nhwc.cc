#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/tensor_ops.h"
#include "passes/passes.h"

namespace modex::passes {
namespace {

using ir::Dim;
using ir::OpKind;
using ir::ValueId;

// NCHW -> NHWC and back, for 4-D tensors.
const std::vector<int64_t> kToNhwc{0, 2, 3, 1};
const std::vector<int64_t> kToNchw{0, 3, 1, 2};

// Axis of a logical NCHW tensor -> its position in the NHWC tensor.
int64_t nhwc_axis(int64_t axis) {
  static const int64_t kMap[4] = {0, 3, 1, 2};
  return kMap[axis < 0 ? axis + 4 : axis];
}

struct Mapped {
  ValueId id = ir::kNoValue;
  bool nhwc = false;  // holds the logical NCHW tensor permuted to NHWC
};

class NhwcRewriter {
 public:
  NhwcRewriter(const ir::Graph& src, const NhwcOptions& options) : src_(src), options_(options) {
    map_.assign(src.values().size(), Mapped{});
  }

  ir::Graph run() {
    out_.metadata = src_.metadata;
    for (ValueId in : src_.inputs()) map_input(in);
    for (const ir::Node& n : src_.nodes())
      if (!n.dead) rewrite(n);
    for (ValueId o : src_.outputs()) {
      ValueId v = plain(o);
      std::string name = src_.value(o).name;
      out_.add_output(v);
      out_.set_output_name(v, name);
    }
    return std::move(out_);
  }

 private:
  Error fail(const ir::Node& n, const std::string& msg) {
    Error e(msg, ErrorKind::kUnsupported);
    e.node(n.name).op(std::string(ir::op_name(n.op)));
    return e;
  }

  bool is_4d(ValueId v) const { return src_.value(v).shape.size() == 4; }

  void map_input(ValueId in) {
    const ir::Value& v = src_.value(in);
    if (v.shape.size() != 4) {
      map_[static_cast<size_t>(in)] = {out_.add_input(v.name, v.dtype, v.shape), false};
      return;
    }
    if (options_.nchw_input) {
      ValueId raw = out_.add_input(v.name, v.dtype, v.shape);
      ValueId t = out_.add_node1(OpKind::kTranspose, ir::TransposeAttrs{kToNhwc}, {raw}, v.name + "/to_nhwc");
      map_[static_cast<size_t>(in)] = {t, true};
      return;
    }
    ir::Shape s{v.shape[0], v.shape[2], v.shape[3], v.shape[1]};
    map_[static_cast<size_t>(in)] = {out_.add_input(v.name, v.dtype, s), true};
  }

  // The value in the new graph, creating constants lazily.
  Mapped get(ValueId v) {
    Mapped& m = map_[static_cast<size_t>(v)];
    if (m.id == ir::kNoValue) {
      const ir::Value& val = src_.value(v);
      if (!val.is_constant()) throw Error("value used before it is defined", ErrorKind::kInternal).tensor(val.name);
      m = {out_.add_constant(val.name, val.constant), false};
    }
    return m;
  }

  // The value with its logical (NCHW) layout.
  ValueId plain(ValueId v) {
    Mapped m = get(v);
    if (!m.nhwc) return m.id;
    auto it = plain_cache_.find(m.id);
    if (it != plain_cache_.end()) return it->second;
    ValueId t = out_.add_node1(OpKind::kTranspose, ir::TransposeAttrs{kToNchw}, {m.id}, src_.value(v).name + "/to_nchw");
    plain_cache_[m.id] = t;
    return t;
  }

  // The value in NHWC layout (4-D only).
  ValueId nhwc(ValueId v) {
    Mapped m = get(v);
    if (m.nhwc) return m.id;
    const ir::Value& val = src_.value(v);
    if (val.is_constant()) return out_.add_constant(val.name + "_nhwc", transposed(val.constant, kToNhwc));
    return out_.add_node1(OpKind::kTranspose, ir::TransposeAttrs{kToNhwc}, {m.id}, val.name + "/to_nhwc");
  }

  // A broadcast operand of an NHWC tensor: a constant of lower rank ([C,1,1], [1,C,1,1], scalar)
  // is rearranged to broadcast the same way in NHWC.
  ValueId broadcast_operand(ValueId v) {
    const ir::Value& val = src_.value(v);
    if (val.shape.size() == 4) return nhwc(v);
    if (!val.is_constant()) {
      if (val.shape.size() <= 1 && (val.shape.empty() || (val.shape[0].is_static() && val.shape[0].value == 1)))
        return get(v).id;
      throw Error("cannot broadcast a non-constant lower-rank operand in NHWC", ErrorKind::kUnsupported).tensor(val.name);
    }
    Dims d = val.constant.shape();
    if (d.empty() || (d.size() == 1 && d[0] == 1)) return get(v).id;
    Dims full(4 - d.size(), 1);
    full.insert(full.end(), d.begin(), d.end());
    return out_.add_constant(val.name + "_nhwc", transposed(val.constant.reshaped(full), kToNhwc));
  }

  void set(const ir::Node& n, ValueId id, bool nhwc_layout) {
    map_[static_cast<size_t>(n.outputs[0])] = {id, nhwc_layout};
  }

  ValueId add(const ir::Node& n, OpKind op, ir::OpAttrs attrs, std::vector<ValueId> inputs) {
    ValueId id = out_.add_node1(op, std::move(attrs), std::move(inputs), src_.value(n.outputs[0]).name);
    out_.value(id).quant = src_.value(n.outputs[0]).quant;  // a Quantize output keeps its params
    return id;
  }

  // QDQ models: a per-tensor Quantize/Dequantize is element-wise, so it follows the layout.
  bool per_tensor_qdq(const ir::Node& n) const {
    if (n.op != OpKind::kQuantize && n.op != OpKind::kDequantize) return false;
    const ir::Value& q = src_.value(n.op == OpKind::kQuantize ? n.outputs[0] : n.inputs[0]);
    return q.quant && !q.quant->per_channel();
  }

  void rewrite(const ir::Node& n) {
    if (n.outputs.size() != 1) throw fail(n, "multi-output ops are not supported by the NHWC conversion");
    bool any_nhwc = false;
    for (ValueId in : n.inputs)
      if (in != ir::kNoValue && !src_.value(in).is_constant()) any_nhwc |= get(in).nhwc;

    switch (n.op) {
      case OpKind::kConv: {
        auto a = n.attr<ir::ConvAttrs>();
        if (a.layout != ir::Layout::kNCHW || a.kernel.size() != 2) throw fail(n, "expected a 2-D NCHW convolution");
        a.layout = ir::Layout::kNHWC;
        const ir::Value& w = src_.value(n.inputs[1]);
        if (!w.is_constant()) throw fail(n, "convolution weights must be constant");
        std::vector<ValueId> ins{nhwc(n.inputs[0]), out_.add_constant(w.name, transposed(w.constant, kToNhwc))};
        if (n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue) ins.push_back(get(n.inputs[2]).id);
        set(n, add(n, OpKind::kConv, a, ins), true);
        return;
      }
      case OpKind::kMaxPool:
      case OpKind::kAveragePool: {
        auto a = n.attr<ir::PoolAttrs>();
        if (a.kernel.size() != 2) throw fail(n, "expected 2-D pooling");
        a.layout = ir::Layout::kNHWC;
        set(n, add(n, n.op, a, {nhwc(n.inputs[0])}), true);
        return;
      }
      case OpKind::kGlobalAveragePool:
        if (!is_4d(n.inputs[0])) break;
        set(n, add(n, OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {nhwc(n.inputs[0])}), true);
        return;
      case OpKind::kBatchNorm: {
        // TFLite has no batch normalisation: y = x * scale + shift with per-channel constants,
        // in NHWC for maps and broadcast over [N, C, L...] otherwise (e.g. BatchNorm1d).
        std::vector<float> scale, shift;
        for (size_t i = 1; i < 5; ++i)
          if (!src_.value(n.inputs[i]).is_constant()) throw fail(n, "BatchNorm parameters must be constant");
        auto gamma = src_.value(n.inputs[1]).constant.to_float_vector();
        auto beta = src_.value(n.inputs[2]).constant.to_float_vector();
        auto mean = src_.value(n.inputs[3]).constant.to_float_vector();
        auto var = src_.value(n.inputs[4]).constant.to_float_vector();
        float eps = n.attr<ir::BatchNormAttrs>().epsilon;
        for (size_t c = 0; c < gamma.size(); ++c) {
          double s = gamma[c] / std::sqrt(static_cast<double>(var[c]) + eps);
          scale.push_back(static_cast<float>(s));
          shift.push_back(static_cast<float>(beta[c] - mean[c] * s));
        }
        int64_t C = static_cast<int64_t>(scale.size());
        std::string base = src_.value(n.outputs[0]).name;
        bool maps = is_4d(n.inputs[0]);
        size_t rank = src_.value(n.inputs[0]).shape.size();
        Dims cdims{C};
        if (!maps && rank > 2) cdims.resize(rank - 1, 1);  // [C, 1, ...] broadcasts over L...
        ValueId sc = out_.add_constant(base + ".scale", Tensor::from_floats(cdims, scale));
        ValueId sh = out_.add_constant(base + ".shift", Tensor::from_floats(cdims, shift));
        ValueId x = maps ? nhwc(n.inputs[0]) : plain(n.inputs[0]);
        ValueId m = out_.add_node1(OpKind::kMul, ir::BinaryAttrs{}, {x, sc}, base + "/scale");
        set(n, add(n, OpKind::kAdd, ir::BinaryAttrs{}, {m, sh}), maps);
        return;
      }
      case OpKind::kAdd:
      case OpKind::kSub:
      case OpKind::kMul:
      case OpKind::kDiv:
      case OpKind::kPRelu: {
        if (!any_nhwc) break;
        ValueId a = broadcast_operand(n.inputs[0]);
        ValueId b = broadcast_operand(n.inputs[1]);
        set(n, add(n, n.op, n.attrs, {a, b}), true);
        return;
      }
      case OpKind::kConcat: {
        if (!any_nhwc || !is_4d(n.inputs[0])) break;
        std::vector<ValueId> ins;
        for (ValueId in : n.inputs) ins.push_back(nhwc(in));
        set(n, add(n, n.op, ir::AxisAttrs{nhwc_axis(n.attr<ir::AxisAttrs>().axis)}, ins), true);
        return;
      }
      case OpKind::kSoftmax:
        if (!any_nhwc) break;
        set(n, add(n, n.op, ir::AxisAttrs{nhwc_axis(n.attr<ir::AxisAttrs>().axis)}, {nhwc(n.inputs[0])}), true);
        return;
      case OpKind::kReduceMean: {
        if (!any_nhwc) break;
        auto a = n.attr<ir::ReduceAttrs>();
        if (a.axes.empty() || !a.keepdims) break;  // handled by the layout-agnostic path below
        for (int64_t& ax : a.axes) ax = nhwc_axis(ax);
        set(n, add(n, n.op, a, {nhwc(n.inputs[0])}), true);
        return;
      }
      case OpKind::kPad: {
        if (!any_nhwc) break;
        auto a = n.attr<ir::PadAttrs>();
        std::vector<int64_t> p(8);
        for (int64_t i = 0; i < 4; ++i) {
          p[static_cast<size_t>(nhwc_axis(i))] = a.pads[static_cast<size_t>(i)];
          p[static_cast<size_t>(nhwc_axis(i) + 4)] = a.pads[static_cast<size_t>(i + 4)];
        }
        a.pads = p;
        set(n, add(n, n.op, a, {nhwc(n.inputs[0])}), true);
        return;
      }
      case OpKind::kFlatten:
      case OpKind::kReshape:
      case OpKind::kSqueeze: {
        // [N,C,1,1] -> [N,C]: NHWC [N,1,1,C] has the same element order, so the op applies as is.
        if (!any_nhwc) break;
        const ir::Shape& s = src_.value(n.inputs[0]).shape;
        bool unit_spatial = s[2].is_static() && s[2].value == 1 && s[3].is_static() && s[3].value == 1;
        const ir::Shape& o = src_.value(n.outputs[0]).shape;
        bool keeps_batch_and_channels = o.size() == 2;
        if (unit_spatial && keeps_batch_and_channels) {
          ir::OpAttrs attrs = n.attrs;
          if (n.op == OpKind::kSqueeze) attrs = ir::AxesAttrs{{1, 2}};
          set(n, add(n, n.op, attrs, {get(n.inputs[0]).id}), false);
          return;
        }
        break;
      }
      default:
        if ((ir::is_elementwise_unary(n.op) || per_tensor_qdq(n)) && any_nhwc) {
          set(n, add(n, n.op, n.attrs, {get(n.inputs[0]).id}), true);
          return;
        }
        break;
    }
    // Layout-agnostic fallback: run the op on NCHW tensors.
    std::vector<ValueId> ins;
    for (ValueId in : n.inputs) ins.push_back(in == ir::kNoValue ? ir::kNoValue : plain(in));
    set(n, add(n, n.op, n.attrs, ins), false);
  }

  const ir::Graph& src_;
  NhwcOptions options_;
  ir::Graph out_;
  std::vector<Mapped> map_;
  std::unordered_map<ValueId, ValueId> plain_cache_;
};

}  // namespace

void convert_to_nhwc(ir::Graph& g, const NhwcOptions& options) {
  ir::Graph converted = NhwcRewriter(g, options).run();
  g = std::move(converted);
  ir::verify(g);
}

}  // namespace modex::passes
