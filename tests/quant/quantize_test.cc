#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "quant/prepare.h"
#include "quant/quantize.h"

namespace modex::quant {
namespace {
using namespace modex::ir;

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

int count_op(const Graph& g, OpKind op) {
  int c = 0;
  for (const Node& n : g.nodes()) c += !n.dead && n.op == op;
  return c;
}

const Value& by_name(const Graph& g, const std::string& name) {
  auto id = g.find_value(name);
  EXPECT_TRUE(id.has_value()) << name;
  return g.value(*id);
}

const Node& producer(const Graph& g, const std::string& name) { return g.node(by_name(g, name).producer); }

// A small NHWC classifier: conv (SiLU) -> depthwise conv (ReLU6) -> max pool -> SE-style gate
// (mean, 1x1 conv, sigmoid, mul) -> add -> mean -> flatten -> gemm -> softmax.
struct Net {
  Graph g;
  std::mt19937 rng{11};
  ValueId conv(ValueId x, int64_t in_c, int64_t out_c, int64_t k, int64_t groups, Activation act, const std::string& name,
               bool bias = true) {
    ConvAttrs a;
    a.kernel = {k, k};
    a.pads = {k / 2, k / 2, k / 2, k / 2};
    a.groups = groups;
    a.activation = act;
    a.layout = Layout::kNHWC;
    std::vector<ValueId> ins{x, g.add_constant(name + ".weight", random_tensor({out_c, k, k, in_c / groups}, rng, -0.5f, 0.5f))};
    if (bias) ins.push_back(g.add_constant(name + ".bias", random_tensor({out_c}, rng, -0.2f, 0.2f)));
    return g.add_node1(OpKind::kConv, a, ins, name);
  }
  Net() {
    ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::fixed(8), Dim::fixed(3)});
    ValueId c1 = conv(x, 3, 8, 3, 1, Activation::kSilu, "conv1");
    ValueId c2 = conv(c1, 8, 8, 3, 8, Activation::kRelu6, "dw", /*bias=*/false);
    PoolAttrs p;
    p.kernel = {2, 2};
    p.strides = {2, 2};
    p.layout = Layout::kNHWC;
    ValueId pool = g.add_node1(OpKind::kMaxPool, p, {c2}, "pool");
    ValueId m = g.add_node1(OpKind::kReduceMean, ReduceAttrs{{1, 2}, true}, {pool}, "se.mean");
    ValueId gate = conv(m, 8, 8, 1, 1, Activation::kSigmoid, "se.conv");
    ValueId scaled = g.add_node1(OpKind::kMul, BinaryAttrs{}, {pool, gate}, "se.mul");
    ValueId hs = g.add_node1(OpKind::kHardSigmoid, HardSigmoidAttrs{1.0f / 6.0f, 0.5f}, {scaled}, "hsig");
    ValueId sum = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {hs, pool}, "add");
    ValueId mean = g.add_node1(OpKind::kReduceMean, ReduceAttrs{{1, 2}, true}, {sum}, "gap");
    ValueId flat = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {mean}, "flat");
    ValueId fc = g.add_node1(OpKind::kGemm, GemmAttrs{},
                             {flat, g.add_constant("fc.weight", random_tensor({5, 8}, rng, -1, 1)),
                              g.add_constant("fc.bias", random_tensor({5}, rng, -1, 1))},
                             "logits");
    g.add_output(fc);
  }
};

RangeMap ranges_for(const PreparedGraph& p) {
  // Deterministic, distinct ranges per value (every value: the quantizer must ask only for the
  // observed ones, which MissingRangeIsAnError checks).
  RangeMap m;
  int i = 0;
  std::vector<std::string> names;
  for (const Value& v : p.graph.values())
    if (!v.is_constant()) names.push_back(v.name);
  for (const auto& name : names) {
    m[name] = {-1.0f - 0.1f * static_cast<float>(i % 7), 2.0f + 0.3f * static_cast<float>(i % 5)};
    ++i;
  }
  return m;
}

TEST(QuantMath, ActivationParams) {
  QuantParams p = activation_params({-1.0f, 3.0f});
  ASSERT_EQ(p.scale.size(), 1u);
  EXPECT_FLOAT_EQ(p.scale[0], 4.0f / 255.0f);
  EXPECT_EQ(p.zero_point[0], -64);  // round(-128 + 1 / (4/255)) = round(-64.25)
  // A range not containing 0 is widened to include it: real 0 is exactly representable.
  QuantParams q = activation_params({2.0f, 6.0f});
  EXPECT_FLOAT_EQ(q.scale[0], 6.0f / 255.0f);
  EXPECT_EQ(q.zero_point[0], -128);
  QuantParams z = activation_params({0.0f, 0.0f});
  EXPECT_GT(z.scale[0], 0.0f);
}

TEST(QuantMath, RoundsHalfAwayFromZeroAndSaturates) {
  EXPECT_EQ(quantize_value(2.5f, 1.0f, 0, -128, 127), 3);
  EXPECT_EQ(quantize_value(-2.5f, 1.0f, 0, -128, 127), -3);
  EXPECT_EQ(quantize_value(1000.0f, 1.0f, 0, -128, 127), 127);
  EXPECT_EQ(quantize_value(-1000.0f, 1.0f, 5, -127, 127), -127);
  EXPECT_EQ(quantize_value(NAN, 1.0f, 0, -128, 127), -128);
  EXPECT_FLOAT_EQ(weight_scale(0.0f), 1.0f);
  EXPECT_FLOAT_EQ(weight_scale(12.7f), 0.1f);
}

TEST(Prepare, DecomposesActivationsAndKeepsNames) {
  Net net;
  PreparedGraph p = prepare_for_int8(net.g);
  const Graph& g = p.graph;
  EXPECT_EQ(count_op(g, OpKind::kSilu), 0);
  EXPECT_EQ(count_op(g, OpKind::kHardSigmoid), 0);
  // conv1: Conv without activation, then Sigmoid and Mul; "conv1" names the SiLU's result.
  const Node& silu = producer(g, "conv1");
  EXPECT_EQ(silu.op, OpKind::kMul);
  const Node& pre = producer(g, "conv1/pre_activation");
  EXPECT_EQ(pre.op, OpKind::kConv);
  EXPECT_EQ(pre.attr<ConvAttrs>().activation, Activation::kNone);
  EXPECT_EQ(producer(g, "conv1/sigmoid").op, OpKind::kSigmoid);
  // ReLU6 stays fused.
  EXPECT_EQ(producer(g, "dw").attr<ConvAttrs>().activation, Activation::kRelu6);
  // se.conv: fused sigmoid split off.
  EXPECT_EQ(producer(g, "se.conv").op, OpKind::kSigmoid);
  // HardSigmoid(1/6, 1/2) = Add(x, 3) with ReLU6, then Mul(1/6).
  const Node& hs = producer(g, "hsig");
  EXPECT_EQ(hs.op, OpKind::kMul);
  const Node& relu6 = producer(g, "hsig/relu6");
  EXPECT_EQ(relu6.op, OpKind::kAdd);
  EXPECT_EQ(relu6.attr<BinaryAttrs>().activation, Activation::kRelu6);
  EXPECT_FLOAT_EQ(g.value(relu6.inputs[1]).constant.data<float>()[0], 3.0f);
  EXPECT_FLOAT_EQ(g.value(hs.inputs[1]).constant.data<float>()[0], 1.0f / 6.0f);
  // Every value with params of its own is observed, the input too; sigmoid outputs (fixed
  // params) and pool/flatten outputs (their input's) are not.
  size_t own = 0;
  for (const Node& n : g.nodes()) own += needs_range(n.op);
  EXPECT_EQ(p.observe.size(), own + 1);
  EXPECT_EQ(p.observe[0], "image");
  for (const char* name : {"conv1/pre_activation", "conv1", "dw", "se.mean", "se.mul", "hsig/relu6", "hsig", "add", "gap", "logits"})
    EXPECT_NE(std::find(p.observe.begin(), p.observe.end(), name), p.observe.end()) << name;
  for (const char* name : {"conv1/sigmoid", "se.conv", "pool", "flat"})
    EXPECT_EQ(std::find(p.observe.begin(), p.observe.end(), name), p.observe.end()) << name;
  EXPECT_EQ(g.value(g.outputs()[0]).name, "logits");
}

TEST(Prepare, RefusesOpsWithoutInt8Form) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, {Dim::fixed(1), Dim::fixed(4)});
  g.add_output(g.add_node1(OpKind::kTanh, NoAttrs{}, {x}, "t"));
  try {
    prepare_for_int8(g);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_EQ(e.location().node, "t");
  }
}

TEST(Quantize, FollowsTheInt8Contract) {
  Net net;
  PreparedGraph p = prepare_for_int8(net.g);
  RangeMap r = ranges_for(p);
  Graph q = quantize_int8(p.graph, r);
  verify(q);
  // Graph input and output int8 with the calibrated params.
  const Value& in = q.value(q.inputs()[0]);
  EXPECT_EQ(in.name, "image");
  EXPECT_EQ(in.dtype, DType::kInt8);
  EXPECT_EQ(*in.quant, activation_params(r["image"]));
  const Value& out = q.value(q.outputs()[0]);
  EXPECT_EQ(out.name, "logits");
  EXPECT_EQ(out.dtype, DType::kInt8);
  EXPECT_EQ(*out.quant, activation_params(r["logits"]));

  // Every non-constant value is int8 with per-tensor params and keeps its float name.
  for (const std::string& name : p.observe) {
    const Value& v = by_name(q, name);
    EXPECT_EQ(v.dtype, DType::kInt8) << name;
    ASSERT_TRUE(v.quant) << name;
    EXPECT_FALSE(v.quant->per_channel()) << name;
    EXPECT_GE(v.quant->zero_point[0], -128);
    EXPECT_LE(v.quant->zero_point[0], 127);
  }

  // conv1: per-channel symmetric weights, int32 bias at input_scale * weight_scale.
  const Node& conv = producer(q, "conv1/pre_activation");
  const Value& w = q.value(conv.inputs[1]);
  const Value& b = q.value(conv.inputs[2]);
  const Value& x = q.value(conv.inputs[0]);
  const Tensor& wf = net.g.value(*net.g.find_value("conv1.weight")).constant;
  const Tensor& bf = net.g.value(*net.g.find_value("conv1.bias")).constant;
  ASSERT_EQ(w.dtype, DType::kInt8);
  ASSERT_EQ(w.quant->scale.size(), 8u);
  EXPECT_EQ(w.quant->axis, 0);
  const int64_t per = wf.numel() / 8;
  for (int64_t o = 0; o < 8; ++o) {
    float amax = 0;
    for (int64_t i = 0; i < per; ++i) amax = std::max(amax, std::abs(wf.data<float>()[o * per + i]));
    const float sw = w.quant->scale[static_cast<size_t>(o)];
    EXPECT_FLOAT_EQ(sw, amax / 127.0f);
    EXPECT_EQ(w.quant->zero_point[static_cast<size_t>(o)], 0);
    int8_t qmax = 0;
    for (int64_t i = 0; i < per; ++i) {
      int8_t v = w.constant.data<int8_t>()[o * per + i];
      EXPECT_GE(v, -127);
      qmax = std::max<int8_t>(qmax, static_cast<int8_t>(std::abs(v)));
      EXPECT_NEAR(v * sw, wf.data<float>()[o * per + i], sw / 2 + 1e-7);
    }
    EXPECT_EQ(qmax, 127);  // the largest weight maps to the last level
    ASSERT_EQ(b.dtype, DType::kInt32);
    const float sb = b.quant->scale[static_cast<size_t>(o)];
    EXPECT_FLOAT_EQ(sb, x.quant->scale[0] * sw);
    EXPECT_EQ(b.constant.data<int32_t>()[o], static_cast<int32_t>(std::round(bf.data<float>()[o] / sb)));
  }

  // The depthwise conv had no bias: a zero int32 one is made; ReLU6 stays fused.
  const Node& dw = producer(q, "dw");
  ASSERT_EQ(dw.inputs.size(), 3u);
  EXPECT_EQ(q.value(dw.inputs[2]).dtype, DType::kInt32);
  EXPECT_EQ(dw.attr<ConvAttrs>().activation, Activation::kRelu6);

  // Gemm: per-tensor weights.
  const Node& fc = producer(q, "logits");
  EXPECT_EQ(q.value(fc.inputs[1]).quant->scale.size(), 1u);
  EXPECT_EQ(q.value(fc.inputs[2]).quant->scale.size(), 1u);

  // Max pool and flatten share their input's params; sigmoid has the fixed ones.
  EXPECT_EQ(*by_name(q, "pool").quant, *by_name(q, "dw").quant);
  EXPECT_EQ(*by_name(q, "flat").quant, *by_name(q, "gap").quant);
  EXPECT_EQ(*by_name(q, "se.conv").quant, (QuantParams{{1.0f / 256.0f}, {-128}, 0}));
  EXPECT_EQ(*by_name(q, "conv1/sigmoid").quant, (QuantParams{{1.0f / 256.0f}, {-128}, 0}));
  // Free ops take their calibrated params.
  EXPECT_EQ(*by_name(q, "add").quant, activation_params(r["add"]));
  EXPECT_EQ(*by_name(q, "se.mean").quant, activation_params(r["se.mean"]));

  // HardSigmoid's constants are int8 too.
  const Node& hs = producer(q, "hsig");
  const Value& sixth = q.value(hs.inputs[1]);
  EXPECT_EQ(sixth.dtype, DType::kInt8);
  EXPECT_NEAR((sixth.constant.data<int8_t>()[0] - sixth.quant->zero_point[0]) * sixth.quant->scale[0], 1.0 / 6.0, 1e-3);
}

TEST(Quantize, IoTypes) {
  Net net;
  PreparedGraph p = prepare_for_int8(net.g);
  RangeMap r = ranges_for(p);
  const QuantParams pin = activation_params(r["image"]), pout = activation_params(r["logits"]);

  Graph u = quantize_int8(p.graph, r, {.io_type = IoType::kUInt8});
  const Value& uin = u.value(u.inputs()[0]);
  EXPECT_EQ(uin.dtype, DType::kUInt8);
  EXPECT_EQ(uin.quant->scale, pin.scale);
  EXPECT_EQ(uin.quant->zero_point[0], pin.zero_point[0] + 128);
  const Value& uout = u.value(u.outputs()[0]);
  EXPECT_EQ(uout.dtype, DType::kUInt8);
  EXPECT_EQ(uout.name, "logits");
  EXPECT_EQ(uout.quant->zero_point[0], pout.zero_point[0] + 128);
  EXPECT_EQ(u.node(uout.producer).op, OpKind::kQuantize);
  EXPECT_EQ(count_op(u, OpKind::kQuantize), 2);

  Graph f = quantize_int8(p.graph, r, {.io_type = IoType::kFloat32});
  EXPECT_EQ(f.value(f.inputs()[0]).dtype, DType::kFloat32);
  const Value& fout = f.value(f.outputs()[0]);
  EXPECT_EQ(fout.dtype, DType::kFloat32);
  EXPECT_EQ(f.node(fout.producer).op, OpKind::kDequantize);
  EXPECT_EQ(*by_name(f, "image/int8").quant, pin);
  EXPECT_EQ(*by_name(f, "logits/int8").quant, pout);
}

TEST(Quantize, ObservedRangesSuffice) {
  Net net;
  PreparedGraph p = prepare_for_int8(net.g);
  RangeMap all = ranges_for(p), observed;
  for (const auto& name : p.observe) observed[name] = all[name];
  Graph q = quantize_int8(p.graph, observed);
  EXPECT_EQ(q.value(q.outputs()[0]).dtype, DType::kInt8);
}

TEST(Quantize, MissingRangeIsAnError) {
  Net net;
  PreparedGraph p = prepare_for_int8(net.g);
  RangeMap r = ranges_for(p);
  r.erase("add");
  try {
    quantize_int8(p.graph, r);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.location().tensor, "add");
  }
}

TEST(Quantize, ConcatInputsShareTheOutputParams) {
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, {Dim::fixed(1), Dim::fixed(4)});
  ValueId a = g.add_node1(OpKind::kRelu, NoAttrs{}, {x}, "a");
  ValueId b = g.add_node1(OpKind::kSigmoid, NoAttrs{}, {x}, "b");
  ValueId c = g.add_node1(OpKind::kConcat, AxisAttrs{1}, {a, b}, "c");
  g.add_output(c);
  PreparedGraph p = prepare_for_int8(g);
  RangeMap r{{"x", {-2, 2}}, {"a", {0, 2}}, {"b", {0, 1}}, {"c", {0, 2}}};
  Graph q = quantize_int8(p.graph, r);
  const Node& cat = producer(q, "c");
  for (ValueId in : cat.inputs) EXPECT_EQ(*q.value(in).quant, *by_name(q, "c").quant);
  // "a" already has the output's params; the sigmoid's fixed ones are requantized.
  EXPECT_EQ(count_op(q, OpKind::kQuantize), 1);
}

}  // namespace
}  // namespace modex::quant
