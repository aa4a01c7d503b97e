// The accuracy report of an int8 export: the float and the int8 graph run side by side in modex's
// engine on held-out images (never the calibration ones), compared on their outputs (top-1
// agreement, |Δprob|, accuracy when class folders give labels) and value by value (SQNR of every
// int8 activation against the float activation of the same name).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "app/quantize_calibration.h"
#include "ir/graph.h"
#include "quant/report.h"

namespace modex::app {

struct HeldOutImages {
  dataset::DatasetInfo info;    // the images they were drawn from (classes give labels)
  dataset::CalibrationSet set;  // decoded, in batches
  std::string source;           // for the summary: "test split", "val split minus calibration", ...
};

// Up to `count` held-out images: when the calibration images came from the `val` split and the
// dataset also has a `test` split, drawn from `test`; else from the calibration folder minus every
// image drawn for calibration. Seeded and class-stratified like calibration (dataset::sample).
// Returns an empty set when no image is left over.
HeldOutImages load_heldout_images(const CalibrationData& calibration, int64_t count, uint64_t seed,
                                  const image::Preprocess& preprocess, int64_t batch_size,
                                  const std::function<void(int64_t, int64_t)>& progress);

// Folder class -> model class index (-1 when unknown): by name (a '/' in a class name is '_' in a
// folder name; case and punctuation ignored), else numeric folder names, else sorted folder order
// when the counts agree. Empty when the folders cannot be matched. `how` says which rule applied.
std::vector<int64_t> match_labels(const std::vector<dataset::ClassInfo>& folders,
                                  const std::vector<std::string>& class_names, int64_t num_classes,
                                  std::string& how);

struct EvaluateOptions {
  std::vector<std::string> class_names;  // the model's, to read labels from class folders
  double sqnr_threshold_db = 20.0;
  // The int8 graph is a QDQ graph (quant::to_qdq of the float graph): value X's int8 form is its
  // pair's X_DequantizeLinear_Output, run in float.
  bool qdq = false;
};

// Runs `float_graph` (the prepared float NHWC graph calibration ran) and `int8_graph` (its
// quantization) on the held-out batches. Fills the held-out counts, agreement, |Δprob| (softmax),
// accuracies (when labelled) and the per-layer SQNR of every int8 activation whose name the float
// graph also has (signal and noise energies summed over all images), in int8 graph order. The
// caller fills the model names, method and timings. Throws Error when the set is empty.
// `labels_how` (optional) receives how folder classes were matched ("" when unlabelled).
quant::QuantReport evaluate_int8(const ir::Graph& float_graph, const ir::Graph& int8_graph,
                                 const HeldOutImages& heldout, const EvaluateOptions& options,
                                 const std::function<void(int64_t, int64_t)>& progress,
                                 std::string* labels_how = nullptr);

// quant::to_json(report) plus what the images were: "heldout": {source, files, labels}.
nlohmann::json report_json(const quant::QuantReport& report, const HeldOutImages& heldout,
                           const std::string& labels_how);

struct Int8ReportRun {
  quant::QuantReport report;
  nlohmann::json json;  // report_json
  std::string html;     // quant::to_html
  std::string summary;  // report_summary
};

// The whole step for an export: held-out images (load_heldout_images, in `preprocess`'s layout,
// which must be the one `float_graph` takes), evaluate_int8, and the renderings. `header` gives
// the report's model names, architecture, method, calibration samples and timings so far; the
// evaluation's time is appended to its timings. Empty when no image is left over from calibration.
std::optional<Int8ReportRun> run_int8_report(
    const ir::Graph& float_graph, const ir::Graph& int8_graph, const CalibrationData& calibration,
    const image::Preprocess& preprocess, int64_t report_images, uint64_t seed, int64_t batch_size,
    const EvaluateOptions& options, quant::QuantReport header,
    const std::function<void(int64_t, int64_t)>& progress);

// Three lines for the export's summary: agreement and |Δprob|, accuracies, the `worst` worst
// layers.
std::string report_summary(const quant::QuantReport& report, size_t worst = 3);

}  // namespace modex::app
