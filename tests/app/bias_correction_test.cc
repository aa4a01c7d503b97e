// int8 bias correction (app::correct_int8_biases): the mean shift that rounding a layer's weights
// to int8 causes is moved into its int32 bias.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "app/quantize_calibration.h"
#include "modex/runtime.h"
#include "quant/prepare.h"
#include "quant/quantize.h"

namespace modex {
namespace {

using namespace modex::ir;

// The value `name` of the graph (made an output) on the batch, dequantized.
Tensor value_of(Graph g, const std::string& name, const Tensor& batch) {
  const ValueId id = *g.find_value(name);
  if (!g.is_graph_output(id)) g.add_output(id);
  auto m = Model::from_graph(g, {.threads = 1});
  const std::vector<Tensor> out = m->run({batch});
  for (size_t i = 0; i < out.size(); ++i)
    if (m->outputs()[i].name == name) return out[i].clone();
  ADD_FAILURE() << "no output " << name;
  return {};
}

// Per channel of value `name`, the mean over the batch and pixels of (int8 - float).
std::vector<double> channel_mean_error(const Graph& float_graph, const Graph& int8_graph, const std::string& name,
                                       const Tensor& batch) {
  const Tensor f = value_of(float_graph, name, batch), q = value_of(int8_graph, name, batch);
  const int64_t C = f.dim(-1);
  std::vector<double> sum(static_cast<size_t>(C), 0.0);
  for (int64_t i = 0; i < f.numel(); ++i)
    sum[static_cast<size_t>(i % C)] += static_cast<double>(q.data<float>()[i]) - f.data<float>()[i];
  for (double& s : sum) s /= static_cast<double>(f.numel() / C);
  return sum;
}

// A depthwise 3x3 layer whose weights sit 0.4 of an int8 step above the grid (they all round
// down) on inputs of mean 1: without correction every channel's output is ~8 x 0.4 steps low;
// with it, within a fraction of a bias step. A dense 1x1 layer after it gets its own correction.
TEST(BiasCorrection, MovesTheWeightsRoundingShiftIntoTheBias) {
  const int64_t C = 16;
  Graph g;
  ValueId x = g.add_input("x", DType::kFloat32, {Dim::named("batch"), Dim::fixed(8), Dim::fixed(8), Dim::fixed(C)});
  ConvAttrs dw;
  dw.kernel = {3, 3};
  dw.pads = {1, 1, 1, 1};
  dw.groups = C;
  dw.layout = Layout::kNHWC;
  Tensor w = Tensor::empty(DType::kFloat32, {C, 3, 3, 1});
  const float step = 1.0f / 127.0f;  // per channel: max |w| = 1
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < 9; ++t)
      w.data_mutable<float>()[c * 9 + t] = t == 4 ? 1.0f : static_cast<float>(10 + 7 * t + c) * step + 0.4f * step;
  Tensor b = Tensor::zeros(DType::kFloat32, {C});
  ValueId y = g.add_node1(OpKind::kConv, dw, {x, g.add_constant("dw_w", w), g.add_constant("dw_b", b)}, "dw");
  ConvAttrs pw;
  pw.kernel = {1, 1};
  pw.layout = Layout::kNHWC;
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Tensor w2 = Tensor::empty(DType::kFloat32, {8, 1, 1, C});
  for (int64_t i = 0; i < w2.numel(); ++i) w2.data_mutable<float>()[i] = u(rng);
  g.add_output(g.add_node1(OpKind::kConv, pw, {y, g.add_constant("pw_w", w2), g.add_constant("pw_b", Tensor::zeros(DType::kFloat32, {8}))}, "pw"));
  g.infer_shapes();

  std::uniform_real_distribution<float> pos(0.5f, 1.5f);
  std::vector<Tensor> batches;
  for (int k = 0; k < 4; ++k) {
    Tensor t = Tensor::empty(DType::kFloat32, {4, 8, 8, C});
    for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = pos(rng);
    batches.push_back(t);
  }
  quant::PreparedGraph prepared = quant::prepare_for_int8(g);
  quant::ObserverOptions obs;
  obs.method = quant::CalibrationMethod::kMinMax;
  app::CalibrationResult cal = app::calibrate(prepared, batches, obs, nullptr);
  Graph int8 = quant::quantize_int8(prepared.graph, cal.ranges);

  const std::string out = prepared.graph.value(prepared.graph.outputs()[0]).name;
  const std::vector<double> before = channel_mean_error(prepared.graph, int8, "dw", batches[0]);
  const std::vector<double> before_out = channel_mean_error(prepared.graph, int8, out, batches[0]);
  EXPECT_EQ(app::correct_int8_biases(prepared.graph, int8, batches), 2);
  const std::vector<double> after = channel_mean_error(prepared.graph, int8, "dw", batches[0]);
  const std::vector<double> after_out = channel_mean_error(prepared.graph, int8, out, batches[0]);
  ASSERT_EQ(before.size(), static_cast<size_t>(C));
  double sum_before = 0, sum_after = 0, out_before = 0, out_after = 0;
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_LT(before[static_cast<size_t>(c)], -2.0 * step) << "channel " << c << ": the weights round down";
    sum_before += std::fabs(before[static_cast<size_t>(c)]);
    sum_after += std::fabs(after[static_cast<size_t>(c)]);
  }
  for (size_t o = 0; o < before_out.size(); ++o) out_before += std::fabs(before_out[o]), out_after += std::fabs(after_out[o]);
  EXPECT_LT(sum_after, 0.2 * sum_before) << "depthwise mean |error| " << sum_before / C << " -> " << sum_after / C;
  EXPECT_LT(out_after, 0.5 * out_before) << "output mean |error| " << out_before << " -> " << out_after;
}

}  // namespace
}  // namespace modex
