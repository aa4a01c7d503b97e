#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/error.h"
#include "quant/calibration.h"

namespace modex::quant {
namespace {

// Mean squared error of quantizing x to 2^bits-1 levels over [-t, t] (clipping beyond).
double clip_mse(const std::vector<float>& x, double t, int levels) {
  const double step = 2 * t / levels;
  double e = 0;
  for (float v : x) {
    double c = std::clamp(static_cast<double>(v), -t, t);
    double q = std::round(c / step) * step;
    e += (q - v) * (q - v);
  }
  return e / static_cast<double>(x.size());
}

TEST(Observer, MinMaxIsTheExtremes) {
  RangeObserver o({.method = CalibrationMethod::kMinMax});
  std::vector<float> a{-1.5f, 0.25f, 3.0f}, b{7.0f, -0.5f, NAN, INFINITY};
  o.observe(a);
  o.observe(b);
  EXPECT_EQ(o.count(), 5);  // non-finite values ignored
  EXPECT_FLOAT_EQ(o.range().min, -1.5f);
  EXPECT_FLOAT_EQ(o.range().max, 7.0f);
}

TEST(Observer, ExtremesAtEveryPositionOfLongTensors) {
  // Long enough for the vectorised pass and its scalar tail: the extremes and NaNs are put at
  // every position in turn, and the result must be a plain loop's.
  for (size_t n : {1u, 15u, 16u, 17u, 47u, 64u, 100u}) {
    for (size_t at = 0; at < n; ++at) {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>((i * 7919) % 13) - 6.0f;
      v[at] = -100.0f - static_cast<float>(at);
      v[(at + n / 2) % n] = 50.0f + static_cast<float>(at);
      if (n > 2) v[(at + 1) % n] = NAN;
      float lo = INFINITY, hi = -INFINITY;
      for (float x : v)
        if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
      RangeObserver o({.method = CalibrationMethod::kMinMax});
      o.observe(v);
      ASSERT_EQ(o.min(), lo) << n << " " << at;
      ASSERT_EQ(o.max(), hi) << n << " " << at;
    }
  }
  // All negative: the maximum is not a default 0 or infinity.
  RangeObserver neg({.method = CalibrationMethod::kMinMax});
  neg.observe(std::vector<float>(40, -3.0f));
  EXPECT_EQ(neg.min(), -3.0f);
  EXPECT_EQ(neg.max(), -3.0f);
}

TEST(Observer, NothingSeenIsAnEmptyRange) {
  RangeObserver o({.method = CalibrationMethod::kEntropy});
  EXPECT_EQ(o.range().min, 0.0f);
  EXPECT_EQ(o.range().max, 0.0f);
}

TEST(Observer, HistogramGrowsWithoutLosingCounts) {
  RangeObserver o({.method = CalibrationMethod::kPercentile, .bins = 64});
  std::vector<float> small(1000), big(10);
  for (size_t i = 0; i < small.size(); ++i) small[i] = static_cast<float>(i) / 1000.0f;  // [0, 1)
  for (size_t i = 0; i < big.size(); ++i) big[i] = 5.0f + static_cast<float>(i);        // up to 14
  o.observe(small);
  const double first_max = o.histogram_max();
  o.observe(big);
  EXPECT_GE(o.histogram_max(), 14.0);
  // Doubling: the edge is the first edge times a power of two.
  const double ratio = o.histogram_max() / first_max;
  EXPECT_NEAR(std::log2(ratio), std::round(std::log2(ratio)), 1e-9);
  const auto& h = o.histogram();
  // 0.0 (small[0]) is counted apart from the histogram.
  EXPECT_EQ(o.zeros(), 1u);
  EXPECT_EQ(std::accumulate(h.begin(), h.end(), uint64_t{0}), 1009u);
  // Every small value sits in the bins below 1.0 after the merges.
  const double width = o.histogram_max() / 64;
  uint64_t below_one = 0;
  for (size_t i = 0; static_cast<double>(i) * width < 1.0; ++i) below_one += h[i];
  EXPECT_GE(below_one, 999u);
}

TEST(Observer, PercentileClipsARareOutlier) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(100000);
  for (float& v : x) v = u(rng);
  x[17] = 1000.0f;  // one in 10^5
  RangeObserver mm({.method = CalibrationMethod::kMinMax});
  RangeObserver pc({.method = CalibrationMethod::kPercentile, .percentile = 99.99});
  mm.observe(x);
  pc.observe(x);
  EXPECT_FLOAT_EQ(mm.range().max, 1000.0f);
  // 99.99% of |x| lies below 1; one histogram bin of slack (1000 * 2 / 2048 ~ 1).
  EXPECT_LE(pc.range().max, 1.0f + 1000.0f * 2 / 2048 + 1e-3f);
  EXPECT_GE(pc.range().max, 0.99f);
  EXPECT_LE(pc.range().min, -0.99f);
}

TEST(EntropyThreshold, UniformDataIsNotClipped) {
  // A flat histogram: any clipping loses information, so the best threshold is the whole range.
  std::vector<uint64_t> h(2048, 100);
  EXPECT_NEAR(entropy_threshold(h, 1.0, 128, 1), 1.0, 1.0 / 2048 * 8);
}

TEST(EntropyThreshold, AllMassBelowAPointStopsThere) {
  // Mass only in the first 300 bins (a tail of empty bins up to 2048): the threshold sits at
  // the end of the occupied bins, not at the histogram's edge.
  std::vector<uint64_t> h(2048, 0);
  for (size_t i = 0; i < 300; ++i) h[i] = 1000;
  const double t = entropy_threshold(h, 2048.0, 128, 1);
  EXPECT_GE(t, 300.0);
  EXPECT_LE(t, 310.0);
}

TEST(EntropyThreshold, SparseOutliersAreClipped) {
  // 99.9% of the mass is N(0, 1), 0.1% sits near 100: min/max would spend almost every level on
  // empty space. The KL threshold keeps the bulk and saturates the outliers.
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(400000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 1000 == 0 ? 100.0f + n(rng) : n(rng);
  RangeObserver o({.method = CalibrationMethod::kEntropy});
  o.observe(x);
  const double t = std::max(-o.range().min, o.range().max);
  EXPECT_GT(t, 3.0);
  EXPECT_LT(t, 10.0);
  // and quantizes the bulk far better than min/max.
  std::vector<float> bulk;
  for (size_t i = 0; i < x.size(); ++i)
    if (i % 1000) bulk.push_back(x[i]);
  EXPECT_LT(clip_mse(bulk, t, 254), 0.01 * clip_mse(bulk, std::max(-o.min(), o.max()), 254));
}

TEST(EntropyThreshold, SmoothTailsAreClippedOnlyWhereSparse) {
  // Laplace (b = 1) and normal (sigma = 2) data: the threshold lies inside the observed maximum
  // (the sparsest part of the tail is given up) but beyond the bulk. KL keeps more of a smooth
  // tail than an MSE-optimal clip would: merging bins of a slowly varying density costs little.
  std::mt19937 rng(3);
  std::exponential_distribution<float> e(1.0f);
  std::bernoulli_distribution sign(0.5);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> lap(400000), gau(400000);
  for (float& v : lap) v = sign(rng) ? e(rng) : -e(rng);
  for (float& v : gau) v = n(rng);
  for (const auto& [x, bulk] : {std::pair{&lap, 5.0}, std::pair{&gau, 3.0 * 2.0}}) {
    RangeObserver o({.method = CalibrationMethod::kEntropy});
    o.observe(*x);
    const double amax = std::max(-o.min(), o.max());
    const double t = std::max(-o.range().min, o.range().max);
    EXPECT_GT(t, bulk);
    EXPECT_LT(t, amax);
  }
}

TEST(EntropyThreshold, OneSidedTensorsKeepZero) {
  // After a ReLU: min stays 0, the threshold clips the top only.
  std::mt19937 rng(5);
  std::exponential_distribution<float> e(2.0f);
  std::vector<float> x(200000);
  for (float& v : x) v = e(rng);
  RangeObserver o({.method = CalibrationMethod::kEntropy});
  o.observe(x);
  EXPECT_GE(o.range().min, 0.0f);
  EXPECT_LT(o.range().max, o.max());
}

TEST(EntropyThreshold, ReluZerosDoNotPullTheThresholdDown) {
  // A ReLU output on dark images: most values exactly 0, the rest spread up to ~6. Zero is exact
  // in int8, so the spike must not change the threshold (it used to pull it to 1/8 of the range:
  // the search isolated the spike in a level of its own).
  std::mt19937 rng(7);
  std::exponential_distribution<float> e(1.0f);
  std::vector<float> nonzero(100000);
  for (float& v : nonzero) v = std::min(e(rng), 6.0f);
  std::vector<float> with_zeros = nonzero;
  with_zeros.resize(nonzero.size() * 5, 0.0f);  // 80 % zeros
  std::shuffle(with_zeros.begin(), with_zeros.end(), rng);
  RangeObserver plain({.method = CalibrationMethod::kEntropy}), spiky({.method = CalibrationMethod::kEntropy});
  plain.observe(nonzero);
  spiky.observe(with_zeros);
  EXPECT_NEAR(static_cast<double>(spiky.zeros()), 400000.0, 4000.0);  // sampled (histogram_stride)
  EXPECT_GT(plain.range().max, 3.0f);
  EXPECT_NEAR(spiky.range().max, plain.range().max, 6.0 / 2048 * 16);
  EXPECT_EQ(spiky.range().min, 0.0f);
}

TEST(Observer, PercentileCountsZerosAsKept) {
  // 99 % zeros and 1 % ones: the 99.5th percentile of |x| lies among the ones.
  std::vector<float> x(10000, 0.0f);
  for (size_t i = 0; i < 100; ++i) x[i * 100] = 1.0f;
  RangeObserver pc({.method = CalibrationMethod::kPercentile, .percentile = 98.0});
  pc.observe(x);
  EXPECT_LT(pc.range().max, 0.01f);  // 98 % of the mass is the zeros
  RangeObserver pc2({.method = CalibrationMethod::kPercentile, .percentile = 99.5});
  pc2.observe(x);
  EXPECT_NEAR(pc2.range().max, 1.0f, 2.0 / 2048);
}

TEST(Observer, ImagePercentileClipsOnlyTheOutlierImages) {
  // 20 images of 8 values each: image i spans [-1 - i/100, 1 + i/100], except images 5 and 12,
  // whose activations blow up (x 50). At 90% the 2 most extreme images of 20 are clipped (nearest
  // rank: the 18th of the 20 sorted maxima): the range is the largest ordinary image's, 1.19.
  RangeObserver o({.method = CalibrationMethod::kImagePercentile, .image_percentile = 90.0});
  std::vector<float> batch;
  for (int i = 0; i < 20; ++i) {
    const float scale = (i == 5 || i == 12) ? 50.0f : 1.0f;
    for (int k = 0; k < 8; ++k) batch.push_back(scale * (k % 2 ? 1.0f : -1.0f) * (1.0f + static_cast<float>(i) / 100.0f) * (k < 2 ? 1.0f : 0.5f));
  }
  // Two calls of 10 images: the per-image extremes do not depend on how images are batched.
  o.observe(std::span<const float>(batch).first(80), 10);
  o.observe(std::span<const float>(batch).subspan(80), 10);
  ASSERT_EQ(o.image_maxs().size(), 20u);
  EXPECT_FLOAT_EQ(o.range().max, 1.19f);
  EXPECT_FLOAT_EQ(o.range().min, -1.19f);
  EXPECT_FLOAT_EQ(o.min(), -50.0f * 1.12f);  // the extremes are still tracked
  // At 100% nothing is clipped.
  RangeObserver all({.method = CalibrationMethod::kImagePercentile, .image_percentile = 100.0});
  all.observe(batch, 20);
  EXPECT_FLOAT_EQ(all.range().max, 50.0f * 1.12f);
}

TEST(Observer, ImagePercentileOfOneImageAndOfAnUnevenTensor) {
  RangeObserver one({.method = CalibrationMethod::kImagePercentile});
  std::vector<float> x{-2.0f, 0.5f, 3.0f, NAN};
  one.observe(x, 1);
  EXPECT_FLOAT_EQ(one.range().min, -2.0f);
  EXPECT_FLOAT_EQ(one.range().max, 3.0f);
  // 4 values do not split into 3 images: one image.
  RangeObserver uneven({.method = CalibrationMethod::kImagePercentile});
  uneven.observe(x, 3);
  EXPECT_EQ(uneven.image_maxs().size(), 1u);
  // An image with no finite value is no image.
  RangeObserver inf({.method = CalibrationMethod::kImagePercentile});
  std::vector<float> y{NAN, INFINITY, 1.0f, 2.0f};
  inf.observe(y, 2);
  ASSERT_EQ(inf.image_maxs().size(), 1u);
  EXPECT_FLOAT_EQ(inf.range().max, 2.0f);
  RangeObserver none({.method = CalibrationMethod::kImagePercentile});
  EXPECT_FLOAT_EQ(none.range().max, 0.0f);
}

TEST(Calibration, FullRangeRules) {
  using enum CalibrationMethod;
  EXPECT_TRUE(keeps_full_range(kImagePercentile, ValueRole::kGraphInput));
  EXPECT_FALSE(keeps_full_range(kImagePercentile, ValueRole::kGraphOutput));
  EXPECT_TRUE(keeps_full_range(kEntropy, ValueRole::kGraphInput));
  EXPECT_FALSE(keeps_full_range(kPercentile, ValueRole::kGraphInput));
  for (CalibrationMethod m : {kMinMax, kPercentile, kEntropy}) EXPECT_TRUE(keeps_full_range(m, ValueRole::kGraphOutput));
  for (CalibrationMethod m : {kMinMax, kPercentile, kEntropy, kImagePercentile})
    EXPECT_FALSE(keeps_full_range(m, ValueRole::kOther));
}

TEST(Calibration, CollectorKeepsTheExtremesOfGraphInputsAndOutputsAsTheMethodSays) {
  // 10 images of 4 values; image 9 blows up. At 90% image-percentile clips it everywhere but on
  // the graph input; percentile keeps the graph output's extremes.
  std::vector<float> batch;
  for (int i = 0; i < 10; ++i)
    for (int k = 0; k < 4; ++k) batch.push_back((i == 9 ? 100.0f : 1.0f) * static_cast<float>(k - 1));
  for (CalibrationMethod m : {CalibrationMethod::kImagePercentile, CalibrationMethod::kPercentile}) {
    RangeCollector c({.method = m});
    for (const char* name : {"image", "hidden", "logits"}) c.observe(name, batch, 10);
    RangeMap r = c.ranges({"image"}, {"logits"});
    const bool image_pct = m == CalibrationMethod::kImagePercentile;
    EXPECT_FLOAT_EQ(r["image"].max, image_pct ? 200.0f : r["hidden"].max);
    EXPECT_FLOAT_EQ(r["logits"].max, image_pct ? 2.0f : 200.0f);
    if (image_pct) EXPECT_FLOAT_EQ(r["hidden"].max, 2.0f);
  }
}

TEST(Calibration, MethodNames) {
  EXPECT_EQ(parse_calibration_method("entropy"), CalibrationMethod::kEntropy);
  EXPECT_EQ(parse_calibration_method("image-percentile"), CalibrationMethod::kImagePercentile);
  EXPECT_EQ(calibration_method_name(CalibrationMethod::kPercentile), "percentile");
  EXPECT_THROW(parse_calibration_method("kl"), Error);
}

TEST(Calibration, CollectorKeepsOneObserverPerName) {
  RangeCollector c({.method = CalibrationMethod::kMinMax});
  std::vector<float> a{1, 2}, b{-3, 0};
  c.observe("a", a);
  c.observe("b", b);
  c.observe("a", b);
  RangeMap m = c.ranges();
  ASSERT_EQ(m.size(), 2u);
  EXPECT_FLOAT_EQ(m["a"].min, -3.0f);
  EXPECT_FLOAT_EQ(m["a"].max, 2.0f);
  EXPECT_FLOAT_EQ(m["b"].max, 0.0f);
}

}  // namespace
}  // namespace modex::quant
