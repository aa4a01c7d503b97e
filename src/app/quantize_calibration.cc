#include "app/quantize_calibration.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
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
        for (size_t k; (k = next.fetch_add(1)) < jobs.size();) {
          const Tensor& t = *jobs[k].second;
          jobs[k].first->observe(t.values<float>(), t.rank() ? t.dim(0) : 1);
        }
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
  std::vector<std::string> graph_outputs;
  for (ir::ValueId o : prepared.graph.outputs()) graph_outputs.push_back(prepared.graph.value(o).name);
  r.ranges = collector.ranges(input_names, graph_outputs);
  r.images = done;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace modex::app

namespace modex::app {

namespace {

// Sums over the batch and the output pixels of each window tap's input: sums[tap * C + c] +=
// x[n, ih, iw, c] for every output pixel whose tap (kh, kw) lands on (ih, iw) inside the input
// (padding adds 0). `x` is NHWC, or [N, C] for a fully connected layer (one tap).
void window_sums(const Tensor& x, const ir::ConvAttrs* a, int64_t OH, int64_t OW, std::vector<double>& sums) {
  const float* xd = x.data<float>();
  if (!a) {
    const int64_t N = x.dim(0), C = x.dim(1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) sums[static_cast<size_t>(c)] += xd[n * C + c];
    return;
  }
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), KH = a->kernel[0], KW = a->kernel[1];
  std::vector<double> row(static_cast<size_t>(C));
  for (int64_t kh = 0; kh < KH; ++kh)
    for (int64_t kw = 0; kw < KW; ++kw) {
      double* s = sums.data() + (kh * KW + kw) * C;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * a->strides[0] - a->pads[0] + kh * a->dilations[0];
          if (ih < 0 || ih >= H) continue;
          std::fill(row.begin(), row.end(), 0.0);
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t iw = ow * a->strides[1] - a->pads[1] + kw * a->dilations[1];
            if (iw < 0 || iw >= W) continue;
            const float* px = xd + ((n * H + ih) * W + iw) * C;
            for (int64_t c = 0; c < C; ++c) row[static_cast<size_t>(c)] += px[c];
          }
          for (int64_t c = 0; c < C; ++c) s[c] += row[static_cast<size_t>(c)];
        }
    }
}

}  // namespace

int64_t correct_int8_biases(const ir::Graph& float_graph, ir::Graph& int8_graph, const std::vector<Tensor>& batches) {
  struct Layer {
    ir::ValueId bias;
    std::string f_in;  // the layer's input in the float graph
    std::optional<ir::ConvAttrs> conv;  // nullopt: fully connected
    int64_t O = 0, taps = 1, group_in = 0, C = 0, OH = 1, OW = 1;
    std::vector<float> w_err;          // [O, taps, group_in]: dequantized int8 weight - float weight
    std::vector<double> b_err, step;   // per output channel: dequantized int8 bias - float bias; one bias unit
    std::vector<double> sums;          // window sums [taps, C] of the float input
    int64_t pixels = 0;
  };
  std::vector<Layer> layers;
  ir::Graph fg = float_graph;
  std::map<std::string, const ir::Node*> float_nodes;  // Conv / Gemm nodes by name
  for (const ir::Node& m : fg.nodes())
    if (!m.dead && (m.op == ir::OpKind::kConv || m.op == ir::OpKind::kGemm)) float_nodes[m.name] = &m;
  for (const ir::Node& n : int8_graph.nodes()) {
    if (n.dead || (n.op != ir::OpKind::kConv && n.op != ir::OpKind::kGemm) || n.inputs.size() < 3 ||
        n.inputs[2] == ir::kNoValue)
      continue;
    const ir::Value& b = int8_graph.value(n.inputs[2]);
    const ir::Value& x = int8_graph.value(n.inputs[0]);
    const ir::Value& w = int8_graph.value(n.inputs[1]);
    const ir::Value& y = int8_graph.value(n.outputs[0]);
    if (!b.is_constant() || b.constant.dtype() != DType::kInt32 || !w.is_constant() ||
        w.constant.dtype() != DType::kInt8 || !x.quant || !w.quant)
      continue;
    // The float node of the same name and op, with weights of one shape. Values are not matched
    // by name: with --io-type uint8 or float32 the int8 graph's first layer reads a Quantize
    // node's output and its last one writes the input of another.
    const auto found = float_nodes.find(n.name);
    if (found == float_nodes.end() || found->second->op != n.op || found->second->inputs.size() < 2) continue;
    const ir::Node* fn = found->second;
    const ir::ValueId fx = fn->inputs[0];
    const ir::Value& fw = fg.value(fn->inputs[1]);
    if (!fw.is_constant() || fw.constant.shape() != w.constant.shape()) continue;
    // Every dim but the batch is static.
    auto dim = [](const ir::Value& v, size_t i) {
      return i < v.shape.size() && v.shape[i].is_static() ? v.shape[i].value : -1;
    };
    Layer l;
    l.bias = n.inputs[2];
    l.f_in = fg.value(fx).name;
    l.O = w.constant.dim(0);
    if (n.op == ir::OpKind::kConv) {
      l.conv = n.attr<ir::ConvAttrs>();
      if (l.conv->layout != ir::Layout::kNHWC || x.shape.size() != 4 || y.shape.size() != 4) continue;
      l.taps = l.conv->kernel[0] * l.conv->kernel[1];
      l.C = dim(x, 3);
      l.OH = dim(y, 1);
      l.OW = dim(y, 2);
    } else {
      if (x.shape.size() != 2) continue;
      l.C = dim(x, 1);
    }
    l.group_in = w.constant.numel() / std::max<int64_t>(l.O * l.taps, 1);
    if (l.C <= 0 || l.OH <= 0 || l.OW <= 0 || b.constant.numel() != l.O || l.group_in <= 0 || l.C % l.group_in)
      continue;
    const std::vector<float> wf = fw.constant.to_float_vector();
    std::vector<float> bf(static_cast<size_t>(l.O), 0.0f);
    if (fn->inputs.size() > 2 && fn->inputs[2] != ir::kNoValue && fg.value(fn->inputs[2]).is_constant())
      bf = fg.value(fn->inputs[2]).constant.to_float_vector();
    const int8_t* wq = w.constant.data<int8_t>();
    const int32_t* bq = b.constant.data<int32_t>();
    const int64_t per_o = l.taps * l.group_in;
    l.w_err.resize(wf.size());
    for (int64_t o = 0; o < l.O; ++o) {
      const double ws = w.quant->scale.size() > 1 ? w.quant->scale[static_cast<size_t>(o)] : w.quant->scale[0];
      for (int64_t k = 0; k < per_o; ++k) {
        const auto i = static_cast<size_t>(o * per_o + k);
        l.w_err[i] = static_cast<float>(ws * wq[i] - wf[i]);
      }
      l.step.push_back(static_cast<double>(x.quant->scale[0]) * ws);
      l.b_err.push_back(bq[o] * l.step.back() - bf[static_cast<size_t>(o)]);
    }
    l.sums.assign(static_cast<size_t>(l.taps * l.C), 0.0);
    if (!fg.is_graph_output(fx)) fg.add_output(fx);
    layers.push_back(std::move(l));
  }
  if (layers.empty() || batches.empty()) return 0;
  auto fm = Model::from_graph(fg, {.threads = 0});
  std::map<std::string, size_t> f_index;
  for (size_t i = 0; i < fm->outputs().size(); ++i) f_index[fm->outputs()[i].name] = i;
  // Means need far fewer pixels than ranges: the batches up to ~1M input pixels (21 images of
  // 224x224, every image of 32x32).
  int64_t seen = 0;
  for (const Tensor& batch : batches) {
    if (seen >= (int64_t{1} << 20)) break;
    seen += batch.numel() / std::max<int64_t>(batch.rank() == 4 ? batch.dim(3) : 1, 1);
    const std::vector<Tensor> out = fm->run({batch});  // views until the next run: used at once
    for (Layer& l : layers) {
      window_sums(out[f_index.at(l.f_in)], l.conv ? &*l.conv : nullptr, l.OH, l.OW, l.sums);
      l.pixels += batch.dim(0) * l.OH * l.OW;
    }
  }
  for (Layer& l : layers) {
    ir::Value& bv = int8_graph.value(l.bias);
    Tensor corrected = bv.constant.clone();
    int32_t* bd = corrected.data_mutable<int32_t>();
    const int64_t per_o = l.taps * l.group_in, o_per_group = l.O / (l.C / l.group_in);
    for (int64_t o = 0; o < l.O; ++o) {
      const int64_t c0 = o / o_per_group * l.group_in;
      double shift = 0;  // the weights' rounding, in the layer's mean output
      for (int64_t t = 0; t < l.taps; ++t)
        for (int64_t c = 0; c < l.group_in; ++c)
          shift += l.w_err[static_cast<size_t>(o * per_o + t * l.group_in + c)] * l.sums[static_cast<size_t>(t * l.C + c0 + c)];
      const double err = shift / static_cast<double>(l.pixels) + l.b_err[static_cast<size_t>(o)];
      const double moved = static_cast<double>(bd[o]) - std::nearbyint(err / l.step[static_cast<size_t>(o)]);
      bd[o] = static_cast<int32_t>(std::clamp(moved, -2147483648.0, 2147483647.0));
    }
    bv.constant = std::move(corrected);
  }
  return static_cast<int64_t>(layers.size());
}

}  // namespace modex::app
