#include "quant/calibration.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "core/error.h"

namespace modex::quant {

std::string_view calibration_method_name(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::kMinMax: return "minmax";
    case CalibrationMethod::kPercentile: return "percentile";
    case CalibrationMethod::kEntropy: return "entropy";
    case CalibrationMethod::kImagePercentile: return "image-percentile";
  }
  return "?";
}

CalibrationMethod parse_calibration_method(std::string_view name) {
  for (CalibrationMethod m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kEntropy,
                              CalibrationMethod::kImagePercentile})
    if (calibration_method_name(m) == name) return m;
  throw Error("unknown calibration method '" + std::string(name) + "'")
      .hint("use minmax, percentile, entropy or image-percentile");
}

bool keeps_full_range(CalibrationMethod method, ValueRole role) {
  switch (role) {
    case ValueRole::kGraphInput:
      return method == CalibrationMethod::kEntropy || method == CalibrationMethod::kImagePercentile;
    case ValueRole::kGraphOutput: return method != CalibrationMethod::kImagePercentile;
    case ValueRole::kOther: return false;
  }
  return false;
}

RangeObserver::RangeObserver(const ObserverOptions& options)
    : options_(options), min_(std::numeric_limits<float>::infinity()), max_(-std::numeric_limits<float>::infinity()) {
  if (options_.bins < 16 || options_.bins % 2) throw Error("histogram bins must be an even number >= 16", ErrorKind::kInternal);
  if (options_.method != CalibrationMethod::kMinMax && options_.method != CalibrationMethod::kImagePercentile)
    hist_.assign(static_cast<size_t>(options_.bins), 0);
}

size_t histogram_stride(size_t n) {
  static constexpr size_t kPrimes[] = {11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97};
  if (n <= kHistogramSample) return 1;
  const size_t want = n / kHistogramSample;
  for (size_t p : kPrimes)
    if (p >= want) return p;
  return kPrimes[std::size(kPrimes) - 1];
}

void RangeObserver::grow_to(double amax) {
  if (hist_max_ == 0.0) {
    // Everything so far was zero (counted in zeros_, not binned).
    hist_max_ = amax;
    return;
  }
  const size_t half = hist_.size() / 2;
  while (hist_max_ < amax) {
    for (size_t i = 0; i < half; ++i) hist_[i] = hist_[2 * i] + hist_[2 * i + 1];
    std::fill(hist_.begin() + static_cast<std::ptrdiff_t>(half), hist_.end(), 0);
    hist_max_ *= 2.0;
  }
}

namespace {

// The extremes of `values` as the loop `lo = v < lo ? v : lo; hi = v > hi ? v : hi` finds them
// (a NaN compares false and is skipped). Four-wide with four accumulators each: the compiler does
// not vectorise a float min/max reduction by itself (it may not reorder them), and the scalar
// loop's dependency chain made this pass the largest cost of calibration.
void extremes(std::span<const float> values, float& lo, float& hi) {
  lo = std::numeric_limits<float>::infinity();
  hi = -lo;
  size_t i = 0;
#if defined(__SSE2__)
  // _mm_min_ps(v, m) is v < m ? v : m per lane, the loop's own expression.
  __m128 lo0 = _mm_set1_ps(lo), lo1 = lo0, lo2 = lo0, lo3 = lo0;
  __m128 hi0 = _mm_set1_ps(hi), hi1 = hi0, hi2 = hi0, hi3 = hi0;
  const float* p = values.data();
  for (; i + 16 <= values.size(); i += 16) {
    const __m128 a = _mm_loadu_ps(p + i), b = _mm_loadu_ps(p + i + 4);
    const __m128 c = _mm_loadu_ps(p + i + 8), d = _mm_loadu_ps(p + i + 12);
    lo0 = _mm_min_ps(a, lo0), lo1 = _mm_min_ps(b, lo1), lo2 = _mm_min_ps(c, lo2), lo3 = _mm_min_ps(d, lo3);
    hi0 = _mm_max_ps(a, hi0), hi1 = _mm_max_ps(b, hi1), hi2 = _mm_max_ps(c, hi2), hi3 = _mm_max_ps(d, hi3);
  }
  // The accumulators hold no NaN (a NaN lane keeps the accumulator), so the order of merging
  // them does not matter.
  alignas(16) float l[4], h[4];
  _mm_store_ps(l, _mm_min_ps(_mm_min_ps(lo0, lo1), _mm_min_ps(lo2, lo3)));
  _mm_store_ps(h, _mm_max_ps(_mm_max_ps(hi0, hi1), _mm_max_ps(hi2, hi3)));
  for (int k = 0; k < 4; ++k) {
    lo = std::min(lo, l[k]);
    hi = std::max(hi, h[k]);
  }
#endif
  for (; i < values.size(); ++i) {
    const float v = values[i];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
}

}  // namespace

void RangeObserver::observe(std::span<const float> values, int64_t images) {
  // One branch-free pass for each image's extremes; the slow path that drops non-finite values
  // runs only when an infinity showed up.
  if (images < 1 || values.size() % static_cast<size_t>(images)) images = 1;
  const size_t per_image = values.size() / static_cast<size_t>(images);
  float lo = std::numeric_limits<float>::infinity(), hi = -lo;
  int64_t n = 0;
  for (int64_t b = 0; b < images; ++b) {
    const std::span<const float> image = values.subspan(static_cast<size_t>(b) * per_image, per_image);
    float ilo, ihi;
    extremes(image, ilo, ihi);
    int64_t in = static_cast<int64_t>(image.size());
    if (!std::isfinite(ilo) || !std::isfinite(ihi)) {
      ilo = std::numeric_limits<float>::infinity();
      ihi = -ilo;
      in = 0;
      for (float v : image) {
        if (!std::isfinite(v)) continue;  // an inf/NaN activation must not blow the range up
        ilo = std::min(ilo, v);
        ihi = std::max(ihi, v);
        ++in;
      }
    }
    if (in == 0) continue;
    lo = std::min(lo, ilo);
    hi = std::max(hi, ihi);
    n += in;
    image_mins_.push_back(ilo);
    image_maxs_.push_back(ihi);
  }
  if (n == 0) return;
  min_ = std::min(min_, lo);
  max_ = std::max(max_, hi);
  count_ += n;
  if (hist_.empty()) return;
  const double amax = std::max(std::abs(static_cast<double>(lo)), std::abs(static_cast<double>(hi)));
  if (amax > hist_max_) grow_to(amax);
  if (hist_max_ == 0.0) {
    zeros_ += static_cast<uint64_t>(n);
    return;
  }
  const float per_bin = static_cast<float>(static_cast<double>(hist_.size()) / hist_max_);
  const float last = static_cast<float>(hist_.size() - 1);
  uint64_t* h = hist_.data();
  // The histogram estimates a distribution: a large tensor contributes an evenly spread sample of
  // at most ~kHistogramSample values per call. The stride is a prime >= 11, so it does not keep
  // landing on the same few channels of an NHWC tensor (channel counts are products of 2, 3, 5, 7).
  const size_t stride = histogram_stride(values.size());
  const size_t weight = stride;  // each sampled value stands for `stride` values
  uint64_t zeros = 0;
  for (size_t i = 0; i < values.size(); i += stride) {
    const float v = values[i];
    zeros += v == 0.0f;
    float b = std::abs(v) * per_bin;
    if (!(b < last)) b = last;  // the top edge, infinities and NaN (dropped from the extremes)
    h[static_cast<size_t>(b)] += weight;
  }
  // Zeros landed in bin 0 (branch-free above); move them to their own count.
  h[0] -= zeros * weight;
  zeros_ += zeros * weight;
}

double percentile_threshold(std::span<const uint64_t> hist, double hist_max, double percentile) {
  uint64_t total = 0;
  for (uint64_t c : hist) total += c;
  if (total == 0) return hist_max;
  const double want = std::clamp(percentile, 0.0, 100.0) / 100.0 * static_cast<double>(total);
  const double width = hist_max / static_cast<double>(hist.size());
  double cum = 0;
  for (size_t i = 0; i < hist.size(); ++i) {
    cum += static_cast<double>(hist[i]);
    if (cum >= want) return static_cast<double>(i + 1) * width;
  }
  return hist_max;
}

double entropy_threshold(std::span<const uint64_t> hist, double hist_max, int levels, int stride) {
  const size_t bins = hist.size();
  const size_t nlev = static_cast<size_t>(std::max(levels, 2));
  stride = std::max(stride, 1);
  if (bins <= nlev) return hist_max;
  uint64_t total = 0;
  for (uint64_t c : hist) total += c;
  if (total == 0) return hist_max;
  const double width = hist_max / static_cast<double>(bins);

  std::vector<double> p, q;
  double best_kl = std::numeric_limits<double>::infinity();
  size_t best = bins;
  std::vector<size_t> candidates;
  for (size_t i = nlev; i < bins; i += static_cast<size_t>(stride)) candidates.push_back(i);
  candidates.push_back(bins);
  for (size_t i : candidates) {
    // P: the first i bins, everything beyond folded into the last (clipping saturates there).
    p.assign(hist.begin(), hist.begin() + static_cast<std::ptrdiff_t>(i));
    double tail = 0;
    for (size_t j = i; j < bins; ++j) tail += static_cast<double>(hist[j]);
    p[i - 1] += tail;
    // Q: the clipped histogram *without* the folded tail, merged into nlev levels, each level's
    // mass spread over the bins P occupies there. The tail P carries and Q lacks is what makes
    // clipping too tightly expensive; the merging is what makes clipping too loosely expensive.
    q.assign(i, 0.0);
    for (size_t l = 0; l < nlev; ++l) {
      const size_t begin = l * i / nlev, end = (l + 1) * i / nlev;
      double mass = 0;
      size_t used = 0;
      for (size_t j = begin; j < end; ++j) {
        mass += static_cast<double>(hist[j]);
        used += p[j] > 0;
      }
      if (!used) continue;
      const double each = mass / static_cast<double>(used);
      for (size_t j = begin; j < end; ++j)
        if (p[j] > 0) q[j] = each;
    }
    double q_total = 0;
    for (size_t j = 0; j < i; ++j) q_total += q[j];
    if (q_total <= 0) continue;
    // KL(P || Q) of the normalised distributions; a bin Q misses gets a small floor instead of
    // an infinite penalty.
    double kl = 0;
    const double p_inv = 1.0 / static_cast<double>(total), q_inv = 1.0 / q_total;
    constexpr double kFloor = 1e-4;
    for (size_t j = 0; j < i; ++j) {
      if (p[j] <= 0) continue;
      const double pj = p[j] * p_inv;
      const double qj = std::max(q[j] * q_inv, kFloor * pj);
      kl += pj * std::log(pj / qj);
    }
    if (kl < best_kl) {
      best_kl = kl;
      best = i;
    }
  }
  return static_cast<double>(best) * width;
}

TensorRange RangeObserver::range() const {
  if (count_ == 0) return {0.0f, 0.0f};
  if (options_.method == CalibrationMethod::kImagePercentile && !image_maxs_.empty()) {
    // Nearest rank: with 100 images and 90%, the 11th largest maximum and the 11th smallest minimum.
    const size_t n = image_maxs_.size();
    const double want = std::ceil(std::clamp(options_.image_percentile, 0.0, 100.0) / 100.0 * static_cast<double>(n));
    const size_t k = std::min(n - 1, static_cast<size_t>(std::max(want, 1.0)) - 1);
    std::vector<float> lo = image_mins_, hi = image_maxs_;
    std::nth_element(hi.begin(), hi.begin() + static_cast<std::ptrdiff_t>(k), hi.end());
    std::nth_element(lo.begin(), lo.begin() + static_cast<std::ptrdiff_t>(n - 1 - k), lo.end());
    return {lo[n - 1 - k], hi[k]};
  }
  if (options_.method == CalibrationMethod::kMinMax || hist_max_ == 0.0) return {min_, max_};
  double t;
  if (options_.method == CalibrationMethod::kPercentile) {
    std::vector<uint64_t> with_zeros = hist_;
    with_zeros[0] += zeros_;
    t = percentile_threshold(with_zeros, hist_max_, options_.percentile);
  } else {
    // A one-sided tensor (after ReLU, sigmoid, ...) gets all 256 int8 levels over [0, t]; a
    // two-sided one about half of them on each side.
    const bool one_sided = min_ >= 0.0f || max_ <= 0.0f;
    t = entropy_threshold(hist_, hist_max_, one_sided ? 255 : 127, static_cast<int>(hist_.size() / 256));
  }
  const float tf = static_cast<float>(t);
  return {std::max(min_, -tf), std::min(max_, tf)};
}

RangeObserver& RangeCollector::observer(const std::string& name) {
  auto it = observers_.find(name);
  if (it == observers_.end()) it = observers_.emplace(name, RangeObserver(options_)).first;
  return it->second;
}

RangeMap RangeCollector::ranges(const std::vector<std::string>& graph_inputs,
                               const std::vector<std::string>& graph_outputs) const {
  RangeMap m;
  for (const auto& [name, obs] : observers_) m[name] = obs.range();
  auto keep_extremes = [&](const std::vector<std::string>& names, ValueRole role) {
    if (!keeps_full_range(options_.method, role)) return;
    for (const std::string& name : names) {
      auto it = observers_.find(name);
      if (it != observers_.end() && it->second.count()) m[name] = {it->second.min(), it->second.max()};
    }
  };
  keep_extremes(graph_inputs, ValueRole::kGraphInput);
  keep_extremes(graph_outputs, ValueRole::kGraphOutput);
  return m;
}

}  // namespace modex::quant
