#include "runtime/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/tensor_ops.h"

namespace modex::runtime {
namespace {

using ir::OpKind;

float apply_activation(ir::Activation a, float x) {
  switch (a) {
    case ir::Activation::kNone: return x;
    case ir::Activation::kRelu: return std::max(x, 0.0f);
    case ir::Activation::kRelu6: return std::min(std::max(x, 0.0f), 6.0f);
    case ir::Activation::kHardSwish: return x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
    case ir::Activation::kSigmoid: return 1.0f / (1.0f + std::exp(-x));
    case ir::Activation::kSilu: return x / (1.0f + std::exp(-x));
  }
  return x;
}

Tensor conv(const Tensor& x, const Tensor& w, const Tensor* b, const ir::ConvAttrs& a, const Dims& out_shape) {
  const bool nhwc = a.layout == ir::Layout::kNHWC;
  const int64_t N = x.dim(0);
  const int64_t C = nhwc ? x.dim(3) : x.dim(1), H = nhwc ? x.dim(1) : x.dim(2), W = nhwc ? x.dim(2) : x.dim(3);
  const int64_t O = w.dim(0), KH = a.kernel[0], KW = a.kernel[1];
  const int64_t OH = nhwc ? out_shape[1] : out_shape[2], OW = nhwc ? out_shape[2] : out_shape[3];
  const int64_t G = a.groups, CG = C / G, OG = O / G;
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  const float* xd = x.data<float>();
  const float* wd = w.data<float>();
  float* yd = y.data_mutable<float>();
  auto xat = [&](int64_t n, int64_t c, int64_t h, int64_t ww) {
    return nhwc ? xd[((n * H + h) * W + ww) * C + c] : xd[((n * C + c) * H + h) * W + ww];
  };
  auto wat = [&](int64_t o, int64_t ci, int64_t kh, int64_t kw) {
    return nhwc ? wd[((o * KH + kh) * KW + kw) * CG + ci] : wd[((o * CG + ci) * KH + kh) * KW + kw];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      int64_t g = o / OG;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = b ? b->data<float>()[o] : 0.0;
          for (int64_t ci = 0; ci < CG; ++ci)
            for (int64_t kh = 0; kh < KH; ++kh) {
              int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
              if (ih < 0 || ih >= H) continue;
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
                if (iw < 0 || iw >= W) continue;
                acc += static_cast<double>(xat(n, g * CG + ci, ih, iw)) * wat(o, ci, kh, kw);
              }
            }
          float v = apply_activation(a.activation, static_cast<float>(acc));
          if (nhwc)
            yd[((n * OH + oh) * OW + ow) * O + o] = v;
          else
            yd[((n * O + o) * OH + oh) * OW + ow] = v;
        }
    }
  return y;
}

Tensor pool(const Tensor& x, const ir::PoolAttrs& a, bool max, const Dims& out_shape) {
  const bool nhwc = a.layout == ir::Layout::kNHWC;
  const int64_t N = x.dim(0);
  const int64_t C = nhwc ? x.dim(3) : x.dim(1), H = nhwc ? x.dim(1) : x.dim(2), W = nhwc ? x.dim(2) : x.dim(3);
  const int64_t OH = nhwc ? out_shape[1] : out_shape[2], OW = nhwc ? out_shape[2] : out_shape[3];
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  const float* xd = x.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = max ? -std::numeric_limits<double>::infinity() : 0.0;
          int64_t count = 0;
          for (int64_t kh = 0; kh < a.kernel[0]; ++kh)
            for (int64_t kw = 0; kw < a.kernel[1]; ++kw) {
              int64_t ih = oh * a.strides[0] - a.pads[0] + kh * a.dilations[0];
              int64_t iw = ow * a.strides[1] - a.pads[1] + kw * a.dilations[1];
              bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
              // count_include_pad counts the explicit padding, never the ceil_mode overhang.
              bool in_padded = ih < H + a.pads[2] && iw < W + a.pads[3];
              if (!inside) {
                if (!max && a.count_include_pad && in_padded) ++count;
                continue;
              }
              float v = nhwc ? xd[((n * H + ih) * W + iw) * C + c] : xd[((n * C + c) * H + ih) * W + iw];
              if (max)
                acc = std::max(acc, static_cast<double>(v));
              else
                acc += v;
              ++count;
            }
          float r = max ? static_cast<float>(acc) : static_cast<float>(count ? acc / count : 0.0);
          if (nhwc)
            yd[((n * OH + oh) * OW + ow) * C + c] = r;
          else
            yd[((n * C + c) * OH + oh) * OW + ow] = r;
        }
  return y;
}

// out = f(a, b) with numpy broadcasting.
template <typename F>
Tensor broadcast(const Tensor& a, const Tensor& b, const Dims& out_shape, F f) {
  size_t r = out_shape.size();
  auto aligned = [&](const Dims& s) {
    Dims d(r, 1);
    std::copy(s.begin(), s.end(), d.begin() + static_cast<ptrdiff_t>(r - s.size()));
    return d;
  };
  Dims ash = aligned(a.shape()), bsh = aligned(b.shape());
  Dims ast = row_major_strides(ash), bst = row_major_strides(bsh), ost = row_major_strides(out_shape);
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  const float* ad = a.data<float>();
  const float* bd = b.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t i = 0; i < y.numel(); ++i) {
    int64_t ia = 0, ib = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / ost[d];
      rem %= ost[d];
      if (ash[d] != 1) ia += idx * ast[d];
      if (bsh[d] != 1) ib += idx * bst[d];
    }
    yd[i] = f(ad[ia], bd[ib]);
  }
  return y;
}

template <typename F>
Tensor unary(const Tensor& x, F f) {
  Tensor y = Tensor::zeros(DType::kFloat32, x.shape());
  const float* xd = x.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t i = 0; i < x.numel(); ++i) yd[i] = f(xd[i]);
  return y;
}

// Reduces `axes` by mean; output has keepdims shape `kept` (same rank as x).
Tensor reduce_mean(const Tensor& x, const std::vector<bool>& reduced, const Dims& out_shape) {
  size_t r = static_cast<size_t>(x.rank());
  Dims kept(r);
  int64_t count = 1;
  for (size_t d = 0; d < r; ++d) {
    kept[d] = reduced[d] ? 1 : x.shape()[d];
    if (reduced[d]) count *= x.shape()[d];
  }
  Dims kst = row_major_strides(kept), xst = row_major_strides(x.shape());
  std::vector<double> acc(static_cast<size_t>(checked_numel(kept)), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t o = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / xst[d];
      rem %= xst[d];
      if (!reduced[d]) o += idx * kst[d];
    }
    acc[static_cast<size_t>(o)] += x.data<float>()[i];
  }
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  for (size_t i = 0; i < acc.size(); ++i) y.data_mutable<float>()[i] = static_cast<float>(acc[i] / count);
  return y;
}

Tensor softmax(const Tensor& x, int64_t axis) {
  size_t r = static_cast<size_t>(x.rank());
  size_t ax = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(r) : axis);
  int64_t outer = 1, inner = 1, n = x.shape()[ax];
  for (size_t d = 0; d < ax; ++d) outer *= x.shape()[d];
  for (size_t d = ax + 1; d < r; ++d) inner *= x.shape()[d];
  Tensor y = Tensor::zeros(DType::kFloat32, x.shape());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xp = x.data<float>() + o * n * inner + i;
      float* yp = y.data_mutable<float>() + o * n * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < n; ++k) m = std::max(m, xp[k * inner]);
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += std::exp(static_cast<double>(xp[k * inner] - m));
      for (int64_t k = 0; k < n; ++k) yp[k * inner] = static_cast<float>(std::exp(static_cast<double>(xp[k * inner] - m)) / s);
    }
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis, const Dims& out_shape) {
  size_t ax = static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(out_shape.size()) : axis);
  int64_t outer = 1;
  for (size_t d = 0; d < ax; ++d) outer *= out_shape[d];
  Tensor y = Tensor::zeros(xs[0].dtype(), out_shape);
  size_t es = dtype_size(y.dtype());
  uint8_t* dst = y.raw_mutable();
  for (int64_t o = 0; o < outer; ++o)
    for (const Tensor& x : xs) {
      size_t chunk = static_cast<size_t>(x.numel() / std::max<int64_t>(outer, 1)) * es;
      std::memcpy(dst, x.raw() + static_cast<size_t>(o) * chunk, chunk);
      dst += chunk;
    }
  return y;
}

Tensor pad(const Tensor& x, const ir::PadAttrs& a, const Dims& out_shape) {
  size_t r = static_cast<size_t>(x.rank());
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  std::fill_n(y.data_mutable<float>(), y.numel(), a.value);
  Dims xst = row_major_strides(x.shape()), yst = row_major_strides(out_shape);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t o = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / xst[d];
      rem %= xst[d];
      o += (idx + a.pads[d]) * yst[d];
    }
    y.data_mutable<float>()[o] = x.data<float>()[i];
  }
  return y;
}

Tensor matmul(const Tensor& a, const Tensor& b, const Dims& out_shape) {
  if (a.rank() != 2 || b.rank() != 2) throw Error("reference MatMul supports 2-D operands only", ErrorKind::kUnsupported);
  int64_t M = a.dim(0), K = a.dim(1), N = b.dim(1);
  Tensor y = Tensor::zeros(DType::kFloat32, out_shape);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(a.data<float>()[i * K + k]) * b.data<float>()[k * N + j];
      y.data_mutable<float>()[i * N + j] = static_cast<float>(acc);
    }
  return y;
}

}  // namespace

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
    if (g.values()[i].is_constant()) vals[i] = g.values()[i].constant.to(DType::kFloat32);
  for (size_t i = 0; i < inputs.size(); ++i) vals[static_cast<size_t>(g.inputs()[i])] = inputs[i].to(DType::kFloat32);

  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    auto in = [&](size_t i) -> const Tensor& { return vals[static_cast<size_t>(n.inputs[i])]; };
    const ir::Value& out = g.value(n.outputs[0]);
    Dims os = *ir::to_dims(out.shape);
    Tensor y;
    switch (n.op) {
      case OpKind::kConv:
        y = conv(in(0), in(1), n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &in(2) : nullptr, n.attr<ir::ConvAttrs>(), os);
        break;
      case OpKind::kBatchNorm: {
        const Tensor& x = in(0);
        float eps = n.attr<ir::BatchNormAttrs>().epsilon;
        int64_t C = x.dim(1), inner = x.numel() / (x.dim(0) * C);
        y = Tensor::zeros(DType::kFloat32, os);
        for (int64_t i = 0; i < x.numel(); ++i) {
          int64_t c = (i / inner) % C;
          double s = in(1).data<float>()[c] / std::sqrt(static_cast<double>(in(4).data<float>()[c]) + eps);
          y.data_mutable<float>()[i] = static_cast<float>((x.data<float>()[i] - in(3).data<float>()[c]) * s + in(2).data<float>()[c]);
        }
        break;
      }
      case OpKind::kGemm: {
        const Tensor& x = in(0);
        const Tensor& w = in(1);
        int64_t N = x.dim(0), I = x.dim(1), O = w.dim(0);
        y = Tensor::zeros(DType::kFloat32, os);
        auto act = n.attr<ir::GemmAttrs>().activation;
        for (int64_t i = 0; i < N; ++i)
          for (int64_t o = 0; o < O; ++o) {
            double acc = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? in(2).data<float>()[o] : 0.0;
            for (int64_t k = 0; k < I; ++k) acc += static_cast<double>(x.data<float>()[i * I + k]) * w.data<float>()[o * I + k];
            y.data_mutable<float>()[i * O + o] = apply_activation(act, static_cast<float>(acc));
          }
        break;
      }
      case OpKind::kMatMul: y = matmul(in(0), in(1), os); break;
      case OpKind::kRelu: y = unary(in(0), [](float x) { return std::max(x, 0.0f); }); break;
      case OpKind::kClip: {
        auto a = n.attr<ir::ClipAttrs>();
        y = unary(in(0), [a](float x) { return std::min(std::max(x, a.min), a.max); });
        break;
      }
      case OpKind::kLeakyRelu: {
        float al = n.attr<ir::LeakyReluAttrs>().alpha;
        y = unary(in(0), [al](float x) { return x >= 0 ? x : al * x; });
        break;
      }
      case OpKind::kPRelu: y = broadcast(in(0), in(1), os, [](float x, float s) { return x >= 0 ? x : s * x; }); break;
      case OpKind::kSigmoid: y = unary(in(0), [](float x) { return apply_activation(ir::Activation::kSigmoid, x); }); break;
      case OpKind::kHardSigmoid: {
        auto a = n.attr<ir::HardSigmoidAttrs>();
        y = unary(in(0), [a](float x) { return std::min(std::max(a.alpha * x + a.beta, 0.0f), 1.0f); });
        break;
      }
      case OpKind::kHardSwish: y = unary(in(0), [](float x) { return apply_activation(ir::Activation::kHardSwish, x); }); break;
      case OpKind::kSilu: y = unary(in(0), [](float x) { return apply_activation(ir::Activation::kSilu, x); }); break;
      case OpKind::kTanh: y = unary(in(0), [](float x) { return std::tanh(x); }); break;
      case OpKind::kIdentity: y = in(0); break;
      case OpKind::kAdd:
      case OpKind::kSub:
      case OpKind::kMul:
      case OpKind::kDiv: {
        auto act = n.attr<ir::BinaryAttrs>().activation;
        OpKind op = n.op;
        y = broadcast(in(0), in(1), os, [op, act](float a, float b) {
          float r = op == OpKind::kAdd ? a + b : op == OpKind::kSub ? a - b : op == OpKind::kMul ? a * b : a / b;
          return apply_activation(act, r);
        });
        break;
      }
      case OpKind::kMaxPool: y = pool(in(0), n.attr<ir::PoolAttrs>(), true, os); break;
      case OpKind::kAveragePool: y = pool(in(0), n.attr<ir::PoolAttrs>(), false, os); break;
      case OpKind::kGlobalAveragePool: {
        std::vector<bool> red(static_cast<size_t>(in(0).rank()), false);
        for (size_t d = 2; d < red.size(); ++d) red[d] = true;
        y = reduce_mean(in(0), red, os);
        break;
      }
      case OpKind::kReduceMean: {
        const auto& a = n.attr<ir::ReduceAttrs>();
        std::vector<bool> red(static_cast<size_t>(in(0).rank()), a.axes.empty());
        for (int64_t ax : a.axes) red[static_cast<size_t>(ax < 0 ? ax + in(0).rank() : ax)] = true;
        y = reduce_mean(in(0), red, os);
        break;
      }
      case OpKind::kFlatten:
      case OpKind::kReshape:
      case OpKind::kSqueeze:
      case OpKind::kUnsqueeze: y = in(0).reshaped(os); break;
      case OpKind::kTranspose: y = transposed(in(0), n.attr<ir::TransposeAttrs>().perm); break;
      case OpKind::kConcat: {
        std::vector<Tensor> xs;
        for (size_t i = 0; i < n.inputs.size(); ++i) xs.push_back(in(i));
        y = concat(xs, n.attr<ir::AxisAttrs>().axis, os);
        break;
      }
      case OpKind::kSoftmax: y = softmax(in(0), n.attr<ir::AxisAttrs>().axis); break;
      case OpKind::kPad: y = pad(in(0), n.attr<ir::PadAttrs>(), os); break;
    }
    vals[static_cast<size_t>(n.outputs[0])] = std::move(y);
  }
  std::vector<Tensor> outs;
  for (ir::ValueId o : g.outputs()) outs.push_back(vals[static_cast<size_t>(o)]);
  return outs;
}

}  // namespace modex::runtime
