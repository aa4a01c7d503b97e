#include "app/compare_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/dataset/dataset.h"
#include "io/image/image.h"

namespace modex::app {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::string normalise(std::string s) {
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) out.push_back(static_cast<char>(std::tolower(u)));
  }
  return out;
}

// Folder class -> model class index: by name when the model has class names, by number when the
// folders are numbers, else by sorted position (torchvision's ImageFolder convention).
std::vector<int64_t> label_map(const std::vector<dataset::ClassInfo>& classes, const std::vector<std::string>& names,
                               int64_t num_outputs, std::string& how) {
  std::vector<int64_t> map(classes.size(), -1);
  if (!names.empty()) {
    size_t hit = 0;
    for (size_t i = 0; i < classes.size(); ++i)
      for (size_t k = 0; k < names.size(); ++k)
        if (normalise(classes[i].name) == normalise(names[k])) {
          map[i] = static_cast<int64_t>(k);
          ++hit;
          break;
        }
    if (hit == classes.size()) {
      how = "folder names matched to the model's class names";
      return map;
    }
  }
  bool numeric = std::all_of(classes.begin(), classes.end(), [](const dataset::ClassInfo& c) {
    return !c.name.empty() && std::all_of(c.name.begin(), c.name.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
  });
  for (size_t i = 0; i < classes.size(); ++i) map[i] = numeric ? std::stoll(classes[i].name) : static_cast<int64_t>(i);
  how = numeric ? "numeric folder names as class indices" : "sorted folder order as class indices";
  for (int64_t m : map)
    if (m >= num_outputs) throw Error(fmt::format("class folder maps to index {} but the model has {} outputs", m, num_outputs));
  return map;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct ModelRun {
  fs::path path;
  std::shared_ptr<Model> model;
  image::Preprocess pre;
  std::string pre_source;
  std::vector<std::string> names;
  double load_ms = 0;
  std::vector<double> latency_ms;
  std::vector<std::vector<float>> probs;  // per image
};

}  // namespace

int run_compare(const CompareOptions& o) {
  if (o.models.size() < 2) throw Error("compare needs at least two models");
  if (o.images.empty() == !o.data_dir) throw Error("give the images with either --image or --data-dir");
  o.pre.validate();

  // The images, with labels when a classification folder gives them.
  std::vector<fs::path> images;
  std::vector<int> folder_class;
  std::vector<dataset::ClassInfo> classes;
  std::string dataset_desc;
  if (o.data_dir) {
    dataset::DatasetInfo info = dataset::discover(*o.data_dir, dataset::parse_dataset_type(o.dataset_type));
    int64_t n = o.num_images > 0 ? o.num_images : static_cast<int64_t>(info.images.size());
    for (const auto& s : dataset::sample(info, n, o.seed)) {
      images.push_back(s.path);
      folder_class.push_back(s.class_index);
    }
    classes = info.classes;
    dataset_desc = fmt::format("{} ({}, split '{}', {} classes)", info.root.string(), info.layout,
                               info.split.empty() ? "-" : info.split, info.classes.size());
  } else {
    images = collect_images(o.images);
    if (o.num_images > 0 && static_cast<int64_t>(images.size()) > o.num_images) images.resize(static_cast<size_t>(o.num_images));
    folder_class.assign(images.size(), -1);
    dataset_desc = fmt::format("{} image(s)", images.size());
  }
  bool labelled = !classes.empty();

  std::vector<ModelRun> runs;
  for (const auto& path : o.models) {
    ModelRun r;
    r.path = path;
    auto t0 = std::chrono::steady_clock::now();
    r.model = Model::load(path, {.threads = o.threads});
    r.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    r.pre = preprocessing_for(*r.model, o.pre, r.pre_source);
    r.names = class_names_of(*r.model);
    runs.push_back(std::move(r));
  }

  // Decode each image once; every model preprocesses it its own way and runs it.
  std::vector<size_t> used;
  std::vector<std::pair<std::string, std::string>> skipped;
  for (size_t i = 0; i < images.size(); ++i) {
    image::Image img;
    try {
      img = image::load_image(images[i]);
    } catch (const Error& e) {
      skipped.emplace_back(images[i].string(), e.what());
      continue;
    }
    for (auto& r : runs) {
      Tensor x = image::preprocess(img, r.pre);
      auto t0 = std::chrono::steady_clock::now();
      std::vector<Tensor> out = r.model->run({x});
      r.latency_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      r.probs.push_back(probabilities(out.at(0).data<float>(), out.at(0).numel()));
    }
    used.push_back(i);
  }
  if (used.empty()) throw Error("none of the images could be decoded");
  for (const auto& r : runs)
    if (r.probs[0].size() != runs[0].probs[0].size())
      throw Error(fmt::format("models disagree on the number of classes: {} has {}, {} has {}", runs[0].path.string(),
                              runs[0].probs[0].size(), r.path.string(), r.probs[0].size()));

  auto argmax = [](const std::vector<float>& p) { return static_cast<int64_t>(std::max_element(p.begin(), p.end()) - p.begin()); };
  std::string label_how;
  std::vector<int64_t> lmap;
  if (labelled) lmap = label_map(classes, runs[0].names, static_cast<int64_t>(runs[0].probs[0].size()), label_how);

  Json rows = Json::array();
  const ModelRun& ref = runs[0];
  double ref_latency = median(ref.latency_ms);
  for (const auto& r : runs) {
    size_t agree = 0, correct = 0;
    double sum_dconf = 0, max_dconf = 0, max_dprob = 0;
    for (size_t k = 0; k < used.size(); ++k) {
      const auto& p = r.probs[k];
      const auto& q = ref.probs[k];
      int64_t top = argmax(p), ref_top = argmax(q);
      agree += top == ref_top;
      double dconf = std::abs(static_cast<double>(p[static_cast<size_t>(top)]) - q[static_cast<size_t>(ref_top)]);
      sum_dconf += dconf;
      max_dconf = std::max(max_dconf, dconf);
      for (size_t c = 0; c < p.size(); ++c) max_dprob = std::max(max_dprob, std::abs(static_cast<double>(p[c]) - q[c]));
      int fc = folder_class[used[k]];
      if (labelled && fc >= 0) correct += top == lmap[static_cast<size_t>(fc)];
    }
    double n = static_cast<double>(used.size());
    double lat = median(r.latency_ms);
    Json row;
    row["model"] = r.path.string();
    row["top1_agreement"] = agree / n;
    row["mean_abs_confidence_diff"] = sum_dconf / n;
    row["max_abs_confidence_diff"] = max_dconf;
    row["max_abs_prob_diff"] = max_dprob;
    row["accuracy"] = labelled ? Json(correct / n) : Json(nullptr);
    row["median_latency_ms"] = lat;
    row["speedup_vs_reference"] = lat > 0 ? ref_latency / lat : 0.0;
    row["load_ms"] = r.load_ms;
    row["preprocessing"] = r.pre_source;
    rows.push_back(row);
  }

  if (o.json) {
    Json j;
    j["images"] = used.size();
    j["dataset"] = dataset_desc;
    j["labels"] = labelled ? Json(label_how) : Json(nullptr);
    j["reference"] = ref.path.string();
    j["models"] = rows;
    Json sk = Json::array();
    for (const auto& [f, why] : skipped) sk.push_back({{"file", f}, {"error", why}});
    j["skipped"] = sk;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << fmt::format("{} images from {}; reference: {}{}\n", used.size(), dataset_desc, ref.path.filename().string(),
                           labelled ? "; labels: " + label_how : "");
  std::cout << fmt::format("{:<40} {:>8} {:>9} {:>10} {:>10} {:>11} {:>9} {:>8}\n", "model", "agrees", "accuracy", "mean|Δconf|",
                           "max|Δconf|", "max|Δprob|", "ms/image", "speed-up");
  for (const auto& row : rows) {
    std::string name = fs::path(row["model"].get<std::string>()).filename().string();
    std::cout << fmt::format("{:<40} {:>7.1f}% {:>9} {:>10.2e} {:>10.2e} {:>11.2e} {:>9.2f} {:>7.2f}x\n", name,
                             100 * row["top1_agreement"].get<double>(),
                             row["accuracy"].is_null() ? std::string("—") : fmt::format("{:.1f}%", 100 * row["accuracy"].get<double>()),
                             row["mean_abs_confidence_diff"].get<double>(), row["max_abs_confidence_diff"].get<double>(),
                             row["max_abs_prob_diff"].get<double>(), row["median_latency_ms"].get<double>(),
                             row["speedup_vs_reference"].get<double>());
  }
  if (!skipped.empty()) {
    std::cout << fmt::format("{} image(s) skipped:\n", skipped.size());
    for (const auto& [f, why] : skipped) std::cout << fmt::format("  {}\n", why);
  }
  return 0;
}

void add_compare_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<CompareOptions>();
  auto* cmd = app.add_subcommand("compare", "Compare models (e.g. .pth, ONNX, TFLite fp16) on the same images");
  cmd->add_option("models", o->models, "Two or more models; the first is the reference")->required();
  cmd->add_option("--image", o->images, "Image files or folders");
  cmd->add_option("--data-dir", o->data_dir, "A dataset folder; class folders give labels");
  cmd->add_option("--dataset-type", o->dataset_type, "auto | classification | detection | flat")
      ->check(CLI::IsMember({"auto", "classification", "detection", "flat"}))
      ->capture_default_str();
  cmd->add_option("--num-images", o->num_images, "Use at most N images (seeded, class-stratified sample with --data-dir)");
  cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Inference threads per model (0: all cores)")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_option("--input-size", o->pre.input_size, "Override every model's input size");
  cmd->add_option("--resize", o->pre.resize, "resize | resize_center_crop")->check(CLI::IsMember({"resize", "resize_center_crop"}));
  cmd->add_option("--mean", o->pre.mean, "Normalisation mean, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--std", o->pre.std, "Normalisation std, 3 comma-separated values")->delimiter(',');
  cmd->add_option("--layout", o->pre.layout, "nchw | nhwc")->check(CLI::IsMember({"nchw", "nhwc"}));
  cmd->callback([o, &exit_code] { exit_code = run_compare(*o); });
}

}  // namespace modex::app
