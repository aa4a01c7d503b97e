// XNNPACK max / average pooling and global average pooling (ReduceMean over H, W in NHWC).
//
// Semantics vs the reference: XNNPACK's output size is floor((H + pads - window) / stride) + 1, so
// ceil_mode becomes extra bottom/right padding. Its max pooling never reads padding (padded taps
// repeat an edge pixel), which equals skipping them as long as every window holds one real
// pixel; its average pooling divides by the number of real pixels, i.e. count_include_pad=false
// (and ceil_mode overhang, which PyTorch never counts). Anything else runs the reference pool.
#include <algorithm>
#include <array>

#include "runtime/kernels/reference_kernels.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using ir::OpKind;

// Whether every output window along one axis covers at least one input element.
bool windows_hit_input(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad) {
  for (int64_t o = 0; o < out; ++o) {
    bool hit = false;
    for (int64_t k = 0; k < kernel && !hit; ++k) {
      int64_t i = o * stride - pad + k * dilation;
      hit = i >= 0 && i < in;
    }
    if (!hit) return false;
  }
  return true;
}

class XnnPool final : public Kernel {
 public:
  XnnPool(const ir::PoolAttrs& a, bool max) : attrs_(a), max_(max) {}
  std::string_view name() const override {
    if (!op_) return max_ ? "ref_MaxPool" : "ref_AveragePool";
    return max_ ? "xnn_max_pooling2d_nhwc_f32" : "xnn_average_pooling2d_nhwc_f32";
  }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    x_ = in[0];
    y_ = out[0];
    const ir::PoolAttrs& a = attrs_;
    int64_t N = x_.dim(0), H = x_.dim(1), W = x_.dim(2), C = x_.dim(3), OH = y_.dim(1), OW = y_.dim(2);
    int64_t kh = a.kernel[0], kw = a.kernel[1], sh = a.strides[0], sw = a.strides[1];
    int64_t dh = a.dilations[0], dw = a.dilations[1];
    // Padding that makes XNNPACK's floor-mode output size equal the planned one.
    int64_t extra_h = std::max<int64_t>(0, (OH - 1) * sh + (kh - 1) * dh + 1 - (H + a.pads[0] + a.pads[2]));
    int64_t extra_w = std::max<int64_t>(0, (OW - 1) * sw + (kw - 1) * dw + 1 - (W + a.pads[1] + a.pads[3]));
    std::array<int64_t, 4> pads{a.pads[0], a.pads[1], a.pads[2] + extra_h, a.pads[3] + extra_w};
    bool ok = xnn::available() && N > 0;
    for (int64_t p : a.pads) ok &= p >= 0;
    if (max_) {
      ok &= windows_hit_input(H, OH, kh, sh, dh, a.pads[0]) && windows_hit_input(W, OW, kw, sw, dw, a.pads[1]);
    } else {
      ok &= dh == 1 && dw == 1;
      if (a.count_include_pad) ok &= a.pads[0] == 0 && a.pads[1] == 0 && a.pads[2] == 0 && a.pads[3] == 0;
    }
    ok &= (H + pads[0] + pads[2] - ((kh - 1) * dh + 1)) / sh + 1 == OH &&
          (W + pads[1] + pads[3] - ((kw - 1) * dw + 1)) / sw + 1 == OW;
    std::array<int64_t, 5> key{pads[0], pads[1], pads[2], pads[3], C};
    if (ok && (!op_ || key != key_)) {
      op_.reset();
      xnn_operator_t op = nullptr;
      auto u = [](int64_t v) { return static_cast<uint32_t>(v); };
      size_t c = static_cast<size_t>(C);
      xnn_status s = max_ ? xnn_create_max_pooling2d_nhwc_f32(u(pads[0]), u(pads[3]), u(pads[2]), u(pads[1]), u(kh), u(kw),
                                                              u(sh), u(sw), u(dh), u(dw), c, c, c, -xnn::kInf,
                                                              xnn::kInf, 0, &op)
                          : xnn_create_average_pooling2d_nhwc_f32(u(pads[0]), u(pads[3]), u(pads[2]), u(pads[1]), u(kh),
                                                                  u(kw), u(sh), u(sw), c, c, c, -xnn::kInf, xnn::kInf,
                                                                  0, &op);
      if (s == xnn_status_success) op_.reset(op);
      key_ = key;
    }
    if (!ok) op_.reset();
    if (!op_) return;
    auto z = [](int64_t v) { return static_cast<size_t>(v); };
    xnn_status s = max_ ? xnn_setup_max_pooling2d_nhwc_f32(op_.get(), z(N), z(H), z(W), x_.data<float>(),
                                                           y_.data_mutable<float>(), ctx.pool)
                        : xnn_setup_average_pooling2d_nhwc_f32(op_.get(), z(N), z(H), z(W), x_.data<float>(),
                                                               y_.data_mutable<float>(), ctx.pool);
    if (s != xnn_status_success) op_.reset();
  }

  void run(const RunContext& ctx) override {
    if (op_)
      xnn::run(op_.get(), ctx);
    else
      ref::pool(x_, attrs_, max_, y_);
  }

 private:
  ir::PoolAttrs attrs_;
  bool max_;
  xnn::Operator op_;
  std::array<int64_t, 5> key_{};
  Tensor x_, y_;
};

std::unique_ptr<Kernel> make_pool(const KernelRequest& req, bool max) {
  const auto& a = req.node.attr<ir::PoolAttrs>();
  if (!xnn::available() || a.layout != ir::Layout::kNHWC || a.kernel.size() != 2) return nullptr;
  return std::make_unique<XnnPool>(a, max);
}

class XnnGlobalAveragePool final : public Kernel {
 public:
  explicit XnnGlobalAveragePool(xnn::Operator op) : op_(std::move(op)) {}
  std::string_view name() const override { return "xnn_global_average_pooling_nwc_f32"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    const Tensor& x = in[0];
    xnn::check(xnn_setup_global_average_pooling_nwc_f32(op_.get(), static_cast<size_t>(x.dim(0)),
                                                         static_cast<size_t>(x.dim(1) * x.dim(2)), x.data<float>(),
                                                         out[0].data_mutable<float>(), ctx.pool),
               "setup global average pooling");
  }
  void run(const RunContext& ctx) override { xnn::run(op_.get(), ctx); }

 private:
  xnn::Operator op_;
};

std::unique_ptr<Kernel> make_reduce_mean(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ReduceAttrs>();
  const ir::Value& x = req.graph.value(n.inputs[0]);
  if (!xnn::available() || x.shape.size() != 4) return nullptr;
  std::vector<int64_t> axes;
  for (int64_t ax : a.axes) axes.push_back(ax < 0 ? ax + 4 : ax);
  std::sort(axes.begin(), axes.end());
  if (axes != std::vector<int64_t>{1, 2}) return nullptr;
  int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  if (C <= 0) return nullptr;
  xnn_operator_t op = nullptr;
  size_t c = static_cast<size_t>(C);
  if (xnn_create_global_average_pooling_nwc_f32(c, c, c, -xnn::kInf, xnn::kInf, 0, &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnGlobalAveragePool>(xnn::Operator(op));
}

}  // namespace

void register_xnn_pool_kernels(KernelRegistry& r) {
  r.add(OpKind::kMaxPool, DType::kFloat32, KernelBackend::kXnnpack, [](const KernelRequest& q) { return make_pool(q, true); });
  r.add(OpKind::kAveragePool, DType::kFloat32, KernelBackend::kXnnpack,
        [](const KernelRequest& q) { return make_pool(q, false); });
  r.add(OpKind::kReduceMean, DType::kFloat32, KernelBackend::kXnnpack, make_reduce_mean);
}

}  // namespace modex::runtime
