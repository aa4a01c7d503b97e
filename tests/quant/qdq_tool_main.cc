// Test helper for the QDQ ONNX oracle test (tests/oracle/test_qdq_onnx.py): builds the optimised
// float graph of a checkpoint or ONNX file (as `modex export` does for ONNX), calibrates min/max
// ranges by running that graph in modex's engine on the given inputs (every value to observe made
// a graph output; minmax unless --method says otherwise), and writes the QDQ ONNX model.
//
//   qdq_tool (--checkpoint PATH | --onnx PATH) --calib X.npy --output OUT.onnx
//            [--opset N] [--per-tensor] [--quantize-outputs] [--reduce-range] [--method
//            minmax|percentile|entropy|image-percentile] [--report PREFIX] [--ranges OUT.json] [--batch N]
//
// --report PREFIX writes PREFIX.json and PREFIX.html (quant/report.h) with the SQNR of every
// calibrated value's int8 grid on the first batch.
// X.npy: float32 [N, C, H, W], preprocessed images. Prints a JSON summary on stdout (ops of the
// QDQ graph, the number of calibrated values); on an Error prints it to stderr and exits 2
// (invalid input), 3 (unsupported) or 4 (anything else), writing nothing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "app/quantize_qdq.h"
#include "core/error.h"
#include "core/file_util.h"
#include "io/dataset/npy.h"
#include "io/onnx/onnx_reader.h"
#include "io/onnx/onnx_writer.h"
#include "io/pytorch/checkpoint.h"
#include "models/zoo.h"
#include "modex/runtime.h"
#include "passes/passes.h"
#include "quant/qdq.h"
#include "quant/report.h"

namespace {

using namespace modex;

int usage() {
  std::fprintf(stderr,
               "usage: qdq_tool (--checkpoint PATH | --onnx PATH) --calib X.npy --output OUT.onnx "
               "[--opset N] [--per-tensor] [--quantize-outputs] [--reduce-range] [--method "
               "minmax|percentile|entropy|image-percentile] [--report PREFIX] [--ranges OUT.json] [--batch N]\n");
  return 64;
}

ir::Graph load_graph(const std::string& checkpoint, const std::string& onnx) {
  if (!onnx.empty()) return onnx_io::import_onnx(onnx);
  Checkpoint ckpt = load_checkpoint(checkpoint);
  models::BuildOptions bo;
  bo.num_classes = ckpt.config.num_classes;
  return models::build_model(ckpt.weights, bo).graph;
}

// The range of every value qdq_calibration_values names, over all of `calib` in batches, as
// `modex export` calibrates its QDQ file (app::calibrate_qdq, the same full-range rules).
quant::RangeMap calibrate(const ir::Graph& g, const Tensor& calib, int64_t batch,
                          quant::CalibrationMethod method) {
  const int64_t n = calib.dim(0), per_image = calib.numel() / std::max<int64_t>(n, 1);
  std::vector<Tensor> batches;
  for (int64_t start = 0; start < n; start += batch) {
    const int64_t count = std::min(batch, n - start);
    Dims shape = calib.shape();
    shape[0] = count;
    Tensor x = Tensor::zeros(DType::kFloat32, shape);
    std::copy_n(calib.data<float>() + start * per_image, count * per_image, x.data_mutable<float>());
    batches.push_back(std::move(x));
  }
  return app::calibrate_qdq(g, batches, quant::ObserverOptions{.method = method}, {});
}

// The accuracy report of the int8 grid alone: per calibrated value, the SQNR of its first
// calibration batch quantized and dequantized with the params to_qdq chose (how well each tensor's
// int8 grid fits it), rendered with quant/report.h.
quant::QuantReport grid_report(const ir::Graph& g, const quant::RangeMap& ranges,
                               const Tensor& calib, int64_t batch) {
  std::vector<std::string> names = quant::qdq_calibration_values(g);
  const std::string input = g.value(g.inputs()[0]).name;
  ir::Graph observed = g;
  for (const std::string& n : names)
    if (n != input && !observed.is_graph_output(*observed.find_value(n)))
      observed.add_output(*observed.find_value(n));
  auto model = Model::from_graph(observed, {.threads = 2});
  Dims shape = calib.shape();
  shape[0] = std::min(batch, calib.dim(0));
  Tensor x = Tensor::zeros(DType::kFloat32, shape);
  std::copy_n(calib.data<float>(), x.numel(), x.data_mutable<float>());
  std::map<std::string, Tensor> seen{{input, x}};
  std::vector<Tensor> ys = model->run({x});
  for (size_t i = 0; i < ys.size(); ++i) seen[model->outputs()[i].name] = ys[i];
  quant::QuantReport r;
  for (const std::string& name : names) {
    const ir::Value& v = g.value(*g.find_value(name));
    std::string op = v.producer < 0 ? "Input" : std::string(ir::op_name(g.node(v.producer).op));
    const Tensor& t = seen.at(name);
    ir::QuantParams p = quant::activation_params(ranges.at(name));
    std::vector<float> y(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) {
      double q = std::clamp(
          std::round(t.data<float>()[i] / p.scale[0]) + static_cast<double>(p.zero_point[0]),
          -128.0, 127.0);
      y[static_cast<size_t>(i)] =
          static_cast<float>((q - static_cast<double>(p.zero_point[0])) * p.scale[0]);
    }
    r.layers.push_back(quant::layer_error(name, op, t.values<float>(), y));
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, onnx, calib_path, output, ranges_path, report_prefix, method = "minmax";
  int opset = 13;
  int64_t batch = 32;
  bool per_tensor = false, quantize_outputs = false, reduce_range = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--checkpoint")
      checkpoint = next();
    else if (a == "--onnx")
      onnx = next();
    else if (a == "--calib")
      calib_path = next();
    else if (a == "--output")
      output = next();
    else if (a == "--ranges")
      ranges_path = next();
    else if (a == "--opset")
      opset = std::stoi(next());
    else if (a == "--batch")
      batch = std::stoll(next());
    else if (a == "--per-tensor")
      per_tensor = true;
    else if (a == "--quantize-outputs")
      quantize_outputs = true;
    else if (a == "--reduce-range")
      reduce_range = true;
    else if (a == "--method")
      method = next();
    else if (a == "--report")
      report_prefix = next();
    else
      return usage();
  }
  if (checkpoint.empty() == onnx.empty() || calib_path.empty() || output.empty() || batch < 1)
    return usage();
  try {
    ir::Graph g = load_graph(checkpoint, onnx);
    passes::optimize(g);
    Tensor calib = npy::read(calib_path);
    if (calib.dtype() != DType::kFloat32 || calib.rank() != 4)
      throw Error("calibration tensor must be float32 [N, C, H, W]").file(calib_path);
    auto t0 = std::chrono::steady_clock::now();
    quant::RangeMap ranges = calibrate(g, calib, batch, quant::parse_calibration_method(method));
    const double t_calib =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    quant::QdqOptions qo{opset};
    qo.per_channel = !per_tensor;
    qo.quantize_outputs = quantize_outputs;
    qo.reduce_range = reduce_range;
    ir::Graph q = quant::to_qdq(g, ranges, qo);
    std::map<std::string, int> ops;
    for (const auto& n : q.nodes()) ops[std::string(ir::op_name(n.op))]++;
    onnx_io::OnnxWriteOptions wo;
    wo.opset = opset;
    onnx_io::write_onnx(q, output, wo);
    nlohmann::json summary;
    summary["ops"] = ops;
    summary["calibrated_values"] = ranges.size();
    summary["input"] = g.value(g.inputs()[0]).name;
    summary["output"] = g.value(g.outputs()[0]).name;
    if (!ranges_path.empty()) {
      nlohmann::json r = nlohmann::json::object();
      for (const auto& [name, range] : ranges) r[name] = {range.min, range.max};
      AtomicFile f(ranges_path);
      f.write(r.dump(1) + "\n");
      f.commit();
    }
    if (!report_prefix.empty()) {
      quant::QuantReport r = grid_report(g, ranges, calib, batch);
      r.float_model = checkpoint.empty() ? onnx : checkpoint;
      r.int8_model = output;
      r.architecture = g.metadata.count("architecture") ? g.metadata.at("architecture") : "";
      r.method = method;
      r.calibration_samples = calib.dim(0);
      r.timings = {{"calibration", t_calib}};
      AtomicFile json(report_prefix + ".json"), html(report_prefix + ".html");
      json.write(quant::to_json(r).dump(1) + "\n");
      html.write(quant::to_html(r));
      json.commit();
      html.commit();
    }
    std::printf("%s\n", summary.dump().c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.kind() == ErrorKind::kInvalidInput ? 2 : e.kind() == ErrorKind::kUnsupported ? 3 : 4;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 4;
  }
}
