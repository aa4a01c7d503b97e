// QDQ graphs (float ops between Quantize -> Dequantize pairs, as quant::to_qdq writes and ONNX
// Runtime's quantizer emits) take the engine's float path: the weights' Dequantize folds into float
// constants and the activation pairs run as element-wise kernels. Only a graph whose ops read
// quantized values directly is an int8 graph.
#include <gtest/gtest.h>

#include <cmath>

#include "io/onnx/onnx_reader.h"
#include "io/onnx/onnx_writer.h"
#include "ir/graph.h"
#include "modex/runtime.h"
#include "quant/qdq.h"
#include "runtime_test_util.h"

namespace modex::runtime_test {
namespace {
using namespace modex::ir;

// image -> Conv(+ReLU) -> GlobalAveragePool -> Flatten -> Gemm -> logits
Graph tiny_net() {
  std::mt19937 rng(5);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32, {Dim::named("batch"), Dim::fixed(3), Dim::fixed(8), Dim::fixed(8)});
  ConvAttrs ca;
  ca.kernel = {3, 3};
  ca.pads = {1, 1, 1, 1};
  ValueId c = g.add_node1(OpKind::kConv, ca,
                          {x, g.add_constant("conv.w", random_tensor({6, 3, 3, 3}, rng, -0.5f, 0.5f)),
                           g.add_constant("conv.b", random_tensor({6}, rng))},
                          "conv");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {c}, "relu");
  ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {r}, "gap");
  ValueId f = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId y = g.add_node1(OpKind::kGemm, GemmAttrs{},
                          {f, g.add_constant("fc.w", random_tensor({4, 6}, rng)), g.add_constant("fc.b", random_tensor({4}, rng))},
                          "fc");
  g.set_output_name(y, "logits");
  g.add_output(y);
  return g;
}

TEST(EngineQdq, QdqOnnxRunsOnTheFloatPathCloseToTheFloatModel) {
  Graph g = tiny_net();
  std::mt19937 rng(9);
  Tensor x = random_tensor({2, 3, 8, 8}, rng, -1.0f, 1.0f);
  auto float_model = Model::from_graph(g, {.threads = 1});
  const Tensor want = float_model->run({x})[0];

  // Ranges as calibration would observe them on this very input.
  Graph observed = g;
  for (const char* name : {"relu", "gap"}) observed.add_output(*observed.find_value(name));
  auto observer = Model::from_graph(observed, {.threads = 1});
  std::vector<Tensor> seen = observer->run({x});
  quant::RangeMap ranges;
  auto range_of = [](const Tensor& t) {
    quant::TensorRange r{t.data<float>()[0], t.data<float>()[0]};
    for (float v : t.values<float>()) r = {std::min(r.min, v), std::max(r.max, v)};
    return r;
  };
  ranges["image"] = range_of(x);
  for (size_t i = 0; i < seen.size(); ++i) ranges[observer->outputs()[i].name] = range_of(seen[i]);
  for (const std::string& n : quant::qdq_calibration_values(g)) ASSERT_TRUE(ranges.count(n)) << n;

  // Through ONNX bytes, as `modex predict model_int8.onnx` reads it.
  Graph q = quant::to_qdq(g, ranges, quant::QdqOptions{13});
  onnx_io::OnnxWriteOptions wo;
  wo.opset = 13;
  std::string bytes = onnx_io::to_onnx_bytes(q, wo);
  Graph back = onnx_io::import_onnx_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "<qdq>");
  auto model = Model::from_graph(back, {.threads = 1});
  ASSERT_EQ(model->inputs().size(), 1u);
  EXPECT_EQ(model->inputs()[0].dtype, DType::kFloat32);
  EXPECT_FALSE(model->inputs()[0].quant);
  const Tensor got = model->run({x})[0];
  ASSERT_EQ(got.shape(), want.shape());

  // Float convolution kernels with int8 round trips between them, not int8 convolutions.
  bool float_conv = false;
  for (const std::string& k : model->kernel_names()) {
    const bool conv = k.find("conv2d") != std::string::npos || k.find("Conv") != std::string::npos;
    if (conv) {
      EXPECT_EQ(k.find("q"), std::string::npos) << k;  // xnn_..._qs8 or ref_q8_Conv
    }
    float_conv |= conv;
  }
  EXPECT_TRUE(float_conv);

  // int8 noise: close to the float model (SQNR > 25 dB), yet not equal (the pairs ran).
  double signal = 0, noise = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = static_cast<double>(want.data<float>()[i]) - got.data<float>()[i];
    signal += static_cast<double>(want.data<float>()[i]) * want.data<float>()[i];
    noise += d * d;
  }
  EXPECT_GT(noise, 0.0) << "the Quantize/Dequantize pairs were dropped";
  EXPECT_GT(10 * std::log10(signal / noise), 25.0);
}

}  // namespace
}  // namespace modex::runtime_test
