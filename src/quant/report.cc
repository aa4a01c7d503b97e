#include "quant/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace modex::quant {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

nlohmann::json number_or_inf(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

nlohmann::json optional_number(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string db_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf dB" : "-inf dB";
  return fmt::format("{:.1f} dB", v);
}

std::string percent(double v) { return fmt::format("{:.1f}%", 100.0 * v); }

// Orders for sorting: -inf < finite < +inf; NaN last.
double sort_key(double v) { return std::isnan(v) ? kInf : v; }

}  // namespace

double sqnr_db(std::span<const float> reference, std::span<const float> approx) {
  if (reference.size() != approx.size())
    throw Error("SQNR of tensors with " + std::to_string(reference.size()) + " and " +
                    std::to_string(approx.size()) + " elements",
                ErrorKind::kInvalidInput);
  double signal = 0.0, noise = 0.0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double x = reference[i], d = x - static_cast<double>(approx[i]);
    signal += x * x;
    noise += d * d;
  }
  if (noise == 0.0) return kInf;
  if (signal == 0.0) return -kInf;
  return 10.0 * std::log10(signal / noise);
}

LayerError layer_error(std::string name, std::string op, std::span<const float> reference,
                       std::span<const float> approx) {
  LayerError e;
  e.name = std::move(name);
  e.op = std::move(op);
  e.sqnr_db = sqnr_db(reference, approx);
  double sum = 0.0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double d = std::fabs(static_cast<double>(reference[i]) - approx[i]);
    e.max_abs_err = std::max(e.max_abs_err, d);
    e.max_abs_ref = std::max(e.max_abs_ref, std::fabs(static_cast<double>(reference[i])));
    sum += d;
  }
  e.elements = static_cast<int64_t>(reference.size());
  e.mean_abs_err = reference.empty() ? 0.0 : sum / static_cast<double>(reference.size());
  return e;
}

std::vector<size_t> worst_layers(const QuantReport& report, size_t count) {
  std::vector<size_t> idx(report.layers.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return sort_key(report.layers[a].sqnr_db) < sort_key(report.layers[b].sqnr_db);
  });
  if (idx.size() > count) idx.resize(count);
  return idx;
}

nlohmann::json to_json(const QuantReport& r, size_t worst) {
  nlohmann::json j;
  j["float_model"] = r.float_model;
  j["int8_model"] = r.int8_model;
  j["architecture"] = r.architecture;
  j["calibration"] = {{"method", r.method}, {"samples", r.calibration_samples}};
  j["heldout_images"] = r.heldout_images;
  j["top1_agreement"] = r.top1_agreement;
  j["mean_abs_dprob"] = r.mean_abs_dprob;
  j["max_abs_dprob"] = r.max_abs_dprob;
  j["accuracy"] = {{"float", optional_number(r.accuracy_float)},
                   {"int8", optional_number(r.accuracy_int8)}};
  j["sqnr_threshold_db"] = r.sqnr_threshold_db;
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerError& l : r.layers)
    layers.push_back({{"name", l.name},
                      {"op", l.op},
                      {"sqnr_db", number_or_inf(l.sqnr_db)},
                      {"max_abs_err", l.max_abs_err},
                      {"mean_abs_err", l.mean_abs_err},
                      {"max_abs_ref", l.max_abs_ref},
                      {"elements", l.elements}});
  j["layers"] = layers;
  nlohmann::json worst_names = nlohmann::json::array();
  for (size_t i : worst_layers(r, worst)) worst_names.push_back(r.layers[i].name);
  j["worst_layers"] = worst_names;
  nlohmann::json timings = nlohmann::json::object();
  for (const auto& [stage, seconds] : r.timings) timings[stage] = seconds;
  j["timings"] = timings;
  return j;
}

namespace {

// The per-layer SQNR chart: one <rect> per layer in graph order, height proportional to SQNR
// (negative values drawn as zero height, +inf at the top of the scale), the threshold as a dashed
// line.
std::string sqnr_chart(const QuantReport& r) {
  const double plot_w = 960.0, plot_h = 240.0, left = 48.0, top = 16.0, bottom = 28.0;
  const size_t n = r.layers.size();
  double top_db = std::max(r.sqnr_threshold_db, 10.0);
  for (const LayerError& l : r.layers)
    if (std::isfinite(l.sqnr_db)) top_db = std::max(top_db, l.sqnr_db);
  top_db = std::ceil(top_db / 10.0) * 10.0;
  const double width = left + plot_w + 8.0, height = top + plot_h + bottom;
  auto y_of = [&](double db) {
    return top + plot_h - plot_h * std::clamp(db, 0.0, top_db) / top_db;
  };

  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "width=\"{:.0f}\" height=\"{:.0f}\" "
      "role=\"img\" aria-label=\"per-layer SQNR in dB, graph order\">\n",
      width, height, width, height);
  for (double db = 0.0; db <= top_db + 1e-9; db += 10.0) {
    double y = y_of(db);
    s += fmt::format(
        "<line class=\"grid\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\"/>", left, y,
        left + plot_w, y);
    s += fmt::format("<text class=\"axis\" x=\"{:.1f}\" y=\"{:.1f}\">{:.0f}</text>\n", left - 6.0,
                     y + 4.0, db);
  }
  const double slot = n ? plot_w / static_cast<double>(n) : plot_w;
  const double bar_w = std::max(slot * 0.8, 0.5);
  for (size_t i = 0; i < n; ++i) {
    const LayerError& l = r.layers[i];
    const double db = std::isnan(l.sqnr_db)   ? 0.0
                      : std::isinf(l.sqnr_db) ? (l.sqnr_db > 0 ? top_db : 0.0)
                                              : l.sqnr_db;
    const double y = y_of(db);
    const bool low = !(l.sqnr_db >= r.sqnr_threshold_db);
    s += fmt::format(
        "<rect class=\"bar{}\" x=\"{:.2f}\" y=\"{:.2f}\" width=\"{:.2f}\" "
        "height=\"{:.2f}\"><title>{} ({}): {}</title></rect>\n",
        low ? " low" : "", left + slot * static_cast<double>(i) + (slot - bar_w) / 2.0, y, bar_w,
        std::max(top + plot_h - y, 0.5), escape(l.name), escape(l.op), db_text(l.sqnr_db));
  }
  const double ty = y_of(r.sqnr_threshold_db);
  s += fmt::format(
      "<line class=\"threshold\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" "
      "y2=\"{:.1f}\"><title>threshold {}</title></line>\n",
      left, ty, left + plot_w, ty, db_text(r.sqnr_threshold_db));
  s += fmt::format(
      "<text class=\"label\" x=\"{:.1f}\" y=\"{:.1f}\">layers in graph order ({})</text>\n",
      left + plot_w / 2.0, top + plot_h + 20.0, n);
  s += "</svg>\n";
  return s;
}

}  // namespace

std::string to_html(const QuantReport& r, size_t worst) {
  std::string title = "int8 quantization report" +
                      (r.architecture.empty() ? std::string() : " — " + r.architecture);
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + escape(title) + "</title>\n";
  h += "<style>\n"
       "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em "
       "auto;max-width:1040px;color:#222}\n"
       "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\n"
       "table{border-collapse:collapse;margin:.5em 0}\n"
       "th,td{border:1px solid #ccc;padding:.25em .7em;text-align:left}\n"
       "td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
       "tr.low td{background:#fde8e8}\n"
       ".chart .bar{fill:#4a7bd0}.chart .bar.low{fill:#d9453b}.chart .bar:hover{opacity:.7}\n"
       ".chart .grid{stroke:#e4e4e4;stroke-width:1}.chart "
       ".threshold{stroke:#d9453b;stroke-dasharray:6 4;stroke-width:1.5}\n"
       ".chart .axis{font-size:11px;text-anchor:end;fill:#555}.chart "
       ".label{font-size:12px;text-anchor:middle;fill:#555}\n"
       "</style>\n</head>\n<body>\n";
  h += "<h1>" + escape(title) + "</h1>\n";

  h += "<h2>Summary</h2>\n<table class=\"summary\">\n";
  auto row = [&](const std::string& k, const std::string& v) {
    h += "<tr><th>" + escape(k) + "</th><td>" + escape(v) + "</td></tr>\n";
  };
  row("float model", r.float_model);
  row("int8 model", r.int8_model);
  if (!r.architecture.empty()) row("architecture", r.architecture);
  row("calibration", fmt::format("{}, {} samples", r.method, r.calibration_samples));
  row("held-out images", std::to_string(r.heldout_images));
  row("top-1 agreement float vs int8", percent(r.top1_agreement));
  row("mean |Δprob| (per image, largest class)", fmt::format("{:.4g}", r.mean_abs_dprob));
  row("max |Δprob|", fmt::format("{:.4g}", r.max_abs_dprob));
  if (r.accuracy_float) row("accuracy float32", percent(*r.accuracy_float));
  if (r.accuracy_int8) row("accuracy int8", percent(*r.accuracy_int8));
  if (r.accuracy_float && r.accuracy_int8)
    row("accuracy change",
        fmt::format("{:+.1f} points", 100.0 * (*r.accuracy_int8 - *r.accuracy_float)));
  size_t below = 0;
  for (const LayerError& l : r.layers) below += !(l.sqnr_db >= r.sqnr_threshold_db);
  row("layers below " + db_text(r.sqnr_threshold_db),
      fmt::format("{} of {}", below, r.layers.size()));
  for (const auto& [stage, seconds] : r.timings)
    row("time: " + stage, fmt::format("{:.3f} s", seconds));
  h += "</table>\n";

  h += "<h2>Per-layer SQNR (dB), graph order</h2>\n";
  h += "<p>Signal-to-quantization-noise ratio of each int8 activation against the float one; "
       "higher is better. "
       "Bars below the dashed threshold line are red. Hover a bar for the layer.</p>\n";
  h += sqnr_chart(r);

  h += "<h2>Worst layers</h2>\n<table class=\"worst\">\n"
       "<tr><th>#</th><th>layer</th><th>op</th><th>SQNR</th><th>max |err|</th><th>mean "
       "|err|</th><th>max |x|</th></tr>\n";
  for (size_t i : worst_layers(r, worst)) {
    const LayerError& l = r.layers[i];
    const bool low = !(l.sqnr_db >= r.sqnr_threshold_db);
    h += fmt::format(
        "<tr{}><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td "
        "class=\"num\">{:.4g}</td>"
        "<td class=\"num\">{:.4g}</td><td class=\"num\">{:.4g}</td></tr>\n",
        low ? " class=\"low\"" : "", i + 1, escape(l.name), escape(l.op), db_text(l.sqnr_db),
        l.max_abs_err, l.mean_abs_err, l.max_abs_ref);
  }
  h += "</table>\n</body>\n</html>\n";
  return h;
}

}  // namespace modex::quant
