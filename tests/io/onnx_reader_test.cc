// The ONNX importer on hand-built ModelProtos: every op and attribute form it accepts, the IR
// form each becomes, every error path (parsing, structure, opsets, attributes, initializers,
// shape chains), and round trips through the ONNX writer.
#include "io/onnx/onnx_reader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "core/error.h"
#include "core/half.h"
#include "io/onnx/onnx_writer.h"
#include "onnx_test_util.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using ir::OpKind;
using test::attr_float;
using test::attr_floats;
using test::attr_int;
using test::attr_ints;
using test::attr_string;
using test::attr_tensor;
using test::OnnxModel;
using test::TP;

constexpr float kInfF = std::numeric_limits<float>::infinity();

// The Error an import raises, checked for its kind and the file label.
Error import_error(const OnnxModel& m, ErrorKind kind,
                   const onnx_io::OnnxImportOptions& options = {}) {
  try {
    m.import(options);
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_EQ(e.location().file, "test.onnx") << e.what();
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return Error("wrong exception");
  }
  ADD_FAILURE() << "no error";
  return Error("no error");
}

Error bytes_error(const std::string& bytes) {
  try {
    onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                     "bytes.onnx");
  } catch (const Error& e) {
    EXPECT_EQ(e.location().file, "bytes.onnx");
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error("no error");
}

std::vector<const ir::Node*> live_nodes(const ir::Graph& g) {
  std::vector<const ir::Node*> v;
  for (const ir::Node& n : g.nodes())
    if (!n.dead) v.push_back(&n);
  return v;
}

std::vector<OpKind> ops_of(const ir::Graph& g) {
  std::vector<OpKind> v;
  for (const ir::Node* n : live_nodes(g)) v.push_back(n->op);
  return v;
}

const ir::Node& only(const ir::Graph& g, OpKind op) {
  const ir::Node* found = nullptr;
  for (const ir::Node* n : live_nodes(g)) {
    if (n->op != op) continue;
    EXPECT_EQ(found, nullptr) << "more than one " << ir::op_name(op);
    found = n;
  }
  if (!found) throw std::runtime_error("no " + std::string(ir::op_name(op)) + " node");
  return *found;
}

std::string input_name(const ir::Graph& g, const ir::Node& n, size_t i) {
  return g.value(n.inputs.at(i)).name;
}
std::string output_shape(const ir::Graph& g, size_t i = 0) {
  return ir::shape_to_string(g.value(g.outputs().at(i)).shape);
}

const Tensor& constant_input(const ir::Graph& g, const ir::Node& n, size_t i) {
  const ir::Value& v = g.value(n.inputs.at(i));
  if (!v.is_constant())
    throw std::runtime_error("input " + std::to_string(i) + " of " + n.name + " is not constant");
  return v.constant;
}

std::vector<float> floats_of(const Tensor& t) { return t.to_float_vector(); }

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A one-node model: x -> op -> y, with x of the given dims.
OnnxModel unary_model(const std::string& op, const test::DimSpec& dims, int opset = 13) {
  OnnxModel m(opset);
  m.input("x", dims).output("y");
  m.node(op, {"x"}, {"y"}, "n");
  return m;
}

// =============================================================================================
// Parsing and model-level checks

OnnxModel tiny_model() {
  OnnxModel m(13);
  m.input("x", {"batch", "3", "4", "4"}).output("y", {"batch", "3", "4", "4"});
  m.init_floats("w", {3, 1, 1, 1}, {1, 2, 3});
  auto& n = m.node("Conv", {"x", "w"}, {"c"}, "conv");
  attr_int(n, "group", 3);
  m.node("Relu", {"c"}, {"y"}, "relu");
  return m;
}

TEST(OnnxReader, ImportsATinyModel) {
  ir::Graph g = tiny_model().import();
  ASSERT_EQ(g.inputs().size(), 1u);
  EXPECT_EQ(g.value(g.inputs()[0]).name, "x");
  EXPECT_EQ(ir::shape_to_string(g.value(g.inputs()[0]).shape), "[batch,3,4,4]");
  EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kConv, OpKind::kRelu}));
  EXPECT_EQ(g.value(g.outputs()[0]).name, "y");
  EXPECT_EQ(output_shape(g), "[batch,3,4,4]");
  EXPECT_EQ(g.metadata.at("source_format"), "onnx");
  EXPECT_EQ(g.metadata.at("source_opset"), "13");
  EXPECT_EQ(g.metadata.at("source_producer"), "modex-test");
  ir::verify(g);
}

TEST(OnnxReader, EveryTruncationIsAClearError) {
  std::string bytes = tiny_model().bytes();
  for (size_t n = 0; n < bytes.size(); ++n) {
    Error e = bytes_error(bytes.substr(0, n));
    EXPECT_NE(e.kind(), ErrorKind::kInternal) << n << ": " << e.what();
  }
  // Cut inside a field: the protobuf itself is malformed.
  EXPECT_TRUE(
      contains(bytes_error(bytes.substr(0, bytes.size() / 2)).what(), "truncated or corrupt"))
      << bytes_error(bytes.substr(0, bytes.size() / 2)).what();
}

TEST(OnnxReader, GarbageAndEmptyInput) {
  EXPECT_TRUE(contains(bytes_error("").what(), "not an ONNX model"));
  EXPECT_TRUE(contains(bytes_error("\xff\xff\xff\xff garbage").what(), "truncated or corrupt"));
  EXPECT_TRUE(contains(bytes_error("PK\x03\x04 a zip file").what(), "ONNX"));
}

TEST(OnnxReader, MissingFileIsAnIoError) {
  try {
    onnx_io::import_onnx("/nonexistent/model.onnx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_EQ(e.location().file, "/nonexistent/model.onnx");
  }
}

TEST(OnnxReader, OpsetRange) {
  for (int opset : {10, 18}) {
    OnnxModel m = unary_model("Relu", {"1", "2"}, opset);
    Error e = import_error(m, ErrorKind::kUnsupported);
    EXPECT_TRUE(contains(e.what(), "opset " + std::to_string(opset) + " is not supported"))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "11-17")) << e.what();
  }
  for (int opset = 11; opset <= 17; ++opset)
    EXPECT_NO_THROW(unary_model("Relu", {"1", "2"}, opset).import()) << opset;
}

TEST(OnnxReader, DefaultDomainMustBeImported) {
  OnnxModel m = unary_model("Relu", {"1", "2"});
  m.model.mutable_opset_import(0)->set_domain("ai.onnx.ml");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput).what(), "default ONNX domain"));
  // "ai.onnx" is the default domain spelled out.
  OnnxModel ok = unary_model("Relu", {"1", "2"});
  ok.model.mutable_opset_import(0)->set_domain("ai.onnx");
  EXPECT_NO_THROW(ok.import());
}

TEST(OnnxReader, OtherDomainsAreUnsupported) {
  OnnxModel m = unary_model("LinearClassifier", {"1", "4"});
  auto* ml = m.model.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(1);
  m.graph().mutable_node(0)->set_domain("ai.onnx.ml");
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "n");
  EXPECT_EQ(e.location().op, "LinearClassifier");
  EXPECT_TRUE(contains(e.what(), "domain 'ai.onnx.ml'")) << e.what();
}

TEST(OnnxReader, UnknownOpNamesNodeOpAndOpset) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Relu", {"x"}, {"r"}, "relu");
  m.node("Erf", {"r"}, {"y"}, "erf_7");
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "erf_7");
  EXPECT_EQ(e.location().op, "Erf");
  EXPECT_EQ(std::string(e.what()),
            "test.onnx: node 'erf_7' (Erf): op Erf is not supported (opset 13)");
}

TEST(OnnxReader, OpBeforeItsOpset) {
  Error e = import_error(unary_model("HardSwish", {"1", "8"}, 13), ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(e.what(), "HardSwish is defined from opset 14 on (opset 13)")) << e.what();
  ir::Graph g = unary_model("HardSwish", {"1", "8"}, 14).import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kHardSwish});
}

TEST(OnnxReader, UnknownAttributeIsAnError) {
  OnnxModel m = unary_model("Relu", {"1", "8"});
  attr_int(*m.graph().mutable_node(0), "inplace", 1);
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_TRUE(contains(e.what(), "attribute 'inplace' is not supported")) << e.what();
  // An attribute of a later opset's form is unknown at an earlier opset.
  OnnxModel r(13);
  r.input("x", {"2", "4"}).output("y").init_int64s("s", {2}, {4, 2});
  attr_int(r.node("Reshape", {"x", "s"}, {"y"}, "reshape"), "allowzero", 0);
  EXPECT_TRUE(contains(import_error(r, ErrorKind::kUnsupported).what(),
                       "attribute 'allowzero' is not supported"));
}

TEST(OnnxReader, AttributeTypeAndDuplicates) {
  OnnxModel m = unary_model("LeakyRelu", {"1", "8"});
  attr_int(*m.graph().mutable_node(0), "alpha", 1);
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput).what(),
                       "attribute 'alpha' must be of type float, is int"));
  OnnxModel d = unary_model("LeakyRelu", {"1", "8"});
  attr_float(*d.graph().mutable_node(0), "alpha", 0.1f);
  attr_float(*d.graph().mutable_node(0), "alpha", 0.2f);
  EXPECT_TRUE(contains(import_error(d, ErrorKind::kInvalidInput).what(), "given twice"));
}

// =============================================================================================
// Graph structure

TEST(OnnxReaderStructure, DanglingEdge) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Add", {"x", "nowhere"}, {"y"}, "add_3");
  Error e = import_error(m, ErrorKind::kInvalidInput);
  EXPECT_EQ(e.location().node, "add_3");
  EXPECT_TRUE(contains(e.what(), "input 'nowhere' is not produced by any node")) << e.what();
}

TEST(OnnxReaderStructure, DuplicateProducers) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Relu", {"x"}, {"y"}, "a");
  m.node("Sigmoid", {"x"}, {"y"}, "b");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput).what(),
                       "value 'y' is produced twice, also by node 'a'"));

  OnnxModel over(13);
  over.input("x", {"1", "8"}).output("y").init_floats("w", {1}, {1});
  over.node("Relu", {"x"}, {"w"}, "a");
  over.node("Add", {"x", "w"}, {"y"}, "b");
  EXPECT_TRUE(contains(import_error(over, ErrorKind::kInvalidInput).what(),
                       "both a graph input or initializer"));
}

TEST(OnnxReaderStructure, Cycle) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Add", {"x", "b"}, {"a"}, "first");
  m.node("Relu", {"a"}, {"b"}, "second");
  m.node("Relu", {"a"}, {"y"}, "out");
  Error e = import_error(m, ErrorKind::kInvalidInput);
  EXPECT_TRUE(contains(e.what(), "cycle")) << e.what();
  EXPECT_EQ(e.location().node, "first");
}

TEST(OnnxReaderStructure, MissingOutputs) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Relu", {"x"}, {"r"}, "relu");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput).what(),
                       "graph output 'y' is not produced by any node"));
  OnnxModel none(13);
  none.input("x", {"1", "8"});
  none.node("Relu", {"x"}, {"r"}, "relu");
  EXPECT_TRUE(
      contains(import_error(none, ErrorKind::kInvalidInput).what(), "the graph has no outputs"));
}

TEST(OnnxReaderStructure, UnsortedNodesAreSorted) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Sigmoid", {"r"}, {"y"}, "second");
  m.node("Relu", {"x"}, {"r"}, "first");
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kRelu, OpKind::kSigmoid}));
}

TEST(OnnxReaderStructure, DeadNodesAreNotImported) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Relu", {"x"}, {"y"}, "used");
  m.node("Erf", {"x"}, {"unused"}, "dead_unknown_op");
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kRelu});
}

TEST(OnnxReaderStructure, NodeNamesMadeUnique) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y");
  m.node("Relu", {"x"}, {"a"}, "same");
  m.node("Relu", {"a"}, {"b"}, "same");
  m.node("Relu", {"b"}, {"c"}, "");
  m.node("Relu", {"c"}, {"y"}, "Relu_2");  // the name an unnamed node at index 2 would get
  ir::Graph g = m.import();
  std::vector<std::string> names;
  for (const ir::Node* n : live_nodes(g)) names.push_back(n->name);
  EXPECT_EQ(names, (std::vector<std::string>{"same", "same_1", "Relu_2_1", "Relu_2"}));
  // Value names are the file's.
  EXPECT_TRUE(g.find_value("a") && g.find_value("b") && g.find_value("c") && g.find_value("y"));
}

TEST(OnnxReaderStructure, InputsThatAreInitializersAreConstants) {
  OnnxModel m(11);
  m.input("x", {"1", "3"}).input("w", {"3"}).output("y");
  m.init_floats("w", {3}, {1, 2, 3});
  m.node("Mul", {"x", "w"}, {"y"}, "mul");
  ir::Graph g = m.import();
  ASSERT_EQ(g.inputs().size(), 1u);
  EXPECT_EQ(g.value(g.inputs()[0]).name, "x");
  EXPECT_EQ(floats_of(constant_input(g, only(g, OpKind::kMul), 1)), (std::vector<float>{1, 2, 3}));
}

TEST(OnnxReaderStructure, InputDims) {
  OnnxModel m(13);
  m.input("x", {"batch", "3", "", ""}).output("y");
  m.node("Relu", {"x"}, {"y"}, "relu");
  ir::Graph g = m.import();
  const ir::Shape& s = g.value(g.inputs()[0]).shape;
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0], ir::Dim::named("batch"));
  EXPECT_EQ(s[1], ir::Dim::fixed(3));
  EXPECT_EQ(s[2], ir::Dim::unknown());
  EXPECT_EQ(s[3], ir::Dim::unknown());
  EXPECT_EQ(output_shape(g), "[batch,3,?,?]");
  for (const ir::Value& v : g.values())
    for (const ir::Dim& d : v.shape)
      EXPECT_TRUE(d.is_static() || d.symbol.empty() || d.symbol == "batch") << v.name;
}

TEST(OnnxReaderStructure, InputShapeOverrides) {
  OnnxModel m(13);
  m.input("x", {"batch", "3", "h", "w"}).output("y");
  m.node("Relu", {"x"}, {"y"}, "relu");
  onnx_io::OnnxImportOptions o;
  o.input_shapes["x"] = {ir::Dim::named("batch"), ir::Dim::fixed(3), ir::Dim::fixed(32),
                         ir::Dim::fixed(24)};
  EXPECT_EQ(output_shape(m.import(o)), "[batch,3,32,24]");

  o.input_shapes["x"] = {ir::Dim::fixed(1), ir::Dim::fixed(3)};
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput, o).what(),
                       "has rank 2 but the model declares"));
  onnx_io::OnnxImportOptions other;
  other.input_shapes["image"] = {ir::Dim::fixed(1)};
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput, other).what(),
                       "'image', which is not a graph input"));
}

TEST(OnnxReaderStructure, InputWithoutShape) {
  OnnxModel m(13);
  m.input_without_shape("x").output("y");
  m.node("Relu", {"x"}, {"y"}, "relu");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kUnsupported).what(), "has no shape"));
  onnx_io::OnnxImportOptions o;
  o.input_shapes["x"] = {ir::Dim::fixed(2), ir::Dim::fixed(5)};
  EXPECT_EQ(output_shape(m.import(o)), "[2,5]");
}

TEST(OnnxReaderStructure, NonFloatAndNonTensorInputs) {
  OnnxModel m(13);
  m.input("x", {"2"}, TP::STRING).output("y");
  m.node("Identity", {"x"}, {"y"}, "id");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kUnsupported).what(), "element type STRING"));
  OnnxModel seq(13);
  seq.output("y");
  auto* in = seq.graph().add_input();
  in->set_name("x");
  in->mutable_type()->mutable_sequence_type();
  seq.node("Identity", {"x"}, {"y"}, "id");
  EXPECT_TRUE(contains(import_error(seq, ErrorKind::kUnsupported).what(), "is not a tensor"));
}

TEST(OnnxReaderStructure, DeclaredOutputTypeMustMatch) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("y", TP::INT64);
  m.node("Relu", {"x"}, {"y"}, "relu");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kInvalidInput).what(),
                       "declared int64 but computes float32"));
  OnnxModel r(13);
  r.input("x", {"1", "8"}).output("y", {"1", "9"});
  r.node("Relu", {"x"}, {"y"}, "relu");
  EXPECT_TRUE(contains(import_error(r, ErrorKind::kInvalidInput).what(), "dim 1 = 9"));
}

TEST(OnnxReaderStructure, GraphInputAsOutput) {
  OnnxModel m(13);
  m.input("x", {"1", "8"}).output("x").output("y");
  m.node("Relu", {"x"}, {"y"}, "relu");
  ir::Graph g = m.import();
  ASSERT_EQ(g.outputs().size(), 2u);
  EXPECT_EQ(g.outputs()[0], g.inputs()[0]);
}

TEST(OnnxReaderStructure, MetadataPropsAreKept) {
  OnnxModel m = unary_model("Relu", {"1", "2"});
  auto* p = m.model.add_metadata_props();
  p->set_key("class_names");
  p->set_value("[\"a\",\"b\"]");
  m.model.set_producer_version("1.13.0");
  ir::Graph g = m.import();
  EXPECT_EQ(g.metadata.at("class_names"), "[\"a\",\"b\"]");
  EXPECT_EQ(g.metadata.at("source_producer"), "modex-test 1.13.0");
}

// =============================================================================================
// Initializers

struct DtypeCase {
  int onnx_type;
  DType dtype;
  std::string raw;  // two elements
};

std::vector<DtypeCase> dtype_cases() {
  return {
      {TP::FLOAT, DType::kFloat32, test::raw_bytes(std::vector<float>{1.5f, -2.0f})},
      {TP::DOUBLE, DType::kFloat64, test::raw_bytes(std::vector<double>{1.5, -2.0})},
      {TP::FLOAT16, DType::kFloat16, test::raw_bytes(std::vector<uint16_t>{0x3e00, 0xc000})},
      {TP::BFLOAT16, DType::kBFloat16, test::raw_bytes(std::vector<uint16_t>{0x3fc0, 0xc000})},
      {TP::INT8, DType::kInt8, test::raw_bytes(std::vector<int8_t>{-128, 127})},
      {TP::UINT8, DType::kUInt8, test::raw_bytes(std::vector<uint8_t>{0, 255})},
      {TP::INT16, DType::kInt16, test::raw_bytes(std::vector<int16_t>{-32768, 32767})},
      {TP::UINT16, DType::kUInt16, test::raw_bytes(std::vector<uint16_t>{0, 65535})},
      {TP::INT32, DType::kInt32, test::raw_bytes(std::vector<int32_t>{INT32_MIN, 7})},
      {TP::UINT32, DType::kUInt32, test::raw_bytes(std::vector<uint32_t>{0, 4000000000u})},
      {TP::INT64, DType::kInt64, test::raw_bytes(std::vector<int64_t>{INT64_MIN, 42})},
      {TP::UINT64, DType::kUInt64, test::raw_bytes(std::vector<uint64_t>{0, UINT64_MAX})},
      {TP::BOOL, DType::kBool, test::raw_bytes(std::vector<uint8_t>{0, 1})},
  };
}

// A model whose output is the initializer `t` (passed through Identity).
OnnxModel identity_of(const TP& t) {
  OnnxModel m(13);
  m.output("y", t.data_type());
  m.initializer(t);
  m.node("Identity", {t.name()}, {"y"}, "id");
  return m;
}

const Tensor& imported_constant(const ir::Graph& g) {
  return constant_input(g, only(g, OpKind::kIdentity), 0);
}

std::string bytes_of(const Tensor& t) {
  return std::string(reinterpret_cast<const char*>(t.raw()), t.nbytes());
}

TEST(OnnxReaderInitializers, RawDataOfEveryDtype) {
  for (const DtypeCase& c : dtype_cases()) {
    ir::Graph g = identity_of(OnnxModel::tensor("t", {2}, c.onnx_type, c.raw)).import();
    const Tensor& t = imported_constant(g);
    EXPECT_EQ(t.dtype(), c.dtype) << dtype_name(c.dtype);
    EXPECT_EQ(t.shape(), Dims{2});
    EXPECT_EQ(bytes_of(t), c.raw) << dtype_name(c.dtype);
  }
}

// Typed fields hold the same values as the raw cases above.
TEST(OnnxReaderInitializers, TypedFieldsOfEveryDtype) {
  for (const DtypeCase& c : dtype_cases()) {
    TP t;
    t.set_name("t");
    t.set_data_type(c.onnx_type);
    t.add_dims(2);
    Tensor raw = Tensor::zeros(c.dtype, {2});
    std::memcpy(raw.raw_mutable(), c.raw.data(), c.raw.size());
    for (int64_t i = 0; i < 2; ++i) {
      switch (c.dtype) {
        case DType::kFloat32:
          t.add_float_data(raw.data<float>()[i]);
          break;
        case DType::kFloat64:
          t.add_double_data(raw.data<double>()[i]);
          break;
        case DType::kInt64:
          t.add_int64_data(raw.data<int64_t>()[i]);
          break;
        case DType::kUInt64:
          t.add_uint64_data(raw.data<uint64_t>()[i]);
          break;
        case DType::kUInt32:
          t.add_uint64_data(raw.data<uint32_t>()[i]);
          break;
        case DType::kInt32:
          t.add_int32_data(raw.data<int32_t>()[i]);
          break;
        case DType::kInt16:
          t.add_int32_data(raw.data<int16_t>()[i]);
          break;
        case DType::kInt8:
          t.add_int32_data(raw.data<int8_t>()[i]);
          break;
        case DType::kUInt8:
        case DType::kBool:
          t.add_int32_data(raw.data<uint8_t>()[i]);
          break;
        case DType::kUInt16:
        case DType::kFloat16:
        case DType::kBFloat16:
          t.add_int32_data(raw.data<uint16_t>()[i]);
          break;
      }
    }
    ir::Graph g = identity_of(t).import();
    EXPECT_EQ(bytes_of(imported_constant(g)), c.raw) << dtype_name(c.dtype);
  }
}

TEST(OnnxReaderInitializers, ScalarsAndEmptyTensors) {
  ir::Graph g = identity_of(OnnxModel::floats("s", {}, {2.5f})).import();
  EXPECT_EQ(imported_constant(g).shape(), Dims{});
  EXPECT_EQ(floats_of(imported_constant(g)), std::vector<float>{2.5f});
  ir::Graph e = identity_of(OnnxModel::floats("e", {0, 3}, {})).import();
  EXPECT_EQ(imported_constant(e).numel(), 0);
}

TEST(OnnxReaderInitializers, SizeChecks) {
  // raw_data length must be numel * itemsize.
  Error raw =
      import_error(identity_of(OnnxModel::tensor("t", {3}, TP::FLOAT, std::string(8, '\0'))),
                   ErrorKind::kInvalidInput);
  EXPECT_EQ(raw.location().tensor, "t");
  EXPECT_TRUE(contains(raw.what(), "raw_data has 8 bytes but shape [3] of float32 needs 12"))
      << raw.what();
  // Typed fields must hold numel values, in the field the dtype uses.
  TP few;
  few.set_name("t");
  few.set_data_type(TP::FLOAT);
  few.add_dims(3);
  few.add_float_data(1);
  EXPECT_TRUE(contains(import_error(identity_of(few), ErrorKind::kInvalidInput).what(),
                       "has 1 values in its typed data field but shape [3] needs 3"));
  TP wrong_field;
  wrong_field.set_name("t");
  wrong_field.set_data_type(TP::FLOAT);
  wrong_field.add_dims(1);
  wrong_field.add_int64_data(1);
  EXPECT_TRUE(contains(import_error(identity_of(wrong_field), ErrorKind::kInvalidInput).what(),
                       "typed field other than"));
  TP narrow;
  narrow.set_name("t");
  narrow.set_data_type(TP::INT8);
  narrow.add_dims(1);
  narrow.add_int32_data(300);
  EXPECT_TRUE(contains(import_error(identity_of(narrow), ErrorKind::kInvalidInput).what(),
                       "300 does not fit int8"));
  TP both = OnnxModel::floats("t", {1}, {1});
  both.add_float_data(1);
  EXPECT_TRUE(contains(import_error(identity_of(both), ErrorKind::kInvalidInput).what(),
                       "both raw_data and a typed data field"));
  TP no_data;
  no_data.set_name("t");
  no_data.set_data_type(TP::FLOAT);
  no_data.add_dims(2);
  EXPECT_TRUE(contains(import_error(identity_of(no_data), ErrorKind::kInvalidInput).what(),
                       "has 0 values"));
  EXPECT_TRUE(contains(
      import_error(identity_of(OnnxModel::floats("t", {-1}, {})), ErrorKind::kInvalidInput).what(),
      "negative dimension"));
  // Huge dims with little data: refused before anything is allocated.
  EXPECT_TRUE(contains(import_error(identity_of(OnnxModel::floats("t", {1 << 30, 1 << 30}, {1})),
                                    ErrorKind::kInvalidInput)
                           .what(),
                       "raw_data has 4 bytes"));
}

TEST(OnnxReaderInitializers, UnsupportedDtypesAndForms) {
  EXPECT_TRUE(contains(import_error(identity_of(OnnxModel::tensor("t", {1}, TP::STRING, "")),
                                    ErrorKind::kUnsupported)
                           .what(),
                       "STRING tensors are not supported"));
  EXPECT_TRUE(contains(
      import_error(identity_of(OnnxModel::tensor("t", {1}, TP::COMPLEX64, std::string(8, '\0'))),
                   ErrorKind::kUnsupported)
          .what(),
      "COMPLEX64"));
  TP seg = OnnxModel::floats("t", {1}, {1});
  seg.mutable_segment()->set_begin(0);
  EXPECT_TRUE(
      contains(import_error(identity_of(seg), ErrorKind::kUnsupported).what(), "segmented"));
  OnnxModel sparse = identity_of(OnnxModel::floats("t", {1}, {1}));
  sparse.graph().add_sparse_initializer();
  EXPECT_TRUE(
      contains(import_error(sparse, ErrorKind::kUnsupported).what(), "sparse initializers"));
  OnnxModel dup = identity_of(OnnxModel::floats("t", {1}, {1}));
  dup.initializer(OnnxModel::floats("t", {1}, {2}));
  EXPECT_TRUE(contains(import_error(dup, ErrorKind::kInvalidInput).what(),
                       "initializer 't' is defined twice"));
}

// External data: a temporary folder holding model.onnx and its weight file.
class OnnxReaderExternalData : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("modex_onnx_ext_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "model");
    std::ofstream(dir_ / "model" / "weights.bin", std::ios::binary)
        << std::string("XXXX") << test::raw_bytes(std::vector<float>{1, 2, 3});
    std::ofstream(dir_ / "secret.bin", std::ios::binary)
        << test::raw_bytes(std::vector<float>{9, 9, 9});
  }
  void TearDown() override { fs::remove_all(dir_); }

  static TP external(const std::string& location, const std::string& offset = "4",
                     const std::string& length = "12") {
    TP t;
    t.set_name("w");
    t.set_data_type(TP::FLOAT);
    t.add_dims(3);
    t.set_data_location(TP::EXTERNAL);
    auto add = [&](const char* k, const std::string& v) {
      auto* e = t.add_external_data();
      e->set_key(k);
      e->set_value(v);
    };
    add("location", location);
    if (!offset.empty()) add("offset", offset);
    if (!length.empty()) add("length", length);
    return t;
  }

  fs::path write_model(const TP& t) {
    fs::path p = dir_ / "model" / "model.onnx";
    std::ofstream(p, std::ios::binary) << identity_of(t).bytes();
    return p;
  }

  Error error_for(const TP& t, ErrorKind kind) {
    fs::path p = write_model(t);
    try {
      onnx_io::import_onnx(p);
    } catch (const Error& e) {
      EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
      EXPECT_EQ(e.location().tensor, "w") << e.what();
      return e;
    }
    ADD_FAILURE() << "no error";
    return Error("no error");
  }

  fs::path dir_;
};

TEST_F(OnnxReaderExternalData, ReadsFromTheModelsFolder) {
  ir::Graph g = onnx_io::import_onnx(write_model(external("weights.bin")));
  EXPECT_EQ(floats_of(imported_constant(g)), (std::vector<float>{1, 2, 3}));
  // Without a length the tensor's own size is read.
  ir::Graph h = onnx_io::import_onnx(write_model(external("./weights.bin", "4", "")));
  EXPECT_EQ(floats_of(imported_constant(h)), (std::vector<float>{1, 2, 3}));
}

TEST_F(OnnxReaderExternalData, RefusedFromMemoryUnlessAFolderIsGiven) {
  OnnxModel m = identity_of(external("weights.bin"));
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kUnsupported).what(),
                       "only read when importing from a file"));
  onnx_io::OnnxImportOptions o;
  o.external_data_dir = dir_ / "model";
  EXPECT_EQ(floats_of(imported_constant(m.import(o))), (std::vector<float>{1, 2, 3}));
}

TEST_F(OnnxReaderExternalData, PathsMustStayInTheFolder) {
  EXPECT_TRUE(
      contains(error_for(external((dir_ / "secret.bin").string(), "0"), ErrorKind::kUnsafe).what(),
               "absolute path"));
  EXPECT_TRUE(contains(error_for(external("../secret.bin", "0"), ErrorKind::kUnsafe).what(),
                       "leaves the model's folder"));
  EXPECT_TRUE(contains(error_for(external("sub/../../secret.bin", "0"), ErrorKind::kUnsafe).what(),
                       "leaves the model's folder"));
  fs::create_symlink(dir_ / "secret.bin", dir_ / "model" / "link.bin");
  EXPECT_TRUE(contains(error_for(external("link.bin", "0"), ErrorKind::kUnsafe).what(),
                       "resolves outside"));
}

TEST_F(OnnxReaderExternalData, SizesAndKeysAreChecked) {
  EXPECT_TRUE(contains(error_for(external("weights.bin", "8"), ErrorKind::kInvalidInput).what(),
                       "beyond the end"));
  EXPECT_TRUE(
      contains(error_for(external("weights.bin", "4", "8"), ErrorKind::kInvalidInput).what(),
               "length 8 does not match"));
  EXPECT_TRUE(contains(error_for(external("weights.bin", "-4"), ErrorKind::kInvalidInput).what(),
                       "not a non-negative integer"));
  EXPECT_TRUE(
      contains(error_for(external("missing.bin", "0"), ErrorKind::kIo).what(), "missing.bin"));
  EXPECT_TRUE(
      contains(error_for(external(""), ErrorKind::kInvalidInput).what(), "location is empty"));
  TP odd = external("weights.bin");
  auto* e = odd.add_external_data();
  e->set_key("compression");
  e->set_value("zstd");
  EXPECT_TRUE(contains(error_for(odd, ErrorKind::kUnsupported).what(),
                       "unknown external data key 'compression'"));
}

// =============================================================================================
// Conv and pooling

TEST(OnnxReaderConv, AttributesBiasAndNames) {
  OnnxModel m(13);
  m.input("x", {"batch", "4", "9", "9"}).output("y");
  m.init_floats("w", {6, 2, 3, 3}, OnnxModel::iota(108)).init_floats("b", {6}, OnnxModel::iota(6));
  auto& n = m.node("Conv", {"x", "w", "b"}, {"y"}, "conv");
  attr_ints(n, "strides", {2, 2});
  attr_ints(n, "dilations", {2, 1});
  attr_int(n, "group", 2);
  attr_ints(n, "pads", {1, 0, 2, 1});
  ir::Graph g = m.import();
  const ir::Node& c = only(g, OpKind::kConv);
  const auto& a = c.attr<ir::ConvAttrs>();
  EXPECT_EQ(c.name, "conv");
  EXPECT_EQ(a.kernel, (std::vector<int64_t>{3, 3}));  // from the weight: kernel_shape is optional
  EXPECT_EQ(a.strides, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a.dilations, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(a.groups, 2);
  EXPECT_EQ(a.pads, (std::vector<int64_t>{1, 0, 2, 1}));
  EXPECT_EQ(input_name(g, c, 1), "w");
  EXPECT_EQ(input_name(g, c, 2), "b");
  EXPECT_EQ(output_shape(g), "[batch,6,4,4]");
}

OnnxModel conv_model(const test::DimSpec& x, int64_t k, int64_t stride, int64_t dilation,
                     const std::string& auto_pad) {
  OnnxModel m(13);
  m.input("x", x).output("y");
  m.init_floats("w", {2, 1, k, k}, std::vector<float>(static_cast<size_t>(2 * k * k), 1.0f));
  auto& n = m.node("Conv", {"x", "w"}, {"y"}, "Conv_12");
  attr_ints(n, "kernel_shape", {k, k});
  attr_ints(n, "strides", {stride, stride});
  attr_ints(n, "dilations", {dilation, dilation});
  attr_string(n, "auto_pad", auto_pad);
  return m;
}

std::vector<int64_t> conv_pads(const OnnxModel& m, const onnx_io::OnnxImportOptions& o = {}) {
  ir::Graph g = m.import(o);
  return only(g, OpKind::kConv).attr<ir::ConvAttrs>().pads;
}

TEST(OnnxReaderConv, AutoPadResolvedFromTheInputSize) {
  // Output ceil(in / stride); the odd pad goes at the end (UPPER) or the beginning (LOWER).
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "10", "10"}, 3, 2, 1, "SAME_UPPER")),
            (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "10", "10"}, 3, 2, 1, "SAME_LOWER")),
            (std::vector<int64_t>{1, 1, 0, 0}));
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "9", "9"}, 3, 2, 1, "SAME_UPPER")),
            (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "9", "9"}, 3, 2, 2, "SAME_UPPER")),
            (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "10", "10"}, 3, 2, 1, "VALID")),
            (std::vector<int64_t>{0, 0, 0, 0}));
  // A stride larger than the kernel can need no padding at all.
  EXPECT_EQ(conv_pads(conv_model({"1", "1", "5", "5"}, 1, 3, 1, "SAME_UPPER")),
            (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(output_shape(conv_model({"1", "1", "10", "10"}, 3, 2, 1, "SAME_LOWER").import()),
            "[1,2,5,5]");
}

TEST(OnnxReaderConv, AutoPadWithStrideOneNeedsNoStaticSize) {
  EXPECT_EQ(conv_pads(conv_model({"n", "1", "h", "w"}, 3, 1, 2, "SAME_UPPER")),
            (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(conv_pads(conv_model({"n", "1", "h", "w"}, 4, 1, 1, "SAME_LOWER")),
            (std::vector<int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(conv_pads(conv_model({"n", "1", "h", "w"}, 4, 1, 1, "SAME_UPPER")),
            (std::vector<int64_t>{1, 1, 2, 2}));
}

TEST(OnnxReaderConv, AutoPadWithStrideNeedsAStaticSize) {
  OnnxModel m = conv_model({"n", "1", "h", "w"}, 3, 2, 1, "SAME_LOWER");
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "Conv_12");
  EXPECT_EQ(e.location().op, "Conv");
  EXPECT_TRUE(contains(
      e.what(),
      "node 'Conv_12' (Conv): auto_pad=SAME_LOWER with stride 2 needs a static input size"))
      << e.what();
  EXPECT_TRUE(contains(e.what(), "(opset 13)")) << e.what();
  EXPECT_FALSE(e.hint_text().empty());
  onnx_io::OnnxImportOptions o;
  o.input_shapes["x"] = {ir::Dim::named("n"), ir::Dim::fixed(1), ir::Dim::fixed(10),
                         ir::Dim::fixed(10)};
  EXPECT_EQ(conv_pads(m, o), (std::vector<int64_t>{1, 1, 0, 0}));
}

TEST(OnnxReaderConv, InvalidAndUnsupportedForms) {
  OnnxModel both = conv_model({"1", "1", "8", "8"}, 3, 1, 1, "SAME_UPPER");
  attr_ints(*both.graph().mutable_node(0), "pads", {1, 1, 1, 1});
  EXPECT_TRUE(contains(import_error(both, ErrorKind::kInvalidInput).what(),
                       "pads cannot be given together with auto_pad"));
  EXPECT_TRUE(contains(
      import_error(conv_model({"1", "1", "8", "8"}, 3, 1, 1, "SAME"), ErrorKind::kInvalidInput)
          .what(),
      "auto_pad=SAME is not a valid value"));

  OnnxModel conv1d(13);
  conv1d.input("x", {"1", "1", "8"}).output("y").init_floats("w", {1, 1, 3}, {1, 1, 1});
  conv1d.node("Conv", {"x", "w"}, {"y"}, "c");
  EXPECT_TRUE(contains(import_error(conv1d, ErrorKind::kUnsupported).what(),
                       "only 2-D convolutions are supported"));

  OnnxModel neg = conv_model({"1", "1", "8", "8"}, 3, 1, 1, "NOTSET");
  attr_ints(*neg.graph().mutable_node(0), "pads", {-1, 0, 0, 0});
  EXPECT_TRUE(contains(import_error(neg, ErrorKind::kUnsupported).what(), "negative pads"));

  // Shape inference errors name the node too.
  OnnxModel channels(13);
  channels.input("x", {"1", "3", "8", "8"})
      .output("y")
      .init_floats("w", {2, 2, 1, 1}, {1, 1, 1, 1});
  channels.node("Conv", {"x", "w"}, {"y"}, "mismatch");
  Error e = import_error(channels, ErrorKind::kInvalidInput);
  EXPECT_EQ(e.location().node, "mismatch");
  EXPECT_TRUE(contains(e.what(), "3 channels")) << e.what();
}

TEST(OnnxReaderPool, MaxPoolCeilModeDilationsPads) {
  OnnxModel m(11);
  m.input("x", {"1", "2", "8", "8"}).output("y");
  auto& n = m.node("MaxPool", {"x"}, {"y"}, "pool");
  attr_ints(n, "kernel_shape", {3, 3});
  attr_ints(n, "strides", {2, 2});
  attr_ints(n, "pads", {1, 1, 0, 0});
  attr_ints(n, "dilations", {1, 1});
  attr_int(n, "ceil_mode", 1);
  attr_int(n, "storage_order", 0);
  ir::Graph g = m.import();
  const auto& a = only(g, OpKind::kMaxPool).attr<ir::PoolAttrs>();
  EXPECT_EQ(a.kernel, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(a.pads, (std::vector<int64_t>{1, 1, 0, 0}));
  EXPECT_TRUE(a.ceil_mode);
  EXPECT_EQ(output_shape(g), "[1,2,4,4]");
}

TEST(OnnxReaderPool, AveragePoolCountIncludePadAndAutoPad) {
  OnnxModel m(17);
  m.input("x", {"1", "2", "7", "7"}).output("y");
  auto& n = m.node("AveragePool", {"x"}, {"y"}, "pool");
  attr_ints(n, "kernel_shape", {2, 2});
  attr_ints(n, "strides", {2, 2});
  attr_string(n, "auto_pad", "SAME_UPPER");
  attr_int(n, "count_include_pad", 1);
  ir::Graph g = m.import();
  const auto& a = only(g, OpKind::kAveragePool).attr<ir::PoolAttrs>();
  EXPECT_EQ(a.pads, (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_TRUE(a.count_include_pad);
  EXPECT_FALSE(a.ceil_mode);
  EXPECT_EQ(output_shape(g), "[1,2,4,4]");
}

TEST(OnnxReaderPool, Errors) {
  OnnxModel idx(13);
  idx.input("x", {"1", "2", "8", "8"}).output("y").output("i", TP::INT64);
  attr_ints(idx.node("MaxPool", {"x"}, {"y", "i"}, "pool"), "kernel_shape", {2, 2});
  EXPECT_TRUE(
      contains(import_error(idx, ErrorKind::kUnsupported).what(), "Indices output of MaxPool"));
  OnnxModel no_kernel = unary_model("AveragePool", {"1", "2", "8", "8"});
  EXPECT_TRUE(contains(import_error(no_kernel, ErrorKind::kInvalidInput).what(),
                       "'kernel_shape' is required"));
  OnnxModel dil = unary_model("AveragePool", {"1", "2", "8", "8"});
  attr_ints(*dil.graph().mutable_node(0), "kernel_shape", {2, 2});
  attr_ints(*dil.graph().mutable_node(0), "dilations", {2, 2});
  EXPECT_TRUE(contains(import_error(dil, ErrorKind::kUnsupported).what(),
                       "attribute 'dilations' is not supported"));
  OnnxModel flag = unary_model("MaxPool", {"1", "2", "8", "8"});
  attr_ints(*flag.graph().mutable_node(0), "kernel_shape", {2, 2});
  attr_int(*flag.graph().mutable_node(0), "ceil_mode", 2);
  EXPECT_TRUE(
      contains(import_error(flag, ErrorKind::kInvalidInput).what(), "'ceil_mode' must be 0 or 1"));
}

TEST(OnnxReaderPool, GlobalAveragePool) {
  ir::Graph g = unary_model("GlobalAveragePool", {"batch", "8", "7", "7"}).import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kGlobalAveragePool});
  EXPECT_EQ(output_shape(g), "[batch,8,1,1]");
}

// =============================================================================================
// Normalisation and activations

TEST(OnnxReaderOps, BatchNormalization) {
  for (int opset : {11, 14}) {
    OnnxModel m(opset);
    m.input("x", {"1", "2", "4", "4"}).output("y");
    for (const char* p : {"s", "b", "mean", "var"}) m.init_floats(p, {2}, {1, 2});
    auto& n = m.node("BatchNormalization", {"x", "s", "b", "mean", "var"}, {"y"}, "bn");
    attr_float(n, "epsilon", 1e-3f);
    attr_float(n, "momentum", 0.1f);
    if (opset >= 14) attr_int(n, "training_mode", 0);
    ir::Graph g = m.import();
    EXPECT_FLOAT_EQ(only(g, OpKind::kBatchNorm).attr<ir::BatchNormAttrs>().epsilon, 1e-3f);
  }
  OnnxModel train(14);
  train.input("x", {"1", "2"}).output("y");
  for (const char* p : {"s", "b", "mean", "var"}) train.init_floats(p, {2}, {1, 2});
  attr_int(train.node("BatchNormalization", {"x", "s", "b", "mean", "var"}, {"y"}, "bn"),
           "training_mode", 1);
  EXPECT_TRUE(contains(import_error(train, ErrorKind::kUnsupported).what(), "training_mode=1"));
  OnnxModel outs(11);
  outs.input("x", {"1", "2"}).output("y");
  for (const char* p : {"s", "b", "mean", "var"}) outs.init_floats(p, {2}, {1, 2});
  outs.node("BatchNormalization", {"x", "s", "b", "mean", "var"},
            {"y", "running_mean", "running_var"}, "bn");
  EXPECT_TRUE(contains(import_error(outs, ErrorKind::kUnsupported).what(),
                       "running mean/variance outputs"));
}

TEST(OnnxReaderOps, SimpleActivations) {
  struct Case {
    const char* op;
    OpKind kind;
    int opset;
  };
  for (const Case& c : {Case{"Relu", OpKind::kRelu, 11}, Case{"Sigmoid", OpKind::kSigmoid, 13},
                        Case{"Tanh", OpKind::kTanh, 17}, Case{"HardSwish", OpKind::kHardSwish, 14},
                        Case{"Identity", OpKind::kIdentity, 13}}) {
    ir::Graph g = unary_model(c.op, {"b", "4"}, c.opset).import();
    EXPECT_EQ(ops_of(g), std::vector<OpKind>{c.kind}) << c.op;
    EXPECT_EQ(output_shape(g), "[b,4]") << c.op;
  }
}

TEST(OnnxReaderOps, ActivationAttributes) {
  OnnxModel leaky = unary_model("LeakyRelu", {"1", "4"});
  EXPECT_FLOAT_EQ(only(leaky.import(), OpKind::kLeakyRelu).attr<ir::LeakyReluAttrs>().alpha, 0.01f);
  attr_float(*leaky.graph().mutable_node(0), "alpha", 0.2f);
  EXPECT_FLOAT_EQ(only(leaky.import(), OpKind::kLeakyRelu).attr<ir::LeakyReluAttrs>().alpha, 0.2f);

  OnnxModel hs = unary_model("HardSigmoid", {"1", "4"});
  auto a = only(hs.import(), OpKind::kHardSigmoid).attr<ir::HardSigmoidAttrs>();
  EXPECT_FLOAT_EQ(a.alpha, 0.2f);
  EXPECT_FLOAT_EQ(a.beta, 0.5f);
  attr_float(*hs.graph().mutable_node(0), "alpha", 1.0f / 6);
  attr_float(*hs.graph().mutable_node(0), "beta", 0.25f);
  a = only(hs.import(), OpKind::kHardSigmoid).attr<ir::HardSigmoidAttrs>();
  EXPECT_FLOAT_EQ(a.alpha, 1.0f / 6);
  EXPECT_FLOAT_EQ(a.beta, 0.25f);

  OnnxModel prelu(13);
  prelu.input("x", {"1", "3", "4", "4"})
      .output("y")
      .init_floats("slope", {3, 1, 1}, {0.1f, 0.2f, 0.3f});
  prelu.node("PRelu", {"x", "slope"}, {"y"}, "prelu");
  ir::Graph g = prelu.import();
  EXPECT_EQ(input_name(g, only(g, OpKind::kPRelu), 1), "slope");
}

// Clip at opset 11+: optional min/max inputs, each constant; a missing one is unbounded.
OnnxModel clip_model(const std::vector<std::string>& inputs) {
  OnnxModel m(11);
  m.input("x", {"1", "4"}).output("y");
  m.init_floats("lo", {}, {-1.5f}).init_floats("zero", {}, {0.0f}).init_floats("six", {}, {6.0f});
  m.node("Clip", inputs, {"y"}, "clip");
  return m;
}

TEST(OnnxReaderOps, ClipForms) {
  auto attrs = [](const OnnxModel& m) {
    return only(m.import(), OpKind::kClip).attr<ir::ClipAttrs>();
  };
  ir::ClipAttrs relu6 = attrs(clip_model({"x", "zero", "six"}));
  EXPECT_EQ(relu6.min, 0.0f);
  EXPECT_EQ(relu6.max, 6.0f);
  ir::ClipAttrs upper = attrs(clip_model({"x", "", "six"}));
  EXPECT_EQ(upper.min, -kInfF);
  EXPECT_EQ(upper.max, 6.0f);
  ir::ClipAttrs lower = attrs(clip_model({"x", "lo"}));
  EXPECT_EQ(lower.min, -1.5f);
  EXPECT_EQ(lower.max, kInfF);
  // Exact equivalents get the simpler IR op.
  EXPECT_EQ(ops_of(clip_model({"x", "zero"}).import()), std::vector<OpKind>{OpKind::kRelu});
  EXPECT_EQ(ops_of(clip_model({"x"}).import()), std::vector<OpKind>{OpKind::kIdentity});

  OnnxModel runtime(11);
  runtime.input("x", {"1", "4"}).input("m", {}).output("y");
  runtime.node("Clip", {"x", "m"}, {"y"}, "clip");
  EXPECT_TRUE(contains(import_error(runtime, ErrorKind::kUnsupported).what(),
                       "min (input 1 'm') must be a constant"));
  OnnxModel attr_form = clip_model({"x"});
  attr_float(*attr_form.graph().mutable_node(0), "max", 6.0f);  // the opset < 11 form
  EXPECT_TRUE(contains(import_error(attr_form, ErrorKind::kUnsupported).what(),
                       "attribute 'max' is not supported"));
}

TEST(OnnxReaderOps, BinaryOpsBroadcast) {
  for (auto [op, kind] : {std::pair{"Add", OpKind::kAdd}, std::pair{"Sub", OpKind::kSub},
                          std::pair{"Mul", OpKind::kMul}, std::pair{"Div", OpKind::kDiv}}) {
    OnnxModel m(13);
    m.input("x", {"batch", "3", "4", "4"}).output("y").init_floats("c", {3, 1, 1}, {1, 2, 3});
    m.node(op, {"x", "c"}, {"y"}, "op");
    ir::Graph g = m.import();
    EXPECT_EQ(ops_of(g), std::vector<OpKind>{kind});
    EXPECT_EQ(output_shape(g), "[batch,3,4,4]");
  }
}

// =============================================================================================
// Gemm, MatMul, Softmax, ReduceMean, Pad, Flatten, Transpose, Concat

OnnxModel gemm_model(const std::string& b_name, const std::string& c_name, int64_t m_rows = 2) {
  OnnxModel m(13);
  m.input("a", {std::to_string(m_rows), "3"}).output("y");
  m.init_floats("Bt", {4, 3}, OnnxModel::iota(12));  // [N, K] for transB=1
  m.init_floats("B", {3, 4}, OnnxModel::iota(12));   // [K, N] for transB=0
  m.init_floats("bias", {4}, {1, 2, 3, 4});
  m.init_floats("bias_row", {1, 4}, {1, 2, 3, 4});
  m.init_floats("bias_scalar", {}, {5});
  m.init_floats("bias_full", {m_rows, 4}, OnnxModel::iota(static_cast<size_t>(4 * m_rows)));
  std::vector<std::string> in{"a", b_name};
  if (!c_name.empty()) in.push_back(c_name);
  m.node("Gemm", in, {"y"}, "fc");
  return m;
}

onnx::NodeProto& gemm_node(OnnxModel& m) { return *m.graph().mutable_node(0); }

TEST(OnnxReaderGemm, TransBSharesTheWeight) {
  OnnxModel m = gemm_model("Bt", "bias");
  attr_int(gemm_node(m), "transB", 1);
  attr_float(gemm_node(m), "alpha", 1.0f);
  attr_float(gemm_node(m), "beta", 1.0f);
  ir::Graph g = m.import();
  const ir::Node& n = only(g, OpKind::kGemm);
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kGemm});
  EXPECT_EQ(input_name(g, n, 1), "Bt");
  EXPECT_EQ(input_name(g, n, 2), "bias");
  EXPECT_EQ(output_shape(g), "[2,4]");
}

TEST(OnnxReaderGemm, WeightsTransposedAndAlphaBetaFolded) {
  OnnxModel m = gemm_model("B", "bias");
  attr_float(gemm_node(m), "alpha", 2.0f);
  attr_float(gemm_node(m), "beta", 0.5f);
  ir::Graph g = m.import();
  const ir::Node& n = only(g, OpKind::kGemm);
  const Tensor& w = constant_input(g, n, 1);
  EXPECT_EQ(w.shape(), (Dims{4, 3}));
  // W[o][i] = alpha * B[i][o] = 2 * (4 i + o)
  EXPECT_EQ(floats_of(w), (std::vector<float>{0, 8, 16, 2, 10, 18, 4, 12, 20, 6, 14, 22}));
  EXPECT_EQ(floats_of(constant_input(g, n, 2)), (std::vector<float>{0.5f, 1, 1.5f, 2}));
  EXPECT_EQ(output_shape(g), "[2,4]");
}

TEST(OnnxReaderGemm, PerColumnBiasShapesFold) {
  for (const char* c : {"bias_row", "bias_scalar"}) {
    OnnxModel m = gemm_model("Bt", c);
    attr_int(gemm_node(m), "transB", 1);
    ir::Graph g = m.import();
    const Tensor& b = constant_input(g, only(g, OpKind::kGemm), 2);
    EXPECT_EQ(b.shape(), Dims{4}) << c;
    EXPECT_EQ(floats_of(b), std::string(c) == "bias_row" ? (std::vector<float>{1, 2, 3, 4})
                                                         : (std::vector<float>{5, 5, 5, 5}));
  }
}

TEST(OnnxReaderGemm, FullCBecomesAnAdd) {
  OnnxModel m = gemm_model("Bt", "bias_full");
  attr_int(gemm_node(m), "transB", 1);
  attr_float(gemm_node(m), "beta", 2.0f);
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kGemm, OpKind::kAdd}));
  EXPECT_EQ(only(g, OpKind::kGemm).inputs.size(), 2u);
  EXPECT_EQ(floats_of(constant_input(g, only(g, OpKind::kAdd), 1)),
            (std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14}));
  EXPECT_EQ(g.value(g.outputs()[0]).name, "y");
}

TEST(OnnxReaderGemm, BetaZeroDropsC) {
  OnnxModel m = gemm_model("Bt", "bias_full");
  attr_int(gemm_node(m), "transB", 1);
  attr_float(gemm_node(m), "beta", 0.0f);
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kGemm});
  EXPECT_EQ(only(g, OpKind::kGemm).inputs.size(), 2u);
}

TEST(OnnxReaderGemm, TransAAddsATranspose) {
  OnnxModel m(13);
  m.input("a", {"3", "batch"}).output("y").init_floats("Bt", {4, 3}, OnnxModel::iota(12));
  auto& n = m.node("Gemm", {"a", "Bt"}, {"y"}, "fc");
  attr_int(n, "transA", 1);
  attr_int(n, "transB", 1);
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kTranspose, OpKind::kGemm}));
  EXPECT_EQ(output_shape(g), "[batch,4]");
}

TEST(OnnxReaderGemm, RuntimeOperandsUseMatMul) {
  OnnxModel m(13);
  m.input("a", {"2", "3"}).input("b", {"4", "3"}).input("c", {"2", "4"}).output("y");
  auto& n = m.node("Gemm", {"a", "b", "c"}, {"y"}, "fc");
  attr_int(n, "transB", 1);
  attr_float(n, "alpha", 0.5f);
  attr_float(n, "beta", 3.0f);
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kTranspose, OpKind::kMatMul, OpKind::kMul,
                                            OpKind::kMul, OpKind::kAdd}));
  EXPECT_EQ(output_shape(g), "[2,4]");

  OnnxModel plain(13);
  plain.input("a", {"2", "3"}).input("b", {"3", "4"}).output("y");
  plain.node("Gemm", {"a", "b"}, {"y"}, "fc");
  EXPECT_EQ(ops_of(plain.import()), std::vector<OpKind>{OpKind::kMatMul});

  OnnxModel runtime_c = gemm_model("Bt", "c");
  runtime_c.input("c", {"2", "4"});
  attr_int(gemm_node(runtime_c), "transB", 1);
  ir::Graph h = runtime_c.import();
  EXPECT_EQ(ops_of(h), (std::vector<OpKind>{OpKind::kGemm, OpKind::kAdd}));
}

TEST(OnnxReaderOps, MatMul) {
  OnnxModel m(13);
  m.input("x", {"batch", "7", "3"}).output("y").init_floats("w", {3, 5}, OnnxModel::iota(15));
  m.node("MatMul", {"x", "w"}, {"y"}, "mm");
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kMatMul});
  EXPECT_EQ(output_shape(g), "[batch,7,5]");
}

TEST(OnnxReaderSoftmax, BeforeOpset13OnlyThePerAxisForm) {
  // Last axis (the default axis=1 of a 2-D input).
  ir::Graph g = unary_model("Softmax", {"batch", "10"}, 11).import();
  EXPECT_EQ(only(g, OpKind::kSoftmax).attr<ir::AxisAttrs>().axis, 1);
  OnnxModel last = unary_model("Softmax", {"batch", "3", "10"}, 12);
  attr_int(*last.graph().mutable_node(0), "axis", -1);
  EXPECT_EQ(only(last.import(), OpKind::kSoftmax).attr<ir::AxisAttrs>().axis, -1);
  // Trailing 1s do not change the flattened rows.
  ir::Graph ones = unary_model("Softmax", {"batch", "10", "1", "1"}, 11).import();
  EXPECT_EQ(only(ones, OpKind::kSoftmax).attr<ir::AxisAttrs>().axis, 1);
  OnnxModel leading = unary_model("Softmax", {"batch", "1", "10"}, 11);
  EXPECT_EQ(only(leading.import(), OpKind::kSoftmax).attr<ir::AxisAttrs>().axis, 2);

  Error e =
      import_error(unary_model("Softmax", {"batch", "10", "4", "4"}, 11), ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "n");
  EXPECT_TRUE(contains(e.what(), "not a per-axis softmax")) << e.what();
  EXPECT_TRUE(contains(e.what(), "(opset 11)")) << e.what();
  // A dynamic dim after the axis might not be 1.
  import_error(unary_model("Softmax", {"batch", "10", "h"}, 11), ErrorKind::kUnsupported);
}

TEST(OnnxReaderSoftmax, FromOpset13AnyAxis) {
  OnnxModel m = unary_model("Softmax", {"batch", "10", "4", "4"}, 13);
  attr_int(*m.graph().mutable_node(0), "axis", 1);
  EXPECT_EQ(only(m.import(), OpKind::kSoftmax).attr<ir::AxisAttrs>().axis, 1);
  EXPECT_EQ(only(unary_model("Softmax", {"b", "10"}, 13).import(), OpKind::kSoftmax)
                .attr<ir::AxisAttrs>()
                .axis,
            -1);
}

TEST(OnnxReaderOps, ReduceMean) {
  OnnxModel m = unary_model("ReduceMean", {"batch", "8", "7", "7"}, 13);
  attr_ints(*m.graph().mutable_node(0), "axes", {2, 3});
  attr_int(*m.graph().mutable_node(0), "keepdims", 0);
  ir::Graph g = m.import();
  const auto& a = only(g, OpKind::kReduceMean).attr<ir::ReduceAttrs>();
  EXPECT_EQ(a.axes, (std::vector<int64_t>{2, 3}));
  EXPECT_FALSE(a.keepdims);
  EXPECT_EQ(output_shape(g), "[batch,8]");
  EXPECT_EQ(output_shape(unary_model("ReduceMean", {"2", "3"}, 11).import()), "[1,1]");
}

OnnxModel pad_model(int opset, const std::vector<int64_t>& pads, const std::string& mode = "",
                    bool with_value = false) {
  OnnxModel m(opset);
  m.input("x", {"batch", "3", "4", "4"})
      .output("y")
      .init_int64s("pads", {static_cast<int64_t>(pads.size())}, pads);
  m.init_floats("value", {}, {-1.5f});
  auto& n = m.node("Pad",
                   with_value ? std::vector<std::string>{"x", "pads", "value"}
                              : std::vector<std::string>{"x", "pads"},
                   {"y"}, "pad");
  if (!mode.empty()) attr_string(n, "mode", mode);
  return m;
}

TEST(OnnxReaderOps, PadConstant) {
  ir::Graph g = pad_model(11, {0, 0, 1, 2, 0, 0, 3, 4}, "constant", true).import();
  const auto& a = only(g, OpKind::kPad).attr<ir::PadAttrs>();
  EXPECT_EQ(a.pads, (std::vector<int64_t>{0, 0, 1, 2, 0, 0, 3, 4}));
  EXPECT_EQ(a.value, -1.5f);
  EXPECT_TRUE(output_shape(g).ends_with(",3,8,10]")) << output_shape(g);
  EXPECT_EQ(only(pad_model(17, {0, 0, 1, 1, 0, 0, 1, 1}).import(), OpKind::kPad)
                .attr<ir::PadAttrs>()
                .value,
            0.0f);
}

TEST(OnnxReaderOps, PadErrors) {
  EXPECT_TRUE(contains(
      import_error(pad_model(13, {0, 0, 1, 1, 0, 0, 1, 1}, "reflect"), ErrorKind::kUnsupported)
          .what(),
      "mode=reflect is not supported"));
  EXPECT_TRUE(contains(
      import_error(pad_model(13, {0, 0, -1, 0, 0, 0, 0, 0}), ErrorKind::kUnsupported).what(),
      "negative pads"));
  EXPECT_TRUE(contains(import_error(pad_model(13, {1, 1}), ErrorKind::kInvalidInput).what(),
                       "a rank-4 input needs 8"));
  OnnxModel attr_form = pad_model(13, {0, 0, 1, 1, 0, 0, 1, 1});
  attr_ints(*attr_form.graph().mutable_node(0), "pads",
            {0, 0, 1, 1, 0, 0, 1, 1});  // the opset < 11 form
  EXPECT_TRUE(contains(import_error(attr_form, ErrorKind::kUnsupported).what(),
                       "attribute 'pads' is not supported"));
}

TEST(OnnxReaderOps, FlattenTransposeConcat) {
  OnnxModel f = unary_model("Flatten", {"batch", "8", "2", "2"});
  EXPECT_EQ(output_shape(f.import()), "[batch,32]");
  attr_int(*f.graph().mutable_node(0), "axis", 2);
  EXPECT_EQ(only(f.import(), OpKind::kFlatten).attr<ir::FlattenAttrs>().axis, 2);
  // A negative axis counts from the rank (found by ONNX's test_flatten_negative_axis*).
  OnnxModel neg = unary_model("Flatten", {"2", "3", "4", "5"});
  attr_int(*neg.graph().mutable_node(0), "axis", -1);
  ir::Graph ng = neg.import();
  EXPECT_EQ(only(ng, OpKind::kFlatten).attr<ir::FlattenAttrs>().axis, 3);
  EXPECT_EQ(output_shape(ng), "[24,5]");
  OnnxModel far = unary_model("Flatten", {"2", "3"});
  attr_int(*far.graph().mutable_node(0), "axis", -3);
  EXPECT_TRUE(
      contains(import_error(far, ErrorKind::kInvalidInput).what(), "axis -3 is out of range"));

  OnnxModel t = unary_model("Transpose", {"batch", "3", "4", "5"});
  attr_ints(*t.graph().mutable_node(0), "perm", {0, 2, 3, 1});
  EXPECT_EQ(output_shape(t.import()), "[batch,4,5,3]");
  EXPECT_EQ(output_shape(unary_model("Transpose", {"2", "3", "4"}).import()), "[4,3,2]");

  OnnxModel c(13);
  c.input("a", {"batch", "3", "4", "4"}).input("b", {"batch", "5", "4", "4"}).output("y");
  attr_int(c.node("Concat", {"a", "b"}, {"y"}, "cat"), "axis", 1);
  ir::Graph g = c.import();
  EXPECT_EQ(only(g, OpKind::kConcat).attr<ir::AxisAttrs>().axis, 1);
  EXPECT_EQ(output_shape(g), "[batch,8,4,4]");
  OnnxModel no_axis(13);
  no_axis.input("a", {"1"}).output("y");
  no_axis.node("Concat", {"a", "a"}, {"y"}, "cat");
  EXPECT_TRUE(
      contains(import_error(no_axis, ErrorKind::kInvalidInput).what(), "'axis' is required"));
}

TEST(OnnxReaderOps, SqueezeAndUnsqueezeForms) {
  // Opset 11: axes attribute.
  OnnxModel s11 = unary_model("Squeeze", {"batch", "8", "1", "1"}, 11);
  attr_ints(*s11.graph().mutable_node(0), "axes", {2, 3});
  EXPECT_EQ(output_shape(s11.import()), "[batch,8]");
  OnnxModel u11 = unary_model("Unsqueeze", {"batch", "8"}, 12);
  attr_ints(*u11.graph().mutable_node(0), "axes", {-1, 1});
  EXPECT_EQ(output_shape(u11.import()), "[batch,1,8,1]");
  // Opset 13: axes input.
  OnnxModel s13(13);
  s13.input("x", {"batch", "8", "1", "1"}).output("y").init_int64s("axes", {2}, {2, 3});
  s13.node("Squeeze", {"x", "axes"}, {"y"}, "sq");
  ir::Graph g = s13.import();
  EXPECT_EQ(only(g, OpKind::kSqueeze).attr<ir::AxesAttrs>().axes, (std::vector<int64_t>{2, 3}));
  OnnxModel u13(13);
  u13.input("x", {"batch", "8"}).output("y").init_int64s("axes", {1}, {0});
  u13.node("Unsqueeze", {"x", "axes"}, {"y"}, "unsq");
  EXPECT_EQ(output_shape(u13.import()), "[1,batch,8]");
  // No axes: every static 1, resolved now.
  ir::Graph all = unary_model("Squeeze", {"1", "8", "1", "3"}, 13).import();
  EXPECT_EQ(only(all, OpKind::kSqueeze).attr<ir::AxesAttrs>().axes, (std::vector<int64_t>{0, 2}));
  EXPECT_TRUE(contains(
      import_error(unary_model("Squeeze", {"batch", "8", "1"}, 13), ErrorKind::kUnsupported).what(),
      "ambiguous"));
  OnnxModel u_attr_13 = unary_model("Unsqueeze", {"2"}, 13);
  attr_ints(*u_attr_13.graph().mutable_node(0), "axes", {0});
  EXPECT_TRUE(contains(import_error(u_attr_13, ErrorKind::kUnsupported).what(),
                       "attribute 'axes' is not supported"));
}

// =============================================================================================
// Constant, Identity, Dropout, Cast

TEST(OnnxReaderOps, ConstantForms) {
  auto value_of = [](const std::function<void(onnx::NodeProto&)>& set) {
    OnnxModel m(13);
    m.output("y", TP::UNDEFINED);  // no declared type: the constants differ in dtype
    set(m.node("Constant", {}, {"c"}, "const"));
    m.node("Identity", {"c"}, {"y"}, "id");
    ir::Graph g = m.import();
    return constant_input(g, only(g, OpKind::kIdentity), 0);
  };
  Tensor t = value_of([](onnx::NodeProto& n) {
    attr_tensor(n, "value", OnnxModel::floats("", {2}, {1, 2}));
  });
  EXPECT_EQ(floats_of(t), (std::vector<float>{1, 2}));
  t = value_of([](onnx::NodeProto& n) { attr_float(n, "value_float", 3.5f); });
  EXPECT_EQ(t.shape(), Dims{});
  EXPECT_EQ(floats_of(t), std::vector<float>{3.5f});
  t = value_of([](onnx::NodeProto& n) { attr_floats(n, "value_floats", {1, 2, 3}); });
  EXPECT_EQ(t.shape(), Dims{3});
  t = value_of([](onnx::NodeProto& n) { attr_int(n, "value_int", -4); });
  EXPECT_EQ(t.dtype(), DType::kInt64);
  EXPECT_EQ(t.to_int64_vector(), std::vector<int64_t>{-4});
  t = value_of([](onnx::NodeProto& n) { attr_ints(n, "value_ints", {5, 6}); });
  EXPECT_EQ(t.to_int64_vector(), (std::vector<int64_t>{5, 6}));
}

TEST(OnnxReaderOps, ConstantErrors) {
  auto error_of = [](const std::function<void(onnx::NodeProto&)>& set, ErrorKind kind) {
    OnnxModel m(13);
    m.output("c");
    set(m.node("Constant", {}, {"c"}, "const"));
    return std::string(import_error(m, kind).what());
  };
  EXPECT_TRUE(contains(error_of(
                           [](onnx::NodeProto& n) {
                             test::add_attr(n, "sparse_value", onnx::AttributeProto::SPARSE_TENSOR);
                           },
                           ErrorKind::kUnsupported),
                       "sparse constants"));
  EXPECT_TRUE(contains(error_of([](onnx::NodeProto& n) { attr_string(n, "value_string", "x"); },
                                ErrorKind::kUnsupported),
                       "string constants"));
  EXPECT_TRUE(contains(error_of(
                           [](onnx::NodeProto& n) {
                             attr_int(n, "value_int", 1);
                             attr_float(n, "value_float", 1);
                           },
                           ErrorKind::kInvalidInput),
                       "exactly one value attribute, has 2"));
  EXPECT_TRUE(contains(error_of(
                           [](onnx::NodeProto& n) {
                             attr_tensor(n, "value", OnnxModel::tensor("", {3}, TP::FLOAT, "abc"));
                           },
                           ErrorKind::kInvalidInput),
                       "raw_data has 3 bytes"));
  // value_float appeared in opset 12.
  OnnxModel old(11);
  old.output("c");
  attr_float(old.node("Constant", {}, {"c"}, "const"), "value_float", 1.0f);
  EXPECT_TRUE(contains(import_error(old, ErrorKind::kUnsupported).what(),
                       "attribute 'value_float' is not supported"));
}

TEST(OnnxReaderOps, DropoutIsIdentityInInference) {
  OnnxModel d11 = unary_model("Dropout", {"batch", "8"}, 11);
  attr_float(*d11.graph().mutable_node(0), "ratio", 0.3f);
  EXPECT_EQ(ops_of(d11.import()), std::vector<OpKind>{OpKind::kIdentity});

  OnnxModel d13(13);
  d13.input("x", {"batch", "8"}).output("y").init_floats("ratio", {}, {0.2f});
  d13.initializer(OnnxModel::tensor("training", {}, TP::BOOL, std::string(1, '\0')));
  d13.node("Dropout", {"x", "ratio", "training"}, {"y", "mask"}, "drop");
  EXPECT_EQ(ops_of(d13.import()), std::vector<OpKind>{OpKind::kIdentity});

  OnnxModel mask_used = d13;
  mask_used.output("mask", TP::BOOL);
  EXPECT_TRUE(contains(import_error(mask_used, ErrorKind::kUnsupported).what(),
                       "mask output of Dropout is used"));

  OnnxModel training(13);
  training.input("x", {"batch", "8"}).output("y");
  training.initializer(OnnxModel::tensor("training", {}, TP::BOOL, std::string(1, '\1')));
  training.node("Dropout", {"x", "", "training"}, {"y"}, "drop");
  EXPECT_TRUE(
      contains(import_error(training, ErrorKind::kUnsupported).what(), "training_mode=true"));
}

TEST(OnnxReaderOps, CastOfRuntimeTensors) {
  OnnxModel same = unary_model("Cast", {"1", "4"});
  attr_int(*same.graph().mutable_node(0), "to", TP::FLOAT);
  EXPECT_EQ(ops_of(same.import()), std::vector<OpKind>{OpKind::kIdentity});
  OnnxModel other = unary_model("Cast", {"1", "4"});
  other.graph().mutable_output(0)->mutable_type()->mutable_tensor_type()->set_elem_type(
      TP::FLOAT16);
  attr_int(*other.graph().mutable_node(0), "to", TP::FLOAT16);
  EXPECT_TRUE(contains(import_error(other, ErrorKind::kUnsupported).what(),
                       "from float32 to float16 is not supported"));
}

TEST(OnnxReaderOps, CastOfConstantsIsEvaluated) {
  // A float16 weight cast to float32, as fp16-converted models do.
  OnnxModel m(13);
  m.input("x", {"1", "2"}).output("y");
  m.initializer(OnnxModel::tensor("w16", {2}, TP::FLOAT16,
                                  test::raw_bytes(std::vector<uint16_t>{0x3c00, 0xc000})));
  attr_int(m.node("Cast", {"w16"}, {"w"}, "cast"), "to", TP::FLOAT);
  m.node("Mul", {"x", "w"}, {"y"}, "mul");
  ir::Graph g = m.import();
  EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kMul});
  const Tensor& w = constant_input(g, only(g, OpKind::kMul), 1);
  EXPECT_EQ(w.dtype(), DType::kFloat32);
  EXPECT_EQ(floats_of(w), (std::vector<float>{1.0f, -2.0f}));

  OnnxModel overflow(13);
  overflow.output("y", TP::INT32);
  overflow.init_floats("f", {1}, {1e20f});
  attr_int(overflow.node("Cast", {"f"}, {"y"}, "cast"), "to", TP::INT32);
  EXPECT_TRUE(contains(import_error(overflow, ErrorKind::kInvalidInput).what(), "out of range"));
  OnnxModel to_string = unary_model("Cast", {"1"});
  attr_int(*to_string.graph().mutable_node(0), "to", TP::STRING);
  EXPECT_TRUE(contains(import_error(to_string, ErrorKind::kUnsupported).what(),
                       "Cast to STRING is not supported"));
}

// =============================================================================================
// Shape chains evaluated at import time

// x -> Relu -> feat; y = Reshape(feat, Concat(Unsqueeze(Gather(Shape(feat), 0)), [-1])), the
// export of `x.view(x.size(0), -1)`.
OnnxModel view_chain(int opset, const test::DimSpec& x_dims, const std::string& shape_of = "feat") {
  OnnxModel m(opset);
  m.input("x", x_dims).output("y");
  m.init_int64s("zero", {}, {0}).init_int64s("minus_one", {1}, {-1}).init_int64s("axes0", {1}, {0});
  m.node("Relu", {"x"}, {"feat"}, "relu");
  m.node("Shape", {shape_of}, {"shape"}, "Shape_3");
  attr_int(m.node("Gather", {"shape", "zero"}, {"batch"}, "Gather_5"), "axis", 0);
  if (opset >= 13)
    m.node("Unsqueeze", {"batch", "axes0"}, {"batch1"}, "Unsqueeze_6");
  else
    attr_ints(m.node("Unsqueeze", {"batch"}, {"batch1"}, "Unsqueeze_6"), "axes", {0});
  attr_int(m.node("Concat", {"batch1", "minus_one"}, {"target"}, "Concat_7"), "axis", 0);
  m.node("Reshape", {"feat", "target"}, {"y"}, "Reshape_8");
  return m;
}

std::vector<int64_t> reshape_target(const ir::Graph& g) {
  return only(g, OpKind::kReshape).attr<ir::ReshapeAttrs>().shape;
}

TEST(OnnxReaderShapeChains, ViewBatchMinusOneBecomesStatic) {
  for (int opset : {11, 13, 17}) {
    ir::Graph g = view_chain(opset, {"batch", "512", "1", "1"}).import();
    EXPECT_EQ(ops_of(g), (std::vector<OpKind>{OpKind::kRelu, OpKind::kReshape})) << opset;
    EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{0, 512})) << opset;
    EXPECT_EQ(output_shape(g), "[batch,512]") << opset;
  }
}

TEST(OnnxReaderShapeChains, DynamicSpatialDimsKeepMinusOne) {
  ir::Graph g = view_chain(13, {"batch", "512", "h", "w"}).import();
  EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{0, -1}));
  EXPECT_EQ(output_shape(g), "[batch,?]");
}

TEST(OnnxReaderShapeChains, AnonymousBatchIsTracked) {
  // Shape() of the graph input, Reshape of a later value: the same (unnamed) dim is recognised.
  ir::Graph g = view_chain(13, {"", "512", "1", "1"}, "x").import();
  EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{0, 512}));
  EXPECT_EQ(g.value(g.outputs()[0]).shape, (ir::Shape{ir::Dim::unknown(), ir::Dim::fixed(512)}));
  ir::verify(g);
}

TEST(OnnxReaderShapeChains, StaticBatchGivesAStaticTarget) {
  onnx_io::OnnxImportOptions o;
  o.input_shapes["x"] = ir::static_shape({4, 512, 1, 1});
  ir::Graph g = view_chain(13, {"batch", "512", "1", "1"}).import(o);
  EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{4, 512}));
  EXPECT_EQ(output_shape(g), "[4,512]");
}

TEST(OnnxReaderShapeChains, ArithmeticOnDims) {
  // Reshape(x, [N, C*H*W]) with N, C, H, W each from Shape(x): [0, -1] -> [0, 48].
  OnnxModel m(13);
  m.input("x", {"n", "3", "4", "4"}).output("y");
  const char* const index[] = {"i0", "i1", "i2", "i3"};
  const char* const dim[] = {"d0", "d1", "d2", "d3"};
  m.node("Shape", {"x"}, {"s"}, "shape");
  for (int i = 0; i < 4; ++i) {
    m.init_int64s(index[i], {1}, {i});
    m.node("Gather", {"s", index[i]}, {dim[i]}, dim[i]);
  }
  m.node("Mul", {"d1", "d2"}, {"m1"}, "mul1");
  m.node("Mul", {"m1", "d3"}, {"chw"}, "mul2");
  m.node("Div", {"d0", "i1"}, {"n_div_1"}, "div");  // N / 1 stays "dim 0 of x"
  attr_int(m.node("Concat", {"n_div_1", "chw"}, {"t"}, "cat"), "axis", 0);
  m.node("Reshape", {"x", "t"}, {"y"}, "reshape");
  ir::Graph g = m.import();
  EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{0, 48}));
  EXPECT_EQ(output_shape(g), "[n,48]");
}

TEST(OnnxReaderShapeChains, ProductOfDynamicDimsBecomesMinusOne) {
  // Reshape(x, [N, C, H*W]) with dynamic H, W: the product is unknown, so it becomes the -1.
  OnnxModel m(13);
  m.input("x", {"n", "3", "h", "w"}).output("y");
  m.init_int64s("idx", {4}, {0, 1, 2, 3});
  m.node("Shape", {"x"}, {"s"}, "shape");
  m.init_int64s("i01", {2}, {0, 1}).init_int64s("i2", {1}, {2}).init_int64s("i3", {1}, {3});
  m.node("Gather", {"s", "i01"}, {"nc"}, "g01");
  m.node("Gather", {"s", "i2"}, {"h"}, "g2");
  m.node("Gather", {"s", "i3"}, {"w"}, "g3");
  m.node("Mul", {"h", "w"}, {"hw"}, "mul");
  attr_int(m.node("Concat", {"nc", "hw"}, {"t"}, "cat"), "axis", 0);
  m.node("Reshape", {"x", "t"}, {"y"}, "reshape");
  ir::Graph g = m.import();
  EXPECT_EQ(reshape_target(g), (std::vector<int64_t>{0, 3, -1}));
  EXPECT_EQ(output_shape(g), "[n,3,?]");
}

TEST(OnnxReaderShapeChains, UnresolvableTargetNamesTheNode) {
  // [H, W, -1] of a tensor with dynamic H and W: two unknowns at positions they do not copy.
  OnnxModel m(13);
  m.input("x", {"n", "3", "h", "w"}).output("y");
  m.init_int64s("i23", {2}, {2, 3}).init_int64s("minus_one", {1}, {-1});
  m.node("Shape", {"x"}, {"s"}, "shape");
  m.node("Gather", {"s", "i23"}, {"hw"}, "gather");
  attr_int(m.node("Concat", {"hw", "minus_one"}, {"t"}, "cat"), "axis", 0);
  m.node("Reshape", {"x", "t"}, {"y"}, "Reshape_9");
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "Reshape_9");
  EXPECT_TRUE(contains(e.what(), "cannot resolve the Reshape target at import time")) << e.what();
}

TEST(OnnxReaderShapeChains, RuntimeTargetIsUnsupported) {
  OnnxModel m(13);
  m.input("x", {"2", "6"}).input("t", {"2"}, TP::INT64).output("y");
  m.node("Reshape", {"x", "t"}, {"y"}, "reshape");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kUnsupported).what(),
                       "target shape (input 1) must be a constant"));
}

TEST(OnnxReaderShapeChains, DynamicValueUsedAsTensor) {
  // Shape(x)[0] cast to float and multiplied into the data: a run-time value the IR cannot hold.
  OnnxModel m(13);
  m.input("x", {"batch", "4"}).output("y").init_int64s("zero", {1}, {0});
  m.node("Shape", {"x"}, {"s"}, "shape");
  m.node("Gather", {"s", "zero"}, {"n"}, "gather");
  m.node("Mul", {"x", "n"}, {"y"}, "Mul_4");
  Error e = import_error(m, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "Mul_4");
  EXPECT_TRUE(contains(e.what(), "depends on dynamic dim 0 of 'x'")) << e.what();
  // With a static batch the same chain is a constant.
  onnx_io::OnnxImportOptions o;
  o.input_shapes["x"] = ir::static_shape({3, 4});
  OnnxModel ints(13);
  ints.input("x", {"batch", "4"}, TP::INT64).output("y", TP::INT64).init_int64s("zero", {1}, {0});
  ints.node("Shape", {"x"}, {"s"}, "shape");
  ints.node("Gather", {"s", "zero"}, {"n"}, "gather");
  ints.node("Mul", {"x", "n"}, {"y"}, "Mul_4");
  ir::Graph g = ints.import(o);
  EXPECT_EQ(constant_input(g, only(g, OpKind::kMul), 1).to_int64_vector(), std::vector<int64_t>{3});
}

TEST(OnnxReaderShapeChains, ShapeOutputAsGraphOutput) {
  OnnxModel m(13);
  m.input("x", {"batch", "4"}).output("s", TP::INT64);
  m.node("Shape", {"x"}, {"s"}, "shape");
  EXPECT_TRUE(contains(import_error(m, ErrorKind::kUnsupported).what(),
                       "graph output 's' is a shape computation"));
  OnnxModel fixed(13);
  fixed.input("x", {"2", "4"}).output("s", TP::INT64);
  fixed.node("Shape", {"x"}, {"s"}, "shape");
  ir::Graph g = fixed.import();
  EXPECT_EQ(g.value(g.outputs()[0]).constant.to_int64_vector(), (std::vector<int64_t>{2, 4}));
}

TEST(OnnxReaderShapeChains, TorchPadListChain) {
  // What torch.onnx.export writes for F.pad(x, (1, 1, 2, 0)) on a 4-D input (verbatim constants).
  for (int opset : {11, 13, 17}) {
    OnnxModel m(opset);
    m.input("x", {"batch", "4", "h", "w"}).output("y");
    auto constant = [&](const std::string& name, const std::vector<int64_t>& dims,
                        const std::vector<int64_t>& v) {
      attr_tensor(m.node("Constant", {}, {name}, name + "_node"), "value",
                  OnnxModel::int64s("", dims, v));
    };
    constant("c0", {1}, {4});
    constant("c1", {4}, {1, 1, 2, 0});
    attr_tensor(m.node("ConstantOfShape", {"c0"}, {"zeros"}, "cos"), "value",
                OnnxModel::int64s("", {1}, {0}));
    attr_int(m.node("Concat", {"c1", "zeros"}, {"cat"}, "concat"), "axis", 0);
    constant("c2", {2}, {-1, 2});
    m.node("Reshape", {"cat", "c2"}, {"pairs"}, "reshape1");
    constant("c3", {1}, {0});
    constant("c4", {1}, {-1});
    constant("c5", {1}, {-9223372036854775807});
    constant("c6", {1}, {-1});
    m.node("Slice", {"pairs", "c4", "c5", "c3", "c6"}, {"flipped"}, "slice");
    attr_ints(m.node("Transpose", {"flipped"}, {"t"}, "transpose"), "perm", {1, 0});
    constant("c7", {1}, {-1});
    m.node("Reshape", {"t", "c7"}, {"flat"}, "reshape2");
    attr_int(m.node("Cast", {"flat"}, {"pads"}, "cast"), "to", TP::INT64);
    m.node("Pad", {"x", "pads", ""}, {"y"}, "Pad_10");
    attr_string(*m.graph().mutable_node(m.graph().node_size() - 1), "mode", "constant");
    ir::Graph g = m.import();
    EXPECT_EQ(ops_of(g), std::vector<OpKind>{OpKind::kPad}) << opset;
    EXPECT_EQ(only(g, OpKind::kPad).attr<ir::PadAttrs>().pads,
              (std::vector<int64_t>{0, 0, 2, 1, 0, 0, 0, 1}))
        << opset;
  }
}

TEST(OnnxReaderShapeChains, ShapeSliceSizeAndConstantOfShape) {
  // Shape(x, start=1, end=-1) at opset 15, Slice and Size of a shape, ConstantOfShape of the
  // result.
  OnnxModel m(15);
  m.input("x", {"batch", "3", "4", "5"}).output("y");
  auto& shape = m.node("Shape", {"x"}, {"s"}, "shape");
  attr_int(shape, "start", 1);
  attr_int(shape, "end", -1);  // [3, 4]
  m.init_int64s("st", {1}, {1}).init_int64s("en", {1}, {2});
  m.node("Slice", {"s", "st", "en"}, {"four"}, "slice");  // [4]
  m.node("Size", {"four"}, {"one"}, "size");              // 1 (scalar)
  m.init_int64s("ax", {1}, {0});
  m.node("Unsqueeze", {"one"}, {"one1"}, "unsq0");
  m.graph().mutable_node(m.graph().node_size() - 1)->add_input("ax");
  attr_int(m.node("Concat", {"s", "one1"}, {"t"}, "cat"), "axis", 0);  // [3, 4, 1]
  attr_tensor(m.node("ConstantOfShape", {"t"}, {"ones"}, "cos"), "value",
              OnnxModel::floats("", {1}, {1.0f}));
  m.node("Add", {"x", "ones"}, {"y"}, "add");
  ir::Graph g = m.import();
  const Tensor& ones = constant_input(g, only(g, OpKind::kAdd), 1);
  EXPECT_EQ(ones.shape(), (Dims{3, 4, 1}));
  EXPECT_EQ(ones.dtype(), DType::kFloat32);
  EXPECT_EQ(output_shape(g), "[batch,3,4,5]");
}

TEST(OnnxReaderShapeChains, GatherAndSliceOnRuntimeTensorsAreUnsupported) {
  OnnxModel g(13);
  g.input("x", {"2", "3"}).output("y").init_int64s("i", {1}, {0});
  g.node("Gather", {"x", "i"}, {"y"}, "Gather_1");
  Error e = import_error(g, ErrorKind::kUnsupported);
  EXPECT_EQ(e.location().node, "Gather_1");
  EXPECT_TRUE(contains(e.what(), "modex's IR has no Gather")) << e.what();
  OnnxModel s(13);
  s.input("x", {"2", "3"}).output("y").init_int64s("a", {1}, {0}).init_int64s("b", {1}, {1});
  s.node("Slice", {"x", "a", "b"}, {"y"}, "slice");
  EXPECT_TRUE(contains(import_error(s, ErrorKind::kUnsupported).what(), "modex's IR has no Slice"));
}

TEST(OnnxReaderShapeChains, EvaluatorErrorsNameTheNode) {
  OnnxModel m(13);
  m.input("x", {"2", "3"}).output("y").init_int64s("i", {1}, {5});
  m.node("Shape", {"x"}, {"s"}, "shape");
  m.node("Gather", {"s", "i"}, {"g"}, "Gather_2");
  m.node("Reshape", {"x", "g"}, {"y"}, "reshape");
  Error e = import_error(m, ErrorKind::kInvalidInput);
  EXPECT_EQ(e.location().node, "Gather_2");
  EXPECT_TRUE(contains(e.what(), "index 5 is out of range")) << e.what();
  EXPECT_TRUE(contains(e.what(), "(opset 13)")) << e.what();

  OnnxModel div(13);
  div.input("x", {"2", "3"}).output("y").init_int64s("z", {1}, {0});
  div.node("Shape", {"x"}, {"s"}, "shape");
  div.node("Div", {"s", "z"}, {"q"}, "div");
  div.node("Reshape", {"x", "q"}, {"y"}, "reshape");
  EXPECT_TRUE(contains(import_error(div, ErrorKind::kInvalidInput).what(), "division by zero"));
}

TEST(OnnxReaderShapeChains, ReshapeAllowZero) {
  OnnxModel copy(14);
  copy.input("x", {"batch", "4", "2"}).output("y").init_int64s("t", {2}, {0, 8});
  attr_int(copy.node("Reshape", {"x", "t"}, {"y"}, "r"), "allowzero", 0);
  EXPECT_EQ(output_shape(copy.import()), "[batch,8]");
  OnnxModel zero(14);
  zero.input("x", {"batch", "4", "2"}).output("y").init_int64s("t", {2}, {0, 8});
  attr_int(zero.node("Reshape", {"x", "t"}, {"y"}, "r"), "allowzero", 1);
  EXPECT_TRUE(contains(import_error(zero, ErrorKind::kUnsupported).what(), "zero-sized tensor"));
}

TEST(OnnxReaderShapeChains, ConstantOfShapeSizes) {
  // Above the evaluator's size a fill becomes an IR constant; absurd sizes are refused.
  auto fill = [](const std::vector<int64_t>& shape) {
    OnnxModel m(13);
    m.output("y", TP::UNDEFINED).init_int64s("s", {static_cast<int64_t>(shape.size())}, shape);
    attr_tensor(m.node("ConstantOfShape", {"s"}, {"c"}, "fill"), "value",
                OnnxModel::floats("", {1}, {0.5f}));
    m.node("Identity", {"c"}, {"y"}, "id");
    return m;
  };
  ir::Graph g = fill({1, 3, 64, 64}).import();
  const Tensor& t = constant_input(g, only(g, OpKind::kIdentity), 0);
  EXPECT_EQ(t.shape(), (Dims{1, 3, 64, 64}));
  EXPECT_EQ(floats_of(t)[12287], 0.5f);
  EXPECT_TRUE(contains(import_error(fill({1 << 20, 1 << 12}), ErrorKind::kUnsupported).what(),
                       "too large to materialise"));
  EXPECT_TRUE(
      contains(import_error(fill({-1, 4}), ErrorKind::kInvalidInput).what(), "negative dimension"));
}

// =============================================================================================
// Size limits: dims, attributes and element counts that could overflow size arithmetic

TEST(OnnxReaderLimits, HugeDimsAndAttributesAreRefused) {
  EXPECT_TRUE(contains(
      import_error(unary_model("Relu", {"2147483648", "2"}), ErrorKind::kInvalidInput).what(),
      "above 2^31 - 1"));
  EXPECT_TRUE(contains(import_error(unary_model("Relu", {"1073741824", "1073741824", "1024"}),
                                    ErrorKind::kInvalidInput)
                           .what(),
                       "too many elements"));
  EXPECT_TRUE(contains(import_error(identity_of(OnnxModel::floats("t", {0, int64_t{1} << 32}, {})),
                                    ErrorKind::kInvalidInput)
                           .what(),
                       "is too large"));
  OnnxModel pads = conv_model({"1", "1", "8", "8"}, 3, 1, 1, "NOTSET");
  attr_ints(*pads.graph().mutable_node(0), "pads", {int64_t{1} << 40, 0, 0, 0});
  EXPECT_TRUE(contains(import_error(pads, ErrorKind::kInvalidInput).what(), "pads must be < 2^31"));
  OnnxModel dilations = conv_model({"1", "1", "8", "8"}, 3, 1, 1, "NOTSET");
  onnx::AttributeProto* d = dilations.graph().mutable_node(0)->mutable_attribute(2);
  ASSERT_EQ(d->name(), "dilations");
  d->set_ints(0, INT64_MAX);
  EXPECT_TRUE(contains(import_error(dilations, ErrorKind::kInvalidInput).what(), "must be < 2^31"));
  OnnxModel groups = conv_model({"1", "1", "8", "8"}, 3, 1, 1, "NOTSET");
  attr_int(*groups.graph().mutable_node(0), "group", INT64_MAX);
  EXPECT_TRUE(contains(import_error(groups, ErrorKind::kInvalidInput).what(), "group must be"));
  OnnxModel reshape(13);
  reshape.input("x", {"batch", "4"}).output("y").init_int64s("t", {3}, {INT32_MAX, INT32_MAX, -1});
  reshape.node("Reshape", {"x", "t"}, {"y"}, "r");
  EXPECT_TRUE(contains(import_error(reshape, ErrorKind::kInvalidInput).what(), "is too large"));
  // Growth through ops is bounded too: every output's element count is checked.
  OnnxModel grow = pad_model(13, {0, 0, INT32_MAX, INT32_MAX, 0, 0, INT32_MAX, INT32_MAX});
  Error e = import_error(grow, ErrorKind::kInvalidInput);
  EXPECT_EQ(e.location().node, "pad");
  EXPECT_TRUE(contains(e.what(), "output 'y' has a dim outside [0, 2^31)")) << e.what();
}

// =============================================================================================
// Round trips: IR -> ONNX (writer) -> IR

// A graph touching every IR op that has a one-to-one ONNX form. Built fresh for each use: the
// writer releases constants as it copies them.
ir::Graph every_op_graph(bool with_hardswish) {
  ir::Graph g;
  auto weights = [&](const std::string& name, Dims shape) {
    Tensor t = Tensor::zeros(DType::kFloat32, shape);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data_mutable<float>()[i] = 0.01f * static_cast<float>(i % 97) - 0.3f;
    return g.add_constant(name, t);
  };
  ir::ValueId x = g.add_input(
      "image", DType::kFloat32,
      {ir::Dim::named("batch"), ir::Dim::fixed(3), ir::Dim::fixed(16), ir::Dim::fixed(16)});
  ir::ConvAttrs ca;
  ca.kernel = {3, 3};
  ca.strides = {2, 2};
  ca.pads = {1, 0, 1, 2};
  ca.dilations = {1, 1};
  ir::ValueId c1 = g.add_node1(
      OpKind::kConv, ca, {x, weights("conv1.w", {8, 3, 3, 3}), weights("conv1.b", {8})}, "conv1");
  ir::ValueId bn = g.add_node1(
      OpKind::kBatchNorm, ir::BatchNormAttrs{1e-3f},
      {c1, weights("bn.s", {8}), weights("bn.b", {8}), weights("bn.m", {8}), weights("bn.v", {8})},
      "bn");
  ir::ValueId r = g.add_node1(OpKind::kRelu, ir::NoAttrs{}, {bn}, "relu");
  ir::ValueId cl = g.add_node1(OpKind::kClip, ir::ClipAttrs{0.0f, 6.0f}, {r}, "relu6");
  ir::ConvAttrs dw;
  dw.kernel = {3, 3};
  dw.pads = {1, 1, 1, 1};
  dw.groups = 8;
  dw.dilations = {2, 2};
  dw.pads = {2, 2, 2, 2};
  ir::ValueId c2 = g.add_node1(OpKind::kConv, dw, {cl, weights("dw.w", {8, 1, 3, 3})}, "dw");
  ir::ValueId lr = g.add_node1(OpKind::kLeakyRelu, ir::LeakyReluAttrs{0.1f}, {c2}, "leaky");
  ir::ValueId pr =
      g.add_node1(OpKind::kPRelu, ir::NoAttrs{}, {lr, weights("prelu.slope", {8, 1, 1})}, "prelu");
  ir::ValueId act = with_hardswish ? g.add_node1(OpKind::kHardSwish, ir::NoAttrs{}, {pr}, "hswish")
                                   : g.add_node1(OpKind::kHardSigmoid,
                                                 ir::HardSigmoidAttrs{0.25f, 0.4f}, {pr}, "hsig");
  ir::ValueId sg = g.add_node1(OpKind::kSigmoid, ir::NoAttrs{}, {act}, "sigmoid");
  ir::ValueId mul = g.add_node1(OpKind::kMul, ir::BinaryAttrs{}, {act, sg}, "mul");
  ir::ValueId th = g.add_node1(OpKind::kTanh, ir::NoAttrs{}, {mul}, "tanh");
  ir::ValueId add =
      g.add_node1(OpKind::kAdd, ir::BinaryAttrs{}, {th, weights("add.c", {8, 1, 1})}, "add");
  ir::ValueId sub =
      g.add_node1(OpKind::kSub, ir::BinaryAttrs{}, {add, weights("sub.c", {1})}, "sub");
  ir::ValueId dv =
      g.add_node1(OpKind::kDiv, ir::BinaryAttrs{}, {sub, weights("div.c", {8, 1, 1})}, "div");
  ir::PoolAttrs mp;
  mp.kernel = {3, 3};
  mp.strides = {2, 2};
  mp.pads = {1, 1, 1, 1};
  mp.ceil_mode = true;
  ir::ValueId maxp = g.add_node1(OpKind::kMaxPool, mp, {dv}, "maxpool");
  ir::PoolAttrs ap;
  ap.kernel = {2, 2};
  ap.strides = {1, 1};
  ap.pads = {0, 0, 1, 1};
  ap.count_include_pad = true;
  ir::ValueId avgp = g.add_node1(OpKind::kAveragePool, ap, {maxp}, "avgpool");
  ir::ValueId padded =
      g.add_node1(OpKind::kPad, ir::PadAttrs{{0, 0, 1, 0, 0, 0, 0, 1}, 0.5f}, {avgp}, "pad");
  ir::ValueId cat = g.add_node1(OpKind::kConcat, ir::AxisAttrs{1}, {padded, padded}, "concat");
  ir::ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, ir::NoAttrs{}, {cat}, "gap");
  ir::ValueId rm = g.add_node1(OpKind::kReduceMean, ir::ReduceAttrs{{2, 3}, false}, {cat}, "mean");
  ir::ValueId sq = g.add_node1(OpKind::kSqueeze, ir::AxesAttrs{{2, 3}}, {gap}, "squeeze");
  ir::ValueId both = g.add_node1(OpKind::kAdd, ir::BinaryAttrs{}, {sq, rm}, "add2");
  ir::ValueId fc = g.add_node1(OpKind::kGemm, ir::GemmAttrs{},
                               {both, weights("fc.w", {6, 16}), weights("fc.b", {6})}, "fc");
  ir::ValueId us = g.add_node1(OpKind::kUnsqueeze, ir::AxesAttrs{{1}}, {fc}, "unsqueeze");
  ir::ValueId tr =
      g.add_node1(OpKind::kTranspose, ir::TransposeAttrs{{0, 2, 1}}, {us}, "transpose");
  ir::ValueId mm =
      g.add_node1(OpKind::kMatMul, ir::NoAttrs{}, {tr, weights("mm.w", {1, 4})}, "matmul");
  ir::ValueId fl = g.add_node1(OpKind::kFlatten, ir::FlattenAttrs{1}, {mm}, "flatten");
  ir::ValueId rs = g.add_node1(OpKind::kReshape, ir::ReshapeAttrs{{0, 6, 4}}, {fl}, "reshape");
  ir::ValueId sm = g.add_node1(OpKind::kSoftmax, ir::AxisAttrs{2}, {rs}, "softmax");
  ir::ValueId id = g.add_node1(OpKind::kIdentity, ir::NoAttrs{}, {sm}, "identity");
  g.add_output(id);
  g.set_output_name(id, "probs");
  g.add_output(fc);
  g.set_output_name(fc, "logits");
  return g;
}

// The writer names a standalone HardSwish node "<name>/hardswish" (it shares the fused-activation
// emitter), so that node's name grows by one suffix per write; everything else keeps its name.
std::string node_name(const ir::Node& n) {
  std::string s = n.name;
  const std::string suffix = "/hardswish";
  while (n.op == OpKind::kHardSwish && s.ends_with(suffix)) s.resize(s.size() - suffix.size());
  return s;
}

void expect_same_graph(const ir::Graph& want, const ir::Graph& got) {
  ASSERT_EQ(want.inputs().size(), got.inputs().size());
  for (size_t i = 0; i < want.inputs().size(); ++i) {
    const ir::Value& a = want.value(want.inputs()[i]);
    const ir::Value& b = got.value(got.inputs()[i]);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape) << a.name;
  }
  std::vector<const ir::Node*> wn = live_nodes(want), gn = live_nodes(got);
  ASSERT_EQ(wn.size(), gn.size());
  for (size_t k = 0; k < wn.size(); ++k) {
    const ir::Node& a = *wn[k];
    const ir::Node& b = *gn[k];
    EXPECT_EQ(a.op, b.op) << a.name;
    EXPECT_EQ(node_name(a), node_name(b));
    EXPECT_TRUE(a.attrs == b.attrs) << a.name;
    ASSERT_EQ(a.inputs.size(), b.inputs.size()) << a.name;
    for (size_t i = 0; i < a.inputs.size(); ++i) {
      const ir::Value& va = want.value(a.inputs[i]);
      const ir::Value& vb = got.value(b.inputs[i]);
      EXPECT_EQ(va.name, vb.name) << a.name << " input " << i;
      EXPECT_EQ(va.is_constant(), vb.is_constant()) << va.name;
    }
    for (size_t i = 0; i < a.outputs.size(); ++i) {
      EXPECT_EQ(want.value(a.outputs[i]).name, got.value(b.outputs[i]).name);
      EXPECT_EQ(want.value(a.outputs[i]).shape, got.value(b.outputs[i]).shape) << a.name;
    }
  }
  ASSERT_EQ(want.outputs().size(), got.outputs().size());
  for (size_t i = 0; i < want.outputs().size(); ++i)
    EXPECT_EQ(want.value(want.outputs()[i]).name, got.value(got.outputs()[i]).name);
}

void expect_same_constants(const ir::Graph& want, const ir::Graph& got) {
  for (const ir::Value& v : want.values()) {
    if (!v.is_constant()) continue;
    auto id = got.find_value(v.name);
    ASSERT_TRUE(id) << v.name;
    const Tensor& t = got.value(*id).constant;
    ASSERT_TRUE(t.defined()) << v.name;
    EXPECT_EQ(t.dtype(), v.constant.dtype());
    EXPECT_EQ(t.shape(), v.constant.shape());
    EXPECT_EQ(bytes_of(t), bytes_of(v.constant)) << v.name;
  }
}

ir::Graph round_trip(ir::Graph g, int opset) {
  onnx_io::OnnxWriteOptions w;
  w.opset = opset;
  w.metadata["arch"] = "every-op";
  std::string bytes = onnx_io::to_onnx_bytes(g, w);
  return onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                          bytes.size(), "round-trip.onnx");
}

TEST(OnnxReaderRoundTrip, EveryOpAtEveryOpset) {
  for (int opset = onnx_io::kMinOpset; opset <= onnx_io::kMaxOpset; ++opset) {
    SCOPED_TRACE("opset " + std::to_string(opset));
    bool hswish = opset >= 14;  // below 14 the writer lowers it to HardSigmoid + Mul
    ir::Graph got = round_trip(every_op_graph(hswish), opset);
    ir::Graph want = every_op_graph(hswish);
    expect_same_graph(want, got);
    expect_same_constants(want, got);
    EXPECT_EQ(got.metadata.at("arch"), "every-op");
    EXPECT_EQ(got.metadata.at("source_opset"), std::to_string(opset));
    ir::verify(got);
  }
}

TEST(OnnxReaderRoundTrip, TwiceGivesTheSameGraph) {
  ir::Graph once = round_trip(every_op_graph(true), 17);
  ir::Graph reference = round_trip(every_op_graph(true), 17);
  ir::Graph twice = round_trip(std::move(once), 17);
  expect_same_graph(reference, twice);
  expect_same_constants(reference, twice);
}

// write_onnx streams each constant from the graph into the file and checks the model afterwards:
// the file must hold exactly the bytes of the in-memory path, and nothing may stay behind when the
// checker refuses.
class OnnxWriterFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("modex_onnx_write_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
  fs::path dir_;
};

TEST_F(OnnxWriterFile, SameBytesAsInMemoryAndConstantsReleased) {
  for (int opset = onnx_io::kMinOpset; opset <= onnx_io::kMaxOpset; ++opset) {
    SCOPED_TRACE("opset " + std::to_string(opset));
    onnx_io::OnnxWriteOptions w;
    w.opset = opset;
    w.metadata["arch"] = "every-op";
    w.doc_string = "streamed";
    ir::Graph g = every_op_graph(opset >= 14);
    // An empty constant still gets its (empty) raw_data field.
    ir::ValueId empty = g.add_constant("empty", Tensor::zeros(DType::kFloat32, {0, 4}));
    ir::ValueId rows = g.add_constant("rows", Tensor::zeros(DType::kFloat32, {2, 4}));
    g.add_output(g.add_node1(OpKind::kConcat, ir::AxisAttrs{0}, {empty, rows}, "cat"));
    ir::Graph in_memory = g;
    const std::string want = onnx_io::to_onnx_bytes(in_memory, w);
    const fs::path path = dir_ / "model.onnx";
    EXPECT_EQ(onnx_io::write_onnx(g, path, w), want.size());
    EXPECT_EQ(read(path), want);
    for (const ir::Value& v : g.values())
      if (v.is_constant()) {
        EXPECT_FALSE(v.constant.defined()) << v.name << " was written but is still held";
      }
    EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  }
}

TEST_F(OnnxWriterFile, WeightsStillToBeReadAreReadAfterTheOthersAreWritten) {
  ir::Graph g;
  ir::ValueId x = g.add_input("x", DType::kFloat32, {ir::Dim::named("batch"), ir::Dim::fixed(3)});
  bool bias_released_first = false;
  ir::ValueId b = ir::kNoValue;
  auto lazy = Buffer::allocate_lazy(4 * 3 * sizeof(float), [&](uint8_t* out) {
    bias_released_first = !g.value(b).constant.defined();
    std::memset(out, 0, 4 * 3 * sizeof(float));
  });
  ir::ValueId w = g.add_constant("w", Tensor::view(lazy, 0, DType::kFloat32, {4, 3}));
  lazy.reset();
  b = g.add_constant("b", Tensor::zeros(DType::kFloat32, {4}));
  g.add_output(g.add_node1(OpKind::kGemm, ir::GemmAttrs{}, {x, w, b}, "fc"));
  onnx_io::OnnxWriteOptions opts;
  onnx_io::write_onnx(g, dir_ / "fc.onnx", opts);
  EXPECT_TRUE(bias_released_first);
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(read(dir_ / "fc.onnx")));
  ASSERT_EQ(m.graph().initializer_size(), 2);
  EXPECT_EQ(m.graph().initializer(0).name(), "b");
  EXPECT_EQ(m.graph().initializer(1).name(), "w");
  EXPECT_EQ(m.graph().initializer(1).raw_data(), std::string(4 * 3 * sizeof(float), '\0'));
}

TEST_F(OnnxWriterFile, CheckerRefusalLeavesNothingBehind) {
  // A graph input without a name passes modex's writer but not the checker.
  ir::Graph g;
  ir::ValueId x = g.add_input("", DType::kFloat32, {ir::Dim::fixed(1), ir::Dim::fixed(3)});
  ir::ValueId weight = g.add_constant("w", Tensor::zeros(DType::kFloat32, {4, 3}));
  g.add_output(g.add_node1(OpKind::kGemm, ir::GemmAttrs{}, {x, weight}, "fc"));
  onnx_io::OnnxWriteOptions w;
  try {
    onnx_io::write_onnx(g, dir_ / "bad.onnx", w);
    FAIL() << "expected the checker to refuse the model";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "ONNX checker")) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(OnnxReaderRoundTrip, LoweredFormsComeBackEquivalent) {
  // HardSwish below opset 14 and Silu are written as two nodes and read back as those two.
  ir::Graph g;
  ir::ValueId x = g.add_input("x", DType::kFloat32, {ir::Dim::named("batch"), ir::Dim::fixed(4)});
  ir::ValueId h = g.add_node1(OpKind::kHardSwish, ir::NoAttrs{}, {x}, "hswish");
  ir::ValueId s = g.add_node1(OpKind::kSilu, ir::NoAttrs{}, {h}, "silu");
  g.add_output(s);
  ir::Graph got = round_trip(std::move(g), 13);
  EXPECT_EQ(ops_of(got), (std::vector<OpKind>{OpKind::kHardSigmoid, OpKind::kMul, OpKind::kSigmoid,
                                              OpKind::kMul}));
  const auto& hs = only(got, OpKind::kHardSigmoid).attr<ir::HardSigmoidAttrs>();
  EXPECT_FLOAT_EQ(hs.alpha, 1.0f / 6.0f);
  EXPECT_FLOAT_EQ(hs.beta, 0.5f);
}

TEST(OnnxReaderRoundTrip, FusedActivationsAndAnonymousDims) {
  ir::Graph g;
  ir::ValueId x =
      g.add_input("x", DType::kFloat32,
                  {ir::Dim::unknown(), ir::Dim::fixed(3), ir::Dim::unknown(), ir::Dim::unknown()});
  ir::ConvAttrs ca;
  ca.kernel = {1, 1};
  ca.activation = ir::Activation::kRelu6;
  ir::ValueId c =
      g.add_node1(OpKind::kConv, ca,
                  {x, g.add_constant("w", Tensor::zeros(DType::kFloat32, {4, 3, 1, 1}))}, "conv");
  g.add_output(c);
  ir::Graph got = round_trip(std::move(g), 11);
  EXPECT_EQ(ops_of(got), (std::vector<OpKind>{OpKind::kConv, OpKind::kClip}));
  EXPECT_EQ(got.value(got.inputs()[0]).shape[0], ir::Dim::unknown());
  EXPECT_EQ(output_shape(got), "[?,4,?,?]");
}

}  // namespace
}  // namespace modex
