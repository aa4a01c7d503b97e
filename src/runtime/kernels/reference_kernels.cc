#include "runtime/kernels/reference_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/tensor_ops.h"

namespace modex::runtime::ref {

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

void conv(const Tensor& x, const Tensor& w, const Tensor* b, const ir::ConvAttrs& a, Tensor& y, const Tensor* residual) {
  const bool nhwc = a.layout == ir::Layout::kNHWC;
  const Dims& out_shape = y.shape();
  const int64_t N = x.dim(0);
  const int64_t C = nhwc ? x.dim(3) : x.dim(1), H = nhwc ? x.dim(1) : x.dim(2), W = nhwc ? x.dim(2) : x.dim(3);
  const int64_t O = w.dim(0), KH = a.kernel[0], KW = a.kernel[1];
  const int64_t OH = nhwc ? out_shape[1] : out_shape[2], OW = nhwc ? out_shape[2] : out_shape[3];
  const int64_t G = a.groups, CG = C / G, OG = O / G;
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
          const int64_t at = nhwc ? ((n * OH + oh) * OW + ow) * O + o : ((n * O + o) * OH + oh) * OW + ow;
          float v = static_cast<float>(acc);
          if (residual) v += residual->data<float>()[at];  // as the Add it replaces: float + float
          yd[at] = apply_activation(a.activation, v);
        }
    }
}

void pool(const Tensor& x, const ir::PoolAttrs& a, bool max, Tensor& y) {
  const bool nhwc = a.layout == ir::Layout::kNHWC;
  const Dims& out_shape = y.shape();
  const int64_t N = x.dim(0);
  const int64_t C = nhwc ? x.dim(3) : x.dim(1), H = nhwc ? x.dim(1) : x.dim(2), W = nhwc ? x.dim(2) : x.dim(3);
  const int64_t OH = nhwc ? out_shape[1] : out_shape[2], OW = nhwc ? out_shape[2] : out_shape[3];
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
}

void gemm(const Tensor& x, const Tensor& w, const Tensor* b, ir::Activation act, Tensor& y) {
  int64_t N = x.dim(0), I = x.dim(1), O = w.dim(0);
  const float* xd = x.data<float>();
  const float* wd = w.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t o = 0; o < O; ++o) {
      double acc = b ? b->data<float>()[o] : 0.0;
      for (int64_t k = 0; k < I; ++k) acc += static_cast<double>(xd[i * I + k]) * wd[o * I + k];
      yd[i * O + o] = apply_activation(act, static_cast<float>(acc));
    }
}

// numpy matmul: 1-D operands are promoted (a to [1, K], b to [K, 1]) and the promoted dim dropped
// from y; the leading (batch) dims broadcast.
void matmul(const Tensor& a, const Tensor& b, Tensor& y) {
  Dims as = a.shape(), bs = b.shape();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const size_t batch_rank = std::max(as.size(), bs.size()) - 2;
  // Batch dims right-aligned, 1 where an operand has fewer.
  Dims abatch(batch_rank, 1), bbatch(batch_rank, 1), ybatch(batch_rank);
  std::copy(as.begin(), as.end() - 2, abatch.end() - static_cast<ptrdiff_t>(as.size() - 2));
  std::copy(bs.begin(), bs.end() - 2, bbatch.end() - static_cast<ptrdiff_t>(bs.size() - 2));
  for (size_t d = 0; d < batch_rank; ++d) ybatch[d] = std::max(abatch[d], bbatch[d]);
  const Dims ast = row_major_strides(abatch), bst = row_major_strides(bbatch), yst = row_major_strides(ybatch);
  const int64_t batches = checked_numel(ybatch);
  const float* ad = a.data<float>();
  const float* bd = b.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t p = 0; p < batches; ++p) {
    int64_t ia = 0, ib = 0, rem = p;
    for (size_t d = 0; d < batch_rank; ++d) {
      int64_t idx = rem / yst[d];
      rem %= yst[d];
      if (abatch[d] != 1) ia += idx * ast[d];
      if (bbatch[d] != 1) ib += idx * bst[d];
    }
    const float* ap = ad + ia * M * K;
    const float* bp = bd + ib * K * N;
    float* yp = yd + p * M * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(ap[i * K + k]) * bp[k * N + j];
        yp[i * N + j] = static_cast<float>(acc);
      }
  }
}

void batch_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, const Tensor& mean, const Tensor& var,
                float epsilon, Tensor& y) {
  int64_t C = x.dim(1), inner = x.numel() / (x.dim(0) * C);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t c = (i / inner) % C;
    double s = scale.data<float>()[c] / std::sqrt(static_cast<double>(var.data<float>()[c]) + epsilon);
    y.data_mutable<float>()[i] = static_cast<float>((x.data<float>()[i] - mean.data<float>()[c]) * s + bias.data<float>()[c]);
  }
}

namespace {

// y = f(a, b) with numpy broadcasting.
template <typename F>
void broadcast(const Tensor& a, const Tensor& b, Tensor& y, F f) {
  const float* ad = a.data<float>();
  const float* bd = b.data<float>();
  float* yd = y.data_mutable<float>();
  for_each_broadcast(a.shape(), b.shape(), y.shape(), [&](int64_t i, int64_t ia, int64_t ib) { yd[i] = f(ad[ia], bd[ib]); });
}

template <typename F>
void map(const Tensor& x, Tensor& y, F f) {
  const float* xd = x.data<float>();
  float* yd = y.data_mutable<float>();
  for (int64_t i = 0; i < x.numel(); ++i) yd[i] = f(xd[i]);
}

int64_t normalized_axis(int64_t axis, size_t rank) { return axis < 0 ? axis + static_cast<int64_t>(rank) : axis; }

}  // namespace

void binary(OpKind op, ir::Activation act, const Tensor& a, const Tensor& b, Tensor& y) {
  if (op == OpKind::kPRelu) {
    broadcast(a, b, y, [](float x, float s) { return x >= 0 ? x : s * x; });
    return;
  }
  broadcast(a, b, y, [op, act](float p, float q) {
    float r = op == OpKind::kAdd ? p + q : op == OpKind::kSub ? p - q : op == OpKind::kMul ? p * q : p / q;
    return apply_activation(act, r);
  });
}

void unary(const ir::Node& n, const Tensor& x, Tensor& y) {
  switch (n.op) {
    case OpKind::kRelu: map(x, y, [](float v) { return std::max(v, 0.0f); }); return;
    case OpKind::kClip: {
      auto a = n.attr<ir::ClipAttrs>();
      map(x, y, [a](float v) { return std::min(std::max(v, a.min), a.max); });
      return;
    }
    case OpKind::kLeakyRelu: {
      float al = n.attr<ir::LeakyReluAttrs>().alpha;
      map(x, y, [al](float v) { return v >= 0 ? v : al * v; });
      return;
    }
    case OpKind::kSigmoid: map(x, y, [](float v) { return apply_activation(ir::Activation::kSigmoid, v); }); return;
    case OpKind::kHardSigmoid: {
      auto a = n.attr<ir::HardSigmoidAttrs>();
      map(x, y, [a](float v) { return std::min(std::max(a.alpha * v + a.beta, 0.0f), 1.0f); });
      return;
    }
    case OpKind::kHardSwish: map(x, y, [](float v) { return apply_activation(ir::Activation::kHardSwish, v); }); return;
    case OpKind::kSilu: map(x, y, [](float v) { return apply_activation(ir::Activation::kSilu, v); }); return;
    case OpKind::kTanh: map(x, y, [](float v) { return std::tanh(v); }); return;
    default: copy(x, y); return;
  }
}

void reduce_mean(const Tensor& x, const std::vector<bool>& reduced, Tensor& y) {
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
  for (size_t i = 0; i < acc.size(); ++i) y.data_mutable<float>()[i] = static_cast<float>(acc[i] / count);
}

void softmax(const Tensor& x, int64_t axis, Tensor& y) {
  size_t r = static_cast<size_t>(x.rank());
  size_t ax = static_cast<size_t>(normalized_axis(axis, r));
  int64_t outer = 1, inner = 1, n = x.shape()[ax];
  for (size_t d = 0; d < ax; ++d) outer *= x.shape()[d];
  for (size_t d = ax + 1; d < r; ++d) inner *= x.shape()[d];
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
}

void concat(std::span<const Tensor> xs, int64_t axis, Tensor& y) {
  const Dims& out_shape = y.shape();
  size_t ax = static_cast<size_t>(normalized_axis(axis, out_shape.size()));
  int64_t outer = 1;
  for (size_t d = 0; d < ax; ++d) outer *= out_shape[d];
  size_t es = dtype_size(y.dtype());
  uint8_t* dst = y.raw_mutable();
  for (int64_t o = 0; o < outer; ++o)
    for (const Tensor& x : xs) {
      size_t chunk = static_cast<size_t>(x.numel() / std::max<int64_t>(outer, 1)) * es;
      std::memcpy(dst, x.raw() + static_cast<size_t>(o) * chunk, chunk);
      dst += chunk;
    }
}

void pad(const Tensor& x, const ir::PadAttrs& a, Tensor& y) {
  size_t r = static_cast<size_t>(x.rank());
  std::fill_n(y.data_mutable<float>(), y.numel(), a.value);
  Dims xst = row_major_strides(x.shape()), yst = row_major_strides(y.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t o = 0, rem = i;
    bool inside = true;
    for (size_t d = 0; d < r; ++d) {
      int64_t idx = rem / xst[d] + a.pads[d];
      rem %= xst[d];
      inside &= idx >= 0 && idx < y.shape()[d];  // negative pads crop
      o += idx * yst[d];
    }
    if (inside) y.data_mutable<float>()[o] = x.data<float>()[i];
  }
}

void transpose(const Tensor& x, const std::vector<int64_t>& perm, Tensor& y) {
  size_t r = static_cast<size_t>(x.rank());
  std::vector<int64_t> p = perm;
  if (p.empty())
    for (size_t d = 0; d < r; ++d) p.push_back(static_cast<int64_t>(r - 1 - d));
  Dims xst = row_major_strides(x.shape());
  // Walk the output in order with an odometer over its dims; src advances by the input stride of
  // the permuted axis.
  Dims step(r), idx(r, 0);
  for (size_t d = 0; d < r; ++d) step[d] = xst[static_cast<size_t>(p[d])];
  size_t es = dtype_size(x.dtype());
  const uint8_t* src = x.raw();
  uint8_t* dst = y.raw_mutable();
  int64_t off = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    std::memcpy(dst + static_cast<size_t>(i) * es, src + static_cast<size_t>(off) * es, es);
    for (size_t d = r; d-- > 0;) {
      off += step[d];
      if (++idx[d] < y.shape()[d]) break;
      off -= step[d] * idx[d];
      idx[d] = 0;
    }
  }
}

void copy(const Tensor& x, Tensor& y) {
  if (x.raw() != y.raw()) std::memmove(y.raw_mutable(), x.raw(), y.nbytes());
}

void run_node(const ir::Node& n, std::span<const Tensor> in, Tensor& y) {
  auto opt = [&](size_t i) -> const Tensor* { return i < in.size() && in[i].defined() ? &in[i] : nullptr; };
  switch (n.op) {
    case OpKind::kConv: conv(in[0], in[1], opt(2), n.attr<ir::ConvAttrs>(), y, opt(3)); return;
    case OpKind::kBatchNorm: batch_norm(in[0], in[1], in[2], in[3], in[4], n.attr<ir::BatchNormAttrs>().epsilon, y); return;
    case OpKind::kGemm: gemm(in[0], in[1], opt(2), n.attr<ir::GemmAttrs>().activation, y); return;
    case OpKind::kMatMul: matmul(in[0], in[1], y); return;
    case OpKind::kRelu:
    case OpKind::kClip:
    case OpKind::kLeakyRelu:
    case OpKind::kSigmoid:
    case OpKind::kHardSigmoid:
    case OpKind::kHardSwish:
    case OpKind::kSilu:
    case OpKind::kTanh: unary(n, in[0], y); return;
    case OpKind::kPRelu: binary(n.op, ir::Activation::kNone, in[0], in[1], y); return;
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: binary(n.op, n.attr<ir::BinaryAttrs>().activation, in[0], in[1], y); return;
    case OpKind::kMaxPool: pool(in[0], n.attr<ir::PoolAttrs>(), true, y); return;
    case OpKind::kAveragePool: pool(in[0], n.attr<ir::PoolAttrs>(), false, y); return;
    case OpKind::kGlobalAveragePool: {
      std::vector<bool> red(static_cast<size_t>(in[0].rank()), false);
      for (size_t d = 2; d < red.size(); ++d) red[d] = true;
      reduce_mean(in[0], red, y);
      return;
    }
    case OpKind::kReduceMean: {
      const auto& a = n.attr<ir::ReduceAttrs>();
      std::vector<bool> red(static_cast<size_t>(in[0].rank()), a.axes.empty());
      for (int64_t ax : a.axes) red[static_cast<size_t>(normalized_axis(ax, red.size()))] = true;
      reduce_mean(in[0], red, y);
      return;
    }
    case OpKind::kFlatten:
    case OpKind::kReshape:
    case OpKind::kSqueeze:
    case OpKind::kUnsqueeze:
    case OpKind::kIdentity: copy(in[0], y); return;
    case OpKind::kTranspose: transpose(in[0], n.attr<ir::TransposeAttrs>().perm, y); return;
    case OpKind::kConcat: concat(in, n.attr<ir::AxisAttrs>().axis, y); return;
    case OpKind::kSoftmax: softmax(in[0], n.attr<ir::AxisAttrs>().axis, y); return;
    case OpKind::kPad: pad(in[0], n.attr<ir::PadAttrs>(), y); return;
    case OpKind::kQuantize:
    case OpKind::kDequantize:
      throw Error("quantized ops are not supported by the runtime yet", ErrorKind::kUnsupported)
          .node(n.name)
          .op(std::string(ir::op_name(n.op)));
  }
}

}  // namespace modex::runtime::ref
