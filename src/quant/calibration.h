// Calibration observers: the range of every float value to be quantized, accumulated over the
// representative batches. Three ways to turn what was seen into a range:
//   minmax      the extremes seen (nothing clipped; one outlier widens the step for everyone)
//   percentile  |x| clipped at a high percentile (99.99% by default) of its histogram
//   entropy     |x| clipped at the threshold whose quantized distribution is closest (KL
//               divergence) to the observed one, the search TensorRT and TFLite's calibrators use
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

enum class CalibrationMethod { kMinMax, kPercentile, kEntropy };
std::string_view calibration_method_name(CalibrationMethod m);
// "minmax" | "percentile" | "entropy"; throws Error otherwise.
CalibrationMethod parse_calibration_method(std::string_view name);

struct ObserverOptions {
  CalibrationMethod method = CalibrationMethod::kMinMax;
  int bins = 2048;             // histogram bins over [0, max|x|]
  double percentile = 99.99;   // kPercentile: share of |x| kept
};

class RangeObserver {
 public:
  explicit RangeObserver(const ObserverOptions& options = {});
  void observe(std::span<const float> values);
  // The calibrated range; {0, 0} when nothing finite was seen.
  TensorRange range() const;

  float min() const { return min_; }
  float max() const { return max_; }
  int64_t count() const { return count_; }
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
  void observe(const std::string& name, std::span<const float> values) { observer(name).observe(values); }
  RangeMap ranges() const;
  const ObserverOptions& options() const { return options_; }

 private:
  ObserverOptions options_;
  std::map<std::string, RangeObserver> observers_;
};

}  // namespace modex::quant
