#include "app/predict_command.h"

#include "app/classify.h"

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


int run_predict(const PredictOptions& o) {
  if (o.top < 1) throw Error("--top must be at least 1");
  o.pre.validate();
  std::vector<fs::path> images = collect_images(o.inputs);
  auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<Model> model = Model::load(o.model, {.threads = o.threads});
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::string pre_source;
  image::Preprocess pre = preprocessing_for(*model, o.pre, pre_source);

  std::vector<std::string> names = o.class_names ? read_class_names(*o.class_names) : class_names_of(*model);

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
  cmd->add_option("--input-size", o->pre.input_size, "Override the model's input size");
  cmd->add_option("--resize", o->pre.resize, "resize | resize_center_crop")->check(CLI::IsMember({"resize", "resize_center_crop"}));
  cmd->add_option("--mean", o->pre.mean, "Normalisation mean, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--std", o->pre.std, "Normalisation std, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--layout", o->pre.layout, "nchw | nhwc (default: from the model)")->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->add_option("--class-names", o->class_names, "Text file of class names, one per line");
  cmd->callback([o, &exit_code] { exit_code = run_predict(*o); });
}

}  // namespace modex::app
