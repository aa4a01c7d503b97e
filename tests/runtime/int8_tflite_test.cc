// Int8 .tflite in the engine: each int8 test graph written by the TFLite writer, read back and run
// gives the integers of the graph itself (reader and writer are exact inverses for int8), and a
// file's quantized input/output params reach TensorInfo.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "../io/tflite_test_graphs.h"
#include "int8_test_graphs.h"
#include "io/tflite/tflite_reader.h"
#include "io/tflite/tflite_writer.h"
#include "modex/runtime.h"

namespace modex {
namespace {

Tensor random_int(const ir::Value& v, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty(v.dtype, *ir::to_dims(v.shape));
  if (v.dtype == DType::kFloat32) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
    return t;
  }
  std::uniform_int_distribution<int> d(0, 255);
  for (int64_t i = 0; i < t.numel(); ++i) t.raw_mutable()[i] = static_cast<uint8_t>(d(rng));
  return t;
}

TEST(Int8Tflite, WrittenAndReadBackRunsBitExact) {
  for (const test::Int8Case& c : test::int8_cases()) {
    SCOPED_TRACE(c.name);
    std::string bytes = tflite_io::to_tflite_bytes(c.graph, {});
    auto buffer = Buffer::allocate(bytes.size());
    std::memcpy(buffer->data(), bytes.data(), bytes.size());
    ir::Graph back = tflite_io::parse_tflite(buffer).graph;
    for (Backend backend : {Backend::kReference, Backend::kAuto}) {
      auto a = Model::from_graph(c.graph, {.threads = 1, .backend = backend});
      auto b = Model::from_graph(back, {.threads = 1, .backend = backend});
      ASSERT_EQ(a->inputs()[0].quant.has_value(), b->inputs()[0].quant.has_value());
      if (a->inputs()[0].quant) {
        EXPECT_EQ(b->inputs()[0].quant->scale, a->inputs()[0].quant->scale);
        EXPECT_EQ(b->inputs()[0].quant->zero_point, a->inputs()[0].quant->zero_point);
      }
      EXPECT_EQ(b->outputs()[0].dtype, a->outputs()[0].dtype);
      for (uint32_t seed : {1u, 2u}) {
        Tensor x = random_int(c.graph.value(c.graph.inputs()[0]), seed);
        Tensor ya = a->run_raw({x})[0], yb = b->run_raw({x})[0];
        ASSERT_EQ(ya.nbytes(), yb.nbytes());
        EXPECT_EQ(std::memcmp(ya.raw(), yb.raw(), ya.nbytes()), 0);
      }
    }
  }
}

// Weights-only int8 ("dynamic"): the int8 weights behind DEQUANTIZE come back as float32
// constants, no Dequantize node reaches the engine, and the model computes what the float model
// does up to the weights' rounding.
TEST(Int8Tflite, WeightsOnlyInt8FoldsToFloatConstants) {
  int checked = 0;
  for (const test::TfliteCase& c : test::tflite_cases()) {
    tflite_io::TfliteWriteOptions options;
    options.weights = tflite_io::WeightFormat::kInt8Dynamic;
    std::string bytes = tflite_io::to_tflite_bytes(c.graph, options);
    auto buffer = Buffer::allocate(bytes.size());
    std::memcpy(buffer->data(), bytes.data(), bytes.size());
    tflite_io::TfliteModel back = tflite_io::parse_tflite(buffer);
    bool int8_weights = false;
    for (const auto& t : back.summary.tensors) int8_weights |= t.type == "int8" && t.constant;
    if (!int8_weights) continue;
    SCOPED_TRACE(c.name);
    for (const ir::Node& n : back.graph.nodes()) EXPECT_NE(n.op, ir::OpKind::kDequantize);
    for (const ir::Value& v : back.graph.values()) EXPECT_FALSE(v.quant.has_value()) << v.name;
    const ir::Value& in = c.graph.value(c.graph.inputs()[0]);
    Dims dims;
    for (const ir::Dim& d : in.shape) dims.push_back(d.is_static() ? d.value : 1);
    Tensor x = random_int(
        ir::Value{in.name, DType::kFloat32, ir::static_shape(dims), {}, -1, std::nullopt}, 3);
    auto want = Model::from_graph(c.graph, {.threads = 1})->run({x})[0];
    auto got = Model::from_graph(back.graph, {.threads = 1})->run({x})[0];
    ASSERT_EQ(want.numel(), got.numel());
    float max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      max_abs = std::max(max_abs, std::abs(want.data<float>()[i]));
      max_diff = std::max(max_diff, std::abs(want.data<float>()[i] - got.data<float>()[i]));
    }
    EXPECT_LE(max_diff, 0.05f * max_abs + 1e-4f);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

}  // namespace
}  // namespace modex
