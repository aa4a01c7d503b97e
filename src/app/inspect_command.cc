#include "app/inspect_command.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/pytorch/checkpoint.h"
#include "io/tflite/tflite_reader.h"
#include "models/zoo.h"
#include "passes/passes.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

std::string dims_text(const onnx::ValueInfoProto& vi) {
  std::string s = "[";
  const auto& shape = vi.type().tensor_type().shape();
  for (int i = 0; i < shape.dim_size(); ++i) {
    if (i) s += ",";
    const auto& d = shape.dim(i);
    s += d.has_dim_value() ? std::to_string(d.dim_value()) : (d.dim_param().empty() ? "?" : d.dim_param());
  }
  return s + "]";
}

void inspect_onnx(const InspectOptions& o) {
  std::vector<uint8_t> bytes = read_file_bytes(o.model);
  onnx::ModelProto m;
  if (bytes.size() > static_cast<size_t>(INT32_MAX) || !m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw Error("not a valid ONNX protobuf (truncated or corrupt)").file(o.model.string());
  std::map<std::string, int> ops;
  for (const auto& n : m.graph().node()) ops[n.op_type()]++;
  int64_t params = 0;
  for (const auto& t : m.graph().initializer()) {
    int64_t n = 1;
    for (int64_t d : t.dims()) n *= d;
    params += n;
  }
  int64_t opset = 0;
  for (const auto& os : m.opset_import())
    if (os.domain().empty() || os.domain() == "ai.onnx") opset = os.version();
  Json j;
  j["file"] = o.model.string();
  j["format"] = "onnx";
  j["bytes"] = bytes.size();
  j["ir_version"] = m.ir_version();
  j["opset"] = opset;
  j["producer"] = m.producer_name() + " " + m.producer_version();
  Json ins = Json::array(), outs = Json::array();
  for (const auto& i : m.graph().input()) ins.push_back({{"name", i.name()}, {"shape", dims_text(i)}});
  for (const auto& i : m.graph().output()) outs.push_back({{"name", i.name()}, {"shape", dims_text(i)}});
  j["inputs"] = ins;
  j["outputs"] = outs;
  j["nodes"] = m.graph().node_size();
  j["parameters"] = params;
  j["ops"] = ops;
  Json meta = Json::object();
  for (const auto& p : m.metadata_props()) meta[p.key()] = p.value();
  j["metadata"] = meta;
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << fmt::format("{}  ONNX (ir {}, opset {}, {}), {:.2f} MB\n", o.model.string(), m.ir_version(), opset,
                           j["producer"].get<std::string>(), bytes.size() / 1e6);
  for (const auto& i : ins) std::cout << fmt::format("  input   {} {}\n", i["name"].get<std::string>(), i["shape"].get<std::string>());
  for (const auto& i : outs) std::cout << fmt::format("  output  {} {}\n", i["name"].get<std::string>(), i["shape"].get<std::string>());
  std::cout << fmt::format("  {} nodes, {} parameters\n  ops:", m.graph().node_size(), params);
  for (const auto& [k, v] : ops) std::cout << fmt::format(" {}×{}", k, v);
  std::cout << "\n";
  for (const auto& p : m.metadata_props()) std::cout << fmt::format("  meta    {} = {}\n", p.key(), p.value());
}

std::string int_dims(const std::vector<int32_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(d[i]);
  }
  return s + "]";
}

void inspect_tflite(const InspectOptions& o) {
  std::shared_ptr<Buffer> file = read_file_buffer(o.model);
  tflite_io::TfliteSummary t = [&] {
    try {
      return tflite_io::inspect_tflite(file);
    } catch (Error& e) {
      e.file(o.model.string());
      throw;
    }
  }();
  auto tensor_json = [&](int32_t idx) {
    const auto& ti = t.tensors.at(static_cast<size_t>(idx));
    Json j = {{"name", ti.name}, {"type", ti.type}, {"shape", ti.shape}};
    // -1 in shape_signature marks a dynamic dim (the batch).
    j["shape_signature"] = ti.shape_signature.empty() ? Json(ti.shape) : Json(ti.shape_signature);
    if (!ti.scale.empty()) j["quantization"] = {{"scale", ti.scale}, {"zero_point", ti.zero_point}};
    return j;
  };
  std::map<std::string, int> ops;
  std::map<std::string, int> versions;
  for (const auto& op : t.ops) {
    ops[op.op]++;
    versions[op.op] = std::max(versions[op.op], op.version);
  }
  int64_t params = 0;
  std::map<std::string, int64_t> weight_types;  // constant elements per type
  for (const auto& ti : t.tensors) {
    if (!ti.constant) continue;
    int64_t n = 1;
    for (int32_t d : ti.shape) n *= d;
    params += n;
    weight_types[ti.type] += n;
  }
  // What a reader of the file wants to know first: float32, float16 weights, or int8.
  std::string precision = "float32";
  if (weight_types.count("int8") && weight_types["int8"] * 2 > params) precision = "int8";
  else if (weight_types.count("float16") && weight_types["float16"] * 2 > params) precision = "float16 weights";
  Json j;
  j["file"] = o.model.string();
  j["format"] = "tflite";
  j["bytes"] = file->size();
  j["schema_version"] = t.version;
  j["description"] = t.description;
  j["min_runtime_version"] = t.min_runtime_version;
  j["precision"] = precision;
  Json ins = Json::array(), outs = Json::array();
  for (int32_t i : t.inputs) ins.push_back(tensor_json(i));
  for (int32_t i : t.outputs) outs.push_back(tensor_json(i));
  j["inputs"] = ins;
  j["outputs"] = outs;
  Json sigs = Json::array();
  for (const auto& sg : t.signatures) {
    Json si = Json::object(), so = Json::object();
    for (const auto& [k, v] : sg.inputs) si[k] = t.tensors.at(static_cast<size_t>(v)).name;
    for (const auto& [k, v] : sg.outputs) so[k] = t.tensors.at(static_cast<size_t>(v)).name;
    sigs.push_back({{"key", sg.key}, {"inputs", si}, {"outputs", so}});
  }
  j["signatures"] = sigs;
  j["subgraphs"] = t.subgraph_count;
  j["operators"] = t.ops.size();
  j["tensors"] = t.tensors.size();
  j["parameters"] = params;
  j["weight_types"] = weight_types;
  Json opj = Json::object();
  for (const auto& [k, v] : ops) opj[k] = {{"count", v}, {"version", versions[k]}};
  j["ops"] = opj;
  Json meta = Json::object();
  if (!t.modex_metadata.empty()) {
    Json m = Json::parse(t.modex_metadata, nullptr, false);
    meta = m.is_discarded() ? Json(t.modex_metadata) : m;
  }
  j["metadata"] = meta;
  Json entries = Json::array();
  for (const auto& [k, v] : t.metadata) entries.push_back({{"name", k}, {"bytes", v.size()}});
  j["metadata_entries"] = entries;
  if (o.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << fmt::format("{}  TFLite (schema {}, {}), {:.2f} MB, {}\n", o.model.string(), t.version,
                           t.description.empty() ? "no description" : t.description, file->size() / 1e6, precision);
  auto line = [&](const char* what, int32_t idx) {
    const auto& ti = t.tensors.at(static_cast<size_t>(idx));
    std::string q = ti.scale.empty() ? "" : fmt::format(" scale {} zero_point {}", ti.scale[0], ti.zero_point.empty() ? 0 : ti.zero_point[0]);
    std::cout << fmt::format("  {}  {} {} {}{}\n", what, ti.name, ti.type,
                             int_dims(ti.shape_signature.empty() ? ti.shape : ti.shape_signature), q);
  };
  for (int32_t i : t.inputs) line("input  ", i);
  for (int32_t i : t.outputs) line("output ", i);
  for (const auto& sg : t.signatures) {
    std::cout << fmt::format("  signature {}:", sg.key);
    for (const auto& [k, v] : sg.inputs) std::cout << " in " << k;
    for (const auto& [k, v] : sg.outputs) std::cout << " out " << k;
    std::cout << "\n";
  }
  std::cout << fmt::format("  {} operators, {} tensors, {} parameters", t.ops.size(), t.tensors.size(), params);
  for (const auto& [k, v] : weight_types) std::cout << fmt::format(" ({} {})", v, k);
  std::cout << "\n  ops:";
  for (const auto& [k, v] : ops) std::cout << fmt::format(" {}×{} (v{})", k, v, versions[k]);
  std::cout << "\n";
  if (meta.is_object())
    for (auto it = meta.begin(); it != meta.end(); ++it)
      std::cout << fmt::format("  meta    {} = {}\n", it.key(), it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
}

void inspect_checkpoint(const InspectOptions& o) {
  Checkpoint ckpt = load_checkpoint(o.model);
  models::BuiltModel built = [&] {
    try {
      return models::build_model(ckpt.weights, {});
    } catch (Error& e) {
      e.file(o.model.string());
      throw;
    }
  }();
  int64_t params = 0;
  for (const auto& [k, t] : ckpt.weights.entries()) params += t.numel();
  ir::Graph& g = built.graph;
  passes::optimize(g);
  std::map<std::string, int> ops;
  for (const auto& n : g.nodes()) ops[std::string(ir::op_name(n.op))]++;
  Json j;
  j["file"] = o.model.string();
  j["format"] = ckpt.format;
  j["state_dict_key"] = ckpt.state_dict_key;
  j["stripped_prefixes"] = ckpt.stripped_prefixes;
  j["tensors"] = ckpt.weights.size();
  j["parameters"] = params;
  j["architecture"] = built.architecture;
  j["num_classes"] = built.num_classes;
  j["default_input_size"] = built.default_input_size;
  j["wrapper"] = built.wrapper ? Json{{"backbone_prefix", built.wrapper->backbone_prefix}, {"head", built.wrapper->head}} : Json(nullptr);
  j["config"] = {{"architecture", ckpt.config.architecture ? Json(*ckpt.config.architecture) : Json(nullptr)},
                 {"num_classes", ckpt.config.num_classes ? Json(*ckpt.config.num_classes) : Json(nullptr)},
                 {"input_size", ckpt.config.input_size ? Json(*ckpt.config.input_size) : Json(nullptr)},
                 {"class_names", ckpt.config.class_names}};
  j["ops"] = ops;
  if (o.json) {
    if (o.graph) j["graph"] = ir::dump(g);
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << fmt::format("{}  {} checkpoint, {} tensors, {} parameters\n", o.model.string(), ckpt.format, ckpt.weights.size(), params);
  if (!ckpt.state_dict_key.empty()) std::cout << fmt::format("  weights under '{}'\n", ckpt.state_dict_key);
  for (const auto& p : ckpt.stripped_prefixes) std::cout << fmt::format("  stripped prefix '{}'\n", p);
  std::cout << fmt::format("  architecture {} ({} classes, default input {})\n", built.architecture, built.num_classes, built.default_input_size);
  if (built.wrapper)
    std::cout << fmt::format("  wrapper: backbone '{}' + head '{}'\n", built.wrapper->backbone_prefix, built.wrapper->head);
  if (!ckpt.config.class_names.empty()) {
    std::cout << "  classes:";
    for (const auto& c : ckpt.config.class_names) std::cout << " " << c;
    std::cout << "\n";
  }
  std::cout << "  ops after folding:";
  for (const auto& [k, v] : ops) std::cout << fmt::format(" {}×{}", k, v);
  std::cout << "\n";
  if (o.graph) std::cout << ir::dump(g);
}

}  // namespace

void run_inspect(const InspectOptions& o) {
  if (!fs::exists(o.model)) throw Error("file not found", ErrorKind::kIo).file(o.model.string());
  std::string ext = lower_ext(o.model);
  if (ext == ".onnx") return inspect_onnx(o);
  if (ext == ".tflite") return inspect_tflite(o);
  inspect_checkpoint(o);
}

}  // namespace modex::app
