#include "app/export_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/onnx/onnx_reader.h"
#include "io/onnx/onnx_writer.h"
#include "io/pytorch/checkpoint.h"
#include "io/tflite/tflite_writer.h"
#include "models/metadata.h"
#include "models/zoo.h"
#include "passes/passes.h"
#include "quant/quantize.h"
#include "app/quantize_calibration.h"
#include "app/quantize_qdq.h"
#include "app/quantize_report.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool wants(const ExportOptions& o, const std::string& q) {
  return std::find(o.quantize.begin(), o.quantize.end(), q) != o.quantize.end();
}
bool writes_onnx(const ExportOptions& o) { return o.format == "onnx" || o.format == "both"; }
bool writes_tflite(const ExportOptions& o) { return o.format == "tflite" || o.format == "both"; }

void validate(const ExportOptions& o) {
  if (o.checkpoint.empty() == o.onnx.empty())
    throw Error("give exactly one source: --checkpoint FILE (PyTorch) or --onnx FILE");
  if (o.format != "onnx" && o.format != "tflite" && o.format != "both")
    throw Error("--format must be onnx, tflite or both, got '" + o.format + "'");
  if (o.quantize.empty()) throw Error("--quantize needs at least one of none, float16, int8, dynamic");
  for (const auto& q : o.quantize)
    if (q != "none" && q != "float16" && q != "int8" && q != "dynamic")
      throw Error("--quantize must be none, float16, int8 or dynamic, got '" + q + "'");
  for (const char* q : {"float16", "dynamic"})
    if (o.format == "onnx" && wants(o, q))
      throw Error(fmt::format("--quantize {} applies to TFLite output; ONNX is written in float32", q))
          .hint("use --format tflite or --format both");
  if (o.format == "onnx" && o.nchw_input)
    throw Error("--nchw-input applies to TFLite output").hint("use --format tflite or --format both");
  if (wants(o, "int8")) {
    if (!o.dataset_dir && !o.calibration_dir)
      throw Error("--quantize int8 needs representative images to calibrate on")
          .hint("give --dataset-dir DIR (DIR/{val,test,train}/<class>/...) or --calibration-dir DIR (a flat folder)");
    if (o.dataset_dir && o.calibration_dir) throw Error("give either --dataset-dir or --calibration-dir, not both");
    if (o.num_calib_samples < 1 || o.num_calib_samples > 100000)
      throw Error(fmt::format("--num-calib-samples must be between 1 and 100000, got {}", o.num_calib_samples));
    quant::parse_calibration_method(o.calibration);
    quant::parse_io_type(o.io_type);
    dataset::parse_dataset_type(o.dataset_type);
    if (o.report_images < 1 || o.report_images > 100000)
      throw Error(fmt::format("--report-images must be between 1 and 100000, got {}", o.report_images));
  }
  if (o.min_agreement && !(*o.min_agreement >= 0.0 && *o.min_agreement <= 1.0))
    throw Error(fmt::format("--min-agreement must be a fraction between 0 and 1, got {}", *o.min_agreement))
        .hint("0.99 fails the export when int8 and float disagree on more than 1% of the held-out images");
  if (o.min_agreement && !wants(o, "int8")) throw Error("--min-agreement applies to --quantize int8");
  if (o.opset < onnx_io::kMinOpset || o.opset > onnx_io::kMaxOpset)
    throw Error(fmt::format("--opset must be between {} and {}, got {}", onnx_io::kMinOpset, onnx_io::kMaxOpset, o.opset));
  if (o.input_size && (*o.input_size < 1 || *o.input_size > 8192))
    throw Error(fmt::format("--input-size must be between 1 and 8192, got {}", *o.input_size));
  if (o.num_classes && *o.num_classes < 1) throw Error("--num-classes must be positive");
  if (o.device != "cpu") throw Error("--device must be cpu (modex exports on the CPU), got '" + o.device + "'");
}

// What every output is made from: the optimised NCHW graph and what is known about it.
struct Source {
  ir::Graph graph;
  std::string kind;  // checkpoint format ("zip", "safetensors", ...) or "onnx"
  std::string architecture;
  int64_t num_classes = 0;
  int64_t input_height = 224, input_width = 224;
  Json meta;     // embedded in every output (metadata_props / TFLite metadata)
  Json sidecar;  // extra sidecar entries about the source
  std::string summary;
  double t_load = 0, t_build = 0;
  // The source file's SHA-256 (meta's "source_sha256"), computed on another core while the model
  // is loaded and optimised (which reads a checkpoint's weights as it goes).
  std::shared_future<std::string> sha256;
};

Source load_checkpoint_source(const ExportOptions& o, Clock::time_point t0) {
  if (!fs::exists(o.checkpoint)) throw Error("checkpoint file not found", ErrorKind::kIo).file(o.checkpoint.string());
  // The hash streams the file on the second core while the first parses it.
  Source s;
  s.sha256 = std::async(std::launch::async, [path = o.checkpoint] { return sha256_file(path); }).share();
  Checkpoint ckpt = load_checkpoint(o.checkpoint);
  s.t_load = seconds_since(t0);

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
  s.t_build = seconds_since(t0);

  int64_t size = o.input_size ? *o.input_size : models::nominal_input_size(built, ckpt.config);
  s.input_height = s.input_width = size;
  s.graph = std::move(built.graph);
  s.kind = ckpt.format;
  s.architecture = built.architecture;
  s.num_classes = built.num_classes;
  s.meta = models::checkpoint_metadata(built, ckpt.config, size);
  s.meta["source_file"] = o.checkpoint.filename().string();
  s.meta["modex_version"] = MODEX_VERSION;
  // A whole model under one prefix (e.g. Lightning's "model.") has no separate head: null.
  s.sidecar["wrapper"] = built.wrapper ? Json{{"backbone_prefix", built.wrapper->backbone_prefix},
                                              {"head", built.wrapper->head.empty() ? Json(nullptr) : Json(built.wrapper->head)}}
                                       : Json(nullptr);
  s.sidecar["checkpoint"] = {{"format", ckpt.format}, {"state_dict_key", ckpt.state_dict_key},
                             {"stripped_prefixes", ckpt.stripped_prefixes}};
  s.summary = fmt::format("checkpoint   {} ({})\narchitecture {}{}, {} classes", o.checkpoint.string(), ckpt.format,
                          built.architecture,
                          built.wrapper ? " (backbone '" + built.wrapper->backbone_prefix + "' + head '" + built.wrapper->head + "')" : "",
                          built.num_classes);
  return s;
}

// Metadata values of an ONNX file: JSON text (lists, objects, numbers) parsed, strings kept.
Json metadata_value(const std::string& v) {
  if (!v.empty() && (v[0] == '[' || v[0] == '{' || v[0] == '-' || std::isdigit(static_cast<unsigned char>(v[0])))) {
    Json j = Json::parse(v, nullptr, false);
    if (!j.is_discarded()) return j;
  }
  return v;
}

Source load_onnx_source(const ExportOptions& o, Clock::time_point t0) {
  if (!fs::exists(o.onnx)) throw Error("ONNX file not found", ErrorKind::kIo).file(o.onnx.string());
  if (o.arch) throw Error("--arch applies to checkpoints; an ONNX file carries its own graph");
  Source s;
  s.sha256 = std::async(std::launch::async, [path = o.onnx] { return sha256_file(path); }).share();
  s.graph = onnx_io::import_onnx(o.onnx);
  s.t_load = s.t_build = seconds_since(t0);
  s.kind = "onnx";
  ir::Graph& g = s.graph;
  auto err = [&](const std::string& what) { return Error(what).file(o.onnx.string()); };
  if (g.inputs().size() != 1 || g.outputs().size() != 1)
    throw err(fmt::format("modex exports image classifiers with one input and one output; this graph has {} inputs and {} outputs",
                          g.inputs().size(), g.outputs().size()));
  const ir::Value& in = g.value(g.inputs()[0]);
  const ir::Value& out = g.value(g.outputs()[0]);
  if (in.dtype != DType::kFloat32 || in.shape.empty())
    throw err(fmt::format("input '{}' must be a float32 tensor (an image batch [N,C,H,W]), got {} of rank {}", in.name,
                          dtype_name(in.dtype), in.shape.size()));
  if (in.shape.size() != 4) {
    // Not an image batch (e.g. a head over feature vectors): every dim but the batch must be static.
    for (size_t i = 1; i < in.shape.size(); ++i)
      if (!in.shape[i].is_static())
        throw err(fmt::format("input '{}' {}: only image inputs [N,C,H,W] may have dynamic dims besides the batch", in.name,
                              ir::shape_to_string(in.shape)));
  }
  auto meta_or = [&](const char* key) -> std::optional<Json> {
    auto it = g.metadata.find(key);
    if (it == g.metadata.end()) return std::nullopt;
    return metadata_value(it->second);
  };
  // Spatial size: the flag, else the file's static dims, else its metadata, else 224.
  std::optional<Json> pre = meta_or("preprocessing");
  int64_t meta_size = (pre && pre->is_object() && (*pre)["input_size"].is_number_integer()) ? (*pre)["input_size"].get<int64_t>() : 224;
  const ir::Dim& h = in.shape.size() == 4 ? in.shape[2] : ir::Dim::fixed(0);
  const ir::Dim& w = in.shape.size() == 4 ? in.shape[3] : ir::Dim::fixed(0);
  if (o.input_size && in.shape.size() != 4) {
    throw err(fmt::format("--input-size applies to image inputs [N,C,H,W]; input '{}' is {}", in.name, ir::shape_to_string(in.shape)));
  } else if (o.input_size) {
    s.input_height = s.input_width = *o.input_size;
    if ((h.is_static() && h.value != *o.input_size) || (w.is_static() && w.value != *o.input_size))
      throw err(fmt::format("--input-size {} contradicts input '{}', whose spatial dims are fixed at {}x{}", *o.input_size,
                            in.name, h.is_static() ? std::to_string(h.value) : "?", w.is_static() ? std::to_string(w.value) : "?"));
  } else {
    s.input_height = h.is_static() ? h.value : meta_size;
    s.input_width = w.is_static() ? w.value : meta_size;
  }
  const ir::Dim& classes = out.shape.empty() ? ir::Dim::unknown() : out.shape.back();
  std::optional<Json> nc = meta_or("num_classes");
  s.num_classes = classes.is_static() ? classes.value : (nc && nc->is_number_integer() ? nc->get<int64_t>() : 0);
  if (o.num_classes && *o.num_classes != s.num_classes)
    throw err(fmt::format("--num-classes {} contradicts the graph's output '{}' with {} classes", *o.num_classes, out.name, s.num_classes));
  std::optional<Json> arch = meta_or("architecture");
  s.architecture = arch && arch->is_string() ? arch->get<std::string>() : o.onnx.stem().string();

  // Carry the file's own metadata (a modex export has architecture, class names, preprocessing).
  static const std::set<std::string> kDerived = {"source_file", "source_sha256", "modex_version", "source_format",
                                                 "source_opset", "source_producer"};
  for (const auto& [k, v] : g.metadata)
    if (!kDerived.count(k)) s.meta[k] = metadata_value(v);
  s.meta["architecture"] = s.architecture;
  s.meta["num_classes"] = s.num_classes;
  if (!s.meta.contains("class_names")) s.meta["class_names"] = Json::array();
  Json p = pre && pre->is_object() ? *pre : Json::object();
  p["input_size"] = s.input_height == s.input_width ? Json(s.input_height) : Json{s.input_height, s.input_width};
  if (!p.contains("layout")) p["layout"] = "NCHW";
  s.meta["preprocessing"] = p;
  s.meta["source_file"] = o.onnx.filename().string();
  s.meta["modex_version"] = MODEX_VERSION;
  s.sidecar["onnx_source"] = {{"opset", std::stoi(g.metadata["source_opset"])}, {"producer", g.metadata["source_producer"]}};
  s.summary = fmt::format("onnx         {} (opset {}, {})\nclassifier   {}, {} classes", o.onnx.string(),
                          g.metadata["source_opset"], g.metadata["source_producer"], s.architecture, s.num_classes);
  return s;
}

// The graph a TFLite file is written from: static height and width (TFLite kernels are planned
// for one spatial size), the batch dynamic unless --static, activations fused, NHWC.
ir::Graph tflite_graph(const ir::Graph& optimized, const Source& s, const ExportOptions& o) {
  ir::Graph t = optimized;
  ir::Value& in = t.value(t.inputs()[0]);
  if (in.shape.size() == 4) {
    in.shape[2] = ir::Dim::fixed(s.input_height);
    in.shape[3] = ir::Dim::fixed(s.input_width);
  }
  if (o.static_shapes) in.shape[0] = ir::Dim::fixed(1);
  t.infer_shapes();
  passes::fuse_activation(t);
  passes::eliminate_dead_code(t);
  passes::convert_to_nhwc(t, {.nchw_input = o.nchw_input});
  return t;
}

// The full-integer graph: the float TFLite graph prepared, calibrated on the representative
// images in modex's engine, and quantized. Runs before any output is opened, so bad calibration
// data leaves nothing behind.
struct Int8Model {
  ir::Graph graph;
  Json quantization;  // embedded in the model's metadata and the sidecar
  std::string summary;
  double seconds = 0;
  // What the QDQ ONNX calibration and the accuracy report reuse.
  quant::PreparedGraph prepared;
  CalibrationData calibration;
  image::Preprocess preprocess;
  int64_t batch = 1;
};

// The images an int8 export calibrates on, as --dataset-dir / --calibration-dir say.
dataset::DatasetInfo calibration_images(const ExportOptions& o) {
  // --dataset-type defaults to classification (the Python scripts' default), which describes
  // --dataset-dir; a --calibration-dir is a flat folder first, whatever layout it may also have.
  dataset::DatasetType type = dataset::parse_dataset_type(o.dataset_type);
  if (o.calibration_dir && type == dataset::DatasetType::kClassification) type = dataset::DatasetType::kAuto;
  return discover_images(o.dataset_dir, o.calibration_dir, type);
}

Json quant_json(const ir::Value& v) {
  Json j = {{"name", v.name}, {"dtype", std::string(dtype_name(v.dtype))}};
  if (v.quant) {
    j["scale"] = v.quant->scale[0];
    j["zero_point"] = v.quant->zero_point[0];
  }
  return j;
}

Int8Model build_int8(const ir::Graph& float_nhwc, const Json& preprocessing, const ExportOptions& o) {
  auto t0 = Clock::now();
  const auto method = quant::parse_calibration_method(o.calibration);
  const auto io = quant::parse_io_type(o.io_type);
  quant::PreparedGraph prepared = quant::prepare_for_int8(float_nhwc);
  const image::Preprocess pre = image::Preprocess::from_metadata(nlohmann::json::parse(preprocessing.dump()));
  const dataset::DatasetInfo info = calibration_images(o);
  const int64_t batch = calibration_batch_size(prepared);
  CalibrationData data;
  CalibrationResult cal;
  {
    ProgressBar bar(o.progress && !o.json && ProgressBar::stderr_is_terminal());
    // Decoding and calibration each take one half of the bar.
    const int64_t n = o.num_calib_samples;
    data = load_calibration_images(info, n, o.seed, pre, batch, [&](int64_t done, int64_t) { bar(done, 2 * n); });
    quant::ObserverOptions obs;
    obs.method = method;
    cal = calibrate(prepared, data.set.batches, obs, [&](int64_t done, int64_t) { bar(n + done, 2 * n); });
  }
  Int8Model m;
  m.graph = quant::quantize_int8(prepared.graph, cal.ranges, {.io_type = io});
  correct_int8_biases(prepared.graph, m.graph, data.set.batches);
  const ir::Value& in = m.graph.value(m.graph.inputs()[0]);
  const ir::Value& out = m.graph.value(m.graph.outputs()[0]);
  Json skipped = Json::array();
  for (const auto& f : data.set.skipped) skipped.push_back({{"file", f.path.string()}, {"reason", f.reason}});
  m.quantization = {
      {"scheme", "full_integer"},
      {"io_type", std::string(quant::io_type_name(io))},
      {"input", quant_json(in)},
      {"output", quant_json(out)},
      {"weights", "int8 symmetric, per-channel (conv) / per-tensor (fully connected); int32 bias"},
      {"calibration",
       {{"method", std::string(quant::calibration_method_name(method))},
        {"samples", data.set.count()},
        {"dataset", info.root.string()},
        {"dataset_type", std::string(dataset::dataset_type_name(info.type))},
        {"split", info.split.empty() ? Json(nullptr) : Json(info.split)},
        {"seed", o.seed},
        {"skipped", skipped.size()},
        {"skipped_files", skipped}}}};
  m.seconds = seconds_since(t0);
  m.summary = fmt::format("calibrated   {} images from {} ({}, {} unreadable skipped) in {:.2f} s", data.set.count(),
                          info.image_root.string(), quant::calibration_method_name(method), data.set.skipped.size(), m.seconds);
  m.prepared = std::move(prepared);
  m.calibration = std::move(data);
  m.preprocess = pre;
  m.batch = batch;
  return m;
}

}  // namespace

void run_export(const ExportOptions& o) {
  validate(o);
  auto t0 = Clock::now();
  const fs::path& source_path = o.onnx.empty() ? o.checkpoint : o.onnx;
  Source s = o.onnx.empty() ? load_checkpoint_source(o, t0) : load_onnx_source(o, t0);
  ir::Graph& g = s.graph;
  {
    // Validate every shape at the nominal size (dynamic graphs only check what is static).
    ir::Graph concrete = g;
    ir::Value& in = concrete.value(concrete.inputs()[0]);
    if (in.shape.size() == 4) {
      if (!in.shape[0].is_static()) in.shape[0] = ir::Dim::fixed(1);
      in.shape[2] = ir::Dim::fixed(s.input_height);
      in.shape[3] = ir::Dim::fixed(s.input_width);
    }
    try {
      concrete.infer_shapes();
    } catch (Error& e) {
      e.hint(fmt::format("the model does not accept {}x{} inputs; choose another --input-size", s.input_height, s.input_width));
      throw;
    }
  }
  passes::optimize(g);
  if (o.static_shapes) {
    ir::Value& in = g.value(g.inputs()[0]);
    in.shape[0] = ir::Dim::fixed(1);
    if (in.shape.size() == 4) {
      in.shape[2] = ir::Dim::fixed(s.input_height);
      in.shape[3] = ir::Dim::fixed(s.input_width);
    }
    g.infer_shapes();
  }
  s.meta["source_sha256"] = s.sha256.get();
  double t_passes = seconds_since(t0);

  // The TFLite graph, and the int8 one calibrated from it, before anything is written.
  std::optional<ir::Graph> tflite;
  Json tflite_meta = s.meta;
  tflite_meta["preprocessing"]["layout"] = o.nchw_input ? "NCHW" : "NHWC";
  std::optional<Int8Model> int8;
  if (writes_tflite(o)) {
    tflite = tflite_graph(g, s, o);
    if (wants(o, "int8")) int8 = build_int8(*tflite, tflite_meta["preprocessing"], o);
  }

  std::string stem = o.name ? *o.name : source_path.stem().string();
  if (stem.empty()) throw Error("empty output name");

  // int8 ONNX (QDQ) calibrated on the same images, and the accuracy report on held-out ones: also
  // before anything is written, so that --min-agreement can stop the export.
  std::optional<ir::Graph> qdq;
  std::optional<Int8ReportRun> report;
  Json qdq_quantization;
  double t_report = 0;
  if (wants(o, "int8")) {
    const auto tq = Clock::now();
    const auto method = quant::parse_calibration_method(o.calibration);
    quant::ObserverOptions obs;
    obs.method = method;
    const image::Preprocess pre_nchw = image::Preprocess::from_metadata(nlohmann::json::parse(s.meta["preprocessing"].dump()));
    ProgressBar bar(o.progress && !o.json && ProgressBar::stderr_is_terminal());
    CalibrationData onnx_calibration;  // ONNX only: the calibration images, NCHW
    std::vector<Tensor> nchw;
    if (int8) {
      for (const Tensor& b : int8->calibration.set.batches) nchw.push_back(o.nchw_input ? b : nhwc_to_nchw(b));
    } else {
      const int64_t n = o.num_calib_samples;
      onnx_calibration = load_calibration_images(calibration_images(o), n, o.seed, pre_nchw, 8,
                                                 [&](int64_t done, int64_t) { bar(done, 2 * n); });
      nchw = onnx_calibration.set.batches;
    }
    int64_t calibrated = 0;
    for (const Tensor& b : nchw) calibrated += b.dim(0);
    if (writes_onnx(o)) {
      quant::RangeMap ranges = calibrate_qdq(g, nchw, obs, [&](int64_t done, int64_t total) {
        if (!int8) bar(total + done, 2 * total);
      });
      qdq = quant::to_qdq(g, ranges, quant::QdqOptions{qdq_opset(o.opset)});
      const CalibrationData& cd = int8 ? int8->calibration : onnx_calibration;
      qdq_quantization = {{"scheme", "qdq"},
                          {"activations", "int8 asymmetric per-tensor QuantizeLinear/DequantizeLinear pairs"},
                          {"weights", "int8 symmetric per-channel (axis 0); int32 bias"},
                          {"calibration",
                           {{"method", std::string(quant::calibration_method_name(method))},
                            {"samples", calibrated},
                            {"dataset", cd.info.root.string()},
                            {"split", cd.info.split.empty() ? Json(nullptr) : Json(cd.info.split)},
                            {"seed", o.seed}}}};
    }
    nchw.clear();
    // The report compares the TFLite int8 model when there is one, else the QDQ ONNX one.
    quant::QuantReport header;
    header.float_model = source_path.string();
    header.int8_model = (o.output_dir / (stem + (int8 ? "_int8.tflite" : "_int8.onnx"))).string();
    header.architecture = s.architecture;
    header.method = std::string(quant::calibration_method_name(method));
    header.calibration_samples = calibrated;
    if (int8) header.timings.emplace_back("calibration", int8->seconds);
    EvaluateOptions eo;
    if (s.meta.contains("class_names") && s.meta["class_names"].is_array())
      for (const auto& c : s.meta["class_names"])
        if (c.is_string()) eo.class_names.push_back(c.get<std::string>());
    auto report_progress = [&](int64_t done, int64_t total) { bar(done, total); };
    if (int8) {
      report = run_int8_report(int8->prepared.graph, int8->graph, int8->calibration, int8->preprocess, o.report_images, o.seed,
                               int8->batch, eo, header, report_progress);
    } else {
      eo.qdq = true;
      report = run_int8_report(g, *qdq, onnx_calibration, pre_nchw, o.report_images, o.seed, 8, eo, header, report_progress);
    }
    bar.finish();
    t_report = seconds_since(tq);
    if (!report) {
      Error e("no held-out images for the int8 accuracy report: every image was drawn for calibration");
      e.file(int8 ? int8->calibration.info.image_root.string() : onnx_calibration.info.image_root.string());
      e.hint("add images, give the dataset a test split, or lower --num-calib-samples");
      if (o.min_agreement) throw e;
      std::cerr << "warning: " << e.what() << "; no report written\n";
    }
    if (o.min_agreement && report->report.top1_agreement < *o.min_agreement)
      throw Error(fmt::format("int8 model below --min-agreement {}: top-1 agreement with the float model {:.2f}% on {} held-out "
                              "images (mean |Δprob| {:.4f}); nothing written",
                              *o.min_agreement, 100.0 * report->report.top1_agreement, report->report.heldout_images,
                              report->report.mean_abs_dprob))
          .hint("see which layers lose precision with a run without --min-agreement (STEM_int8.report.html); try "
                "--calibration minmax or entropy, or more --num-calib-samples");
  }
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) throw Error("cannot create output directory: " + ec.message(), ErrorKind::kIo).file(o.output_dir.string());

  // Every output goes to a temporary file first; all are renamed only when all are complete.
  struct Pending {
    ExportedFile file;
    std::unique_ptr<AtomicFile> out;
    Json sidecar_entry;
  };
  std::vector<Pending> pending;
  auto open = [&](const std::string& format, const std::string& precision, const std::string& filename) -> Pending& {
    fs::path path = o.output_dir / filename;
    if (fs::exists(path) && fs::equivalent(path, source_path))
      throw Error("the output would overwrite the source file; choose another --output-dir or --name").file(path.string());
    auto out = std::make_unique<AtomicFile>(path);  // may throw: nothing half-built in `pending`
    Pending& p = pending.emplace_back();
    p.file = {format, precision, path, 0};
    p.out = std::move(out);
    return p;
  };

  const ir::Value& gin = g.value(g.inputs()[0]);
  const int64_t channels = gin.shape.size() == 4 && gin.shape[1].is_static() ? gin.shape[1].value : 3;
  Json batch_dim = o.static_shapes ? Json(1) : Json("batch");

  if (writes_tflite(o)) {
    const ir::Graph& t = *tflite;
    const Json& meta = tflite_meta;
    Json in_shape = Json::array();
    if (gin.shape.size() != 4) {
      in_shape.push_back(batch_dim);
      for (size_t i = 1; i < gin.shape.size(); ++i) in_shape.push_back(gin.shape[i].value);
    } else {
      in_shape = o.nchw_input ? Json{batch_dim, channels, s.input_height, s.input_width}
                              : Json{batch_dim, s.input_height, s.input_width, channels};
    }
    // (--quantize value, precision, file suffix, weight format)
    struct Variant {
      const char* quantize;
      const char* precision;
      const char* suffix;
      tflite_io::WeightFormat weights;
    };
    static constexpr Variant kVariants[] = {
        {"none", "float32", "", tflite_io::WeightFormat::kFloat32},
        {"float16", "float16", "_float16", tflite_io::WeightFormat::kFloat16},
        {"dynamic", "dynamic", "_dynamic", tflite_io::WeightFormat::kInt8Dynamic},
        {"int8", "int8", "_int8", tflite_io::WeightFormat::kFloat32},
    };
    for (const Variant& v : kVariants) {
      if (!wants(o, v.quantize)) continue;
      const bool full_int8 = std::string(v.quantize) == "int8";
      tflite_io::TfliteWriteOptions to;
      to.weights = v.weights;
      Json m = meta;
      m["precision"] = v.precision;
      Json quantization;
      if (full_int8) {
        quantization = int8->quantization;
      } else if (v.weights == tflite_io::WeightFormat::kInt8Dynamic) {
        quantization = {{"scheme", "dynamic_range"},
                        {"weights", "int8 symmetric per-channel, dequantized to float32 in the model"},
                        {"activations", "float32"}};
      }
      if (!quantization.is_null()) m["quantization"] = quantization;
      to.metadata_json = m.dump();
      Pending& p = open("tflite", v.precision, stem + v.suffix + ".tflite");
      p.file.bytes = tflite_io::write_tflite_to(full_int8 ? int8->graph : t, *p.out, to);
      Json input = {{"name", "image"}, {"shape", in_shape}, {"layout", o.nchw_input ? "NCHW" : "NHWC"}};
      Json output = {{"name", "logits"}, {"shape", {batch_dim, s.num_classes}}};
      if (full_int8) {
        for (auto [j, q] : {std::pair{&input, &quantization["input"]}, std::pair{&output, &quantization["output"]}}) {
          (*j)["dtype"] = (*q)["dtype"];
          if (q->contains("scale")) (*j)["quantization"] = {{"scale", (*q)["scale"]}, {"zero_point", (*q)["zero_point"]}};
        }
      }
      p.sidecar_entry = {{"format", "tflite"},
                         {"precision", p.file.precision},
                         {"file", p.file.path.filename().string()},
                         {"input", input},
                         {"output", output}};
      if (!quantization.is_null()) p.sidecar_entry["quantization"] = quantization;
    }
  }
  if (writes_onnx(o)) {
    onnx_io::OnnxWriteOptions wo;
    wo.opset = o.opset;
    wo.graph_name = s.architecture;
    for (auto it = s.meta.begin(); it != s.meta.end(); ++it)
      wo.metadata[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    Pending& p = open("onnx", "float32", stem + ".onnx");
    // Last: the writer releases the graph's weights as it writes them.
    p.file.bytes = onnx_io::write_onnx_to(g, *p.out, wo);
    Json dims = Json::array();
    for (const auto& d : gin.shape) dims.push_back(d.is_static() ? Json(d.value) : d.symbol.empty() ? Json(nullptr) : Json(d.symbol));
    const ir::Value& gout = g.value(g.outputs()[0]);
    Json odims = Json::array();
    for (const auto& d : gout.shape) odims.push_back(d.is_static() ? Json(d.value) : d.symbol.empty() ? Json(nullptr) : Json(d.symbol));
    p.sidecar_entry = {{"format", "onnx"},
                       {"precision", "float32"},
                       {"file", p.file.path.filename().string()},
                       {"opset", o.opset},
                       {"input", {{"name", gin.name}, {"shape", dims}}},
                       {"output", {{"name", gout.name}, {"shape", odims}}}};
    if (qdq) {
      onnx_io::OnnxWriteOptions qo = wo;
      qo.opset = qdq_opset(o.opset);
      qo.metadata["precision"] = "int8";
      qo.metadata["quantization"] = qdq_quantization.dump();
      Json entry = p.sidecar_entry;  // `p` dangles once open() grows `pending`
      Pending& q = open("onnx", "int8", stem + "_int8.onnx");
      q.file.bytes = onnx_io::write_onnx_to(*qdq, *q.out, qo);
      q.sidecar_entry = std::move(entry);
      q.sidecar_entry["precision"] = "int8";
      q.sidecar_entry["file"] = q.file.path.filename().string();
      q.sidecar_entry["opset"] = qo.opset;
      q.sidecar_entry["quantization"] = qdq_quantization;
    }
  }
  std::unique_ptr<AtomicFile> report_json_file, report_html_file;
  fs::path report_json_path = o.output_dir / (stem + "_int8.report.json"), report_html_path = o.output_dir / (stem + "_int8.report.html");
  if (report) {
    report_json_file = std::make_unique<AtomicFile>(report_json_path);
    report_json_file->write(report->json.dump(2) + "\n");
    report_html_file = std::make_unique<AtomicFile>(report_html_path);
    report_html_file->write(report->html);
  }

  fs::path sidecar_path = o.output_dir / (stem + ".json");
  Json sidecar = s.meta;
  for (auto it = s.sidecar.begin(); it != s.sidecar.end(); ++it) sidecar[it.key()] = it.value();
  Json outputs = Json::array();
  for (const auto& p : pending) outputs.push_back(p.sidecar_entry);
  sidecar["outputs"] = outputs;
  AtomicFile sidecar_file(sidecar_path);
  sidecar_file.write(sidecar.dump(2) + "\n");
  for (auto& p : pending) p.out->commit();
  if (report) {
    report_json_file->commit();
    report_html_file->commit();
  }
  sidecar_file.commit();
  double t_total = seconds_since(t0);

  if (o.json) {
    Json r;
    r["source"] = {{"path", source_path.string()}, {"kind", s.kind}};
    r["architecture"] = s.architecture;
    r["num_classes"] = s.num_classes;
    r["input_size"] = s.input_height == s.input_width ? Json(s.input_height) : Json{s.input_height, s.input_width};
    if (s.sidecar.contains("wrapper")) r["wrapper"] = s.sidecar["wrapper"];
    Json outs = Json::array();
    for (const auto& p : pending)
      outs.push_back({{"format", p.file.format}, {"precision", p.file.precision}, {"path", p.file.path.string()}, {"bytes", p.file.bytes}});
    r["outputs"] = outs;
    if (int8) r["quantization"] = int8->quantization;
    r["sidecar"] = sidecar_path.string();
    r["seconds"] = t_total;
    r["timings"] = {{"load", s.t_load}, {"build", s.t_build - s.t_load}, {"passes", t_passes - s.t_build}, {"write", t_total - t_passes}};
    if (int8) r["timings"]["calibration"] = int8->seconds;
    if (report) {
      const quant::QuantReport& q = report->report;
      Json worst = Json::array();
      for (size_t i : quant::worst_layers(q, 3)) worst.push_back(q.layers[i].name);
      r["quantization_report"] = {{"json", report_json_path.string()},
                                  {"html", report_html_path.string()},
                                  {"model", q.int8_model},
                                  {"heldout_images", q.heldout_images},
                                  {"top1_agreement", q.top1_agreement},
                                  {"mean_abs_dprob", q.mean_abs_dprob},
                                  {"max_abs_dprob", q.max_abs_dprob},
                                  {"accuracy", {{"float", q.accuracy_float ? Json(*q.accuracy_float) : Json(nullptr)},
                                                {"int8", q.accuracy_int8 ? Json(*q.accuracy_int8) : Json(nullptr)}}},
                                  {"worst_layers", worst}};
      r["timings"]["report"] = t_report;
    }
    std::cout << r.dump(2) << "\n";
    return;
  }
  std::cout << s.summary
            << fmt::format(", input {}x{}\n", s.input_height, s.input_width);
  if (int8) std::cout << int8->summary << "\n";
  if (report) std::cout << report->summary << "\n";
  for (const auto& p : pending) {
    std::string what = p.file.format == "onnx" ? (p.file.precision == "int8" ? fmt::format("onnx QDQ int8, opset {}", qdq_opset(o.opset))
                                                                           : fmt::format("onnx opset {}", o.opset))
                                               : fmt::format("tflite {}, {} input", p.file.precision, o.nchw_input ? "NCHW" : "NHWC");
    std::cout << fmt::format("wrote        {} ({:.1f} MB, {})\n", p.file.path.string(), p.file.bytes / 1e6, what);
  }
  if (report) std::cout << fmt::format("wrote        {} and {}\n", report_json_path.string(), report_html_path.string());
  std::cout << fmt::format("wrote        {}\n", sidecar_path.string());
  std::cout << fmt::format("done in {:.3f} s\n", t_total);
  if (o.verbose)
    std::cout << fmt::format("  load {:.3f} s, build {:.3f} s, passes {:.3f} s, write {:.3f} s\n", s.t_load, s.t_build - s.t_load,
                             t_passes - s.t_build, t_total - t_passes);
}

}  // namespace modex::app
