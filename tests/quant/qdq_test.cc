#include "quant/qdq.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <map>
#include <random>

#include "io/onnx/onnx_reader.h"
#include "io/onnx/onnx_writer.h"
#include "passes/passes.h"

namespace modex::quant {
namespace {
using namespace modex::ir;

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

// image -> Conv(+bias, fused ReLU) -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm -> logits.
Graph small_net(std::mt19937& rng) {
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32,
                          Shape{Dim::named("batch"), Dim::fixed(3), Dim::fixed(8), Dim::fixed(8)});
  ConvAttrs ca;
  ca.kernel = {3, 3};
  ca.pads = {1, 1, 1, 1};
  ca.activation = Activation::kRelu;
  ValueId c = g.add_node1(OpKind::kConv, ca,
                          {x, g.add_constant("conv.weight", random_tensor({4, 3, 3, 3}, rng)),
                           g.add_constant("conv.bias", random_tensor({4}, rng))},
                          "conv");
  PoolAttrs pa;
  pa.kernel = {2, 2};
  pa.strides = {2, 2};
  ValueId p = g.add_node1(OpKind::kMaxPool, pa, {c}, "pool");
  ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {p}, "gap");
  ValueId f = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId y = g.add_node1(OpKind::kGemm, GemmAttrs{},
                          {f, g.add_constant("fc.weight", random_tensor({5, 4}, rng)),
                           g.add_constant("fc.bias", random_tensor({5}, rng))},
                          "fc");
  g.set_output_name(y, "logits");
  g.add_output(y);
  return g;
}

QdqOptions with_outputs() {
  QdqOptions o{13};
  o.quantize_outputs = true;
  return o;
}

RangeMap small_net_ranges() {
  return {{"image", {-2.0f, 2.5f}},
          {"conv", {0.0f, 3.0f}},
          {"gap", {0.0f, 1.5f}},
          {"logits", {-4.0f, 6.0f}}};
}

std::map<std::string, int> op_counts(const Graph& g) {
  std::map<std::string, int> m;
  for (const Node& n : g.nodes())
    if (!n.dead) m[std::string(op_name(n.op))]++;
  return m;
}

const Node& producer(const Graph& g, const std::string& value) {
  auto id = g.find_value(value);
  EXPECT_TRUE(id.has_value()) << value;
  return g.node(g.value(*id).producer);
}

TEST(QdqParams, ActivationRangeIncludesZeroExactly) {
  QuantParams p = activation_params({-1.0f, 2.0f});
  ASSERT_EQ(p.scale.size(), 1u);
  EXPECT_FLOAT_EQ(p.scale[0], 3.0f / 255.0f);
  EXPECT_EQ(p.zero_point[0], -43);  // round(-128 + 1 / (3/255)) = round(-43)
  // Both ends are representable within half a step.
  EXPECT_NEAR((-128 - p.zero_point[0]) * p.scale[0], -1.0, p.scale[0] / 2);
  EXPECT_NEAR((127 - p.zero_point[0]) * p.scale[0], 2.0, p.scale[0] / 2);

  QuantParams pos = activation_params({0.5f, 2.0f});  // widened to [0, 2]
  EXPECT_FLOAT_EQ(pos.scale[0], 2.0f / 255.0f);
  EXPECT_EQ(pos.zero_point[0], -128);
  QuantParams neg = activation_params({-3.0f, -1.0f});  // widened to [-3, 0]
  EXPECT_EQ(neg.zero_point[0], 127);
  QuantParams zero = activation_params({0.0f, 0.0f});
  EXPECT_EQ(zero.scale[0], 1.0f);
  EXPECT_EQ(zero.zero_point[0], 0);
}

TEST(QdqParams, WeightsSymmetricPerChannelRoundHalfAwayFromZero) {
  Tensor w = Tensor::from_floats({3, 2}, std::vector<float>{1.0f, -0.5f, 0.25f, 0.0f, 0.0f, 0.0f});
  QuantParams p;
  Tensor q = quantize_weight_symmetric(w, true, p);
  ASSERT_EQ(q.dtype(), DType::kInt8);
  ASSERT_EQ(p.scale.size(), 3u);
  EXPECT_FLOAT_EQ(p.scale[0], 1.0f / 127.0f);
  EXPECT_FLOAT_EQ(p.scale[1], 0.25f / 127.0f);
  EXPECT_EQ(p.scale[2], 1.0f);  // an all-zero channel
  EXPECT_EQ(p.zero_point, (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(p.axis, 0);
  const int8_t* v = q.data<int8_t>();
  EXPECT_EQ(v[0], 127);
  EXPECT_EQ(v[1], -64);  // -63.5 rounds away from zero
  EXPECT_EQ(v[2], 127);
  EXPECT_EQ(v[3], 0);

  QuantParams t;
  Tensor qt = quantize_weight_symmetric(w, false, t);
  ASSERT_EQ(t.scale.size(), 1u);
  EXPECT_FLOAT_EQ(t.scale[0], 1.0f / 127.0f);
  EXPECT_EQ(qt.data<int8_t>()[2], 32);  // 0.25 * 127 = 31.75
}

TEST(QdqParams, BiasScaleIsInputTimesWeightScale) {
  QuantParams w;
  w.scale = {0.01f, 0.02f};
  w.zero_point = {0, 0};
  QuantParams p;
  Tensor q = quantize_bias(Tensor::from_floats({2}, std::vector<float>{1.0f, -2.0f}), 0.5f, w, p);
  ASSERT_EQ(q.dtype(), DType::kInt32);
  ASSERT_EQ(p.scale.size(), 2u);
  EXPECT_FLOAT_EQ(p.scale[0], 0.005f);
  EXPECT_FLOAT_EQ(p.scale[1], 0.01f);
  EXPECT_EQ(q.data<int32_t>()[0], 200);
  EXPECT_EQ(q.data<int32_t>()[1], -200);
  // Saturates instead of wrapping.
  QuantParams tiny;
  tiny.scale = {1e-9f};
  tiny.zero_point = {0};
  Tensor big = quantize_bias(Tensor::from_floats({1}, std::vector<float>{1e6f}), 1e-3f, tiny, p);
  EXPECT_EQ(big.data<int32_t>()[0], INT32_MAX);
}

TEST(Qdq, CalibrationValuesSkipPassThroughOps) {
  std::mt19937 rng(1);
  Graph g = small_net(rng);
  EXPECT_EQ(qdq_calibration_values(g),
            (std::vector<std::string>{"image", "conv", "gap", "logits"}));
}

TEST(Qdq, PlacesPairsAfterInputAndEveryOpOutput) {
  std::mt19937 rng(2);
  Graph g = small_net(rng);
  Graph q = to_qdq(g, small_net_ranges(), with_outputs());
  verify(q);
  auto ops = op_counts(q);
  // Activations: image, conv, pool, gap, flatten, logits; weights: 2; biases: 2.
  EXPECT_EQ(ops["Quantize"], 6);
  EXPECT_EQ(ops["Dequantize"], 10);
  EXPECT_EQ(ops["Conv"], 1);
  EXPECT_EQ(ops["Gemm"], 1);
  EXPECT_EQ(ops["MaxPool"], 1);

  // The float ops keep their names; consumers read the Dequantize outputs.
  const Node& conv = producer(q, "conv");
  EXPECT_EQ(conv.op, OpKind::kConv);
  EXPECT_EQ(conv.attr<ConvAttrs>().activation,
            Activation::kRelu);  // the pair follows the activation
  EXPECT_EQ(q.value(conv.inputs[0]).name, "image_DequantizeLinear_Output");
  const Value& in_q = q.value(*q.find_value("image_QuantizeLinear_Output"));
  EXPECT_EQ(in_q.dtype, DType::kInt8);
  EXPECT_EQ(*in_q.quant, activation_params({-2.0f, 2.5f}));

  // Weight: int8 per-channel symmetric; bias: int32 with input_scale * weight_scale.
  const Node& wdq = q.node(q.value(conv.inputs[1]).producer);
  ASSERT_EQ(wdq.op, OpKind::kDequantize);
  const Value& w = q.value(wdq.inputs[0]);
  EXPECT_TRUE(w.is_constant());
  EXPECT_EQ(w.dtype, DType::kInt8);
  ASSERT_TRUE(w.quant);
  EXPECT_EQ(w.quant->scale.size(), 4u);
  EXPECT_EQ(w.quant->axis, 0);
  for (int64_t z : w.quant->zero_point) EXPECT_EQ(z, 0);
  const Node& bdq = q.node(q.value(conv.inputs[2]).producer);
  const Value& b = q.value(bdq.inputs[0]);
  EXPECT_EQ(b.dtype, DType::kInt32);
  ASSERT_EQ(b.quant->scale.size(), 4u);
  for (size_t c = 0; c < 4; ++c)
    EXPECT_FLOAT_EQ(b.quant->scale[c], in_q.quant->scale[0] * w.quant->scale[c]);

  // MaxPool and Flatten pass their input's params through.
  const Value& conv_q = q.value(*q.find_value("conv_QuantizeLinear_Output"));
  EXPECT_EQ(*conv_q.quant, activation_params({0.0f, 3.0f}));
  EXPECT_EQ(*q.value(*q.find_value("pool_QuantizeLinear_Output")).quant, *conv_q.quant);
  EXPECT_EQ(*q.value(*q.find_value("flatten_QuantizeLinear_Output")).quant,
            *q.value(*q.find_value("gap_QuantizeLinear_Output")).quant);

  // The graph output keeps its name, on the last Dequantize.
  ASSERT_EQ(q.outputs().size(), 1u);
  const Value& out = q.value(q.outputs()[0]);
  EXPECT_EQ(out.name, "logits");
  EXPECT_EQ(q.node(out.producer).op, OpKind::kDequantize);
  EXPECT_EQ(producer(q, "logits_QuantizeLinear_Input").op, OpKind::kGemm);
}

TEST(Qdq, AbsorbsReluIntoItsProducerSoThePairFollowsIt) {
  std::mt19937 rng(8);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, static_shape({1, 3, 6, 6}));
  ConvAttrs ca;
  ca.kernel = {3, 3};
  ValueId c = g.add_node1(OpKind::kConv, ca,
                          {x, g.add_constant("w", random_tensor({4, 3, 3, 3}, rng))}, "conv");
  ValueId r = g.add_node1(OpKind::kClip, ClipAttrs{0.0f, 6.0f}, {c}, "relu6");
  ValueId c2 = g.add_node1(OpKind::kConv, ca,
                           {r, g.add_constant("w2", random_tensor({2, 4, 3, 3}, rng))}, "conv2");
  ValueId r2 = g.add_node1(OpKind::kRelu, NoAttrs{}, {c2}, "relu");
  ValueId both =
      g.add_node1(OpKind::kAdd, BinaryAttrs{}, {c2, r2}, "add");  // conv2 has two consumers
  g.add_output(both);
  EXPECT_EQ(qdq_calibration_values(g),
            (std::vector<std::string>{"image", "relu6", "conv2", "relu", "add"}));
  RangeMap ranges{{"image", {-1, 1}},
                  {"relu6", {0, 6}},
                  {"conv2", {-3, 3}},
                  {"relu", {0, 3}},
                  {"add", {-3, 6}}};
  Graph q = to_qdq(g, ranges, with_outputs());
  const Node& fused = producer(q, "relu6");
  EXPECT_EQ(fused.op, OpKind::kConv);
  EXPECT_EQ(fused.attr<ConvAttrs>().activation, Activation::kRelu6);
  EXPECT_FALSE(q.find_value("conv").has_value());
  EXPECT_EQ(q.value(*q.find_value("relu6_QuantizeLinear_Output")).quant->zero_point[0], -128);
  EXPECT_EQ(producer(q, "conv2").attr<ConvAttrs>().activation, Activation::kNone);
  EXPECT_EQ(producer(q, "relu").op, OpKind::kRelu);
  EXPECT_EQ(op_counts(q)["Clip"], 0);
  EXPECT_EQ(op_counts(q)["Quantize"], 5);

  // Ranges calibrated on the fused graph name the fused result after the producer: its range,
  // clamped as ReLU6 clamps, stands in for the activation's.
  ranges.erase("relu6");
  ranges["conv"] = {-2.0f, 7.5f};
  Graph f = to_qdq(g, ranges, with_outputs());
  EXPECT_EQ(*f.value(*f.find_value("relu6_QuantizeLinear_Output")).quant,
            activation_params({0.0f, 6.0f}));
}

TEST(Qdq, OutputsStayFloatByDefault) {
  std::mt19937 rng(3);
  Graph g = small_net(rng);
  Graph q = to_qdq(g, small_net_ranges(), {13});
  EXPECT_EQ(producer(q, "logits").op, OpKind::kGemm);
  EXPECT_EQ(q.value(q.outputs()[0]).name, "logits");
  EXPECT_EQ(op_counts(q)["Quantize"], 5);
}

TEST(Qdq, MissingOrBadRangeNamesTheValue) {
  std::mt19937 rng(4);
  Graph g = small_net(rng);
  RangeMap r = small_net_ranges();
  r.erase("gap");
  try {
    to_qdq(g, r, {13});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gap"), std::string::npos) << e.what();
  }
  r = small_net_ranges();
  r["conv"] = {0.0f, std::nanf("")};
  EXPECT_THROW(to_qdq(g, r, {13}), Error);
  EXPECT_THROW(to_qdq(g, small_net_ranges(), {11}), Error);  // per-channel needs opset 13
  Graph q = to_qdq(g, small_net_ranges(), {13});
  EXPECT_THROW(to_qdq(q, small_net_ranges(), {13}), Error);  // already quantized
}

// Parses what the writer produced.
onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(bytes));
  return m;
}

const onnx::TensorProto* initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

TEST(QdqOnnx, WriterEmitsQuantizeLinearWithParamInitializers) {
  std::mt19937 rng(5);
  Graph q = to_qdq(small_net(rng), small_net_ranges(), with_outputs());
  onnx_io::OnnxWriteOptions wo;
  wo.opset = 13;
  onnx::ModelProto m = parse(onnx_io::to_onnx_bytes(q, wo));
  int quantize = 0, dequantize = 0, per_axis = 0;
  for (const auto& n : m.graph().node()) {
    if (n.op_type() != "QuantizeLinear" && n.op_type() != "DequantizeLinear") continue;
    (n.op_type() == "QuantizeLinear" ? quantize : dequantize)++;
    ASSERT_EQ(n.input_size(), 3);
    const onnx::TensorProto* s = initializer(m, n.input(1));
    const onnx::TensorProto* z = initializer(m, n.input(2));
    ASSERT_TRUE(s && z) << n.name();
    EXPECT_EQ(s->data_type(), onnx::TensorProto::FLOAT);
    bool axis = false;
    for (const auto& a : n.attribute()) axis = axis || a.name() == "axis";
    if (s->dims_size() == 1) {
      ++per_axis;
      EXPECT_TRUE(axis) << n.name();
    } else {
      EXPECT_EQ(s->dims_size(), 0) << "per-tensor scales are scalars";
    }
    if (n.op_type() == "QuantizeLinear") {
      EXPECT_EQ(z->data_type(), onnx::TensorProto::INT8);
    }
  }
  EXPECT_EQ(quantize, 6);
  EXPECT_EQ(dequantize, 10);
  EXPECT_EQ(per_axis, 4);  // conv and fc weights (per channel) and their biases
  const onnx::TensorProto* w = initializer(m, "conv.weight_quantized");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->data_type(), onnx::TensorProto::INT8);
  const onnx::TensorProto* b = initializer(m, "conv.bias_quantized");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->data_type(), onnx::TensorProto::INT32);
  EXPECT_EQ(m.graph().output(0).name(), "logits");
}

TEST(QdqOnnx, WriterRefusesOpsetBelow13AndIntegerOps) {
  std::mt19937 rng(6);
  Graph q = to_qdq(small_net(rng), small_net_ranges(), {13});
  onnx_io::OnnxWriteOptions wo;
  wo.opset = 12;
  try {
    onnx_io::to_onnx_bytes(q, wo);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("opset >= 13"), std::string::npos) << e.what();
  }
  // A float op reading an int8 value directly has no ONNX form.
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({1, 4}));
  ValueId qx = g.add_node1(OpKind::kQuantize, QuantizeAttrs{DType::kInt8}, {x}, "q");
  g.value(qx).quant = QuantParams{{0.1f}, {0}, 0};
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {qx}, "relu");
  g.add_output(r);
  wo.opset = 13;
  EXPECT_THROW(onnx_io::to_onnx_bytes(g, wo), Error);
}

TEST(QdqOnnx, RoundTripKeepsParamsAndFoldsWeights) {
  std::mt19937 rng(7);
  Graph src = small_net(rng);
  Graph q = to_qdq(src, small_net_ranges(), with_outputs());
  Graph kept = q;  // the writer releases constants
  onnx_io::OnnxWriteOptions wo;
  wo.opset = 13;
  std::string bytes = onnx_io::to_onnx_bytes(q, wo);
  Graph back = onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                bytes.size(), "<qdq>");
  verify(back);
  auto ops = op_counts(back);
  EXPECT_EQ(ops["Quantize"], 6);
  EXPECT_EQ(ops["Dequantize"], 10);
  EXPECT_EQ(ops["Gemm"], 1) << "a dequantized weight still imports as Gemm";
  EXPECT_EQ(ops["MatMul"], 0);
  for (const char* name : {"image_QuantizeLinear_Output", "conv_QuantizeLinear_Output",
                           "logits_QuantizeLinear_Output"}) {
    auto a = back.find_value(name), b = kept.find_value(name);
    ASSERT_TRUE(a && b) << name;
    ASSERT_TRUE(back.value(*a).quant) << name;
    EXPECT_EQ(*back.value(*a).quant, *kept.value(*b).quant) << name;
    EXPECT_EQ(back.value(*a).dtype, DType::kInt8);
  }

  // Folding turns every constant Dequantize into the float weight it stands for.
  passes::optimize(back);
  ops = op_counts(back);
  EXPECT_EQ(ops["Dequantize"], 6) << "only the activation pairs remain";
  const Node* conv = nullptr;
  for (const Node& n : back.nodes())
    if (n.op == OpKind::kConv) conv = &n;
  ASSERT_TRUE(conv);
  const Value& w = back.value(conv->inputs[1]);
  ASSERT_TRUE(w.is_constant());
  ASSERT_EQ(w.dtype, DType::kFloat32);
  const Value& wq = kept.value(*kept.find_value("conv.weight_quantized"));
  const Tensor& orig = src.value(*src.find_value("conv.weight")).constant;
  for (int64_t i = 0; i < w.constant.numel(); ++i) {
    size_t c = static_cast<size_t>(i / 27);
    float expect = static_cast<float>(wq.constant.data<int8_t>()[i]) * wq.quant->scale[c];
    EXPECT_EQ(w.constant.data<float>()[i], expect);
    EXPECT_NEAR(w.constant.data<float>()[i], orig.data<float>()[i], wq.quant->scale[c] / 2 + 1e-7);
  }
}

TEST(QdqOnnx, FoldedQdqGraphConvertsToNhwcKeepingParams) {
  // What the engine does with a QDQ file: fold the weight Dequantizes, then go NHWC; the
  // activation pairs follow the layout and keep their params.
  std::mt19937 rng(9);
  Graph q = to_qdq(small_net(rng), small_net_ranges(), with_outputs());
  passes::optimize(q, {.fuse_activations = true});
  passes::convert_to_nhwc(q);
  verify(q);
  auto ops = op_counts(q);
  EXPECT_EQ(ops["Quantize"], 6);
  EXPECT_EQ(ops["Dequantize"], 6);
  EXPECT_EQ(ops["Transpose"], 0);
  const Value& in = q.value(q.inputs()[0]);
  EXPECT_EQ(in.shape[3], Dim::fixed(3)) << "NHWC input";
  const Value& cq = q.value(*q.find_value("conv_QuantizeLinear_Output"));
  EXPECT_EQ(cq.shape[3], Dim::fixed(4));
  ASSERT_TRUE(cq.quant);
  EXPECT_EQ(*cq.quant, activation_params({0.0f, 3.0f}));
}

// x [1, 4] -> QuantizeLinear(x, scale, zp) -> DequantizeLinear -> y, with the scale and zero
// point given as the caller says (initializers or graph inputs).
std::string qdq_model(onnx::TensorProto::DataType zp_type, bool scale_is_input) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("t");
  auto add_io = [](onnx::ValueInfoProto* vi, const std::string& name, int type,
                   std::vector<int64_t> dims) {
    vi->set_name(name);
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(type);
    auto* sh = tt->mutable_shape();
    for (int64_t d : dims) sh->add_dim()->set_dim_value(d);
  };
  add_io(g->add_input(), "x", onnx::TensorProto::FLOAT, {1, 4});
  add_io(g->add_output(), "y", onnx::TensorProto::FLOAT, {1, 4});
  if (scale_is_input) {
    add_io(g->add_input(), "s", onnx::TensorProto::FLOAT, {});
  } else {
    auto* s = g->add_initializer();
    s->set_name("s");
    s->set_data_type(onnx::TensorProto::FLOAT);
    s->add_float_data(0.5f);
  }
  auto* z = g->add_initializer();
  z->set_name("z");
  z->set_data_type(zp_type);
  if (zp_type == onnx::TensorProto::FLOAT)
    z->add_float_data(0.0f);
  else
    z->add_int32_data(3);
  auto* q = g->add_node();
  q->set_op_type("QuantizeLinear");
  q->set_name("q");
  for (const char* i : {"x", "s", "z"}) q->add_input(i);
  q->add_output("xq");
  auto* d = g->add_node();
  d->set_op_type("DequantizeLinear");
  d->set_name("dq");
  for (const char* i : {"xq", "s", "z"}) d->add_input(i);
  d->add_output("y");
  return m.SerializeAsString();
}

Graph import(const std::string& bytes) {
  return onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size(), "<t>");
}

TEST(QdqOnnx, ReaderImportsPairsAndRejectsWhatItCannotRepresent) {
  Graph g = import(qdq_model(onnx::TensorProto::INT8, false));
  const Value& xq = g.value(*g.find_value("xq"));
  EXPECT_EQ(xq.dtype, DType::kInt8);
  EXPECT_EQ(*xq.quant, (QuantParams{{0.5f}, {3}, 0}));
  EXPECT_EQ(producer(g, "y").op, OpKind::kDequantize);
  Graph u = import(qdq_model(onnx::TensorProto::UINT8, false));
  EXPECT_EQ(u.value(*u.find_value("xq")).dtype, DType::kUInt8);
  auto message = [](const std::string& bytes) {
    try {
      import(bytes);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string m = message(qdq_model(onnx::TensorProto::FLOAT, false));
  EXPECT_NE(m.find("zero points of type"), std::string::npos) << m;
  EXPECT_NE(m.find("QuantizeLinear"), std::string::npos) << m;
  m = message(qdq_model(onnx::TensorProto::INT8, true));
  EXPECT_NE(m.find("must be a constant"), std::string::npos) << m;
}

TEST(QdqOnnx, FoldDequantizeHonoursZeroPointAndAxis) {
  Graph g;
  Tensor t = Tensor::zeros(DType::kInt8, {2, 2});
  int8_t vals[] = {-3, 5, 10, -10};
  for (int i = 0; i < 4; ++i) t.data_mutable<int8_t>()[i] = vals[i];
  ValueId c = g.add_constant("w", t);
  g.value(c).quant = QuantParams{{0.5f, 0.25f}, {1, -2}, 0};
  ValueId d = g.add_node1(OpKind::kDequantize, NoAttrs{}, {c}, "dq");
  ValueId x = g.add_input("x", DType::kFloat32, static_shape({2, 2}));
  ValueId y = g.add_node1(OpKind::kAdd, BinaryAttrs{}, {x, d}, "add");
  g.add_output(y);
  ASSERT_TRUE(passes::fold_constants(g));
  const Value& f = g.value(producer(g, "add").inputs[1]);
  ASSERT_TRUE(f.is_constant());
  EXPECT_EQ(f.constant.to_float_vector(), (std::vector<float>{-2.0f, 2.0f, 3.0f, -2.0f}));
}

}  // namespace
}  // namespace modex::quant
