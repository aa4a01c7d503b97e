// XNNPACK element-wise kernels: binary ops with numpy broadcasting (Add/Sub/Mul/Div), unary
// activations (Relu, Clip, LeakyRelu, Sigmoid, HardSwish, SiLU), Softmax over the last axis and
// constant Pad. A shape XNNPACK refuses at setup (e.g. rank > 6) runs the reference kernel.
#include <cstring>

#include "runtime/kernels/reference_kernels.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using ir::OpKind;

// Keeps the node so that setup can fall back to the reference kernel for shapes XNNPACK refuses.
class XnnElementwise : public Kernel {
 public:
  explicit XnnElementwise(const ir::Node& node) : node_(node) {}
  std::string_view name() const override { return fallback_ ? ref_name() : xnn_name(); }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) final {
    inputs_.assign(in.begin(), in.end());
    output_ = out[0];
    fallback_ = !setup_xnn(ctx);
  }
  void run(const RunContext& ctx) final {
    if (fallback_)
      ref::run_node(node_, inputs_, output_);
    else
      run_xnn(ctx);
  }

 protected:
  virtual std::string_view xnn_name() const = 0;
  virtual bool setup_xnn(const RunContext& ctx) = 0;
  virtual void run_xnn(const RunContext& ctx) = 0;
  std::string_view ref_name() const { return "ref_elementwise"; }

  ir::Node node_;
  std::vector<Tensor> inputs_;
  Tensor output_;
  bool fallback_ = false;
};

std::vector<size_t> size_dims(const Dims& d) { return {d.begin(), d.end()}; }

class XnnBinary final : public XnnElementwise {
 public:
  XnnBinary(const ir::Node& node, xnn::Operator op, ir::Activation act) : XnnElementwise(node), op_(std::move(op)) {
    post_.init(act);
  }

 private:
  std::string_view xnn_name() const override {
    switch (node_.op) {
      case OpKind::kAdd: return "xnn_add_nd_f32";
      case OpKind::kSub: return "xnn_subtract_nd_f32";
      case OpKind::kMul: return "xnn_multiply_nd_f32";
      default: return "xnn_divide_nd_f32";
    }
  }
  bool setup_xnn(const RunContext& ctx) override {
    const Tensor& a = inputs_[0];
    const Tensor& b = inputs_[1];
    if (a.rank() > XNN_MAX_TENSOR_DIMS || b.rank() > XNN_MAX_TENSOR_DIMS) return false;
    auto as = size_dims(a.shape()), bs = size_dims(b.shape());
    using SetupFn = xnn_status (*)(xnn_operator_t, size_t, const size_t*, size_t, const size_t*, const float*,
                                   const float*, float*, pthreadpool_t);
    SetupFn fn = node_.op == OpKind::kAdd   ? xnn_setup_add_nd_f32
                 : node_.op == OpKind::kSub ? xnn_setup_subtract_nd_f32
                 : node_.op == OpKind::kMul ? xnn_setup_multiply_nd_f32
                                            : xnn_setup_divide_nd_f32;
    if (fn(op_.get(), as.size(), as.data(), bs.size(), bs.data(), a.data<float>(), b.data<float>(),
           output_.data_mutable<float>(), ctx.pool) != xnn_status_success)
      return false;
    post_.setup(output_.data_mutable<float>(), static_cast<size_t>(output_.numel()), ctx);
    return true;
  }
  void run_xnn(const RunContext& ctx) override {
    xnn::run(op_.get(), ctx);
    post_.run(ctx);
  }

  xnn::Operator op_;
  xnn::PostActivation post_;
};

std::unique_ptr<Kernel> make_binary(const KernelRequest& req) {
  if (!xnn::available()) return nullptr;
  const ir::Node& n = req.node;
  auto act = n.attr<ir::BinaryAttrs>().activation;
  xnn::Range r = xnn::clamp_range(act);
  xnn_operator_t op = nullptr;
  xnn_status s = xnn_status_unsupported_parameter;
  switch (n.op) {
    case OpKind::kAdd: s = xnn_create_add_nd_f32(r.min, r.max, 0, &op); break;
    case OpKind::kSub: s = xnn_create_subtract_nd_f32(r.min, r.max, 0, &op); break;
    case OpKind::kMul: s = xnn_create_multiply_nd_f32(r.min, r.max, 0, &op); break;
    case OpKind::kDiv: s = xnn_create_divide_nd_f32(r.min, r.max, 0, &op); break;
    default: return nullptr;
  }
  if (s != xnn_status_success) return nullptr;
  return std::make_unique<XnnBinary>(n, xnn::Operator(op), act);
}

// A unary op over the whole tensor as one contiguous row.
class XnnUnary final : public XnnElementwise {
 public:
  using SetupFn = xnn_status (*)(xnn_operator_t, size_t, const float*, float*, pthreadpool_t);
  XnnUnary(const ir::Node& node, xnn::Operator op, SetupFn setup_fn, std::string_view name, ir::Activation post)
      : XnnElementwise(node), op_(std::move(op)), setup_fn_(setup_fn), name_(name) {
    post_.init(post);
  }

 private:
  std::string_view xnn_name() const override { return name_; }
  bool setup_xnn(const RunContext& ctx) override {
    size_t count = static_cast<size_t>(output_.numel());
    float* y = output_.data_mutable<float>();
    if (op_ && setup_fn_(op_.get(), count, inputs_[0].data<float>(), y, ctx.pool) != xnn_status_success) return false;
    if (!op_) ref::copy(inputs_[0], output_);  // never reached: every unary kernel has an operator
    post_.setup(y, count, ctx);
    return true;
  }
  void run_xnn(const RunContext& ctx) override {
    xnn::run(op_.get(), ctx);
    post_.run(ctx);
  }

  xnn::Operator op_;
  SetupFn setup_fn_;
  std::string_view name_;
  xnn::PostActivation post_;
};

std::unique_ptr<Kernel> make_unary(const KernelRequest& req) {
  if (!xnn::available()) return nullptr;
  const ir::Node& n = req.node;
  xnn_operator_t op = nullptr;
  auto make = [&](xnn_status s, XnnUnary::SetupFn fn, std::string_view name,
                  ir::Activation post = ir::Activation::kNone) -> std::unique_ptr<Kernel> {
    if (s != xnn_status_success) return nullptr;
    return std::make_unique<XnnUnary>(n, xnn::Operator(op), fn, name, post);
  };
  switch (n.op) {
    case OpKind::kRelu:
      return make(xnn_create_clamp_nc_f32(1, 1, 1, 0.0f, xnn::kInf, 0, &op), xnn_setup_clamp_nc_f32, "xnn_clamp_nc_f32");
    case OpKind::kClip: {
      auto a = n.attr<ir::ClipAttrs>();
      if (!(a.min <= a.max)) return nullptr;
      return make(xnn_create_clamp_nc_f32(1, 1, 1, a.min, a.max, 0, &op), xnn_setup_clamp_nc_f32, "xnn_clamp_nc_f32");
    }
    case OpKind::kLeakyRelu:
      return make(xnn_create_leaky_relu_nc_f32(1, 1, 1, n.attr<ir::LeakyReluAttrs>().alpha, 0, &op),
                  xnn_setup_leaky_relu_nc_f32, "xnn_leaky_relu_nc_f32");
    case OpKind::kSigmoid:
      return make(xnn_create_sigmoid_nc_f32(1, 1, 1, 0, &op), xnn_setup_sigmoid_nc_f32, "xnn_sigmoid_nc_f32");
    case OpKind::kHardSwish:
      return make(xnn_create_hardswish_nc_f32(1, 1, 1, 0, &op), xnn_setup_hardswish_nc_f32, "xnn_hardswish_nc_f32");
    case OpKind::kSilu:
      // Copy x to y, then y *= sigmoid(y) in place.
      return make(xnn_create_copy_nc_x32(1, 1, 1, 0, &op),
                  [](xnn_operator_t o, size_t c, const float* x, float* y, pthreadpool_t p) {
                    return xnn_setup_copy_nc_x32(o, c, x, y, p);
                  },
                  "xnn_silu_f32", ir::Activation::kSilu);
    default: return nullptr;
  }
}

// HardSigmoid(x) = clamp(alpha x + beta, 0, 1): a multiply, then an add with the output clamp.
class XnnHardSigmoid final : public XnnElementwise {
 public:
  XnnHardSigmoid(const ir::Node& node, xnn::Operator multiply, xnn::Operator add)
      : XnnElementwise(node), multiply_(std::move(multiply)), add_(std::move(add)) {
    const auto& a = node.attr<ir::HardSigmoidAttrs>();
    alpha_[0] = a.alpha;
    beta_[0] = a.beta;
  }

 private:
  std::string_view xnn_name() const override { return "xnn_hardsigmoid_f32"; }
  bool setup_xnn(const RunContext& ctx) override {
    size_t shape[1] = {static_cast<size_t>(output_.numel())}, one[1] = {1};
    float* y = output_.data_mutable<float>();
    return xnn_setup_multiply_nd_f32(multiply_.get(), 1, shape, 1, one, inputs_[0].data<float>(), alpha_, y, ctx.pool) ==
               xnn_status_success &&
           xnn_setup_add_nd_f32(add_.get(), 1, shape, 1, one, y, beta_, y, ctx.pool) == xnn_status_success;
  }
  void run_xnn(const RunContext& ctx) override {
    xnn::run(multiply_.get(), ctx);
    xnn::run(add_.get(), ctx);
  }

  xnn::Operator multiply_, add_;
  float alpha_[1 + XNN_EXTRA_BYTES / sizeof(float)] = {};
  float beta_[1 + XNN_EXTRA_BYTES / sizeof(float)] = {};
};

std::unique_ptr<Kernel> make_hard_sigmoid(const KernelRequest& req) {
  if (!xnn::available()) return nullptr;
  xnn_operator_t mul = nullptr, add = nullptr;
  if (xnn_create_multiply_nd_f32(-xnn::kInf, xnn::kInf, 0, &mul) != xnn_status_success) return nullptr;
  xnn::Operator m(mul);
  if (xnn_create_add_nd_f32(0.0f, 1.0f, 0, &add) != xnn_status_success) return nullptr;
  return std::make_unique<XnnHardSigmoid>(req.node, std::move(m), xnn::Operator(add));
}

class XnnSoftmax final : public XnnElementwise {
 public:
  XnnSoftmax(const ir::Node& node, xnn::Operator op, int64_t channels)
      : XnnElementwise(node), op_(std::move(op)), channels_(channels) {}

 private:
  std::string_view xnn_name() const override { return "xnn_softmax_nc_f32"; }
  bool setup_xnn(const RunContext& ctx) override {
    if (inputs_[0].dim(-1) != channels_) return false;
    return xnn_setup_softmax_nc_f32(op_.get(), static_cast<size_t>(inputs_[0].numel() / channels_),
                                    inputs_[0].data<float>(), output_.data_mutable<float>(),
                                    ctx.pool) == xnn_status_success;
  }
  void run_xnn(const RunContext& ctx) override { xnn::run(op_.get(), ctx); }

  xnn::Operator op_;
  int64_t channels_;
};

std::unique_ptr<Kernel> make_softmax(const KernelRequest& req) {
  if (!xnn::available()) return nullptr;
  const ir::Node& n = req.node;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  int64_t axis = n.attr<ir::AxisAttrs>().axis;
  int64_t rank = static_cast<int64_t>(x.shape.size());
  if (axis != -1 && axis != rank - 1) return nullptr;
  int64_t C = xnn::static_dim(req.graph, n.inputs[0], -1);
  if (C <= 0) return nullptr;
  xnn_operator_t op = nullptr;
  size_t c = static_cast<size_t>(C);
  if (xnn_create_softmax_nc_f32(c, c, c, 0, &op) != xnn_status_success) return nullptr;
  return std::make_unique<XnnSoftmax>(n, xnn::Operator(op), C);
}

class XnnPad final : public XnnElementwise {
 public:
  XnnPad(const ir::Node& node, xnn::Operator op) : XnnElementwise(node), op_(std::move(op)) {}

 private:
  std::string_view xnn_name() const override { return "xnn_constant_pad_nd_x32"; }
  bool setup_xnn(const RunContext& ctx) override {
    const Tensor& x = inputs_[0];
    const auto& pads = node_.attr<ir::PadAttrs>().pads;
    size_t r = static_cast<size_t>(x.rank());
    if (r > XNN_MAX_TENSOR_DIMS || pads.size() != 2 * r) return false;
    std::vector<size_t> pre(r), post(r);
    for (size_t d = 0; d < r; ++d) {
      if (pads[d] < 0 || pads[d + r] < 0) return false;
      pre[d] = static_cast<size_t>(pads[d]);
      post[d] = static_cast<size_t>(pads[d + r]);
    }
    auto xs = size_dims(x.shape());
    return xnn_setup_constant_pad_nd_x32(op_.get(), r, xs.data(), pre.data(), post.data(), x.raw(),
                                         output_.raw_mutable(), ctx.pool) == xnn_status_success;
  }
  void run_xnn(const RunContext& ctx) override { xnn::run(op_.get(), ctx); }

  xnn::Operator op_;
};

std::unique_ptr<Kernel> make_pad(const KernelRequest& req) {
  if (!xnn::available()) return nullptr;
  float value = req.node.attr<ir::PadAttrs>().value;
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  xnn_operator_t op = nullptr;
  if (xnn_create_constant_pad_nd_x32(&bits, 0, &op) != xnn_status_success) return nullptr;
  return std::make_unique<XnnPad>(req.node, xnn::Operator(op));
}

}  // namespace

void register_xnn_elementwise_kernels(KernelRegistry& r) {
  for (OpKind op : {OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv})
    r.add(op, DType::kFloat32, KernelBackend::kXnnpack, make_binary);
  for (OpKind op : {OpKind::kRelu, OpKind::kClip, OpKind::kLeakyRelu, OpKind::kSigmoid, OpKind::kHardSwish, OpKind::kSilu})
    r.add(op, DType::kFloat32, KernelBackend::kXnnpack, make_unary);
  r.add(OpKind::kHardSigmoid, DType::kFloat32, KernelBackend::kXnnpack, make_hard_sigmoid);
  r.add(OpKind::kSoftmax, DType::kFloat32, KernelBackend::kXnnpack, make_softmax);
  r.add(OpKind::kPad, DType::kFloat32, KernelBackend::kXnnpack, make_pad);
}

}  // namespace modex::runtime
