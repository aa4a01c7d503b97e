// Hand-built NHWC IR graphs (the form convert_to_nhwc produces) exercising every TFLite emitter and
// padding path. Shared by the gtests (structure, round trips) and tflite_testgen (which writes them
// for the LiteRT numerics in tests/oracle/test_tflite_ops.py), so both test the same models.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"

namespace modex::test {

// A small, deterministic weight generator (no <random>: identical values on every platform).
class WeightGen {
 public:
  explicit WeightGen(uint32_t seed) : state_(seed * 2654435761u + 1) {}
  float next() {  // uniform in [-1, 1)
    state_ = state_ * 1664525u + 1013904223u;
    return static_cast<float>(state_ >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }

 private:
  uint32_t state_;
};

class NhwcBuilder {
 public:
  explicit NhwcBuilder(uint32_t seed = 1) : gen_(seed) {}

  ir::Graph& graph() { return g_; }

  ir::ValueId input(Dims dims, bool dynamic_batch = false, const std::string& name = "image") {
    ir::Shape s = ir::static_shape(dims);
    if (dynamic_batch) s[0] = ir::Dim::named("batch");
    return g_.add_input(name, DType::kFloat32, s);
  }

  ir::ValueId constant(const std::string& name, Dims dims, float scale = 0.5f,
                       float offset = 0.0f) {
    std::vector<float> v(static_cast<size_t>(checked_numel(dims)));
    for (float& x : v) x = offset + scale * gen_.next();
    return g_.add_constant(name, Tensor::from_floats(dims, v));
  }

  // pads: [top, left, bottom, right]
  ir::ValueId conv(ir::ValueId x, int64_t out_channels, int64_t k, int64_t stride,
                   std::vector<int64_t> pads, int64_t dilation = 1, int64_t groups = 1,
                   ir::Activation act = ir::Activation::kNone, bool bias = true,
                   const std::string& name = "conv") {
    int64_t in_channels = g_.value(x).shape[3].value;
    ir::ConvAttrs a;
    a.kernel = {k, k};
    a.strides = {stride, stride};
    a.pads = std::move(pads);
    a.dilations = {dilation, dilation};
    a.groups = groups;
    a.activation = act;
    a.layout = ir::Layout::kNHWC;
    float scale = 1.0f / std::sqrt(static_cast<float>(k * k * in_channels / groups));
    std::vector<ir::ValueId> ins{
        x, constant(name + ".weight", {out_channels, k, k, in_channels / groups}, scale)};
    if (bias) ins.push_back(constant(name + ".bias", {out_channels}, 0.1f));
    return g_.add_node1(ir::OpKind::kConv, a, ins, name);
  }

  ir::ValueId pool(ir::OpKind op, ir::ValueId x, int64_t k, int64_t stride,
                   std::vector<int64_t> pads, bool ceil_mode = false,
                   bool count_include_pad = false, const std::string& name = "pool") {
    ir::PoolAttrs a;
    a.kernel = {k, k};
    a.strides = {stride, stride};
    a.pads = std::move(pads);
    a.ceil_mode = ceil_mode;
    a.count_include_pad = count_include_pad;
    a.layout = ir::Layout::kNHWC;
    return g_.add_node1(op, a, {x}, name);
  }

  // in_features: when the input's feature dim is not known statically (a Reshape to [0, -1] of a
  // dynamic-batch tensor).
  ir::ValueId gemm(ir::ValueId x, int64_t out_features, ir::Activation act = ir::Activation::kNone,
                   bool bias = true, const std::string& name = "fc", int64_t in_features = -1) {
    if (in_features < 0) in_features = g_.value(x).shape[1].value;
    std::vector<ir::ValueId> ins{x, constant(name + ".weight", {out_features, in_features},
                                             1.0f / std::sqrt(static_cast<float>(in_features)))};
    if (bias) ins.push_back(constant(name + ".bias", {out_features}, 0.1f));
    return g_.add_node1(ir::OpKind::kGemm, ir::GemmAttrs{act}, ins, name);
  }

  ir::ValueId op(ir::OpKind kind, ir::OpAttrs attrs, std::vector<ir::ValueId> inputs,
                 const std::string& name) {
    return g_.add_node1(kind, std::move(attrs), std::move(inputs), name);
  }

  ir::Graph finish(ir::ValueId out, const std::string& name = "logits") {
    g_.add_output(out);
    g_.set_output_name(out, name);
    return std::move(g_);
  }

 private:
  ir::Graph g_;
  WeightGen gen_;
};

struct TfliteCase {
  std::string name;
  ir::Graph graph;
  // TFLite ops the written model must contain, by name, with their counts (others may appear).
  std::map<std::string, int> expect_ops;
  // Also written with float16 weights.
  bool fp16 = false;
};

// Every case: one IR graph per emitter path. Inputs are [1, H, W, C] float32 named "image".
inline std::vector<TfliteCase> tflite_cases() {
  using ir::Activation;
  using ir::OpKind;
  std::vector<TfliteCase> cases;
  auto add = [&](std::string name, ir::Graph g, std::map<std::string, int> ops, bool fp16 = false) {
    cases.push_back({std::move(name), std::move(g), std::move(ops), fp16});
  };

  {  // stride-2 3x3 pad 1 on an odd input: exactly SAME
    NhwcBuilder b(1);
    auto x = b.input({1, 9, 9, 3});
    add("conv_same", b.finish(b.conv(x, 4, 3, 2, {1, 1, 1, 1}, 1, 1, Activation::kRelu)),
        {{"CONV_2D", 1}}, true);
  }
  {  // the same conv on an even input is not SAME (SAME would pad 0 before, 1 after): PAD + VALID
    NhwcBuilder b(2);
    auto x = b.input({1, 8, 8, 3});
    add("conv_explicit_pad", b.finish(b.conv(x, 4, 3, 2, {1, 1, 1, 1}, 1, 1, Activation::kRelu6)),
        {{"CONV_2D", 1}, {"PAD", 1}});
  }
  {  // no padding, no bias (TFLite gets a zero bias)
    NhwcBuilder b(3);
    auto x = b.input({1, 8, 7, 3});
    add("conv_valid_nobias",
        b.finish(b.conv(x, 5, 3, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, false)),
        {{"CONV_2D", 1}});
  }
  {  // asymmetric pads only on one side: explicit
    NhwcBuilder b(4);
    auto x = b.input({1, 7, 7, 2});
    add("conv_asymmetric_pad", b.finish(b.conv(x, 3, 2, 1, {0, 1, 1, 0})),
        {{"CONV_2D", 1}, {"PAD", 1}});
  }
  {  // dilation 2, pad 2: SAME
    NhwcBuilder b(5);
    auto x = b.input({1, 8, 8, 3});
    add("conv_dilated", b.finish(b.conv(x, 4, 3, 1, {2, 2, 2, 2}, 2)), {{"CONV_2D", 1}});
  }
  {  // depthwise with multiplier 2 and a hard-swish that TFLite cannot fuse
    NhwcBuilder b(6);
    auto x = b.input({1, 8, 8, 6});
    add("depthwise_hardswish",
        b.finish(b.conv(x, 12, 3, 1, {1, 1, 1, 1}, 1, 6, Activation::kHardSwish)),
        {{"DEPTHWISE_CONV_2D", 1}, {"HARD_SWISH", 1}}, true);
  }
  {  // depthwise stride 2 on an even input: explicit pad
    NhwcBuilder b(7);
    auto x = b.input({1, 8, 8, 4});
    add("depthwise_stride2", b.finish(b.conv(x, 4, 3, 2, {1, 1, 1, 1}, 1, 4, Activation::kRelu6)),
        {{"DEPTHWISE_CONV_2D", 1}, {"PAD", 1}});
  }
  {  // grouped (ResNeXt-like): groups 2, 4 input channels per group
    NhwcBuilder b(8);
    auto x = b.input({1, 6, 6, 8});
    add("grouped_conv", b.finish(b.conv(x, 6, 3, 1, {1, 1, 1, 1}, 1, 2, Activation::kRelu)), {},
        true);
  }
  {  // ResNeXt's shape of grouping: 32 groups of 4 channels, stride 2 (explicit pad)
    NhwcBuilder b(31);
    auto x = b.input({1, 8, 8, 128});
    add("grouped_conv_32", b.finish(b.conv(x, 128, 3, 2, {1, 1, 1, 1}, 1, 32, Activation::kRelu)),
        {{"CONV_2D", 1}, {"PAD", 1}}, true);
  }
  {  // max pool stride 2 pad 1 on an odd input: SAME
    NhwcBuilder b(9);
    auto x = b.input({1, 9, 9, 3});
    add("maxpool_same", b.finish(b.pool(OpKind::kMaxPool, x, 3, 2, {1, 1, 1, 1})),
        {{"MAX_POOL_2D", 1}});
  }
  {  // ... on an even input with possibly negative values: PADV2 with -FLT_MAX
    NhwcBuilder b(10);
    auto x = b.input({1, 8, 8, 3});
    add("maxpool_explicit", b.finish(b.pool(OpKind::kMaxPool, x, 3, 2, {1, 1, 1, 1})),
        {{"MAX_POOL_2D", 1}, {"PADV2", 1}});
  }
  {  // ... after a ReLU (ResNet's stem): zeros cannot win, so PAD
    NhwcBuilder b(11);
    auto x = b.input({1, 8, 8, 3});
    auto c = b.conv(x, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu);
    add("maxpool_after_relu", b.finish(b.pool(OpKind::kMaxPool, c, 3, 2, {1, 1, 1, 1})),
        {{"MAX_POOL_2D", 1}, {"PAD", 1}, {"CONV_2D", 1}});
  }
  {  // ceil_mode whose overhang SAME reproduces
    NhwcBuilder b(12);
    auto x = b.input({1, 8, 8, 3});
    add("maxpool_ceil", b.finish(b.pool(OpKind::kMaxPool, x, 3, 2, {0, 0, 0, 0}, true)),
        {{"MAX_POOL_2D", 1}});
  }
  {  // ceil_mode whose overhang (2 after) SAME does not reproduce (it would pad 1 before, 1 after)
    NhwcBuilder b(13);
    auto x = b.input({1, 7, 7, 2});
    add("maxpool_ceil_explicit", b.finish(b.pool(OpKind::kMaxPool, x, 3, 3, {0, 0, 0, 0}, true)),
        {{"MAX_POOL_2D", 1}, {"PADV2", 1}});
  }
  {  // average pool excluding pads: SAME
    NhwcBuilder b(14);
    auto x = b.input({1, 6, 6, 3});
    add("avgpool_same", b.finish(b.pool(OpKind::kAveragePool, x, 3, 1, {1, 1, 1, 1})),
        {{"AVERAGE_POOL_2D", 1}});
  }
  {  // counting pads (count_include_pad): zeros padded explicitly, then VALID
    NhwcBuilder b(15);
    auto x = b.input({1, 6, 6, 3});
    add("avgpool_count_pad",
        b.finish(b.pool(OpKind::kAveragePool, x, 3, 1, {1, 1, 1, 1}, false, true)),
        {{"AVERAGE_POOL_2D", 1}, {"PAD", 1}});
  }
  {
    NhwcBuilder b(16);
    auto x = b.input({1, 8, 8, 3});
    add("avgpool_valid", b.finish(b.pool(OpKind::kAveragePool, x, 2, 2, {0, 0, 0, 0})),
        {{"AVERAGE_POOL_2D", 1}});
  }
  {  // classifier head: global mean -> flatten -> fc -> softmax
    NhwcBuilder b(17);
    auto x = b.input({1, 4, 4, 8});
    auto m = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {x}, "pool");
    auto f = b.op(OpKind::kFlatten, ir::FlattenAttrs{1}, {m}, "flatten");
    auto fc = b.gemm(f, 10);
    add("head_softmax", b.finish(b.op(OpKind::kSoftmax, ir::AxisAttrs{1}, {fc}, "softmax")),
        {{"MEAN", 1}, {"RESHAPE", 1}, {"FULLY_CONNECTED", 1}, {"SOFTMAX", 1}}, true);
  }
  {  // the same with a dynamic batch: shape [1,...], shape_signature [-1,...]
    NhwcBuilder b(18);
    auto x = b.input({1, 4, 4, 8}, true);
    auto m = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {x}, "pool");
    auto f = b.op(OpKind::kReshape, ir::ReshapeAttrs{{0, -1}}, {m}, "flatten");
    add("head_dynamic_batch", b.finish(b.gemm(f, 5, Activation::kRelu, true, "fc", 8)),
        {{"MEAN", 1}, {"RESHAPE", 1}, {"FULLY_CONNECTED", 1}});
  }
  {  // squeeze-and-excitation: x * sigmoid(fc(relu(fc(mean(x))))) broadcast over H, W
    NhwcBuilder b(19);
    auto x = b.input({1, 6, 6, 8});
    auto m = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {x}, "se.pool");
    auto r = b.conv(m, 2, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kRelu, true, "se.reduce");
    auto s = b.conv(r, 8, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kSigmoid, true, "se.expand");
    add("se_block", b.finish(b.op(OpKind::kMul, ir::BinaryAttrs{}, {x, s}, "se.scale")),
        {{"MEAN", 1}, {"CONV_2D", 2}, {"LOGISTIC", 1}, {"MUL", 1}}, true);
  }
  {  // SiLU fused into a convolution (EfficientNet): LOGISTIC + MUL after the conv
    NhwcBuilder b(20);
    auto x = b.input({1, 6, 6, 3});
    add("conv_silu", b.finish(b.conv(x, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kSilu)),
        {{"CONV_2D", 1}, {"LOGISTIC", 1}, {"MUL", 1}});
  }
  // Element-wise activations, one per case, on a [1,4,4,3] input.
  struct Unary {
    const char* name;
    OpKind op;
    ir::OpAttrs attrs;
    std::map<std::string, int> ops;
  };
  const Unary unaries[] = {
      {"relu", OpKind::kRelu, ir::NoAttrs{}, {{"RELU", 1}}},
      {"relu6", OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}, {{"RELU6", 1}}},
      {"clip_n1_1", OpKind::kClip, ir::ClipAttrs{-1.0f, 1.0f}, {{"RELU_N1_TO_1", 1}}},
      {"clip_general",
       OpKind::kClip,
       ir::ClipAttrs{-0.5f, 0.75f},
       {{"MINIMUM", 1}, {"MAXIMUM", 1}}},
      {"sigmoid", OpKind::kSigmoid, ir::NoAttrs{}, {{"LOGISTIC", 1}}},
      {"tanh", OpKind::kTanh, ir::NoAttrs{}, {{"TANH", 1}}},
      {"hardswish", OpKind::kHardSwish, ir::NoAttrs{}, {{"HARD_SWISH", 1}}},
      {"hardsigmoid",
       OpKind::kHardSigmoid,
       ir::HardSigmoidAttrs{1.0f / 6.0f, 0.5f},
       {{"ADD", 1}, {"MUL", 1}}},
      {"hardsigmoid_general",
       OpKind::kHardSigmoid,
       ir::HardSigmoidAttrs{0.2f, 0.5f},
       {{"MUL", 1}, {"ADD", 1}, {"MINIMUM", 1}}},
      {"silu", OpKind::kSilu, ir::NoAttrs{}, {{"LOGISTIC", 1}, {"MUL", 1}}},
      {"leaky_relu", OpKind::kLeakyRelu, ir::LeakyReluAttrs{0.1f}, {{"LEAKY_RELU", 1}}},
  };
  for (const Unary& u : unaries) {
    NhwcBuilder b(21);
    auto x = b.input({1, 4, 4, 3});
    add(std::string("unary_") + u.name, b.finish(b.op(u.op, u.attrs, {x}, u.name)), u.ops);
  }
  {
    NhwcBuilder b(22);
    auto x = b.input({1, 4, 4, 3});
    auto slope = b.constant("prelu.slope", {1, 1, 1, 3}, 0.3f, 0.2f);
    add("prelu", b.finish(b.op(OpKind::kPRelu, ir::NoAttrs{}, {x, slope}, "prelu")),
        {{"PRELU", 1}});
  }
  {  // binary ops with numpy broadcasting against constants, and a fused ReLU
    NhwcBuilder b(23);
    auto x = b.input({1, 4, 4, 3});
    auto a = b.op(OpKind::kAdd, ir::BinaryAttrs{}, {x, b.constant("shift", {3})}, "add");
    auto s = b.op(OpKind::kSub, ir::BinaryAttrs{}, {b.constant("base", {1, 4, 1, 3}), a}, "sub");
    auto m = b.op(OpKind::kMul, ir::BinaryAttrs{Activation::kRelu},
                  {s, b.constant("scale", {1, 1, 4, 1})}, "mul");
    auto d = b.op(OpKind::kDiv, ir::BinaryAttrs{},
                  {m, b.constant("divisor", {1, 1, 1, 3}, 0.5f, 1.5f)}, "div");
    add("binary_broadcast", b.finish(d), {{"ADD", 1}, {"SUB", 1}, {"MUL", 1}, {"DIV", 1}}, true);
  }
  {  // residual block: two convs, add with fused ReLU6
    NhwcBuilder b(24);
    auto x = b.input({1, 6, 6, 4});
    auto c1 = b.conv(x, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, "c1");
    auto c2 = b.conv(c1, 4, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, "c2");
    add("residual_add",
        b.finish(b.op(OpKind::kAdd, ir::BinaryAttrs{Activation::kRelu6}, {c2, x}, "add")),
        {{"CONV_2D", 2}, {"ADD", 1}});
  }
  {  // channel concat of two branches
    NhwcBuilder b(25);
    auto x = b.input({1, 5, 5, 3});
    auto c1 = b.conv(x, 2, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, "branch1");
    auto c2 = b.conv(x, 3, 3, 1, {1, 1, 1, 1}, 1, 1, Activation::kNone, true, "branch2");
    add("concat_channels", b.finish(b.op(OpKind::kConcat, ir::AxisAttrs{-1}, {c1, c2}, "concat")),
        {{"CONCATENATION", 1}});
  }
  {  // explicit Pad nodes: zeros (PAD) and a constant (PADV2)
    NhwcBuilder b(26);
    auto x = b.input({1, 4, 5, 2});
    auto p = b.op(OpKind::kPad, ir::PadAttrs{{0, 1, 2, 0, 0, 2, 1, 0}, 0.0f}, {x}, "pad0");
    add("pad_ops",
        b.finish(b.op(OpKind::kPad, ir::PadAttrs{{0, 1, 0, 1, 0, 0, 1, 0}, 1.5f}, {p}, "pad1")),
        {{"PAD", 1}, {"PADV2", 1}});
  }
  {  // --nchw-input: one TRANSPOSE at the input
    NhwcBuilder b(27);
    auto x = b.input({1, 3, 6, 6});
    auto t = b.op(OpKind::kTranspose, ir::TransposeAttrs{{0, 2, 3, 1}}, {x}, "image/to_nhwc");
    add("nchw_input", b.finish(b.conv(t, 4, 3, 1, {1, 1, 1, 1})),
        {{"TRANSPOSE", 1}, {"CONV_2D", 1}});
  }
  {  // MatMul with a constant right side (FULLY_CONNECTED keep_num_dims) and with two activations
    NhwcBuilder b(28);
    auto x = b.input({1, 2, 3, 5});
    auto fc = b.op(OpKind::kMatMul, ir::NoAttrs{}, {x, b.constant("proj", {5, 4})}, "proj");
    auto r = b.op(OpKind::kReshape, ir::ReshapeAttrs{{1, 6, 4}}, {fc}, "rows");
    auto t = b.op(OpKind::kTranspose, ir::TransposeAttrs{{0, 2, 1}}, {r}, "cols");
    add("matmul", b.finish(b.op(OpKind::kMatMul, ir::NoAttrs{}, {r, t}, "gram")),
        {{"FULLY_CONNECTED", 1}, {"BATCH_MATMUL", 1}, {"TRANSPOSE", 1}});
  }
  {  // Gemm without bias (bias operand omitted), Squeeze / Unsqueeze as RESHAPE
    NhwcBuilder b(29);
    auto x = b.input({1, 1, 1, 6});
    auto s = b.op(OpKind::kSqueeze, ir::AxesAttrs{{1, 2}}, {x}, "squeeze");
    auto fc = b.gemm(s, 4, Activation::kNone, false);
    add("gemm_nobias", b.finish(b.op(OpKind::kUnsqueeze, ir::AxesAttrs{{1}}, {fc}, "unsqueeze")),
        {{"FULLY_CONNECTED", 1}, {"RESHAPE", 2}});
  }
  {  // a small CNN with every common block, for float16 as a whole
    NhwcBuilder b(30);
    auto x = b.input({1, 16, 16, 3}, true);
    auto stem = b.conv(x, 8, 3, 2, {1, 1, 1, 1}, 1, 1, Activation::kRelu, true, "stem");
    auto mp = b.pool(OpKind::kMaxPool, stem, 3, 2, {1, 1, 1, 1}, false, false, "maxpool");
    auto dw = b.conv(mp, 8, 3, 1, {1, 1, 1, 1}, 1, 8, Activation::kRelu6, true, "dw");
    auto m = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {dw}, "se.pool");
    auto r = b.conv(m, 4, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kSilu, true, "se.reduce");
    auto e = b.conv(r, 8, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kSigmoid, true, "se.expand");
    auto se = b.op(OpKind::kMul, ir::BinaryAttrs{}, {dw, e}, "se.scale");
    auto pw = b.conv(se, 8, 1, 1, {0, 0, 0, 0}, 1, 1, Activation::kNone, true, "pw");
    auto res = b.op(OpKind::kAdd, ir::BinaryAttrs{}, {pw, mp}, "residual");
    auto hs = b.op(OpKind::kHardSwish, ir::NoAttrs{}, {res}, "hardswish");
    auto gap = b.op(OpKind::kReduceMean, ir::ReduceAttrs{{1, 2}, true}, {hs}, "gap");
    auto f = b.op(OpKind::kFlatten, ir::FlattenAttrs{1}, {gap}, "flatten");
    add("tiny_cnn", b.finish(b.gemm(f, 10)),
        {{"CONV_2D", 4}, {"DEPTHWISE_CONV_2D", 1}, {"MAX_POOL_2D", 1}}, true);
  }
  return cases;
}

}  // namespace modex::test
