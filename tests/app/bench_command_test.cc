// `modex bench` run in-process on a tiny ONNX classifier written by modex's own writer.
#include "app/bench_command.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "../io/image_test_util.h"
#include "core/error.h"
#include "io/onnx/onnx_writer.h"
#include "ir/graph.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

Tensor random_tensor(Dims shape, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-0.5f, 0.5f);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

// image [batch, 3, height, width] -> conv 3x3 + relu -> global average pool -> flatten -> gemm.
fs::path write_tiny_classifier(const fs::path& dir,
                               std::map<std::string, std::string> metadata = {}) {
  using namespace ir;
  std::mt19937 rng(3);
  Graph g;
  ValueId x =
      g.add_input("image", DType::kFloat32,
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
  fs::path path = dir / "tiny.onnx";
  onnx_io::OnnxWriteOptions w;
  w.metadata = std::move(metadata);
  onnx_io::write_onnx(g, path, w);
  return path;
}

TEST(BenchCommand, ReportsJson) {
  TempDir d;
  app::BenchOptions o;
  o.model = write_tiny_classifier(d.path());
  o.batch = 2;
  o.threads = 1;
  o.iterations = 7;
  o.warmup = 2;
  o.input_size = 20;
  o.json = true;
  std::ostringstream out;
  app::run_bench(o, out);
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["iterations"], 7);
  EXPECT_EQ(j["inputs"][0]["shape"], (std::vector<int64_t>{2, 3, 20, 20}));
  EXPECT_EQ(j["inputs"][0]["layout"], "NCHW");
  const auto& l = j["latency_ms"];
  for (const char* k : {"mean", "median", "p90", "p99", "min", "max"})
    EXPECT_GT(l[k].get<double>(), 0.0) << k;
  EXPECT_LE(l["min"].get<double>(), l["median"].get<double>());
  EXPECT_LE(l["median"].get<double>(), l["p90"].get<double>());
  EXPECT_LE(l["p99"].get<double>(), l["max"].get<double>());
  EXPECT_NEAR(j["throughput_ips"].get<double>(), 2 * 1000.0 / l["mean"].get<double>(), 1e-6);
  EXPECT_GT(j["peak_rss_bytes"].get<int64_t>(), 0);
  EXPECT_GE(j["load_total_ms"].get<double>(), j["load_ms"].get<double>());
}

TEST(BenchCommand, TableAndSizeFromMetadata) {
  TempDir d;
  app::BenchOptions o;
  o.model = write_tiny_classifier(d.path(),
                                  {{"preprocessing", R"({"input_size": 12, "resize": "resize"})"}});
  o.iterations = 3;
  o.warmup = 0;
  o.threads = 2;
  std::ostringstream out;
  app::run_bench(o, out);
  EXPECT_NE(out.str().find("[1, 3, 12, 12]"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("latency ms"), std::string::npos);
  EXPECT_NE(out.str().find("throughput"), std::string::npos);
  EXPECT_NE(out.str().find("peak memory"), std::string::npos);
}

TEST(BenchCommand, FeedsARealImage) {
  TempDir d;
  test::write_bytes(d.path() / "cat.bmp", test::encode_bmp24(test::pattern_image(30, 20, 4)));
  app::BenchOptions o;
  o.model = write_tiny_classifier(d.path());
  o.image = d.path() / "cat.bmp";
  o.input_size = 16;
  o.iterations = 2;
  o.json = true;
  std::ostringstream out;
  app::run_bench(o, out);
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["inputs"][0]["source"], (d.path() / "cat.bmp").string());
  EXPECT_EQ(j["inputs"][0]["shape"], (std::vector<int64_t>{1, 3, 16, 16}));
}

TEST(BenchCommand, RejectsBadOptions) {
  TempDir d;
  app::BenchOptions o;
  o.model = write_tiny_classifier(d.path());
  std::ostringstream out;
  o.iterations = 0;
  EXPECT_THROW(app::run_bench(o, out), Error);
  o.iterations = 1;
  o.batch = 0;
  EXPECT_THROW(app::run_bench(o, out), Error);
  o.batch = 1;
  o.image = d.path() / "missing.png";
  EXPECT_THROW(app::run_bench(o, out), Error);
  o.image.reset();
  o.model = d.path() / "missing.onnx";
  EXPECT_THROW(app::run_bench(o, out), Error);
}

TEST(BenchCommand, LatencyStatistics) {
  app::LatencyStats s = app::latency_stats({5, 1, 4, 2, 3});
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.p90, 4.6);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 5);
  EXPECT_THROW(app::latency_stats({}), Error);
}

}  // namespace
}  // namespace modex
