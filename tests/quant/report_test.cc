#include "quant/report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>
#include <vector>

#include "core/error.h"

namespace modex::quant {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// Tags balance (a stack of open elements; void elements and <!DOCTYPE> excepted), attribute
// values are quoted, and no raw '<' or '&' appears in text. Returns "" or the first problem.
std::string well_formed(const std::string& h) {
  static const std::vector<std::string> kVoid = {"meta", "br",  "line", "rect",
                                                 "link", "img", "hr",   "input"};
  std::vector<std::string> open;
  size_t i = 0;
  while (i < h.size()) {
    if (h[i] == '&') {
      size_t semi = h.find(';', i);
      if (semi == std::string::npos || semi - i > 8) return "bare & at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (h[i] != '<') {
      ++i;
      continue;
    }
    size_t end = h.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    std::string tag = h.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.rfind("!DOCTYPE", 0) == 0) continue;
    if (tag.find('<') != std::string::npos) return "'<' inside tag " + tag;
    if (std::count(tag.begin(), tag.end(), '"') % 2) return "unbalanced quotes in " + tag;
    bool closing = tag[0] == '/';
    bool self_closing = tag.back() == '/';
    std::string name =
        tag.substr(closing ? 1 : 0, tag.find_first_of(" /", closing ? 1 : 0) - (closing ? 1 : 0));
    if (closing) {
      if (open.empty() || open.back() != name)
        return "</" + name + "> closes <" + (open.empty() ? "" : open.back()) + ">";
      open.pop_back();
    } else if (!self_closing && std::find(kVoid.begin(), kVoid.end(), name) == kVoid.end()) {
      open.push_back(name);
      if (name == "style" || name == "title") {  // raw text up to the closing tag
        size_t close = h.find("</" + name + ">", i);
        if (close == std::string::npos) return "unclosed <" + name + ">";
        if (name == "title" && h.substr(i, close - i).find('<') != std::string::npos)
          return "'<' in title";
        i = close;
      }
    } else if (!self_closing && (name == "rect" || name == "line")) {
      open.push_back(name);  // SVG elements with a <title> child are closed explicitly
    }
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return "";
}

QuantReport sample_report() {
  QuantReport r;
  r.float_model = "model.pth";
  r.int8_model = "model_int8.tflite";
  r.architecture = "resnet18";
  r.method = "minmax";
  r.calibration_samples = 100;
  r.heldout_images = 1000;
  r.top1_agreement = 0.987;
  r.mean_abs_dprob = 0.012;
  r.max_abs_dprob = 0.31;
  r.accuracy_float = 0.818;
  r.accuracy_int8 = 0.812;
  r.sqnr_threshold_db = 20.0;
  r.layers = {{"image", "Input", 40.5, 0.01, 0.002, 2.6, 3072},
              {"conv1", "Conv", 31.0, 0.05, 0.01, 4.0, 16384},
              {"layer1.0 <relu> & \"x\"", "Add", 12.5, 0.4, 0.05, 6.0, 16384},
              {"pool", "MaxPool", std::numeric_limits<double>::infinity(), 0.0, 0.0, 6.0, 4096},
              {"logits", "Gemm", 18.0, 0.3, 0.1, 9.0, 10}};
  r.timings = {{"calibration", 1.25}, {"quantize", 0.05}};
  return r;
}

TEST(Sqnr, KnownSignals) {
  // Noise of 1/10 the amplitude everywhere: 20 dB.
  std::vector<float> x{1.0f, -2.0f, 3.0f, -4.0f}, y;
  for (float v : x) y.push_back(v * 1.1f);
  EXPECT_NEAR(sqnr_db(x, y), 20.0, 1e-5);
  // Σx² = 4, Σd² = 4e-6 → 60 dB.
  std::vector<float> a{1.0f, 1.0f, 1.0f, 1.0f}, b{1.001f, 0.999f, 1.001f, 0.999f};
  EXPECT_NEAR(sqnr_db(a, b), 60.0, 1e-3);
  // A sine quantized to 8 bits over its full range: close to the textbook 6.02·8 + 1.76 dB.
  std::vector<float> s, q;
  const double step = 2.0 / 255.0;
  for (int i = 0; i < 100000; ++i) {
    double v = std::sin(0.001237 * i);
    s.push_back(static_cast<float>(v));
    q.push_back(static_cast<float>(std::round(v / step) * step));
  }
  EXPECT_NEAR(sqnr_db(s, q), 6.02 * 8 + 1.76, 0.3);
}

TEST(Sqnr, InfinitiesAndErrors) {
  std::vector<float> x{1.0f, 2.0f}, zeros{0.0f, 0.0f};
  EXPECT_EQ(sqnr_db(x, x), std::numeric_limits<double>::infinity());
  EXPECT_EQ(sqnr_db(zeros, zeros), std::numeric_limits<double>::infinity());
  EXPECT_EQ(sqnr_db(zeros, x), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(sqnr_db(std::vector<float>{}, std::vector<float>{}),
            std::numeric_limits<double>::infinity());
  EXPECT_THROW(sqnr_db(x, std::vector<float>{1.0f}), Error);
}

TEST(Sqnr, LayerErrorStatistics) {
  std::vector<float> x{1.0f, -2.0f, 0.5f, 4.0f}, y{1.5f, -2.0f, 0.0f, 4.0f};
  LayerError e = layer_error("conv", "Conv", x, y);
  EXPECT_EQ(e.name, "conv");
  EXPECT_EQ(e.op, "Conv");
  EXPECT_DOUBLE_EQ(e.max_abs_err, 0.5);
  EXPECT_DOUBLE_EQ(e.mean_abs_err, 0.25);
  EXPECT_DOUBLE_EQ(e.max_abs_ref, 4.0);
  EXPECT_EQ(e.elements, 4);
  EXPECT_NEAR(e.sqnr_db, 10.0 * std::log10((1 + 4 + 0.25 + 16) / 0.5), 1e-9);
}

TEST(Report, JsonFields) {
  QuantReport r = sample_report();
  nlohmann::json j = to_json(r, 3);
  EXPECT_EQ(j["float_model"], "model.pth");
  EXPECT_EQ(j["int8_model"], "model_int8.tflite");
  EXPECT_EQ(j["architecture"], "resnet18");
  EXPECT_EQ(j["calibration"]["method"], "minmax");
  EXPECT_EQ(j["calibration"]["samples"], 100);
  EXPECT_EQ(j["heldout_images"], 1000);
  EXPECT_DOUBLE_EQ(j["top1_agreement"].get<double>(), 0.987);
  EXPECT_DOUBLE_EQ(j["mean_abs_dprob"].get<double>(), 0.012);
  EXPECT_DOUBLE_EQ(j["max_abs_dprob"].get<double>(), 0.31);
  EXPECT_DOUBLE_EQ(j["accuracy"]["float"].get<double>(), 0.818);
  EXPECT_DOUBLE_EQ(j["accuracy"]["int8"].get<double>(), 0.812);
  ASSERT_EQ(j["layers"].size(), 5u);
  EXPECT_EQ(j["layers"][1]["name"], "conv1");
  EXPECT_EQ(j["layers"][1]["op"], "Conv");
  EXPECT_DOUBLE_EQ(j["layers"][1]["sqnr_db"].get<double>(), 31.0);
  EXPECT_EQ(j["layers"][3]["sqnr_db"], "inf");
  EXPECT_EQ(j["worst_layers"], (nlohmann::json{"layer1.0 <relu> & \"x\"", "logits", "conv1"}));
  EXPECT_DOUBLE_EQ(j["timings"]["calibration"].get<double>(), 1.25);
  // Round trip through text: valid JSON even with an infinite SQNR.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);

  r.accuracy_float.reset();
  r.accuracy_int8.reset();
  nlohmann::json k = to_json(r);
  EXPECT_TRUE(k["accuracy"]["float"].is_null());
  EXPECT_TRUE(k["accuracy"]["int8"].is_null());
}

TEST(Report, WorstLayersOrderAndTies) {
  QuantReport r = sample_report();
  r.layers.push_back({"tie", "Conv", 12.5, 0, 0, 0, 1});
  r.layers.push_back({"dead", "Conv", -std::numeric_limits<double>::infinity(), 1, 1, 0, 1});
  std::vector<size_t> w = worst_layers(r, 4);
  EXPECT_EQ(w, (std::vector<size_t>{6, 2, 5, 4}));  // -inf first; ties in graph order
  EXPECT_EQ(worst_layers(r, 100).size(), r.layers.size());
}

TEST(Report, HtmlIsOneSelfContainedPageWithOneBarPerLayer) {
  QuantReport r = sample_report();
  std::string h = to_html(r, 10);
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(well_formed(h), "");
  EXPECT_EQ(count(h, "<html"), 1u);
  EXPECT_EQ(count(h, "</html>"), 1u);
  EXPECT_EQ(count(h, "<style>"), 1u);
  EXPECT_EQ(count(h, "<svg"), 1u);
  EXPECT_EQ(count(h, "</svg>"), 1u);
  // No external assets.
  EXPECT_EQ(count(h, "<script"), 0u);
  EXPECT_EQ(count(h, "<link"), 0u);
  EXPECT_EQ(count(h, "src="), 0u);
  EXPECT_EQ(count(h, "url("), 0u);
  // One bar per layer, each with a hover title; the two below 20 dB highlighted.
  EXPECT_EQ(count(h, "<rect class=\"bar"), r.layers.size());
  EXPECT_EQ(count(h, "<rect class=\"bar low\""), 2u);
  EXPECT_NE(h.find("<title>conv1 (Conv): 31.0 dB</title>"), std::string::npos);
  EXPECT_NE(h.find("<title>pool (MaxPool): inf dB</title>"), std::string::npos);
  // Names are escaped.
  EXPECT_EQ(h.find("<relu>"), std::string::npos);
  EXPECT_NE(h.find("layer1.0 &lt;relu&gt; &amp; &quot;x&quot;"), std::string::npos);
  // Summary values.
  EXPECT_NE(h.find("98.7%"), std::string::npos);
  EXPECT_NE(h.find("81.8%"), std::string::npos);
  EXPECT_NE(h.find("81.2%"), std::string::npos);
  EXPECT_NE(h.find("-0.6 points"), std::string::npos);
  // Bars are in graph order: x positions increase.
  std::regex bar_x("<rect class=\"bar[^\"]*\" x=\"([0-9.]+)\"");
  double last = -1.0;
  size_t bars = 0;
  for (auto it = std::sregex_iterator(h.begin(), h.end(), bar_x); it != std::sregex_iterator();
       ++it, ++bars) {
    double x = std::stod((*it)[1]);
    EXPECT_GT(x, last);
    last = x;
  }
  EXPECT_EQ(bars, r.layers.size());
}

TEST(Report, HtmlOfManyLayersAndNoLayers) {
  QuantReport r = sample_report();
  r.layers.clear();
  for (int i = 0; i < 300; ++i)
    r.layers.push_back({"l" + std::to_string(i), "Conv", 10.0 + i % 40, 0, 0, 0, 1});
  std::string h = to_html(r, 10);
  EXPECT_EQ(count(h, "<rect class=\"bar"), 300u);
  EXPECT_EQ(count(h, "<tr class=\"low\">"), 10u);  // the 10 worst (10 dB) are all below 20 dB
  r.layers.clear();
  std::string empty = to_html(r);
  EXPECT_EQ(count(empty, "<rect class=\"bar"), 0u);
  EXPECT_EQ(count(empty, "</html>"), 1u);
  EXPECT_EQ(well_formed(empty), "");
  EXPECT_EQ(well_formed(h), "");
  EXPECT_NE(well_formed("<html><body></html>"), "");  // the checker itself catches a bad page
}

}  // namespace
}  // namespace modex::quant
