// Calibration observers: the range of every float value to be quantized, accumulated over the
// representative batches. Three ways to turn what was seen into a range:
//   minmax      the extremes seen (nothing clipped; one outlier widens the step for everyone)
//   percentile  |x| clipped at a high percentile (99.99% by default) of its histogram
//   entropy     |x| clipped at the threshold whose quantized distribution is closest (KL
//               divergence) to the observed one, the search TensorRT and TFLite's calibrators use
//   image-percentile
//               each image's own min and max, and over the images the 90th percentile of the
//               maxima and the 10th of the minima: only the 10% of images with the most extreme
//               values are clipped, so a few images whose activations blow up no longer set the
//               step for all the others (the per-batch extremes the moving-average observers of
//               quantization-aware training track, made robust to outlier images). The default.
// Percentile and entropy keep a histogram of |x| whose upper edge doubles (merging bin pairs)
// whenever a value beyond it arrives, so one pass over the data suffices.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace modex::quant {

struct TensorRange {
  float min = 0.0f, max = 0.0f;
};
// Value name -> its calibrated range.
using RangeMap = std::map<std::string, TensorRange>;

enum class CalibrationMethod { kMinMax, kPercentile, kEntropy, kImagePercentile };
std::string_view calibration_method_name(CalibrationMethod m);
// "minmax" | "percentile" | "entropy" | "image-percentile"; throws Error otherwise.
CalibrationMethod parse_calibration_method(std::string_view name);

// Values whose range is the extremes seen whatever the method says, by their place in the graph:
//   - the image (graph input) with entropy and image-percentile: pixel values are not the
//     bell-shaped distribution the KL search assumes (a background spike and a bright tail), and
//     its threshold saturated the bright pixels before the first layer (-47.8 points on a trained
//     mobilenet_v2); nearly every image reaches both ends of the pixel range anyway. Percentile
//     keeps 99.99% of the pixels already (its input range differs from the full one by < 0.5%).
//   - the logits (graph output) with minmax, percentile and entropy: a threshold on |x| over all
//     the logits clips exactly the largest ones, where the class is decided, and ties the top
//     classes. image-percentile clips only the top logit of the 10% of images with the largest
//     ones (the class is kept unless the runner-up is clipped too) and keeps the step fine for
//     the others. On the trained efficientnet_b0 fixture (Fashion-MNIST; logits span -72..220
//     around a typical top logit of 3.4), int8 top-1 agreement with float is 96.1% this way and
//     89.4% with the logits' full range (resnet18 99.5% both, mobilenet_v2 97.5% and 97.9%).
enum class ValueRole { kGraphInput, kGraphOutput, kOther };
bool keeps_full_range(CalibrationMethod method, ValueRole role);

struct ObserverOptions {
  CalibrationMethod method = CalibrationMethod::kMinMax;
  int bins = 2048;             // histogram bins over [0, max|x|]
  double percentile = 99.99;   // kPercentile: share of |x| kept
  double image_percentile = 90.0;  // kImagePercentile: share of images whose extremes are kept
};

class RangeObserver {
 public:
  explicit RangeObserver(const ObserverOptions& options = {});
  // `values` holds `images` equal slices, one per image (the batch dimension first); a size that
  // does not split evenly counts as one image.
  void observe(std::span<const float> values, int64_t images = 1);
  // The calibrated range; {0, 0} when nothing finite was seen.
  TensorRange range() const;

  float min() const { return min_; }
  float max() const { return max_; }
  int64_t count() const { return count_; }
  // Each image's extremes, in the order seen (images without a finite value are left out).
  const std::vector<float>& image_mins() const { return image_mins_; }
  const std::vector<float>& image_maxs() const { return image_maxs_; }
  // |x| histogram of the non-zero values; exact zeros are counted apart (zeros()): zero is exact
  // in every int8 encoding, so it costs nothing at any threshold, and a ReLU's spike of zeros
  // would otherwise dominate the entropy search and pull the threshold down.
  const std::vector<uint64_t>& histogram() const { return hist_; }
  uint64_t zeros() const { return zeros_; }
  double histogram_max() const { return hist_max_; }

 private:
  void grow_to(double amax);

  ObserverOptions options_;
  float min_, max_;
  int64_t count_ = 0;
  std::vector<float> image_mins_, image_maxs_;
  std::vector<uint64_t> hist_;  // |x| in [i, i+1) * hist_max_ / bins
  double hist_max_ = 0.0;
  uint64_t zeros_ = 0;  // sampled exact zeros, weighted like the histogram
};

// The |x| threshold minimising KL(P || Q), P the histogram clipped at the threshold (the tail
// folded into its last bin) and Q that distribution quantized to `levels` levels. hist covers
// [0, hist_max]. Candidate thresholds are every `stride` bins from `levels` bins up.
double entropy_threshold(std::span<const uint64_t> hist, double hist_max, int levels, int stride = 1);
// The |x| below which `percentile` % of the histogram's mass lies (upper bin edge).
double percentile_threshold(std::span<const uint64_t> hist, double hist_max, double percentile);

// Values a tensor adds to its histogram per observe() call, at most (about): larger tensors are
// sampled with histogram_stride(n), a prime >= 11 (1 for small tensors). Min and max always see
// every value.
inline constexpr size_t kHistogramSample = 1 << 18;
size_t histogram_stride(size_t n);

// One observer per value name.
class RangeCollector {
 public:
  explicit RangeCollector(ObserverOptions options) : options_(options) {}
  RangeObserver& observer(const std::string& name);
  void observe(const std::string& name, std::span<const float> values, int64_t images = 1) {
    observer(name).observe(values, images);
  }
  // Every observer's calibrated range, except that the named graph inputs and outputs get the
  // extremes seen where keeps_full_range says so for this collector's method.
  RangeMap ranges(const std::vector<std::string>& graph_inputs = {},
                  const std::vector<std::string>& graph_outputs = {}) const;
  const ObserverOptions& options() const { return options_; }

 private:
  ObserverOptions options_;
  std::map<std::string, RangeObserver> observers_;
};

}  // namespace modex::quant
