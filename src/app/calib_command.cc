#include "app/calib_command.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "app/quantize_calibration.h"
#include "core/error.h"
#include "io/dataset/dataset.h"
#include "io/dataset/npy.h"

namespace modex::app {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using image::Preprocess;

struct ChannelStats {
  double sum = 0, sum_sq = 0;
  double min = INFINITY, max = -INFINITY;
  int64_t count = 0;
  double mean() const { return count ? sum / count : 0; }
  double std() const { return count ? std::sqrt(std::max(0.0, sum_sq / count - mean() * mean())) : 0; }
};

std::array<ChannelStats, 3> channel_stats(const std::vector<Tensor>& batches, Preprocess::Layout layout) {
  std::array<ChannelStats, 3> st;
  for (const Tensor& t : batches) {
    const std::vector<float> v = t.to_float_vector();
    const int64_t n = t.dim(0);
    const size_t per_channel = static_cast<size_t>(t.numel() / n / 3);
    for (int64_t b = 0; b < n; ++b) {
      const float* base = v.data() + static_cast<size_t>(b) * per_channel * 3;
      for (int c = 0; c < 3; ++c) {
        ChannelStats& s = st[static_cast<size_t>(c)];
        for (size_t i = 0; i < per_channel; ++i) {
          const double x = layout == Preprocess::Layout::kNCHW ? base[static_cast<size_t>(c) * per_channel + i] : base[i * 3 + static_cast<size_t>(c)];
          s.sum += x;
          s.sum_sq += x * x;
          s.min = std::min(s.min, x);
          s.max = std::max(s.max, x);
        }
        s.count += static_cast<int64_t>(per_channel);
      }
    }
  }
  return st;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

Preprocess make_preprocess(const CalibOptions& o) {
  check(o.input_size > 0 && o.input_size <= 8192, fmt::format("--input-size must be in 1..8192, got {}", o.input_size));
  check(o.mean.size() == 3, fmt::format("--mean needs 3 comma-separated values, got {}", o.mean.size()));
  check(o.std.size() == 3, fmt::format("--std needs 3 comma-separated values, got {}", o.std.size()));
  Preprocess p;
  p.width = p.height = o.input_size;
  const std::string resize = lower(o.resize);
  check(resize == "resize" || resize == "resize_center_crop", "--resize must be resize or resize_center_crop");
  p.resize = resize == "resize" ? Preprocess::Resize::kResize : Preprocess::Resize::kResizeCenterCrop;
  // The same rule as `modex export` writes into the model's metadata.
  p.resize_size = o.resize_size ? *o.resize_size : o.input_size * 256 / 224;
  check(p.resize_size > 0 && p.resize_size <= 16384, "--resize-size must be in 1..16384");
  for (size_t i = 0; i < 3; ++i) {
    check(std::isfinite(o.mean[i]), "--mean values must be finite");
    check(std::isfinite(o.std[i]) && o.std[i] > 0, "--std values must be positive");
    p.mean[i] = o.mean[i];
    p.std[i] = o.std[i];
  }
  const std::string layout = lower(o.layout);
  check(layout == "nchw" || layout == "nhwc", "--layout must be nchw or nhwc");
  p.layout = layout == "nchw" ? Preprocess::Layout::kNCHW : Preprocess::Layout::kNHWC;
  const std::string dtype = lower(o.dtype);
  check(dtype == "float32" || dtype == "uint8", "--dtype must be float32 or uint8");
  p.output = dtype == "uint8" ? Preprocess::Output::kUInt8 : Preprocess::Output::kFloat32;
  return p;
}

Json preprocess_json(const Preprocess& p) {
  return {{"input_size", {p.height, p.width}},
          {"resize", p.resize == Preprocess::Resize::kResize ? "resize" : "resize_center_crop"},
          {"resize_size", p.effective_resize_size()},
          {"mean", p.mean},
          {"std", p.std},
          {"scale", p.scale},
          {"layout", p.layout == Preprocess::Layout::kNCHW ? "NCHW" : "NHWC"},
          {"dtype", p.output == Preprocess::Output::kUInt8 ? "uint8" : "float32"}};
}

}  // namespace

void run_calib(const CalibOptions& o, std::ostream& out) {
  if (o.data_dir && o.calibration_dir) throw Error("give either --data-dir or --calibration-dir, not both");
  if (!o.data_dir && !o.calibration_dir) throw Error("no images given").hint("use --data-dir DIR or --calibration-dir DIR");
  check(o.num_samples > 0, fmt::format("--num-samples must be positive, got {}", o.num_samples));
  check(o.batch_size > 0 && o.batch_size <= 65536, fmt::format("--batch-size must be in 1..65536, got {}", o.batch_size));
  check(!o.test_batches || *o.test_batches > 0, "--test-batches must be positive");
  check(o.max_pixels > 0, "--max-pixels must be positive");
  const dataset::DatasetType type = dataset::parse_dataset_type(lower(o.dataset_type));
  const Preprocess pre = make_preprocess(o);

  const dataset::DatasetInfo info = discover_images(o.data_dir, o.calibration_dir, type);

  std::vector<dataset::Sample> drawn = dataset::sample(info, o.num_samples, o.seed);
  std::vector<dataset::Sample> to_load = drawn;
  if (o.test_batches) {
    const int64_t limit = *o.test_batches * o.batch_size;  // both bounded above: no overflow
    if (static_cast<int64_t>(to_load.size()) > limit) to_load.resize(static_cast<size_t>(limit));
  }

  dataset::LoadOptions lo;
  lo.batch_size = o.batch_size;
  lo.threads = o.threads;
  lo.decode.max_pixels = o.max_pixels;
  ProgressBar bar(o.progress && ProgressBar::stderr_is_terminal());
  lo.progress = [&bar](int64_t done, int64_t total) { bar(done, total); };
  dataset::CalibrationSet set = dataset::load_batches(to_load, pre, lo);
  bar.finish();

  const std::array<ChannelStats, 3> stats = channel_stats(set.batches, pre.layout);
  Tensor all;
  if (o.output) {
    if (set.count() == 0) throw Error("no image decoded: nothing to write").file(o.output->string());
    all = set.stacked();
    npy::write(*o.output, all);
  }

  // Per-class counts: in the dataset, drawn, decoded.
  const size_t nclasses = info.classes.size();
  std::vector<int64_t> drawn_per(nclasses), decoded_per(nclasses);
  for (const auto& s : drawn)
    if (s.class_index >= 0 && static_cast<size_t>(s.class_index) < nclasses) ++drawn_per[static_cast<size_t>(s.class_index)];
  for (const auto& s : set.used)
    if (s.class_index >= 0 && static_cast<size_t>(s.class_index) < nclasses) ++decoded_per[static_cast<size_t>(s.class_index)];
  const Dims batch_shape = pre.shape(std::min<int64_t>(o.batch_size, std::max<int64_t>(set.count(), 1)));
  const char* dtype = pre.output == Preprocess::Output::kUInt8 ? "uint8" : "float32";
  static const char* kChannelNames[3] = {"R", "G", "B"};

  if (o.json) {
    Json j;
    j["dataset"] = {{"root", info.root.string()},
                    {"type", std::string(dataset::dataset_type_name(info.type))},
                    {"layout", info.layout},
                    {"image_root", info.image_root.string()},
                    {"split", info.split.empty() ? Json(nullptr) : Json(info.split)},
                    {"split_reason", info.split_reason},
                    {"num_images", info.images.size()}};
    Json classes = Json::array();
    for (size_t i = 0; i < nclasses; ++i) {
      classes.push_back({{"name", info.classes[i].name}, {"images", info.classes[i].count}, {"drawn", drawn_per[i]}, {"decoded", decoded_per[i]}});
    }
    j["classes"] = classes;
    j["seed"] = o.seed;
    j["samples_requested"] = o.num_samples;
    j["samples_drawn"] = drawn.size();
    j["samples_loaded"] = to_load.size();
    j["decoded"] = set.count();
    j["batches"] = set.batches.size();
    j["batch_size"] = o.batch_size;
    j["batch_shape"] = batch_shape;
    j["preprocessing"] = preprocess_json(pre);
    Json skipped = Json::array();
    for (const auto& f : set.skipped) skipped.push_back({{"file", f.path.string()}, {"reason", f.reason}});
    j["skipped"] = skipped;
    Json files = Json::array();  // what the batches hold, in order
    for (const auto& s : set.used) files.push_back(s.path.string());
    j["files"] = files;
    Json ch = Json::array();
    for (int c = 0; c < 3; ++c) {
      const ChannelStats& s = stats[static_cast<size_t>(c)];
      ch.push_back({{"channel", kChannelNames[c]}, {"mean", s.mean()}, {"std", s.std()},
                    {"min", s.count ? Json(s.min) : Json(nullptr)}, {"max", s.count ? Json(s.max) : Json(nullptr)}});
    }
    j["channels"] = ch;
    j["output"] = o.output ? Json(o.output->string()) : Json(nullptr);
    if (o.output) j["output_shape"] = all.shape();
    out << j.dump(2) << "\n";
  } else {
    out << fmt::format("dataset      {} ({})\n", info.root.string(), dataset::dataset_type_name(info.type));
    out << fmt::format("layout       {}\n", info.layout);
    out << fmt::format("split        {} ({})\n", info.split.empty() ? "-" : info.split, info.split_reason);
    out << fmt::format("images       {} in {}\n", info.images.size(), info.image_root.string());
    out << fmt::format("drawn        {} of {} requested (seed {}{})\n", drawn.size(), o.num_samples, o.seed,
                       nclasses ? ", stratified by class" : "");
    if (o.test_batches) out << fmt::format("test batches {} (decoding the first {} samples)\n", *o.test_batches, to_load.size());
    out << fmt::format("preprocess   {} {} -> {}x{}, mean [{:.3f}, {:.3f}, {:.3f}], std [{:.3f}, {:.3f}, {:.3f}], {} {}\n",
                       pre.resize == Preprocess::Resize::kResize ? "resize" : "resize_center_crop",
                       pre.resize == Preprocess::Resize::kResize ? std::string("") : std::to_string(pre.effective_resize_size()),
                       pre.height, pre.width, pre.mean[0], pre.mean[1], pre.mean[2], pre.std[0], pre.std[1], pre.std[2],
                       pre.layout == Preprocess::Layout::kNCHW ? "NCHW" : "NHWC", dtype);
    out << fmt::format("decoded      {} images in {} batch(es) of {}\n", set.count(), set.batches.size(), dims_to_string(batch_shape));
    if (nclasses) {
      size_t w = 5;
      for (const auto& c : info.classes) w = std::max(w, c.name.size());
      out << fmt::format("\n  {:<{}}  {:>7}  {:>6}  {:>7}\n", "class", w, "images", "drawn", "decoded");
      for (size_t i = 0; i < nclasses; ++i) {
        out << fmt::format("  {:<{}}  {:>7}  {:>6}  {:>7}\n", info.classes[i].name, w, info.classes[i].count, drawn_per[i], decoded_per[i]);
      }
    }
    out << fmt::format("\n  {:<7}  {:>10}  {:>10}  {:>10}  {:>10}\n", "channel", "mean", "std", "min", "max");
    for (int c = 0; c < 3; ++c) {
      const ChannelStats& s = stats[static_cast<size_t>(c)];
      if (!s.count) {
        out << fmt::format("  {:<7}  {:>10}  {:>10}  {:>10}  {:>10}\n", kChannelNames[c], "-", "-", "-", "-");
      } else {
        out << fmt::format("  {:<7}  {:>10.4f}  {:>10.4f}  {:>10.4f}  {:>10.4f}\n", kChannelNames[c], s.mean(), s.std(), s.min, s.max);
      }
    }
    if (!set.skipped.empty()) {
      out << fmt::format("\nskipped      {} unreadable image(s):\n", set.skipped.size());
      for (const auto& f : set.skipped) out << fmt::format("  {}: {}\n", f.path.string(), f.reason);
    }
    if (o.output) out << fmt::format("\noutput       {} ({} {})\n", o.output->string(), dims_to_string(all.shape()), dtype);
  }
  if (set.count() == 0) {
    throw Error(fmt::format("none of the {} images could be decoded", to_load.size())).file(info.root.string());
  }
}

void run_calib(const CalibOptions& options) { run_calib(options, std::cout); }

void add_calib_command(CLI::App& app) {
  auto o = std::make_shared<CalibOptions>();
  auto* cmd = app.add_subcommand("calib", "Sample, decode and summarise representative images (int8 calibration data)");
  auto* data = cmd->add_option("--data-dir,--dataset-dir", o->data_dir,
                               "Dataset folder: DIR/{val,test,train}/<class>/..., DIR/<class>/..., DIR/images/{val,test}/... (YOLO)");
  auto* flat = cmd->add_option("--calibration-dir", o->calibration_dir, "A flat folder of images");
  data->excludes(flat);
  cmd->add_option("--dataset-type", o->dataset_type, "auto | classification | detection")
      ->check(CLI::IsMember({"auto", "classification", "detection"}, CLI::ignore_case))
      ->capture_default_str();
  cmd->add_option("--num-samples", o->num_samples, "Images to draw (stratified across classes)")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Images per batch")->capture_default_str();
  cmd->add_option("--test-batches", o->test_batches, "Decode only the first N batches and print their statistics");
  cmd->add_option("--seed", o->seed, "Sampling seed (same seed, same images)")->capture_default_str();
  cmd->add_option("--input-size", o->input_size, "Square model input size")->capture_default_str();
  cmd->add_option("--resize-size", o->resize_size, "Shorter side before the centre crop (default input-size * 256 / 224)");
  cmd->add_option("--resize", o->resize, "resize | resize_center_crop")
      ->check(CLI::IsMember({"resize", "resize_center_crop"}))
      ->capture_default_str();
  cmd->add_option("--mean", o->mean, "Per-channel mean, 3 comma-separated values (default ImageNet)")->delimiter(',');
  cmd->add_option("--std", o->std, "Per-channel std, 3 comma-separated values (default ImageNet)")->delimiter(',');
  cmd->add_option("--layout", o->layout, "nchw | nhwc")->check(CLI::IsMember({"nchw", "nhwc"}, CLI::ignore_case))->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "float32 | uint8 (raw 0..255 pixels, no normalisation)")
      ->check(CLI::IsMember({"float32", "uint8"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "Decoding threads (0: one per core)")->capture_default_str();
  cmd->add_option("--max-pixels", o->max_pixels, "Refuse images with more pixels than this")->capture_default_str();
  cmd->add_option("--output", o->output, "Write the decoded samples as one .npy tensor");
  cmd->add_flag("--json", o->json, "Print a JSON summary");
  cmd->add_flag("!--no-progress", o->progress, "No progress bar");
  cmd->callback([o] {
    if (!o->data_dir && !o->calibration_dir) throw CLI::RequiredError("--data-dir or --calibration-dir");
    run_calib(*o);
  });
}

}  // namespace modex::app
