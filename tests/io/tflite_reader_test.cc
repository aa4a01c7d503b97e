// The TFLite reader's validation: garbage, truncated and corrupt files, and hand-made flatbuffers
// breaking one rule each, must fail with a clear Error (never crash); valid foreign features
// (custom ops, quantization) are summarised.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "../runtime/int8_test_graphs.h"
#include "tflite_test_graphs.h"
#include "tflite_test_util.h"

namespace modex::tflite_io {
namespace {

namespace fbs = flatbuffers;

// A minimal model to break: x [1,4] + c (constant [4]) -> y [1,4], one ADD; each field can be
// set to something invalid.
struct Spec {
  uint32_t version = 3;
  int32_t op_code = 0;  // ADD
  std::string custom_code;
  uint32_t opcode_index = 0;
  std::vector<int32_t> op_inputs{0, 1};
  std::vector<int32_t> op_outputs{2};
  std::vector<int32_t> graph_outputs{2};
  std::vector<int32_t> x_shape{1, 4};
  std::vector<int32_t> x_signature;
  std::vector<int32_t> y_shape{1, 4};
  fb::TensorType type = fb::TensorType::FLOAT32;
  bool quantized = false;
  uint32_t c_buffer = 1;
  size_t c_bytes = 16;
  bool sentinel_data = false;
  bool subgraphs = true;
  uint32_t signature_tensor = 0;
  uint32_t metadata_buffer = 2;
};

std::string build(const Spec& s) {
  fbs::FlatBufferBuilder fbb;
  std::vector<uint8_t> sentinel{1, 2, 3, 4};
  std::vector<uint8_t> c_data(s.c_bytes, 0);
  std::vector<uint8_t> meta{'{', '}'};
  std::vector<fbs::Offset<fb::Buffer>> buffers{
      s.sentinel_data ? fb::CreateBufferDirect(fbb, &sentinel) : fb::CreateBuffer(fbb),
      fb::CreateBufferDirect(fbb, &c_data), fb::CreateBufferDirect(fbb, &meta)};
  std::vector<float> scale{0.5f};
  std::vector<int64_t> zero_point{-3};
  fbs::Offset<fb::QuantizationParameters> quant;
  if (s.quantized)
    quant = fb::CreateQuantizationParametersDirect(fbb, nullptr, nullptr, &scale, &zero_point);
  std::vector<int32_t> c_shape{4};
  std::vector<fbs::Offset<fb::Tensor>> tensors{
      fb::CreateTensorDirect(fbb, &s.x_shape, s.type, 0, "x", quant, false,
                             s.x_signature.empty() ? nullptr : &s.x_signature),
      fb::CreateTensorDirect(fbb, &c_shape, s.type, s.c_buffer, "c"),
      fb::CreateTensorDirect(fbb, &s.y_shape, s.type, 0, "y"),
  };
  std::vector<int32_t> inputs{0};
  std::vector<fbs::Offset<fb::Operator>> ops{
      fb::CreateOperatorDirect(fbb, s.opcode_index, &s.op_inputs, &s.op_outputs,
                               fb::BuiltinOptions::AddOptions, fb::CreateAddOptions(fbb).Union())};
  std::vector<fbs::Offset<fb::SubGraph>> subgraphs;
  if (s.subgraphs)
    subgraphs.push_back(
        fb::CreateSubGraphDirect(fbb, &tensors, &inputs, &s.graph_outputs, &ops, "main"));
  std::vector<fbs::Offset<fb::OperatorCode>> codes{fb::CreateOperatorCodeDirect(
      fbb, static_cast<int8_t>(std::min(s.op_code, 127)),
      s.custom_code.empty() ? nullptr : s.custom_code.c_str(), 1, s.op_code)};
  std::vector<fbs::Offset<fb::TensorMap>> sig_in{
      fb::CreateTensorMapDirect(fbb, "image", s.signature_tensor)};
  std::vector<fbs::Offset<fb::TensorMap>> sig_out{fb::CreateTensorMapDirect(fbb, "logits", 2)};
  std::vector<fbs::Offset<fb::SignatureDef>> sigs{
      fb::CreateSignatureDefDirect(fbb, &sig_in, &sig_out, "serving_default", 0)};
  std::vector<fbs::Offset<fb::Metadata>> metadata{
      fb::CreateMetadataDirect(fbb, "modex_metadata", s.metadata_buffer)};
  auto model = fb::CreateModelDirect(fbb, s.version, &codes, &subgraphs, "test", &buffers, nullptr,
                                     &metadata, &sigs);
  fb::FinishModelBuffer(fbb, model);
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

// A one-operator model as another converter might write it: tensors (constants when given data),
// the op's inputs and outputs, options built by `options`. Input 0 is the graph input, the last
// tensor the graph output.
struct TensorSpec {
  std::string name;
  std::vector<int32_t> shape;
  std::vector<float> data;  // empty: not a constant
};

std::string one_op_model(int32_t code, const std::vector<TensorSpec>& specs,
                         std::vector<int32_t> inputs, fb::BuiltinOptions options_type,
                         const std::function<fbs::Offset<void>(fbs::FlatBufferBuilder&)>& options) {
  fbs::FlatBufferBuilder fbb;
  std::vector<fbs::Offset<fb::Buffer>> buffers{fb::CreateBuffer(fbb)};
  std::vector<fbs::Offset<fb::Tensor>> tensors;
  for (const TensorSpec& t : specs) {
    uint32_t buffer = 0;
    if (!t.data.empty()) {
      std::vector<uint8_t> bytes(t.data.size() * 4);
      std::memcpy(bytes.data(), t.data.data(), bytes.size());
      buffers.push_back(fb::CreateBufferDirect(fbb, &bytes));
      buffer = static_cast<uint32_t>(buffers.size() - 1);
    }
    tensors.push_back(
        fb::CreateTensorDirect(fbb, &t.shape, fb::TensorType::FLOAT32, buffer, t.name.c_str()));
  }
  int32_t last = static_cast<int32_t>(specs.size() - 1);
  std::vector<int32_t> graph_inputs{0}, outputs{last};
  auto opts = options(fbb);
  std::vector<fbs::Offset<fb::Operator>> ops{
      fb::CreateOperatorDirect(fbb, 0, &inputs, &outputs, options_type, opts)};
  std::vector<fbs::Offset<fb::SubGraph>> subgraphs{
      fb::CreateSubGraphDirect(fbb, &tensors, &graph_inputs, &outputs, &ops, "main")};
  std::vector<fbs::Offset<fb::OperatorCode>> codes{
      fb::CreateOperatorCode(fbb, static_cast<int8_t>(std::min(code, 127)), 0, 1, code)};
  fb::FinishModelBuffer(fbb,
                        fb::CreateModelDirect(fbb, 3, &codes, &subgraphs, "foreign", &buffers));
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

// Fails with kind and a message containing every fragment.
void expect_error(const std::string& bytes, ErrorKind kind, std::vector<std::string> fragments) {
  try {
    parse_tflite(test::to_buffer(bytes));
    ADD_FAILURE() << "accepted; expected: " << fragments.front();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(TfliteReader, MinimalModelReads) {
  TfliteModel m = parse_tflite(test::to_buffer(build({})));
  ASSERT_EQ(m.graph.nodes().size(), 1u);
  EXPECT_EQ(m.graph.nodes()[0].op, ir::OpKind::kAdd);
  EXPECT_EQ(m.graph.value(m.graph.inputs()[0]).name, "image");
  EXPECT_EQ(m.graph.value(m.graph.outputs()[0]).name, "logits");
  EXPECT_EQ(m.summary.description, "test");
  EXPECT_EQ(m.summary.ops.size(), 1u);
  EXPECT_EQ(m.summary.ops[0].op, "ADD");
}

TEST(TfliteReader, RejectsGarbage) {
  expect_error("", ErrorKind::kInvalidInput, {"too small"});
  expect_error("TFL3", ErrorKind::kInvalidInput, {"too small"});
  std::string noise;
  test::WeightGen gen(7);
  for (int i = 0; i < 4096; ++i) noise += static_cast<char>(static_cast<int>(gen.next() * 127));
  expect_error(noise, ErrorKind::kInvalidInput, {"not a TFLite file"});
  // ONNX / zip / text files name what they found instead of TFL3.
  expect_error(std::string("PK\x03\x04", 4) + std::string(100, '\0'), ErrorKind::kInvalidInput,
               {"file identifier"});
  // The right identifier on nonsense: the verifier refuses it.
  std::string fake = std::string("\xff\xff\xff\x7f", 4) + "TFL3" + std::string(64, 'x');
  expect_error(fake, ErrorKind::kInvalidInput, {"does not verify"});
}

TEST(TfliteReader, RejectsEveryTruncation) {
  std::string bytes = to_tflite_bytes(test::tflite_cases()[0].graph, {});
  for (size_t n = 0; n < bytes.size(); n += 7) {
    try {
      parse_tflite(test::to_buffer(bytes.substr(0, n)));
      ADD_FAILURE() << "truncated to " << n << " of " << bytes.size() << " bytes was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << n << ": " << e.what();
    }
  }
}

TEST(TfliteReader, SurvivesEveryCorruptByte) {
  // Each byte replaced in turn: either still a consistent model or an Error; never a crash.
  std::string bytes = to_tflite_bytes(test::tflite_cases()[0].graph, {});
  int rejected = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] = static_cast<char>(damaged[i] ^ 0x5a);
    try {
      parse_tflite(test::to_buffer(damaged));
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(TfliteReader, SurvivesCorruptInt8Models) {
  // An int8 model (per-channel weights, int32 biases, quantization tables) damaged byte by byte,
  // with several patterns: a consistent model or an Error, never a crash.
  std::string bytes;
  for (auto& c : test::int8_cases())
    if (c.name == "small_cnn") bytes = to_tflite_bytes(c.graph, {});
  ASSERT_FALSE(bytes.empty());
  int rejected = 0;
  for (size_t i = 0; i < bytes.size(); ++i)
    for (uint8_t pattern : {0x5a, 0xff, 0x80}) {
      std::string damaged = bytes;
      damaged[i] = static_cast<char>(damaged[i] ^ pattern);
      try {
        parse_tflite(test::to_buffer(damaged));
      } catch (const Error&) {
        ++rejected;
      }
    }
  EXPECT_GT(rejected, 0);
}

TEST(TfliteReader, ChecksTheWholeModel) {
  Spec s;
  s.version = 2;
  expect_error(build(s), ErrorKind::kUnsupported, {"schema version 2"});
  s = {};
  s.subgraphs = false;
  expect_error(build(s), ErrorKind::kInvalidInput, {"no subgraph"});
  s = {};
  s.opcode_index = 3;
  expect_error(build(s), ErrorKind::kInvalidInput, {"operator 0", "opcode index 3 out of range"});
  s = {};
  s.op_inputs = {0, 7};
  expect_error(build(s), ErrorKind::kInvalidInput,
               {"operator 0", "ADD", "input tensor index 7 out of range"});
  s = {};
  s.op_inputs = {0, 2};
  expect_error(build(s), ErrorKind::kInvalidInput,
               {"reads tensor 'y' before any operator writes it"});
  s = {};
  s.op_outputs = {1};
  expect_error(build(s), ErrorKind::kInvalidInput, {"writes tensor 'c'"});
  s = {};
  s.graph_outputs = {5};
  expect_error(build(s), ErrorKind::kInvalidInput, {"graph output tensor index 5"});
  s = {};
  s.c_buffer = 9;
  expect_error(build(s), ErrorKind::kInvalidInput, {"tensor 'c'", "buffer index 9 out of range"});
  s = {};
  s.c_bytes = 12;
  expect_error(build(s), ErrorKind::kInvalidInput, {"tensor 'c'", "holds 12 bytes", "needs 16"});
  s = {};
  s.x_shape = {1, -4};
  expect_error(build(s), ErrorKind::kInvalidInput, {"tensor 'x'", "negative dim"});
  s = {};
  s.x_signature = {-1};
  expect_error(build(s), ErrorKind::kInvalidInput, {"tensor 'x'", "shape_signature"});
  s = {};
  s.x_signature = {-1, 5};
  expect_error(build(s), ErrorKind::kInvalidInput, {"tensor 'x'", "shape_signature disagrees"});
  s = {};
  s.sentinel_data = true;
  expect_error(build(s), ErrorKind::kInvalidInput, {"buffer 0"});
  s = {};
  s.signature_tensor = 40;
  expect_error(build(s), ErrorKind::kInvalidInput, {"signature 0", "tensor index 40"});
  s = {};
  s.metadata_buffer = 30;
  expect_error(build(s), ErrorKind::kInvalidInput,
               {"metadata entry 'modex_metadata'", "buffer 30"});
  s = {};
  s.y_shape = {1, 5};
  expect_error(build(s), ErrorKind::kInvalidInput,
               {"operator 0", "tensor 'y' has shape [1,5] in the file"});
}

TEST(TfliteReader, NamesUnsupportedOps) {
  Spec s;
  s.op_code = 32;
  s.custom_code = "MyOp";
  TfliteSummary summary = inspect_tflite(test::to_buffer(build(s)));
  EXPECT_EQ(summary.ops.at(0).op, "CUSTOM:MyOp");
  expect_error(build(s), ErrorKind::kUnsupported, {"operator 0", "CUSTOM:MyOp", "no IR form"});
  s = {};
  s.op_code = 23;
  expect_error(build(s), ErrorKind::kUnsupported, {"operator 0", "RESIZE_BILINEAR"});
  // Codes over 127 live in builtin_code; the deprecated byte holds 127.
  s = {};
  s.op_code = 150;
  expect_error(build(s), ErrorKind::kUnsupported, {"GELU"});
  s.op_code = 230;
  EXPECT_EQ(inspect_tflite(test::to_buffer(build(s))).ops.at(0).op, "BUILTIN_230");
}

TEST(TfliteReader, QuantizedModelsAreSummarisedAndNeedParamsOnEveryInt8Tensor) {
  Spec s;
  s.type = fb::TensorType::INT8;
  s.c_bytes = 4;
  s.quantized = true;  // on x only
  TfliteSummary summary = inspect_tflite(test::to_buffer(build(s)));
  const TfliteTensorInfo& x = summary.tensors.at(0);
  EXPECT_EQ(x.type, "int8");
  EXPECT_EQ(x.scale, std::vector<float>{0.5f});
  EXPECT_EQ(x.zero_point, std::vector<int64_t>{-3});
  EXPECT_TRUE(summary.tensors.at(1).constant);
  expect_error(build(s), ErrorKind::kInvalidInput,
               {"operator 0", "ADD", "without quantization parameters"});
}

// A model of quantized tensors for the int8 import tests: each tensor has a type, raw data (a
// constant when non-empty) and optional quantization; operators list their code, tensors and
// options.
struct QTensor {
  std::string name;
  std::vector<int32_t> shape;
  fb::TensorType type = fb::TensorType::INT8;
  std::vector<uint8_t> data = {};
  std::vector<float> scale = {};
  std::vector<int64_t> zero_point = {};
  int32_t qdim = 0;
};

struct QOp {
  int32_t code;
  std::vector<int32_t> inputs, outputs;
  fb::BuiltinOptions options_type = fb::BuiltinOptions::NONE;
  std::function<fbs::Offset<void>(fbs::FlatBufferBuilder&)> options = {};
};

std::string quant_model(const std::vector<QTensor>& specs, const std::vector<QOp>& qops,
                        std::vector<int32_t> graph_inputs, std::vector<int32_t> graph_outputs) {
  fbs::FlatBufferBuilder fbb;
  std::vector<fbs::Offset<fb::Buffer>> buffers{fb::CreateBuffer(fbb)};
  std::vector<fbs::Offset<fb::Tensor>> tensors;
  for (const QTensor& t : specs) {
    uint32_t buffer = 0;
    if (!t.data.empty()) {
      buffers.push_back(fb::CreateBufferDirect(fbb, &t.data));
      buffer = static_cast<uint32_t>(buffers.size() - 1);
    }
    fbs::Offset<fb::QuantizationParameters> q;
    if (!t.scale.empty())
      q = fb::CreateQuantizationParametersDirect(fbb, nullptr, nullptr, &t.scale, &t.zero_point,
                                                 t.qdim);
    tensors.push_back(fb::CreateTensorDirect(fbb, &t.shape, t.type, buffer, t.name.c_str(), q));
  }
  std::vector<fbs::Offset<fb::OperatorCode>> codes;
  std::vector<fbs::Offset<fb::Operator>> ops;
  for (const QOp& o : qops) {
    codes.push_back(
        fb::CreateOperatorCode(fbb, static_cast<int8_t>(std::min(o.code, 127)), 0, 1, o.code));
    auto opts = o.options ? o.options(fbb) : fbs::Offset<void>();
    ops.push_back(fb::CreateOperatorDirect(fbb, static_cast<uint32_t>(codes.size() - 1), &o.inputs,
                                           &o.outputs, o.options_type, opts));
  }
  std::vector<fbs::Offset<fb::SubGraph>> subgraphs{
      fb::CreateSubGraphDirect(fbb, &tensors, &graph_inputs, &graph_outputs, &ops, "main")};
  fb::FinishModelBuffer(fbb,
                        fb::CreateModelDirect(fbb, 3, &codes, &subgraphs, "quantized", &buffers));
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

constexpr int32_t kConv2d = 3, kDepthwise = 4, kAdd = 0, kQuantizeOp = 114, kDequantizeOp = 6;

QOp depthwise_op(fb::ActivationFunctionType act = fb::ActivationFunctionType::RELU6) {
  return {kDepthwise,
          {0, 1, 2},
          {3},
          fb::BuiltinOptions::DepthwiseConv2DOptions,
          [act](fbs::FlatBufferBuilder& f) {
            return fb::CreateDepthwiseConv2DOptions(f, fb::Padding::SAME, 1, 1, 2, act).Union();
          }};
}

// x [1,4,4,2] int8 -> DEPTHWISE_CONV_2D (multiplier 2, per-channel along dim 3) -> y [1,4,4,4].
std::vector<QTensor> depthwise_tensors() {
  std::vector<int8_t> w(36);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int8_t>(static_cast<int>(i) - 18);
  return {{"x", {1, 4, 4, 2}, fb::TensorType::INT8, {}, {0.5f}, {-3}},
          {"w",
           {1, 3, 3, 4},
           fb::TensorType::INT8,
           bytes_of(w),
           {0.1f, 0.2f, 0.3f, 0.4f},
           {0, 0, 0, 0},
           3},
          {"b",
           {4},
           fb::TensorType::INT32,
           bytes_of(std::vector<int32_t>{1, 2, 3, 4}),
           {0.05f, 0.1f, 0.15f, 0.2f},
           {0, 0, 0, 0}},
          {"y", {1, 4, 4, 4}, fb::TensorType::INT8, {}, {0.25f}, {-128}}};
}

TEST(TfliteReader, ImportsInt8ModelsIntoTheInt8Ir) {
  {  // ADD of a quantized input and a quantized constant
    std::string bytes = quant_model(
        {{"x", {1, 4}, fb::TensorType::INT8, {}, {0.5f}, {-3}},
         {"c", {4}, fb::TensorType::INT8, bytes_of(std::vector<int8_t>{1, 2, 3, 4}), {0.25f}, {1}},
         {"y", {1, 4}, fb::TensorType::INT8, {}, {1.0f}, {2}}},
        {{kAdd,
          {0, 1},
          {2},
          fb::BuiltinOptions::AddOptions,
          [](fbs::FlatBufferBuilder& f) {
            return fb::CreateAddOptions(f, fb::ActivationFunctionType::RELU).Union();
          }}},
        {0}, {2});
    ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
    ASSERT_EQ(g.nodes().size(), 1u);
    const ir::Node& add = g.nodes()[0];
    EXPECT_EQ(add.attr<ir::BinaryAttrs>().activation, ir::Activation::kRelu);  // stays fused
    EXPECT_EQ(g.value(g.inputs()[0]).dtype, DType::kInt8);
    EXPECT_EQ(g.value(g.inputs()[0]).quant, (ir::QuantParams{{0.5f}, {-3}, 0}));
    EXPECT_EQ(g.value(add.inputs[1]).quant, (ir::QuantParams{{0.25f}, {1}, 0}));
    EXPECT_EQ(g.value(add.outputs[0]).quant, (ir::QuantParams{{1.0f}, {2}, 0}));
  }
  {  // depthwise: [1, kH, kW, O] quantized along dim 3 -> [O, kH, kW, 1] along axis 0
    ir::Graph g =
        parse_tflite(test::to_buffer(quant_model(depthwise_tensors(), {depthwise_op()}, {0}, {3})))
            .graph;
    ASSERT_EQ(g.nodes().size(), 1u);
    const ir::Node& conv = g.nodes()[0];
    EXPECT_EQ(conv.attr<ir::ConvAttrs>().groups, 2);
    EXPECT_EQ(conv.attr<ir::ConvAttrs>().activation, ir::Activation::kRelu6);
    const ir::Value& w = g.value(conv.inputs[1]);
    EXPECT_EQ(w.constant.shape(), (Dims{4, 3, 3, 1}));
    EXPECT_EQ(w.constant.dtype(), DType::kInt8);
    EXPECT_EQ(w.constant.data<int8_t>()[1], -18 + 4);  // IR [o=0, kh=0, kw=1] = file [0, 0, 1, 0]
    EXPECT_EQ(w.quant, (ir::QuantParams{{0.1f, 0.2f, 0.3f, 0.4f}, {0, 0, 0, 0}, 0}));
    EXPECT_EQ(g.value(conv.inputs[2]).dtype, DType::kInt32);
    EXPECT_EQ(g.value(conv.outputs[0]).quant, (ir::QuantParams{{0.25f}, {-128}, 0}));
  }
  {  // float -> QUANTIZE -> int8 -> DEQUANTIZE -> float: Quantize and Dequantize nodes
    std::string bytes = quant_model({{"x", {1, 4}, fb::TensorType::FLOAT32},
                                     {"q", {1, 4}, fb::TensorType::INT8, {}, {0.5f}, {-3}},
                                     {"y", {1, 4}, fb::TensorType::FLOAT32}},
                                    {{kQuantizeOp, {0}, {1}}, {kDequantizeOp, {1}, {2}}}, {0}, {2});
    ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
    ASSERT_EQ(g.nodes().size(), 2u);
    EXPECT_EQ(g.nodes()[0].op, ir::OpKind::kQuantize);
    EXPECT_EQ(g.nodes()[0].attr<ir::QuantizeAttrs>().dtype, DType::kInt8);
    EXPECT_EQ(g.value(g.nodes()[0].outputs[0]).quant, (ir::QuantParams{{0.5f}, {-3}, 0}));
    EXPECT_EQ(g.nodes()[1].op, ir::OpKind::kDequantize);
    EXPECT_EQ(g.value(g.outputs()[0]).dtype, DType::kFloat32);
  }
  {  // weights-only int8: an int8 constant -> DEQUANTIZE is folded into a float32 constant
    std::vector<int8_t> w{1,  -2, 3,  -4, 5,  -6, 7,  -8, 9,
                          10, 11, 12, 13, 14, 15, 16, 17, 18};  // [2,3,3,1]
    std::string bytes = quant_model(
        {{"x", {1, 3, 3, 1}, fb::TensorType::FLOAT32},
         {"w_q", {2, 3, 3, 1}, fb::TensorType::INT8, bytes_of(w), {0.5f, 0.25f}, {0, 0}, 0},
         {"w", {2, 3, 3, 1}, fb::TensorType::FLOAT32},
         {"y", {1, 1, 1, 2}, fb::TensorType::FLOAT32}},
        {{kDequantizeOp, {1}, {2}},
         {kConv2d,
          {0, 2, -1},
          {3},
          fb::BuiltinOptions::Conv2DOptions,
          [](fbs::FlatBufferBuilder& f) {
            return fb::CreateConv2DOptions(f, fb::Padding::VALID, 1, 1).Union();
          }}},
        {0}, {3});
    ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
    ASSERT_EQ(g.nodes().size(), 1u);
    const ir::Value& wf = g.value(g.nodes()[0].inputs[1]);
    ASSERT_EQ(wf.constant.dtype(), DType::kFloat32);
    EXPECT_FALSE(wf.quant.has_value());
    EXPECT_FLOAT_EQ(wf.constant.data<float>()[1], -1.0f);  // -2 * 0.5 (channel 0)
    EXPECT_FLOAT_EQ(wf.constant.data<float>()[9], 2.5f);   // 10 * 0.25 (channel 1)
  }
}

TEST(TfliteReader, ChecksQuantizationParams) {
  auto with = [](const std::function<void(std::vector<QTensor>&)>& edit, QOp op = depthwise_op()) {
    std::vector<QTensor> t = depthwise_tensors();
    edit(t);
    return quant_model(t, {op}, {0}, {3});
  };
  expect_error(with([](auto& t) { t[0].scale = {0.0f}; }), ErrorKind::kInvalidInput,
               {"tensor 'x'", "quantization scale 0", "positive"});
  expect_error(with([](auto& t) { t[3].scale = {-1.0f}; }), ErrorKind::kInvalidInput,
               {"tensor 'y'", "positive"});
  expect_error(with([](auto& t) { t[0].zero_point = {200}; }), ErrorKind::kInvalidInput,
               {"tensor 'x'", "zero point 200", "[-128, 127]"});
  expect_error(with([](auto& t) {
                 t[1].zero_point = {0, 0};
               }),
               ErrorKind::kInvalidInput, {"tensor 'w'", "4 scales but 2 zero points"});
  expect_error(with([](auto& t) { t[1].scale.pop_back(), t[1].zero_point.pop_back(); }),
               ErrorKind::kInvalidInput, {"tensor 'w'", "3 scales for dim 3 of size 4"});
  expect_error(with([](auto& t) { t[1].qdim = 7; }), ErrorKind::kInvalidInput,
               {"tensor 'w'", "quantized_dimension 7"});
  expect_error(with([](auto& t) {
                 t[1].qdim = 0, t[1].shape = {4, 3, 3, 1};
               }),
               ErrorKind::kInvalidInput, {"depthwise filter"});
  expect_error(with([](auto& t) {
                 t[1].zero_point = {0, 5, 0, 0};
               }),
               ErrorKind::kInvalidInput,
               {"operator 0", "DEPTHWISE_CONV_2D", "'w' must be symmetric"});
  expect_error(with([](auto& t) {
                 t[2].type = fb::TensorType::FLOAT32, t[2].data.resize(16), t[2].scale.clear(),
                 t[2].zero_point.clear();
               }),
               ErrorKind::kInvalidInput, {"operator 0", "bias 'b'", "must be int32, is float32"});
  expect_error(with([](auto& t) { t[1].scale.clear(), t[1].zero_point.clear(); }),
               ErrorKind::kInvalidInput,
               {"operator 0", "int8 weights with quantization parameters"});
  expect_error(with([](auto& t) { t[3].scale.clear(), t[3].zero_point.clear(); }),
               ErrorKind::kInvalidInput,
               {"operator 0", "tensor 'y'", "without quantization parameters"});
  expect_error(with([](auto&) {}, depthwise_op(fb::ActivationFunctionType::TANH)),
               ErrorKind::kUnsupported, {"operator 0", "fused activation"});
  expect_error(with([](auto& t) { t[0].type = fb::TensorType::INT16, t[0].zero_point = {0}; }),
               ErrorKind::kUnsupported, {"int16"});
}

TEST(TfliteReader, SummaryOfAWrittenModel) {
  tflite_io::TfliteWriteOptions options;
  options.metadata_json = R"({"architecture": "tiny", "num_classes": 10})";
  ir::Graph g;
  for (auto& c : test::tflite_cases())
    if (c.name == "tiny_cnn") g = std::move(c.graph);
  TfliteSummary s = inspect_tflite(test::to_buffer(to_tflite_bytes(g, options)));
  EXPECT_EQ(s.version, 3u);
  EXPECT_EQ(s.subgraph_count, 1u);
  EXPECT_EQ(s.min_runtime_version, "1.15.0");
  EXPECT_EQ(s.modex_metadata, options.metadata_json);
  ASSERT_EQ(s.signatures.size(), 1u);
  EXPECT_EQ(s.signatures[0].key, "serving_default");
  EXPECT_EQ(s.signatures[0].inputs.at(0).first, "image");
  EXPECT_EQ(s.signatures[0].outputs.at(0).first, "logits");
  const TfliteTensorInfo& input = s.tensors.at(static_cast<size_t>(s.inputs.at(0)));
  EXPECT_EQ(input.shape, (std::vector<int32_t>{1, 16, 16, 3}));
  EXPECT_EQ(input.shape_signature, (std::vector<int32_t>{-1, 16, 16, 3}));
  EXPECT_FALSE(input.constant);
}

TEST(TfliteReader, ReadsFilesAndNamesThem) {
  namespace fs = std::filesystem;
  fs::path missing = fs::temp_directory_path() / "modex_no_such_model.tflite";
  try {
    read_tflite(missing);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
  }
  fs::path bad =
      fs::temp_directory_path() / ("modex_bad_" + std::to_string(::getpid()) + ".tflite");
  write_file_atomic(bad, "not a model at all");
  try {
    read_tflite(bad);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.location().file, bad.string());
  }
  fs::remove(bad);
}

TEST(TfliteReader, ForeignFormsTheWriterDoesNotUse) {
  using ir::OpKind;
  auto ops_of = [](const ir::Graph& g) {
    std::vector<OpKind> ops;
    for (const ir::Node& n : g.nodes()) ops.push_back(n.op);
    return ops;
  };
  {  // FULLY_CONNECTED keeping leading dims, with bias and a fused ReLU: MatMul by W^T, Add
    std::vector<float> w{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [4, 3]
    std::string bytes = one_op_model(
        9, {{"x", {1, 2, 3}, {}}, {"w", {4, 3}, w}, {"b", {4}, {1, 1, 1, 1}}, {"y", {1, 2, 4}, {}}},
        {0, 1, 2}, fb::BuiltinOptions::FullyConnectedOptions, [](fbs::FlatBufferBuilder& f) {
          return fb::CreateFullyConnectedOptions(f, fb::ActivationFunctionType::RELU,
                                                 fb::FullyConnectedOptionsWeightsFormat::DEFAULT,
                                                 true)
              .Union();
        });
    ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
    ASSERT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kMatMul, OpKind::kAdd}));
    EXPECT_EQ(g.nodes()[1].attr<ir::BinaryAttrs>().activation, ir::Activation::kRelu);
    const Tensor& wt = g.value(g.nodes()[0].inputs[1]).constant;
    EXPECT_EQ(wt.shape(), (Dims{3, 4}));
    EXPECT_EQ(wt.data<float>()[1], 4.0f);  // W^T[0][1] = W[1][0]
    EXPECT_EQ(ir::shape_to_string(g.value(g.outputs()[0]).shape), "[1,2,4]");
  }
  {  // FULLY_CONNECTED flattening a 4-D input: Reshape then Gemm
    std::string bytes = one_op_model(
        9, {{"x", {1, 1, 1, 3}, {}}, {"w", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"y", {1, 2}, {}}},
        {0, 1, -1}, fb::BuiltinOptions::FullyConnectedOptions,
        [](fbs::FlatBufferBuilder& f) { return fb::CreateFullyConnectedOptions(f).Union(); });
    ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
    EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kReshape, OpKind::kGemm}));
    EXPECT_EQ(g.nodes()[1].inputs.size(), 2u);
  }
  {  // a fused TANH / RELU_N1_TO_1, which the IR's Conv cannot hold, follows as its own node
    for (auto [act, kind] : {std::pair{fb::ActivationFunctionType::TANH, OpKind::kTanh},
                             std::pair{fb::ActivationFunctionType::RELU_N1_TO_1, OpKind::kClip}}) {
      std::string bytes = one_op_model(
          3,
          {{"x", {1, 5, 5, 1}, {}},
           {"w", {1, 3, 3, 1}, std::vector<float>(9, 0.5f)},
           {"b", {1}, {0.0f}},
           {"y", {1, 5, 5, 1}, {}}},
          {0, 1, 2}, fb::BuiltinOptions::Conv2DOptions, [act = act](fbs::FlatBufferBuilder& f) {
            return fb::CreateConv2DOptions(f, fb::Padding::SAME, 1, 1, act).Union();
          });
      ir::Graph g = parse_tflite(test::to_buffer(bytes)).graph;
      EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kConv, kind}));
      EXPECT_EQ(g.nodes()[0].attr<ir::ConvAttrs>().pads, (std::vector<int64_t>{1, 1, 1, 1}));
    }
  }
  {  // options with a zero stride are refused before any arithmetic uses them
    std::string bytes =
        one_op_model(17, {{"x", {1, 4, 4, 1}, {}}, {"y", {1, 2, 2, 1}, {}}}, {0},
                     fb::BuiltinOptions::Pool2DOptions, [](fbs::FlatBufferBuilder& f) {
                       return fb::CreatePool2DOptions(f, fb::Padding::SAME, 0, 2, 2, 2).Union();
                     });
    expect_error(bytes, ErrorKind::kInvalidInput, {"MAX_POOL_2D", "strides"});
  }
}

}  // namespace
}  // namespace modex::tflite_io
