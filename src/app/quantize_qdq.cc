#include "app/quantize_qdq.h"

#include <fmt/format.h>

#include <cstring>

#include "core/error.h"
#include "modex/runtime.h"

namespace modex::app {

Tensor nhwc_to_nchw(const Tensor& batch) {
  if (batch.rank() != 4)
    throw Error(fmt::format("expected an image batch [N,H,W,C], got rank {}", batch.rank()));
  Tensor x = batch.to(DType::kFloat32);
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y = Tensor::empty(DType::kFloat32, {n, c, h, w});
  const float* src = x.data<float>();
  float* dst = y.data_mutable<float>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < h * w; ++i)
      for (int64_t k = 0; k < c; ++k) dst[(b * c + k) * h * w + i] = src[(b * h * w + i) * c + k];
  return y;
}

quant::RangeMap calibrate_qdq(const ir::Graph& g, const std::vector<Tensor>& batches,
                              const quant::ObserverOptions& observer,
                              const std::function<void(int64_t, int64_t)>& progress) {
  if (g.inputs().size() != 1)
    throw Error("QDQ calibration needs a graph with one input", ErrorKind::kUnsupported);
  const std::vector<std::string> names = quant::qdq_calibration_values(g);
  const std::string input = g.value(g.inputs()[0]).name;
  // Every value to observe becomes a graph output, so the engine keeps and returns it.
  ir::Graph observed = g;
  for (const std::string& n : names) {
    if (n == input) continue;
    auto id = observed.find_value(n);
    if (!id) throw Error("value to calibrate is not in the graph", ErrorKind::kInternal).tensor(n);
    if (!observed.is_graph_output(*id)) observed.add_output(*id);
  }
  auto model = Model::from_graph(observed, {.threads = 0});
  quant::RangeCollector collector(observer);
  int64_t total = 0, done = 0;
  for (const Tensor& b : batches) total += b.dim(0);
  if (progress) progress(0, total);
  for (const Tensor& batch : batches) {
    collector.observe(input, batch.values<float>(), batch.dim(0));
    model->run_with({batch}, [&](std::span<const Tensor> ys) {
      for (size_t i = 0; i < ys.size(); ++i)
        collector.observe(model->outputs()[i].name, ys[i].values<float>(), ys[i].rank() ? ys[i].dim(0) : 1);
    });
    done += batch.dim(0);
    if (progress) progress(done, total);
  }
  // The logits stay float unless quantize_outputs; their range follows the same rule.
  std::vector<std::string> graph_outputs;
  for (ir::ValueId o : g.outputs()) graph_outputs.push_back(g.value(o).name);
  quant::RangeMap ranges = collector.ranges({input}, graph_outputs);
  for (const std::string& n : names)
    if (!ranges.count(n))
      throw Error("the engine did not return value '" + n + "'", ErrorKind::kInternal);
  return ranges;
}

}  // namespace modex::app
