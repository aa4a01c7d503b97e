// Int8 IR test graphs (the int8 IR contract: NHWC, int8 activations with per-tensor params,
// symmetric per-channel conv weights, int32 biases), with seeded random weights and params chosen
// so that outputs use most of the int8 range. Shared by the int8 kernel tests (XNNPACK against the
// reference kernels) and tflite_testgen (the same graphs written as .tflite and run in LiteRT).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace modex::test {

struct Int8Case {
  std::string name;
  ir::Graph graph;
  bool litert = true;  // also a LiteRT oracle case (TFLite supports every op as built)
};

class Int8Builder {
 public:
  explicit Int8Builder(uint32_t seed) : rng_(seed) {}
  ir::Graph g;

  ir::ValueId input(const std::string& name, Dims dims, float scale, int64_t zp,
                    DType dtype = DType::kInt8) {
    ir::ValueId v = g.add_input(name, dtype, ir::static_shape(dims));
    g.value(v).quant = ir::QuantParams{{scale}, {zp}, 0};
    std_[v] = 50.0 * scale;  // real std of a well-spread int8 tensor
    return v;
  }

  // Conv (groups == C and kernel [C*m, kh, kw, 1] for depthwise), random weights, bias.
  ir::ValueId conv(ir::ValueId x, int64_t O, int64_t k, int64_t stride, std::vector<int64_t> pads,
                   int64_t groups, ir::Activation act, bool per_channel = true,
                   int64_t dilation = 1) {
    const int64_t C = g.value(x).shape[3].value, CG = C / groups;
    Tensor w = Tensor::empty(DType::kInt8, {O, k, k, CG});
    std::uniform_int_distribution<int> wd(-127, 127);
    for (int64_t i = 0; i < w.numel(); ++i)
      w.data_mutable<int8_t>()[i] = static_cast<int8_t>(wd(rng_));
    std::vector<float> ws;
    std::uniform_real_distribution<float> sd(0.004f, 0.012f);
    for (int64_t o = 0; o < (per_channel ? O : 1); ++o) ws.push_back(sd(rng_));
    const float in_scale = g.value(x).quant->scale[0];
    Tensor b = Tensor::empty(DType::kInt32, {O});
    std::vector<float> bs;
    std::uniform_int_distribution<int> bd(-3000, 3000);
    for (int64_t o = 0; o < O; ++o) b.data_mutable<int32_t>()[o] = bd(rng_);
    for (float s : ws) bs.push_back(in_scale * s);  // per channel like the weights
    ir::ValueId wv = g.add_constant(name("w"), w);
    g.value(wv).quant = ir::QuantParams{ws, std::vector<int64_t>(ws.size(), 0), 0};
    ir::ValueId bv = g.add_constant(name("b"), b);
    g.value(bv).quant = ir::QuantParams{bs, std::vector<int64_t>(bs.size(), 0), 0};
    ir::ConvAttrs a;
    a.kernel = {k, k};
    a.strides = {stride, stride};
    a.pads = std::move(pads);
    a.dilations = {dilation, dilation};
    a.groups = groups;
    a.activation = act;
    a.layout = ir::Layout::kNHWC;
    ir::ValueId y = g.add_node1(ir::OpKind::kConv, a, {x, wv, bv}, name("conv"));
    const double real = std_.at(x) * 0.008 * 73.0 * std::sqrt(static_cast<double>(CG * k * k));
    set_out(y, real, act != ir::Activation::kNone);
    return y;
  }

  ir::ValueId gemm(ir::ValueId x, int64_t O, ir::Activation act) {
    const int64_t I = g.value(x).shape[1].value;
    Tensor w = Tensor::empty(DType::kInt8, {O, I});
    std::uniform_int_distribution<int> wd(-127, 127);
    for (int64_t i = 0; i < w.numel(); ++i)
      w.data_mutable<int8_t>()[i] = static_cast<int8_t>(wd(rng_));
    const float ws = 0.006f, in_scale = g.value(x).quant->scale[0];
    Tensor b = Tensor::empty(DType::kInt32, {O});
    std::uniform_int_distribution<int> bd(-2000, 2000);
    for (int64_t o = 0; o < O; ++o) b.data_mutable<int32_t>()[o] = bd(rng_);
    ir::ValueId wv = g.add_constant(name("fc_w"), w);
    g.value(wv).quant = ir::QuantParams{{ws}, {0}, 0};
    ir::ValueId bv = g.add_constant(name("fc_b"), b);
    g.value(bv).quant = ir::QuantParams{{in_scale * ws}, {0}, 0};
    ir::ValueId y = g.add_node1(ir::OpKind::kGemm, ir::GemmAttrs{act}, {x, wv, bv}, name("fc"));
    set_out(y, std_.at(x) * ws * 73.0 * std::sqrt(static_cast<double>(I)),
            act != ir::Activation::kNone);
    return y;
  }

  ir::ValueId binary(ir::OpKind op, ir::ValueId a, ir::ValueId b,
                     ir::Activation act = ir::Activation::kNone) {
    ir::ValueId y =
        g.add_node1(op, ir::BinaryAttrs{act}, {a, b}, name(op == ir::OpKind::kAdd ? "add" : "mul"));
    double real =
        op == ir::OpKind::kAdd ? std::hypot(std_.at(a), std_.at(b)) : std_.at(a) * std_.at(b) * 1.5;
    set_out(y, real, act != ir::Activation::kNone);
    return y;
  }

  // An op whose output keeps the input's params (pools, reshapes, pad, transpose, concat).
  ir::ValueId same(ir::OpKind op, ir::OpAttrs attrs, std::vector<ir::ValueId> in) {
    ir::ValueId y = g.add_node1(op, std::move(attrs), in, name(std::string(ir::op_name(op))));
    g.value(y).quant = g.value(in[0]).quant;
    std_[y] = std_.at(in[0]);
    return y;
  }

  // An op with its own output params: real std `real`, or fixed params when scale > 0.
  ir::ValueId own(ir::OpKind op, ir::OpAttrs attrs, ir::ValueId x, double real, float scale = 0,
                  int64_t zp = 0) {
    ir::ValueId y = g.add_node1(op, std::move(attrs), {x}, name(std::string(ir::op_name(op))));
    if (scale > 0) {
      g.value(y).quant = ir::QuantParams{{scale}, {zp}, 0};
      std_[y] = 50.0 * scale;
    } else {
      set_out(y, real, false);
    }
    return y;
  }

  ir::ValueId quantize(ir::ValueId x, DType to, float scale, int64_t zp) {
    ir::ValueId y =
        g.add_node1(ir::OpKind::kQuantize, ir::QuantizeAttrs{to}, {x}, name("quantize"));
    g.value(y).quant = ir::QuantParams{{scale}, {zp}, 0};
    std_[y] = 50.0 * scale;
    return y;
  }

  double real_std(ir::ValueId v) const { return std_.at(v); }

 private:
  std::string name(const std::string& base) { return base + "_" + std::to_string(counter_++); }
  // Params for a tensor of real std `real`: about 3 std per half range, a random zero point.
  void set_out(ir::ValueId y, double real, bool relu) {
    float scale = static_cast<float>(real * 3.0 / 127.0);
    std::uniform_int_distribution<int> zd(-20, 20);
    int64_t zp = relu ? -100 : zd(rng_);
    g.value(y).quant = ir::QuantParams{{scale}, {zp}, 0};
    std_[y] = real;
  }
  std::mt19937 rng_;
  std::map<ir::ValueId, double> std_;
  int counter_ = 0;
};

inline std::vector<Int8Case> int8_cases() {
  using ir::Activation;
  using ir::OpKind;
  std::vector<Int8Case> cases;
  auto add = [&](const std::string& name, Int8Builder& b, ir::ValueId out, bool litert = true) {
    b.g.add_output(out);
    b.g.set_output_name(out, "logits");
    cases.push_back({name, std::move(b.g), litert});
  };
  {
    Int8Builder b(1);
    auto x = b.input("image", {1, 9, 9, 5}, 0.02f, 3);
    add("conv_same_relu6", b, b.conv(x, 7, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu6));
  }
  {
    Int8Builder b(2);
    auto x = b.input("image", {1, 10, 11, 3}, 0.03f, -7);
    add("conv_stride2_per_tensor", b,
        b.conv(x, 8, 3, 2, {0, 0, 1, 1}, 1, Activation::kNone, false));
  }
  {
    Int8Builder b(3);
    auto x = b.input("image", {1, 7, 7, 4}, 0.05f, 0);
    add("conv_1x1_relu", b, b.conv(x, 9, 1, 1, {0, 0, 0, 0}, 1, Activation::kRelu));
  }
  {
    Int8Builder b(4);
    auto x = b.input("image", {1, 12, 12, 6}, 0.02f, 10);
    add("depthwise_stride2_relu", b, b.conv(x, 6, 3, 2, {0, 0, 1, 1}, 6, Activation::kRelu));
  }
  {
    Int8Builder b(5);
    auto x = b.input("image", {1, 8, 8, 3}, 0.02f, -5);
    add("depthwise_multiplier2", b, b.conv(x, 6, 3, 1, {1, 1, 1, 1}, 3, Activation::kNone));
  }
  {
    Int8Builder b(6);
    auto x = b.input("image", {1, 9, 9, 6}, 0.02f, 1);
    add("grouped_conv", b, b.conv(x, 4, 3, 1, {1, 1, 1, 1}, 2, Activation::kNone),
        /*litert=*/false);
  }
  {
    Int8Builder b(7);
    auto x = b.input("image", {1, 37}, 0.04f, -2);
    add("fully_connected_relu", b, b.gemm(x, 10, Activation::kRelu));
  }
  {
    Int8Builder b(8);
    auto x = b.input("image", {1, 6, 6, 8}, 0.02f, 4);
    auto c1 = b.conv(x, 8, 3, 1, {1, 1, 1, 1}, 1, Activation::kNone);
    add("add_relu", b, b.binary(OpKind::kAdd, x, c1, Activation::kRelu));
  }
  {
    Int8Builder b(9);
    auto x = b.input("image", {1, 6, 6, 8}, 0.03f, -4);
    ir::PoolAttrs p;
    p.kernel = {3, 3};
    p.strides = {1, 1};
    p.pads = {1, 1, 1, 1};
    p.layout = ir::Layout::kNHWC;
    add("mul", b, b.binary(OpKind::kMul, x, b.same(OpKind::kMaxPool, p, {x})));
  }
  {
    Int8Builder b(10);
    auto x = b.input("image", {1, 11, 11, 5}, 0.02f, 2);
    ir::PoolAttrs p;
    p.kernel = {3, 3};
    p.strides = {2, 2};
    p.pads = {1, 1, 1, 1};
    p.layout = ir::Layout::kNHWC;
    add("max_pool_3x3_s2", b, b.same(OpKind::kMaxPool, p, {x}));
  }
  {
    Int8Builder b(11);
    auto x = b.input("image", {1, 10, 10, 5}, 0.02f, -9);
    ir::PoolAttrs p;
    p.kernel = {2, 2};
    p.strides = {2, 2};
    p.pads = {0, 0, 0, 0};
    p.layout = ir::Layout::kNHWC;
    add("average_pool_2x2", b, b.same(OpKind::kAveragePool, p, {x}));
  }
  {
    Int8Builder b(12);
    auto x = b.input("image", {2, 5, 7, 80}, 0.03f, 5);  // two images, two 64-channel blocks
    add("mean_hw", b,
        b.own(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, x, 0.5 * b.real_std(x)));
  }
  {
    Int8Builder b(13);
    auto x = b.input("image", {1, 4, 4, 16}, 0.05f, -3);
    add("hard_swish", b, b.own(OpKind::kHardSwish, ir::NoAttrs{}, x, 1.2 * b.real_std(x)));
  }
  {
    Int8Builder b(14);
    auto x = b.input("image", {1, 4, 4, 16}, 0.06f, 7);
    add("logistic", b, b.own(OpKind::kSigmoid, ir::NoAttrs{}, x, 0, 1.0f / 256.0f, -128));
  }
  {
    // SiLU as TFLite writes it (LOGISTIC, then MUL by the input): the engine runs it as one table.
    Int8Builder b(24);
    auto x = b.input("image", {1, 4, 8, 16}, 0.05f, -6);
    auto gate = b.own(OpKind::kSigmoid, ir::NoAttrs{}, x, 0, 1.0f / 256.0f, -128);
    add("silu", b, b.binary(OpKind::kMul, x, gate));
  }
  {
    Int8Builder b(15);
    auto x = b.input("image", {1, 10}, 0.02f, -1);
    add("softmax", b, b.own(OpKind::kSoftmax, ir::AxisAttrs{1}, x, 0, 1.0f / 256.0f, -128));
  }
  {
    Int8Builder b(16);
    auto x = b.input("image", {1, 6, 6, 4}, 0.02f, 3);
    auto p = b.same(OpKind::kPad, ir::PadAttrs{{0, 1, 1, 0, 0, 1, 1, 0}, 0.0f}, {x});
    ir::PoolAttrs pa;
    pa.kernel = {3, 3};
    pa.strides = {1, 1};
    pa.pads = {1, 1, 1, 1};
    pa.layout = ir::Layout::kNHWC;
    auto m = b.same(OpKind::kMaxPool, pa, {p});
    // Concat: every input with the same params (TFLite's rule).
    auto cat = b.same(OpKind::kConcat, ir::AxisAttrs{3}, {p, m});
    auto r = b.same(OpKind::kReshape, ir::ReshapeAttrs{{1, -1}}, {cat});
    add("pad_concat_reshape", b, r);
  }
  {
    // Requantization int8 -> int8 to a coarser scale and another zero point.
    Int8Builder b(20);
    auto x = b.input("image", {1, 6, 6, 4}, 0.02f, 3);
    add("requantize", b, b.quantize(x, DType::kInt8, 0.037f, -11));
  }
  // A small classifier (stem conv, depthwise block with residual, head), and its prefixes.
  for (int stop : {1, 2, 3, 4}) {
    Int8Builder b(17);
    auto x = b.input("image", {1, 16, 16, 3}, 0.0157f, -1);
    auto s = b.conv(x, 8, 3, 2, {0, 0, 1, 1}, 1, Activation::kRelu6);
    auto d = b.conv(s, 8, 3, 1, {1, 1, 1, 1}, 8, Activation::kRelu6);
    auto p = b.conv(d, 8, 1, 1, {0, 0, 0, 0}, 1, Activation::kNone);
    auto r = b.binary(OpKind::kAdd, s, p);
    if (stop == 1) {
      add("small_cnn_to_add", b, r);
      continue;
    }
    auto h = b.own(OpKind::kHardSwish, ir::NoAttrs{}, r, b.real_std(r));
    if (stop == 2) {
      add("small_cnn_to_hard_swish", b, h);
      continue;
    }
    auto m = b.own(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, false}, h, 0.5 * b.real_std(h));
    if (stop == 3) {
      add("small_cnn_to_mean", b, m);
      continue;
    }
  }
  {
    Int8Builder b(17);
    auto x = b.input("image", {1, 16, 16, 3}, 0.0157f, -1);
    auto s = b.conv(x, 8, 3, 2, {0, 0, 1, 1}, 1, Activation::kRelu6);
    auto d = b.conv(s, 8, 3, 1, {1, 1, 1, 1}, 8, Activation::kRelu6);
    auto p = b.conv(d, 8, 1, 1, {0, 0, 0, 0}, 1, Activation::kNone);
    auto r = b.binary(OpKind::kAdd, s, p);
    auto h = b.own(OpKind::kHardSwish, ir::NoAttrs{}, r, b.real_std(r));
    auto m = b.own(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, false}, h, 0.5 * b.real_std(h));
    add("small_cnn", b, b.gemm(m, 10, Activation::kNone));
  }
  {
    // float32 in -> Quantize -> conv -> Dequantize -> float32 out.
    Int8Builder b(18);
    ir::ValueId x = b.g.add_input("image", DType::kFloat32, ir::static_shape({1, 8, 8, 3}));
    auto q = b.quantize(x, DType::kInt8, 0.02f, 0);
    auto c = b.conv(q, 6, 3, 1, {1, 1, 1, 1}, 1, Activation::kRelu);
    auto y = b.g.add_node1(ir::OpKind::kDequantize, ir::NoAttrs{}, {c}, "dequantize");
    add("float_io", b, y);
  }
  {
    // uint8 in -> requantize to int8 -> conv -> requantize to uint8 out.
    Int8Builder b(19);
    auto x = b.input("image", {1, 8, 8, 3}, 0.02f, 128, DType::kUInt8);
    auto q = b.quantize(x, DType::kInt8, 0.02f, 0);
    auto c = b.conv(q, 6, 3, 1, {1, 1, 1, 1}, 1, Activation::kNone);
    auto y = b.quantize(c, DType::kUInt8, b.g.value(c).quant->scale[0],
                        b.g.value(c).quant->zero_point[0] + 128);
    add("uint8_io", b, y);
  }
  return cases;
}

}  // namespace modex::test
