// Calibration for int8 export, and the pieces `modex calib` shares with it: finding a dataset's
// images, the stderr progress bar, and running the prepared float graph in the engine over the
// representative batches to observe the range of every value.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "io/dataset/dataset.h"
#include "io/image/preprocess.h"
#include "quant/calibration.h"
#include "quant/prepare.h"

namespace modex::app {

// "[=====>    ] 45/100  12.3 img/s  ETA 4s" on one line of stderr, redrawn in place.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  // Clears the line so the summary starts clean.
  void finish();
  void operator()(int64_t done, int64_t total);
  // Enabled only when stderr is a terminal.
  static bool stderr_is_terminal();

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

// The images of a dataset folder (`data_dir`, layout discovered as `type` says) or of a flat
// folder (`calibration_dir`; a recognisable layout is accepted there too). Exactly one is given.
dataset::DatasetInfo discover_images(const std::optional<std::filesystem::path>& data_dir,
                                     const std::optional<std::filesystem::path>& calibration_dir,
                                     dataset::DatasetType type);

struct CalibrationData {
  dataset::DatasetInfo info;
  dataset::CalibrationSet set;  // exactly the requested number of decoded images
  int64_t drawn = 0;            // images tried (decoded + skipped)
};

// Draws `count` images (seeded, class-stratified) and decodes them; a corrupt image is skipped,
// counted and replaced by the next image of the same seeded order. Throws Error when the folder
// holds fewer than `count` usable images.
CalibrationData load_calibration_images(const dataset::DatasetInfo& info, int64_t count, uint64_t seed,
                                        const image::Preprocess& preprocess, int64_t batch_size,
                                        const std::function<void(int64_t, int64_t)>& progress);

struct CalibrationResult {
  quant::RangeMap ranges;
  int64_t images = 0;
  double seconds = 0;
};

// Runs the prepared graph (NHWC, float) in modex's engine over the batches with every value to
// observe made a graph output, and feeds each into its observer. progress(images done, total).
CalibrationResult calibrate(const quant::PreparedGraph& prepared, const std::vector<Tensor>& batches,
                            const quant::ObserverOptions& observer, const std::function<void(int64_t, int64_t)>& progress);

}  // namespace modex::app

namespace modex::app {
// Images per engine run during calibration: every observed value is kept until the run ends, so
// the batch is sized to keep that under a few hundred MB (1 for a graph with a static batch).
int64_t calibration_batch_size(const quant::PreparedGraph& prepared);
}  // namespace modex::app

namespace modex::app {
// Bias correction of an int8 graph (from quant::quantize_int8 of `float_graph`): rounding a
// layer's weights to int8 shifts its mean output by sum_k (w_int8 - w)[o, k] * mean(x_k), which
// per-channel scales do not remove where a channel has few taps (depthwise 3x3: 9), and those
// shifts add up through a deep network. Measured with image-percentile ranges over three
// calibration seeds, its gain is small: int8 top-1 agreement with float 97.4 -> 97.9% on the
// trained mobilenet_v2 fixture, 96.1 -> 96.3% on efficientnet_b0 (the activations' rounding, not
// the weights', is most of the int8 error there).
// The calibration batches (up to ~1M input pixels) run through the float graph once; from the
// mean of each layer's input under each kernel tap (zero padding included) every convolution's
// and fully connected layer's int32 bias absorbs its shift, to the nearest bias step. (Correcting
// the measured mean of the int8 output instead also moves each layer by the errors of the layers
// before it, which are corrected themselves: measured here, that overcorrects and oscillates.)
// Returns the layers corrected.
int64_t correct_int8_biases(const ir::Graph& float_graph, ir::Graph& int8_graph, const std::vector<Tensor>& batches);
}  // namespace modex::app
