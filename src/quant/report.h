// The int8 accuracy report: how far a quantized model is from its float original, overall (top-1
// agreement, probability differences, accuracy on labelled images) and layer by layer (SQNR of
// every int8 activation against the float one of the same name). Rendered as JSON for machines
// and as one self-contained HTML page (inline CSS and SVG, no external assets) for people.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace modex::quant {

// Signal-to-quantization-noise ratio in dB of `approx` (a dequantized int8 tensor) against
// `reference` (the float tensor): 10·log10(Σx² / Σ(x−y)²). +inf when the two are equal (no
// noise), -inf when the reference is all zeros but the approximation is not. Throws Error when
// the sizes differ.
double sqnr_db(std::span<const float> reference, std::span<const float> approx);

struct LayerError {
  std::string name;  // the value name (shared by the float and the int8 graph)
  std::string op;    // the op producing it ("Conv", "Add", ...)
  double sqnr_db = 0.0;
  double max_abs_err = 0.0;
  double mean_abs_err = 0.0;
  double max_abs_ref = 0.0;  // max |x| of the float tensor, to put the errors in scale
  int64_t elements = 0;
};

// All of the above for one layer.
LayerError layer_error(std::string name, std::string op, std::span<const float> reference,
                       std::span<const float> approx);

struct QuantReport {
  std::string float_model;  // names or paths as the user gave them
  std::string int8_model;
  std::string architecture;
  std::string method;  // calibration: "minmax", "percentile", "entropy", "image-percentile"
  int64_t calibration_samples = 0;
  int64_t heldout_images = 0;   // images the comparison below ran on
  double top1_agreement = 0.0;  // fraction in [0, 1]
  double mean_abs_dprob = 0.0;  // mean over images of max over classes |p_float − p_int8|
  double max_abs_dprob = 0.0;   // max over images and classes
  std::optional<double> accuracy_float;  // fractions, when the images have labels
  std::optional<double> accuracy_int8;
  std::vector<LayerError> layers;                       // graph order
  std::vector<std::pair<std::string, double>> timings;  // seconds per stage, in order
  double sqnr_threshold_db = 20.0;                      // layers below are highlighted
};

// The report as JSON. Infinite SQNRs (exact layers) are the strings "inf" / "-inf", since JSON has
// no infinity; absent accuracies are null. "worst_layers" lists up to `worst` layer names, lowest
// SQNR first.
nlohmann::json to_json(const QuantReport& report, size_t worst = 10);

// One HTML page: a summary table, an SVG bar chart of per-layer SQNR in graph order (one bar per
// layer; bars below the threshold highlighted; each bar's <title> gives layer, op and SQNR for
// hover), and a table of the `worst` layers.
std::string to_html(const QuantReport& report, size_t worst = 10);

// Indices of the layers ordered by SQNR, lowest first (ties keep graph order); at most `count`.
std::vector<size_t> worst_layers(const QuantReport& report, size_t count);

}  // namespace modex::quant
