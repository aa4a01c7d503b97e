// A tiny ONNX classifier written by modex's own writer, for the app tests (bench, batch, serve):
// image [batch, 3, height, width] -> conv 3x3 (8 channels) + relu -> global average pool ->
// flatten -> gemm, 5 classes; seeded random weights in [-0.5, 0.5).
#pragma once

#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "io/onnx/onnx_writer.h"
#include "ir/graph.h"

namespace modex::test {

inline Tensor random_tensor(Dims shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-0.5f, 0.5f);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

inline void write_tiny_classifier(const std::filesystem::path& path, uint32_t seed,
                                  std::map<std::string, std::string> metadata = {}) {
  using namespace ir;
  std::mt19937 rng(seed);
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32,
                          {Dim::named("batch"), Dim::fixed(3), Dim::named("height"), Dim::named("width")});
  ConvAttrs a;
  a.kernel = {3, 3};
  a.strides = {1, 1};
  a.pads = {1, 1, 1, 1};
  ValueId c = g.add_node1(OpKind::kConv, a,
                          {x, g.add_constant("conv.w", random_tensor({8, 3, 3, 3}, rng)),
                           g.add_constant("conv.b", random_tensor({8}, rng))},
                          "conv");
  ValueId r = g.add_node1(OpKind::kRelu, NoAttrs{}, {c}, "relu");
  ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {r}, "gap");
  ValueId flat = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId fc = g.add_node1(OpKind::kGemm, GemmAttrs{},
                           {flat, g.add_constant("fc.w", random_tensor({5, 8}, rng)),
                            g.add_constant("fc.b", random_tensor({5}, rng))},
                           "fc");
  g.add_output(fc);
  g.set_output_name(fc, "logits");
  g.infer_shapes();
  onnx_io::OnnxWriteOptions w;
  w.metadata = std::move(metadata);
  onnx_io::write_onnx(g, path, w);
}

}  // namespace modex::test
