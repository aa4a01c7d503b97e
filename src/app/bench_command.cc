#include "app/bench_command.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/image/image.h"
#include "io/image/preprocess.h"
#include "modex/runtime.h"

namespace modex::app {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux: kilobytes
}

void validate(const BenchOptions& o) {
  if (o.model.empty()) throw Error("give a model file: modex bench MODEL");
  if (o.batch < 1 || o.batch > 4096)
    throw Error(fmt::format("--batch must be between 1 and 4096, got {}", o.batch));
  if (o.threads < 0 || o.threads > 1024)
    throw Error(fmt::format("--threads must be between 0 and 1024, got {}", o.threads));
  if (o.iterations < 1)
    throw Error(fmt::format("--iterations must be at least 1, got {}", o.iterations));
  if (o.warmup < 0) throw Error(fmt::format("--warmup must not be negative, got {}", o.warmup));
  if (o.input_size && (*o.input_size < 1 || *o.input_size > 8192))
    throw Error(fmt::format("--input-size must be between 1 and 8192, got {}", *o.input_size));
}

// The model's "preprocessing" metadata (written by `modex export`) as JSON, or an empty object.
Json preprocessing_of(const Model& m) {
  auto it = m.metadata().find("preprocessing");
  if (it == m.metadata().end()) return Json::object();
  Json j = Json::parse(it->second, nullptr, false);
  return j.is_object() ? j : Json::object();
}

// Height and width for dynamic spatial dims: the flag, the preprocessing metadata, the
// checkpoint's input_size, 224.
std::pair<int64_t, int64_t> spatial_size(const BenchOptions& o, const Model& m, const Json& pre) {
  if (o.input_size) return {*o.input_size, *o.input_size};
  if (pre.contains("input_size")) {
    const Json& s = pre["input_size"];
    if (s.is_number_integer() && s.get<int64_t>() > 0) return {s.get<int64_t>(), s.get<int64_t>()};
    if (s.is_array() && s.size() == 2 && s[0].is_number_integer() && s[1].is_number_integer())
      return {s[0].get<int64_t>(), s[1].get<int64_t>()};
  }
  auto it = m.metadata().find("input_size");
  if (it != m.metadata().end()) {
    try {
      int64_t v = std::stoll(it->second);
      if (v > 0 && v <= 8192) return {v, v};
    } catch (const std::exception&) {
    }
  }
  return {224, 224};
}

// Whether a rank-4 image input is channels-last: NHWC when its last dim looks like the channels
// and its second does not (TFLite models; modex's ONNX and checkpoints take NCHW).
bool channels_last(const TensorInfo& info) {
  const auto& s = info.shape;
  if (s[1] > 0 && s[3] < 0) return false;
  if (s[3] > 0 && s[1] < 0) return true;
  return s[3] > 0 && s[3] <= 4 && s[1] > 4;
}

struct Input {
  Tensor tensor;
  std::string source;  // "random (seed N)" or the image path
  bool nhwc = false;
};

Input make_input(const BenchOptions& o, const Model& m, const TensorInfo& info, const Json& pre,
                 std::mt19937& rng) {
  Input in;
  Dims shape(info.shape.begin(), info.shape.end());
  bool image = shape.size() == 4;
  in.nhwc = image && channels_last(info);
  auto [h, w] = spatial_size(o, m, pre);
  for (size_t d = 0; d < shape.size(); ++d) {
    bool spatial = image && (in.nhwc ? (d == 1 || d == 2) : (d == 2 || d == 3));
    if (d == 0 && shape.size() >= 2) {
      if (shape[0] < 0) {
        shape[0] = o.batch;
      } else if (shape[0] != o.batch) {
        throw Error(fmt::format("the model's batch is fixed at {}; --batch {} does not fit",
                                shape[0], o.batch))
            .tensor(info.name)
            .hint(fmt::format("use --batch {}", shape[0]));
      }
    } else if (shape[d] < 0) {
      if (!spatial)
        throw Error(fmt::format("input dim {} ('{}') is dynamic and not an image's height or width",
                                d, info.dim_names[d]),
                    ErrorKind::kUnsupported)
            .tensor(info.name);
      shape[d] = (in.nhwc ? d == 1 : d == 2) ? h : w;
    }
  }
  if (o.input_size && image) {
    int64_t sh = shape[in.nhwc ? 1 : 2], sw = shape[in.nhwc ? 2 : 3];
    if (sh != *o.input_size || sw != *o.input_size)
      throw Error(
          fmt::format(
              "--input-size {} contradicts the input, whose spatial dims are fixed at {}x{}",
              *o.input_size, sh, sw))
          .tensor(info.name);
  }
  in.tensor = Tensor::zeros(DType::kFloat32, shape);
  float* data = in.tensor.data_mutable<float>();
  if (o.image && image) {
    image::Preprocess p = image::Preprocess::from_metadata(pre);
    p.height = shape[in.nhwc ? 1 : 2];
    p.width = shape[in.nhwc ? 2 : 3];
    p.layout = in.nhwc ? image::Preprocess::Layout::kNHWC : image::Preprocess::Layout::kNCHW;
    p.output = image::Preprocess::Output::kFloat32;
    int64_t channels = shape[in.nhwc ? 3 : 1];
    if (channels != 3)
      throw Error(
          fmt::format("--image needs a 3-channel image input; this one has {} channels", channels))
          .tensor(info.name);
    image::Image img = image::load_image(*o.image);
    int64_t per_image = in.tensor.numel() / shape[0];
    image::preprocess_into(img, p, data);
    for (int64_t n = 1; n < shape[0]; ++n) std::copy_n(data, per_image, data + n * per_image);
    in.source = o.image->string();
  } else {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < in.tensor.numel(); ++i) data[i] = dist(rng);
    in.source = fmt::format("random (seed {})", o.seed);
  }
  return in;
}

double percentile(const std::vector<double>& sorted, double q) {
  double pos = q * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

// "native_conv2d..." -> "native": how many nodes each backend runs.
std::map<std::string, int> kernel_counts(const std::vector<std::string>& names) {
  std::map<std::string, int> counts;
  for (const auto& n : names)
    if (n != "alias") ++counts[n.substr(0, n.find('_'))];
  return counts;
}

std::string shape_text(const Dims& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

LatencyStats latency_stats(std::vector<double> samples) {
  if (samples.empty()) throw Error("no latency samples", ErrorKind::kInternal);
  std::sort(samples.begin(), samples.end());
  LatencyStats s;
  double sum = 0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(samples.size());
  double var = 0;
  for (double v : samples) var += (v - s.mean) * (v - s.mean);
  s.stddev = samples.size() > 1 ? std::sqrt(var / static_cast<double>(samples.size() - 1)) : 0.0;
  s.median = percentile(samples, 0.5);
  s.p90 = percentile(samples, 0.9);
  s.p99 = percentile(samples, 0.99);
  s.min = samples.front();
  s.max = samples.back();
  return s;
}

void run_bench(const BenchOptions& o, std::ostream& out) {
  validate(o);
  if (o.image && !std::filesystem::exists(*o.image))
    throw Error("image file not found", ErrorKind::kIo).file(o.image->string());

  auto t0 = Clock::now();
  std::shared_ptr<Model> model = Model::load(o.model, {.threads = o.threads});
  double load_ms = ms_since(t0);

  Json pre = preprocessing_of(*model);
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::vector<Input> inputs;
  for (const TensorInfo& info : model->inputs())
    inputs.push_back(make_input(o, *model, info, pre, rng));
  std::vector<Tensor> feed;
  for (const Input& in : inputs) feed.push_back(in.tensor);

  // The first run plans the shape (shapes, arena, kernel setup): part of what a user waits for
  // before the first answer, so it is reported with the load, not with the latencies.
  auto t1 = Clock::now();
  model->run(feed);
  double first_run_ms = ms_since(t1);
  for (int64_t i = 0; i < o.warmup; ++i) model->run(feed);

  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(o.iterations));
  auto t2 = Clock::now();
  for (int64_t i = 0; i < o.iterations; ++i) {
    auto a = Clock::now();
    model->run(feed);
    samples.push_back(ms_since(a));
  }
  double total_ms = ms_since(t2);
  LatencyStats st = latency_stats(samples);
  double throughput = static_cast<double>(o.batch) * 1000.0 / st.mean;
  int64_t peak = peak_rss_bytes();
  auto counts = kernel_counts(model->kernel_names());

  std::string ext = o.model.extension().string();
  if (o.json) {
    Json j;
    j["model"] = o.model.string();
    j["format"] = ext.empty() ? "" : ext.substr(1);
    j["threads"] = model->threads();
    j["batch"] = o.batch;
    Json ins = Json::array();
    for (size_t i = 0; i < inputs.size(); ++i)
      ins.push_back(
          {{"name", model->inputs()[i].name},
           {"shape", inputs[i].tensor.shape()},
           {"layout", inputs[i].tensor.rank() == 4 ? (inputs[i].nhwc ? "NHWC" : "NCHW") : ""},
           {"source", inputs[i].source}});
    j["inputs"] = ins;
    j["load_ms"] = load_ms;
    j["first_run_ms"] = first_run_ms;
    j["load_total_ms"] = load_ms + first_run_ms;
    j["warmup"] = o.warmup;
    j["iterations"] = o.iterations;
    j["latency_ms"] = {{"mean", st.mean},    {"median", st.median}, {"p90", st.p90},
                       {"p99", st.p99},      {"min", st.min},       {"max", st.max},
                       {"stddev", st.stddev}};
    j["wall_ms"] = total_ms;
    j["throughput_ips"] = throughput;
    j["peak_rss_bytes"] = peak;
    j["kernels"] = counts;
    out << j.dump(1) << "\n";
    return;
  }
  std::string kernels;
  for (const auto& [k, n] : counts)
    kernels += fmt::format("{}{} {}", kernels.empty() ? "" : ", ", n, k);
  out << fmt::format("model        {}\n", o.model.string());
  for (size_t i = 0; i < inputs.size(); ++i)
    out << fmt::format("input        {} {} {}, {}\n", model->inputs()[i].name,
                       shape_text(inputs[i].tensor.shape()),
                       inputs[i].tensor.rank() == 4 ? (inputs[i].nhwc ? "NHWC" : "NCHW") : "",
                       inputs[i].source);
  out << fmt::format("threads      {}\n", model->threads());
  out << fmt::format("kernels      {}\n", kernels);
  out << fmt::format(
      "load         {:.1f} ms (read + prepare {:.1f} ms, first run with planning {:.1f} ms)\n",
      load_ms + first_run_ms, load_ms, first_run_ms);
  out << fmt::format("runs         {} warm-up, {} timed\n", o.warmup, o.iterations);
  out << fmt::format("latency ms   {:>9s} {:>9s} {:>9s} {:>9s} {:>9s} {:>9s}\n", "mean", "median",
                     "p90", "p99", "min", "max");
  out << fmt::format("             {:9.3f} {:9.3f} {:9.3f} {:9.3f} {:9.3f} {:9.3f}\n", st.mean,
                     st.median, st.p90, st.p99, st.min, st.max);
  out << fmt::format("throughput   {:.1f} images/s (batch {})\n", throughput, o.batch);
  out << fmt::format("peak memory  {:.1f} MB (peak RSS of this process)\n",
                     static_cast<double>(peak) / 1e6);
}

void run_bench(const BenchOptions& options) { run_bench(options, std::cout); }

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand(
      "bench",
      "Measure load time, latency, throughput and peak memory of modex's engine on a model");
  cmd->add_option("model", o->model,
                  "Model: .onnx, .tflite or a checkpoint (.pth/.pt/.bin/.safetensors)")
      ->required();
  cmd->add_option(
      "--image", o->image,
      "Feed this image (preprocessed as the model's metadata says) instead of random data");
  cmd->add_option("--batch", o->batch, "Images per run")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (0: one per core)")->capture_default_str();
  cmd->add_option("--iterations", o->iterations, "Timed runs")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Untimed runs before them (after the first, planning run)")
      ->capture_default_str();
  cmd->add_option("--input-size", o->input_size,
                  "Height and width for dynamic spatial dims (default: metadata, else 224)");
  cmd->add_option("--seed", o->seed, "Seed of the random input")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace modex::app
