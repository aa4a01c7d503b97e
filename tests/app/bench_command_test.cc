// `modex bench` run in-process on a tiny ONNX classifier written by modex's own writer.
#include "app/bench_command.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "../io/image_test_util.h"
#include "core/error.h"
#include "tiny_classifier.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

fs::path write_tiny_classifier(const fs::path& dir, std::map<std::string, std::string> metadata = {}) {
  fs::path path = dir / "tiny.onnx";
  test::write_tiny_classifier(path, 3, std::move(metadata));
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
