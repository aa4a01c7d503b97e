// Writes the TFLite test cases of tflite_test_graphs.h for the LiteRT oracle test
// (tests/oracle/test_tflite_ops.py):
//
//   tflite_testgen OUT_DIR
//
// OUT_DIR/<case>.tflite (and <case>.fp16.tflite with float16 weights), each case's constants as
// raw little-endian float32 in OUT_DIR/<case>/<n>.bin, and OUT_DIR/manifest.json describing each
// IR graph (nodes, typed attributes, constants, input and output dims at batch 1) so that the
// Python test can compute the reference with numpy, independently of modex.
//
// Also three hand-made models that exercise the LiteRT harness beyond what the writer emits
// today: int8 tensors in and out (QUANTIZE / DEQUANTIZE) and a custom op LiteRT cannot prepare;
// and the int8 graphs of tests/runtime/int8_test_graphs.h as OUT_DIR/int8_<case>.tflite
// (manifest "int8": model, node count, input and output dtype, dims and params).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <variant>

#include "../runtime/int8_test_graphs.h"
#include "core/error.h"
#include "io/tflite/tflite_ops.h"
#include "io/tflite/tflite_schema.h"
#include "io/tflite/tflite_writer.h"
#include "tflite_test_graphs.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace modex;

namespace {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

std::string layout_name(ir::Layout l) { return l == ir::Layout::kNHWC ? "NHWC" : "NCHW"; }

json attrs_json(const ir::OpAttrs& attrs) {
  return std::visit(Overloaded{
                        [](const ir::NoAttrs&) { return json::object(); },
                        [](const ir::ConvAttrs& a) {
                          return json{{"kernel", a.kernel},
                                      {"strides", a.strides},
                                      {"pads", a.pads},
                                      {"dilations", a.dilations},
                                      {"groups", a.groups},
                                      {"activation", ir::activation_name(a.activation)},
                                      {"layout", layout_name(a.layout)}};
                        },
                        [](const ir::BatchNormAttrs& a) {
                          return json{{"epsilon", a.epsilon}};
                        },
                        [](const ir::GemmAttrs& a) {
                          return json{{"activation", ir::activation_name(a.activation)}};
                        },
                        [](const ir::BinaryAttrs& a) {
                          return json{{"activation", ir::activation_name(a.activation)}};
                        },
                        [](const ir::ClipAttrs& a) {
                          return json{{"min", a.min}, {"max", a.max}};
                        },
                        [](const ir::LeakyReluAttrs& a) {
                          return json{{"alpha", a.alpha}};
                        },
                        [](const ir::HardSigmoidAttrs& a) {
                          return json{{"alpha", a.alpha}, {"beta", a.beta}};
                        },
                        [](const ir::PoolAttrs& a) {
                          return json{{"kernel", a.kernel},
                                      {"strides", a.strides},
                                      {"pads", a.pads},
                                      {"dilations", a.dilations},
                                      {"ceil_mode", a.ceil_mode},
                                      {"count_include_pad", a.count_include_pad},
                                      {"layout", layout_name(a.layout)}};
                        },
                        [](const ir::ReduceAttrs& a) {
                          return json{{"axes", a.axes}, {"keepdims", a.keepdims}};
                        },
                        [](const ir::FlattenAttrs& a) {
                          return json{{"axis", a.axis}};
                        },
                        [](const ir::ReshapeAttrs& a) {
                          return json{{"shape", a.shape}};
                        },
                        [](const ir::AxesAttrs& a) {
                          return json{{"axes", a.axes}};
                        },
                        [](const ir::TransposeAttrs& a) {
                          return json{{"perm", a.perm}};
                        },
                        [](const ir::AxisAttrs& a) {
                          return json{{"axis", a.axis}};
                        },
                        [](const ir::PadAttrs& a) {
                          return json{{"pads", a.pads}, {"value", a.value}};
                        },
                        [](const ir::QuantizeAttrs& a) {
                          return json{{"dtype", std::string(dtype_name(a.dtype))}};
                        },
                    },
                    attrs);
}

json dims_at_batch1(const ir::Graph& concrete, ir::ValueId v) {
  auto dims = ir::to_dims(concrete.value(v).shape);
  if (!dims) throw Error("not static at batch 1").tensor(concrete.value(v).name);
  return *dims;
}

json describe(const test::TfliteCase& c, const fs::path& out_dir) {
  const ir::Graph& g = c.graph;
  ir::Graph concrete = g;
  concrete.infer_shapes({{"batch", 1}});
  fs::create_directories(out_dir / c.name);
  json constants = json::object();
  json nodes = json::array();
  auto name_of = [&](ir::ValueId v) {
    return v == ir::kNoValue ? json(nullptr) : json(g.value(v).name);
  };
  int index = 0;
  for (const ir::Node& n : g.nodes()) {
    if (n.dead) continue;
    json inputs = json::array();
    for (ir::ValueId in : n.inputs) {
      inputs.push_back(name_of(in));
      if (in == ir::kNoValue || !g.value(in).is_constant() || constants.contains(g.value(in).name))
        continue;
      const Tensor t = g.value(in).constant.to(DType::kFloat32);
      std::string file = c.name + "/" + std::to_string(index++) + ".bin";
      std::ofstream(out_dir / file, std::ios::binary)
          .write(reinterpret_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.nbytes()));
      constants[g.value(in).name] = {{"file", file}, {"dims", t.shape()}};
    }
    json outputs = json::array();
    for (ir::ValueId o : n.outputs) outputs.push_back(name_of(o));
    nodes.push_back({{"op", ir::op_name(n.op)},
                     {"name", n.name},
                     {"inputs", inputs},
                     {"outputs", outputs},
                     {"attrs", attrs_json(n.attrs)}});
  }
  json inputs = json::array(), outputs = json::array();
  for (ir::ValueId v : g.inputs())
    inputs.push_back({{"name", g.value(v).name}, {"dims", dims_at_batch1(concrete, v)}});
  for (ir::ValueId v : g.outputs())
    outputs.push_back({{"name", g.value(v).name}, {"dims", dims_at_batch1(concrete, v)}});
  return {{"name", c.name}, {"inputs", inputs},       {"outputs", outputs},
          {"nodes", nodes}, {"constants", constants}, {"expect_ops", c.expect_ops}};
}

namespace fb = tflite_io::fb;
namespace fbs = flatbuffers;

struct HarnessTensor {
  const char* name;
  fb::TensorType type;
  float scale = 0.0f;  // quantized when non-zero
  int64_t zero_point = 0;
};

// One chain of single-input ops over [1, 8] tensors: t0 -op0-> t1 -op1-> t2 ...; the signature
// input is t0, the outputs are the listed tensors.
std::string harness_model(const std::vector<HarnessTensor>& tensors,
                          const std::vector<std::pair<int32_t, const char*>>& ops,
                          const std::vector<int32_t>& outputs) {
  fbs::FlatBufferBuilder fbb;
  std::vector<fbs::Offset<fb::Buffer>> buffers{fb::CreateBuffer(fbb)};
  std::vector<int32_t> shape{1, 8};
  std::vector<fbs::Offset<fb::Tensor>> ts;
  for (const HarnessTensor& t : tensors) {
    fbs::Offset<fb::QuantizationParameters> q;
    if (t.scale != 0.0f) {
      std::vector<float> scale{t.scale};
      std::vector<int64_t> zero_point{t.zero_point};
      q = fb::CreateQuantizationParametersDirect(fbb, nullptr, nullptr, &scale, &zero_point);
    }
    ts.push_back(fb::CreateTensorDirect(fbb, &shape, t.type, 0, t.name, q));
  }
  std::vector<fbs::Offset<fb::OperatorCode>> codes;
  std::vector<fbs::Offset<fb::Operator>> operators;
  for (size_t i = 0; i < ops.size(); ++i) {
    auto [code, custom] = ops[i];
    // DEQUANTIZE of int8 is version 2; QUANTIZE to int8 and the custom op are version 1.
    int version = code == static_cast<int32_t>(tflite_io::BuiltinOp::kDequantize) ? 2 : 1;
    codes.push_back(
        fb::CreateOperatorCodeDirect(fbb, static_cast<int8_t>(code), custom, version, code));
    std::vector<int32_t> in{static_cast<int32_t>(i)}, out{static_cast<int32_t>(i + 1)};
    operators.push_back(fb::CreateOperatorDirect(fbb, static_cast<uint32_t>(i), &in, &out));
  }
  std::vector<int32_t> inputs{0};
  std::vector<fbs::Offset<fb::SubGraph>> subgraphs{
      fb::CreateSubGraphDirect(fbb, &ts, &inputs, &outputs, &operators, "main")};
  std::vector<fbs::Offset<fb::TensorMap>> sig_in{
      fb::CreateTensorMapDirect(fbb, tensors[0].name, 0)};
  std::vector<fbs::Offset<fb::TensorMap>> sig_out;
  for (int32_t o : outputs)
    sig_out.push_back(fb::CreateTensorMapDirect(fbb, tensors[static_cast<size_t>(o)].name,
                                                static_cast<uint32_t>(o)));
  std::vector<fbs::Offset<fb::SignatureDef>> sigs{
      fb::CreateSignatureDefDirect(fbb, &sig_in, &sig_out, "serving_default", 0)};
  auto model = fb::CreateModelDirect(fbb, 3, &codes, &subgraphs, "modex harness fixture", &buffers,
                                     nullptr, nullptr, &sigs);
  fb::FinishModelBuffer(fbb, model);
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

json write_harness_models(const fs::path& out_dir) {
  constexpr int32_t kQuantize = static_cast<int32_t>(tflite_io::BuiltinOp::kQuantize);
  constexpr int32_t kDequantize = static_cast<int32_t>(tflite_io::BuiltinOp::kDequantize);
  constexpr int32_t kCustom = static_cast<int32_t>(tflite_io::BuiltinOp::kCustom);
  json models = json::array();
  auto add = [&](const char* name, const std::string& bytes, json inputs, json outputs) {
    write_file_atomic(out_dir / (std::string(name) + ".tflite"), bytes);
    models.push_back({{"name", name},
                      {"model", std::string(name) + ".tflite"},
                      {"inputs", inputs},
                      {"outputs", outputs}});
  };
  // float -> QUANTIZE (int8, scale 0.5, zero point -3) -> DEQUANTIZE -> float; both are outputs.
  add("harness_quantize",
      harness_model({{"image", fb::TensorType::FLOAT32},
                     {"quantized", fb::TensorType::INT8, 0.5f, -3},
                     {"logits", fb::TensorType::FLOAT32}},
                    {{kQuantize, nullptr}, {kDequantize, nullptr}}, {2, 1}),
      json::array({{{"name", "image"}, {"dtype", "float32"}}}),
      json::array(
          {{{"name", "logits"}, {"dtype", "float32"}},
           {{"name", "quantized"}, {"dtype", "int8"}, {"scale", 0.5}, {"zero_point", -3}}}));
  // int8 in (scale 0.25, zero point 5) -> DEQUANTIZE -> float.
  add("harness_int8_input",
      harness_model(
          {{"image", fb::TensorType::INT8, 0.25f, 5}, {"logits", fb::TensorType::FLOAT32}},
          {{kDequantize, nullptr}}, {1}),
      json::array({{{"name", "image"}, {"dtype", "int8"}, {"scale", 0.25}, {"zero_point", 5}}}),
      json::array({{{"name", "logits"}, {"dtype", "float32"}}}));
  // A custom op LiteRT has no kernel for: the harness must report the failure.
  add("harness_custom_op",
      harness_model({{"image", fb::TensorType::FLOAT32}, {"logits", fb::TensorType::FLOAT32}},
                    {{kCustom, "ModexNoSuchOp"}}, {1}),
      json::array({{{"name", "image"}, {"dtype", "float32"}}}),
      json::array({{{"name", "logits"}, {"dtype", "float32"}}}));
  return models;
}

// The int8 graphs of tests/runtime/int8_test_graphs.h as OUT_DIR/int8_<case>.tflite, for the
// runtime's LiteRT parity test (tests/oracle/test_runtime_int8.py).
json write_int8_models(const fs::path& out_dir) {
  json models = json::array();
  auto io = [](const ir::Value& v) {
    json j{{"name", v.name}, {"dtype", dtype_name(v.dtype)}};
    if (auto d = ir::to_dims(v.shape)) j["dims"] = *d;
    if (v.quant) j["scale"] = v.quant->scale[0], j["zero_point"] = v.quant->zero_point[0];
    return j;
  };
  for (const test::Int8Case& c : test::int8_cases()) {
    if (!c.litert) continue;
    std::string file = "int8_" + c.name + ".tflite";
    tflite_io::write_tflite(c.graph, out_dir / file, {});
    models.push_back({{"name", c.name},
                      {"model", file},
                      {"nodes", c.graph.nodes().size()},
                      {"input", io(c.graph.value(c.graph.inputs()[0]))},
                      {"output", io(c.graph.value(c.graph.outputs()[0]))}});
  }
  return models;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tflite_testgen OUT_DIR\n");
    return 2;
  }
  const fs::path out_dir(argv[1]);
  try {
    fs::create_directories(out_dir);
    json cases = json::array();
    for (const test::TfliteCase& c : test::tflite_cases()) {
      json d = describe(c, out_dir);
      tflite_io::TfliteWriteOptions options;
      options.metadata_json = json{{"case", c.name}}.dump();
      json models = json::object();
      std::string file = c.name + ".tflite";
      tflite_io::write_tflite(c.graph, out_dir / file, options);
      models["float32"] = file;
      if (c.fp16) {
        options.weights = tflite_io::WeightFormat::kFloat16;
        file = c.name + ".fp16.tflite";
        tflite_io::write_tflite(c.graph, out_dir / file, options);
        models["float16"] = file;
      }
      d["models"] = models;
      cases.push_back(d);
    }
    json harness = write_harness_models(out_dir);
    json int8 = write_int8_models(out_dir);
    std::ofstream(out_dir / "manifest.json")
        << json{{"cases", cases}, {"harness", harness}, {"int8", int8}}.dump(1) << "\n";
    std::printf("%zu cases written to %s\n", cases.size(), out_dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tflite_testgen: %s\n", e.what());
    return 1;
  }
  return 0;
}
