#include <algorithm>
#include <cmath>
#include <functional>

#include "core/tensor_ops.h"
#include "passes/passes.h"

namespace modex::passes {
namespace {

// out[i] = f(a[ia], b[ib]) with numpy broadcasting, computed in double and stored in out's dtype.
Tensor broadcast_binary(const Tensor& a, const Tensor& b, const Dims& out_shape, DType dtype,
                        const std::function<double(double, double)>& f) {
  std::vector<double> av, bv;
  if (a.dtype() == DType::kInt64) {
    for (int64_t v : a.to_int64_vector()) av.push_back(static_cast<double>(v));
  } else {
    for (float v : a.to_float_vector()) av.push_back(v);
  }
  if (b.dtype() == DType::kInt64) {
    for (int64_t v : b.to_int64_vector()) bv.push_back(static_cast<double>(v));
  } else {
    for (float v : b.to_float_vector()) bv.push_back(v);
  }
  Tensor out = Tensor::zeros(dtype, out_shape);
  for_each_broadcast(a.shape(), b.shape(), out_shape, [&](int64_t i, int64_t ia, int64_t ib) {
    double v = f(av[static_cast<size_t>(ia)], bv[static_cast<size_t>(ib)]);
    if (dtype == DType::kInt64)
      out.data_mutable<int64_t>()[i] = static_cast<int64_t>(v);
    else
      out.data_mutable<float>()[i] = static_cast<float>(v);
  });
  return out;
}

Tensor map_unary(const Tensor& x, const std::function<float(float)>& f) {
  std::vector<float> v = x.to_float_vector();
  for (float& e : v) e = f(e);
  return Tensor::from_floats(x.shape(), v);
}

Tensor concat(const std::vector<const Tensor*>& xs, int64_t axis, const Dims& out_shape) {
  Tensor out = Tensor::zeros(xs[0]->dtype(), out_shape);
  size_t es = dtype_size(out.dtype());
  size_t ax = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(out_shape.size()) : axis);
  int64_t outer = 1;
  for (size_t d = 0; d < ax; ++d) outer *= out_shape[d];
  uint8_t* dst = out.raw_mutable();
  for (int64_t o = 0; o < outer; ++o)
    for (const Tensor* x : xs) {
      int64_t chunk = x->numel() / std::max<int64_t>(outer, 1) * static_cast<int64_t>(es);
      std::copy_n(x->raw() + o * chunk, chunk, dst);
      dst += chunk;
    }
  return out;
}

// real = (q - zero_point) * scale, per tensor or per slice along the params' axis: the constant
// int8 weights and int32 biases of a QDQ model become the float constants the engine packs.
std::optional<Tensor> dequantize(const ir::Value& x, const Dims& out_shape) {
  if (!x.quant || x.quant->scale.empty() || x.quant->scale.size() != x.quant->zero_point.size()) return std::nullopt;
  const ir::QuantParams& q = *x.quant;
  const Tensor& t = x.constant;
  if (t.dtype() != DType::kInt8 && t.dtype() != DType::kUInt8 && t.dtype() != DType::kInt32) return std::nullopt;
  int64_t channels = static_cast<int64_t>(q.scale.size()), inner = t.numel();
  if (q.per_channel()) {
    if (q.axis < 0 || q.axis >= t.rank() || t.dim(q.axis) != channels) return std::nullopt;
    inner = 1;
    for (int64_t d = q.axis + 1; d < t.rank(); ++d) inner *= t.dim(d);
  }
  Tensor out = Tensor::zeros(DType::kFloat32, out_shape);
  float* y = out.data_mutable<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    size_t c = q.per_channel() ? static_cast<size_t>((i / inner) % channels) : 0;
    int64_t v = t.dtype() == DType::kInt8    ? t.data<int8_t>()[i]
                : t.dtype() == DType::kUInt8 ? t.data<uint8_t>()[i]
                                             : t.data<int32_t>()[i];
    y[i] = static_cast<float>(v - q.zero_point[c]) * q.scale[c];  // in float, as ONNX Runtime does
  }
  return out;
}

// Evaluates n when every input is constant and the op has an evaluator; nullopt otherwise.
std::optional<Tensor> evaluate(const ir::Graph& g, const ir::Node& n) {
  std::vector<const Tensor*> in;
  for (ir::ValueId v : n.inputs) {
    if (v == ir::kNoValue || !g.value(v).is_constant()) return std::nullopt;
    in.push_back(&g.value(v).constant);
  }
  if (in.empty()) return std::nullopt;
  const ir::Value& out = g.value(n.outputs[0]);
  auto out_dims = ir::to_dims(out.shape);
  if (!out_dims) return std::nullopt;
  bool floaty = in[0]->dtype() == DType::kFloat32;
  switch (n.op) {
    case ir::OpKind::kIdentity: return *in[0];
    case ir::OpKind::kReshape:
    case ir::OpKind::kFlatten:
    case ir::OpKind::kSqueeze:
    case ir::OpKind::kUnsqueeze: return in[0]->reshaped(*out_dims);
    case ir::OpKind::kTranspose: return transposed(*in[0], n.attr<ir::TransposeAttrs>().perm);
    case ir::OpKind::kConcat: return concat(in, n.attr<ir::AxisAttrs>().axis, *out_dims);
    case ir::OpKind::kDequantize: return dequantize(g.value(n.inputs[0]), *out_dims);
    case ir::OpKind::kRelu:
      if (!floaty) return std::nullopt;
      return map_unary(*in[0], [](float x) { return std::max(x, 0.0f); });
    case ir::OpKind::kClip: {
      if (!floaty) return std::nullopt;
      auto a = n.attr<ir::ClipAttrs>();
      return map_unary(*in[0], [a](float x) { return std::min(std::max(x, a.min), a.max); });
    }
    case ir::OpKind::kSigmoid:
      if (!floaty) return std::nullopt;
      return map_unary(*in[0], [](float x) { return 1.0f / (1.0f + std::exp(-x)); });
    case ir::OpKind::kAdd:
    case ir::OpKind::kSub:
    case ir::OpKind::kMul:
    case ir::OpKind::kDiv: {
      if (n.attr<ir::BinaryAttrs>().activation != ir::Activation::kNone) return std::nullopt;
      DType dt = in[0]->dtype();
      if (dt != DType::kFloat32 && dt != DType::kInt64) return std::nullopt;
      std::function<double(double, double)> f;
      switch (n.op) {
        case ir::OpKind::kAdd: f = [](double a, double b) { return a + b; }; break;
        case ir::OpKind::kSub: f = [](double a, double b) { return a - b; }; break;
        case ir::OpKind::kMul: f = [](double a, double b) { return a * b; }; break;
        default:
          if (dt == DType::kInt64) {
            f = [](double a, double b) { return b == 0 ? 0.0 : std::trunc(a / b); };
          } else {
            f = [](double a, double b) { return static_cast<double>(static_cast<float>(a) / static_cast<float>(b)); };
          }
      }
      return broadcast_binary(*in[0], *in[1], *out_dims, dt, f);
    }
    default: return std::nullopt;
  }
}

}  // namespace

bool fold_constants(ir::Graph& g) {
  bool changed = false;
  for (size_t k = 0; k < g.nodes().size(); ++k) {
    const ir::Node& n = g.node(static_cast<ir::NodeId>(k));
    if (n.dead || n.outputs.size() != 1) continue;
    std::optional<Tensor> t = evaluate(g, n);
    if (!t) continue;
    ir::ValueId out = n.outputs[0];
    ir::ValueId c = g.add_constant(g.value(out).name + ".folded", std::move(*t));
    g.replace_value(out, c);
    g.node(static_cast<ir::NodeId>(k)).dead = true;
    changed = true;
  }
  if (changed) g.compact();
  return changed;
}

void optimize(ir::Graph& g, const PipelineOptions& options) {
  fold_constants(g);
  fold_batchnorm(g);
  if (options.fuse_activations) fuse_activation(g);
  eliminate_dead_code(g);
  ir::verify(g);
}

}  // namespace modex::passes
