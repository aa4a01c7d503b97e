// Write -> read -> compare: the reader inverts the writer. Every case is a fixed point (writing
// the graph read back gives the same model); graphs the writer maps one to one come back equal,
// constants bit-exact; lowered forms come back as their documented equivalents.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <sstream>

#include "../runtime/int8_test_graphs.h"
#include "core/half.h"
#include "tflite_test_graphs.h"
#include "tflite_test_util.h"

namespace modex::tflite_io {
namespace {

using ir::OpKind;

std::map<std::string, test::TfliteCase> all_cases() {
  std::map<std::string, test::TfliteCase> m;
  for (auto& c : test::tflite_cases()) m.emplace(c.name, std::move(c));
  return m;
}

const test::TfliteCase& case_named(const std::string& name) {
  static const std::map<std::string, test::TfliteCase> cases = all_cases();
  return cases.at(name);
}

TfliteModel round_trip(const ir::Graph& g, const TfliteWriteOptions& options = {}) {
  return parse_tflite(test::to_buffer(to_tflite_bytes(g, options)));
}

std::string act_name(fb::ActivationFunctionType a) { return std::to_string(static_cast<int>(a)); }

// Every option field the writer sets, for the option tables it writes.
std::string options_string(const fb::Operator* op) {
  std::ostringstream s;
  s << static_cast<int>(op->builtin_options_type());
  if (const auto* o = op->builtin_options_as_Conv2DOptions())
    s << " pad" << static_cast<int>(o->padding()) << " s" << o->stride_h() << "," << o->stride_w()
      << " d" << o->dilation_h_factor() << "," << o->dilation_w_factor() << " act"
      << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_DepthwiseConv2DOptions())
    s << " pad" << static_cast<int>(o->padding()) << " s" << o->stride_h() << "," << o->stride_w()
      << " d" << o->dilation_h_factor() << "," << o->dilation_w_factor() << " m"
      << o->depth_multiplier() << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_Pool2DOptions())
    s << " pad" << static_cast<int>(o->padding()) << " s" << o->stride_h() << "," << o->stride_w()
      << " k" << o->filter_height() << "," << o->filter_width() << " act"
      << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_FullyConnectedOptions())
    s << " act" << act_name(o->fused_activation_function()) << " keep" << o->keep_num_dims()
      << " wf" << static_cast<int>(o->weights_format());
  if (const auto* o = op->builtin_options_as_SoftmaxOptions()) s << " beta" << o->beta();
  if (const auto* o = op->builtin_options_as_ConcatenationOptions())
    s << " axis" << o->axis() << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_AddOptions())
    s << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_SubOptions())
    s << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_MulOptions())
    s << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_DivOptions())
    s << " act" << act_name(o->fused_activation_function());
  if (const auto* o = op->builtin_options_as_ReshapeOptions())
    for (int32_t d : *o->new_shape()) s << " " << d;
  if (const auto* o = op->builtin_options_as_ReducerOptions()) s << " keep" << o->keep_dims();
  if (const auto* o = op->builtin_options_as_LeakyReluOptions()) s << " alpha" << o->alpha();
  if (const auto* o = op->builtin_options_as_BatchMatMulOptions())
    s << " adj" << o->adj_x() << o->adj_y();
  return s.str();
}

// The model with tensor names left out: operators, versions, options, and each operand's type,
// shape, signature and either its data (constants) or where it comes from.
std::vector<std::string> canonical(const std::string& bytes) {
  const fb::Model* m = test::model_of(bytes);
  const fb::SubGraph* sg = m->subgraphs()->Get(0);
  std::vector<std::string> origin(sg->tensors()->size());
  for (size_t k = 0; k < sg->inputs()->size(); ++k)
    origin[static_cast<size_t>(sg->inputs()->Get(k))] = "in" + std::to_string(k);
  auto describe = [&](int32_t t) {
    if (t < 0) return std::string("omitted");
    const fb::Tensor* tensor = sg->tensors()->Get(static_cast<uint32_t>(t));
    std::ostringstream s;
    s << static_cast<int>(tensor->type()) << "[";
    for (int32_t d : *tensor->shape()) s << d << ",";
    s << "]";
    if (tensor->shape_signature()) {
      s << "sig[";
      for (int32_t d : *tensor->shape_signature()) s << d << ",";
      s << "]";
    }
    const auto* data = m->buffers()->Get(tensor->buffer())->data();
    if (data)
      s << "="
        << std::hash<std::string_view>{}(
               std::string_view(reinterpret_cast<const char*>(data->data()), data->size()));
    else
      s << "<-" << origin[static_cast<size_t>(t)];
    return s.str();
  };
  std::vector<std::string> lines;
  for (size_t i = 0; i < sg->operators()->size(); ++i) {
    const fb::Operator* op = sg->operators()->Get(static_cast<uint32_t>(i));
    std::string line = test::builtin_name(m, op) + " v" +
                       std::to_string(m->operator_codes()->Get(op->opcode_index())->version()) +
                       " {" + options_string(op) + "}";
    for (int32_t t : *op->inputs()) line += " " + describe(t);
    line += " ->";
    for (size_t k = 0; k < op->outputs()->size(); ++k) {
      int32_t t = op->outputs()->Get(static_cast<uint32_t>(k));
      origin[static_cast<size_t>(t)] = std::to_string(i) + ":" + std::to_string(k);
      line += " " + describe(t);
    }
    lines.push_back(line);
  }
  for (int32_t t : *sg->outputs()) lines.push_back("output " + describe(t));
  for (const fb::TensorMap* tm : *m->signature_defs()->Get(0)->inputs())
    lines.push_back("sig in " + tm->name()->str());
  for (const fb::TensorMap* tm : *m->signature_defs()->Get(0)->outputs())
    lines.push_back("sig out " + tm->name()->str());
  return lines;
}

TEST(TfliteRoundTrip, EveryCaseIsAFixedPoint) {
  for (const auto& c : test::tflite_cases()) {
    for (const auto& options : {TfliteWriteOptions{}, test::fp16_options()}) {
      // HardSigmoid's lowering adds float scalars of the writer's own, which stay float32; read
      // back they are the graph's constants, which float16 then stores as weights.
      if (c.name.starts_with("unary_hardsigmoid") && options.weights == WeightFormat::kFloat16)
        continue;
      std::string first = to_tflite_bytes(c.graph, options);
      TfliteModel read = parse_tflite(test::to_buffer(first));
      std::string second = to_tflite_bytes(read.graph, options);
      EXPECT_EQ(canonical(first), canonical(second))
          << c.name << (options.weights == WeightFormat::kFloat16 ? " fp16" : "");
    }
  }
}

TEST(TfliteRoundTrip, OneToOneGraphsComeBackEqual) {
  for (const char* name : {"conv_same",
                           "conv_explicit_pad",
                           "conv_asymmetric_pad",
                           "conv_dilated",
                           "depthwise_stride2",
                           "grouped_conv",
                           "maxpool_same",
                           "maxpool_explicit",
                           "avgpool_same",
                           "avgpool_count_pad",
                           "avgpool_valid",
                           "binary_broadcast",
                           "residual_add",
                           "concat_channels",
                           "pad_ops",
                           "nchw_input",
                           "prelu",
                           "unary_relu",
                           "unary_relu6",
                           "unary_clip_n1_1",
                           "unary_clip_general",
                           "unary_sigmoid",
                           "unary_tanh",
                           "unary_hardswish",
                           "unary_silu",
                           "unary_leaky_relu"}) {
    const ir::Graph& g = case_named(name).graph;
    EXPECT_TRUE(test::same_graph(g, round_trip(g).graph)) << name;
  }
}

// The float16 file holds the float16 roundings of the weights; reading gives them back exactly.
TEST(TfliteRoundTrip, Float16WeightsComeBackAsTheirRoundings) {
  for (const char* name : {"conv_same", "grouped_conv", "binary_broadcast", "depthwise_stride2"}) {
    ir::Graph expected = case_named(name).graph;
    for (size_t i = 0; i < expected.values().size(); ++i) {
      ir::Value& v = expected.value(static_cast<ir::ValueId>(i));
      if (!v.is_constant()) continue;
      Tensor rounded = v.constant.clone();
      for (float& x :
           std::span<float>(rounded.data_mutable<float>(), static_cast<size_t>(rounded.numel())))
        x = f16_to_f32(f32_to_f16(x));
      v.constant = rounded;
    }
    EXPECT_TRUE(
        test::same_graph(expected, round_trip(case_named(name).graph, test::fp16_options()).graph))
        << name;
  }
}

const ir::Node* live_node(const ir::Graph& g, size_t k) {
  size_t seen = 0;
  for (const ir::Node& n : g.nodes())
    if (!n.dead && seen++ == k) return &n;
  return nullptr;
}

std::vector<OpKind> ops_of(const ir::Graph& g) {
  std::vector<OpKind> ops;
  for (const ir::Node& n : g.nodes())
    if (!n.dead) ops.push_back(n.op);
  return ops;
}

TEST(TfliteRoundTrip, LoweredFormsComeBackAsEquivalents) {
  {  // a convolution without bias reads back with the zero bias TFLite needed
    ir::Graph g = round_trip(case_named("conv_valid_nobias").graph).graph;
    const ir::Node* conv = live_node(g, 0);
    ASSERT_EQ(conv->inputs.size(), 3u);
    EXPECT_EQ(g.value(conv->inputs[2]).constant.to_float_vector(), std::vector<float>(5, 0.0f));
  }
  {  // activations TFLite cannot fuse come back as their own nodes
    ir::Graph g = round_trip(case_named("depthwise_hardswish").graph).graph;
    EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kConv, OpKind::kHardSwish}));
    EXPECT_EQ(live_node(g, 0)->attr<ir::ConvAttrs>().groups, 6);
    EXPECT_EQ(live_node(g, 0)->attr<ir::ConvAttrs>().activation, ir::Activation::kNone);
    EXPECT_EQ(ops_of(round_trip(case_named("conv_silu").graph).graph),
              (std::vector<OpKind>{OpKind::kConv, OpKind::kSilu}));
    // In squeeze-and-excitation the sigmoid's input is not the other factor: no SiLU.
    EXPECT_EQ(ops_of(round_trip(case_named("se_block").graph).graph),
              (std::vector<OpKind>{OpKind::kReduceMean, OpKind::kConv, OpKind::kConv,
                                   OpKind::kSigmoid, OpKind::kMul}));
    EXPECT_EQ(ops_of(round_trip(case_named("unary_hardsigmoid").graph).graph),
              (std::vector<OpKind>{OpKind::kAdd, OpKind::kMul}));
  }
  {  // zeros padding a max pool (after a ReLU) stay a Pad: the reader cannot know they never win
    ir::Graph g = round_trip(case_named("maxpool_after_relu").graph).graph;
    EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kConv, OpKind::kPad, OpKind::kMaxPool}));
    EXPECT_EQ(live_node(g, 2)->attr<ir::PoolAttrs>().pads, (std::vector<int64_t>{0, 0, 0, 0}));
  }
  {  // ceil_mode comes back as the explicit pads that make the same windows
    const auto& ceil = round_trip(case_named("maxpool_ceil").graph).graph;
    EXPECT_EQ(live_node(ceil, 0)->attr<ir::PoolAttrs>().pads, (std::vector<int64_t>{0, 0, 1, 1}));
    EXPECT_FALSE(live_node(ceil, 0)->attr<ir::PoolAttrs>().ceil_mode);
    const auto& overhang = round_trip(case_named("maxpool_ceil_explicit").graph).graph;
    EXPECT_EQ(live_node(overhang, 0)->attr<ir::PoolAttrs>().pads,
              (std::vector<int64_t>{0, 0, 2, 2}));
    EXPECT_EQ(ir::shape_to_string(overhang.value(overhang.outputs()[0]).shape), "[1,3,3,2]");
  }
  {  // Flatten / Squeeze / Unsqueeze are RESHAPEs
    ir::Graph g = round_trip(case_named("head_softmax").graph).graph;
    EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kReduceMean, OpKind::kReshape, OpKind::kGemm,
                                              OpKind::kSoftmax}));
    EXPECT_EQ(live_node(g, 1)->attr<ir::ReshapeAttrs>().shape, (std::vector<int64_t>{1, 8}));
    EXPECT_EQ(ops_of(round_trip(case_named("gemm_nobias").graph).graph),
              (std::vector<OpKind>{OpKind::kReshape, OpKind::kGemm, OpKind::kReshape}));
  }
  {  // a MatMul by a constant comes back with the original weight, bit-exact
    const ir::Graph& original = case_named("matmul").graph;
    ir::Graph g = round_trip(original).graph;
    EXPECT_EQ(ops_of(g), ops_of(original));
    EXPECT_TRUE(test::same_constant(g.value(live_node(g, 0)->inputs[1]).constant,
                                    original.value(live_node(original, 0)->inputs[1]).constant));
  }
}

TEST(TfliteRoundTrip, DynamicBatchAndNames) {
  ir::Graph g = round_trip(case_named("head_dynamic_batch").graph).graph;
  const ir::Value& input = g.value(g.inputs().at(0));
  EXPECT_EQ(input.name, "image");
  EXPECT_EQ(ir::shape_to_string(input.shape), "[batch,4,4,8]");
  EXPECT_EQ(g.value(g.outputs().at(0)).name, "logits");
  EXPECT_EQ(live_node(g, 1)->attr<ir::ReshapeAttrs>().shape, (std::vector<int64_t>{-1, 8}));
  // The whole graph re-infers at another batch size.
  g.infer_shapes({{"batch", 3}});
  EXPECT_EQ(ir::shape_to_string(g.value(g.outputs().at(0)).shape), "[3,5]");
}

TEST(TfliteRoundTrip, MetadataReachesTheGraph) {
  TfliteWriteOptions options;
  options.metadata_json =
      R"({"architecture": "tiny", "num_classes": 10, "class_names": ["a", "b"]})";
  TfliteModel m = round_trip(case_named("tiny_cnn").graph, options);
  EXPECT_EQ(m.graph.metadata.at("architecture"), "tiny");
  EXPECT_EQ(m.graph.metadata.at("num_classes"), "10");
  EXPECT_EQ(m.graph.metadata.at("class_names"), R"(["a","b"])");
  EXPECT_EQ(m.summary.modex_metadata, options.metadata_json);
}

// Int8 graphs: every node, value dtype, quantization parameter and integer constant comes back.
TEST(TfliteRoundTrip, Int8GraphsComeBackWithTheirParams) {
  for (const test::Int8Case& c : test::int8_cases()) {
    SCOPED_TRACE(c.name);
    ir::Graph back = round_trip(c.graph).graph;
    ASSERT_EQ(back.nodes().size(), c.graph.nodes().size()) << ir::dump(back);
    for (size_t i = 0; i < back.nodes().size(); ++i) {
      const ir::Node& a = c.graph.nodes()[i];
      const ir::Node& b = back.nodes()[i];
      SCOPED_TRACE(a.name);
      EXPECT_EQ(b.op, a.op);
      // A Reshape's target comes back resolved (-1 as its size); the output shape is compared.
      if (a.op != OpKind::kReshape) {
        EXPECT_EQ(b.attrs, a.attrs);
      }
      ASSERT_EQ(b.inputs.size(), a.inputs.size());
      for (size_t k = 0; k <= a.inputs.size(); ++k) {
        const ir::Value& va = c.graph.value(k < a.inputs.size() ? a.inputs[k] : a.outputs[0]);
        const ir::Value& vb = back.value(k < b.inputs.size() ? b.inputs[k] : b.outputs[0]);
        EXPECT_EQ(vb.dtype, va.dtype) << va.name;
        EXPECT_EQ(vb.quant, va.quant) << va.name;
        EXPECT_EQ(vb.shape, va.shape) << va.name;
        if (va.is_constant()) {
          ASSERT_TRUE(vb.is_constant()) << va.name;
          ASSERT_EQ(vb.constant.nbytes(), va.constant.nbytes());
          EXPECT_EQ(std::memcmp(vb.constant.raw(), va.constant.raw(), va.constant.nbytes()), 0)
              << va.name;
        }
      }
    }
  }
}

}  // namespace
}  // namespace modex::tflite_io
