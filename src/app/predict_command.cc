#include "app/predict_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <modex/runtime.h>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "core/file_util.h"
#include "io/dataset/dataset.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::vector<fs::path> collect_images(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<fs::path> found;
      for (auto it = fs::recursive_directory_iterator(in, fs::directory_options::skip_permission_denied, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->path().filename().string().starts_with(".")) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && dataset::is_image_file(it->path())) found.push_back(it->path());
      }
      if (ec) throw Error("cannot list folder: " + ec.message(), ErrorKind::kIo).file(in.string());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw Error("no images (*.jpg, *.jpeg, *.png, *.bmp) in this folder", ErrorKind::kIo).file(in.string());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(in, ec)) {
      out.push_back(in);
    } else {
      throw Error("file not found", ErrorKind::kIo).file(in.string());
    }
  }
  return out;
}

// Metadata values are JSON text (lists, objects) or plain strings.
Json meta_json(const std::map<std::string, std::string>& meta, const std::string& key) {
  auto it = meta.find(key);
  if (it == meta.end()) return nullptr;
  Json j = Json::parse(it->second, nullptr, false);
  return j.is_discarded() ? Json(it->second) : j;
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::string text = read_file_text(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

// The preprocessing a model wants: its metadata, then what its input shape says, then flags.
image::Preprocess preprocessing_for(const Model& model, const PredictOptions& o, std::string& source) {
  image::Preprocess p;
  Json meta = meta_json(model.metadata(), "preprocessing");
  if (meta.is_object()) {
    p = image::Preprocess::from_metadata(nlohmann::json::parse(meta.dump()));
    source = "model metadata";
  } else {
    source = "defaults (no preprocessing metadata in the model)";
  }
  const TensorInfo& in = model.inputs().at(0);
  if (in.shape.size() != 4) throw Error(fmt::format("model input '{}' is not an image batch (rank {})", in.name, in.shape.size()));
  if (!meta.is_object()) {
    // Channels last when the last dim is 3 and the second is not.
    bool nhwc = in.shape[3] == 3 && in.shape[1] != 3;
    p.layout = nhwc ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
    int64_t h = nhwc ? in.shape[1] : in.shape[2], w = nhwc ? in.shape[2] : in.shape[3];
    if (h > 0) p.height = h;
    if (w > 0) p.width = w;
  }
  if (o.input_size) p.width = p.height = *o.input_size, p.resize_size = 0;
  if (o.resize) p.resize = *o.resize == "resize" ? image::Preprocess::Resize::kResize : image::Preprocess::Resize::kResizeCenterCrop;
  if (!o.mean.empty()) std::copy(o.mean.begin(), o.mean.end(), p.mean.begin());
  if (!o.std.empty()) std::copy(o.std.begin(), o.std.end(), p.std.begin());
  if (o.layout) p.layout = *o.layout == "nhwc" ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
  if (o.input_size || o.resize || !o.mean.empty() || !o.std.empty() || o.layout) source += ", overridden by flags";
  return p;
}

// Logits -> probabilities; outputs that already are probabilities (a softmax head) are kept.
std::vector<float> probabilities(const float* x, int64_t n) {
  bool probs = true;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(x[i] >= 0 && x[i] <= 1)) probs = false;
    sum += x[i];
  }
  std::vector<float> p(x, x + n);
  if (probs && std::abs(sum - 1.0) < 1e-3) return p;
  float m = *std::max_element(p.begin(), p.end());
  double z = 0;
  for (float& v : p) z += (v = std::exp(v - m));
  for (float& v : p) v = static_cast<float>(v / z);
  return p;
}

}  // namespace

int run_predict(const PredictOptions& o) {
  if (o.top < 1) throw Error("--top must be at least 1");
  if ((!o.mean.empty() && o.mean.size() != 3) || (!o.std.empty() && o.std.size() != 3))
    throw Error("--mean and --std take 3 comma-separated values");
  std::vector<fs::path> images = collect_images(o.inputs);
  auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<Model> model = Model::load(o.model, {.threads = o.threads});
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::string pre_source;
  image::Preprocess pre = preprocessing_for(*model, o, pre_source);

  std::vector<std::string> names;
  if (o.class_names) {
    names = read_lines(*o.class_names);
  } else if (Json cn = meta_json(model->metadata(), "class_names"); cn.is_array()) {
    for (const auto& v : cn)
      if (v.is_string()) names.push_back(v.get<std::string>());
  }

  Json results = Json::array();
  int failures = 0;
  for (const auto& path : images) {
    Json r;
    r["image"] = path.string();
    try {
      image::Image img = image::load_image(path);
      Tensor x = image::preprocess(img, pre);
      auto t1 = std::chrono::steady_clock::now();
      std::vector<Tensor> out = model->run({x});
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
      const Tensor& logits = out.at(0);
      int64_t n = logits.numel();
      std::vector<float> p = probabilities(logits.data<float>(), n);
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      int64_t k = std::min<int64_t>(o.top, n);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int64_t a, int64_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)]; });
      auto name_of = [&](int64_t c) { return c < static_cast<int64_t>(names.size()) ? Json(names[static_cast<size_t>(c)]) : Json(nullptr); };
      r["predicted_class"] = order[0];
      r["class_name"] = name_of(order[0]);
      r["confidence"] = p[static_cast<size_t>(order[0])];
      Json top = Json::array();
      for (int64_t i = 0; i < k; ++i)
        top.push_back({{"class", order[static_cast<size_t>(i)]}, {"name", name_of(order[static_cast<size_t>(i)])},
                       {"probability", p[static_cast<size_t>(order[static_cast<size_t>(i)])]}});
      r["top"] = top;
      r["latency_ms"] = ms;
      if (o.json) r["probabilities"] = p;
    } catch (const Error& e) {
      ++failures;
      r["error"] = e.what();
    }
    results.push_back(r);
  }

  if (o.json) {
    Json j;
    j["model"] = o.model.string();
    j["load_ms"] = load_ms;
    j["preprocessing"] = {{"source", pre_source},
                          {"size", {pre.height, pre.width}},
                          {"resize", pre.resize == image::Preprocess::Resize::kResize ? "resize" : "resize_center_crop"},
                          {"mean", pre.mean},
                          {"std", pre.std},
                          {"layout", pre.layout == image::Preprocess::Layout::kNHWC ? "NHWC" : "NCHW"}};
    j["results"] = results;
    j["failed"] = failures;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << fmt::format("{}  (loaded in {:.0f} ms; preprocessing: {}x{} {}, {})\n", o.model.string(), load_ms, pre.height,
                             pre.width, pre.resize == image::Preprocess::Resize::kResize ? "resize" : "resize + center crop",
                             pre_source);
    for (const auto& r : results) {
      if (r.contains("error")) {
        std::cout << fmt::format("{}\n  error: {}\n", r["image"].get<std::string>(), r["error"].get<std::string>());
        continue;
      }
      std::cout << fmt::format("{}\n", r["image"].get<std::string>());
      for (const auto& t : r["top"]) {
        std::string name = t["name"].is_string() ? t["name"].get<std::string>() : "";
        std::cout << fmt::format("  {:>5}  {:<24} {:6.2f}%\n", t["class"].get<int64_t>(), name, 100.0 * t["probability"].get<double>());
      }
    }
    if (failures) std::cout << fmt::format("{} of {} images could not be classified\n", failures, results.size());
  }
  return failures ? 1 : 0;
}

void add_predict_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PredictOptions>();
  auto* cmd = app.add_subcommand("predict", "Classify images with a .pth, .onnx or .tflite model");
  cmd->add_option("model", o->model, "Model file (.onnx, .tflite, .pth/.pt/.safetensors)")->required();
  cmd->add_option("images", o->inputs, "Image files or folders (searched recursively)")->required();
  cmd->add_option("--top", o->top, "How many classes to list")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Inference threads (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON (with the full probabilities)");
  cmd->add_option("--input-size", o->input_size, "Override the model's input size");
  cmd->add_option("--resize", o->resize, "resize | resize_center_crop")->check(CLI::IsMember({"resize", "resize_center_crop"}));
  cmd->add_option("--mean", o->mean, "Normalisation mean, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--std", o->std, "Normalisation std, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--layout", o->layout, "nchw | nhwc (default: from the model)")->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--class-names", o->class_names, "Text file of class names, one per line");
  cmd->callback([o, &exit_code] { exit_code = run_predict(*o); });
}

}  // namespace modex::app
