#include "app/quantize_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "app/classify.h"
#include "core/error.h"
#include "modex/runtime.h"

namespace modex::app {
namespace fs = std::filesystem;

namespace {

std::string folder_form(std::string s) {
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

std::string normalised(const std::string& s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) out.push_back(static_cast<char>(std::tolower(u)));
  }
  return out;
}

// `info` restricted to the images not in `exclude`, with class counts to match.
dataset::DatasetInfo without(const dataset::DatasetInfo& info, const std::set<fs::path>& exclude) {
  dataset::DatasetInfo rest = info;
  rest.images.clear();
  for (auto& c : rest.classes) c.count = 0;
  for (const dataset::Sample& s : info.images) {
    if (exclude.count(s.path)) continue;
    rest.images.push_back(s);
    if (s.class_index >= 0) ++rest.classes[static_cast<size_t>(s.class_index)].count;
  }
  return rest;
}

// The dataset's test split, when calibration drew from its val split.
std::optional<dataset::DatasetInfo> test_split(const dataset::DatasetInfo& calib) {
  if (calib.split.empty() || calib.split == "test" || calib.split == "train") return std::nullopt;
  const fs::path dir = calib.image_root.parent_path() / "test";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return std::nullopt;
  try {
    dataset::DatasetInfo t =
        dataset::discover(dir, calib.type == dataset::DatasetType::kClassification
                                   ? dataset::DatasetType::kClassification
                                   : dataset::DatasetType::kFlat);
    if (t.images.empty()) return std::nullopt;
    t.root = calib.root;
    t.split = "test";
    return t;
  } catch (const Error&) {
    return std::nullopt;  // not a usable split: fall back to the calibration folder's rest
  }
}

// Accumulated float-vs-int8 differences of one value over all images.
struct LayerAccumulator {
  std::string name, op;
  double signal = 0, noise = 0, abs_sum = 0, max_abs_err = 0, max_abs_ref = 0;
  int64_t elements = 0;

  void add(const float* ref, const float* approx, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const double x = ref[i], d = x - static_cast<double>(approx[i]);
      signal += x * x;
      noise += d * d;
      abs_sum += std::fabs(d);
      max_abs_err = std::max(max_abs_err, std::fabs(d));
      max_abs_ref = std::max(max_abs_ref, std::fabs(x));
    }
    elements += n;
  }

  quant::LayerError result() const {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    quant::LayerError e;
    e.name = name;
    e.op = op;
    // The same conventions as quant::sqnr_db: +inf without noise, -inf for noise on silence.
    e.sqnr_db = noise == 0.0 ? kInf : signal == 0.0 ? -kInf : 10.0 * std::log10(signal / noise);
    e.max_abs_err = max_abs_err;
    e.mean_abs_err = elements ? abs_sum / static_cast<double>(elements) : 0.0;
    e.max_abs_ref = max_abs_ref;
    e.elements = elements;
    return e;
  }
};

size_t argmax(const std::vector<float>& p) {
  return static_cast<size_t>(std::max_element(p.begin(), p.end()) - p.begin());
}

}  // namespace

HeldOutImages load_heldout_images(const CalibrationData& calibration, int64_t count, uint64_t seed,
                                  const image::Preprocess& preprocess, int64_t batch_size,
                                  const std::function<void(int64_t, int64_t)>& progress) {
  check(count > 0, fmt::format("the number of report images must be positive, got {}", count));
  HeldOutImages h;
  std::set<fs::path> drawn;
  for (const auto& s : calibration.set.used) drawn.insert(s.path);
  for (const auto& f : calibration.set.skipped) drawn.insert(f.path);
  if (auto test = test_split(calibration.info)) {
    h.info = without(*test, drawn);  // the same file cannot be in both, but a symlinked split could
    h.source = fmt::format("{} (test split)", test->image_root.string());
  } else {
    h.info = without(calibration.info, drawn);
    h.source = fmt::format("{} minus the {} calibration images",
                           calibration.info.image_root.string(), drawn.size());
  }
  const int64_t available = static_cast<int64_t>(h.info.images.size());
  if (available == 0) return h;
  const int64_t n = std::min(count, available);
  // Corrupt held-out images are replaced like calibration ones; when too few decode, keep what
  // did: the report is about the images it ran on.
  try {
    h.set = load_calibration_images(h.info, n, seed, preprocess, batch_size, progress).set;
  } catch (const Error&) {
    dataset::LoadOptions lo;
    lo.batch_size = std::max<int64_t>(batch_size, 1);
    h.set = dataset::load_batches(dataset::sample(h.info, n, seed), preprocess, lo);
  }
  return h;
}

std::vector<int64_t> match_labels(const std::vector<dataset::ClassInfo>& folders,
                                  const std::vector<std::string>& class_names, int64_t num_classes,
                                  std::string& how) {
  std::vector<int64_t> map(folders.size(), -1);
  if (folders.empty()) return {};
  if (!class_names.empty()) {
    size_t hit = 0;
    for (size_t i = 0; i < folders.size(); ++i) {
      for (size_t k = 0; k < class_names.size() && map[i] < 0; ++k)
        if (folders[i].name == folder_form(class_names[k])) map[i] = static_cast<int64_t>(k);
      for (size_t k = 0; k < class_names.size() && map[i] < 0; ++k)
        if (normalised(folders[i].name) == normalised(class_names[k]))
          map[i] = static_cast<int64_t>(k);
      hit += map[i] >= 0;
    }
    if (hit == folders.size()) {
      how = "class folders matched to the model's class names";
      return map;
    }
  }
  const bool numeric = std::all_of(folders.begin(), folders.end(), [](const dataset::ClassInfo& c) {
    return !c.name.empty() && c.name.size() < 10 &&
           std::all_of(c.name.begin(), c.name.end(),
                       [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
  });
  if (numeric) {
    for (size_t i = 0; i < folders.size(); ++i) map[i] = std::stoll(folders[i].name);
    if (std::all_of(map.begin(), map.end(), [&](int64_t m) { return m < num_classes; })) {
      how = "numeric class folders as class indices";
      return map;
    }
    return {};
  }
  if (class_names.empty() && static_cast<int64_t>(folders.size()) == num_classes) {
    for (size_t i = 0; i < folders.size(); ++i) map[i] = static_cast<int64_t>(i);
    how = "sorted class folders as class indices";
    return map;
  }
  return {};
}

quant::QuantReport evaluate_int8(const ir::Graph& float_graph, const ir::Graph& int8_graph,
                                 const HeldOutImages& heldout, const EvaluateOptions& options,
                                 const std::function<void(int64_t, int64_t)>& progress,
                                 std::string* labels_how) {
  const int64_t total = heldout.set.count();
  if (total == 0)
    throw Error("no held-out images to compare the float and int8 models on")
        .file(heldout.info.image_root.string())
        .hint(
            "every image was drawn for calibration: add images, give the dataset a test split or "
            "lower --num-calib-samples");
  if (float_graph.outputs().size() != 1 || int8_graph.outputs().size() != 1)
    throw Error("the accuracy report needs models with one output", ErrorKind::kUnsupported);

  // The values to compare: every int8 activation computed by an op (not the Quantize of the input
  // or the Dequantize of an output) whose float counterpart has the same name; in a QDQ graph,
  // every op output whose pair follows it.
  std::vector<LayerAccumulator> layers;
  std::vector<std::string> q_names;  // the int8 side's value for each layer
  ir::Graph fg = float_graph, qg = int8_graph;
  const std::string logits = float_graph.value(float_graph.outputs()[0]).name;
  auto compare = [&](ir::ValueId fid, ir::ValueId qid, std::string op) {
    layers.push_back({fg.value(fid).name, std::move(op)});
    q_names.push_back(qg.value(qid).name);
    if (!qg.is_graph_output(qid)) qg.add_output(qid);
    if (!fg.is_graph_output(fid)) fg.add_output(fid);
  };
  if (options.qdq) {
    for (const ir::Node& n : float_graph.nodes()) {
      if (n.dead) continue;
      for (ir::ValueId out : n.outputs) {
        auto qid = qg.find_value(float_graph.value(out).name + "_DequantizeLinear_Output");
        if (qid) compare(out, *qid, std::string(ir::op_name(n.op)));
      }
    }
  } else {
    for (const ir::Node& n : int8_graph.nodes()) {
      if (n.dead || n.op == ir::OpKind::kQuantize || n.op == ir::OpKind::kDequantize) continue;
      for (ir::ValueId out : n.outputs) {
        const ir::Value& v = int8_graph.value(out);
        if (!v.quant || (v.dtype != DType::kInt8 && v.dtype != DType::kUInt8)) continue;
        auto fid = fg.find_value(v.name);
        if (!fid || fg.value(*fid).is_constant()) continue;
        compare(*fid, out, std::string(ir::op_name(n.op)));
      }
    }
  }
  auto fm = Model::from_graph(fg, {.threads = 0});
  auto qm = Model::from_graph(qg, {.threads = 0});
  std::map<std::string, size_t> f_index, q_index;
  for (size_t i = 0; i < fm->outputs().size(); ++i) f_index[fm->outputs()[i].name] = i;
  for (size_t i = 0; i < qm->outputs().size(); ++i) q_index[qm->outputs()[i].name] = i;
  for (size_t k = 0; k < layers.size(); ++k)
    if (!f_index.count(layers[k].name) || !q_index.count(q_names[k]))
      throw Error("the engine did not return value '" + layers[k].name + "'", ErrorKind::kInternal);
  const std::string q_logits = int8_graph.value(int8_graph.outputs()[0]).name;

  std::string how;
  int64_t num_classes = 0;
  {
    const ir::Value& out = float_graph.value(float_graph.outputs()[0]);
    if (!out.shape.empty() && out.shape.back().is_static()) num_classes = out.shape.back().value;
  }
  const std::vector<int64_t> labels =
      match_labels(heldout.info.classes, options.class_names, num_classes, how);
  if (labels_how) *labels_how = labels.empty() ? "" : how;

  quant::QuantReport r;
  r.sqnr_threshold_db = options.sqnr_threshold_db;
  int64_t done = 0, agree = 0, labelled = 0, correct_f = 0, correct_q = 0;
  double sum_dprob = 0, max_dprob = 0;
  if (progress) progress(0, total);
  for (const Tensor& batch : heldout.set.batches) {
    std::vector<Tensor> fo = fm->run({batch});
    std::vector<Tensor> qo = qm->run({batch});
    const Tensor& fl = fo[f_index.at(logits)];
    const Tensor& ql = qo[q_index.at(q_logits)];
    const int64_t b = batch.dim(0);
    if (fl.numel() != ql.numel() || fl.numel() % b)
      throw Error(fmt::format("float and int8 logits differ in size ({} and {} values)", fl.numel(),
                              ql.numel()),
                  ErrorKind::kInternal);
    const int64_t c = fl.numel() / b;
    for (int64_t i = 0; i < b; ++i) {
      std::vector<float> pf = probabilities(fl.data<float>() + i * c, c);
      std::vector<float> pq = probabilities(ql.data<float>() + i * c, c);
      const size_t tf = argmax(pf), tq = argmax(pq);
      agree += tf == tq;
      double dmax = 0;
      for (int64_t k = 0; k < c; ++k)
        dmax = std::max(dmax, std::fabs(static_cast<double>(pf[k]) - pq[k]));
      sum_dprob += dmax;
      max_dprob = std::max(max_dprob, dmax);
      const int cls = heldout.set.used[static_cast<size_t>(done + i)].class_index;
      if (!labels.empty() && cls >= 0 && labels[static_cast<size_t>(cls)] >= 0) {
        const auto want = static_cast<size_t>(labels[static_cast<size_t>(cls)]);
        ++labelled;
        correct_f += tf == want;
        correct_q += tq == want;
      }
    }
    for (size_t k = 0; k < layers.size(); ++k) {
      LayerAccumulator& l = layers[k];
      const Tensor& x = fo[f_index.at(l.name)];
      const Tensor& y = qo[q_index.at(q_names[k])];
      if (x.numel() != y.numel())
        throw Error(
            fmt::format("value '{}' has {} elements in the float model and {} in the int8 one",
                        l.name, x.numel(), y.numel()),
            ErrorKind::kInternal);
      l.add(x.data<float>(), y.data<float>(), x.numel());
    }
    done += b;
    if (progress) progress(done, total);
  }
  r.heldout_images = done;
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(done);
  r.mean_abs_dprob = sum_dprob / static_cast<double>(done);
  r.max_abs_dprob = max_dprob;
  if (labelled) {
    r.accuracy_float = static_cast<double>(correct_f) / static_cast<double>(labelled);
    r.accuracy_int8 = static_cast<double>(correct_q) / static_cast<double>(labelled);
  }
  for (const auto& l : layers) r.layers.push_back(l.result());
  return r;
}

nlohmann::json report_json(const quant::QuantReport& report, const HeldOutImages& heldout,
                           const std::string& labels_how) {
  nlohmann::json j = quant::to_json(report);
  nlohmann::json files = nlohmann::json::array();
  for (const dataset::Sample& s : heldout.set.used) files.push_back(s.path.string());
  j["heldout"] = {
      {"source", heldout.source},
      {"files", files},
      {"skipped", heldout.set.skipped.size()},
      {"labels", labels_how.empty() ? nlohmann::json(nullptr) : nlohmann::json(labels_how)}};
  return j;
}

std::optional<Int8ReportRun> run_int8_report(
    const ir::Graph& float_graph, const ir::Graph& int8_graph, const CalibrationData& calibration,
    const image::Preprocess& preprocess, int64_t report_images, uint64_t seed, int64_t batch_size,
    const EvaluateOptions& options, quant::QuantReport header,
    const std::function<void(int64_t, int64_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  // Decoding and evaluation each take one half of the progress.
  HeldOutImages heldout = load_heldout_images(calibration, report_images, seed, preprocess,
                                              batch_size, [&](int64_t done, int64_t total) {
                                                if (progress) progress(done, 2 * total);
                                              });
  if (heldout.set.count() == 0) return std::nullopt;
  std::string how;
  quant::QuantReport r = evaluate_int8(
      float_graph, int8_graph, heldout, options,
      [&](int64_t done, int64_t total) {
        if (progress) progress(total + done, 2 * total);
      },
      &how);
  r.float_model = header.float_model;
  r.int8_model = header.int8_model;
  r.architecture = header.architecture;
  r.method = header.method;
  r.calibration_samples = header.calibration_samples;
  r.timings = header.timings;
  r.timings.emplace_back(
      "evaluation", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  Int8ReportRun run;
  run.json = report_json(r, heldout, how);
  run.html = quant::to_html(r);
  run.summary = report_summary(r);
  run.report = std::move(r);
  return run;
}

std::string report_summary(const quant::QuantReport& r, size_t worst) {
  std::string s = fmt::format(
      "int8 vs float on {} held-out images: top-1 agreement {:.1f}%, mean |Δprob| {:.4f}, max "
      "{:.4f}",
      r.heldout_images, 100.0 * r.top1_agreement, r.mean_abs_dprob, r.max_abs_dprob);
  if (r.accuracy_float && r.accuracy_int8)
    s += fmt::format("\naccuracy     float {:.1f}%, int8 {:.1f}%", 100.0 * *r.accuracy_float,
                     100.0 * *r.accuracy_int8);
  std::vector<size_t> w = quant::worst_layers(r, worst);
  if (!w.empty()) {
    s += "\nworst layers";
    for (size_t k = 0; k < w.size(); ++k) {
      const quant::LayerError& l = r.layers[w[k]];
      s += fmt::format("{} {} ({}) {}", k ? "," : "", l.name, l.op,
                       std::isfinite(l.sqnr_db) ? fmt::format("{:.1f} dB", l.sqnr_db)
                                                : (l.sqnr_db > 0 ? "exact" : "-inf dB"));
    }
  }
  return s;
}

}  // namespace modex::app
