// Test helper for the ONNX importer's end-to-end checks (tests/oracle/test_onnx_import.py):
// imports an ONNX file, runs the standard pass pipeline, and writes the graph back as ONNX, so
// ONNX Runtime can run modex's version of a third-party model next to the original.
//
//   onnx_roundtrip IN.onnx OUT.onnx [--opset N] [--input-shape NAME=D0,D1,...] [--no-optimize]
//
// Prints a JSON summary of the imported graph (before the passes) on stdout: {"opset" (written),
// "source_opset", "ops":
// {op: count}, "inputs"/"outputs": [{"name", "shape"}], "attrs": {node: ...} for Reshape, Softmax,
// Pad, Conv and pools}; on an Error prints it to stderr
// and exits 2 (invalid input), 3 (unsupported) or 4 (anything else), writing nothing.
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/onnx/onnx_reader.h"
#include "io/onnx/onnx_writer.h"
#include "passes/passes.h"

namespace {

using modex::ir::Dim;

modex::ir::Shape parse_shape(const std::string& text) {
  modex::ir::Shape s;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string part =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (part.empty()) throw modex::Error("empty dim in --input-shape");
    bool digits = part.find_first_not_of("0123456789") == std::string::npos;
    s.push_back(digits ? Dim::fixed(std::stoll(part)) : Dim::named(part));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return s;
}

nlohmann::json describe(const modex::ir::Graph& g, int opset) {
  nlohmann::json j;
  j["opset"] = opset;  // written
  j["source_opset"] = std::stoi(g.metadata.at("source_opset"));
  std::map<std::string, int> ops;
  nlohmann::json attrs = nlohmann::json::object();
  for (const auto& n : g.nodes()) {
    if (n.dead) continue;
    ops[std::string(modex::ir::op_name(n.op))]++;
    if (n.op == modex::ir::OpKind::kReshape)
      attrs[n.name] = {{"shape", n.attr<modex::ir::ReshapeAttrs>().shape}};
    if (n.op == modex::ir::OpKind::kSoftmax)
      attrs[n.name] = {{"axis", n.attr<modex::ir::AxisAttrs>().axis}};
    if (n.op == modex::ir::OpKind::kPad)
      attrs[n.name] = {{"pads", n.attr<modex::ir::PadAttrs>().pads}};
    if (n.op == modex::ir::OpKind::kConv)
      attrs[n.name] = {{"pads", n.attr<modex::ir::ConvAttrs>().pads}};
    if (n.op == modex::ir::OpKind::kMaxPool || n.op == modex::ir::OpKind::kAveragePool)
      attrs[n.name] = {{"pads", n.attr<modex::ir::PoolAttrs>().pads}};
  }
  j["ops"] = ops;
  j["attrs"] = attrs;
  for (const char* which : {"inputs", "outputs"}) {
    nlohmann::json list = nlohmann::json::array();
    const auto& ids = std::strcmp(which, "inputs") == 0 ? g.inputs() : g.outputs();
    for (auto id : ids)
      list.push_back(
          {{"name", g.value(id).name}, {"shape", modex::ir::shape_to_string(g.value(id).shape)}});
    j[which] = list;
  }
  return j;
}

int usage() {
  std::fprintf(stderr,
               "usage: onnx_roundtrip IN.onnx OUT.onnx [--opset N] [--input-shape NAME=D0,D1,...] "
               "[--no-optimize]\n");
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string in = argv[1], out = argv[2];
  modex::onnx_io::OnnxImportOptions options;
  int opset = 0;
  bool optimize = true;
  try {
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--opset" && i + 1 < argc) {
        opset = std::stoi(argv[++i]);
      } else if (a == "--input-shape" && i + 1 < argc) {
        std::string spec = argv[++i];
        size_t eq = spec.find('=');
        if (eq == std::string::npos) return usage();
        options.input_shapes[spec.substr(0, eq)] = parse_shape(spec.substr(eq + 1));
      } else if (a == "--no-optimize") {
        optimize = false;
      } else {
        return usage();
      }
    }
    modex::ir::Graph g = modex::onnx_io::import_onnx(in, options);
    if (opset == 0) opset = std::stoi(g.metadata.at("source_opset"));
    nlohmann::json summary = describe(g, opset);  // the importer's output, before any pass
    if (optimize) modex::passes::optimize(g);
    modex::onnx_io::OnnxWriteOptions w;
    w.opset = opset;
    modex::onnx_io::write_onnx(g, out, w);
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  } catch (const modex::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.kind() == modex::ErrorKind::kInvalidInput  ? 2
           : e.kind() == modex::ErrorKind::kUnsupported ? 3
                                                        : 4;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 4;
  }
}
