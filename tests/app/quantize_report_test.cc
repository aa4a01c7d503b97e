// The int8 report's pieces: held-out image selection, label matching, and the float-vs-int8
// evaluation on a small QDQ graph run in the engine.
#include "app/quantize_report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "../io/image_test_util.h"
#include "core/error.h"
#include "quant/qdq.h"

namespace modex {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using namespace modex::ir;

void classification_tree(const fs::path& root, std::vector<std::string> splits,
                         std::vector<std::pair<std::string, int>> classes) {
  for (const auto& s : splits)
    for (const auto& [c, n] : classes)
      for (int i = 0; i < n; ++i)
        test::write_bytes(
            root / s / c / (s + std::to_string(i) + ".bmp"),
            test::encode_bmp24(test::pattern_image(12, 10, static_cast<uint32_t>(i))));
}

image::Preprocess small_preprocess(image::Preprocess::Layout layout) {
  image::Preprocess p;
  p.width = p.height = 8;
  p.resize = image::Preprocess::Resize::kResize;
  p.layout = layout;
  return p;
}

app::CalibrationData calibration_of(const fs::path& dir, int64_t n) {
  dataset::DatasetInfo info = dataset::discover(dir, dataset::DatasetType::kClassification);
  return app::load_calibration_images(
      info, n, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 2, nullptr);
}

TEST(QuantizeReport, HeldOutImagesComeFromTheTestSplitWhenCalibrationUsedVal) {
  TempDir d;
  classification_tree(d.path() / "data", {"val", "test"}, {{"a", 5}, {"b", 5}});
  app::CalibrationData cal = calibration_of(d.path() / "data", 4);
  ASSERT_EQ(cal.info.split, "val");
  app::HeldOutImages h = app::load_heldout_images(
      cal, 100, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 4, nullptr);
  EXPECT_EQ(h.set.count(), 10);  // all of test/, fewer than asked
  for (const auto& s : h.set.used)
    EXPECT_EQ(s.path.parent_path().parent_path().filename(), "test") << s.path;
  ASSERT_EQ(h.info.classes.size(), 2u);
  h = app::load_heldout_images(cal, 4, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 4,
                               nullptr);
  ASSERT_EQ(h.set.count(), 4);
  std::set<int> classes;
  for (const auto& s : h.set.used) classes.insert(s.class_index);
  EXPECT_EQ(classes.size(), 2u) << "stratified";
}

TEST(QuantizeReport, HeldOutImagesExcludeCalibrationImagesWithoutATestSplit) {
  TempDir d;
  classification_tree(d.path() / "data", {"val"}, {{"a", 5}, {"b", 5}});
  app::CalibrationData cal = calibration_of(d.path() / "data", 4);
  std::set<fs::path> calib;
  for (const auto& s : cal.set.used) calib.insert(s.path);
  ASSERT_EQ(calib.size(), 4u);
  app::HeldOutImages h = app::load_heldout_images(
      cal, 100, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 4, nullptr);
  EXPECT_EQ(h.set.count(), 6);
  for (const auto& s : h.set.used) EXPECT_FALSE(calib.count(s.path)) << s.path;
  // Everything drawn for calibration: nothing left, and evaluation says so.
  cal = calibration_of(d.path() / "data", 10);
  h = app::load_heldout_images(cal, 100, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 4,
                               nullptr);
  EXPECT_EQ(h.set.count(), 0);
  ir::Graph g;
  EXPECT_THROW(app::evaluate_int8(g, g, h, {}, nullptr), Error);
}

TEST(QuantizeReport, MatchLabelsByNameNumberOrOrder) {
  std::string how;
  std::vector<dataset::ClassInfo> folders = {{"Ankle boot", 1}, {"T-shirt_top", 1}};
  auto m = app::match_labels(folders, {"T-shirt/top", "Trouser", "Ankle boot"}, 3, how);
  EXPECT_EQ(m, (std::vector<int64_t>{2, 0}));
  EXPECT_NE(how.find("class names"), std::string::npos);
  m = app::match_labels({{"2", 1}, {"0", 1}}, {}, 3, how);
  EXPECT_EQ(m, (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(app::match_labels({{"7", 1}}, {}, 3, how).empty()) << "index beyond the classes";
  m = app::match_labels({{"cat", 1}, {"dog", 1}}, {}, 2, how);
  EXPECT_EQ(m, (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(app::match_labels({{"cat", 1}, {"dog", 1}}, {"car", "bus"}, 2, how).empty());
}

Tensor random_tensor(Dims shape, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  Tensor t = Tensor::zeros(DType::kFloat32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_mutable<float>()[i] = d(rng);
  return t;
}

// image [N,3,8,8] -> Conv -> GlobalAveragePool -> Flatten -> Gemm -> logits [N,2]
Graph tiny_net(std::mt19937& rng) {
  Graph g;
  ValueId x = g.add_input("image", DType::kFloat32,
                          {Dim::named("batch"), Dim::fixed(3), Dim::fixed(8), Dim::fixed(8)});
  ConvAttrs ca;
  ca.kernel = {3, 3};
  ca.pads = {1, 1, 1, 1};
  ValueId c =
      g.add_node1(OpKind::kConv, ca,
                  {x, g.add_constant("conv.w", random_tensor({4, 3, 3, 3}, rng, -0.5f, 0.5f)),
                   g.add_constant("conv.b", random_tensor({4}, rng, -1, 1))},
                  "conv");
  ValueId gap = g.add_node1(OpKind::kGlobalAveragePool, NoAttrs{}, {c}, "gap");
  ValueId f = g.add_node1(OpKind::kFlatten, FlattenAttrs{1}, {gap}, "flatten");
  ValueId y = g.add_node1(OpKind::kGemm, GemmAttrs{},
                          {f, g.add_constant("fc.w", random_tensor({2, 4}, rng, -1, 1)),
                           g.add_constant("fc.b", random_tensor({2}, rng, -1, 1))},
                          "fc");
  g.set_output_name(y, "logits");
  g.add_output(y);
  return g;
}

TEST(QuantizeReport, EvaluatesAQdqGraphAgainstItsFloatGraph) {
  TempDir d;
  classification_tree(d.path() / "data", {"val", "test"}, {{"0", 6}, {"1", 6}});
  app::CalibrationData cal = calibration_of(d.path() / "data", 4);
  app::HeldOutImages h = app::load_heldout_images(
      cal, 12, 3, small_preprocess(image::Preprocess::Layout::kNCHW), 5, nullptr);
  ASSERT_EQ(h.set.count(), 12);
  std::mt19937 rng(4);
  Graph g = tiny_net(rng);

  // The float graph against itself: exact.
  std::string how;
  quant::QuantReport same = app::evaluate_int8(g, g, h, {}, nullptr, &how);
  EXPECT_EQ(same.heldout_images, 12);
  EXPECT_EQ(same.top1_agreement, 1.0);
  EXPECT_EQ(same.max_abs_dprob, 0.0);
  ASSERT_TRUE(same.accuracy_float && same.accuracy_int8);
  EXPECT_EQ(*same.accuracy_float, *same.accuracy_int8);
  EXPECT_NE(how.find("numeric"), std::string::npos);
  EXPECT_TRUE(same.layers.empty()) << "a float graph has no int8 values";

  // Wide ranges make a coarse int8 grid: a measurable, bounded error on every pair.
  quant::RangeMap ranges = {
      {"image", {-3, 3}}, {"conv", {-8, 8}}, {"gap", {-4, 4}}, {"logits", {-8, 8}}};
  Graph q = quant::to_qdq(g, ranges, quant::QdqOptions{13});
  app::EvaluateOptions eo;
  eo.qdq = true;
  int64_t last = 0;
  quant::QuantReport r =
      app::evaluate_int8(g, q, h, eo, [&](int64_t done, int64_t) { last = done; });
  EXPECT_EQ(last, 12);
  // Graph order; the logits stay float, so they have no pair.
  std::vector<std::string> names;
  for (const auto& l : r.layers) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv", "gap", "flatten"}));
  EXPECT_EQ(r.layers[0].op, "Conv");
  for (const auto& l : r.layers) {
    EXPECT_TRUE(std::isfinite(l.sqnr_db)) << l.name;
    EXPECT_GT(l.sqnr_db, 10.0) << l.name;
    EXPECT_GT(l.max_abs_err, 0.0) << l.name;
    EXPECT_LE(l.max_abs_err, 16.0 / 255 * 4) << l.name;  // a few steps at most
  }
  EXPECT_GT(r.max_abs_dprob, 0.0);
  EXPECT_LE(r.mean_abs_dprob, r.max_abs_dprob);
  EXPECT_TRUE(r.top1_agreement >= 0.0 && r.top1_agreement <= 1.0);  // near-tied logits: any value
  nlohmann::json j = app::report_json(r, h, "x");
  EXPECT_EQ(j["heldout"]["files"].size(), 12u);
  EXPECT_EQ(j["layers"].size(), 3u);
  EXPECT_NE(app::report_summary(r).find("worst layers"), std::string::npos);
}

}  // namespace
}  // namespace modex
