// XNNPACK int8 kernels: convolution (per-channel qc8 or per-tensor qs8 weights, depthwise
// included; dense ones go to native_conv_q8.cc first on AVX2), fully connected, add, multiply,
// max pooling, constant pad, float -> int8 conversion; and two small kernels of modex's own that
// round as LiteRT's XNNPACK does (the spatial mean, requantization).
// Each factory prepares the node with the reference kernels' checks first, so the parameters are
// the ones the reference computes with; XNNPACK requantizes in fp32 (round to nearest even) where
// TFLite's reference uses Q31 fixed point, so results may differ by one step. A node XNNPACK
// declines (uint8 data, parameters outside its limits) keeps the reference kernel.
#include <pthreadpool.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "runtime/kernels/native_conv.h"
#include "runtime/kernels/reference_int8.h"
#include "runtime/kernels/xnn_common.h"

namespace modex::runtime {
namespace {

using ir::OpKind;

int8_t i8(int32_t v) { return static_cast<int8_t>(v); }

// XNNPACK (Debian's build keeps its asserts) aborts on requantization scales outside the ranges
// its kernels support; nodes with such params keep the reference kernel.
bool in_range(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v < hi; }
constexpr double kMinScale = 0x1.0p-30, kMaxScale = 0x1.0p+7;

// The factory's common gate: XNNPACK present, a quantized node with int8 data.
bool int8_node(const KernelRequest& req) {
  if (!xnn::available() || !q8::is_quantized_node(req.graph, req.node)) return false;
  for (ir::ValueId v : req.node.inputs)
    if (v != ir::kNoValue && req.graph.value(v).dtype == DType::kUInt8) return false;
  return req.graph.value(req.node.outputs[0]).dtype == DType::kInt8;
}

// One XNNPACK operator over whole NHWC tensors, set up by `bind`.
class XnnInt8 final : public Kernel {
 public:
  using Bind =
      std::function<xnn_status(xnn_operator_t, std::span<const Tensor>, Tensor&, pthreadpool_t)>;
  XnnInt8(xnn::Operator op, std::string name, Bind bind)
      : op_(std::move(op)), name_(std::move(name)), bind_(std::move(bind)) {}
  std::string_view name() const override { return name_; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    xnn::check(bind_(op_.get(), in, out[0], ctx.pool), "int8 setup");
  }
  void run(const RunContext& ctx) override { xnn::run(op_.get(), ctx); }

 private:
  xnn::Operator op_;
  std::string name_;
  Bind bind_;
};

// Int8 Add / Mul on XNNPACK. Debian's build splits an elementwise operator among the threads only
// over the batch, so at batch 1 it ran on one thread; here a batch-1 operation whose inputs are
// each either the output's shape or constant along H (the residual adds, the squeeze-excite
// channel scaling [1, H, W, C] x [1, 1, 1, C]) is cut into bands of rows, one operator per band,
// set up and run on the pool's threads: the same micro-kernels on the same values, so the same
// integers. Other shapes run whole.
class XnnBinaryQ8 final : public Kernel {
 public:
  using Create = std::function<xnn::Operator()>;
  XnnBinaryQ8(xnn::Operator op, Create create, bool add) : create_(std::move(create)), add_(add) {
    ops_.push_back(std::move(op));
  }
  std::string_view name() const override { return add_ ? "xnn_add_nd_qs8" : "xnn_multiply_nd_qs8"; }

  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext& ctx) override {
    a_ = in[0];
    b_ = in[1];
    y_ = out[0];
    const int64_t threads = ctx.pool ? static_cast<int64_t>(pthreadpool_get_threads_count(ctx.pool)) : 1;
    const bool split = threads > 1 && y_.rank() >= 2 && y_.dim(0) == 1 && y_.dim(1) > 1 && bandable(a_) && bandable(b_);
    bands_ = split ? std::min(threads, y_.dim(1)) : 1;
    while (static_cast<int64_t>(ops_.size()) < bands_) {
      ops_.push_back(create_());
      if (!ops_.back()) throw Error("cannot create an XNNPACK int8 operator", ErrorKind::kInternal);
    }
    if (bands_ == 1) {
      xnn::check(bind(ops_[0].get(), 0, y_.rank() >= 2 ? y_.dim(1) : 1, ctx.pool), "int8 setup");
      return;
    }
    // Each band's operator is bound once here; run() only runs them, each on its calling thread.
    const int64_t H = y_.dim(1);
    for (int64_t i = 0; i < bands_; ++i)
      xnn::check(bind(ops_[static_cast<size_t>(i)].get(), H * i / bands_, H * (i + 1) / bands_, nullptr), "int8 setup");
  }

  void run(const RunContext& ctx) override {
    if (bands_ == 1) {
      xnn::run(ops_[0].get(), ctx);
      return;
    }
    native::parallel(ctx, bands_, [](void* self, size_t i) {
      xnn::check(xnn_run_operator(static_cast<XnnBinaryQ8*>(self)->ops_[i].get(), nullptr), "run");
    }, this);
  }

 private:
  // The output's shape, or constant along H (dim 1 of 1), in a batch-1 output of the same rank.
  bool bandable(const Tensor& t) const {
    if (t.rank() != y_.rank() || t.dim(0) != 1) return false;
    if (t.dim(1) == 1) return true;
    return t.shape() == y_.shape();
  }

  // Sets `op` up for output rows [h0, h1) (dim 1) of every input and the output.
  xnn_status bind(xnn_operator_t op, int64_t h0, int64_t h1, pthreadpool_t pool) {
    std::array<size_t, XNN_MAX_TENSOR_DIMS> da{}, db{};
    auto band = [&](const Tensor& t, std::array<size_t, XNN_MAX_TENSOR_DIMS>& dims) {
      for (int64_t d = 0; d < t.rank(); ++d) dims[static_cast<size_t>(d)] = static_cast<size_t>(t.dim(d));
      if (t.rank() < 2 || t.dim(1) == 1 || bands_ == 1) return t.data<int8_t>();
      dims[1] = static_cast<size_t>(h1 - h0);
      return t.data<int8_t>() + h0 * (t.numel() / t.dim(1));
    };
    const int8_t* pa = band(a_, da);
    const int8_t* pb = band(b_, db);
    int8_t* py = y_.data_mutable<int8_t>() + (bands_ == 1 ? 0 : h0 * (y_.numel() / y_.dim(1)));
    auto setup = add_ ? xnn_setup_add_nd_qs8 : xnn_setup_multiply_nd_qs8;
    return setup(op, static_cast<size_t>(a_.rank()), da.data(), static_cast<size_t>(b_.rank()), db.data(), pa, pb, py,
                 pool);
  }

  std::vector<xnn::Operator> ops_;  // one per band
  Create create_;
  bool add_;
  Tensor a_, b_, y_;
  int64_t bands_ = 1;
};

std::unique_ptr<Kernel> make_conv(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::ConvAttrs>();
  if (a.layout != ir::Layout::kNHWC || a.kernel.size() != 2) return nullptr;
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b =
      n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (!w.is_constant() || (b && !b->is_constant())) return nullptr;
  const int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  const int64_t O = w.constant.dim(0);
  if (C <= 0 || a.groups <= 0 || C % a.groups != 0 || O % a.groups != 0) return nullptr;
  q8::Prepared p = q8::prepare(req.graph, n);
  const auto& ws = w.quant->scale;
  for (float s : ws)
    if (!in_range(static_cast<double>(p.in[0].scale) * s / p.out.scale, kMinScale, kMaxScale))
      return nullptr;
  xnn_operator_t op = nullptr;
  const uint32_t pt = static_cast<uint32_t>(a.pads[0]), pl = static_cast<uint32_t>(a.pads[1]);
  const uint32_t pb = static_cast<uint32_t>(a.pads[2]), pr = static_cast<uint32_t>(a.pads[3]);
  const bool per_channel = ws.size() > 1;
  xnn_status s;
  if (per_channel) {
    s = xnn_create_convolution2d_nhwc_qc8(
        pt, pr, pb, pl, static_cast<uint32_t>(a.kernel[0]), static_cast<uint32_t>(a.kernel[1]),
        static_cast<uint32_t>(a.strides[0]), static_cast<uint32_t>(a.strides[1]),
        static_cast<uint32_t>(a.dilations[0]), static_cast<uint32_t>(a.dilations[1]),
        static_cast<uint32_t>(a.groups), static_cast<size_t>(C / a.groups),
        static_cast<size_t>(O / a.groups), static_cast<size_t>(C), static_cast<size_t>(O),
        i8(p.in[0].zero_point), p.in[0].scale, ws.data(), w.constant.data<int8_t>(),
        b ? b->constant.data<int32_t>() : nullptr, i8(p.out.zero_point), p.out.scale, i8(p.act_min),
        i8(p.act_max), 0, &op);
  } else {
    s = xnn_create_convolution2d_nhwc_qs8(
        pt, pr, pb, pl, static_cast<uint32_t>(a.kernel[0]), static_cast<uint32_t>(a.kernel[1]),
        static_cast<uint32_t>(a.strides[0]), static_cast<uint32_t>(a.strides[1]),
        static_cast<uint32_t>(a.dilations[0]), static_cast<uint32_t>(a.dilations[1]),
        static_cast<uint32_t>(a.groups), static_cast<size_t>(C / a.groups),
        static_cast<size_t>(O / a.groups), static_cast<size_t>(C), static_cast<size_t>(O),
        i8(p.in[0].zero_point), p.in[0].scale, ws[0], w.constant.data<int8_t>(),
        b ? b->constant.data<int32_t>() : nullptr, i8(p.out.zero_point), p.out.scale, i8(p.act_min),
        i8(p.act_max), 0, &op);
  }
  if (s != xnn_status_success) return nullptr;
  const bool depthwise = a.groups == C && a.groups > 1;
  std::string name = std::string(depthwise ? "xnn_dwconv2d_nhwc_" : "xnn_conv2d_nhwc_") +
                     (per_channel ? "qc8" : "qs8");
  return std::make_unique<XnnInt8>(
      xnn::Operator(op), name,
      [per_channel](xnn_operator_t o, std::span<const Tensor> in, Tensor& y, pthreadpool_t pool) {
        const Tensor& x = in[0];
        auto setup =
            per_channel ? xnn_setup_convolution2d_nhwc_qc8 : xnn_setup_convolution2d_nhwc_qs8;
        return setup(o, static_cast<size_t>(x.dim(0)), static_cast<size_t>(x.dim(1)),
                     static_cast<size_t>(x.dim(2)), x.data<int8_t>(), y.data_mutable<int8_t>(),
                     pool);
      });
}

std::unique_ptr<Kernel> make_gemm(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  const ir::Value& w = req.graph.value(n.inputs[1]);
  const ir::Value* b =
      n.inputs.size() > 2 && n.inputs[2] != ir::kNoValue ? &req.graph.value(n.inputs[2]) : nullptr;
  if (x.shape.size() != 2 || !w.is_constant() || w.constant.rank() != 2 || (b && !b->is_constant()))
    return nullptr;
  if (w.quant->per_channel()) return nullptr;  // XNNPACK's fully connected is per-tensor
  q8::Prepared p = q8::prepare(req.graph, n);
  if (!in_range(static_cast<double>(p.in[0].scale) * w.quant->scale[0] / p.out.scale, kMinScale,
                kMaxScale))
    return nullptr;
  const int64_t O = w.constant.dim(0), I = w.constant.dim(1);
  xnn_operator_t op = nullptr;
  if (xnn_create_fully_connected_nc_qs8(
          static_cast<size_t>(I), static_cast<size_t>(O), static_cast<size_t>(I),
          static_cast<size_t>(O), i8(p.in[0].zero_point), p.in[0].scale, w.quant->scale[0],
          w.constant.data<int8_t>(), b ? b->constant.data<int32_t>() : nullptr,
          i8(p.out.zero_point), p.out.scale, i8(p.act_min), i8(p.act_max), 0,
          &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnInt8>(
      xnn::Operator(op), "xnn_fully_connected_nc_qs8",
      [I](xnn_operator_t o, std::span<const Tensor> in, Tensor& y, pthreadpool_t pool) {
        return xnn_setup_fully_connected_nc_qs8(o, static_cast<size_t>(in[0].numel() / I),
                                                in[0].data<int8_t>(), y.data_mutable<int8_t>(),
                                                pool);
      });
}

std::unique_ptr<Kernel> make_binary(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  if (n.inputs.size() != 2) return nullptr;
  for (ir::ValueId v : n.inputs)
    if (req.graph.value(v).shape.size() > XNN_MAX_TENSOR_DIMS) return nullptr;
  q8::Prepared p = q8::prepare(req.graph, n);
  const bool add = n.op == OpKind::kAdd;
  const double s1 = p.in[0].scale, s2 = p.in[1].scale, so = p.out.scale;
  if (add ? !(in_range(s1 / so, 0x1.0p-10, 0x1.0p+8) && in_range(s2 / so, 0x1.0p-10, 0x1.0p+8))
          : !in_range(s1 * s2 / so, 0x1.0p-16, 0x1.0p+8))
    return nullptr;
  auto create = [add, p]() {
    xnn_operator_t op = nullptr;
    auto make = add ? xnn_create_add_nd_qs8 : xnn_create_multiply_nd_qs8;
    if (make(i8(p.in[0].zero_point), p.in[0].scale, i8(p.in[1].zero_point), p.in[1].scale, i8(p.out.zero_point),
             p.out.scale, i8(p.act_min), i8(p.act_max), 0, &op) != xnn_status_success)
      return xnn::Operator();
    return xnn::Operator(op);
  };
  xnn::Operator first = create();
  if (!first) return nullptr;
  return std::make_unique<XnnBinaryQ8>(std::move(first), std::move(create), add);
}

std::unique_ptr<Kernel> make_max_pool(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  const auto& a = n.attr<ir::PoolAttrs>();
  if (a.layout != ir::Layout::kNHWC || a.kernel.size() != 2 || a.ceil_mode) return nullptr;
  const int64_t C = xnn::static_dim(req.graph, n.inputs[0], 3);
  if (C <= 0 || a.kernel[0] * a.kernel[1] < 2) return nullptr;
  q8::Prepared p = q8::prepare(req.graph, n);
  xnn_operator_t op = nullptr;
  if (xnn_create_max_pooling2d_nhwc_s8(
          static_cast<uint32_t>(a.pads[0]), static_cast<uint32_t>(a.pads[3]),
          static_cast<uint32_t>(a.pads[2]), static_cast<uint32_t>(a.pads[1]),
          static_cast<uint32_t>(a.kernel[0]), static_cast<uint32_t>(a.kernel[1]),
          static_cast<uint32_t>(a.strides[0]), static_cast<uint32_t>(a.strides[1]),
          static_cast<uint32_t>(a.dilations[0]), static_cast<uint32_t>(a.dilations[1]),
          static_cast<size_t>(C), static_cast<size_t>(C), static_cast<size_t>(C), i8(p.act_min),
          i8(p.act_max), 0, &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnInt8>(
      xnn::Operator(op), "xnn_max_pooling2d_nhwc_s8",
      [](xnn_operator_t o, std::span<const Tensor> in, Tensor& y, pthreadpool_t pool) {
        const Tensor& x = in[0];
        return xnn_setup_max_pooling2d_nhwc_s8(
            o, static_cast<size_t>(x.dim(0)), static_cast<size_t>(x.dim(1)),
            static_cast<size_t>(x.dim(2)), x.data<int8_t>(), y.data_mutable<int8_t>(), pool);
      });
}

// Constant Pad of an int8 tensor (the explicit padding a TFLite max pool or convolution reads):
// the padding byte is the reference's (the pad value quantized with the output's params).
std::unique_ptr<Kernel> make_pad(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  const auto& pads = n.attr<ir::PadAttrs>().pads;
  const size_t rank = req.graph.value(n.inputs[0]).shape.size();
  if (rank == 0 || rank > XNN_MAX_TENSOR_DIMS || pads.size() != 2 * rank) return nullptr;
  for (int64_t v : pads)
    if (v < 0) return nullptr;
  q8::Prepared p = q8::prepare(req.graph, n);
  const uint32_t byte = static_cast<uint8_t>(i8(p.pad_value));
  xnn_operator_t op = nullptr;
  if (xnn_create_constant_pad_nd_x8(&byte, 0, &op) != xnn_status_success) return nullptr;
  return std::make_unique<XnnInt8>(
      xnn::Operator(op), "xnn_constant_pad_nd_x8",
      [pads, rank](xnn_operator_t o, std::span<const Tensor> in, Tensor& y, pthreadpool_t pool) {
        std::array<size_t, XNN_MAX_TENSOR_DIMS> shape{}, pre{}, post{};
        for (size_t d = 0; d < rank; ++d) {
          shape[d] = static_cast<size_t>(in[0].dim(static_cast<int64_t>(d)));
          pre[d] = static_cast<size_t>(pads[d]);
          post[d] = static_cast<size_t>(pads[d + rank]);
        }
        return xnn_setup_constant_pad_nd_x8(o, rank, shape.data(), pre.data(), post.data(), in[0].raw(),
                                            y.raw_mutable(), pool);
      });
}

// The mean over H and W of an NHWC int8 tensor (TFLite's MEAN of a classifier head), as LiteRT
// computes it with XNNPACK: the int32 sum of (x - zp_in), times s_in / (s_out * count) in fp32,
// plus zp_out, rounded half to even. XNNPACK 2022's global average pooling (here) rounds ties up,
// TFLite's reference rounds twice (Q31 multiply, then the division); both differ from LiteRT's
// result on exact halves, frequent when the scales differ by a power of two.
class MeanHwFp32 final : public Kernel {
 public:
  explicit MeanHwFp32(const q8::Prepared& p) : p_(p) {}
  std::string_view name() const override { return "q8_mean_hw_fp32"; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    x_ = in[0];
    y_ = out[0];
  }
  // Work items: (image, block of 64 channels), split among the threads.
  void run(const RunContext& ctx) override {
    blocks_ = (x_.dim(3) + kBlock - 1) / kBlock;
    native::parallel(ctx, x_.dim(0) * blocks_, [](void* self, size_t i) {
      static_cast<MeanHwFp32*>(self)->block(static_cast<int64_t>(i));
    }, this, x_.numel());
  }

 private:
  static constexpr int64_t kBlock = 64;

  void block(int64_t item) {
    const int64_t HW = x_.dim(1) * x_.dim(2), C = x_.dim(3), n = item / blocks_;
    const int64_t c0 = item % blocks_ * kBlock, c1 = std::min(C, c0 + kBlock);
    const float scale = p_.in[0].scale / (p_.out.scale * static_cast<float>(HW));
    const int8_t* xp = x_.data<int8_t>() + n * HW * C;
    int8_t* yd = y_.data_mutable<int8_t>() + n * C;
    std::array<int32_t, kBlock> acc;
    std::fill(acc.begin(), acc.end(), static_cast<int32_t>(-HW * p_.in[0].zero_point));
    for (int64_t i = 0; i < HW; ++i, xp += C)
      for (int64_t c = c0; c < c1; ++c) acc[static_cast<size_t>(c - c0)] += xp[c];
    for (int64_t c = c0; c < c1; ++c) {
      const float v = static_cast<float>(acc[static_cast<size_t>(c - c0)]) * scale + static_cast<float>(p_.out.zero_point);
      const int32_t q = static_cast<int32_t>(std::nearbyint(std::clamp(v, -1e6f, 1e6f)));
      yd[c] = static_cast<int8_t>(std::clamp(q, p_.act_min, p_.act_max));
    }
  }

  int64_t blocks_ = 0;
  q8::Prepared p_;
  Tensor x_, y_;
};

std::unique_ptr<Kernel> make_mean(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  const ir::Node& n = req.node;
  const ir::Value& x = req.graph.value(n.inputs[0]);
  if (x.shape.size() != 4) return nullptr;
  std::vector<int64_t> axes;
  for (int64_t ax : n.attr<ir::ReduceAttrs>().axes) axes.push_back(ax < 0 ? ax + 4 : ax);
  std::sort(axes.begin(), axes.end());
  if (axes != std::vector<int64_t>{1, 2}) return nullptr;
  return std::make_unique<MeanHwFp32>(q8::prepare(req.graph, n));
}

// Requantization between int8/uint8 params as XNNPACK's qs8/qu8 convert kernels do it (and so as
// LiteRT does): an 8-bit fixed-point ratio, out = zp_out + ((x - zp_in) * lrintf(256 * s_in /
// s_out)
// + 128) >> 8, rather than TFLite's Q31 multiplier. The two differ by one step on a few percent
// of values when the scales differ; with equal scales (int8 <-> uint8 model I/O) both are exact.
// As a 256-entry table of the input byte.
// A 256-entry table of the input byte, applied over the tensor (split over the pool's threads
// when large).
class Lut8 final : public Kernel {
 public:
  Lut8(std::string name, const std::array<uint8_t, 256>& table) : name_(std::move(name)), lut_(table) {}
  std::string_view name() const override { return name_; }
  void setup(std::span<const Tensor> in, std::span<Tensor> out, const RunContext&) override {
    x_ = in[0];
    y_ = out[0];
  }
  void run(const RunContext& ctx) override {
    const int64_t n = x_.numel(), chunks = (n + kChunk - 1) / kChunk;
    native::parallel(ctx, chunks, [](void* self, size_t i) {
      auto* k = static_cast<Lut8*>(self);
      const int64_t begin = static_cast<int64_t>(i) * kChunk, end = std::min(k->x_.numel(), begin + kChunk);
      const uint8_t* xd = k->x_.raw();
      uint8_t* yd = k->y_.raw_mutable();
      if (native::cpu_has_avx2_fma()) {
        native::lookup_bytes(k->lut_.data(), xd + begin, yd + begin, static_cast<size_t>(end - begin));
        return;
      }
      for (int64_t j = begin; j < end; ++j) yd[j] = k->lut_[xd[j]];
    }, this);
  }

 private:
  static constexpr int64_t kChunk = 64 << 10;
  std::string name_;
  std::array<uint8_t, 256> lut_;
  Tensor x_, y_;
};

// Requantization between int8/uint8 params as XNNPACK's qs8/qu8 convert kernels do it (and so as
// LiteRT does): an 8-bit fixed-point ratio, out = zp_out + ((x - zp_in) * lrintf(256 * s_in /
// s_out) + 128) >> 8, rather than TFLite's Q31 multiplier. The two differ by one step on a few
// percent of values when the scales differ; with equal scales (int8 <-> uint8 model I/O) both
// are exact.
std::unique_ptr<Kernel> make_requantize(const q8::Prepared& p) {
  const int32_t m = static_cast<int32_t>(std::lrintf(256.0f * (p.in[0].scale / p.out.scale)));
  const bool in_u8 = p.in_dtype == DType::kUInt8, out_u8 = p.out_dtype == DType::kUInt8;
  const int32_t lo = out_u8 ? 0 : -128, hi = out_u8 ? 255 : 127;
  std::array<uint8_t, 256> lut{};
  for (int32_t b = 0; b < 256; ++b) {
    const int32_t x = in_u8 ? b : static_cast<int8_t>(static_cast<uint8_t>(b));
    const int32_t acc = (x - p.in[0].zero_point) * m + 128;
    const int32_t v = std::clamp(p.out.zero_point + (acc >> 8), lo, hi);  // arithmetic shift: floor
    lut[static_cast<size_t>(b)] = static_cast<uint8_t>(v);
  }
  return std::make_unique<Lut8>("q8_requantize_xnnpack_rounding", lut);
}

// SiLU (the engine's fused Mul(x, Sigmoid(x))) as the two ops run unfused: the Sigmoid's table
// (the reference's, as int8 Logistic runs), then XNNPACK's qs8 multiply of x by it, evaluated
// once for each of the 256 input bytes by an XNNPACK multiply operator. One pass over memory
// instead of two ops and three.
std::unique_ptr<Kernel> make_silu(const KernelRequest& req) {
  if (!int8_node(req)) return nullptr;
  q8::Prepared p = q8::prepare(req.graph, req.node);
  const float gate_scale = 1.0f / 256.0f;
  if (!in_range(static_cast<double>(p.in[0].scale) * gate_scale / p.out.scale, 0x1.0p-16, 0x1.0p+8)) return nullptr;
  xnn_operator_t raw = nullptr;
  if (xnn_create_multiply_nd_qs8(i8(p.in[0].zero_point), p.in[0].scale, -128, gate_scale, i8(p.out.zero_point),
                                 p.out.scale, -128, 127, 0, &raw) != xnn_status_success)
    return nullptr;
  xnn::Operator op(raw);
  std::array<int8_t, 256> x{}, gate{}, y{};
  for (int32_t b = 0; b < 256; ++b) {
    x[static_cast<size_t>(b)] = static_cast<int8_t>(b - 128);
    gate[static_cast<size_t>(b)] = p.gate[static_cast<uint8_t>(static_cast<int8_t>(b - 128))];
  }
  const size_t shape[1] = {256};
  if (xnn_setup_multiply_nd_qs8(op.get(), 1, shape, 1, shape, x.data(), gate.data(), y.data(), nullptr) !=
          xnn_status_success ||
      xnn_run_operator(op.get(), nullptr) != xnn_status_success)
    return nullptr;
  std::array<uint8_t, 256> lut{};
  for (int32_t b = 0; b < 256; ++b) lut[static_cast<uint8_t>(x[static_cast<size_t>(b)])] = static_cast<uint8_t>(y[static_cast<size_t>(b)]);
  return std::make_unique<Lut8>("q8_silu_lut_xnnpack_rounding", lut);
}

std::unique_ptr<Kernel> make_quantize(const KernelRequest& req) {
  if (!xnn::available() || !q8::is_quantized_node(req.graph, req.node)) return nullptr;
  const ir::Value& x = req.graph.value(req.node.inputs[0]);
  q8::Prepared p = q8::prepare(req.graph, req.node);
  const float ratio = p.in[0].scale / p.out.scale;
  if ((x.dtype == DType::kInt8 || x.dtype == DType::kUInt8) && !(ratio < 1e6f))
    return nullptr;  // reference
  if (x.dtype == DType::kInt8 || x.dtype == DType::kUInt8)
    return make_requantize(p);
  if (x.dtype != DType::kFloat32 || p.out_dtype != DType::kInt8) return nullptr;
  if (!in_range(1.0 / p.out.scale, 0x1.0p-30, 0x1.0p+30)) return nullptr;
  // float32 -> int8: XNNPACK's convert (x / scale rounded to nearest even).
  xnn_operator_t op = nullptr;
  if (xnn_create_convert_nc_f32_qs8(1, 1, 1, p.out.scale, i8(p.out.zero_point), -128, 127, 0,
                                    &op) != xnn_status_success)
    return nullptr;
  return std::make_unique<XnnInt8>(
      xnn::Operator(op), "xnn_convert_nc_f32_qs8",
      [](xnn_operator_t o, std::span<const Tensor> in, Tensor& y, pthreadpool_t pool) {
        return xnn_setup_convert_nc_f32_qs8(o, static_cast<size_t>(in[0].numel()),
                                            in[0].data<float>(), y.data_mutable<int8_t>(), pool);
      });
}

}  // namespace

void register_xnn_int8_kernels(KernelRegistry& r) {
  r.add(OpKind::kConv, DType::kInt8, KernelBackend::kXnnpack, make_conv);
  r.add(OpKind::kGemm, DType::kInt8, KernelBackend::kXnnpack, make_gemm);
  r.add(OpKind::kAdd, DType::kInt8, KernelBackend::kXnnpack, make_binary);
  r.add(OpKind::kMul, DType::kInt8, KernelBackend::kXnnpack, make_binary);
  r.add(OpKind::kMaxPool, DType::kInt8, KernelBackend::kXnnpack, make_max_pool);
  r.add(OpKind::kPad, DType::kInt8, KernelBackend::kXnnpack, make_pad);
  r.add(OpKind::kSilu, DType::kInt8, KernelBackend::kXnnpack, make_silu);
  r.add(OpKind::kReduceMean, DType::kInt8, KernelBackend::kXnnpack, make_mean);
  for (DType d : {DType::kInt8, DType::kUInt8, DType::kFloat32})
    r.add(OpKind::kQuantize, d, KernelBackend::kXnnpack, make_quantize);
}

}  // namespace modex::runtime
