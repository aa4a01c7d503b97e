// XNNPACK convolution (regular, grouped, depthwise) and fully connected kernels. Weights are
// packed when the kernel is created; setup only binds shapes and addresses.
#include <cstring>

#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using ir::OpKind;

class XnnConv final : public Kernel {
 public:
  XnnConv(xnn::Operator op, ir::Activation act, bool depthwise) : op_(std::move(op)), depthwise_(depthwise) {
    post_.init(act);
  }
  std::string_view name() const override { return depthwise_ ? "xnn_dwconv2d_nhwc_f32" : "xnn_conv2d_nhwc_f32"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    const Tensor& x = in[0];
    xnn::check(xnn_setup_convolution2d_nhwc_f32(op_.get(), static_cast<size_t>(x.dim(0)), static_cast<size_t>(x.dim(1)),
                                                 static_cast<size_t>(x.dim(2)), x.data<float>(),
                                                 out[0].data_mutable<float>(), ctx.pool),
               "setup convolution");
    post_.setup(out[0].data_mutable<float>(), static_cast<size_t>(out[0].numel()), ctx);
  }
  void run(const RunContext& ctx) override {
    xnn::run(op_.get(), ctx);
    post_.run(ctx);
  }

 private:
  xnn::Operator op_;
  bool depthwise_;
  xnn::PostActivation post_;
};

std::unique_ptr<Kernel> make_conv(const KernelRequest& req) {
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ConvAttrs>();
  // No residual input: XNNPACK's convolution has no summand (the reference kernel takes those).
  if (!xnn::available() || a.layout != ir::Layout::kNHWC || a.kernel.size() != 2 || n.inputs.size() > 3) return nullptr;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || (b && !b->is_constant())) return nullptr;
  int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  int64_t O = w.constant.dim(0);
  if (C <= 0 || a.groups <= 0 || C % a.groups != 0 || O % a.groups != 0) return nullptr;
  for (int64_t v : a.pads)
    if (v < 0) return nullptr;
  xnn::Range r = xnn::clamp_range(a.activation);
  xnn_operator_t op = nullptr;
  // IR NHWC weights [O, kH, kW, I/groups] are XNNPACK's [groups, O/groups, kH, kW, I/groups];
  // with one input channel per group XNNPACK picks its depthwise micro-kernels itself.
  xnn_status s = xnn_create_convolution2d_nhwc_f32(
      static_cast<uint32_t>(a.pads[0]), static_cast<uint32_t>(a.pads[3]), static_cast<uint32_t>(a.pads[2]),
      static_cast<uint32_t>(a.pads[1]), static_cast<uint32_t>(a.kernel[0]), static_cast<uint32_t>(a.kernel[1]),
      static_cast<uint32_t>(a.strides[0]), static_cast<uint32_t>(a.strides[1]), static_cast<uint32_t>(a.dilations[0]),
      static_cast<uint32_t>(a.dilations[1]), static_cast<uint32_t>(a.groups), static_cast<size_t>(C / a.groups),
      static_cast<size_t>(O / a.groups), static_cast<size_t>(C), static_cast<size_t>(O), w.constant.data<float>(),
      b ? b->constant.data<float>() : nullptr, r.min, r.max, 0, &op);
  if (s != xnn_status_success) return nullptr;
  auto k = std::make_unique<XnnConv>(xnn::Operator(op), a.activation, a.groups == C && O == C);
  return k;
}

// y[N, O] = x[N, I] · W + b, with W given as [O, I] (Gemm) or [I, O] (MatMul, transposed flag).
class XnnFullyConnected final : public Kernel {
 public:
  XnnFullyConnected(xnn::Operator op, ir::Activation act, int64_t in_channels)
      : op_(std::move(op)), in_channels_(in_channels) {
    post_.init(act);
  }
  std::string_view name() const override { return "xnn_fully_connected_nc_f32"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    size_t batch = static_cast<size_t>(in[0].numel() / in_channels_);
    xnn::check(xnn_setup_fully_connected_nc_f32(op_.get(), batch, in[0].data<float>(), out[0].data_mutable<float>(), ctx.pool),
               "setup fully connected");
    post_.setup(out[0].data_mutable<float>(), static_cast<size_t>(out[0].numel()), ctx);
  }
  void run(const RunContext& ctx) override {
    xnn::run(op_.get(), ctx);
    post_.run(ctx);
  }

 private:
  xnn::Operator op_;
  int64_t in_channels_;
  xnn::PostActivation post_;
};

std::unique_ptr<Kernel> make_gemm(const KernelRequest& req) {
  const ir::Node& n = req.node;
  if (!xnn::available()) return nullptr;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b = n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (x.shape.size() != 2 || !w.is_constant() || w.constant.rank() != 2 || (b && !b->is_constant())) return nullptr;
  if (b && b->constant.numel() != w.constant.dim(0)) return nullptr;
  int64_t O = w.constant.dim(0), I = w.constant.dim(1);
  auto act = n.attr<ir::GemmAttrs>().activation;
  xnn::Range r = xnn::clamp_range(act);
  xnn_operator_t op = nullptr;
  if (xnn_create_fully_connected_nc_f32(static_cast<size_t>(I), static_cast<size_t>(O), static_cast<size_t>(I),
                                        static_cast<size_t>(O), w.constant.data<float>(),
                                        b ? b->constant.data<float>() : nullptr, r.min, r.max, 0,
                                        &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnFullyConnected>(xnn::Operator(op), act, I);
}

std::unique_ptr<Kernel> make_matmul(const KernelRequest& req) {
  const ir::Node& n = req.node;
  if (!xnn::available()) return nullptr;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  const ir::Value& w = req.graph.value(n.inputs[1]);
  if (x.shape.size() != 2 || !w.is_constant() || w.constant.rank() != 2) return nullptr;
  int64_t I = w.constant.dim(0), O = w.constant.dim(1);
  xnn_operator_t op = nullptr;
  if (xnn_create_fully_connected_nc_f32(static_cast<size_t>(I), static_cast<size_t>(O), static_cast<size_t>(I),
                                        static_cast<size_t>(O), w.constant.data<float>(), nullptr, -xnn::kInf,
                                        xnn::kInf, XNN_FLAG_TRANSPOSE_WEIGHTS, &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnFullyConnected>(xnn::Operator(op), ir::Activation::kNone, I);
}

}  // namespace

void register_xnn_conv_kernels(KernelRegistry& r) {
  r.add(OpKind::kConv, DType::kFloat32, KernelBackend::kXnnpack, make_conv);
  r.add(OpKind::kGemm, DType::kFloat32, KernelBackend::kXnnpack, make_gemm);
  r.add(OpKind::kMatMul, DType::kFloat32, KernelBackend::kXnnpack, make_matmul);
}

}  // namespace modex::runtime
