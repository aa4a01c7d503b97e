#include "app/export_command.h"

#include <fmt/format.h>

#include <chrono>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/onnx/onnx_writer.h"
#include "io/pytorch/checkpoint.h"
#include "models/zoo.h"
#include "passes/passes.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void validate(const ExportOptions& o) {
  if (o.format != "onnx" && o.format != "tflite" && o.format != "both")
    throw Error("--format must be onnx, tflite or both, got '" + o.format + "'");
  if (o.quantize != "none" && o.quantize != "float16" && o.quantize != "int8" && o.quantize != "dynamic")
    throw Error("--quantize must be none, float16, int8 or dynamic, got '" + o.quantize + "'");
  if (o.format != "onnx")
    throw Error("TFLite export is not available in this build of modex yet", ErrorKind::kUnsupported)
        .hint("use --format onnx");
  if (o.quantize != "none")
    throw Error("--quantize " + o.quantize + " applies to TFLite output, which this build cannot write yet",
                ErrorKind::kUnsupported)
        .hint("use --quantize none with --format onnx");
  if (o.opset < onnx_io::kMinOpset || o.opset > onnx_io::kMaxOpset)
    throw Error(fmt::format("--opset must be between {} and {}, got {}", onnx_io::kMinOpset, onnx_io::kMaxOpset, o.opset));
  if (o.input_size && (*o.input_size < 16 || *o.input_size > 4096))
    throw Error(fmt::format("--input-size must be between 16 and 4096, got {}", *o.input_size));
  if (o.num_classes && *o.num_classes < 1) throw Error("--num-classes must be positive");
  if (o.device != "cpu") throw Error("--device must be cpu (modex exports on the CPU), got '" + o.device + "'");
}

Json preprocessing_json(int64_t input_size, const CheckpointConfig& cfg) {
  Json p;
  p["input_size"] = input_size;
  p["resize"] = "resize_center_crop";
  p["resize_size"] = static_cast<int64_t>(input_size * 256 / 224);
  p["layout"] = "NCHW";
  p["color"] = "RGB";
  p["scale"] = 1.0 / 255.0;
  // The checkpoint's own statistics when its config has them; ImageNet's otherwise (what
  // torchvision's pretrained weights and most fine-tuned classifiers expect).
  bool own = cfg.mean.size() == 3 && cfg.std.size() == 3;
  p["mean"] = own ? Json(cfg.mean) : Json{0.485, 0.456, 0.406};
  p["std"] = own ? Json(cfg.std) : Json{0.229, 0.224, 0.225};
  p["normalization_source"] = own ? "checkpoint config" : "imagenet default";
  return p;
}

}  // namespace

void run_export(const ExportOptions& o) {
  validate(o);
  auto t0 = std::chrono::steady_clock::now();
  if (!fs::exists(o.checkpoint))
    throw Error("checkpoint file not found", ErrorKind::kIo).file(o.checkpoint.string());
  // The hash streams the file on the second core while the first parses it.
  std::future<std::string> sha = std::async(std::launch::async, [&] { return sha256_file(o.checkpoint); });

  Checkpoint ckpt = load_checkpoint(o.checkpoint);
  double t_load = seconds_since(t0);

  models::BuildOptions bo;
  bo.arch = o.arch;
  bo.num_classes = o.num_classes ? o.num_classes : ckpt.config.num_classes;
  models::BuiltModel built = [&] {
    try {
      return models::build_model(ckpt.weights, bo);
    } catch (Error& e) {
      e.file(o.checkpoint.string());
      throw;
    }
  }();
  ckpt.weights.clear();  // the graph holds what it needs; drop the rest
  if (!o.arch && ckpt.config.architecture && *ckpt.config.architecture != built.architecture)
    std::cerr << fmt::format("warning: the checkpoint's config names architecture '{}', but its weights are {}\n",
                             *ckpt.config.architecture, built.architecture);
  double t_build = seconds_since(t0);

  int64_t input_size = o.input_size ? *o.input_size : ckpt.config.input_size.value_or(built.default_input_size);
  ir::Graph& g = built.graph;
  {
    // Validate every shape at the nominal size (dynamic graphs only check what is static).
    ir::Graph concrete = g;
    try {
      concrete.infer_shapes({{"batch", 1}, {"height", input_size}, {"width", input_size}});
    } catch (Error& e) {
      e.hint(fmt::format("the model does not accept {}x{} inputs; choose another --input-size", input_size, input_size));
      throw;
    }
  }
  passes::optimize(g);
  if (o.static_shapes) g.infer_shapes({{"batch", 1}, {"height", input_size}, {"width", input_size}});
  double t_passes = seconds_since(t0);

  std::string stem = o.name ? *o.name : o.checkpoint.stem().string();
  if (stem.empty()) throw Error("empty output name");
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) throw Error("cannot create output directory: " + ec.message(), ErrorKind::kIo).file(o.output_dir.string());

  Json meta;
  meta["architecture"] = built.architecture;
  meta["num_classes"] = built.num_classes;
  meta["class_names"] = ckpt.config.class_names;
  meta["preprocessing"] = preprocessing_json(input_size, ckpt.config);
  meta["source_file"] = o.checkpoint.filename().string();
  meta["source_sha256"] = sha.get();
  meta["modex_version"] = MODEX_VERSION;

  onnx_io::OnnxWriteOptions wo;
  wo.opset = o.opset;
  wo.graph_name = built.architecture;
  for (auto it = meta.begin(); it != meta.end(); ++it)
    wo.metadata[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();

  fs::path onnx_path = o.output_dir / (stem + ".onnx");
  fs::path sidecar_path = o.output_dir / (stem + ".json");
  std::vector<ExportedFile> written;

  Json sidecar = meta;
  // A whole model under one prefix (e.g. Lightning's "model.") has no separate head: null.
  sidecar["wrapper"] = built.wrapper ? Json{{"backbone_prefix", built.wrapper->backbone_prefix},
                                            {"head", built.wrapper->head.empty() ? Json(nullptr) : Json(built.wrapper->head)}}
                                     : Json(nullptr);
  sidecar["checkpoint"] = {{"format", ckpt.format}, {"state_dict_key", ckpt.state_dict_key},
                           {"stripped_prefixes", ckpt.stripped_prefixes}};
  Json outputs = Json::array();
  outputs.push_back({{"format", "onnx"},
                     {"file", onnx_path.filename().string()},
                     {"opset", o.opset},
                     {"input", {{"name", "image"}, {"shape", o.static_shapes ? Json{1, 3, input_size, input_size} : Json{"batch", 3, "height", "width"}}}},
                     {"output", {{"name", "logits"}, {"shape", o.static_shapes ? Json{1, built.num_classes} : Json{"batch", built.num_classes}}}}});
  sidecar["outputs"] = outputs;

  // Both files go to temporaries first and are renamed only when both are complete.
  AtomicFile onnx_file(onnx_path);
  size_t onnx_bytes = onnx_io::write_onnx_to(g, onnx_file, wo);
  AtomicFile sidecar_file(sidecar_path);
  sidecar_file.write(sidecar.dump(2) + "\n");
  onnx_file.commit();
  sidecar_file.commit();
  written.push_back({"onnx", onnx_path, onnx_bytes});
  double t_total = seconds_since(t0);

  if (o.json) {
    Json r;
    r["architecture"] = built.architecture;
    r["num_classes"] = built.num_classes;
    r["input_size"] = input_size;
    r["wrapper"] = sidecar["wrapper"];
    Json outs = Json::array();
    for (const auto& w : written) outs.push_back({{"format", w.format}, {"path", w.path.string()}, {"bytes", w.bytes}});
    r["outputs"] = outs;
    r["sidecar"] = sidecar_path.string();
    r["seconds"] = t_total;
    r["timings"] = {{"load", t_load}, {"build", t_build - t_load}, {"passes", t_passes - t_build}, {"write", t_total - t_passes}};
    std::cout << r.dump(2) << "\n";
    return;
  }
  std::cout << fmt::format("checkpoint   {} ({})\n", o.checkpoint.string(), ckpt.format);
  std::cout << fmt::format("architecture {}{}, {} classes, input {}x{}\n", built.architecture,
                           built.wrapper ? " (backbone '" + built.wrapper->backbone_prefix + "' + head '" + built.wrapper->head + "')" : "",
                           built.num_classes, input_size, input_size);
  for (const auto& w : written)
    std::cout << fmt::format("wrote        {} ({:.1f} MB, {} opset {})\n", w.path.string(), w.bytes / 1e6, w.format, o.opset);
  std::cout << fmt::format("wrote        {}\n", sidecar_path.string());
  std::cout << fmt::format("done in {:.3f} s\n", t_total);
  if (o.verbose)
    std::cout << fmt::format("  load {:.3f} s, build {:.3f} s, passes {:.3f} s, write {:.3f} s\n", t_load, t_build - t_load,
                             t_passes - t_build, t_total - t_passes);
}

}  // namespace modex::app
