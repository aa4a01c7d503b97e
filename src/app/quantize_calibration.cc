#include "app/quantize_calibration.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "modex/runtime.h"

namespace modex::app {
namespace fs = std::filesystem;

void ProgressBar::finish() {
  if (enabled_ && drawn_) std::cerr << "\r\033[K" << std::flush;
  enabled_ = false;
}

void ProgressBar::operator()(int64_t done, int64_t total) {
  if (!enabled_ || total <= 0) return;
  drawn_ = true;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / total);
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  std::string eta = rate > 0 && done < total ? fmt::format("  ETA {:.0f}s", static_cast<double>(total - done) / rate) : "";
  std::cerr << fmt::format("\r[{}] {}/{}  {:.1f} img/s{}\033[K", bar, done, total, rate, eta) << std::flush;
}

bool ProgressBar::stderr_is_terminal() { return ::isatty(STDERR_FILENO) != 0; }

dataset::DatasetInfo discover_images(const std::optional<fs::path>& data_dir, const std::optional<fs::path>& calibration_dir,
                                     dataset::DatasetType type) {
  if (data_dir && calibration_dir) throw Error("give either --data-dir or --calibration-dir, not both");
  if (!data_dir && !calibration_dir) throw Error("no images given").hint("use --data-dir DIR or --calibration-dir DIR");
  if (!calibration_dir) return dataset::discover(*data_dir, type);
  // A flat folder first; a folder with a recognisable layout is accepted too.
  try {
    return dataset::discover(*calibration_dir, type == dataset::DatasetType::kAuto ? dataset::DatasetType::kFlat : type);
  } catch (const Error&) {
    if (type != dataset::DatasetType::kAuto) throw;
    return dataset::discover(*calibration_dir, dataset::DatasetType::kAuto);
  }
}

CalibrationData load_calibration_images(const dataset::DatasetInfo& info, int64_t count, uint64_t seed,
                                        const image::Preprocess& preprocess, int64_t batch_size,
                                        const std::function<void(int64_t, int64_t)>& progress) {
  check(count > 0, fmt::format("the number of calibration images must be positive, got {}", count));
  const int64_t available = static_cast<int64_t>(info.images.size());
  if (available < count)
    throw Error(fmt::format("too few calibration images: {} found, {} needed", available, count))
        .file(info.image_root.string())
        .hint("add images or lower --num-calib-samples");
  // Every image in the seeded, stratified order; the first `count` are used, and each one that
  // fails to decode is replaced by the next.
  const std::vector<dataset::Sample> order = dataset::sample(info, available, seed);
  CalibrationData data;
  data.info = info;
  std::vector<Tensor> images;  // single images, re-batched at the end
  size_t next = 0;
  while (data.set.count() < count && next < order.size()) {
    const size_t want = static_cast<size_t>(count - data.set.count());
    std::vector<dataset::Sample> round(order.begin() + static_cast<std::ptrdiff_t>(next),
                                       order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), next + want)));
    next += round.size();
    dataset::LoadOptions lo;
    lo.batch_size = 1;
    const int64_t before = data.set.count();
    lo.progress = [&](int64_t done, int64_t) {
      if (progress) progress(before + done, count);
    };
    dataset::CalibrationSet part = dataset::load_batches(round, preprocess, lo);
    for (auto& t : part.batches) images.push_back(std::move(t));
    for (auto& s : part.used) data.set.used.push_back(s);
    for (auto& f : part.skipped) data.set.skipped.push_back(f);
  }
  data.drawn = static_cast<int64_t>(next);
  if (data.set.count() < count) {
    Error e(fmt::format("too few usable calibration images: {} of {} decoded, {} unreadable", data.set.count(), available,
                        data.set.skipped.size()));
    e.file(info.image_root.string());
    if (!data.set.skipped.empty())
      e.hint(fmt::format("first unreadable: {}: {}", data.set.skipped[0].path.string(), data.set.skipped[0].reason));
    throw e;
  }
  // Batches of batch_size.
  batch_size = std::max<int64_t>(batch_size, 1);
  for (size_t i = 0; i < images.size(); i += static_cast<size_t>(batch_size)) {
    const size_t n = std::min(images.size() - i, static_cast<size_t>(batch_size));
    Dims shape = images[i].shape();
    shape[0] = static_cast<int64_t>(n);
    Tensor b = Tensor::empty(images[i].dtype(), shape);
    for (size_t k = 0; k < n; ++k)
      std::memcpy(b.raw_mutable() + k * images[i].nbytes(), images[i + k].raw(), images[i].nbytes());
    data.set.batches.push_back(std::move(b));
  }
  return data;
}

int64_t calibration_batch_size(const quant::PreparedGraph& prepared) {
  const ir::Graph& g = prepared.graph;
  const ir::Value& in = g.value(g.inputs()[0]);
  if (in.shape.empty() || in.shape[0].is_static()) return 1;
  ir::Graph one = g;
  std::map<std::string, int64_t> bind{{in.shape[0].symbol, 1}};
  one.infer_shapes(bind);
  int64_t bytes = 0;
  for (const ir::Value& v : one.values()) {
    if (v.is_constant()) continue;
    auto dims = ir::to_dims(v.shape);
    if (dims) bytes += checked_numel(*dims) * 4;
  }
  constexpr int64_t kBudget = int64_t{256} << 20;
  return std::clamp<int64_t>(kBudget / std::max<int64_t>(bytes, 1), 1, 16);
}

CalibrationResult calibrate(const quant::PreparedGraph& prepared, const std::vector<Tensor>& batches,
                            const quant::ObserverOptions& observer, const std::function<void(int64_t, int64_t)>& progress) {
  auto t0 = std::chrono::steady_clock::now();
  // Every value to observe becomes a graph output, so the engine keeps it (its fusion passes leave
  // graph outputs alone) and hands it back.
  ir::Graph g = prepared.graph;
  std::vector<std::string> output_names;
  std::vector<std::string> input_names;
  for (const std::string& name : prepared.observe) {
    auto id = g.find_value(name);
    if (!id) throw Error("value to observe is not in the graph", ErrorKind::kInternal).tensor(name);
    if (g.value(*id).producer < 0 && !g.value(*id).is_constant()) {
      input_names.push_back(name);  // a graph input: observed from the batch itself
      continue;
    }
    if (!g.is_graph_output(*id)) g.add_output(*id);
  }
  for (ir::ValueId o : g.outputs()) output_names.push_back(g.value(o).name);
  if (g.inputs().size() != 1) throw Error("calibration needs a graph with one input", ErrorKind::kUnsupported);
  auto model = Model::from_graph(g, {.threads = 0});
  if (model->outputs().size() != output_names.size())
    throw Error("the engine changed the graph's outputs", ErrorKind::kInternal);

  quant::RangeCollector collector(observer);
  for (const auto& n : output_names) collector.observer(n);  // created up front: no map writes in threads
  for (const auto& n : input_names) collector.observer(n);
  int64_t total = 0, done = 0;
  for (const Tensor& b : batches) total += b.dim(0);
  const unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  if (progress) progress(0, total);
  for (const Tensor& batch : batches) {
    Tensor in = batch.to(DType::kFloat32);
    // The activations are observed where the engine computed them (views, not copies: copying
    // them cost as much as observing them).
    model->run_with({batch}, [&](std::span<const Tensor> outs) {
      std::vector<std::pair<quant::RangeObserver*, const Tensor*>> jobs;
      for (size_t i = 0; i < outs.size(); ++i) jobs.push_back({&collector.observer(output_names[i]), &outs[i]});
      for (const auto& n : input_names) jobs.push_back({&collector.observer(n), &in});
      // Largest first, spread over a few threads (each observer is touched by one thread only).
      std::sort(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.second->numel() > b.second->numel(); });
      std::atomic<size_t> next{0};
      auto work = [&] {
        for (size_t k; (k = next.fetch_add(1)) < jobs.size();) jobs[k].first->observe(jobs[k].second->values<float>());
      };
      std::vector<std::thread> pool;
      for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work);
      work();
      for (auto& t : pool) t.join();
    });
    done += batch.dim(0);
    if (progress) progress(done, total);
  }
  CalibrationResult r;
  r.ranges = collector.ranges();
  // The model's outputs keep their full range: clipping logits would tie the top classes. With
  // entropy calibration so does the image: pixel values are not the bell-shaped distribution the
  // KL search assumes (a background spike and a bright tail), and its threshold saturated the
  // bright pixels before the first layer (-47.8 points on a trained mobilenet_v2). Percentile
  // keeps 99.99 % of them already (its input range differs from the full one by < 0.5 %).
  std::vector<std::string> full_range;
  if (observer.method == quant::CalibrationMethod::kEntropy) full_range = input_names;
  for (ir::ValueId o : prepared.graph.outputs()) full_range.push_back(prepared.graph.value(o).name);
  for (const std::string& name : full_range) {
    const quant::RangeObserver& obs = collector.observer(name);
    if (obs.count()) r.ranges[name] = {obs.min(), obs.max()};
  }
  r.images = done;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace modex::app
