// The TFLite reader's validation: garbage, truncated and corrupt files, and hand-made flatbuffers
// breaking one rule each, must fail with a clear Error (never crash); valid foreign features
// (custom ops, quantization) are summarised.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

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

TEST(TfliteReader, QuantizedModelsAreSummarisedNotConverted) {
  Spec s;
  s.type = fb::TensorType::INT8;
  s.c_bytes = 4;
  s.quantized = true;
  TfliteSummary summary = inspect_tflite(test::to_buffer(build(s)));
  const TfliteTensorInfo& x = summary.tensors.at(0);
  EXPECT_EQ(x.type, "int8");
  EXPECT_EQ(x.scale, std::vector<float>{0.5f});
  EXPECT_EQ(x.zero_point, std::vector<int64_t>{-3});
  EXPECT_TRUE(summary.tensors.at(1).constant);
  try {
    parse_tflite(test::to_buffer(build(s)));
    ADD_FAILURE() << "int8 graph accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos) << e.what();
    EXPECT_NE(e.hint_text().find("quantized"), std::string::npos) << e.what();
  }
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
